//! Identifier and position newtypes shared by every message.
//!
//! Owns only the types: two `u64`s of different kinds must not be swappable
//! (STYLE 7). Each archived form (`ArchivedNodeId`, ...) converts back with
//! `From<&Archived..>` so code reading a frame in place gets the same type.

use rkyv::{Archive, Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident, $archived:ident, $inner:ty) => {
        $(#[$meta])*
        #[derive(
            Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd,
            Ord, Default,
        )]
        #[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord))]
        #[rkyv(compare(PartialEq))]
        pub struct $name(pub $inner);

        impl $name {
            /// The wrapped number.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl From<&$archived> for $name {
            fn from(archived: &$archived) -> $name {
                $name(archived.0.to_native())
            }
        }

        impl $archived {
            /// The native value of this archived id.
            pub fn get(&self) -> $name {
                $name::from(self)
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_newtype!(
    /// A node (one `quasar` process) of the cluster; 0 is never a valid node.
    NodeId,
    ArchivedNodeId,
    u64
);
id_newtype!(
    /// The index of a shard (one pinned core) within a node.
    ShardId,
    ArchivedShardId,
    u32
);
id_newtype!(
    /// A Raft group; a group lives on shard `hash(group) % shards` of every node.
    GroupId,
    ArchivedGroupId,
    u64
);
id_newtype!(
    /// A range of the key space (served by exactly one group at a time).
    RangeId,
    ArchivedRangeId,
    u64
);
id_newtype!(
    /// A cluster; a peer from another cluster is refused at the handshake.
    ClusterId,
    ArchivedClusterId,
    u64
);
id_newtype!(
    /// A request on one connection; unique among that connection's requests in flight.
    RequestId,
    ArchivedRequestId,
    u64
);
id_newtype!(
    /// A client session for exactly-once writes.
    SessionId,
    ArchivedSessionId,
    u64
);
id_newtype!(
    /// A write's sequence number within its session; a retry reuses it.
    Sequence,
    ArchivedSequence,
    u64
);
id_newtype!(
    /// A Raft term.
    Term,
    ArchivedTerm,
    u64
);
id_newtype!(
    /// A position in a group's Raft log (1-based; 0 means "before the first entry").
    LogIndex,
    ArchivedLogIndex,
    u64
);
id_newtype!(
    /// The version of a key: the Raft log index of the write that last changed it, plus its
    /// range's version offset (grown by merges). [`KeyVersion::ABSENT`] (0) is the version of a key that does not exist.
    KeyVersion,
    ArchivedKeyVersion,
    u64
);
id_newtype!(
    /// A range's epoch, bumped by every split, merge and membership change.
    RangeEpoch,
    ArchivedRangeEpoch,
    u64
);

impl ClusterId {
    /// The id of the cluster named `name` (`--cluster-id`): FNV-1a 64 of the name's bytes.
    /// Nodes and clients derive it the same way, so a client needs only the name.
    pub fn from_name(name: &str) -> ClusterId {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        ClusterId(h)
    }
}

impl KeyVersion {
    /// The version of a key that does not exist (never written, or deleted).
    pub const ABSENT: KeyVersion = KeyVersion(0);
}

impl From<LogIndex> for KeyVersion {
    fn from(index: LogIndex) -> KeyVersion {
        KeyVersion(index.0)
    }
}

/// A log position: the term and index of one entry [openraft `LogId`].
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub struct LogId {
    /// The entry's term.
    pub term: Term,
    /// The entry's index.
    pub index: LogIndex,
}

impl From<&ArchivedLogId> for LogId {
    fn from(archived: &ArchivedLogId) -> LogId {
        LogId {
            term: archived.term.get(),
            index: archived.index.get(),
        }
    }
}
