//! The reliable, ordered stream of sync datagrams, as plain state machines
//! (no sockets, no clock of their own: the sync thread feeds them), in the
//! manner of conntrackd's FTFW mode: sequence numbers, cumulative ACKs,
//! NACKs of a gap, resend on timeout, and a bulk resync as the way out of
//! anything that cannot be repaired.

use super::wire::Kind;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Timed-out items resent per [`Outgoing::due`] call at most.
pub const RESEND_BURST: usize = 32;

/// A sequenced datagram's content (header fields besides epoch and seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub kind: Kind,
    pub a: u64,
    pub body: Vec<u8>,
}

#[derive(Debug)]
struct Sent {
    seq: u64,
    item: Item,
    last: Instant,
    tries: u32,
}

/// What [`Outgoing::due`] wants on the wire.
#[derive(Debug, PartialEq, Eq)]
pub struct Send<'a> {
    pub seq: u64,
    pub item: &'a Item,
    /// A resend (counted as such).
    pub resend: bool,
}

/// The sending half: items queue until the window has room, then get the
/// next sequence number and stay until acknowledged, resent on a NACK or
/// when unacknowledged for `rto`.
#[derive(Debug)]
pub struct Outgoing {
    pub epoch: u64,
    next_seq: u64,
    queue: VecDeque<Item>,
    queued_bytes: usize,
    unacked: VecDeque<Sent>,
    window: usize,
    max_queued_bytes: usize,
    rto: Duration,
    /// Highest seq acknowledged.
    pub acked: u64,
    nacked: Vec<u64>,
}

impl Outgoing {
    pub fn new(epoch: u64, window: usize, max_queued_bytes: usize, rto: Duration) -> Outgoing {
        Outgoing {
            epoch,
            next_seq: 1,
            queue: VecDeque::new(),
            queued_bytes: 0,
            unacked: VecDeque::new(),
            window: window.max(1),
            max_queued_bytes,
            rto,
            acked: 0,
            nacked: Vec::new(),
        }
    }

    /// Queues `item`; false (nothing queued) if the queue is over its byte
    /// limit.
    pub fn push(&mut self, item: Item) -> bool {
        if self.queued_bytes + item.body.len() > self.max_queued_bytes {
            return false;
        }
        self.queued_bytes += item.body.len();
        self.queue.push_back(item);
        true
    }

    /// The sequence number the next item will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Items queued, not yet sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Items sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.unacked.len()
    }

    /// How long the oldest unacknowledged item has waited since it was
    /// first sent... as far as its last send.
    pub fn oldest_unacked(&self, now: Instant) -> Duration {
        self.unacked
            .front()
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s.last))
    }

    /// Everything up to `seq` arrived.
    pub fn ack(&mut self, seq: u64) {
        while self.unacked.front().is_some_and(|s| s.seq <= seq) {
            self.unacked.pop_front();
        }
        self.acked = self.acked.max(seq.min(self.next_seq - 1));
    }

    /// The peer misses `count` items from `from` on: resend those still held
    /// on the next [`due`](Self::due). Returns how many are no longer held
    /// (acknowledged before, or never sent: a confused or hostile peer).
    pub fn nack(&mut self, from: u64, count: u32) -> u64 {
        let to = from.saturating_add(count as u64);
        let mut unknown = 0;
        for seq in from..to.min(from + 4096) {
            if self.unacked.iter().any(|s| s.seq == seq) {
                self.nacked.push(seq);
            } else {
                unknown += 1;
            }
        }
        unknown
    }

    /// Calls `send` for what is due now: NACKed items, then the oldest
    /// items unacknowledged for their timeout (`rto`, doubled with each
    /// resend up to 32 times it; at most [`RESEND_BURST`] of them per call:
    /// a late ACK must not turn the whole window into resends), then new
    /// items while the window has room.
    pub fn due(&mut self, now: Instant, mut send: impl FnMut(Send<'_>)) {
        let nacked = std::mem::take(&mut self.nacked);
        let mut timed_out = 0;
        for s in self.unacked.iter_mut() {
            let wanted = nacked.contains(&s.seq);
            let timeout = self.rto * (1u32 << s.tries.min(5));
            let late = now.saturating_duration_since(s.last) >= timeout;
            if late && !wanted {
                if timed_out >= RESEND_BURST {
                    continue;
                }
                timed_out += 1;
            }
            if wanted || late {
                s.last = now;
                s.tries += 1;
                send(Send {
                    seq: s.seq,
                    item: &s.item,
                    resend: true,
                });
            }
        }
        while self.unacked.len() < self.window {
            let Some(item) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= item.body.len();
            let seq = self.next_seq;
            self.next_seq += 1;
            self.unacked.push_back(Sent {
                seq,
                item,
                last: now,
                tries: 0,
            });
            let s = self.unacked.back().expect("just pushed");
            send(Send {
                seq,
                item: &s.item,
                resend: false,
            });
        }
    }

    /// Drops everything and starts a new stream under `epoch` (the peer,
    /// seeing a new epoch, resynchronises). Returns the items dropped.
    pub fn reset(&mut self, epoch: u64) -> usize {
        let n = self.queue.len() + self.unacked.len();
        *self = Outgoing::new(epoch, self.window, self.max_queued_bytes, self.rto);
        n
    }
}

