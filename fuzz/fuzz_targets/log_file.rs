//! A write-ahead log file replayed as recovery replays it; whatever opens must
//! read back, take an append, and reopen.
#![no_main]
use std::path::Path;
use std::sync::Arc;

use indigo_log::{CollectionId, FileLog, Log, LogOffset};
use indigo_storage::fs::{FaultFs, FileSystem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fs = Arc::new(FaultFs::new());
    let dir = Path::new("/log");
    let f = fs.create(&dir.join("0000000001.ilog")).unwrap();
    f.append(data).unwrap();
    let Ok(log) = FileLog::open_with_fs(fs.clone(), dir, Default::default()) else {
        return;
    };
    for c in log.collections() {
        let _ = log.read(c, LogOffset(0), usize::MAX);
    }
    let c = CollectionId([7; 16]);
    let off = log.append(c, b"after recovery").unwrap();
    drop(log);
    let log = FileLog::open_with_fs(fs, dir, Default::default()).unwrap();
    let back = log.read(c, LogOffset(off.0 - 1), 1).unwrap();
    assert_eq!(&back[0].payload[..], b"after recovery");
});
