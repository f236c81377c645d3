//! An HNSW commit log loaded as recovery loads it, then searched and changed.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| indigo_index::fuzzing::commit_log(data));
