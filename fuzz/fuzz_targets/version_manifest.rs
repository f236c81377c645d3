//! An index version's manifest, decoded from untrusted bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| indigo_version::fuzzing::manifest(data));
