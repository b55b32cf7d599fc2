#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nixlet_fuzz::manifest_toml(data));
