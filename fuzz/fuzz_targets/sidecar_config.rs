//! Fuzzes the sidecar's TOML configuration loader; the invariants live in `zt_sidecar::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zt_sidecar::fuzzing::config(data));
