//! `nixlet doctor`, run as a process against a temporary node: a host root with containerd's
//! config, a `/proc` entry for the running containerd, the shim, runc shim and runc (the real
//! binaries where this machine has them), a store, a Nix database, an environment source and a
//! substituter served on 127.0.0.1, and the `containerd` binary of the release under test (the
//! first on PATH) where the running containerd's executable is. A good node passes; each broken
//! variant fails with the finding that names it, and exit status 1. Run it per release line by
//! putting a release's directory first on PATH (see `scripts/fetch-containerd.sh`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;

use nixlet_installer::ContainerdVersion;
use support::containerd_daemon;

/// A real, valid ed25519 public key (only its syntax and curve point are checked).
const TRUSTED_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
const CONTAINERD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const GOOD_CACHE_INFO: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/containerd")
}

/// Serves `body` as `/nix-cache-info` (404 for anything else) on 127.0.0.1 until the test
/// process ends.
fn serve_cache_info(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request_line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = reader.read_line(&mut request_line);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let response = if request_line.starts_with("GET /nix-cache-info ") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    url
}

/// A URL nothing listens on.
fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

struct Node {
    root: tempfile::TempDir,
    cache_url: String,
}

impl Node {
    /// A node nixlet runs on: nothing for doctor to complain about.
    fn good() -> Node {
        let node = Node {
            root: tempfile::tempdir().unwrap(),
            cache_url: serve_cache_info(GOOD_CACHE_INFO),
        };
        // The config install writes for this release (see `runtime_form.rs`).
        let version = path_containerd();
        let fixture = if version.asks_features_only_of_runc_type() {
            "v3-plain/after-2.1"
        } else if version.major >= 2 {
            "v3-plain/after"
        } else {
            "v2-debian/after"
        };
        node.copy_tree(&fixtures().join(fixture));
        node.containerd_process(CONTAINERD_PATH);
        node.program(
            "/usr/bin/containerd",
            &containerd_daemon::which("containerd").unwrap_or_default(),
        );
        let shim_next_to_nixlet =
            Path::new(env!("CARGO_BIN_EXE_nixlet")).with_file_name("containerd-shim-nixlet-v2");
        node.program(
            "/usr/local/bin/containerd-shim-nixlet-v2",
            &shim_next_to_nixlet,
        );
        node.program(
            "/usr/bin/containerd-shim-runc-v2",
            Path::new("/usr/bin/containerd-shim-runc-v2"),
        );
        node.program("/usr/sbin/runc", Path::new("/usr/sbin/runc"));
        std::fs::create_dir_all(node.path("/nix/store")).unwrap();
        node.nix_db();
        node.write(
            "/var/lib/nixlet/environments/acme/web/1/manifest.toml",
            "version = 1\n",
        );
        node.node_config("");
        node
    }

    /// Where host path `host_path` is in the temporary root.
    fn path(&self, host_path: &str) -> PathBuf {
        self.root.path().join(host_path.trim_start_matches('/'))
    }

