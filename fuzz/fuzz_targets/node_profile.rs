#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hakube_fuzz::node_profile(data));
