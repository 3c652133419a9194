//! Range commands: the log entries that change a range's shape (split, freeze, merge).
//!
//! A command is proposed in the log of the range it changes and applied by every replica
//! at the same index, so every replica changes its own data the same way: nothing is copied
//! over the network. The payload is the tag [`PAYLOAD_RANGE_COMMAND`] and the rkyv bytes of
//! a [`RangeCommand`].
//!
//! ```text
//!  split:  [left's log]  Split{key, right id/group}  -> every replica cuts its map at key,
//!                                                      the right half starts a new group
//!  merge:  [right's log] Freeze                      -> right refuses writes from here on
//!          [left's log]  Merge{right, freeze index}  -> every replica absorbs its own copy
//!                                                      of right at the freeze; right's group
//!                                                      is destroyed
//! ```
//!
//! Every command names the epoch its proposer saw; a replica whose range moved on since
//! applies nothing (the same decision everywhere, since it depends only on the log).

use rkyv::{Archive, Deserialize, Serialize};

/// The first payload byte of a range command entry.
pub const PAYLOAD_RANGE_COMMAND: u8 = 4;

/// A change of a range's shape.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RangeCommand {
    /// Split at `key`: the keys from `key` on become range `right_id`, group `right_group`.
    Split {
        expected_epoch: u64,
        key: Vec<u8>,
        right_id: u64,
        right_group: u64,
    },
    /// Freeze this range for a merge into its left neighbour.
    Freeze { expected_epoch: u64 },
    /// Absorb the right neighbour `right_id` (group `right_group`, first key `right_start`),
    /// frozen at `freeze_index` with epoch `right_epoch`.
    Merge {
        expected_epoch: u64,
        right_id: u64,
        right_group: u64,
        right_start: Vec<u8>,
        right_epoch: u64,
        freeze_index: u64,
    },
}

impl RangeCommand {
    /// The entry payload: tag, then the archive.
    pub fn encode(&self) -> bytes::Bytes {
        let body = match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
            Ok(b) => b,
            // Plain owned data into memory: only allocation failure, which aborts anyway.
            Err(e) => panic!("range command does not serialize: {e}"),
        };
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(PAYLOAD_RANGE_COMMAND);
        out.extend_from_slice(&body);
        bytes::Bytes::from(out)
    }

    /// Decodes a payload made by [`RangeCommand::encode`] (tag included).
    pub fn decode(payload: &[u8]) -> Result<RangeCommand, String> {
        let body = match payload.split_first() {
            Some((&PAYLOAD_RANGE_COMMAND, body)) => body,
            _ => return Err("not a range command".into()),
        };
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        rkyv::from_bytes::<RangeCommand, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_garbage_is_refused() {
        for c in [
            RangeCommand::Split {
                expected_epoch: 3,
                key: b"k".to_vec(),
                right_id: 1025,
                right_group: 1025,
            },
            RangeCommand::Freeze { expected_epoch: 9 },
            RangeCommand::Merge {
                expected_epoch: 4,
                right_id: 7,
                right_group: 7,
                right_start: b"m".to_vec(),
                right_epoch: 5,
                freeze_index: 100,
            },
        ] {
            assert_eq!(RangeCommand::decode(&c.encode()), Ok(c));
        }
        assert!(RangeCommand::decode(&[PAYLOAD_RANGE_COMMAND, 1, 2, 3]).is_err());
        assert!(RangeCommand::decode(&[0, 1]).is_err());
        assert!(RangeCommand::decode(&[]).is_err());
    }
}
