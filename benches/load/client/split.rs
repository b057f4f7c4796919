//! A room spread over several servers (the cluster workloads, `crate::cluster`):
//! connection `i` goes to server `i % N` (round-robin), and each chat delivery is
//! counted by the receiver's server and timed apart for receivers on the sender's
//! server and on another. Every receiver also keeps a hash chain of the messages it
//! got, in the order it got them, so that the end of a round can tell whether all
//! members saw one sequence (the per-sender checks of [`checks`](crate::checks)
//! cannot: they see each sender's stream alone).

use std::net::SocketAddr;

use super::{Client, ConnState};

/// Where each connection goes, and what was delivered where.
pub struct NodeSplit {
    addrs: Vec<SocketAddr>,
    /// Deliveries while measuring, by the receiver's server.
    pub delivered: Vec<u64>,
    /// Latencies (ns, saturating) while measuring, of deliveries to a receiver on
    /// the sender's server and on another one.
    pub same_node_ns: Vec<u32>,
    pub other_node_ns: Vec<u32>,
    /// Per receiver, over the whole round: messages received and the hash chain of
    /// their (sender, sequence number), in order of arrival.
    order: Vec<(u64, u64)>,
}

/// The cross-member order check at the end of a round.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrderCheck {
    /// Live members compared.
    pub members: usize,
    /// Members whose sequence (count and hash chain) differs from the first live
    /// member's.
    pub differing: usize,
}

impl NodeSplit {
    /// Connections spread over `addrs`, for a room of `members`.
    pub fn new(addrs: Vec<SocketAddr>, members: usize) -> NodeSplit {
        assert!(!addrs.is_empty(), "a split needs at least one server");
        NodeSplit {
            delivered: vec![0; addrs.len()],
            addrs,
            same_node_ns: Vec::new(),
            other_node_ns: Vec::new(),
            order: vec![(0, 0); members],
        }
    }

    /// The server (index) connection `conn` goes to.
    pub fn node_of(&self, conn: usize) -> usize {
        conn % self.addrs.len()
    }

    fn addr_of(&self, conn: usize) -> SocketAddr {
        self.addrs[self.node_of(conn)]
    }

    /// Forgets what was measured (at the start of the measured window).
    pub fn clear_measured(&mut self) {
        self.delivered.iter_mut().for_each(|d| *d = 0);
        self.same_node_ns.clear();
        self.other_node_ns.clear();
    }
}

/// One step of a receiver's hash chain: order-sensitive, so two receivers that got
/// the same messages in another order end with different values.
fn chain(hash: u64, sender: usize, seq: u32) -> u64 {
    let item = ((sender as u64) << 32) | seq as u64;
    (hash.rotate_left(23) ^ item).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Client {
    /// The address connection `id` connects to: its server in a split room, else
    /// the target's.
    pub(super) fn addr_for(&self, id: usize) -> SocketAddr {
        match &self.split {
            Some(split) => split.addr_of(id),
            None => self.target.addr,
        }
    }

    /// A chat delivery to `receiver` of message `seq` from `sender` (already
    /// checked in sequence), sent at `sent_ns` and read at `now`.
    pub(super) fn split_delivery(
        &mut self,
        receiver: usize,
        sender: usize,
        seq: u32,
        sent_ns: u64,
        now: u64,
    ) {
        let measuring = self.measuring;
        let Some(split) = &mut self.split else {
            return;
        };
        if let Some(o) = split.order.get_mut(receiver) {
            *o = (o.0 + 1, chain(o.1, sender, seq));
        }
        if measuring {
            let (r, s) = (split.node_of(receiver), split.node_of(sender));
            split.delivered[r] += 1;
            let latency = now.saturating_sub(sent_ns).min(u32::MAX as u64) as u32;
            if r == s {
                split.same_node_ns.push(latency);
            } else {
                split.other_node_ns.push(latency);
            }
        }
    }

    /// Whether every live member got the same messages in the same order (after
    /// the drain): each one's count and hash chain against the first live member's.
    pub fn order_check(&self) -> OrderCheck {
        let Some(split) = &self.split else {
            return OrderCheck::default();
        };
        let mut live = self
            .conns
            .iter()
            .zip(&split.order)
            .filter(|(c, _)| c.state == ConnState::Open)
            .map(|(_, o)| *o);
        let Some(first) = live.next() else {
            return OrderCheck::default();
        };
        let mut check = OrderCheck {
            members: 1,
            differing: 0,
        };
        for o in live {
            check.members += 1;
            if o != first {
                check.differing += 1;
            }
        }
        check
    }
}

/// The hash chain's checks, run with the payload format's (see `payload::self_test`).
pub fn self_test() {
    let run = |items: &[(usize, u32)]| items.iter().fold(0, |h, &(s, q)| chain(h, s, q));
    let a = run(&[(0, 0), (1, 0), (0, 1)]);
    assert_eq!(a, run(&[(0, 0), (1, 0), (0, 1)]));
    assert_ne!(a, run(&[(1, 0), (0, 0), (0, 1)]), "another order");
    assert_ne!(a, run(&[(0, 0), (1, 0), (0, 1), (0, 1)]), "a duplicate");
    let split = NodeSplit::new(
        vec![([127, 0, 0, 1], 1).into(), ([127, 0, 0, 1], 2).into()],
        4,
    );
    assert_eq!(
        (0..4).map(|c| split.node_of(c)).collect::<Vec<_>>(),
        [0, 1, 0, 1]
    );
}
