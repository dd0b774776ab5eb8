//! Fuzzes the backend's parsers of the sidecar's secret files (db.json, jwt-signing-key.json); the invariants live in `app_backend::fuzzing::secret_files`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| app_backend::fuzzing::secret_files(data));
