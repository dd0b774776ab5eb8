//! Fuzzes the inbound mTLS listener's request heads and bodies against hyper's HTTP/1 server; the invariants live in `zt_sidecar::fuzzing::inbound_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zt_sidecar::fuzzing::inbound_head(data));
