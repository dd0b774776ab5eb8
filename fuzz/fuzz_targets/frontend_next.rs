//! Fuzzes the frontend's next= redirect check; the invariants live in `app_frontend::fuzzing::next`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| app_frontend::fuzzing::next(data));
