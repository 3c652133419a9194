//! The blocking admin client: range operations (describe, list, split, merge, leadership
//! transfer) routed the way the server wants them. Used by `quasarctl range ...` and
//! `quasar-bench`.
//!
//! - Node-level questions (`ListRanges`, `DescribeRange`, `ListMembers`) go to shard 0 of
//!   the contact node, then of the other nodes in turn when it does not answer.
//! - Range-changing operations go to the range's leader, on the shard
//!   `shard_for_group(descriptor.group)`. `NotLeader` with a hint is followed at once;
//!   `UnknownRange` or a hint without an address refreshes the descriptor (`DescribeRange`)
//!   and retries after a backoff; `Unavailable`, `Ambiguous` and lost answers retry after a
//!   backoff. Attempts and total time are both bounded.
//! - A range change names the epoch the caller saw: a stale one answers `RangeMoved`, which
//!   is reported ([`AdminError::Changed`]), never retried blindly. So is `ChangeInProgress`
//!   and any refusal: the operator decides.
//! - `merge` first moves the right range's leadership to the left range's leader when they
//!   differ (the server merges only co-located leaders), then waits until the change shows.
//!
//! The routing decisions are pure functions ([`decide`], [`leader_target`], [`plan_merge`],
//! [`predict_split`]) with unit tests; the loop only runs them.

use std::time::{Duration, Instant};

use super::{discover::reply_kind, AttemptError, BlockingClient, ClientConfig, Discovered};
use crate::error::ClientError;
use crate::message::{
    AdminOp, AdminReply, AdminRequest, AdminResponse, InvalidReason, Member, NodeId,
    RangeDescriptor, RangeId, RangeInfo, RangeSelector, ReplicaRole, RequestError, RequestId,
    ShardId,
};
use crate::transport::{shard_for_group, Backoff};

/// Ranges per `ListRanges` page.
const RANGES_PAGE: u32 = 256;
/// Bound on pages (a server that never ends the listing is a bug, not a reason to hang).
const MAX_PAGES: usize = 10_000;
/// How many times `move_replica` plans again after the node it asked showed it an old
/// descriptor.
const STALE_DESCRIBE_RETRIES: usize = 3;

/// Why an admin operation did not succeed. Every message is one line for an operator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdminError {
    /// The range changed since the caller looked (stale epoch): nothing was done.
    #[error("range {} changed (epoch {} now): re-run", .descriptor.id, .descriptor.epoch)]
    Changed {
        /// The range's current descriptor.
        descriptor: RangeDescriptor,
    },
    /// The server (or this client, before sending) refused the operation: nothing changed.
    #[error("{0}")]
    Refused(String),
    /// No such range.
    #[error("no range {0}: see `quasarctl range list`")]
    NoSuchRange(RangeId),
    /// No attempt got a usable answer within the bounds; nothing is known to have changed.
    #[error(
        "gave up after {attempts} attempts in {secs:.1} s ({last}): check that the cluster is up"
    )]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// Seconds spent.
        secs: f64,
        /// The last reason.
        last: String,
    },
    /// A change was sent and no answer came: it may have been applied.
    #[error(
        "outcome unknown after {attempts} attempts ({last}): the change may have been applied; \
         check with `quasarctl range list`"
    )]
    Ambiguous {
        /// Attempts made.
        attempts: u32,
        /// The last reason.
        last: String,
    },
    /// A definite failure of another kind (bad request, unknown node, ...).
    #[error("{0}")]
    Failed(String),
}

impl AdminError {
    /// Whether the cluster gave a definite "no" (exit 1 in `quasarctl`), as opposed to the
    /// operation not getting through (exit 2).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            AdminError::Changed { .. } | AdminError::Refused(_) | AdminError::NoSuchRange(_)
        )
    }
}

impl From<ClientError> for AdminError {
    fn from(e: ClientError) -> AdminError {
        match e {
            ClientError::Failed(e) => {
                refusal(&e).unwrap_or_else(|| AdminError::Failed(e.to_string()))
            }
            ClientError::Unavailable { attempts, last } => AdminError::Unavailable {
                attempts,
                secs: 0.0,
                last,
            },
            ClientError::Ambiguous { attempts, last } => AdminError::Ambiguous { attempts, last },
            other => AdminError::Failed(other.to_string()),
        }
    }
}

