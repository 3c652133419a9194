//! `SimNet`: the simulated network between the nodes of one cluster. It owns every
//! message in flight, one bounded queue per directed link, and decides from its own seeded
//! stream whether a message is lost, duplicated or delayed (delays reorder messages unless
//! the link is FIFO). Partitions are sets of blocked directed links: symmetric splits,
//! one-way cuts and bridges. It never looks inside a message.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use super::clock::SimTime;
use super::rng::SimRng;

/// How unreliable the network is. All probabilities are per message.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Probability that a sent message is silently dropped.
    pub loss: f64,
    /// Probability that a sent message is delivered twice (independent delays).
    pub duplicate: f64,
    /// Smallest delivery delay, in ticks (0: delivered in the same tick's delivery round).
    pub delay_ticks_min: u64,
    /// Largest delivery delay, in ticks.
    pub delay_ticks_max: u64,
    /// Whether a link may deliver messages out of send order.
    pub reorder: bool,
    /// Messages a link holds before it drops new ones (a full socket buffer).
    pub link_capacity: usize,
}

impl NetConfig {
    /// A perfect network: no loss, no duplication, FIFO, delivery after one tick.
    #[must_use]
    pub fn reliable() -> NetConfig {
        NetConfig {
            loss: 0.0,
            duplicate: 0.0,
            delay_ticks_min: 0,
            delay_ticks_max: 1,
            reorder: false,
            link_capacity: 4096,
        }
    }

    /// A hostile network: loss, duplication, long reordering delays.
    #[must_use]
    pub fn lossy() -> NetConfig {
        NetConfig {
            loss: 0.05,
            duplicate: 0.03,
            delay_ticks_min: 0,
            delay_ticks_max: 4,
            reorder: true,
            link_capacity: 1024,
        }
    }
}

/// What happened to messages so far (for reports and for tests of the network itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to `send`.
    pub sent: u64,
    /// Messages handed back by `deliver_due`.
    pub delivered: u64,
    /// Dropped at random.
    pub lost: u64,
    /// Extra copies created.
    pub duplicated: u64,
    /// Dropped because the link was blocked by a partition (at send or at delivery).
    pub partitioned: u64,
    /// Dropped because the link queue was full.
    pub overflowed: u64,
}

#[derive(Debug)]
struct InFlight<M> {
    deliver_at: SimTime,
    seq: u64,
    message: M,
}

/// A message ready for delivery.
#[derive(Debug)]
pub struct Delivery<Id, M> {
    /// Sender.
    pub from: Id,
    /// Receiver.
    pub to: Id,
    /// The payload, untouched.
    pub message: M,
}

/// The simulated network. `Id` names nodes, `M` is the message type.
#[derive(Debug)]
pub struct SimNet<Id: Ord + Copy + Debug, M: Clone> {
    config: NetConfig,
    rng: SimRng,
    /// Per directed link, messages in flight, kept sorted by (deliver_at, seq).
    links: BTreeMap<(Id, Id), Vec<InFlight<M>>>,
    /// Directed links that currently drop everything.
    blocked: BTreeSet<(Id, Id)>,
    next_seq: u64,
    stats: NetStats,
    /// Which dropped messages the sender must hear about (a snapshot's failure is
    /// reported to the Raft core), and those dropped so far.
    notify_drop: Option<fn(&M) -> bool>,
    dropped: Vec<Delivery<Id, M>>,
}

impl<Id: Ord + Copy + Debug, M: Clone> SimNet<Id, M> {
    /// An empty network drawing its faults from `rng`.
    #[must_use]
    pub fn new(config: NetConfig, rng: SimRng) -> Self {
        SimNet {
            config,
            rng,
            links: BTreeMap::new(),
            blocked: BTreeSet::new(),
            next_seq: 0,
            stats: NetStats::default(),
            notify_drop: None,
            dropped: Vec::new(),
        }
    }

