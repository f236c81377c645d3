//! A collection directory's own record (`COLLECTION`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| indigo::fuzzing::collection_record(data));
