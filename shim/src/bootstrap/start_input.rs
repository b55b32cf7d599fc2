//! What containerd handed nixlet's `start`, told apart the way containerd's own shims do it
//! (containerd `pkg/shim/compat.go`): stdin that decodes as `BootstrapParams` naming the same
//! instance and namespace as the `-id` and `-namespace` flags comes from containerd 2.3 or
//! later; anything else (nothing, or the handler's runtime options as a protobuf `Any`) from an
//! older one. Legacy options can decode as `BootstrapParams` by accident, hence the identity check.

use prost::Message;
use prost_types::Any;

use super::messages::{BootstrapParams, Extension};
use super::socket::DEFAULT_SOCKET_ROOT;

/// containerd's shims read at most this much of stdin at `start`.
pub const STDIN_LIMIT: u64 = 10 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum StartInput {
    /// containerd 1.6 – 2.2: flags and environment; stdin holds the handler's runtime options,
    /// if any.
    Legacy { options: Option<Any> },
    /// containerd 2.3 and later.
    Bootstrap(BootstrapParams),
}

impl StartInput {
    pub fn detect(stdin: &[u8], id: &str, namespace: &str) -> StartInput {
        if let Ok(params) = BootstrapParams::decode(stdin) {
            if !stdin.is_empty() && params.instance_id == id && params.namespace == namespace {
                return StartInput::Bootstrap(params);
            }
        }
        let options = (!stdin.is_empty())
            .then(|| Any::decode(stdin).ok())
            .flatten();
        StartInput::Legacy { options }
    }

    /// How containerd started nixlet, for logs and `nixlet doctor`.
    pub fn protocol(&self) -> &'static str {
        match self {
            StartInput::Legacy { .. } => "legacy (flags and stdin options, containerd 1.6-2.2)",
            StartInput::Bootstrap(_) => "bootstrap (BootstrapParams, containerd 2.3+)",
        }
    }

    /// The runtime options containerd gave nixlet's handler.
    pub fn runtime_options(&self) -> Option<&Any> {
        match self {
            StartInput::Legacy { options } => options.as_ref(),
            StartInput::Bootstrap(params) => params
                .extensions
                .iter()
                .filter_map(|extension| extension.value.as_ref())
                .find(|any| is_runtime_options(&any.type_url)),
        }
    }

    /// The directory shims put their sockets in.
    pub fn socket_root(&self) -> &str {
        match self {
            StartInput::Bootstrap(BootstrapParams {
                socket_dir: Some(dir),
                ..
            }) if !dir.is_empty() => dir,
            _ => DEFAULT_SOCKET_ROOT,
        }
    }

    /// containerd's ttrpc address where it says so; older ones only set `TTRPC_ADDRESS`.
    pub fn ttrpc_address(&self) -> Option<&str> {
        match self {
            StartInput::Bootstrap(params) if !params.containerd_ttrpc_address.is_empty() => {
                Some(&params.containerd_ttrpc_address)
            }
            _ => None,
        }
    }

    pub fn containerd_version(&self) -> Option<&str> {
        match self {
            StartInput::Bootstrap(params) if !params.containerd_version.is_empty() => {
                Some(&params.containerd_version)
            }
            _ => None,
        }
    }

    /// stdin for the runc shim's `start`: the same kind of input containerd gave nixlet, with
    /// nixlet's runtime options replaced by the runc options meant for the runc shim. Any other
    /// extension a newer containerd adds passes through untouched.
    pub fn for_delegate(&self, runc_options: Option<&Any>) -> Vec<u8> {
        match self {
            StartInput::Legacy { .. } => {
                runc_options.map(Message::encode_to_vec).unwrap_or_default()
            }
            StartInput::Bootstrap(params) => {
                let mut params = params.clone();
                params.extensions.retain(|extension| {
                    !extension
                        .value
                        .as_ref()
                        .is_some_and(|any| is_runtime_options(&any.type_url))
                });
                if let Some(options) = runc_options {
                    params.extensions.push(Extension {
                        value: Some(options.clone()),
                    });
                }
                params.encode_to_vec()
            }
        }
    }
}