/// What the receiving half made of a sequenced datagram.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Items now in order, to apply in this order.
    pub ready: Vec<Item>,
    /// The datagram was from an older epoch: replayed or stale, dropped.
    pub stale_epoch: bool,
    /// A new stream began (the peer restarted or reset its stream).
    pub new_epoch: bool,
    /// Already applied or already held: dropped.
    pub duplicate: bool,
    /// A gap to NACK: (first missing seq, how many).
    pub gap: Option<(u64, u32)>,
    /// The reorder buffer was full: dropped (a later NACK fetches it).
    pub overflow: bool,
}

/// The receiving half: applies in sequence order, holds what arrives
/// early, names the gaps.
#[derive(Debug)]
pub struct Incoming {
    pub epoch: Option<u64>,
    /// The next seq to apply.
    pub expected: u64,
    held: BTreeMap<u64, Item>,
    max_held: usize,
    /// Since when a gap has been open (for giving up on it).
    gap_since: Option<Instant>,
}

impl Incoming {
    pub fn new(max_held: usize) -> Incoming {
        Incoming {
            epoch: None,
            expected: 1,
            held: BTreeMap::new(),
            max_held,
            gap_since: None,
        }
    }

    /// Checks `epoch` against the stream's; true if the datagram belongs
    /// to the current (possibly just begun) stream. `first_seq` is where a
    /// stream seen for the first time starts.
    fn epoch_ok(&mut self, epoch: u64, first_seq: u64, r: &mut Received) -> bool {
        match self.epoch {
            Some(e) if epoch < e => {
                r.stale_epoch = true;
                false
            }
            Some(e) if epoch == e => true,
            known => {
                // A stream that began while we listened starts at 1; the
                // first stream we ever see, wherever it is (we resync
                // anyway).
                self.expected = if known.is_some() { 1 } else { first_seq };
                self.epoch = Some(epoch);
                self.held.clear();
                self.gap_since = None;
                r.new_epoch = true;
                true
            }
        }
    }

    /// A sequenced datagram arrived at `now`.
    pub fn on_item(&mut self, epoch: u64, seq: u64, item: Item, now: Instant) -> Received {
        let mut r = Received::default();
        if !self.epoch_ok(epoch, seq, &mut r) {
            return r;
        }
        if seq < self.expected || self.held.contains_key(&seq) {
            r.duplicate = true;
            return r;
        }
        if seq > self.expected {
            if self.held.len() >= self.max_held {
                r.overflow = true;
            } else {
                self.held.insert(seq, item);
            }
            r.gap = self.gap();
            self.gap_since.get_or_insert(now);
            return r;
        }
        r.ready.push(item);
        self.expected += 1;
        while let Some(i) = self.held.remove(&self.expected) {
            r.ready.push(i);
            self.expected += 1;
        }
        self.gap_since = if self.held.is_empty() {
            None
        } else {
            Some(now)
        };
        r.gap = self.gap();
        r
    }

