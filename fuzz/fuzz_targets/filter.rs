//! `where` and `where_document` filters, parsed and evaluated on a few records.
#![no_main]
use indigo_types::metadata::metadata_from_json;
use indigo_types::{DocFilter, Where};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let meta: indigo_types::Metadata =
        metadata_from_json(&json!({"a": 1, "b": "x", "c": [1, 2], "d": true, "e": 2.5}), false)
            .unwrap()
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
    let metas = [Some(meta), None];
    let docs = [Some("the quick brown fox"), None];
    if let Ok(w) = Where::parse(&v) {
        for m in &metas {
            for d in docs {
                let _ = w.matches(m.as_ref(), d);
            }
        }
    }
    if let Ok(f) = DocFilter::parse(&v) {
        for d in docs {
            let _ = f.matches(d);
        }
    }
});
