//! Issue 7, metrics end to end: pods run and fail on a real node, their shims exit, and only then
//! the real `nixlet node run` starts and is scraped over HTTP. Its counters must have moved by
//! exactly what the shims did (rewritten containers, failures by phase, resolutions, paths and
//! NAR bytes per substituter, cache hits, fetch durations), although no shim was alive to tell
//! it; a container started while the agent runs is counted at the next scrape.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use nixlet_e2e::agent::{free_port, NodeAgent, Scrape};
use nixlet_e2e::binary_cache::{
    substituter_toml, unique_tag, BinaryCache, RemoteClosure, SigningKey,
};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::ContainerSpec;
use nixlet_e2e::expect::{assert_refused, environment_of, run_ok, start_fails, ENVIRONMENT};
use nixlet_e2e::flox::FloxManifest;
use nixlet_e2e::http_server::HttpServer;
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::procs;
use nixlet_e2e::store_paths::StoreCleanup;
use nixlet_e2e::wait;

const GOOD: &str = "e2e-metrics/good";
const TAMPERED: &str = "e2e-metrics/tampered";
const UNKNOWN: &str = "e2e-metrics/unknown";

fn tool_container(name: &str) -> ContainerSpec {
    ContainerSpec::new(name, EMPTY_IMAGE).command(&["fetched-tool"])
}

