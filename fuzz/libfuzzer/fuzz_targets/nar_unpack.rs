#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nixlet_fuzz::nar_unpack(data));
