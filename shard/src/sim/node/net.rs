//! The whole-node simulator's network: encoded `RaftBatch` frames between nodes, with
//! seeded delay, loss, duplication, rare reordering and partitions. Frames keep their wire
//! bytes (an `AlignedVec` holding one frame), so the receiver decodes exactly what the real
//! transport would hand it.

use std::collections::BTreeMap;

use rkyv::util::AlignedVec;

use crate::sim::rng::SimRng;

/// How the network misbehaves (probabilities per frame).
#[derive(Debug, Clone, Copy)]
pub struct NetFaults {
    pub drop: f64,
    pub duplicate: f64,
    /// A frame that ignores the link's FIFO order (real TCP keeps order within a connection;
    /// a reconnect can reorder).
    pub reorder: f64,
    pub min_delay: u64,
    pub max_delay: u64,
}

impl NetFaults {
    /// A reliable, FIFO network with a one-step delay.
    #[must_use]
    pub fn calm() -> NetFaults {
        NetFaults {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            min_delay: 1,
            max_delay: 1,
        }
    }
}

/// One frame on the wire.
#[derive(Debug)]
pub struct InFlight {
    pub from: u64,
    pub to: u64,
    pub frame: AlignedVec,
}

/// Frames in flight, ordered by delivery time then send order (deterministic).
#[derive(Debug, Default)]
pub struct SimNet {
    queue: BTreeMap<(u64, u64), InFlight>,
    seq: u64,
    /// The last delivery time per link, to keep links FIFO.
    last_on_link: BTreeMap<(u64, u64), u64>,
    /// Nodes cut off from every other node.
    isolated: Vec<u64>,
    pub sent: u64,
    pub dropped: u64,
    pub delivered: u64,
}

impl SimNet {
    #[must_use]
    pub fn new() -> SimNet {
        SimNet::default()
    }

    /// Whether `a` and `b` can talk now.
    #[must_use]
    pub fn connected(&self, a: u64, b: u64) -> bool {
        !self.isolated.contains(&a) && !self.isolated.contains(&b)
    }

    pub fn isolate(&mut self, node: u64) {
        if !self.isolated.contains(&node) {
            self.isolated.push(node);
        }
    }

    pub fn heal(&mut self) {
        self.isolated.clear();
    }

    #[must_use]
    pub fn isolated(&self) -> &[u64] {
        &self.isolated
    }

    /// Puts a frame on the wire at `now`, subject to `faults`.
    pub fn send(
        &mut self,
        now: u64,
        from: u64,
        to: u64,
        frame: AlignedVec,
        faults: &NetFaults,
        rng: &mut SimRng,
    ) {
        self.sent += 1;
        if !self.connected(from, to) || rng.chance(faults.drop) {
            self.dropped += 1;
            return;
        }
        let copies = if rng.chance(faults.duplicate) { 2 } else { 1 };
        for c in 0..copies {
            let delay = rng.between(faults.min_delay.max(1), faults.max_delay.max(1));
            let mut at = now + delay;
            let reorder = c > 0 || rng.chance(faults.reorder);
            if !reorder {
                let last = self.last_on_link.entry((from, to)).or_insert(0);
                at = at.max(*last);
                *last = at;
            }
            let mut copy = AlignedVec::with_capacity(frame.len());
            copy.extend_from_slice(&frame);
            self.seq += 1;
            self.queue.insert(
                (at, self.seq),
                InFlight {
                    from,
                    to,
                    frame: copy,
                },
            );
        }
    }

    /// Takes every frame due at or before `now`; frames across a partition are lost.
    pub fn due(&mut self, now: u64) -> Vec<InFlight> {
        let mut out = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let f = entry.remove();
            if self.connected(f.from, f.to) {
                self.delivered += 1;
                out.push(f);
            } else {
                self.dropped += 1;
            }
        }
        out
    }

    /// Drops every frame to or from `node` (its connections broke: a crash).
    pub fn cut(&mut self, node: u64) {
        let before = self.queue.len();
        self.queue.retain(|_, f| f.from != node && f.to != node);
        self.dropped += (before - self.queue.len()) as u64;
        self.last_on_link
            .retain(|(a, b), _| *a != node && *b != node);
    }

    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}
