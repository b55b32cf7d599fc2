//! A scratch directory for unpacking, and a witness beside it that nothing may touch.
//!
//! One per process, reused by every input: creating a temporary directory per input would
//! cost more than most inputs. `TMPDIR=/dev/shm` keeps it in memory for long runs.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The name each input is unpacked as, inside the scratch directory.
pub const OUT: &str = "out";
const WITNESS: &str = "witness";
const WITNESS_FILE: &str = "keep";
const WITNESS_BYTES: &[u8] = b"written before the archive, never after";

pub struct Scratch {
    dir: PathBuf,
}

/// The process's scratch directory, locked for one input (the replay test runs inputs from
/// several threads).
pub fn scratch() -> MutexGuard<'static, Scratch> {
    static SCRATCH: OnceLock<Mutex<Scratch>> = OnceLock::new();
    SCRATCH
        .get_or_init(|| Mutex::new(Scratch::create().expect("cannot create the scratch dir")))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Scratch {
    fn create() -> io::Result<Scratch> {
        // A static is never dropped and libFuzzer leaves by exit(): the directory outlives the
        // process, so each new one removes those of processes that are gone.
        sweep_dead(&std::env::temp_dir());
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()));
        if dir.exists() {
            remove_tree(&dir)?;
        }
        fs::create_dir_all(dir.join(WITNESS))?;
        fs::write(dir.join(WITNESS).join(WITNESS_FILE), WITNESS_BYTES)?;
        Ok(Scratch { dir })
    }

    /// The directory to unpack into, emptied of the previous input's output.
    pub fn parent(&self) -> File {
        let out = self.out();
        if fs::symlink_metadata(&out).is_ok() {
            remove_tree(&out).expect("cannot clear the previous output");
        }
        File::open(&self.dir).expect("cannot open the scratch dir")
    }

    pub fn out(&self) -> PathBuf {
        self.dir.join(OUT)
    }

    /// Panics if the archive created anything but [`OUT`] or changed the witness.
    pub fn assert_contained(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.dir)
            .expect("scratch dir readable")
            .map(|entry| entry.expect("scratch entry").file_name())
            .collect();
        names.sort();
        names.retain(|name| name != OUT);
        assert_eq!(
            names,
            [WITNESS],
            "unpacking created something beside its output"
        );
        let witness: Vec<_> = fs::read_dir(self.dir.join(WITNESS))
            .expect("witness readable")
            .map(|entry| entry.expect("witness entry").file_name())
            .collect();
        assert_eq!(witness, [WITNESS_FILE], "unpacking wrote into the witness");
        assert_eq!(
            fs::read(self.dir.join(WITNESS).join(WITNESS_FILE)).expect("witness file"),
            WITNESS_BYTES,
            "unpacking changed a file outside its output"
        );
    }
}

const PREFIX: &str = "nixlet-fuzz-";

/// Removes the scratch directories of processes that no longer run.
fn sweep_dead(temp: &Path) {
    let Ok(entries) = fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = remove_tree(&entry.path());
        }
    }
}

/// Removes a tree whose directories the unpacker made read-only (0555), without following
/// symlinks; `remove_dir_all` alone fails there unless running as root.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(path)? {
            remove_tree(&entry?.path())?;
        }
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    }
}