    /// Keeps dropped messages for which `wanted` is true, for `take_dropped`.
    pub fn notify_drops(&mut self, wanted: fn(&M) -> bool) {
        self.notify_drop = Some(wanted);
    }

    /// Dropped messages selected by `notify_drops`, since the last call.
    pub fn take_dropped(&mut self) -> Vec<Delivery<Id, M>> {
        std::mem::take(&mut self.dropped)
    }

    fn note_drop(&mut self, from: Id, to: Id, message: M) {
        if self.notify_drop.is_some_and(|wanted| wanted(&message)) {
            self.dropped.push(Delivery { from, to, message });
        }
    }

    /// The current fault settings.
    #[must_use]
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Replaces the fault settings (messages in flight keep their delivery times).
    pub fn set_config(&mut self, config: NetConfig) {
        self.config = config;
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Sends one message at time `now`; it may be lost, duplicated or delayed.
    pub fn send(&mut self, now: SimTime, from: Id, to: Id, message: M) {
        self.stats.sent += 1;
        if self.blocked.contains(&(from, to)) {
            self.stats.partitioned += 1;
            self.note_drop(from, to, message);
            return;
        }
        if self.rng.chance(self.config.loss) {
            self.stats.lost += 1;
            self.note_drop(from, to, message);
            return;
        }
        if self.rng.chance(self.config.duplicate) {
            self.stats.duplicated += 1;
            self.enqueue(now, from, to, message.clone());
        }
        self.enqueue(now, from, to, message);
    }

    fn enqueue(&mut self, now: SimTime, from: Id, to: Id, message: M) {
        let delay = self
            .rng
            .between(self.config.delay_ticks_min, self.config.delay_ticks_max);
        let queue = self.links.entry((from, to)).or_default();
        if queue.len() >= self.config.link_capacity {
            self.stats.overflowed += 1;
            self.note_drop(from, to, message);
            return;
        }
        let mut deliver_at = now.after(delay);
        if !self.config.reorder {
            // FIFO link: never overtake the last message queued on it.
            if let Some(last) = queue.last() {
                deliver_at = deliver_at.max(last.deliver_at);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let at = queue.partition_point(|m| (m.deliver_at, m.seq) <= (deliver_at, seq));
        queue.insert(
            at,
            InFlight {
                deliver_at,
                seq,
                message,
            },
        );
    }

    /// Removes and returns every message due at or before `now`, in (time, send order);
    /// messages on links blocked by now are dropped instead.
    pub fn deliver_due(&mut self, now: SimTime) -> Vec<Delivery<Id, M>> {
        let mut due: Vec<(SimTime, u64, Id, Id, M)> = Vec::new();
        let mut cut: Vec<(Id, Id, M)> = Vec::new();
        for (&(from, to), queue) in &mut self.links {
            let n = queue.partition_point(|m| m.deliver_at <= now);
            for m in queue.drain(..n) {
                if self.blocked.contains(&(from, to)) {
                    self.stats.partitioned += 1;
                    cut.push((from, to, m.message));
                } else {
                    due.push((m.deliver_at, m.seq, from, to, m.message));
                }
            }
        }
        for (from, to, message) in cut {
            self.note_drop(from, to, message);
        }
        due.sort_by_key(|d| (d.0, d.1));
        self.stats.delivered += due.len() as u64;
        due.into_iter()
            .map(|(_, _, from, to, message)| Delivery { from, to, message })
            .collect()
    }

    /// Drops everything in flight to or from `node` (its sockets died with it).
    pub fn drop_node_traffic(&mut self, node: Id) {
        let mut gone = Vec::new();
        for (&(from, to), queue) in &mut self.links {
            if from == node || to == node {
                gone.extend(queue.drain(..).map(|m| (from, to, m.message)));
            }
        }
        for (from, to, message) in gone {
            self.note_drop(from, to, message);
        }
    }

    /// Messages currently in flight.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.links.values().map(Vec::len).sum()
    }

    /// Blocks the directed link `from -> to` only (a one-way partition).
    pub fn block_one_way(&mut self, from: Id, to: Id) {
        self.blocked.insert((from, to));
    }

    /// Splits the nodes into two sides that cannot talk to each other in either direction.
    pub fn partition_symmetric(&mut self, side_a: &[Id], side_b: &[Id]) {
        for &a in side_a {
            for &b in side_b {
                self.blocked.insert((a, b));
                self.blocked.insert((b, a));
            }
        }
    }

    /// Two sides that cannot talk to each other, except through `bridge`, which reaches
    /// both (the partial partition that defeats naive leader election).
    pub fn partition_bridge(&mut self, side_a: &[Id], side_b: &[Id], bridge: Id) {
        let a: Vec<Id> = side_a.iter().copied().filter(|&n| n != bridge).collect();
        let b: Vec<Id> = side_b.iter().copied().filter(|&n| n != bridge).collect();
        self.partition_symmetric(&a, &b);
    }

    /// Cuts `node` off from every node in `others`, both ways.
    pub fn isolate(&mut self, node: Id, others: &[Id]) {
        self.partition_symmetric(&[node], others);
    }

    /// Whether `from -> to` is currently blocked.
    #[must_use]
    pub fn is_blocked(&self, from: Id, to: Id) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Whether any partition is in force.
    #[must_use]
    pub fn is_partitioned(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_all(net: &mut SimNet<u8, u32>, until: u64) -> Vec<(u8, u8, u32)> {
        let mut out = Vec::new();
        for t in 0..=until {
            for d in net.deliver_due(SimTime(t)) {
                out.push((d.from, d.to, d.message));
            }
        }
        out
    }

    #[test]
    fn reliable_fifo_delivers_everything_in_order() {
        let mut net = SimNet::new(NetConfig::reliable(), SimRng::new(1));
        for i in 0..50 {
            net.send(SimTime(i / 10), 1, 2, i as u32);
        }
        let got: Vec<u32> = drain_all(&mut net, 20).into_iter().map(|d| d.2).collect();
        assert_eq!(got, (0..50).collect::<Vec<u32>>());
        assert_eq!(net.in_flight(), 0);
    }

    #[test]
    fn lossy_network_loses_duplicates_and_reorders() {
        let mut config = NetConfig::lossy();
        config.loss = 0.2;
        config.duplicate = 0.2;
        let mut net = SimNet::new(config, SimRng::new(9));
        for i in 0..500 {
            net.send(SimTime(0), 1, 2, i);
        }
        let got: Vec<u32> = drain_all(&mut net, 10).into_iter().map(|d| d.2).collect();
        let stats = net.stats();
        assert!(stats.lost > 0 && stats.duplicated > 0);
        assert_eq!(got.len() as u64, 500 - stats.lost + stats.duplicated);
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "expected some reordering"
        );
    }

    #[test]
    fn partitions_block_the_right_links() {
        let mut net: SimNet<u8, u32> = SimNet::new(NetConfig::reliable(), SimRng::new(2));
        net.partition_bridge(&[1, 2], &[3, 4], 2);
        assert!(net.is_blocked(1, 3) && net.is_blocked(4, 1));
        assert!(!net.is_blocked(2, 3) && !net.is_blocked(3, 2) && !net.is_blocked(1, 2));
        net.heal();
        net.block_one_way(1, 2);
        assert!(net.is_blocked(1, 2) && !net.is_blocked(2, 1));
        net.send(SimTime(0), 1, 2, 7);
        net.send(SimTime(0), 2, 1, 8);
        assert_eq!(drain_all(&mut net, 3), vec![(2, 1, 8)]);
        // A message already in flight when the cut appears is dropped at delivery.
        net.heal();
        net.send(SimTime(4), 3, 4, 9);
        net.isolate(4, &[3]);
        assert!(drain_all(&mut net, 8).is_empty());
        assert_eq!(net.stats().partitioned, 2);
    }
}
