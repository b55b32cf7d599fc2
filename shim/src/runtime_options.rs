//! The runc options handed to the runc shim, at `start` and with every Create.
//!
//! containerd wraps a non-runc runtime's options as `runtimeoptions.v1.Options`, which the runc
//! shim rejects; nixlet replaces them with runc options from its node config
//! (`[runtime.runc_options]`). Runc options that arrive as such (`ctr run --runc-…` on nixlet's
//! runtime) are kept, and only the keys they leave unset are filled from the node config.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::oci::Options as RuncOptionsMessage;
use nixlet_config::RuncOptions;

pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// The options to forward with a Create: `None` keeps the runc shim's defaults.
pub fn options_for_delegate(
    received: Option<&Any>,
    configured: &RuncOptions,
) -> Result<Option<Any>, containerd_shim::protos::protobuf::Error> {
    let received = received.map(|any| (any.type_url.as_str(), any.value.as_slice()));
    Ok(merged(received, configured)?.map(|(type_url, value)| Any {
        type_url,
        value,
        ..Default::default()
    }))
}

/// The same options as the protobuf `Any` of the bootstrap messages, for the runc shim's
/// `start` (which reads `ShimCgroup` from them) and `-info`.
pub fn start_options_for_delegate(
    received: Option<&prost_types::Any>,
    configured: &RuncOptions,
) -> Result<Option<prost_types::Any>, containerd_shim::protos::protobuf::Error> {
    let received = received.map(|any| (any.type_url.as_str(), any.value.as_slice()));
    Ok(merged(received, configured)?.map(|(type_url, value)| prost_types::Any { type_url, value }))
}

fn merged(
    received: Option<(&str, &[u8])>,
    configured: &RuncOptions,
) -> Result<Option<(String, Vec<u8>)>, containerd_shim::protos::protobuf::Error> {
    let mut options = match received {
        Some((type_url, value)) if is_runc_options(type_url) => {
            RuncOptionsMessage::parse_from_bytes(value)?
        }
        _ => RuncOptionsMessage::new(),
    };
    fill_unset(&mut options, configured);
    if options == RuncOptionsMessage::new() {
        return Ok(None);
    }
    Ok(Some((
        RUNC_OPTIONS_TYPE_URL.to_string(),
        options.write_to_bytes()?,
    )))
}

fn is_runc_options(type_url: &str) -> bool {
    type_url.rsplit('/').next() == Some(RUNC_OPTIONS_TYPE_URL)
}

fn fill_unset(options: &mut RuncOptionsMessage, configured: &RuncOptions) {
    fn string(field: &mut String, value: &Option<String>) {
        if field.is_empty() {
            if let Some(value) = value {
                field.clone_from(value);
            }
        }
    }
    fn flag(field: &mut bool, value: Option<bool>) {
        *field = *field || value.unwrap_or(false);
    }
    fn id(field: &mut u32, value: Option<u32>) {
        if *field == 0 {
            *field = value.unwrap_or(0);
        }
    }
    string(&mut options.binary_name, &configured.binary_name);
    string(&mut options.root, &configured.root);
    string(&mut options.shim_cgroup, &configured.shim_cgroup);
    string(&mut options.criu_image_path, &configured.criu_image_path);
    string(&mut options.criu_work_path, &configured.criu_work_path);
    flag(&mut options.systemd_cgroup, configured.systemd_cgroup);
    flag(&mut options.no_pivot_root, configured.no_pivot_root);
    flag(&mut options.no_new_keyring, configured.no_new_keyring);
    id(&mut options.io_uid, configured.io_uid);
    id(&mut options.io_gid, configured.io_gid);
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

    fn decode(any: &Any) -> RuncOptionsMessage {
        assert_eq!(any.type_url, RUNC_OPTIONS_TYPE_URL);
        RuncOptionsMessage::parse_from_bytes(&any.value).unwrap()
    }

    fn crun() -> RuncOptions {
        RuncOptions {
            binary_name: Some("crun".into()),
            ..Default::default()
        }
    }

    #[test]
    fn cri_wrapper_options_are_dropped_without_configured_options() {
        let none = RuncOptions::default();
        assert_eq!(
            options_for_delegate(Some(&runtimeoptions_any()), &none).unwrap(),
            None
        );
        assert_eq!(options_for_delegate(None, &none).unwrap(), None);
    }

    #[test]
    fn every_configured_option_reaches_the_runc_shim() {
        let configured = RuncOptions {
            binary_name: Some("crun".into()),
            root: Some("/run/containerd/runc".into()),
            systemd_cgroup: Some(true),
            no_pivot_root: Some(true),
            no_new_keyring: Some(true),
            shim_cgroup: Some("/podruntime/runtime".into()),
            io_uid: Some(1000),
            io_gid: Some(1001),
            criu_image_path: Some("/var/criu/images".into()),
            criu_work_path: Some("/var/criu/work".into()),
        };
        let forwarded = decode(
            &options_for_delegate(Some(&runtimeoptions_any()), &configured)
                .unwrap()
                .unwrap(),
        );
        let mut expected = RuncOptionsMessage::new();
        expected.binary_name = "crun".into();
        expected.root = "/run/containerd/runc".into();
        expected.systemd_cgroup = true;
        expected.no_pivot_root = true;
        expected.no_new_keyring = true;
        expected.shim_cgroup = "/podruntime/runtime".into();
        expected.io_uid = 1000;
        expected.io_gid = 1001;
        expected.criu_image_path = "/var/criu/images".into();
        expected.criu_work_path = "/var/criu/work".into();
        assert_eq!(forwarded, expected);
    }

    #[test]
    fn received_runc_options_are_kept_and_only_unset_keys_are_filled() {
        let mut options = RuncOptionsMessage::new();
        options.binary_name = "youki".into();
        let received = Any {
            type_url: RUNC_OPTIONS_TYPE_URL.into(),
            value: options.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let configured = RuncOptions {
            systemd_cgroup: Some(true),
            ..crun()
        };
        let forwarded = decode(
            &options_for_delegate(Some(&received), &configured)
                .unwrap()
                .unwrap(),
        );
        assert!(forwarded.systemd_cgroup);
        assert_eq!(forwarded.binary_name, "youki");
    }

    #[test]
    fn start_options_are_the_same_options_as_a_bootstrap_any() {
        let any = start_options_for_delegate(None, &crun()).unwrap().unwrap();
        assert_eq!(any.type_url, RUNC_OPTIONS_TYPE_URL);
        assert_eq!(
            RuncOptionsMessage::parse_from_bytes(&any.value)
                .unwrap()
                .binary_name,
            "crun"
        );
    }
}