/// Runtime options as containerd sends them: runc's own, or CRI's wrapper for other runtimes.
fn is_runtime_options(type_url: &str) -> bool {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    matches!(
        name,
        "runtimeoptions.v1.Options" | "containerd.runc.v1.Options"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BootstrapParams {
        BootstrapParams {
            instance_id: "c1".into(),
            namespace: "k8s.io".into(),
            containerd_version: "v2.4.0".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            extensions: vec![
                Extension {
                    value: Some(Any {
                        type_url: "runtimeoptions.v1.Options".into(),
                        value: vec![0x0a, 0x01, b'x'],
                    }),
                },
                Extension {
                    value: Some(Any {
                        type_url: "containerd.io/nri.v1.PluginConfig".into(),
                        value: vec![1, 2, 3],
                    }),
                },
            ],
            ..Default::default()
        }
    }

    fn runc_options() -> Any {
        Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x48, 0x01],
        }
    }

    #[test]
    fn bootstrap_params_for_this_instance_are_the_new_protocol() {
        let stdin = params().encode_to_vec();
        let input = StartInput::detect(&stdin, "c1", "k8s.io");
        assert_eq!(input, StartInput::Bootstrap(params()));
        assert_eq!(input.containerd_version(), Some("v2.4.0"));
        assert_eq!(
            input.runtime_options().map(|any| any.type_url.as_str()),
            Some("runtimeoptions.v1.Options")
        );
    }

    #[test]
    fn params_for_another_instance_or_namespace_are_not_trusted() {
        let stdin = params().encode_to_vec();
        assert!(matches!(
            StartInput::detect(&stdin, "c2", "k8s.io"),
            StartInput::Legacy { .. }
        ));
        assert!(matches!(
            StartInput::detect(&stdin, "c1", "default"),
            StartInput::Legacy { .. }
        ));
    }

    #[test]
    fn legacy_stdin_is_empty_or_an_any() {
        assert_eq!(
            StartInput::detect(b"", "c1", "k8s.io"),
            StartInput::Legacy { options: None }
        );
        let any = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![],
        };
        let input = StartInput::detect(&any.encode_to_vec(), "c1", "k8s.io");
        assert_eq!(input, StartInput::Legacy { options: Some(any) });
        assert_eq!(input.socket_root(), DEFAULT_SOCKET_ROOT);
        assert_eq!(input.ttrpc_address(), None);
    }

    #[test]
    fn the_delegate_gets_runc_options_in_place_of_nixlets_and_every_other_extension() {
        let input = StartInput::Bootstrap(params());
        let forwarded =
            BootstrapParams::decode(&*input.for_delegate(Some(&runc_options()))).unwrap();
        let urls: Vec<_> = forwarded
            .extensions
            .iter()
            .map(|extension| extension.value.as_ref().unwrap().type_url.as_str())
            .collect();
        assert_eq!(
            urls,
            [
                "containerd.io/nri.v1.PluginConfig",
                "containerd.runc.v1.Options"
            ]
        );
        assert_eq!(forwarded.instance_id, "c1");
        assert_eq!(forwarded.containerd_version, "v2.4.0");

        let without = BootstrapParams::decode(&*input.for_delegate(None)).unwrap();
        assert_eq!(without.extensions.len(), 1);
    }

    #[test]
    fn a_legacy_delegate_gets_the_runc_options_as_an_any_or_nothing() {
        let input = StartInput::Legacy { options: None };
        assert_eq!(input.for_delegate(None), Vec::<u8>::new());
        assert_eq!(
            Any::decode(&*input.for_delegate(Some(&runc_options()))).unwrap(),
            runc_options()
        );
    }

    #[test]
    fn a_socket_dir_moves_the_sockets() {
        let mut with_dir = params();
        with_dir.socket_dir = Some("/run/k/s".into());
        assert_eq!(StartInput::Bootstrap(with_dir).socket_root(), "/run/k/s");
        assert_eq!(
            StartInput::Bootstrap(params()).socket_root(),
            DEFAULT_SOCKET_ROOT
        );
    }
}
