//! The environment view: one merged tree of symlinks into the installed outputs, like Nix's
//! `buildEnv` or the `run` output Flox builds, plus a few files nixlet adds.
//!
//! Precedence on a file collision: lower `priority` wins; at equal priority an output to install
//! wins over one that is not; then the earlier input (package order) wins. A directory that only
//! one input provides is linked whole; one that several provide becomes a real directory whose
//! entries are merged the same way. This file reads the outputs' directories but writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix_archive::nar::Encoder;
use nixlet_manifest::StorePath;

/// One output merged into the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewInput {
    pub path: StorePath,
    pub priority: u32,
    pub to_install: bool,
}

/// A file nixlet itself puts into the view (activation script, lock file, SBOM); it wins over
/// anything an input provides at the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewFile {
    /// Relative, `/`-separated, e.g. `share/nixlet/sbom.cdx.json`.
    pub relative_path: String,
    pub contents: Vec<u8>,
    pub executable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewNode {
    Directory(BTreeMap<Vec<u8>, ViewNode>),
    Symlink(Vec<u8>),
    Regular { contents: Vec<u8>, executable: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("view file {relative_path:?} is not a clean relative path")]
    BadFilePath { relative_path: String },
    #[error("view file {relative_path:?} would replace a directory the view needs")]
    FileOverDirectory { relative_path: String },
}

/// The merged tree and the inputs merged into it (registered as its references, which keeps
/// them alive as long as the view is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewTree {
    pub root: ViewNode,
    pub references: BTreeSet<StorePath>,
    /// Files that lost a collision, for the log: (name in the view, losing target).
    pub shadowed: Vec<(String, String)>,
}

impl ViewTree {
    pub fn merge(inputs: &[ViewInput], files: &[ViewFile]) -> Result<ViewTree, ViewError> {
        Self::merge_located(inputs, files, StorePath::to_path_buf)
    }

    /// `merge`, reading each input at `locate(path)`: tests merge real directories outside the
    /// store.
    fn merge_located(
        inputs: &[ViewInput],
        files: &[ViewFile],
        locate: impl Fn(&StorePath) -> PathBuf,
    ) -> Result<ViewTree, ViewError> {
        let mut ordered: Vec<(usize, &ViewInput)> = inputs.iter().enumerate().collect();
        ordered.sort_by_key(|(index, input)| (input.priority, !input.to_install, *index));

        let mut merger = Merger::default();
        let mut root = BTreeMap::new();
        for (_, input) in ordered {
            let source = locate(&input.path);
            if !std::fs::symlink_metadata(&source)
                .map_err(|source_error| ViewError::Read {
                    path: source.clone(),
                    source: source_error,
                })?
                .is_dir()
            {
                // A single-file output has nothing to merge (buildEnv ignores it too).
                tracing::debug!(path = %input.path, "output is not a directory; not in the view");
                continue;
            }
            merger.references.insert(input.path.clone());
            merger.merge_dir(&mut root, &source, "")?;
        }
        for file in files {
            place_file(&mut root, file)?;
        }
        Ok(ViewTree {
            root: ViewNode::Directory(root),
            references: merger.references,
            shadowed: merger.shadowed,
        })
    }

    /// The tree serialized as a NAR: what is hashed for the content address and unpacked into
    /// the store, so both come from the same bytes.
    pub fn to_nar(&self) -> Result<Vec<u8>, nix_archive::nar::Error> {
        let mut encoder = Encoder::new(Vec::new())?;
        encode_node(&mut encoder, None, &self.root)?;
        encoder.finish()
    }
}

fn encode_node(
    encoder: &mut Encoder<Vec<u8>>,
    name: Option<&[u8]>,
    node: &ViewNode,
) -> Result<(), nix_archive::nar::Error> {
    match node {
        ViewNode::Symlink(target) => encoder.symlink(name, target),
        ViewNode::Regular {
            contents,
            executable,
        } => encoder.regular(name, *executable, contents),
        ViewNode::Directory(children) => {
            encoder.start_directory(name)?;
            for (child_name, child) in children {
                encode_node(encoder, Some(child_name), child)?;
            }
            encoder.end_directory()
        }
    }
}

#[derive(Default)]
struct Merger {
    references: BTreeSet<StorePath>,
    shadowed: Vec<(String, String)>,
}