    fn write(&self, host_path: &str, text: &str) {
        let path = self.path(host_path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn copy_tree(&self, from: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let relative = entry.path().strip_prefix(from).unwrap().to_path_buf();
            copy_recursive(&entry.path(), &self.root.path().join(relative));
        }
    }

    /// The real program at `real` if this machine has it (a link to it), else a stand-in.
    fn program(&self, host_path: &str, real: &Path) {
        let path = self.path(host_path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if real.is_file() {
            std::os::unix::fs::symlink(real, &path).unwrap();
        } else {
            self.stand_in(
                host_path,
                "echo containerd github.com/containerd/containerd 1.6.20 stand-in",
            );
        }
    }

    /// A shell script standing in for a program this machine lacks, or for a release it does
    /// not have.
    fn stand_in(&self, host_path: &str, script: &str) {
        let path = self.path(host_path);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// containerd as `/proc` shows it: started without `--config`, with `path` as its PATH.
    fn containerd_process(&self, path: &str) {
        let proc_dir = self.path("/proc/4242");
        let _ = std::fs::remove_dir_all(&proc_dir);
        std::fs::create_dir_all(&proc_dir).unwrap();
        std::fs::write(proc_dir.join("comm"), "containerd\n").unwrap();
        std::fs::write(proc_dir.join("cmdline"), b"/usr/bin/containerd\0").unwrap();
        std::fs::write(
            proc_dir.join("environ"),
            format!("LANG=C.UTF-8\0PATH={path}\0INVOCATION_ID=1\0"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/usr/bin/containerd", proc_dir.join("exe")).unwrap();
    }

    /// A database with Nix's table layout and one valid path.
    fn nix_db(&self) {
        let path = self.path("/nix/var/nix/db/db.sqlite");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "create table ValidPaths (id integer primary key autoincrement not null, \
             path text unique not null, hash text not null, registrationTime integer not null, \
             deriver text, narSize integer, ultimate integer, sigs text, ca text);
             create table Refs (referrer integer not null, reference integer not null, \
             primary key (referrer, reference));
             insert into ValidPaths (path, hash, registrationTime) values \
             ('/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12', 'sha256:00', 1);",
        )
        .unwrap();
    }

    /// The node config: one dir source, one substituter, plus `extra` TOML at the top.
    fn node_config(&self, extra: &str) {
        self.node_config_with_substituter(
            extra,
            &format!(
                "url = \"{}\"\ntrusted_keys = [\"{TRUSTED_KEY}\"]\n",
                self.cache_url
            ),
        );
    }

    fn node_config_with_substituter(&self, extra: &str, substituter: &str) {
        self.write(
            "/etc/nixlet/config.toml",
            &format!(
                "{extra}\n[[sources]]\nkind = \"dir\"\nroot = \"/var/lib/nixlet/environments\"\n\
                 [[substituters]]\n{substituter}"
            ),
        );
    }

    /// Replaces `from` by `to` in the file declaring nixlet's runtime: the main file (schema 2)
    /// or the drop-in (schema 3), whichever the good node has.
    fn edit_runtime_declaration(&self, from: &str, to: &str) {
        for file in [
            "/etc/containerd/config.toml",
            "/etc/containerd/conf.d/nixlet.toml",
        ] {
            if let Ok(config) = std::fs::read_to_string(self.path(file)) {
                self.write(file, &config.replace(from, to));
            }
        }
    }

    /// The form install writes on containerd 2.0-2.3 (README "containerd 2.0 to 2.3"): a
    /// runc-type runtime whose runtime_path is nixlet's shim.
    fn declare_as_runc_type(&self) {
        self.edit_runtime_declaration(NIXLET_TYPE_FORM, RUNC_TYPE_FORM);
    }

    /// The form install writes everywhere else: `io.containerd.nixlet.v2`.
    fn declare_as_nixlet_type(&self) {
        self.edit_runtime_declaration(RUNC_TYPE_FORM, NIXLET_TYPE_FORM);
    }

    fn doctor(&self, extra_args: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_nixlet"))
            .arg("doctor")
            .arg("--host-root")
            .arg(self.root.path())
            .args(extra_args)
            .env_remove("NIXLET_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "nixlet doctor: {}\n--- stdout\n{}--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

/// The two ways install declares the runtime (`runtime_form.rs`), as its fixtures write them.
const NIXLET_TYPE_FORM: &str = "runtime_type = \"io.containerd.nixlet.v2\"";
const RUNC_TYPE_FORM: &str = "runtime_type = \"io.containerd.runc.v2\"\n  \
     runtime_path = \"/usr/local/bin/containerd-shim-nixlet-v2\"";

/// The release of the first `containerd` on PATH; 1.6.20 when none is installed (its stand-in
/// binary then says so).
fn path_containerd() -> ContainerdVersion {
    match containerd_daemon::which("containerd") {
        Some(_) => containerd_daemon::path_version(),
        None => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "containerd is not installed; CI=true makes this a failure"
            );
            ContainerdVersion::parse("1.6.20").unwrap()
        }
    }
}

fn copy_recursive(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_recursive(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// The finding lines (`ok`, `warn`, `FAIL`) with their status.
fn findings(output: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let status = line.get(..4)?;
            let rest = line.get(4..)?.strip_prefix("  ")?;
            matches!(status, "ok  " | "warn" | "FAIL")
                .then(|| (status.trim().to_string(), rest.to_string()))
        })
        .collect()
}

/// Runs doctor on `node`, expects exit status 1 and exactly one problem, in `check`, whose
/// message contains `expected`, with a fix under it.
fn assert_one_problem(node: &Node, args: &[&str], check: &str, expected: &str) {
    let output = node.doctor(args);
    assert_eq!(output.status.code(), Some(1), "doctor must fail");
    let problems: Vec<String> = findings(&output)
        .into_iter()
        .filter(|(status, _)| status == "FAIL")
        .map(|(_, line)| line)
        .collect();
    assert_eq!(problems.len(), 1, "exactly one problem: {problems:#?}");
    assert!(
        problems[0].starts_with(&format!("{check}: ")) && problems[0].contains(expected),
        "expected a {check} problem containing {expected:?}, got {:?}",
        problems[0]
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let after = stdout.split(&problems[0]).nth(1).unwrap();
    assert!(
        after.lines().nth(1).unwrap().starts_with("      fix: "),
        "a fix follows the problem"
    );
}

#[test]
fn a_good_node_passes_every_check() {
    let node = Node::good();
    let output = node.doctor(&[]);
    assert_eq!(output.status.code(), Some(0));
    let findings = findings(&output);
    assert!(
        findings.iter().all(|(status, _)| status == "ok"),
        "{findings:#?}"
    );
    let checks: Vec<&str> = findings
        .iter()
        .map(|(_, line)| line.split(':').next().unwrap())
        .collect();
    assert_eq!(
        checks,
        vec![
            "node config",
            "containerd config",
            "containerd process",
            "containerd version",
            "nixlet shim",
            "runc shim",
            "oci runtime",
            "nix store",
            "nix database",
            "substituter",
            "substituter",
            "environment source",
        ]
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(
        "ok    nixlet shim: /usr/local/bin/containerd-shim-nixlet-v2 (found on the PATH of \
         containerd (pid 4242))"
    ));
    assert!(stdout.contains("nix database: /nix/var/nix/db/db.sqlite is readable: 1 valid paths"));
    assert!(stdout.contains(&format!(
        "substituter: {} answers nix-cache-info: StoreDir /nix/store, priority 40",
        node.cache_url
    )));
    assert!(stdout.contains(
        "environment source: dir /var/lib/nixlet/environments is readable: 1 environments"
    ));
    assert!(
        stdout.ends_with("12 checks: 12 ok, 0 warnings, 0 problems\n"),
        "{stdout}"
    );
}

#[test]
fn every_installer_fixture_is_broken_before_install_and_fine_after() {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let fixture = entry.unwrap().path();
        for after in std::fs::read_dir(&fixture).unwrap() {
            let after = after.unwrap().file_name().to_string_lossy().to_string();
            if after.starts_with("after") {
                cases.push((fixture.clone(), after));
            }
        }
    }
    assert!(cases.len() > 10, "{cases:?}");
    for (fixture, after) in cases {
        let name = format!("{}/{after}", fixture.file_name().unwrap().to_string_lossy());
        let containerd_line = |node: &Node| {
            let output = node.doctor(&[]);
            findings(&output)
                .into_iter()
                .find(|(_, line)| line.starts_with("containerd config: "))
                .unwrap()
        };
        let node = Node::good();
        if after == "after-2.1" {
            // Written for containerd 2.0-2.3: the runc form, which 1.6 cannot run.
            node.stand_in(
                "/usr/bin/containerd",
                "echo containerd github.com/containerd/containerd v2.1.9 0e4b5a3",
            );
        }
        std::fs::remove_dir_all(node.path("/etc/containerd")).unwrap();
        if fixture.join("before").is_dir() {
            node.copy_tree(&fixture.join("before"));
        }
        let (status, line) = containerd_line(&node);
        assert_eq!(status, "FAIL", "{name} before install: {line}");
        node.copy_tree(&fixture.join(&after));
        let (status, line) = containerd_line(&node);
        assert_eq!(status, "ok", "{name} after install: {line}");
    }
}

#[test]
fn no_containerd_config() {
    let node = Node::good();
    std::fs::remove_file(node.path("/etc/containerd/config.toml")).unwrap();
    assert_one_problem(
        &node,
        &[],
        "containerd config",
        "no containerd config at /etc/containerd/config.toml",
    );
}

#[test]
fn containerd_config_without_the_runtime() {
    let node = Node::good();
    node.write("/etc/containerd/config.toml", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n");
    assert_one_problem(
        &node,
        &[],
        "containerd config",
        "declare no `nixlet` runtime",
    );
}

#[test]
fn runtime_without_annotation_pass_through() {
    let node = Node::good();
    node.write(
        "/etc/containerd/config.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nixlet]\n\
         runtime_type = \"io.containerd.nixlet.v2\"\npod_annotations = [\"*\"]\n",
    );
    assert_one_problem(
        &node,
        &[],
        "containerd config",
        "pod_annotations [\"*\"] does not pass nixlet.dev/environment",
    );
}

#[test]
fn runtime_of_the_wrong_type() {
    let node = Node::good();
    node.declare_as_nixlet_type();
    node.edit_runtime_declaration("io.containerd.nixlet.v2", "io.containerd.runc.v2");
    assert_one_problem(
        &node,
        &[],
        "containerd config",
        "runtime_type is \"io.containerd.runc.v2\"",
    );
}

/// The runc form (install writes it on 2.0-2.3): a runc-type runtime whose runtime_path is
/// nixlet's shim. Fine from containerd 1.7; 1.6 starts a pod's containers with the runc shim
/// itself.
#[test]
fn runtime_declared_as_runc_type_with_nixlets_shim() {
    let node = Node::good();
    node.declare_as_runc_type();
    let version = path_containerd();
    if (version.major, version.minor) >= (1, 7) {
        let output = node.doctor(&[]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{stdout}");
        assert!(
            stdout.contains(
                "io.containerd.runc.v2 at /usr/local/bin/containerd-shim-nixlet-v2, pod and \
                 container annotations"
            ),
            "{stdout}"
        );
    } else {
        assert_one_problem(
            &node,
            &[],
            "containerd config",
            "so they get no environment (this form needs 1.7 or later)",
        );
    }
}

/// containerd 2.0 to 2.3 ask only `io.containerd.runc.v2` runtimes for their features, so the
/// kubelet refuses recursive read-only mounts for nixlet's handler in the first form (what an
/// older nixlet, or install for another release, wrote): a warning whose fix is to run
/// install, which writes the runc form there. Releases are stand-ins of the binary the
/// containerd process runs (no socket answers in the temporary root); both read the good
/// node's config whichever release is on PATH.
#[test]
fn on_containerd_2_0_to_2_3_the_first_form_is_warned_about() {
    let warnings = |output: &Output| -> Vec<String> {
        assert_eq!(output.status.code(), Some(0), "a warning is no problem");
        findings(output)
            .into_iter()
            .filter(|(status, _)| status == "warn")
            .map(|(_, line)| line)
            .collect()
    };
    let node = Node::good();
    node.declare_as_nixlet_type();
    node.stand_in(
        "/usr/bin/containerd",
        "echo containerd github.com/containerd/containerd v2.1.9 0e4b5a3",
    );
    let output = node.doctor(&[]);
    assert_eq!(
        warnings(&output),
        vec![
            "containerd config: containerd v2.1.9 reports a runtime's features (recursive \
             read-only mounts, user namespaces) to the kubelet only for \
             \"io.containerd.runc.v2\" runtimes: pods of the `nixlet` RuntimeClass that ask for \
             recursiveReadOnly mounts are refused"
                .to_string()
        ]
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "fix: run `nixlet node install --host-root /`: on containerd 2.0 to 2.3 it declares \
             containerd-shim-nixlet-v2 as a runtime of type \"io.containerd.runc.v2\""
        ),
        "{stdout}"
    );

    node.stand_in(
        "/usr/bin/containerd",
        "echo containerd github.com/containerd/containerd v2.4.0 0e4b5a3",
    );
    assert_eq!(
        warnings(&node.doctor(&[])),
        Vec::<String>::new(),
        "2.4 asks every runtime"
    );

    node.stand_in(
        "/usr/bin/containerd",
        "echo containerd github.com/containerd/containerd v2.1.9 0e4b5a3",
    );
    node.declare_as_runc_type();
    assert_eq!(
        warnings(&node.doctor(&[])),
        Vec::<String>::new(),
        "the runc-type form has no such limit"
    );
}

/// A node installed for containerd 1.x, plus a GPU drop-in that sets the CRI plugin table.
fn node_with_a_cri_drop_in(containerd: &Path) -> Node {
    let node = Node::good();
    std::fs::remove_dir_all(node.path("/etc/containerd")).unwrap();
    node.copy_tree(&fixtures().join("v2-debian/after"));
    node.node_config("");
    std::fs::remove_file(node.path("/usr/bin/containerd")).unwrap();
    node.program("/usr/bin/containerd", containerd);
    let config = std::fs::read_to_string(node.path("/etc/containerd/config.toml")).unwrap();
    node.write(
        "/etc/containerd/config.toml",
        &config.replace(
            "version = 2\n",
            "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
        ),
    );
    node.write(
        "/etc/containerd/conf.d/gpu.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"nvidia\"\n",
    );
    node
}

/// Debian 12's containerd 1.6: the drop-in's CRI table replaces the one with the runtime.
#[test]
fn on_containerd_1_an_import_replaces_the_cri_table_holding_the_runtime() {
    let system = Path::new("/usr/bin/containerd");
    if !system.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Debian's containerd is not installed; CI=true makes this a failure"
        );
        eprintln!("skipped: /usr/bin/containerd is not installed");
        return;
    }
    assert_one_problem(
        &node_with_a_cri_drop_in(system),
        &[],
        "containerd config",
        "declared in /etc/containerd/config.toml but /etc/containerd/conf.d/gpu.toml also sets \
         the CRI plugin table",
    );
}

/// The same files read by containerd 2.x (first on PATH): merged key by key, the runtime stays.
#[test]
fn on_containerd_2_an_import_merges_into_the_cri_table() {
    let version = path_containerd();
    if version.major < 2 {
        eprintln!("skipped: containerd {version} on PATH; put a 2.x release first");
        return;
    }
    let node = node_with_a_cri_drop_in(&containerd_daemon::which("containerd").unwrap());
    let output = node.doctor(&[]);
    let line = findings(&output)
        .into_iter()
        .find(|(_, line)| line.starts_with("containerd config: "))
        .unwrap();
    assert_eq!(line.0, "ok", "{line:?}");
}

#[test]
fn schema_one_containerd_config() {
    let node = Node::good();
    node.write(
        "/etc/containerd/config.toml",
        "[plugins.cri]\nsandbox_image = \"pause\"\n",
    );
    assert_one_problem(&node, &[], "containerd config", "has no `version`");
}

#[test]
fn shim_not_on_containerds_path() {
    let node = Node::good();
    node.containerd_process("/usr/sbin:/usr/bin:/sbin:/bin");
    assert_one_problem(
        &node,
        &[],
        "nixlet shim",
        "containerd-shim-nixlet-v2 is not on the PATH of containerd (pid 4242) \
         (/usr/sbin:/usr/bin:/sbin:/bin)",
    );
}

#[test]
fn shim_next_to_containerd_is_found_without_path() {
    let node = Node::good();
    node.containerd_process("/usr/sbin:/usr/bin:/sbin:/bin");
    std::fs::rename(
        node.path("/usr/local/bin/containerd-shim-nixlet-v2"),
        node.path("/usr/bin/containerd-shim-nixlet-v2"),
    )
    .unwrap();
    let output = node.doctor(&[]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn no_runc_shim() {
    let node = Node::good();
    std::fs::remove_file(node.path("/usr/bin/containerd-shim-runc-v2")).unwrap();
    assert_one_problem(&node, &[], "runc shim", "containerd-shim-runc-v2 is not on");
}

#[test]
fn configured_oci_runtime_missing() {
    let node = Node::good();
    node.node_config("[runtime]\nbinary_name = \"crun\"\n");
    assert_one_problem(
        &node,
        &[],
        "oci runtime",
        "crun ([runtime] binary_name) is not on",
    );
}

#[test]
fn no_nix_store() {
    let node = Node::good();
    std::fs::remove_dir(node.path("/nix/store")).unwrap();
    assert_one_problem(&node, &[], "nix store", "/nix/store does not exist");
}

#[test]
fn nix_store_without_room() {
    let node = Node::good();
    assert_one_problem(
        &node,
        &["--min-free-mib", "1000000000"],
        "nix store",
        "less than the 976562.5 GiB asked for",
    );
}

#[test]
fn read_only_nix_store() {
    let is_root = nix::unistd::Uid::effective().is_root();
    if !is_root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "read_only_nix_store needs root (to mount a read-only tmpfs) in CI"
        );
        eprintln!("read_only_nix_store: skipping: not root (mounting a read-only tmpfs needs it)");
        return;
    }
    let node = Node::good();
    let store = node.path("/nix/store");
    nix::mount::mount(
        Some("tmpfs"),
        &store,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount(&self.0);
        }
    }
    let _unmount = Unmount(store);
    assert_one_problem(&node, &[], "nix store", "/nix/store is not writable");
}

#[test]
fn no_nix_database() {
    let node = Node::good();
    std::fs::remove_file(node.path("/nix/var/nix/db/db.sqlite")).unwrap();
    assert_one_problem(
        &node,
        &[],
        "nix database",
        "no Nix database at /nix/var/nix/db/db.sqlite",
    );
}

#[test]
fn unreadable_nix_database() {
    let node = Node::good();
    node.write("/nix/var/nix/db/db.sqlite", &"not sqlite ".repeat(100));
    assert_one_problem(
        &node,
        &[],
        "nix database",
        "/nix/var/nix/db/db.sqlite is not readable",
    );
}

#[test]
fn substituter_not_answering() {
    let node = Node::good();
    let url = closed_port_url();
    node.node_config_with_substituter(
        "",
        &format!("url = \"{url}\"\ntrusted_keys = [\"{TRUSTED_KEY}\"]\n"),
    );
    assert_one_problem(
        &node,
        &[],
        "substituter",
        &format!("{url}: {url}/nix-cache-info"),
    );
}

#[test]
fn substituter_for_another_store_dir() {
    let node = Node::good();
    let url = serve_cache_info("StoreDir: /gnu/store\n");
    node.node_config_with_substituter(
        "",
        &format!("url = \"{url}\"\ntrusted_keys = [\"{TRUSTED_KEY}\"]\n"),
    );
    assert_one_problem(&node, &[], "substituter", "/gnu/store");
}

#[test]
fn substituter_without_a_trusted_key() {
    let node = Node::good();
    node.node_config_with_substituter("", &format!("url = \"{}\"\n", node.cache_url));
    assert_one_problem(
        &node,
        &[],
        "substituter",
        "has no trusted_keys: with require_signatures every path from it is refused",
    );
}

#[test]
fn substituter_with_a_malformed_key() {
    let node = Node::good();
    node.node_config_with_substituter(
        "",
        &format!(
            "url = \"{}\"\ntrusted_keys = [\"cache-1\"]\n",
            node.cache_url
        ),
    );
    assert_one_problem(
        &node,
        &[],
        "substituter",
        "invalid trusted public key \"cache-1\": expected name:base64",
    );
}

#[test]
fn environment_source_missing() {
    let node = Node::good();
    std::fs::remove_dir_all(node.path("/var/lib/nixlet/environments")).unwrap();
    assert_one_problem(
        &node,
        &[],
        "environment source",
        "dir /var/lib/nixlet/environments is not readable",
    );
}

#[test]
fn node_config_that_does_not_parse() {
    let node = Node::good();
    node.write("/etc/nixlet/config.toml", "sytem = \"x86_64-linux\"\n[[sources]]\nkind = \"dir\"\nroot = \"/var/lib/nixlet/environments\"\n");
    let output = node.doctor(&[]);
    assert_eq!(output.status.code(), Some(1));
    let findings = findings(&output);
    assert!(
        findings.iter().any(|(status, line)| status == "FAIL"
            && line.starts_with("node config: node config /etc/nixlet/config.toml")
            && line.contains("unknown field `sytem`")),
        "{findings:#?}"
    );
}

#[test]
fn no_running_containerd_is_a_warning_only() {
    let node = Node::good();
    std::fs::remove_dir_all(node.path("/proc")).unwrap();
    let output = node.doctor(&[]);
    assert_eq!(output.status.code(), Some(0));
    let warnings: Vec<(String, String)> = findings(&output)
        .into_iter()
        .filter(|finding| finding.0 != "ok")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].1.starts_with(
        "containerd process: no running containerd reads /etc/containerd/config.toml"
    ));
}

/// The `containerd version` finding of a doctor run.
fn version_line(output: &Output) -> (String, String) {
    findings(output)
        .into_iter()
        .find(|(_, line)| line.starts_with("containerd version: "))
        .expect("a containerd version finding")
}

#[test]
fn the_version_comes_from_the_running_containerds_binary_when_its_socket_is_not_there() {
    let node = Node::good();
    let version = path_containerd();
    let output = node.doctor(&[]);
    let (status, line) = version_line(&output);
    assert_eq!(status, "ok");
    let bootstrap = if (version.major, version.minor) >= (2, 3) {
        "BootstrapParams on stdin (containerd 2.3 and later)"
    } else {
        "legacy flags and stdin options (containerd 1.6 to 2.2)"
    };
    let schema = if version.major >= 2 { 3 } else { 2 };
    let migrated = if (version.major, version.minor) >= (2, 3) {
        ", which it migrates to 4 at every start"
    } else {
        ""
    };
    assert_eq!(
        line,
        format!(
            "containerd version: {version} (its binary /usr/bin/containerd says so; no socket at \
             /run/containerd/containerd.sock): it starts nixlet's shim with {bootstrap}; \
             /etc/containerd/config.toml is schema {schema}{migrated}"
        )
    );
}

#[test]
fn the_version_is_asked_on_the_socket_the_running_containerd_serves() {
    if !containerd_daemon::available(
        "the_version_is_asked_on_the_socket_the_running_containerd_serves",
    ) {
        return;
    }
    let node = Node::good();
    // The binary where the process's executable is would say another release: the socket wins.
    node.stand_in(
        "/usr/bin/containerd",
        "echo containerd github.com/containerd/containerd 1.6.0 stand-in",
    );
    let daemon = containerd_daemon::Daemon::start(&node.path("/run/containerd/containerd.sock"));
    let output = node.doctor(&[]);
    let (status, line) = version_line(&output);
    assert_eq!(status, "ok", "{line}");
    assert!(
        line.starts_with(&format!(
            "containerd version: {} (answered at /run/containerd/containerd.sock): ",
            daemon.version
        )),
        "{line}\n{}",
        daemon.log()
    );

    // A socket named on containerd's command line is the one asked.
    drop(daemon);
    let _ = std::fs::remove_file(node.path("/run/containerd/containerd.sock"));
    let daemon = containerd_daemon::Daemon::start(&node.path("/run/k3s/containerd.sock"));
    std::fs::write(
        node.path("/proc/4242/cmdline"),
        b"/usr/bin/containerd\0--address\0/run/k3s/containerd.sock\0",
    )
    .unwrap();
    let (_, line) = version_line(&node.doctor(&[]));
    assert!(
        line.starts_with(&format!(
            "containerd version: {} (answered at /run/k3s/containerd.sock): ",
            daemon.version
        )),
        "{line}"
    );
}

#[test]
fn a_containerd_older_than_1_6_is_a_problem() {
    let node = Node::good();
    // The form no release before 1.7 objects to, so that the version is the one problem.
    node.declare_as_nixlet_type();
    node.stand_in(
        "/usr/bin/containerd",
        "echo containerd github.com/containerd/containerd v1.5.18 0e4b5a3",
    );
    assert_one_problem(
        &node,
        &[],
        "containerd version",
        "containerd v1.5.18 is not supported: nixlet supports containerd 1.6 and later (its \
         binary /usr/bin/containerd says so",
    );
}

/// Debian 12's containerd 1.6 (the system package) with the schema 3 config a 2.x node has:
/// containerd would not start.
#[test]
fn a_config_schema_the_running_containerd_cannot_read_is_a_problem() {
    let system = Path::new("/usr/bin/containerd");
    if !system.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Debian's containerd is not installed; CI=true makes this a failure"
        );
        eprintln!("skipped: /usr/bin/containerd is not installed");
        return;
    }
    let node = Node::good();
    std::fs::remove_dir_all(node.path("/etc/containerd")).unwrap();
    node.copy_tree(&fixtures().join("v3-plain/after"));
    node.node_config("");
    std::fs::remove_file(node.path("/usr/bin/containerd")).unwrap();
    node.program("/usr/bin/containerd", system);
    let version = containerd_daemon::Daemon::version_of(system);
    assert_eq!(version.major, 1, "{version}");
    assert_one_problem(
        &node,
        &[],
        "containerd version",
        &format!(
            "it cannot read /etc/containerd/config.toml, which declares version 3 (that needs \
             containerd 2.0 or later; {} reads up to version 2), so it does not start",
            version.line()
        ),
    );
}

#[test]
fn no_running_containerd_reports_the_version_of_the_installed_one() {
    let node = Node::good();
    std::fs::remove_dir_all(node.path("/proc")).unwrap();
    let (status, line) = version_line(&node.doctor(&[]));
    assert_eq!(status, "ok");
    assert!(
        line.contains(" (not running; its binary /usr/bin/containerd says so): "),
        "{line}"
    );
}