/// The one-line refusal a definite server error stands for, if it is one.
fn refusal(e: &RequestError) -> Option<AdminError> {
    Some(match e {
        RequestError::RangeMoved { descriptor } => AdminError::Changed {
            descriptor: descriptor.clone(),
        },
        RequestError::Refused { reason } => AdminError::Refused(format!("refused: {reason}")),
        RequestError::ChangeInProgress { range } => AdminError::Refused(format!(
            "refused: range {range} has another change in progress; re-run when it completes"
        )),
        RequestError::InvalidRequest { reason } => AdminError::Refused(match reason {
            InvalidReason::BadSplitKey => {
                "refused: the split key is at the range's boundary or outside it".into()
            }
            InvalidReason::NotMergeable => {
                "refused: the ranges are not adjacent or not on the same replicas".into()
            }
            InvalidReason::Unsupported => "refused: the node does not support this operation \
                                           yet (upgrade it)"
                .into(),
            other => format!("refused: invalid request ({other:?})"),
        }),
        RequestError::UnknownNode { node } => AdminError::Refused(format!(
            "refused: node {node} is not a member of the cluster"
        )),
        _ => return None,
    })
}

/// What one answer means for the next attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The operation succeeded.
    Done(AdminReply),
    /// Send again at once, to this node (a leader hint).
    Redirect(NodeId),
    /// Re-read the range's descriptor and leader, then send again after a backoff.
    Refresh,
    /// Send again to the same place after a backoff.
    Retry {
        /// Why.
        reason: String,
        /// The request may have been applied (a lost answer).
        ambiguous: bool,
    },
    /// Give up with this error.
    Fail(AdminError),
}

/// Decides what an answer of `node` to a range-changing request means (pure). `known`
/// tells whether a node has an address (a hint to an unknown node refreshes instead).
pub fn decide(
    answer: Result<AdminResponse, AttemptError>,
    node: NodeId,
    known: impl Fn(NodeId) -> bool,
) -> Step {
    match answer {
        Ok(AdminResponse { result: Ok(r), .. }) => Step::Done(r),
        Ok(AdminResponse { result: Err(e), .. }) => match e {
            RequestError::NotLeader {
                leader_hint: Some(l),
                ..
            } if l != node && known(l) => Step::Redirect(l),
            RequestError::NotLeader { .. } | RequestError::UnknownRange { .. } => Step::Refresh,
            e => match refusal(&e) {
                Some(err) => Step::Fail(err),
                None if e.is_retryable() => Step::Retry {
                    reason: e.to_string(),
                    ambiguous: matches!(e, RequestError::Ambiguous { .. }),
                },
                None => Step::Fail(AdminError::Failed(e.to_string())),
            },
        },
        Err(AttemptError::NotSent(reason)) => Step::Retry {
            reason,
            ambiguous: false,
        },
        Err(AttemptError::Lost(reason)) => Step::Retry {
            reason,
            ambiguous: true,
        },
    }
}

/// Where a change of the range `info` goes: its leader if known (and addressable), else its
/// first addressable voter, on the shard of its group (pure).
pub fn leader_target(
    info: &RangeInfo,
    shards: u32,
    known: impl Fn(NodeId) -> bool,
) -> Option<(NodeId, ShardId)> {
    let node = info
        .leader
        .filter(|l| known(*l))
        .or_else(|| info.descriptor.voters().find(|n| known(*n)))?;
    Some((node, shard_for_group(info.descriptor.group, shards.max(1))))
}

/// The two descriptors a split of `range` at `key` would produce (pure): the left keeps
/// the id and group, the right's id and group are assigned by the server (shown as 0 here),
/// both carry the same replicas. Epochs are left as they are (the server bumps them).
pub fn predict_split(
    range: &RangeDescriptor,
    key: &[u8],
) -> Result<(RangeDescriptor, RangeDescriptor), AdminError> {
    if key.is_empty() || key <= range.start.as_slice() || !range.contains(key) {
        return Err(AdminError::Refused(format!(
            "refused: split key {} is not strictly inside range {} [{}, {})",
            key.escape_ascii(),
            range.id,
            range.start.escape_ascii(),
            if range.end.is_empty() {
                "+inf".to_string()
            } else {
                range.end.escape_ascii().to_string()
            }
        )));
    }
    let left = RangeDescriptor {
        end: key.to_vec(),
        ..range.clone()
    };
    let right = RangeDescriptor {
        id: RangeId(0),
        group: crate::message::GroupId(0),
        start: key.to_vec(),
        ..range.clone()
    };
    Ok((left, right))
}

/// What a merge of `left` with `right` takes (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePlan {
    /// `(range, to)`: move the right range's leadership first.
    pub transfer: Option<(RangeId, NodeId)>,
    /// The merged range as predicted: the left's id, group and replicas over both spans.
    pub merged: RangeDescriptor,
}

/// Checks a move of `d`'s replica on `from` to `to` before anything is sent.
pub fn predict_move(d: &RangeDescriptor, from: NodeId, to: NodeId) -> Result<(), AdminError> {
    if from == to {
        return Err(AdminError::Refused(format!(
            "refused: --from and --to both name node {from}"
        )));
    }
    if d.replica(from).is_none() {
        return Err(AdminError::Refused(format!(
            "refused: node {from} holds no replica of range {} (replicas: {})",
            d.id,
            replica_list(d)
        )));
    }
    if d.replica(to).is_some_and(|r| r.role.votes()) {
        return Err(AdminError::Refused(format!(
            "refused: node {to} already holds a replica of range {} (replicas: {})",
            d.id,
            replica_list(d)
        )));
    }
    Ok(())
}