impl Merger {
    fn merge_dir(
        &mut self,
        into: &mut BTreeMap<Vec<u8>, ViewNode>,
        source: &Path,
        relative: &str,
    ) -> Result<(), ViewError> {
        for (name, is_dir) in read_dir_sorted(source)? {
            let child_source = source.join(OsString::from_vec(name.clone()));
            let child_relative = join_relative(relative, &name);
            match into.get_mut(&name) {
                None => {
                    into.insert(
                        name,
                        ViewNode::Symlink(child_source.into_os_string().into_vec()),
                    );
                }
                Some(existing) => {
                    let existing_dir = existing_directory_source(existing);
                    match (existing, existing_dir, is_dir) {
                        (ViewNode::Directory(children), _, true) => {
                            self.merge_dir(children, &child_source, &child_relative)?;
                        }
                        (slot, Some(earlier), true) => {
                            // Two inputs provide this directory: make it real, with the earlier
                            // (winning) input's entries first.
                            let mut children = BTreeMap::new();
                            self.merge_dir(&mut children, &earlier, &child_relative)?;
                            self.merge_dir(&mut children, &child_source, &child_relative)?;
                            *slot = ViewNode::Directory(children);
                        }
                        _ => self
                            .shadowed
                            .push((child_relative, child_source.display().to_string())),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The directory a symlink in the view stands for, if it is a link to a directory.
fn existing_directory_source(node: &ViewNode) -> Option<PathBuf> {
    match node {
        ViewNode::Symlink(target) => {
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(target));
            std::fs::metadata(&path)
                .ok()
                .filter(|meta| meta.is_dir())
                .map(|_| path)
        }
        _ => None,
    }
}

/// Entries of `dir` by name, each with whether it is (or links to) a directory. Links are
/// followed only to tell a directory from a file; the view links to the entry, not its target.
fn read_dir_sorted(dir: &Path) -> Result<Vec<(Vec<u8>, bool)>, ViewError> {
    let read_error = |source| ViewError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let is_dir = std::fs::metadata(entry.path()).is_ok_and(|meta| meta.is_dir());
        entries.push((entry.file_name().into_vec(), is_dir));
    }
    entries.sort();
    Ok(entries)
}

fn join_relative(relative: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if relative.is_empty() {
        name.into_owned()
    } else {
        format!("{relative}/{name}")
    }
}

fn place_file(root: &mut BTreeMap<Vec<u8>, ViewNode>, file: &ViewFile) -> Result<(), ViewError> {
    let bad = || ViewError::BadFilePath {
        relative_path: file.relative_path.clone(),
    };
    let parts: Vec<&str> = file.relative_path.split('/').collect();
    if parts
        .iter()
        .any(|part| part.is_empty() || *part == "." || *part == "..")
    {
        return Err(bad());
    }
    let (leaf, dirs) = parts.split_last().ok_or_else(bad)?;
    let mut current = root;
    for dir in dirs {
        let slot = current
            .entry(dir.as_bytes().to_vec())
            .or_insert_with(|| ViewNode::Directory(BTreeMap::new()));
        if let Some(earlier) = existing_directory_source(slot) {
            // Turn a linked directory into a real one so nixlet's file can sit inside it.
            let mut children = BTreeMap::new();
            Merger::default().merge_dir(&mut children, &earlier, dir)?;
            *slot = ViewNode::Directory(children);
        }
        current = match slot {
            ViewNode::Directory(children) => children,
            _ => {
                return Err(ViewError::FileOverDirectory {
                    relative_path: file.relative_path.clone(),
                })
            }
        };
    }
    current.insert(
        leaf.as_bytes().to_vec(),
        ViewNode::Regular {
            contents: file.contents.clone(),
            executable: file.executable,
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Real directories standing in for store paths: the merge only reads them.
    struct Outputs {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    fn outputs() -> Outputs {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        Outputs { _dir: dir, root }
    }

    fn input(
        outputs: &Outputs,
        base: &str,
        priority: u32,
        to_install: bool,
    ) -> (ViewInput, PathBuf) {
        let path = outputs.root.join(base);
        std::fs::create_dir_all(&path).unwrap();
        let store_path = StorePath::from_base_name(base).unwrap();
        (
            ViewInput {
                path: store_path,
                priority,
                to_install,
            },
            path,
        )
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    fn link(target: &Path) -> ViewNode {
        ViewNode::Symlink(target.as_os_str().as_bytes().to_vec())
    }

    fn dir(entries: Vec<(&str, ViewNode)>) -> ViewNode {
        ViewNode::Directory(
            entries
                .into_iter()
                .map(|(name, node)| (name.as_bytes().to_vec(), node))
                .collect(),
        )
    }

    fn merge(pairs: &[(ViewInput, PathBuf)], files: &[ViewFile]) -> ViewTree {
        let inputs: Vec<ViewInput> = pairs.iter().map(|(input, _)| input.clone()).collect();
        let locate = |path: &StorePath| {
            pairs
                .iter()
                .find(|(input, _)| input.path == *path)
                .map(|(_, real)| real.clone())
                .unwrap()
        };
        ViewTree::merge_located(&inputs, files, locate).unwrap()
    }

    const A: &str = "0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-a-1.0";
    const B: &str = "1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-b-2.0";
    const C: &str = "2a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-c-3.0";

    #[test]
    fn a_directory_from_one_input_is_linked_whole() {
        let o = outputs();
        let (a, a_path) = input(&o, A, 5, true);
        touch(&a_path.join("bin/hello"));
        touch(&a_path.join("share/man/man1/hello.1"));
        let tree = merge(&[(a, a_path.clone())], &[]);
        assert_eq!(
            tree.root,
            dir(vec![
                ("bin", link(&a_path.join("bin"))),
                ("share", link(&a_path.join("share"))),
            ])
        );
    }

    #[test]
    fn shared_directories_are_merged_and_lower_priority_wins_collisions() {
        let o = outputs();
        let (a, a_path) = input(&o, A, 5, true);
        let (b, b_path) = input(&o, B, 4, true);
        touch(&a_path.join("bin/tool"));
        touch(&a_path.join("bin/only-a"));
        touch(&b_path.join("bin/tool"));
        let tree = merge(&[(a, a_path.clone()), (b, b_path.clone())], &[]);
        assert_eq!(
            tree.root,
            dir(vec![(
                "bin",
                dir(vec![
                    ("only-a", link(&a_path.join("bin/only-a"))),
                    ("tool", link(&b_path.join("bin/tool"))),
                ])
            )])
        );
        assert_eq!(
            tree.shadowed,
            vec![(
                "bin/tool".to_string(),
                a_path.join("bin/tool").display().to_string()
            )]
        );
    }

    #[test]
    fn at_equal_priority_outputs_to_install_win_then_package_order() {
        let o = outputs();
        let (dev, dev_path) = input(&o, A, 5, false);
        let (out, out_path) = input(&o, B, 5, true);
        let (later, later_path) = input(&o, C, 5, true);
        for path in [&dev_path, &out_path, &later_path] {
            touch(&path.join("bin/x"));
        }
        let tree = merge(
            &[
                (dev, dev_path),
                (out, out_path.clone()),
                (later, later_path),
            ],
            &[],
        );
        assert_eq!(
            tree.root,
            dir(vec![(
                "bin",
                dir(vec![("x", link(&out_path.join("bin/x")))])
            )])
        );
    }

    #[test]
    fn nixlet_files_go_into_real_directories_and_win() {
        let o = outputs();
        let (a, a_path) = input(&o, A, 5, true);
        touch(&a_path.join("share/doc/readme"));
        touch(&a_path.join("activate"));
        let files = [
            ViewFile {
                relative_path: "share/nixlet/sbom.json".into(),
                contents: b"{}".to_vec(),
                executable: false,
            },
            ViewFile {
                relative_path: "activate".into(),
                contents: b"#!/bin/sh".to_vec(),
                executable: true,
            },
        ];
        let tree = merge(&[(a, a_path.clone())], &files);
        assert_eq!(
            tree.root,
            dir(vec![
                (
                    "activate",
                    ViewNode::Regular {
                        contents: b"#!/bin/sh".to_vec(),
                        executable: true
                    }
                ),
                (
                    "share",
                    dir(vec![
                        ("doc", link(&a_path.join("share/doc"))),
                        (
                            "nixlet",
                            dir(vec![(
                                "sbom.json",
                                ViewNode::Regular {
                                    contents: b"{}".to_vec(),
                                    executable: false
                                }
                            )])
                        ),
                    ])
                ),
            ])
        );
    }

    #[test]
    fn bad_file_paths_are_refused() {
        let mut root = BTreeMap::new();
        for bad in ["", "../x", "a//b", "/abs", "a/./b"] {
            let file = ViewFile {
                relative_path: bad.into(),
                contents: vec![],
                executable: false,
            };
            assert!(place_file(&mut root, &file).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nar_of_the_tree_matches_the_nar_of_the_same_tree_on_disk() {
        let o = outputs();
        let (a, a_path) = input(&o, A, 5, true);
        touch(&a_path.join("bin/hello"));
        let files = [ViewFile {
            relative_path: "manifest.lock".into(),
            contents: b"{}".to_vec(),
            executable: false,
        }];
        let tree = merge(&[(a, a_path.clone())], &files);
        let nar = tree.to_nar().unwrap();

        let on_disk = o.root.join("view");
        std::fs::create_dir(&on_disk).unwrap();
        symlink(a_path.join("bin"), on_disk.join("bin")).unwrap();
        std::fs::write(on_disk.join("manifest.lock"), b"{}").unwrap();
        let mut expected = Vec::new();
        nix_archive::nar::encode_path(
            &mut expected,
            &on_disk,
            nix_archive::nar::CaseHack::Disabled,
        )
        .unwrap();
        assert_eq!(nar, expected);
    }
}
