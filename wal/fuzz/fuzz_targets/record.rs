//! Decodes arbitrary bytes as records at every aligned offset: never panics, and whatever
//! decodes has a body inside the input and a next offset past the record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quasar_wal::record::{self, Decoded, RecordKind};

fuzz_target!(|data: &[u8]| {
    let seed = data.first().map_or(0, |&b| u32::from(b));
    let mut at = 0;
    while at <= data.len() {
        if let Decoded::Record(r) = record::decode(data, at, seed) {
            assert!(r.next > at && r.next <= record::pad8(data.len()));
            if r.kind == RecordKind::Entries {
                for (_, _, payload) in record::entries_iter(r.body) {
                    assert!(payload.len() <= r.body.len());
                }
            }
        }
        at += 8;
    }
});
