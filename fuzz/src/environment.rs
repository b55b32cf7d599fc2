//! What a pod and an environment source hand nixlet: annotations, `manifest.toml`,
//! `manifest.lock`, and the netrc file an http source authenticates with.

use std::collections::HashMap;

use nixlet_manifest::{
    resolve_loaded, select, EnvRef, LoadedEnvironment, Lockfile, Manifest, Netrc, Selection,
    Selector, ENVIRONMENT, ENVIRONMENT_PREFIX, FLOX_ENVIRONMENT, FLOX_ENVIRONMENT_PREFIX,
};

/// The system resolution asks for; any fixed one exercises the same code.
const SYSTEM: &str = "x86_64-linux";
/// A manifest whose install ids the lock seeds use, so that lock inputs reach resolution.
const LOCK_MANIFEST: &str = include_str!("../../manifest/tests/fixtures/flox-env/manifest.toml");

/// `manifest.toml`, optionally followed by a NUL byte and a `manifest.lock`, resolved as a
/// source would hand them over.
pub fn manifest_toml(data: &[u8]) {
    let (manifest, lock) = match data.iter().position(|&byte| byte == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(manifest) = std::str::from_utf8(manifest) else {
        return;
    };
    if let Err(error) = Manifest::parse(manifest) {
        let _ = error.to_string();
    }
    resolve(manifest, lock);
}

/// `manifest.lock`, alone and next to a manifest that installs what the seeds lock.
pub fn manifest_lock(data: &[u8]) {
    match Lockfile::parse(data) {
        Ok(lock) => {
            let _ = lock.own_manifest();
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
    resolve(LOCK_MANIFEST, Some(data));
}

fn resolve(manifest: &str, lock: Option<&[u8]>) {
    let loaded = LoadedEnvironment {
        reference: EnvRef::parse("fuzz/env").expect("a valid reference"),
        generation: 1,
        location: "/fuzz/env/1".to_string(),
        manifest_toml: manifest.to_string(),
        manifest_lock: lock.map(<[u8]>::to_vec),
    };
    match resolve_loaded(loaded, SYSTEM) {
        Ok(resolved) => {
            let _ = resolved.store_paths();
            let _ = resolved.display_name();
            let _ = resolved.needs_activation();
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

/// A container's annotations, one `key=value` per line, and the whole input as one reference.
pub fn annotations(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_reference(&text);
    let mut annotations = HashMap::new();
    for line in text.split('\n') {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        check_reference(value);
        annotations.insert(key.to_string(), value.to_string());
    }
    match select(&annotations) {
        Ok(Selection::Environment { key, reference }) => {
            let pod_level = key == ENVIRONMENT || key == FLOX_ENVIRONMENT;
            let own =
                key.starts_with(ENVIRONMENT_PREFIX) || key.starts_with(FLOX_ENVIRONMENT_PREFIX);
            assert!(pod_level || own, "chosen by {key:?}");
            assert_eq!(
                EnvRef::parse(&annotations[&key]).as_ref(),
                Ok(&reference),
                "the reference is not the one the key holds"
            );
        }
        Ok(Selection::Skipped { container }) => assert!(!container.is_empty()),
        Ok(Selection::Untouched) => {}
        Err(error) => assert_bounded(&error.to_string()),
    }
}

/// An error about an annotation goes to containerd's log and the pod's Event: it quotes values
/// only in part, however long they are.
fn assert_bounded(message: &str) {
    assert!(
        message.len() < 2048,
        "{} bytes: {message:.300}",
        message.len()
    );
    assert!(
        !message.chars().any(|c| c.is_control()),
        "control character in {message:?}"
    );
}

/// A valid reference is safe as path components and reads back as written.
fn check_reference(value: &str) {
    match EnvRef::parse(value) {
        Ok(reference) => {
            for part in [&reference.owner, &reference.name] {
                assert!((1..=64).contains(&part.len()), "{part:?}");
                assert!(part != "." && part != "..", "{part:?}");
                assert!(
                    part.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
                    "{part:?}"
                );
            }
            if let Selector::Generation(generation) = reference.selector {
                assert!(generation >= 1);
            }
            assert_eq!(
                reference.to_string(),
                value,
                "display differs from the input"
            );
        }
        Err(error) => assert_bounded(&error.to_string()),
    }
}

/// A netrc file; every entry found must be the one its host gets.
pub fn netrc(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Netrc::parse(text) {
        Ok(netrc) => {
            for entry in &netrc.entries {
                if let Some(host) = &entry.machine {
                    let found = netrc.for_host(host).expect("an entry for a named host");
                    assert_eq!(found.machine.as_ref(), Some(host));
                }
            }
            let fallback = netrc.for_host("host.invalid");
            if let Some(entry) = fallback {
                assert!(
                    entry.machine.is_none() || entry.machine.as_deref() == Some("host.invalid")
                );
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}
