#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hakube_fuzz::journal(data));
