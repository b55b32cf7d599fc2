//! How containerd's config declares nixlet's runtime, decided by the running release.
//!
//! containerd 2.0 to 2.3 report a runtime's features (recursive read-only mounts, user
//! namespaces) to the kubelet only for runtimes of type `io.containerd.runc.v2` and report none
//! for any other, so the kubelet refuses pods of the `nixlet` RuntimeClass that ask for
//! `recursiveReadOnly` mounts (critest's four RRO specs fail there with the first form and pass
//! with the second). On those releases install therefore declares nixlet's shim as a runc
//! runtime at its host path: containerd then asks the shim for its features (nixlet answers
//! with the runc shim's) and hands it the handler's runc options, which nixlet completes from
//! `[runtime.runc_options]`. Everywhere else the first form stays: containerd 1.6 starts a
//! pod's later containers with the runc shim itself when the type is runc's, and 2.4 asks every
//! runtime for its features.

use std::path::{Path, PathBuf};

use crate::containerd_version::ContainerdVersion;
use crate::names::{RUNC_RUNTIME_TYPE, RUNTIME_TYPE, SHIM_BINARY};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeForm {
    /// `runtime_type = "io.containerd.nixlet.v2"`: containerd finds `containerd-shim-nixlet-v2`
    /// on its PATH. A table an operator declared in the runc form is kept as it is.
    NixletType,
    /// `runtime_type = "io.containerd.runc.v2"` with `runtime_path` naming the shim (a host
    /// path, which containerd runs as given).
    RuncTypeAt(PathBuf),
}

impl RuntimeForm {
    /// The form for the running `version`, with the shim installed into the host directory
    /// `binary_dir`.
    pub fn for_release(version: &ContainerdVersion, binary_dir: &Path) -> RuntimeForm {
        if version.asks_features_only_of_runc_type() {
            RuntimeForm::RuncTypeAt(binary_dir.join(SHIM_BINARY))
        } else {
            RuntimeForm::NixletType
        }
    }

    /// The form as the report and the drop-in's readers see it.
    pub fn describe(&self) -> String {
        match self {
            RuntimeForm::NixletType => format!("runtime type {RUNTIME_TYPE}"),
            RuntimeForm::RuncTypeAt(path) => format!(
                "runtime type {RUNC_RUNTIME_TYPE} at {} (this release reports runtime \
                 features only for runc-type runtimes)",
                path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(version: &str) -> RuntimeForm {
        RuntimeForm::for_release(
            &ContainerdVersion::parse(version).unwrap(),
            Path::new("/usr/local/bin"),
        )
    }

    #[test]
    fn only_2_0_to_2_3_get_the_runc_form() {
        let runc = RuntimeForm::RuncTypeAt("/usr/local/bin/containerd-shim-nixlet-v2".into());
        for version in ["2.0.0", "2.1.9", "2.2.1", "2.3.0"] {
            assert_eq!(form(version), runc, "{version}");
        }
        for version in ["1.6.20", "1.7.24", "v2.4.0-beta.0", "2.5.0"] {
            assert_eq!(form(version), RuntimeForm::NixletType, "{version}");
        }
    }
}
