#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| image_fuzz::targets::seccomp(data));