fn replica_list(d: &RangeDescriptor) -> String {
    d.replicas
        .iter()
        .map(|r| r.node.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks that `right` follows `left` and whether leadership must move first (pure).
pub fn plan_merge(left: &RangeInfo, right: &RangeInfo) -> Result<MergePlan, AdminError> {
    let (l, r) = (&left.descriptor, &right.descriptor);
    if l.end.is_empty() {
        return Err(AdminError::Refused(format!(
            "refused: range {} is the last range: there is nothing after it to merge with",
            l.id
        )));
    }
    if r.start != l.end || r.id == l.id {
        return Err(AdminError::Refused(format!(
            "refused: range {} does not start where range {} ends ({})",
            r.id,
            l.id,
            l.end.escape_ascii()
        )));
    }
    let transfer = match (left.leader, right.leader) {
        (Some(ll), Some(rl)) if ll != rl => Some((r.id, ll)),
        (Some(ll), None) => Some((r.id, ll)),
        _ => None,
    };
    Ok(MergePlan {
        transfer,
        merged: RangeDescriptor {
            end: r.end.clone(),
            ..l.clone()
        },
    })
}

/// A merge's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The surviving range.
    pub merged: RangeDescriptor,
    /// `(range, from, to)` when the right range's leadership was moved first.
    pub transferred: Option<(RangeId, Option<NodeId>, NodeId)>,
}

/// The blocking admin client. One per thread.
pub struct AdminClient {
    client: BlockingClient,
    config: ClientConfig,
    /// Where node-level questions go first.
    contact: NodeId,
    /// Bound on one operation's total time (attempts are bounded by `config.max_attempts`).
    total_timeout: Duration,
    /// Bound on waiting for a leadership change to show.
    settle_timeout: Duration,
    /// The node whose answer ended the last range change (its range's leader: others
    /// answer `NotLeader`).
    answered_by: Option<NodeId>,
}

impl AdminClient {
    /// An admin client for `config`; node-level questions go to its first node first.
    pub fn new(config: ClientConfig) -> AdminClient {
        let contact = config.nodes.first().map_or(NodeId(0), |n| n.0);
        AdminClient {
            client: BlockingClient::new(config.clone()),
            config,
            contact,
            total_timeout: Duration::from_secs(60),
            settle_timeout: Duration::from_secs(20),
            answered_by: None,
        }
    }

    /// An admin client for a discovered cluster, asking the node that answered discovery.
    pub fn from_discovered(found: &Discovered) -> AdminClient {
        let mut admin = AdminClient::new(found.config.clone());
        admin.contact = found.contact_status.node;
        admin
    }

    /// Asks `node` node-level questions first.
    #[must_use]
    pub fn with_contact(mut self, node: NodeId) -> AdminClient {
        self.contact = node;
        self
    }

    /// Bounds one operation's total time (default 60 s).
    #[must_use]
    pub fn with_total_timeout(mut self, timeout: Duration) -> AdminClient {
        self.total_timeout = timeout;
        self
    }

    /// The node asked node-level questions first.
    pub fn contact(&self) -> NodeId {
        self.contact
    }

    /// The client configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn known(&self) -> impl Fn(NodeId) -> bool + '_ {
        |n| self.config.nodes.iter().any(|(m, _)| *m == n)
    }

    /// A node-level question: shard 0 of the contact node, then of the others in turn.
    fn ask(&mut self, op: AdminOp) -> Result<AdminReply, AdminError> {
        self.ask_from(self.contact, op)
    }

    /// A node-level question: shard 0 of `first`, then of the others in turn.
    fn ask_from(&mut self, first: NodeId, op: AdminOp) -> Result<AdminReply, AdminError> {
        let began = Instant::now();
        let mut order: Vec<NodeId> = self.config.nodes.iter().map(|n| n.0).collect();
        if let Some(i) = order.iter().position(|n| *n == first) {
            order.rotate_left(i);
        }
        if order.is_empty() {
            return Err(AdminError::Failed("no node to ask".into()));
        }
        let mut backoff = self.backoff();
        let mut request = AdminRequest {
            request_id: RequestId(0),
            op,
        };
        let attempts = self.config.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 && began.elapsed() >= self.total_timeout {
                return Err(unavailable(attempt, began, last));
            }
            let node = order[attempt as usize % order.len()];
            let answer = self.client.admin_once(node, ShardId(0), &mut request)?;
            match answer {
                Ok(AdminResponse { result: Ok(r), .. }) => {
                    // A node that answers becomes the contact.
                    self.contact = node;
                    return Ok(r);
                }
                // Every node answers node-level questions from its own view: a range it
                // does not know of does not exist.
                Ok(AdminResponse {
                    result: Err(RequestError::UnknownRange { range }),
                    ..
                }) => return Err(AdminError::NoSuchRange(range)),
                Ok(AdminResponse { result: Err(e), .. }) if !e.is_retryable() => {
                    return Err(refusal(&e).unwrap_or_else(|| AdminError::Failed(e.to_string())))
                }
                Ok(AdminResponse { result: Err(e), .. }) => last = format!("node {node}: {e}"),
                Err(AttemptError::NotSent(r) | AttemptError::Lost(r)) => {
                    last = format!("node {node}: {r}")
                }
            }
            // Another node is tried at once; a full round waits.
            if (attempt as usize + 1) % order.len() == 0 {
                std::thread::sleep(backoff.next_delay());
            }
        }
        Err(unavailable(attempts, began, last))
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            self.config.backoff_min,
            self.config.backoff_max,
            fastrand::u64(..),
        )
    }

    /// The cluster's members, as the contact node lists them.
    pub fn members(&mut self) -> Result<Vec<Member>, AdminError> {
        match self.ask(AdminOp::ListMembers)? {
            AdminReply::Members(m) => Ok(m),
            other => Err(unexpected("ListMembers", &other)),
        }
    }

    /// One range by id.
    pub fn describe(&mut self, range: RangeId) -> Result<RangeInfo, AdminError> {
        self.describe_at(self.contact, range)
    }

    /// One range by id, as `node` sees it (asked first; the range's leader knows the
    /// latest descriptor, other nodes may lag behind a split or merge it just made).
    pub fn describe_at(&mut self, node: NodeId, range: RangeId) -> Result<RangeInfo, AdminError> {
        match self.ask_from(node, AdminOp::DescribeRange(RangeSelector::Id(range))) {
            Ok(AdminReply::Range(info)) => Ok(info),
            Ok(other) => Err(unexpected("DescribeRange", &other)),
            Err(AdminError::NoSuchRange(_)) => Err(AdminError::NoSuchRange(range)),
            Err(e) => Err(e),
        }
    }

    /// `info` as its leader sees it, when another node answered: the leader knows the latest
    /// descriptor, other nodes may lag behind a change it just made. `info` itself when the
    /// leader is unknown or does not answer.
    pub fn fresh(&mut self, info: RangeInfo) -> RangeInfo {
        match info.leader {
            Some(l) if l != self.contact && self.known()(l) => self
                .describe_at(l, info.descriptor.id)
                .ok()
                .filter(|f| f.descriptor.epoch >= info.descriptor.epoch)
                .unwrap_or(info),
            _ => info,
        }
    }

    /// The range holding `key`.
    pub fn describe_key(&mut self, key: &[u8]) -> Result<RangeInfo, AdminError> {
        self.describe_key_at(self.contact, key)
    }

    /// The range holding `key`, as `node` sees it (asked first).
    pub fn describe_key_at(&mut self, node: NodeId, key: &[u8]) -> Result<RangeInfo, AdminError> {
        match self.ask_from(
            node,
            AdminOp::DescribeRange(RangeSelector::Key(key.to_vec())),
        )? {
            AdminReply::Range(info) if info.descriptor.contains(key) => Ok(info),
            AdminReply::Range(info) => Err(AdminError::Failed(format!(
                "DescribeRange for key {} answered range {}, which does not hold it",
                key.escape_ascii(),
                info.descriptor.id
            ))),
            other => Err(unexpected("DescribeRange", &other)),
        }
    }

    /// The range holding `key` as its leader sees it (`fresh`). A lagging node may answer
    /// with a range its leader has split since, which no longer holds `key`: the leader is
    /// then asked for the range holding it.
    pub fn describe_key_fresh(&mut self, key: &[u8]) -> Result<RangeInfo, AdminError> {
        let info = self.describe_key(key)?;
        let leader = info.leader;
        let fresh = self.fresh(info.clone());
        if fresh.descriptor.contains(key) {
            return Ok(fresh);
        }
        match leader {
            Some(l) => self.describe_key_at(l, key),
            None => Ok(info),
        }
    }

    /// Every range in key order, page by page.
    pub fn list_ranges(&mut self) -> Result<Vec<RangeInfo>, AdminError> {
        let mut ranges = Vec::new();
        let mut start = Vec::new();
        for _ in 0..MAX_PAGES {
            let reply = self.ask(AdminOp::ListRanges {
                start_key: start.clone(),
                limit: RANGES_PAGE,
            })?;
            let AdminReply::Ranges {
                ranges: page,
                resume_key,
            } = reply
            else {
                return Err(unexpected("ListRanges", &reply));
            };
            ranges.extend(page);
            match resume_key {
                Some(next) if next > start => start = next,
                Some(next) => {
                    return Err(AdminError::Failed(format!(
                        "ListRanges made no progress (resume key {} after {})",
                        next.escape_ascii(),
                        start.escape_ascii()
                    )))
                }
                None => return Ok(ranges),
            }
        }
        Err(AdminError::Failed(format!(
            "ListRanges did not finish within {MAX_PAGES} pages"
        )))
    }

    /// Sends a change of the range `info` to its leader, following hints and refreshing the
    /// descriptor as needed (the op itself, with its expected epoch, is never changed).
    fn change(&mut self, mut info: RangeInfo, op: AdminOp) -> Result<AdminReply, AdminError> {
        let began = Instant::now();
        let range = info.descriptor.id;
        let shards = self.config.shards_per_node;
        let mut backoff = self.backoff();
        let mut request = AdminRequest {
            request_id: RequestId(0),
            op,
        };
        let attempts = self.config.max_attempts.max(1);
        let mut last = String::new();
        let mut ambiguous = None;
        let mut target = leader_target(&info, shards, self.known());
        self.answered_by = None;
        for attempt in 0..attempts {
            if attempt > 0 && began.elapsed() >= self.total_timeout {
                return Err(give_up(attempt, began, last, ambiguous));
            }
            let Some((node, shard)) = target else {
                last = format!("range {range} has no replica on a known node");
                std::thread::sleep(backoff.next_delay());
                info = self.describe(range)?;
                target = leader_target(&info, shards, self.known());
                continue;
            };
            let answer = self.client.admin_once(node, shard, &mut request)?;
            if answer.is_ok() {
                self.answered_by = Some(node);
            }
            match decide(answer, node, self.known()) {
                Step::Done(reply) => return Ok(reply),
                Step::Redirect(leader) => {
                    last = format!("node {node} is not the leader of range {range}");
                    target = Some((leader, shard));
                }
                Step::Refresh => {
                    last = format!("node {node} does not lead range {range}");
                    std::thread::sleep(backoff.next_delay());
                    info = self.describe(range)?;
                    target = leader_target(&info, shards, self.known());
                }
                Step::Retry {
                    reason,
                    ambiguous: lost,
                } => {
                    if lost {
                        ambiguous = Some(reason.clone());
                    }
                    last = format!("node {node}: {reason}");
                    std::thread::sleep(backoff.next_delay());
                }
                Step::Fail(e) => return Err(e),
            }
        }
        Err(give_up(attempts, began, last, ambiguous))
    }

    /// Splits the range `range` at `key` (the epoch is read first).
    pub fn split(
        &mut self,
        range: RangeId,
        key: &[u8],
    ) -> Result<(RangeDescriptor, RangeDescriptor), AdminError> {
        let info = self.describe(range)?;
        let info = self.fresh(info);
        self.split_seen(info, key)
    }

    /// Splits the range as the caller saw it (`info`'s epoch is the expected one).
    pub fn split_seen(
        &mut self,
        info: RangeInfo,
        key: &[u8],
    ) -> Result<(RangeDescriptor, RangeDescriptor), AdminError> {
        predict_split(&info.descriptor, key)?;
        let d = &info.descriptor;
        let op = AdminOp::SplitRange {
            range: d.id,
            split_key: key.to_vec(),
            expected_epoch: d.epoch,
        };
        let (range, epoch) = (d.id, d.epoch);
        match self.change(info, op) {
            Ok(AdminReply::Split { left, right }) => Ok((left, right)),
            Ok(other) => Err(unexpected("SplitRange", &other)),
            // A retry of a split whose first answer was lost finds the range already split
            // at this very key: that is this split's success.
            Err(AdminError::Changed { descriptor })
                if descriptor.id == range
                    && descriptor.epoch > epoch
                    && descriptor.end.as_slice() == key =>
            {
                let right = self.describe_key(key)?;
                if right.descriptor.start.as_slice() == key {
                    Ok((descriptor, right.descriptor))
                } else {
                    Err(AdminError::Changed { descriptor })
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Moves the leadership of `range` to `to` (a voter of it).
    pub fn transfer_leader(&mut self, range: RangeId, to: NodeId) -> Result<NodeId, AdminError> {
        let info = self.describe(range)?;
        let info = self.fresh(info);
        self.transfer_seen(info, to)
    }

    /// As [`AdminClient::transfer_leader`] from a descriptor the caller holds; returns the
    /// new leader (`to` at once when it already leads).
    pub fn transfer_seen(&mut self, info: RangeInfo, to: NodeId) -> Result<NodeId, AdminError> {
        let d = &info.descriptor;
        if !d.voters().any(|n| n == to) {
            return Err(AdminError::Refused(format!(
                "refused: node {to} holds no voting replica of range {} (replicas: {})",
                d.id,
                d.replicas
                    .iter()
                    .map(|r| r.node.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        if info.leader == Some(to) {
            return Ok(to);
        }
        let range = d.id;
        match self.change(info, AdminOp::TransferLeader { range, to })? {
            AdminReply::LeaderTransferred { leader, .. } => Ok(leader),
            other => Err(unexpected("TransferLeader", &other)),
        }
    }

    /// Moves the replica of `range` on node `from` to node `to` (the epoch is read first):
    /// `to` joins as a learner, catches up by snapshot, becomes a voter while `from` leaves
    /// (a joint configuration), and `from` deletes its copy. Returns the final descriptor.
    pub fn move_replica(
        &mut self,
        range: RangeId,
        from: NodeId,
        to: NodeId,
    ) -> Result<RangeDescriptor, AdminError> {
        let info = self.describe(range)?;
        let mut info = self.fresh(info);
        // The node asked may lag behind the range (one whose replica was just moved away
        // keeps the descriptor it last saw, and names no other leader): a refusal carrying a
        // newer epoch sends the plan to that descriptor's voters, a few times.
        for _ in 0..STALE_DESCRIBE_RETRIES {
            match self.move_seen(info.clone(), from, to) {
                Err(AdminError::Changed { descriptor })
                    if descriptor.epoch > info.descriptor.epoch =>
                {
                    let voters: Vec<NodeId> = descriptor.voters().collect();
                    let newer = voters.into_iter().find_map(|v| {
                        self.describe_at(v, range)
                            .ok()
                            .filter(|i| i.descriptor.epoch >= descriptor.epoch)
                    });
                    match newer {
                        Some(i) => info = self.fresh(i),
                        None => return Err(AdminError::Changed { descriptor }),
                    }
                }
                other => return other,
            }
        }
        self.move_seen(info, from, to)
    }

    /// As [`AdminClient::move_replica`] from the range as the caller saw it. A move that went
    /// part of the way (its answer lost, or its leader changed) is resumed, as long as the
    /// range is on the way this plan leads to.
    pub fn move_seen(
        &mut self,
        mut info: RangeInfo,
        from: NodeId,
        to: NodeId,
    ) -> Result<RangeDescriptor, AdminError> {
        predict_move(&info.descriptor, from, to)?;
        let range = info.descriptor.id;
        let began = Instant::now();
        loop {
            let d = &info.descriptor;
            let op = AdminOp::MoveReplica {
                range,
                from,
                to,
                expected_epoch: d.epoch,
            };
            let changed = match self.change(info.clone(), op) {
                Ok(AdminReply::ReplicasChanged { descriptor }) => return Ok(descriptor),
                Ok(other) => return Err(unexpected("MoveReplica", &other)),
                Err(AdminError::Changed { descriptor }) => descriptor,
                Err(e) => return Err(e),
            };
            let role = |n: NodeId| changed.replica(n).map(|r| r.role);
            match (role(from), role(to)) {
                // Done (this move's answer was lost).
                (None, Some(ReplicaRole::Voter)) => return Ok(changed),
                // On the way: the learner added, or the joint configuration in force.
                (Some(ReplicaRole::Voter), Some(ReplicaRole::Learner))
                | (Some(ReplicaRole::Leaving), Some(ReplicaRole::Joining))
                    if began.elapsed() < self.total_timeout =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                    info = self.describe(range)?;
                    info = self.fresh(info);
                }
                _ => {
                    return Err(AdminError::Changed {
                        descriptor: changed,
                    })
                }
            }
        }
    }

    /// Merges `left` with the range after it, moving that range's leadership to the left's
    /// leader first when they differ.
    pub fn merge(&mut self, left: RangeId) -> Result<Merged, AdminError> {
        let info = self.describe(left)?;
        let info = self.fresh(info);
        self.merge_seen(info)
    }

    /// As [`AdminClient::merge`] from the left range as the caller saw it.
    pub fn merge_seen(&mut self, mut left: RangeInfo) -> Result<Merged, AdminError> {
        if left.leader.is_none() {
            // Only the leader is taken: the descriptor stays the one the caller saw.
            left.leader = self.settled(left.descriptor.id)?.leader;
        }
        let next = left.descriptor.end.clone();
        if next.is_empty() {
            plan_merge(&left, &left)?;
        }
        // The left's leader knows of the latest split best; a node's view may still lag
        // behind a split just made (the range holding `next` then starts before it).
        let asked = left.leader.unwrap_or(self.contact);
        let began = Instant::now();
        let right = loop {
            let right = self.describe_key_at(asked, &next)?;
            if right.descriptor.start == next || began.elapsed() >= self.settle_timeout {
                break right;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        plan_merge(&left, &right)?;
        // Leadership views (DescribeRange) lag behind transfers, but NotLeader hints do not:
        // the right range's leadership is always moved to the node believed to lead the left
        // one (a no-op answered at once when it already leads there), and when the merge is
        // refused by a left leader other than the one believed, once more to that one.
        let Some(mut to) = left.leader else {
            return Err(AdminError::Unavailable {
                attempts: 0,
                secs: 0.0,
                last: format!("range {} has no leader", left.descriptor.id),
            });
        };
        let right_id = right.descriptor.id;
        let mut right = right;
        let mut transferred = None;
        let id = left.descriptor.id;
        let epoch = left.descriptor.epoch;
        for _ in 0..2 {
            let from = right.leader;
            match self.change(
                right.clone(),
                AdminOp::TransferLeader {
                    range: right_id,
                    to,
                },
            )? {
                AdminReply::LeaderTransferred { .. } => {}
                other => return Err(unexpected("TransferLeader", &other)),
            }
            let moved = self.answered_by.is_some_and(|a| a != to);
            if moved {
                transferred = Some((right_id, self.answered_by.or(from), to));
            }
            right.leader = Some(to);
            let op = AdminOp::MergeRanges {
                left: id,
                expected_epoch: epoch,
            };
            let info = RangeInfo {
                leader: Some(to),
                ..left.clone()
            };
            match self.change(info, op) {
                Ok(AdminReply::Merged { merged }) => {
                    return Ok(Merged {
                        merged,
                        transferred,
                    })
                }
                Ok(other) => return Err(unexpected("MergeRanges", &other)),
                Err(AdminError::Refused(reason)) => match self.answered_by {
                    // The left range is led elsewhere than believed: co-locate there.
                    Some(leader) if leader != to => to = leader,
                    _ => return Err(AdminError::Refused(reason)),
                },
                Err(e) => return Err(e),
            }
        }
        Err(AdminError::Refused(format!(
            "refused: the leaders of ranges {id} and {right_id} keep moving; re-run"
        )))
    }

    /// The range `range` once it names a leader (bounded by the settle timeout).
    fn settled(&mut self, range: RangeId) -> Result<RangeInfo, AdminError> {
        let began = Instant::now();
        loop {
            let info = self.describe(range)?;
            if info.leader.is_some() {
                return Ok(info);
            }
            if began.elapsed() >= self.settle_timeout {
                return Err(AdminError::Unavailable {
                    attempts: 0,
                    secs: began.elapsed().as_secs_f64(),
                    last: format!("range {range} has no leader"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn unexpected(what: &str, reply: &AdminReply) -> AdminError {
    AdminError::Failed(format!(
        "{what} answered with {}: client and server releases may be incompatible",
        reply_kind(reply)
    ))
}

fn unavailable(attempts: u32, began: Instant, last: String) -> AdminError {
    AdminError::Unavailable {
        attempts,
        secs: began.elapsed().as_secs_f64(),
        last,
    }
}

fn give_up(attempts: u32, began: Instant, last: String, ambiguous: Option<String>) -> AdminError {
    match ambiguous {
        Some(last) => AdminError::Ambiguous { attempts, last },
        None => unavailable(attempts, began, last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{GroupId, RangeEpoch, ReplicaDescriptor, ReplicaRole, UnavailableReason};

    fn desc(id: u64, start: &[u8], end: &[u8], nodes: &[u64]) -> RangeDescriptor {
        RangeDescriptor {
            id: RangeId(id),
            group: GroupId(id),
            start: start.to_vec(),
            end: end.to_vec(),
            replicas: nodes
                .iter()
                .map(|n| ReplicaDescriptor {
                    node: NodeId(*n),
                    role: ReplicaRole::Voter,
                })
                .collect(),
            epoch: RangeEpoch(3),
        }
    }

    fn info(d: RangeDescriptor, leader: Option<u64>) -> RangeInfo {
        RangeInfo {
            descriptor: d,
            leader: leader.map(NodeId),
            commit: None,
        }
    }

    fn err(e: RequestError) -> Result<AdminResponse, AttemptError> {
        Ok(AdminResponse {
            request_id: RequestId(1),
            result: Err(e),
        })
    }

    fn all(_: NodeId) -> bool {
        true
    }

    #[test]
    fn a_hint_to_another_known_node_redirects_at_once() {
        let e = || RequestError::NotLeader {
            range: RangeId(2),
            leader_hint: Some(NodeId(5)),
        };
        assert_eq!(decide(err(e()), NodeId(4), all), Step::Redirect(NodeId(5)));
        // A hint naming the node asked, or a node without an address: refresh.
        assert_eq!(decide(err(e()), NodeId(5), all), Step::Refresh);
        assert_eq!(
            decide(err(e()), NodeId(4), |n| n != NodeId(5)),
            Step::Refresh
        );
        let no_hint = RequestError::NotLeader {
            range: RangeId(2),
            leader_hint: None,
        };
        assert_eq!(decide(err(no_hint), NodeId(4), all), Step::Refresh);
        let unknown = RequestError::UnknownRange { range: RangeId(2) };
        assert_eq!(decide(err(unknown), NodeId(4), all), Step::Refresh);
    }

    #[test]
    fn a_stale_epoch_and_refusals_fail_without_retry() {
        let d = desc(3, b"a", b"", &[1]);
        match decide(
            err(RequestError::RangeMoved {
                descriptor: RangeDescriptor {
                    epoch: RangeEpoch(5),
                    ..d
                },
            }),
            NodeId(1),
            all,
        ) {
            Step::Fail(e @ AdminError::Changed { .. }) => {
                assert_eq!(e.to_string(), "range 3 changed (epoch 5 now): re-run");
                assert!(e.is_refusal());
            }
            other => panic!("{other:?}"),
        }
        for e in [
            RequestError::Refused {
                reason: "right range 4 is led by node 2".into(),
            },
            RequestError::ChangeInProgress { range: RangeId(3) },
            RequestError::InvalidRequest {
                reason: InvalidReason::BadSplitKey,
            },
        ] {
            match decide(err(e), NodeId(1), all) {
                Step::Fail(e) => {
                    assert!(e.is_refusal(), "{e:?}");
                    assert_eq!(e.to_string().lines().count(), 1);
                    assert!(e.to_string().starts_with("refused: "), "{e}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn transient_errors_retry_and_lost_answers_are_ambiguous() {
        let unavailable = RequestError::Unavailable {
            reason: UnavailableReason::NoLeader,
        };
        assert!(matches!(
            decide(err(unavailable), NodeId(1), all),
            Step::Retry {
                ambiguous: false,
                ..
            }
        ));
        assert!(matches!(
            decide(Err(AttemptError::NotSent("refused".into())), NodeId(1), all),
            Step::Retry {
                ambiguous: false,
                ..
            }
        ));
        assert!(matches!(
            decide(Err(AttemptError::Lost("timeout".into())), NodeId(1), all),
            Step::Retry {
                ambiguous: true,
                ..
            }
        ));
    }

    #[test]
    fn changes_go_to_the_leader_on_the_groups_shard() {
        let d = desc(7, b"a", b"m", &[1, 2, 3]);
        let shard = shard_for_group(GroupId(7), 4);
        assert_eq!(
            leader_target(&info(d.clone(), Some(2)), 4, all),
            Some((NodeId(2), shard))
        );
        // No leader known: the first voter; a leader without an address: likewise.
        assert_eq!(
            leader_target(&info(d.clone(), None), 4, all),
            Some((NodeId(1), shard))
        );
        assert_eq!(
            leader_target(&info(d.clone(), Some(2)), 4, |n| n != NodeId(2)),
            Some((NodeId(1), shard))
        );
        assert_eq!(leader_target(&info(d, None), 4, |_| false), None);
    }

    #[test]
    fn split_prediction_and_bad_keys() {
        let d = desc(3, b"b", b"", &[1, 2]);
        let (l, r) = predict_split(&d, b"m").expect("inside");
        assert_eq!(
            (l.id, l.start.as_slice(), l.end.as_slice()),
            (RangeId(3), &b"b"[..], &b"m"[..])
        );
        assert_eq!(
            (r.id, r.start.as_slice(), r.end.as_slice()),
            (RangeId(0), &b"m"[..], &b""[..])
        );
        assert_eq!(r.replicas, d.replicas);
        for bad in [&b"b"[..], b"a", b""] {
            assert!(predict_split(&d, bad).is_err(), "{bad:?}");
        }
        let bounded = desc(3, b"b", b"m", &[1]);
        assert!(predict_split(&bounded, b"m").is_err());
        assert!(predict_split(&bounded, b"z").is_err());
    }

    #[test]
    fn merge_moves_the_right_leadership_only_when_leaders_differ() {
        let left = info(desc(3, b"b", b"m", &[1, 2]), Some(1));
        let right = info(desc(4, b"m", b"", &[1, 2]), Some(2));
        let plan = plan_merge(&left, &right).expect("adjacent");
        assert_eq!(plan.transfer, Some((RangeId(4), NodeId(1))));
        assert_eq!(plan.merged.end, b"");
        assert_eq!(plan.merged.id, RangeId(3));
        let same = info(desc(4, b"m", b"", &[1, 2]), Some(1));
        assert_eq!(plan_merge(&left, &same).expect("adjacent").transfer, None);
        let apart = info(desc(5, b"n", b"", &[1, 2]), Some(1));
        assert!(plan_merge(&left, &apart).is_err());
        let last = info(desc(3, b"b", b"", &[1]), Some(1));
        assert!(plan_merge(&last, &same).is_err());
    }
}
