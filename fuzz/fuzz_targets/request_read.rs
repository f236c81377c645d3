//! A read request body, parsed as the gateway parses it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| indigo_frontend::fuzzing::read_body(data));
