//! A backup's manifest (`BACKUP`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| indigo::fuzzing::backup_manifest(data));
