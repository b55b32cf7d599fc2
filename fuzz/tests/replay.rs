//! Replays every saved fuzz input through its target on the stable toolchain: the seed and
//! minimised corpora (`corpus/<target>/`) and every input that once crashed a target
//! (`regressions/<target>/`, named after the bug). `.ci/run` runs this with the workspace tests,
//! so a crash that was fixed cannot come back unnoticed.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use nixlet_fuzz::{Target, TARGETS};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` on each file, and names every file that panicked.
fn replay(target: Target, files: &[PathBuf]) -> Vec<String> {
    let mut failed = Vec::new();
    for file in files {
        let data = fs::read(file).expect("readable input");
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    failed
}

fn replay_target(name: &str) {
    let (_, target) = TARGETS
        .iter()
        .find(|(known, _)| *known == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = inputs(&root.join("corpus").join(name));
    // A target without seeds would replay nothing and pass whatever its code does.
    assert!(!corpus.is_empty(), "corpus/{name} has no inputs");
    let regressions = inputs(&root.join("regressions").join(name));
    let mut failed = replay(*target, &corpus);
    failed.extend(replay(*target, &regressions));
    assert!(failed.is_empty(), "{name} panicked on: {failed:#?}");
}

#[test]
fn every_target_has_a_replay_test() {
    // Each target below has its own test so one slow target does not hide another's result.
    let tested = [
        "narinfo",
        "nar_unpack",
        "nar_stream",
        "manifest_toml",
        "manifest_lock",
        "annotations",
        "node_config",
        "netrc",
        "http_source",
    ];
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, tested);
    for dir in fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions"))
        .into_iter()
        .flatten()
    {
        let name = dir.expect("regressions entry").file_name();
        assert!(
            names.iter().any(|known| name == *known),
            "regressions/{name:?} names no target"
        );
    }
}

#[test]
fn narinfo() {
    replay_target("narinfo");
}

#[test]
fn nar_unpack() {
    replay_target("nar_unpack");
}

#[test]
fn nar_stream() {
    replay_target("nar_stream");
}

#[test]
fn manifest_toml() {
    replay_target("manifest_toml");
}

#[test]
fn manifest_lock() {
    replay_target("manifest_lock");
}

#[test]
fn annotations() {
    replay_target("annotations");
}

#[test]
fn node_config() {
    replay_target("node_config");
}

#[test]
fn netrc() {
    replay_target("netrc");
}

#[test]
fn http_source() {
    replay_target("http_source");
}
