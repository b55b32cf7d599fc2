//! `nixlet doctor`, run as a process against a temporary node: a host root with containerd's
//! config, a `/proc` entry for the running containerd, the shim, runc shim and runc (the real
//! binaries where this machine has them), a store, a Nix database, an environment source and a
//! substituter served on 127.0.0.1. A good node passes; each broken variant fails with the
//! finding that names it, and exit status 1.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
        node.copy_tree(&fixtures().join("v2-debian/after"));
        node.containerd_process(CONTAINERD_PATH);
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
            std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
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
        stdout.ends_with("11 checks: 11 ok, 0 warnings, 0 problems\n"),
        "{stdout}"
    );
}

#[test]
fn every_installer_fixture_is_broken_before_install_and_fine_after() {
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let fixture = entry.unwrap().path();
        let name = fixture.file_name().unwrap().to_string_lossy().to_string();
        let containerd_line = |node: &Node| {
            let output = node.doctor(&[]);
            findings(&output)
                .into_iter()
                .find(|(_, line)| line.starts_with("containerd config: "))
                .unwrap()
        };
        let node = Node::good();
        std::fs::remove_dir_all(node.path("/etc/containerd")).unwrap();
        if fixture.join("before").is_dir() {
            node.copy_tree(&fixture.join("before"));
        }
        let (status, line) = containerd_line(&node);
        assert_eq!(status, "FAIL", "{name} before install: {line}");
        node.copy_tree(&fixture.join("after"));
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
    let config = std::fs::read_to_string(node.path("/etc/containerd/config.toml")).unwrap();
    node.write(
        "/etc/containerd/config.toml",
        &config.replace("io.containerd.nixlet.v2", "io.containerd.runc.v2"),
    );
    assert_one_problem(
        &node,
        &[],
        "containerd config",
        "runtime_type is \"io.containerd.runc.v2\"",
    );
}

#[test]
fn an_import_replaces_the_cri_table_holding_the_runtime() {
    let node = Node::good();
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
    assert_one_problem(
        &node,
        &[],
        "containerd config",
        "declared in /etc/containerd/config.toml but /etc/containerd/conf.d/gpu.toml also sets \
         the CRI plugin table",
    );
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
        .filter(|(status, _)| status != "ok")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].1.starts_with(
        "containerd process: no running containerd reads /etc/containerd/config.toml"
    ));
}
