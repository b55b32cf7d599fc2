//! A gate in front of `runc start`: the node's OCI runtime set to a script that, while the gate
//! file exists, says so with a marker file and waits before exec'ing the real runc. With it a
//! container can be caught after nixlet forwarded its Create (runc created it) and before it
//! started. Every other runc command, and `start` with the gate open, goes straight to runc.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct RuncGate {
    pub script: PathBuf,
    gate: PathBuf,
    reached: PathBuf,
}

impl RuncGate {
    /// Writes the script below `dir`; the gate starts open.
    pub fn install(dir: &Path) -> Result<RuncGate> {
        let runc = nixlet_e2e::prereq::find_in_path("runc").context("runc is not on PATH")?;
        let (script, gate, reached) = (
            dir.join("runc-gated"),
            dir.join("gate"),
            dir.join("reached"),
        );
        fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 # nixlet-reliability: holds `runc start` while {gate} exists.\n\
                 for arg in \"$@\"; do\n\
                 \x20 if [ \"$arg\" = start ] && [ -e {gate} ]; then\n\
                 \x20   touch {reached}\n\
                 \x20   n=0\n\
                 \x20   while [ -e {gate} ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done\n\
                 \x20 fi\n\
                 done\n\
                 exec {runc} \"$@\"\n",
                gate = gate.display(),
                reached = reached.display(),
                runc = runc.display()
            ),
        )?;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
        Ok(RuncGate {
            script,
            gate,
            reached,
        })
    }

    pub fn close(&self) -> Result<()> {
        let _ = fs::remove_file(&self.reached);
        fs::write(&self.gate, "")?;
        Ok(())
    }

    pub fn open(&self) {
        let _ = fs::remove_file(&self.gate);
    }

    /// Whether a `runc start` is waiting at the gate (or did).
    pub fn reached(&self) -> bool {
        self.reached.exists()
    }
}

impl Drop for RuncGate {
    fn drop(&mut self) {
        self.open();
    }
}
