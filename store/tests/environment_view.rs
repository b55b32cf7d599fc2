//! The environment view is a valid content-addressed store path: without references it is the
//! path `nix-store --add` gives the same tree, with references host Nix's `nix store verify`
//! accepts it as content-addressed, without any signature.

mod support;

use std::path::Path;
use std::process::Command;

use nixlet_manifest::StorePath;
use nixlet_store::view::install::{install_view, view_path};
use nixlet_store::view::tree::{ViewFile, ViewInput, ViewTree};
use support::nix_fixture::{delete_paths, is_registered, nix, unique_tag, Closure};
use support::prereq;

fn file(relative_path: &str, contents: &str, executable: bool) -> ViewFile {
    ViewFile {
        relative_path: relative_path.to_string(),
        contents: contents.as_bytes().to_vec(),
        executable,
    }
}

/// Writes the same files as `files` under `dir`, as a user would before `nix-store --add`.
fn write_tree(dir: &Path, files: &[ViewFile]) {
    use std::os::unix::fs::PermissionsExt;
    for file in files {
        let path = dir.join(&file.relative_path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &file.contents).unwrap();
        let mode = if file.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn without_references_the_view_path_is_what_nix_store_add_gives() {
    if !prereq::ready("without_references_the_view_path_is_what_nix_store_add_gives") {
        return;
    }
    let name = format!("nixlet-view-{}", unique_tag("add"));
    let files = vec![
        file("manifest.lock", "{\"lockfile-version\": 1}\n", false),
        file("activate", "exec \"$@\"\n", true),
        file("activate.d/hook-on-activate.bash", "export X=1\n", false),
    ];
    let tree = ViewTree::merge(&[], &files).unwrap();
    let (computed, _) = view_path(&tree, &name).unwrap();

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join(&name);
    write_tree(&dir, &files);
    let added = nix(&["nix-store", "--add", dir.to_str().unwrap()]);
    let added = added.trim().to_string();
    delete_paths(std::slice::from_ref(&added));
    assert_eq!(computed.to_string(), added);
}

#[test]
fn with_references_the_installed_view_verifies_as_content_addressed() {
    if !prereq::ready("with_references_the_installed_view_verifies_as_content_addressed") {
        return;
    }
    let closure = Closure::build(&unique_tag("view"));
    let root = StorePath::parse(&closure.root).unwrap();
    let inputs = [ViewInput {
        path: root.clone(),
        priority: 5,
        to_install: true,
    }];
    let files = [file("manifest.lock", "{}", false)];
    let tree = ViewTree::merge(&inputs, &files).unwrap();
    assert_eq!(tree.references.iter().collect::<Vec<_>>(), vec![&root]);

    let name = format!("nixlet-env-{}", unique_tag("view"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let install = |tree: &ViewTree| {
        runtime
            .block_on(install_view(
                tree,
                &name,
                Path::new("/nix/var/nix/db/db.sqlite"),
                Path::new("/nix/var/nix"),
            ))
            .unwrap()
    };
    let view = install(&tree);
    let cleanup = [view.to_string()];
    let result = std::panic::catch_unwind(|| {
        assert!(is_registered(&view.to_string()));
        // Installing the same tree again reuses the path.
        assert_eq!(install(&tree), view);
        let verify = Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "store",
                "verify",
            ])
            .args(["--sigs-needed", "1", &view.to_string()])
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "nix store verify {view}: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let references = nix(&["nix-store", "--query", "--references", &view.to_string()]);
        assert_eq!(references.trim(), closure.root);
        let linked = std::fs::read_link(view.to_path_buf().join("deps"));
        assert_eq!(linked.unwrap(), Path::new(&closure.root).join("deps"));
    });
    delete_paths(&cleanup);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