/// The shims' record files below the node's state dir.
fn record_files(state_dir: &Path) -> Vec<String> {
    std::fs::read_dir(state_dir.join("telemetry"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("shim-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The agent's own node config: the test node's state dir and store, `/metrics` on loopback,
/// and a GC roots dir of its own that does not exist, so that the agent's sweep of stale roots
/// cannot touch the roots of anything else running on this machine.
fn agent_config(node: &TestNode, port: u16) -> Result<std::path::PathBuf> {
    let path = node.scratch_subdir("agent")?.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "nix_db = \"/nix/var/nix/db/db.sqlite\"\nstate_dir = \"{}\"\n\
             gc_roots_dir = \"/nix/var/nix/gcroots/{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            node.state_dir().display(),
            unique_tag("nixlet-e2e-metrics-roots")
        ),
    )?;
    Ok(path)
}

fn assert_series(scrape: &Scrape, expected: &[(&str, f64)]) {
    for (series, value) in expected {
        assert_eq!(
            scrape.value(series),
            *value,
            "{series}; the scrape was:\n{}",
            scrape.text
        );
    }
}

#[test]
fn metrics_count_what_exited_shims_recorded() {
    let cleanup = StoreCleanup::default();
    for reference in [GOOD, TAMPERED, UNKNOWN] {
        cleanup.views_of(reference);
    }
    TestNode::run_test("metrics_count_what_exited_shims_recorded", |node| {
        // A signed loopback cache with a good closure and one whose busybox NAR is tampered.
        let work = node.scratch_subdir("metrics")?;
        let key = SigningKey::generate(&work.join("keys"), &unique_tag("nixlet-e2e-metrics"))?;
        let good = RemoteClosure::build(&work, &unique_tag("metrics-good"))?;
        cleanup.paths(good.everything());
        let tampered = RemoteClosure::build(&work, &unique_tag("metrics-tampered"))?;
        cleanup.paths(tampered.everything());
        let cache = BinaryCache::new(&work.join("cache"))?;
        cache.add(&good, &key, "xz")?;
        cache.add(&tampered, &key, "none")?;
        cache.flip_nar_byte(&tampered.busybox)?;
        good.remove_from_host()?;
        tampered.remove_from_host()?;
        let good_nar_bytes: u64 = good
            .paths()
            .iter()
            .map(|p| {
                cache
                    .field(p, "NarSize")
                    .map(|s| s.parse::<u64>().unwrap_or(0))
            })
            .sum::<Result<u64>>()?;

        let server = HttpServer::start(cache.root())?;
        node.set_node_config_extra(&substituter_toml(&server.url(), &[&key.public]))?;
        let manifest = |path: &str| FloxManifest::new().install("tool", path).toml();
        node.publish(GOOD, 1, &manifest(&good.tool))?;
        node.publish(TAMPERED, 1, &manifest(&tampered.tool))?;

        // Two rewritten containers (the first fetches the closure, the second finds it valid),
        // a verify failure and a resolve failure.
        let cri = node.cri();
        let pod = cri.run_pod(
            &node
                .pod("metrics", NIXLET_HANDLER)
                .annotation(ENVIRONMENT, GOOD)
                .annotation(&environment_of("tampered"), TAMPERED)
                .annotation(&environment_of("unknown"), UNKNOWN),
        )?;
        assert_eq!(
            run_ok(cri, &pod, &tool_container("fetched"))?,
            good.expected_output()
        );
        assert_eq!(
            run_ok(cri, &pod, &tool_container("again"))?,
            good.expected_output()
        );
        let err = start_fails(node, &pod, &tool_container("tampered"))?;
        assert_refused(&err, "verify", TAMPERED, &[&tampered.busybox]);
        let err = start_fails(node, &pod, &tool_container("unknown"))?;
        assert_refused(&err, "resolve", UNKNOWN, &["not found"]);

        // The pod goes and its shims exit before any agent runs.
        cri.stop_and_remove_pod(&pod.id)?;
        let address = node.containerd_address().display().to_string();
        wait::poll(
            "the pod's shims to exit",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || Ok(procs::shims_of(&address).is_empty().then_some(())),
        )?;
        let state_dir = node.state_dir();
        ensure!(
            !record_files(&state_dir).is_empty(),
            "the shims left no record in {}",
            state_dir.display()
        );

        let port = free_port()?;
        let config = agent_config(node, port)?;
        let agent = NodeAgent::start(&config, port, &work.join("agent.log"))?;
        eprintln!("nixlet node run is pid {}", agent.pid());
        let scrape = agent.scrape()?;
        let url = server.url();
        let per_cache = |name: &str| format!("{name}{{substituter=\"{url}\"}}");
        assert_series(
            &scrape,
            &[
                ("nixlet_containers_rewritten_total", 2.0),
                ("nixlet_create_failures_total{phase=\"verify\"}", 1.0),
                ("nixlet_create_failures_total{phase=\"resolve\"}", 1.0),
                ("nixlet_create_failures_total{phase=\"fetch\"}", 0.0),
                ("nixlet_environment_resolutions_total{result=\"ok\"}", 3.0),
                (
                    "nixlet_environment_resolutions_total{result=\"error\"}",
                    1.0,
                ),
                (&per_cache("nixlet_fetched_paths_total"), 3.0),
                (
                    &per_cache("nixlet_fetched_nar_bytes_total"),
                    good_nar_bytes as f64,
                ),
                ("nixlet_fetch_cache_hits_total", 3.0),
                ("nixlet_fetch_duration_seconds_count", 2.0),
                ("nixlet_telemetry_records_skipped_total", 0.0),
            ],
        );
        ensure!(
            scrape.value("nixlet_store_size_bytes") > 0.0
                && scrape.value("nixlet_store_free_bytes") > 0.0,
            "store gauges not measured:\n{}",
            scrape.text
        );
        // Their shims are gone and every line was read: the records are consumed.
        ensure!(
            record_files(&state_dir).is_empty(),
            "records of exited shims left: {:?}",
            record_files(&state_dir)
        );

        // One structured line per phase, naming container and pod, in containerd's log.
        let log = node.containerd_log();
        for needle in [
            "msg=\"environment resolved container=",
            "msg=\"closure ready container=",
            "msg=\"rewrote container spec container=",
        ] {
            ensure!(
                log.lines()
                    .any(|l| l.contains(needle) && l.contains("pod=default/metrics ")),
                "no {needle:?} line for the pod in containerd's log"
            );
        }
        ensure!(
            log.lines().any(|l| l.contains("create finished")
                && l.contains("pod=default/metrics ")
                && l.contains("outcome=failed phase=verify")),
            "no closing line of the refused Create in containerd's log"
        );

        // The shim's log level comes from the node config: a shim started now logs warnings only.
        node.set_node_config_extra(&format!(
            "{}\n[log]\nlevel = \"warn\"\n",
            substituter_toml(&server.url(), &[&key.public])
        ))?;

        // While the agent runs: a new pod's container (a cache hit of all three paths) shows at
        // the next scrape, with its shim still alive.
        let live_spec = node
            .pod("metrics-live", NIXLET_HANDLER)
            .annotation(ENVIRONMENT, GOOD);
        let live = cri.run_pod(&live_spec)?;
        assert_eq!(
            run_ok(cri, &live, &tool_container("live"))?,
            good.expected_output()
        );
        let scrape = agent.scrape()?;
        assert_series(
            &scrape,
            &[
                ("nixlet_containers_rewritten_total", 3.0),
                ("nixlet_fetch_cache_hits_total", 6.0),
                ("nixlet_fetch_duration_seconds_count", 3.0),
                (&per_cache("nixlet_fetched_paths_total"), 3.0),
                ("nixlet_create_failures_total{phase=\"verify\"}", 1.0),
            ],
        );
        let files = record_files(&state_dir);
        ensure!(
            files.len() == 1,
            "the live shim's record file is kept: {files:?}"
        );
        // The record names the pod as an Event's involvedObject needs it, uid included.
        let line = std::fs::read_to_string(state_dir.join("telemetry").join(&files[0]))?;
        let record: serde_json::Value = serde_json::from_str(line.trim_end())?;
        assert_eq!(record["pod_namespace"], "default", "{record}");
        assert_eq!(record["pod_name"], "metrics-live", "{record}");
        assert_eq!(record["pod_uid"], live_spec.uid.as_str(), "{record}");
        assert_eq!(record["container_name"], "live", "{record}");
        assert_eq!(record["outcome"], "rewritten", "{record}");
        let quiet: Vec<String> = node
            .containerd_log()
            .lines()
            .filter(|l| l.contains("pod=default/metrics-live"))
            .map(str::to_owned)
            .collect();
        ensure!(
            quiet.is_empty(),
            "[log] level = \"warn\" still logged: {quiet:?}"
        );
        drop(agent);
        Ok(())
    });
}
