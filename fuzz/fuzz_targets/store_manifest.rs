//! The storage engine's manifest format, decoded from untrusted bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| indigo_storage::fuzzing::manifest(data));
