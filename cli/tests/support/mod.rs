//! A temporary node for installer tests: a host root seeded from a fixture, fake binaries to
//! install, a restarter that only counts, and byte-exact snapshots of the whole tree.

#![allow(dead_code)] // each test file uses a different part

pub mod containerd_daemon;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nixlet_installer::{
    ContainerdRestarter, ContainerdVersion, InstallOptions, Report, RestartError, RunningContainerd,
};

pub const SHIM_BYTES: &[u8] = b"#!/bin/sh\n# stands in for containerd-shim-nixlet-v2\n";
pub const CLI_BYTES: &[u8] = b"#!/bin/sh\n# stands in for nixlet\n";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/containerd")
}

/// Counts restart requests instead of restarting containerd.
#[derive(Default)]
pub struct CountingRestarter {
    pub count: Cell<usize>,
    pub fail: Cell<bool>,
}

impl ContainerdRestarter for CountingRestarter {
    fn restart(&self) -> Result<(), RestartError> {
        if self.fail.get() {
            return Err(RestartError::Empty);
        }
        self.count.set(self.count.get() + 1);
        Ok(())
    }
}

pub struct Node {
    pub root: tempfile::TempDir,
    pub source: tempfile::TempDir,
    pub restarter: CountingRestarter,
    /// The containerd release install is told reads the config (as `--containerd-version`).
    pub containerd: ContainerdVersion,
}

impl Node {
    /// A node whose file system starts as `fixtures/<case>/before` (nothing when absent).
    pub fn from_fixture(case: &str) -> Node {
        Node::from_fixture_on(case, "1.6.20")
    }

    /// A fixture node whose containerd is release `containerd` (e.g. `2.1.9`).
    pub fn from_fixture_on(case: &str, containerd: &str) -> Node {
        let mut node = Node::empty();
        node.containerd = ContainerdVersion::parse(containerd).unwrap();
        let before = fixtures().join(case).join("before");
        if before.exists() {
            copy_tree(&before, node.root.path());
        }
        node
    }

    pub fn empty() -> Node {
        let source = tempfile::tempdir().unwrap();
        fs::write(source.path().join("containerd-shim-nixlet-v2"), SHIM_BYTES).unwrap();
        fs::write(source.path().join("nixlet"), CLI_BYTES).unwrap();
        let root = tempfile::tempdir().unwrap();
        // A node always has these; the installer records only what it creates.
        for dir in ["etc", "usr/local/bin", "var/lib"] {
            fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        Node {
            root,
            source,
            restarter: CountingRestarter::default(),
            containerd: ContainerdVersion::parse("1.6.20").unwrap(),
        }
    }

    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root.path().join(host_path.trim_start_matches('/'))
    }

    pub fn read(&self, host_path: &str) -> String {
        fs::read_to_string(self.path(host_path))
            .unwrap_or_else(|error| panic!("read {host_path}: {error}"))
    }

    pub fn options(&self) -> InstallOptions {
        InstallOptions {
            host_root: self.root.path().to_path_buf(),
            binary_dir: "/usr/local/bin".into(),
            source_dir: self.source.path().to_path_buf(),
            node_config: None,
            containerd: RunningContainerd::Given(self.containerd.clone()),
        }
    }

    pub fn install(&self) -> Report {
        self.install_with(&self.options())
    }

    pub fn install_with(&self, options: &InstallOptions) -> Report {
        nixlet_installer::install(options, Some(&self.restarter))
            .unwrap_or_else(|error| panic!("install: {error}"))
    }

    pub fn uninstall(&self) -> Report {
        nixlet_installer::uninstall(self.root.path(), Some(&self.restarter))
            .unwrap_or_else(|error| panic!("uninstall: {error}"))
    }

    pub fn restarts(&self) -> usize {
        self.restarter.count.get()
    }

    pub fn snapshot(&self) -> Snapshot {
        snapshot(self.root.path())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, bytes: Vec<u8> },
}

/// Every directory and file below a root, with permission bits and contents.
pub type Snapshot = BTreeMap<PathBuf, Entry>;

pub fn snapshot(root: &Path) -> Snapshot {
    let mut entries = BTreeMap::new();
    walk(root, root, &mut entries);
    entries
}

fn walk(root: &Path, dir: &Path, entries: &mut Snapshot) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let metadata = fs::symlink_metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o7777;
        let relative = path.strip_prefix(root).unwrap().to_path_buf();
        if metadata.is_dir() {
            entries.insert(relative, Entry::Dir { mode });
            walk(root, &path, entries);
        } else {
            entries.insert(
                relative,
                Entry::File {
                    mode,
                    bytes: fs::read(&path).unwrap(),
                },
            );
        }
    }
}

pub fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_tree(&path, &target);
        } else {
            fs::copy(&path, &target).unwrap();
        }
    }
}

/// Files of a snapshot below `prefix`, as text, for readable assertion failures.
pub fn text_files(snapshot: &Snapshot, prefix: &str) -> BTreeMap<PathBuf, String> {
    snapshot
        .iter()
        .filter(|(path, _)| path.starts_with(prefix))
        .filter_map(|(path, entry)| match entry {
            Entry::File { bytes, .. } => {
                Some((path.clone(), String::from_utf8_lossy(bytes).into_owned()))
            }
            Entry::Dir { .. } => None,
        })
        .collect()
}
