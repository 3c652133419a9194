//! The replicated state machine of the simulator: a map of registers (`key -> value`).
//! Commands are `Put { key, value }` with globally unique values, so that every value
//! read identifies exactly one write, which keeps the linearizability check cheap. It
//! owns the command and snapshot byte encodings; it never decides what is committed.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

/// A client write: set register `key` to `value` (values are unique per run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Put {
    /// Register.
    pub key: u64,
    /// New value; never reused within a run, never 0.
    pub value: u64,
}

const PUT_TAG: u8 = 0x50;
const PUT_LEN: usize = 17;

impl Put {
    /// The command bytes proposed to Raft.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(PUT_LEN);
        b.put_u8(PUT_TAG);
        b.put_u64(self.key);
        b.put_u64(self.value);
        b.freeze()
    }

    /// Parses command bytes; `None` for anything that is not a `Put` (empty entries).
    #[must_use]
    pub fn decode(data: &[u8]) -> Option<Put> {
        if data.len() != PUT_LEN || data[0] != PUT_TAG {
            return None;
        }
        let key = u64::from_be_bytes(data[1..9].try_into().ok()?);
        let value = u64::from_be_bytes(data[9..17].try_into().ok()?);
        Some(Put { key, value })
    }
}

/// The register map, plus the index of the last entry applied to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    applied_index: u64,
    registers: BTreeMap<u64, u64>,
}

impl KvStateMachine {
    /// An empty map at index 0.
    #[must_use]
    pub fn new() -> KvStateMachine {
        KvStateMachine::default()
    }

    /// Index of the last applied entry.
    #[must_use]
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Applies the entry at `index` (which must be the next one); returns the write it
    /// carried, if any.
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Option<Put> {
        assert_eq!(
            index,
            self.applied_index + 1,
            "state machine applied out of order: at {} then {index}",
            self.applied_index
        );
        self.applied_index = index;
        let put = Put::decode(data)?;
        self.registers.insert(put.key, put.value);
        Some(put)
    }

    /// The register's value (0: never written).
    #[must_use]
    pub fn read(&self, key: u64) -> u64 {
        self.registers.get(&key).copied().unwrap_or(0)
    }

    /// Serializes the whole map (the snapshot payload).
    #[must_use]
    pub fn snapshot(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(8 + self.registers.len() * 16);
        b.put_u64(self.applied_index);
        for (k, v) in &self.registers {
            b.put_u64(*k);
            b.put_u64(*v);
        }
        b.freeze()
    }

    /// Rebuilds a map from `snapshot` bytes; panics on bytes it did not produce (a bug).
    #[must_use]
    pub fn restore(snapshot: &[u8]) -> KvStateMachine {
        assert!(
            snapshot.len() >= 8 && (snapshot.len() - 8) % 16 == 0,
            "snapshot of {} bytes is not a KvStateMachine snapshot",
            snapshot.len()
        );
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&snapshot[at..at + 8]);
            u64::from_be_bytes(w)
        };
        let mut registers = BTreeMap::new();
        let mut at = 8;
        while at < snapshot.len() {
            registers.insert(word(at), word(at + 8));
            at += 16;
        }
        KvStateMachine {
            applied_index: word(0),
            registers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_round_trips_and_other_bytes_are_not_puts() {
        let p = Put { key: 3, value: 99 };
        assert_eq!(Put::decode(&p.encode()), Some(p));
        assert_eq!(Put::decode(b""), None);
        assert_eq!(Put::decode(&[0u8; 17]), None);
    }

    #[test]
    fn apply_read_snapshot_restore() {
        let mut sm = KvStateMachine::new();
        assert_eq!(
            sm.apply(1, &Put { key: 1, value: 10 }.encode()),
            Some(Put { key: 1, value: 10 })
        );
        assert_eq!(sm.apply(2, b""), None);
        sm.apply(3, &Put { key: 2, value: 11 }.encode());
        assert_eq!((sm.read(1), sm.read(2), sm.read(3)), (10, 11, 0));
        let back = KvStateMachine::restore(&sm.snapshot());
        assert_eq!(back, sm);
        assert_eq!(back.applied_index(), 3);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn applying_out_of_order_is_a_bug() {
        let mut sm = KvStateMachine::new();
        sm.apply(2, b"");
    }
}
