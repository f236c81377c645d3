//! The log on object storage: a manifest and a fragment decoded from untrusted
//! bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| indigo_objlog::fuzzing::decode(data));
