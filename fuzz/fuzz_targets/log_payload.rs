//! A log record's payload (one write request); what decodes re-encodes to the
//! same request.
#![no_main]
use indigo_types::WriteEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = WriteEntry::decode(data) {
        assert_eq!(WriteEntry::decode(&e.encode()).as_ref(), Ok(&e));
    }
});
