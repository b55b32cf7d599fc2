//! The node's store: `/nix/store` must take new paths (writable, with room), and the Nix
//! database must be readable, because it is what tells nixlet which paths are valid.

use std::path::Path;

use nixlet_config::NodeConfig;
use nixlet_installer::HostRoot;
use nixlet_manifest::STORE_DIR;
use nixlet_store::NixDb;
use rustix::fs::{Access, StatVfsMountFlags};

use super::report::Report;

pub fn check_store(report: &mut Report, host: &HostRoot, min_free_bytes: u64) {
    const CHECK: &str = "nix store";
    let local = host.local(Path::new(STORE_DIR));
    if !local.is_dir() {
        report.fail(
            CHECK,
            format!("{STORE_DIR} does not exist"),
            format!(
                "create it on a filesystem with room (`mkdir -p -m 1775 {STORE_DIR}`), or \
                 install Nix (Debian: `apt-get install nix-bin`)"
            ),
        );
        return;
    }
    let stat = match rustix::fs::statvfs(&local) {
        Ok(stat) => stat,
        Err(error) => {
            report.fail(
                CHECK,
                format!("statvfs {STORE_DIR}: {error}"),
                "check the mount of /nix",
            );
            return;
        }
    };
    // access(2) reports EROFS for a read-only mount even to root; the mount flag says why.
    let writable = rustix::fs::access(&local, Access::WRITE_OK);
    if stat.f_flag.contains(StatVfsMountFlags::RDONLY) || writable.is_err() {
        let why = match writable {
            Err(error) => error.to_string(),
            Ok(()) => "mounted read-only".into(),
        };
        report.fail(
            CHECK,
            format!("{STORE_DIR} is not writable ({why}): missing paths cannot be fetched"),
            format!(
                "mount {STORE_DIR} (or /nix) read-write on the host; nixlet mounts it read-only \
                 into containers itself"
            ),
        );
        return;
    }
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < min_free_bytes {
        report.fail(
            CHECK,
            format!(
                "{STORE_DIR} has {} free, less than the {} asked for (--min-free-mib)",
                gib(free),
                gib(min_free_bytes)
            ),
            "free space with `nixlet gc` (or `nix-collect-garbage`), or grow the filesystem \
             that holds /nix",
        );
        return;
    }
    report.ok(
        CHECK,
        format!("{STORE_DIR} is writable, {} free", gib(free)),
    );
}

pub fn check_database(report: &mut Report, host: &HostRoot, config: &NodeConfig) {
    const CHECK: &str = "nix database";
    let local = host.local(&config.nix_db);
    let shown = config.nix_db.display();
    let result = NixDb::open(&local).and_then(|db| db.valid_path_count());
    match result {
        Ok(count) => report.ok(CHECK, format!("{shown} is readable: {count} valid paths")),
        Err(nixlet_store::StoreError::NoDatabase { .. }) => report.fail(
            CHECK,
            format!("no Nix database at {shown}: nixlet cannot tell which store paths are valid"),
            "install Nix on the node (Debian: `apt-get install nix-bin`; its first command \
             creates the database), or set nix_db in the node config to the database's path",
        ),
        Err(error) => report.fail(
            CHECK,
            format!("{shown} is not readable: {error}"),
            "check the file's permissions and that it is Nix's SQLite database \
             (`nix-store --verify` repairs a damaged one)",
        ),
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}
