//! Fuzzes the sidecar's OpenBao proxy: path/query normaliser and allow-list matcher; the invariants live in `zt_sidecar::fuzzing::proxy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zt_sidecar::fuzzing::proxy(data));