    /// A heartbeat says the peer's next seq is `next_seq`: anything
    /// before it that we lack is a gap (the tail of a burst was lost).
    pub fn on_alive(&mut self, epoch: u64, next_seq: u64, now: Instant) -> Received {
        let mut r = Received::default();
        if !self.epoch_ok(epoch, next_seq, &mut r) {
            return r;
        }
        if next_seq > self.expected && self.held.is_empty() {
            r.gap = Some((
                self.expected,
                (next_seq - self.expected).min(u32::MAX as u64) as u32,
            ));
            self.gap_since.get_or_insert(now);
        } else if !self.held.is_empty() {
            r.gap = self.gap();
        }
        r
    }

    /// The first gap: from `expected` to the first held item.
    fn gap(&self) -> Option<(u64, u32)> {
        let first = *self.held.keys().next()?;
        Some((
            self.expected,
            (first - self.expected).min(u32::MAX as u64) as u32,
        ))
    }

    /// True if a gap has been open for `limit` (NACKs not answered: the
    /// sender no longer holds the items).
    pub fn gap_stuck(&self, now: Instant, limit: Duration) -> bool {
        self.gap_since
            .is_some_and(|t| now.saturating_duration_since(t) >= limit)
    }

    /// Gives up on the open gap: skips to the first held item and returns
    /// what is then in order (the caller resynchronises in bulk).
    pub fn skip_gap(&mut self) -> Vec<Item> {
        let mut out = Vec::new();
        if let Some(&first) = self.held.keys().next() {
            self.expected = first;
            while let Some(i) = self.held.remove(&self.expected) {
                out.push(i);
                self.expected += 1;
            }
        }
        self.gap_since = None;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u8) -> Item {
        Item {
            kind: Kind::Data,
            a: 0,
            body: vec![n],
        }
    }

    /// Sends everything due through a lossy "link": `drop(seq, resend)`
    /// decides; returns what arrived as (seq, item).
    fn pump(
        o: &mut Outgoing,
        now: Instant,
        mut drop: impl FnMut(u64, bool) -> bool,
    ) -> Vec<(u64, Item)> {
        let mut got = Vec::new();
        o.due(now, |s| {
            if !drop(s.seq, s.resend) {
                got.push((s.seq, s.item.clone()));
            }
        });
        got
    }

