//! The harness in quick mode (tiny closures, one run per figure), so that it keeps working:
//! every scenario runs end to end against a real containerd and Nix and yields a figure.
//! Needs root, containerd, runc and Nix; without them it prints why and passes, except under
//! `CI=true`, where it fails.

use nixlet_bench::scenarios::Scenario;
use nixlet_bench::{run, Options};

#[test]
fn every_scenario_runs_in_quick_mode() {
    if !nixlet_e2e::prereq::ready("every_scenario_runs_in_quick_mode") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let options = Options {
        scenarios: Scenario::ALL.to_vec(),
        quick: true,
        iterations: Some(1),
        out_dir: Some(out.path().to_path_buf()),
        rerender: false,
    };
    let started = std::time::Instant::now();
    let results = run(&options).unwrap_or_else(|e| panic!("quick bench run failed: {e:#}"));
    eprintln!("quick bench run took {:?}", started.elapsed());
    for scenario in Scenario::ALL {
        let report = &results.scenarios[scenario.name()];
        assert!(
            !report.figures.is_empty(),
            "{}: no figures",
            scenario.name()
        );
        for figure in report.figures.iter().chain(&report.ratios) {
            let summary = figure
                .summary
                .unwrap_or_else(|| panic!("{}: {} has no samples", scenario.name(), figure.name));
            // Slopes and differences per path may be zero or negative: with one mount per
            // container, start time no longer grows with the closure, and noise decides the sign.
            let slope = figure.unit == "µs/path";
            assert!(
                summary.median.is_finite() && (slope || summary.min > 0.0),
                "{}: {} = {summary:?}",
                scenario.name(),
                figure.name
            );
        }
    }
    let markdown = std::fs::read_to_string(out.path().join("BENCHMARKS.md")).unwrap();
    assert!(markdown.contains("## Machine"), "{markdown}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("BENCHMARKS.json")).unwrap())
            .unwrap();
    assert!(json["scenarios"]["cold-fetch"]["ratios"][0]["summary"]["median"].is_number());
}
