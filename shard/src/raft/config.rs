//! Static settings of one Raft node, and their validation.

use super::errors::ConfigError;
use super::types::NodeId;

/// How a node behaves. Times are in ticks: the runtime calls `tick()` at a fixed period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub id: NodeId,
    /// The group this node replicates: named in its log lines only (0: none given).
    pub group: u64,
    /// A follower campaigns after a random timeout in
    /// `[election_timeout_ticks, 2 * election_timeout_ticks)` without hearing a leader.
    pub election_timeout_ticks: u32,
    /// The leader sends heartbeats this often; must be below the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// §9.6: ask for pre-votes before raising the term.
    pub pre_vote: bool,
    /// §6.2: a leader that has not heard from a quorum for an election timeout steps down,
    /// and followers that hear from a leader ignore vote requests (leader stickiness).
    pub check_quorum: bool,
    /// Leader lease in ticks (§6.4.1), 0 disables lease reads. Must be below the election
    /// timeout (the margin absorbs clock drift) and needs `check_quorum`.
    pub lease_ticks: u32,
    /// Most entries in one `Append`.
    pub max_entries_per_msg: usize,
    /// Most payload bytes in one `Append` (at least one entry is always sent).
    pub max_bytes_per_msg: u64,
    /// Most `Append`s in flight to one follower in the replicate state (flow control).
    pub max_inflight_msgs: usize,
    /// Ask the runtime for a snapshot once this many applied entries sit in the log above
    /// the last snapshot (`Ready::snapshot_request`); 0 never asks.
    pub snapshot_after_entries: u64,
}

impl Config {
    /// Defaults that suit a 10 ms tick: election after 100-200 ms, heartbeat every 20 ms.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            group: 0,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            lease_ticks: 8,
            max_entries_per_msg: 1024,
            max_bytes_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            snapshot_after_entries: 0,
        }
    }

    /// Checks every rule stated on the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NodeId(0) {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.election_timeout_ticks < 2 {
            return Err(ConfigError::ElectionTimeoutTooShort {
                ticks: self.election_timeout_ticks,
            });
        }
        if self.heartbeat_interval_ticks == 0
            || self.heartbeat_interval_ticks >= self.election_timeout_ticks
        {
            return Err(ConfigError::HeartbeatNotBelowElection {
                heartbeat: self.heartbeat_interval_ticks,
                election: self.election_timeout_ticks,
            });
        }
        if self.lease_ticks >= self.election_timeout_ticks {
            return Err(ConfigError::LeaseNotBelowElection {
                lease: self.lease_ticks,
                election: self.election_timeout_ticks,
            });
        }
        if self.lease_ticks > 0 && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        if self.max_entries_per_msg == 0 || self.max_bytes_per_msg == 0 {
            return Err(ConfigError::ZeroBatch);
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::ZeroInflight);
        }
        Ok(())
    }
}