    #[test]
    fn in_order_delivery_is_applied_and_acked() {
        let t = Instant::now();
        let mut o = Outgoing::new(5, 8, 1 << 20, Duration::from_millis(50));
        let mut i = Incoming::new(64);
        for n in 0..3 {
            assert!(o.push(item(n)));
        }
        let mut applied = Vec::new();
        for (seq, it) in pump(&mut o, t, |_, _| false) {
            let r = i.on_item(5, seq, it, t);
            assert_eq!(r.gap, None);
            applied.extend(r.ready);
        }
        assert_eq!(applied, vec![item(0), item(1), item(2)]);
        assert_eq!(o.in_flight(), 3);
        o.ack(i.expected - 1);
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.acked, 3);
    }

    #[test]
    fn a_lost_datagram_is_nacked_resent_and_order_kept() {
        let t = Instant::now();
        let mut o = Outgoing::new(1, 16, 1 << 20, Duration::from_secs(10));
        let mut i = Incoming::new(64);
        for n in 0..5 {
            o.push(item(n));
        }
        let mut applied = Vec::new();
        let mut gap = None;
        for (seq, it) in pump(&mut o, t, |seq, _| seq == 2) {
            let r = i.on_item(1, seq, it, t);
            applied.extend(r.ready);
            gap = gap.or(r.gap);
        }
        assert_eq!(applied, vec![item(0)], "1 applied, 3..5 held");
        assert_eq!(gap, Some((2, 1)));
        assert_eq!(o.nack(2, 1), 0);
        for (seq, it) in pump(&mut o, t, |_, _| false) {
            applied.extend(i.on_item(1, seq, it, t).ready);
        }
        assert_eq!(applied, (0..5).map(item).collect::<Vec<_>>());
    }

    #[test]
    fn tail_loss_is_found_by_the_heartbeat_and_by_the_timeout() {
        let t = Instant::now();
        let rto = Duration::from_millis(50);
        let mut o = Outgoing::new(1, 16, 1 << 20, rto);
        let mut i = Incoming::new(64);
        o.push(item(0));
        o.push(item(1));
        // The last one is lost: nothing after it shows a gap.
        for (seq, it) in pump(&mut o, t, |seq, _| seq == 2) {
            assert_eq!(i.on_item(1, seq, it, t).gap, None);
        }
        assert_eq!(i.on_alive(1, o.next_seq(), t).gap, Some((2, 1)));
        // Unacked for the timeout: resent without being asked.
        let later = t + rto;
        let again = pump(&mut o, later, |_, _| false);
        assert_eq!(again.len(), 2, "both unacked ones resent");
        // Not again before twice the timeout (backoff).
        assert!(pump(&mut o, later + rto, |_, _| false).is_empty());
        assert_eq!(pump(&mut o, later + rto * 2, |_, _| false).len(), 2);
        let mut applied = Vec::new();
        for (seq, it) in again {
            let r = i.on_item(1, seq, it, later);
            applied.extend(r.ready);
        }
        assert_eq!(applied, vec![item(1)]);
        assert_eq!(i.expected, 3);
    }

    #[test]
    fn duplicates_replays_and_new_streams_are_told_apart() {
        let t = Instant::now();
        let mut i = Incoming::new(64);
        assert!(i.on_item(10, 7, item(7), t).new_epoch, "first stream seen");
        assert_eq!(i.expected, 8, "it starts where we joined it");
        assert!(i.on_item(10, 7, item(7), t).duplicate);
        assert!(i.on_item(9, 8, item(8), t).stale_epoch, "older epoch");
        let r = i.on_item(11, 2, item(2), t);
        assert!(r.new_epoch, "the peer restarted");
        assert_eq!(r.gap, Some((1, 1)), "a new stream starts at 1");
        assert!(r.ready.is_empty());
    }

    #[test]
    fn a_gap_nobody_fills_can_be_skipped() {
        let t = Instant::now();
        let mut i = Incoming::new(2);
        i.on_item(1, 1, item(1), t);
        i.on_item(1, 3, item(3), t);
        i.on_item(1, 4, item(4), t);
        assert!(i.on_item(1, 5, item(5), t).overflow, "held is full");
        assert!(!i.gap_stuck(t, Duration::from_secs(1)));
        assert!(i.gap_stuck(t + Duration::from_secs(1), Duration::from_secs(1)));
        assert_eq!(i.skip_gap(), vec![item(3), item(4)]);
        assert_eq!(i.expected, 5);
    }

    #[test]
    fn a_late_ack_does_not_resend_the_whole_window() {
        let t = Instant::now();
        let rto = Duration::from_millis(40);
        let mut o = Outgoing::new(1, 1000, 1 << 20, rto);
        for n in 0..200 {
            o.push(item(n as u8));
        }
        assert_eq!(pump(&mut o, t, |_, _| false).len(), 200);
        let again = pump(&mut o, t + rto, |_, _| false);
        assert_eq!(again.len(), RESEND_BURST, "the oldest only");
        assert_eq!(again[0].0, 1);
    }

    #[test]
    fn the_window_and_the_byte_limit_hold_back() {
        let t = Instant::now();
        let mut o = Outgoing::new(1, 2, 3, Duration::from_secs(1));
        assert!(o.push(item(0)));
        assert!(o.push(item(1)));
        assert!(o.push(item(2)));
        assert!(!o.push(item(3)), "3 bytes queued is the limit");
        assert_eq!(pump(&mut o, t, |_, _| false).len(), 2, "window of 2");
        assert_eq!(o.queued(), 1);
        o.ack(1);
        assert_eq!(pump(&mut o, t, |_, _| false).len(), 1);
        assert_eq!(o.nack(1, 1), 1, "seq 1 was acked: no longer held");
        assert_eq!(o.reset(2), 2);
        assert_eq!(o.next_seq(), 1);
    }
}
