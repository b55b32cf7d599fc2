//! Issue 4 item 5, the `nix build` half of the Nix CLI fallback, end to end: a pod whose
//! environment installs a package from a local flake (locked with `nix flake metadata` as Flox
//! locks it) that no cache has starts, the shim having built the flake with real `nix build`
//! through a `nix-cli` substituter with `build_flakes = true`; an environment whose lock names
//! another output than the flake builds is refused at StartContainer with one `nixlet: verify`
//! line naming the package, the flake and both paths, and no view is installed for it.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use nixlet_e2e::binary_cache::unique_tag;
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::ContainerSpec;
use nixlet_e2e::expect::{assert_refused, environment_of, run_ok, start_fails, ENVIRONMENT};
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::host_system;
use nixlet_e2e::prereq::BUSYBOX;
use nixlet_e2e::store_paths::{is_valid, run, views_of, StoreCleanup};
use serde_json::json;

const BUILT: &str = "e2e-flake/built";
const WRONG: &str = "e2e-flake/wrong";
const KEY: &str = "flake-e2e-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// A local flake whose package is `bin/flake-tool`, a busybox script; locked by Nix.
struct LockedFlake {
    locked_url: String,
    attr_path: String,
    out: String,
}

fn flakes(args: &[&str]) -> Result<String> {
    run(std::process::Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(args))
}

/// Writes the flake into `dir`, locks it, and evaluates (without building) its output; what
/// Nix puts into the store for it goes to `cleanup`.
fn make_flake(dir: &Path, tag: &str, cleanup: &StoreCleanup) -> Result<LockedFlake> {
    std::fs::create_dir_all(dir.join("bb"))?;
    std::fs::copy(BUSYBOX, dir.join("bb/busybox")).context("copying busybox")?;
    let system = host_system();
    // busybox picks its applet from argv[0]'s base name: it runs as `<dir>/busybox sh`.
    std::fs::write(
        dir.join("flake.nix"),
        format!(
            r#"{{
  outputs = {{ self }}: {{
    packages.{system}.default = derivation {{
      name = "nixlet-e2e-flake-{tag}";
      system = "{system}";
      builder = "${{self}}/bb/busybox";
      args = [ "sh" "-c" ''
        bb=${{self}}/bb/busybox
        $bb mkdir -p $out/bin
        $bb printf '#!%s sh\necho hello from flake {tag}\n' $bb > $out/bin/flake-tool
        $bb chmod 0555 $out/bin/flake-tool
      '' ];
    }};
  }};
}}
"#
        ),
    )?;
    let metadata: serde_json::Value = serde_json::from_str(&flakes(&[
        "flake",
        "metadata",
        "--json",
        &format!("path:{}", dir.display()),
    ])?)?;
    let locked_url = metadata["url"].as_str().context("no url")?.to_owned();
    cleanup.paths([metadata["path"].as_str().context("no path")?.to_owned()]);
    let attr_path = format!("packages.{system}.default");
    let eval = |attr: &str| -> Result<String> {
        flakes(&["eval", "--raw", &format!("{locked_url}#{attr_path}.{attr}")])
    };
    let out = eval("outPath")?;
    cleanup.paths([out.clone(), eval("drvPath")?]);
    ensure!(!is_valid(&out), "{out} exists before the test");
    Ok(LockedFlake {
        locked_url,
        attr_path,
        out,
    })
}

/// `manifest.toml` and `manifest.lock` of an environment installing the flake as `tool`, with
/// the lock naming `out` as its output, as Flox writes a flake entry.
fn environment(flake: &LockedFlake, out: &str) -> (String, Vec<u8>) {
    let original = flake.locked_url.split('?').next().unwrap_or_default();
    let manifest = format!("version = 1\n\n[install]\ntool.flake = {original:?}\n");
    let lock = json!({
        "lockfile-version": 1,
        "manifest": {
            "version": 1,
            "install": { "tool": { "flake": original } },
            "options": {},
        },
        "packages": [{
            "install_id": "tool",
            "locked-url": flake.locked_url,
            "locked-flake-attr-path": flake.attr_path,
            "outputs": { "out": out },
            "output-names": ["out"],
            "outputs-to-install": ["out"],
            "system": host_system(),
            "priority": 5,
        }],
    });
    (manifest, serde_json::to_vec_pretty(&lock).expect("json"))
}

#[test]
fn a_flake_package_no_cache_has_is_built_on_the_node_as_locked() {
    let cleanup = StoreCleanup::default();
    for reference in [BUILT, WRONG] {
        cleanup.views_of(reference);
    }
    TestNode::run_test(
        "a_flake_package_no_cache_has_is_built_on_the_node_as_locked",
        |node| {
            let work = node.scratch_subdir("flake")?;
            let tag = unique_tag("flake");
            let flake = make_flake(&work.join("src"), &tag, &cleanup)?;
            // The lock of the wrong environment names a path of the same name that nothing
            // builds: a flake changed since it was locked.
            let wrong_out = format!("/nix/store/{}-nixlet-e2e-flake-{tag}", "1".repeat(32));
            let cache = work.join("empty-cache");
            std::fs::create_dir_all(&cache)?;
            std::fs::write(cache.join("nix-cache-info"), "StoreDir: /nix/store\n")?;
            node.set_node_config_extra(&format!(
                "[[substituters]]\nurl = \"file://{}\"\nbackend = \"nix-cli\"\n\
                 trusted_keys = [{KEY:?}]\ntimeout_secs = 120\nbuild_flakes = true\n",
                cache.display()
            ))?;
            for (reference, out) in [(BUILT, &flake.out), (WRONG, &wrong_out)] {
                let (manifest, lock) = environment(&flake, out);
                node.publish_locked(reference, 1, &manifest, &lock)?;
            }
            let cri = node.cri();
            let pod = cri.run_pod(
                &node
                    .pod("flake", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, BUILT)
                    .annotation(&environment_of("wrong"), WRONG),
            )?;

            let tool = |name: &str| ContainerSpec::new(name, EMPTY_IMAGE).command(&["flake-tool"]);
            assert_eq!(
                run_ok(cri, &pod, &tool("built"))?,
                format!("hello from flake {tag}\n")
            );
            ensure!(is_valid(&flake.out), "{} is not valid", flake.out);
            ensure!(views_of(BUILT).len() == 1, "no view for {BUILT}");

            let err = start_fails(node, &pod, &tool("wrong"))?;
            assert_refused(
                &err,
                "verify",
                WRONG,
                &[
                    "environment e2e-flake/wrong:1",
                    "package \"tool\"",
                    // containerd formats the message with Go's Errorf, so the shim decodes
                    // the URL's escapes (`create_error::without_percent_signs`).
                    &format!(
                        "flake {}#{}",
                        percent_decoded(&flake.locked_url),
                        flake.attr_path
                    ),
                    &format!("nix built {} for output \"out\"", flake.out),
                    &format!("manifest.lock names {wrong_out}"),
                ],
            );
            ensure!(!is_valid(&wrong_out), "{wrong_out} was registered");
            ensure!(
                views_of(WRONG).is_empty(),
                "a view was installed for {WRONG}: {:?}",
                views_of(WRONG)
            );
            Ok(())
        },
    );
}

/// `url` with its `%XX` escapes decoded, as the shim shows it.
fn percent_decoded(url: &str) -> String {
    let mut out = Vec::new();
    let bytes = url.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = url
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
