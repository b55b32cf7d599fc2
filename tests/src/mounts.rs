//! The host's mount table, read from `/proc/self/mountinfo`: to prove that a failed container left
//! no mount behind, and to unmount whatever a crashed run left under a scratch directory.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{umount2, MntFlags};

/// One line of mountinfo, reduced to what the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// Every mount visible in this process's mount namespace, in mountinfo order.
pub fn all() -> Result<Vec<MountEntry>> {
    read_table(Path::new("/proc/self/mountinfo"))
}

/// The mounts of one mountinfo file: `/proc/<pid>/mountinfo` gives the mount namespace of
/// that process (a containerd started in a private one, say).
pub fn read_table(mountinfo: &Path) -> Result<Vec<MountEntry>> {
    let text = fs::read_to_string(mountinfo)
        .with_context(|| format!("reading {}", mountinfo.display()))?;
    Ok(text.lines().filter_map(parse_line).collect())
}

/// Mounts whose mount point is `prefix` or lies below it (compared by path components).
pub fn under(prefix: &Path) -> Result<Vec<MountEntry>> {
    Ok(all()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(prefix))
        .collect())
}

/// Unmounts everything at or below `prefix`, deepest first; a mount that refuses (busy) is
/// detached lazily so that the directory can still be removed. Returns what could not be undone.
pub fn unmount_all_under(prefix: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    // Mounts can be stacked on one mount point, so repeat until the table is clean (bounded).
    for _ in 0..8 {
        let mut mounts = match under(prefix) {
            Ok(m) if m.is_empty() => return failures,
            Ok(m) => m,
            Err(e) => return vec![format!("{e:#}")],
        };
        mounts.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
        for m in &mounts {
            if umount2(&m.mount_point, MntFlags::empty()).is_err() {
                if let Err(e) = umount2(&m.mount_point, MntFlags::MNT_DETACH) {
                    failures.push(format!("{}: {e}", m.mount_point.display()));
                }
            }
        }
    }
    failures
}

/// mountinfo fields: id parent major:minor root mount-point options [optional...] - type source
/// super-options.
fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fs_type = right.next()?;
    let source = right.next().unwrap_or_default();
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fs_type: unescape(fs_type),
        source: unescape(source),
    })
}

/// The kernel writes space, tab, newline and backslash in mountinfo as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_line_with_optional_fields_and_escapes() {
        let line = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw";
        let entry = parse_line(line).unwrap();
        assert_eq!(entry.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(entry.fs_type, "ext3");
        assert_eq!(entry.source, "/dev/root");
    }

    #[test]
    fn the_current_table_has_a_root() {
        assert!(all()
            .unwrap()
            .iter()
            .any(|m| m.mount_point == Path::new("/")));
    }
}
