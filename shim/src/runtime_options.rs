//! The runtime options handed to the runc shim with Create.
//!
//! containerd wraps a non-runc runtime's options as `runtimeoptions.v1.Options`, which the runc
//! shim rejects; nixlet replaces them with runc options built from its own node config.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::oci::Options as RuncOptions;

pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// The options to forward: the received ones if they already are runc options, otherwise runc
/// options naming the configured OCI runtime (or none, to keep the runc shim's defaults).
pub fn options_for_delegate(
    received: Option<&Any>,
    binary_name: Option<&str>,
) -> Result<Option<Any>, containerd_shim::protos::protobuf::Error> {
    let mut options = match received {
        Some(any) if any.type_url == RUNC_OPTIONS_TYPE_URL => {
            RuncOptions::parse_from_bytes(&any.value)?
        }
        _ => RuncOptions::new(),
    };
    if let Some(binary) = binary_name {
        if options.binary_name.is_empty() {
            options.binary_name = binary.to_string();
        }
    }
    if options == RuncOptions::new() {
        return Ok(None);
    }
    Ok(Some(Any {
        type_url: RUNC_OPTIONS_TYPE_URL.to_string(),
        value: options.write_to_bytes()?,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtimeoptions_any() -> Any {
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x0a, 0x03, b'a', b'b', b'c'],
            ..Default::default()
        }
    }

    fn decode(any: &Any) -> RuncOptions {
        assert_eq!(any.type_url, RUNC_OPTIONS_TYPE_URL);
        RuncOptions::parse_from_bytes(&any.value).unwrap()
    }

    #[test]
    fn cri_wrapper_options_are_dropped_without_a_configured_runtime() {
        assert_eq!(
            options_for_delegate(Some(&runtimeoptions_any()), None).unwrap(),
            None
        );
        assert_eq!(options_for_delegate(None, None).unwrap(), None);
    }

    #[test]
    fn configured_runtime_becomes_binary_name() {
        let any = options_for_delegate(Some(&runtimeoptions_any()), Some("crun"))
            .unwrap()
            .unwrap();
        assert_eq!(decode(&any).binary_name, "crun");
    }

    #[test]
    fn runc_options_are_kept_and_an_explicit_binary_name_wins() {
        let mut options = RuncOptions::new();
        options.systemd_cgroup = true;
        options.binary_name = "youki".into();
        let received = Any {
            type_url: RUNC_OPTIONS_TYPE_URL.into(),
            value: options.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let forwarded = decode(
            &options_for_delegate(Some(&received), Some("crun"))
                .unwrap()
                .unwrap(),
        );
        assert!(forwarded.systemd_cgroup);
        assert_eq!(forwarded.binary_name, "youki");
    }
}
