//! The flow table: one entry per flow, found from either direction's tuple.
//!
//! Layout (chosen for the fast path and for memory per flow):
//! - Flow entries live in a slab of fixed-size slots whose fields are all
//!   atomics, allocated in chunks of 64 Ki slots on demand (RSS grows with
//!   use, never moves, so a slot index stays valid).
//! - Two index entries per flow (original and reply tuple) live in 256
//!   lock-sharded open-addressing tables of `u64` words: a 32-bit hash tag
//!   plus the slot index and direction. Linear probing, backward-shift
//!   deletion, growth by doubling per shard at 75% load.
//! - A lookup takes one shard's read lock, compares the tag, then the tuple
//!   stored in the slot, and updates the slot's state, timer and counters
//!   with atomic operations while still holding that read lock. The shard
//!   locks are big-reader locks (`brlock.rs`): a reader writes only its
//!   own thread's line, so workers reading the same shards do not bounce a
//!   lock word between their cores; a writer pays for that.
//! - Removing a flow takes the write locks of both of its index shards (in
//!   shard order), so no reader can be looking at a slot being freed; a
//!   per-slot generation makes stale [`FlowId`]s harmless.
//!
//! The two tuples of a flow usually hash to different shards, so the reply
//! of a flow may be handled on another worker thread than its original
//! direction without any hand-off.

use super::brlock::ShardLocks;
use super::slots::SlotAlloc;
use super::source::{Admit, SourceCounts};
use super::state::{Dir, TcpEvent, TcpState, Time, Timeouts, Transition, tcp_transition};
use super::window::{self, TcpSeg, Windows};
use crate::packet::{Tuple, proto};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::Release,
};

const SHARD_BITS: u32 = 8;
const SHARDS: usize = 1 << SHARD_BITS;
const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;
/// Largest supported `max_flows` (slot index + 1 must fit in 31 bits).
pub const MAX_FLOWS_LIMIT: u32 = 1 << 30;

/// Low bits of a cached next-hop word ([`Hit::hop`]) that tag what it was
/// computed from; the rest is the caller's.
pub const HOP_TAG_BITS: u32 = 24;
pub const HOP_TAG_MASK: u64 = (1 << HOP_TAG_BITS) - 1;

/// Flag bits stored with the flow's protocol state.
pub mod flags {
    /// A packet was seen in the reply direction.
    pub const SEEN_REPLY: u32 = 1 << 8;
    /// The flow is established (TCP) or two-way (UDP); early-drop spares it.
    pub const ASSURED: u32 = 1 << 9;
    /// The flow is counted in its source's live flows (table-internal:
    /// records never show it; see `conntrack/source.rs`).
    pub const COUNTED: u32 = 1 << 10;
    /// First bit free for the NAT layer's own flags.
    pub const USER_SHIFT: u32 = 16;
    pub const STATE_MASK: u32 = 0xff;
}

/// Identifies a flow slot and the life of the flow in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId {
    idx: u32,
    gen_: u32,
}

#[derive(Default)]
struct Slot {
    tuples: [[AtomicU64; 2]; 2],
    /// Deadline in nanoseconds; 0 marks a free slot.
    expires: AtomicU64,
    /// Low byte: TCP state; above it: [`flags`].
    state: AtomicU32,
    gen_: AtomicU32,
    /// Opaque word for the NAT layer (e.g. the rule that created the flow).
    mark: AtomicU32,
    /// When the flow was created, in [`BORN_UNIT_NS`] units, wrapped to 32
    /// bits (it shares a word with `mark`, so the slot needs no padding);
    /// [`Slot::record`] widens it again from `expires`.
    born: AtomicU32,
    packets: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    /// Per direction, the next hop its packets leave by, as the NAT layer
    /// cached it ([`FlowTable::track_routed`]); 0: none. Opaque here; reset
    /// when the slot takes a new flow.
    hops: [AtomicU64; 2],
}

impl Slot {
    /// True if direction `d`'s tuple packs to `w` (two word compares
    /// instead of five field compares after an unpack).
    #[inline]
    fn has(&self, d: usize, w: [u64; 2]) -> bool {
        self.tuples[d][0].load(Relaxed) == w[0] && self.tuples[d][1].load(Relaxed) == w[1]
    }

    #[inline]
    fn tuple(&self, d: usize) -> Tuple {
        Tuple::unpack([
            self.tuples[d][0].load(Relaxed),
            self.tuples[d][1].load(Relaxed),
        ])
    }

    fn record(&self) -> FlowRecord {
        let st = self.state.load(Relaxed);
        let expires = self.expires.load(Relaxed);
        FlowRecord {
            born: widen_born(self.born.load(Relaxed), expires),
            orig: self.tuple(0),
            reply: self.tuple(1),
            tcp_state: TcpState::from_u8((st & flags::STATE_MASK) as u8),
            flags: st & !(flags::STATE_MASK | flags::COUNTED),
            mark: self.mark.load(Relaxed),
            expires: Time(expires),
            packets: [self.packets[0].load(Relaxed), self.packets[1].load(Relaxed)],
            bytes: [self.bytes[0].load(Relaxed), self.bytes[1].load(Relaxed)],
        }
    }
}

/// Resolution of a flow's creation time ([`FlowRecord::born`]): 10 ms, so
/// 32 bits cover 497 days of a flow's life.
pub const BORN_UNIT_NS: u64 = 10_000_000;

/// The creation time stored in a slot: `born` in [`BORN_UNIT_NS`] units,
/// wrapped to 32 bits.
#[inline]
fn narrow_born(born: Time) -> u32 {
    (born.0 / BORN_UNIT_NS) as u32
}

/// The creation time back from its 32 bits, given the flow's deadline
/// (which comes after it, by less than 497 days).
#[inline]
fn widen_born(born: u32, expires: u64) -> Time {
    let exp = expires / BORN_UNIT_NS;
    let age = (exp as u32).wrapping_sub(born) as u64;
    Time(exp.saturating_sub(age) * BORN_UNIT_NS)
}

/// A flow as plain data: what listings print and snapshots store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Tuple of the packet that created the flow, as received.
    pub orig: Tuple,
    /// Tuple a reply has on arrival (the inverse of the translated original).
    pub reply: Tuple,
    pub tcp_state: TcpState,
    /// [`flags`] bits (state byte masked out).
    pub flags: u32,
    pub mark: u32,
    /// Deadline on the table's clock.
    pub expires: Time,
    /// When the flow was created, on the table's clock (to 10 ms,
    /// [`BORN_UNIT_NS`]); a restored flow's is the restore's time.
    pub born: Time,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

impl FlowRecord {
    pub fn remaining(&self, now: Time) -> Time {
        self.expires.saturating_sub(now)
    }
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// What a packet told the tracker, besides its tuple.
#[derive(Debug, Clone, Copy)]
pub struct PacketInfo {
    /// TCP flags for TCP segments, `None` otherwise.
    pub tcp_flags: Option<u8>,
    /// Bytes of the IP datagram.
    pub len: u32,
    /// The TCP segment's sequence numbers and window, for window tracking
    /// (`None`: not checked, e.g. a later fragment).
    pub seg: Option<TcpSeg>,
}

/// A packet matched a live flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub id: FlowId,
    pub dir: Dir,
    /// The tuple of the other direction; the packet leaves as its inverse.
    pub other: Tuple,
    /// Flags after this packet (state byte masked out).
    pub flags: u32,
    pub mark: u32,
    /// The TCP segment did not fit the state machine (state kept).
    pub tcp_invalid: bool,
    /// The TCP states this packet moved the flow from and to, when it
    /// changed the state.
    pub tcp_change: Option<(TcpState, TcpState)>,
    /// The next hop cached for this direction (see
    /// [`track_routed`](FlowTable::track_routed)); 0: none.
    pub hop: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit(Hit),
    /// No live flow has this tuple.
    Miss,
    /// A flow has the tuple but its timer ran out; remove it, then treat
    /// the packet as a miss.
    Expired(FlowId),
    /// The flow's TCP segment is outside the window
    /// ([`window`](super::window)): drop it; the flow did not change.
    OutOfWindow,
}

/// Why a flow could not be inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// `max_flows` live flows already.
    Full,
    /// A flow with the same original tuple exists (a concurrent insert won).
    OrigExists,
    /// Another flow already uses the reply tuple: pick another mapping.
    ReplyTaken,
    /// The original source has `flows_per_source` live flows already.
    SourceLimit,
}

/// Initial state of a new flow.
#[derive(Debug, Clone, Copy)]
pub struct NewFlow {
    pub orig: Tuple,
    pub reply: Tuple,
    /// TCP flags of the first segment (TCP only).
    pub tcp_flags: Option<u8>,
    /// The first segment's sequence numbers, window and options: a SYN
    /// starts window tracking; `None` or any other segment makes the flow
    /// liberal (picked up mid-stream).
    pub seg: Option<TcpSeg>,
    /// Extra [`flags`] bits (NAT-layer flags above `USER_SHIFT`).
    pub flags: u32,
    pub mark: u32,
    pub len: u32,
}

/// Open-addressing index of one shard.
struct Index {
    words: Vec<u64>,
    len: usize,
}

#[inline]
fn encode(tag: u32, idx: u32, dir: Dir) -> u64 {
    ((tag as u64) << 32) | (((idx as u64) + 1) << 1) | dir as u64
}

#[inline]
fn decode(w: u64) -> (u32, u32, Dir) {
    let tag = (w >> 32) as u32;
    let idx = ((w as u32) >> 1) - 1;
    let dir = if w & 1 == 0 { Dir::Orig } else { Dir::Reply };
    (tag, idx, dir)
}

impl Index {
    fn new() -> Index {
        Index {
            words: vec![0; 64],
            len: 0,
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.words.len() - 1
    }

    /// Position of the entry with `tag` for which `eq(idx, dir)` holds.
    #[inline]
    fn find(&self, tag: u32, mut eq: impl FnMut(u32, Dir) -> bool) -> Option<usize> {
        let mask = self.mask();
        let mut i = tag as usize & mask;
        loop {
            let w = self.words[i];
            if w == 0 {
                return None;
            }
            let (t, idx, dir) = decode(w);
            if t == tag && eq(idx, dir) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, w: u64) {
        if (self.len + 1) * 4 > self.words.len() * 3 {
            self.grow();
        }
        self.place(w);
        self.len += 1;
    }

    fn place(&mut self, w: u64) {
        let mask = self.mask();
        let mut i = (w >> 32) as usize & mask;
        while self.words[i] != 0 {
            i = (i + 1) & mask;
        }
        self.words[i] = w;
    }

    fn grow(&mut self) {
        let doubled = vec![0; self.words.len() * 2];
        let old = std::mem::replace(&mut self.words, doubled);
        for w in old.into_iter().filter(|&w| w != 0) {
            self.place(w);
        }
    }

    /// Removes the entry at `pos`, shifting later entries of the run back.
    fn remove_at(&mut self, mut pos: usize) {
        let mask = self.mask();
        self.words[pos] = 0;
        self.len -= 1;
        let mut j = pos;
        loop {
            j = (j + 1) & mask;
            let w = self.words[j];
            if w == 0 {
                return;
            }
            let home = (w >> 32) as usize & mask;
            // Entry j may move to the hole at `pos` unless its home lies
            // cyclically in (pos, j].
            let stays = if pos <= j {
                pos < home && home <= j
            } else {
                pos < home || home <= j
            };
            if !stays {
                self.words[pos] = w;
                self.words[j] = 0;
                pos = j;
            }
        }
    }
}

/// The shared flow table. See the module docs for its layout.
pub struct FlowTable {
    /// The index shards, each behind a lock whose readers write only
    /// their own thread's lines (`brlock.rs`).
    shards: ShardLocks<Index>,
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    /// TCP window state, indexed like `chunks`; a chunk's comes with its
    /// first TCP flow (UDP-only tables never pay for it).
    windows: Box<[OnceLock<Box<[Windows]>>]>,
    /// `tcp_window = "liberal"`: no segment is refused for its window.
    liberal: AtomicBool,
    alloc: SlotAlloc,
    live: AtomicUsize,
    max: usize,
    seed: [u64; 3],
    sweep_cursor: AtomicU32,
    evict_cursor: AtomicU32,
    timeouts: Timeouts,
    sources: SourceCounts,
}

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

impl FlowTable {
    /// A table for up to `max_flows` flows. `seed` keys the hash so that
    /// outsiders cannot aim many tuples at one shard.
    pub fn new(max_flows: u32, timeouts: Timeouts, seed: u64) -> FlowTable {
        let max = max_flows.clamp(1, MAX_FLOWS_LIMIT) as usize;
        let chunks = max.div_ceil(CHUNK);
        let mix = |k: u64| fold_mul(seed ^ k, 0x9e37_79b9_7f4a_7c15) | 1;
        let table = FlowTable {
            shards: ShardLocks::new(SHARDS, Index::new),
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
            windows: (0..chunks).map(|_| OnceLock::new()).collect(),
            liberal: AtomicBool::new(false),
            alloc: SlotAlloc::new((chunks * max.min(CHUNK)) as u32),
            live: AtomicUsize::new(0),
            max,
            seed: [mix(1), mix(2), mix(3)],
            sweep_cursor: AtomicU32::new(0),
            evict_cursor: AtomicU32::new(0),
            timeouts,
            sources: SourceCounts::default(),
        };
        // Allocate the first chunk now rather than under the first packet.
        if let Some(c) = table.chunks.first() {
            c.get_or_init(|| table.new_chunk());
        }
        table
    }

    /// Slots of a chunk: [`CHUNK`], or fewer when the whole table is
    /// smaller (a small table costs only what it can hold).
    fn chunk_len(&self) -> usize {
        self.max.min(CHUNK)
    }

    fn new_chunk(&self) -> Box<[Slot]> {
        (0..self.chunk_len()).map(|_| Slot::default()).collect()
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Window tracking off (`true`, Linux `tcp_be_liberal`) or on; takes
    /// effect on the next segment of every flow.
    pub fn set_liberal(&self, liberal: bool) {
        self.liberal.store(liberal, Relaxed);
    }

    pub fn liberal(&self) -> bool {
        self.liberal.load(Relaxed)
    }

    /// The window state of slot `idx`, if its chunk has any.
    #[inline]
    fn window(&self, idx: u32) -> Option<&Windows> {
        let chunk = self.windows.get((idx >> CHUNK_BITS) as usize)?.get()?;
        chunk.get(idx as usize & (CHUNK - 1))
    }

    /// Resets slot `idx`'s window state for a new TCP flow (`None`:
    /// liberal), allocating its chunk's on the first TCP flow.
    fn reset_window(&self, idx: u32, init: Option<[window::Seen; 2]>) {
        let Some(chunk) = self.windows.get((idx >> CHUNK_BITS) as usize) else {
            return;
        };
        let chunk =
            chunk.get_or_init(|| (0..self.chunk_len()).map(|_| Windows::default()).collect());
        if let Some(w) = chunk.get(idx as usize & (CHUNK - 1)) {
            w.reset(init);
        }
    }

    /// Live flows (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.live.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.max
    }

    #[inline]
    fn hash(&self, t: &Tuple) -> u64 {
        self.hash_packed(t.pack())
    }

    /// [`hash`](Self::hash) of a tuple already packed.
    #[inline]
    fn hash_packed(&self, [a, b]: [u64; 2]) -> u64 {
        fold_mul(fold_mul(a ^ self.seed[0], b ^ self.seed[1]), self.seed[2])
    }

    #[inline]
    fn shard(&self, h: u64) -> usize {
        h as usize & (SHARDS - 1)
    }

    #[inline]
    fn slot(&self, idx: u32) -> Option<&Slot> {
        let chunk = self.chunks.get((idx >> CHUNK_BITS) as usize)?.get()?;
        chunk.get(idx as usize & (CHUNK - 1))
    }

    /// Finds the flow of a packet with tuple `key` and, on a hit, advances
    /// its protocol state, timer and counters.
    #[inline]
    pub fn track(&self, key: &Tuple, pkt: &PacketInfo, now: Time) -> Lookup {
        self.track_routed(key, pkt, now, 0, |_, _, _| 0)
    }

    /// [`track`](Self::track) that also reads the next hop cached in the
    /// flow for the packet's direction. A cached word whose low
    /// [`HOP_TAG_BITS`] equal `hop_tag` (non-zero) is returned as [`Hit::hop`];
    /// otherwise `fill` computes the word from the packet's direction, the
    /// source of the other direction's tuple and the flow's flags (state
    /// byte masked out) (0: nothing to cache), and it is stored in the flow
    /// and returned. `fill` runs under the index shard's read lock, so the
    /// flow cannot be removed, nor its slot reused, while its word is
    /// stored.
    #[inline]
    pub fn track_routed(
        &self,
        key: &Tuple,
        pkt: &PacketInfo,
        now: Time,
        hop_tag: u32,
        fill: impl FnOnce(Dir, u32, u32) -> u64,
    ) -> Lookup {
        let w = key.pack();
        let h = self.hash_packed(w);
        let tag = (h >> 32) as u32;
        let index = self.shards.read(self.shard(h));
        // The probe keeps the slot it matched: no second decode and chunk
        // lookup after it.
        let mut found = None;
        index.find(tag, |idx, dir| match self.slot(idx) {
            Some(s) if s.has(dir.index(), w) => {
                found = Some((idx, dir, s));
                true
            }
            _ => false,
        });
        let Some((idx, dir, s)) = found else {
            return Lookup::Miss;
        };
        let id = FlowId {
            idx,
            gen_: s.gen_.load(Relaxed),
        };
        if s.expires.load(Relaxed) <= now.0 {
            return Lookup::Expired(id);
        }
        if let (proto::TCP, Some(seg)) = (key.proto, &pkt.seg)
            && !self.window_ok(idx, s, dir, seg)
        {
            return Lookup::OutOfWindow;
        }
        let (st, timeout, tcp_invalid, old) = self.advance(s, key.proto, dir, pkt.tcp_flags);
        s.expires.store(
            now.0.saturating_add(timeout as u64 * 1_000_000_000),
            Relaxed,
        );
        let d = dir.index();
        // Plain load+store, not a locked add: a direction's packets come
        // through one queue (RSS hashes the tuple), so one worker writes
        // these; a rare race costs a count, never a flow.
        s.packets[d].store(s.packets[d].load(Relaxed) + 1, Relaxed);
        s.bytes[d].store(s.bytes[d].load(Relaxed) + pkt.len as u64, Relaxed);
        let other = s.tuple(1 - d);
        let flags = st & !flags::STATE_MASK;
        let mut hop = s.hops[d].load(Relaxed);
        if hop_tag == 0 || hop & HOP_TAG_MASK != hop_tag as u64 {
            hop = fill(dir, other.src, flags);
            if hop != 0 {
                s.hops[d].store(hop, Relaxed);
            }
        }
        let mark = s.mark.load(Relaxed);
        drop(index);
        Lookup::Hit(Hit {
            id,
            dir,
            other,
            flags,
            mark,
            tcp_invalid,
            tcp_change: (key.proto == proto::TCP && (old ^ st) & flags::STATE_MASK != 0).then(
                || {
                    let state = |w: u32| TcpState::from_u8((w & flags::STATE_MASK) as u8);
                    (state(old), state(st))
                },
            ),
            hop,
        })
    }

    /// Forgets every flow's cached next hops (the NAT layer's tags are
    /// about to repeat).
    pub fn clear_hops(&self) {
        let high = self.alloc.high();
        for idx in 0..high {
            if let Some(s) = self.slot(idx) {
                for h in &s.hops {
                    h.store(0, Relaxed);
                }
            }
        }
    }

    /// Window tracking of a segment of a live TCP flow: false when it is
    /// out of window. Segments the state machine refuses or ignores are
    /// not checked (as in Linux, which only checks what would move the
    /// state).
    #[inline]
    fn window_ok(&self, idx: u32, s: &Slot, dir: Dir, seg: &TcpSeg) -> bool {
        if self.liberal.load(Relaxed) {
            return true;
        }
        let Some(w) = self.window(idx) else {
            return true;
        };
        let cur = TcpState::from_u8((s.state.load(Relaxed) & flags::STATE_MASK) as u8);
        if !matches!(
            tcp_transition(dir, TcpEvent::from_flags(seg.flags), cur),
            Transition::To(_)
        ) {
            return true;
        }
        w.check(dir, cur, seg) != window::Verdict::OutOfWindow
    }

    /// Protocol state machine step; returns the new state word, the timeout
    /// that now applies, whether a TCP segment was out of state, and the
    /// state word it replaced.
    #[inline]
    fn advance(&self, s: &Slot, p: u8, dir: Dir, tcp_flags: Option<u8>) -> (u32, u32, bool, u32) {
        if let (proto::TCP, Some(f)) = (p, tcp_flags) {
            return self.advance_tcp(s, dir, f);
        }
        // Without a TCP state machine, a packet can only add flags: a reply
        // marks the flow as seen both ways, and a UDP flow seen both ways is
        // assured. Bits are only ever added here, so one atomic OR is
        // exact however other workers race, and the usual packet (nothing
        // to add) writes nothing.
        let old = s.state.load(Relaxed);
        let mut add = match dir {
            Dir::Reply => flags::SEEN_REPLY,
            Dir::Orig => 0,
        };
        if p == proto::UDP && (old | add) & flags::SEEN_REPLY != 0 {
            add |= flags::ASSURED;
        }
        let prev = if old | add != old {
            s.state.fetch_or(add, Relaxed)
        } else {
            old
        };
        let st = prev | add;
        (st, self.timeouts.of(p, st), false, prev)
    }

    /// [`advance`](Self::advance) for a TCP segment with flags `f`.
    fn advance_tcp(&self, s: &Slot, dir: Dir, f: u8) -> (u32, u32, bool, u32) {
        let mut invalid = false;
        let mut st = 0;
        let mut prev = 0;
        // The closure may run more than once if another worker changes the
        // state word concurrently; `st` and `invalid` end up describing the
        // value that was finally stored (or kept).
        let _ = s.state.fetch_update(Relaxed, Relaxed, |old| {
            let mut new = old;
            invalid = false;
            if dir == Dir::Reply {
                new |= flags::SEEN_REPLY;
            }
            let cur = TcpState::from_u8((old & flags::STATE_MASK) as u8);
            match tcp_transition(dir, TcpEvent::from_flags(f), cur) {
                Transition::To(n) => {
                    if cur == TcpState::SynRecv && n == TcpState::Established {
                        new |= flags::ASSURED;
                    }
                    new = (new & !flags::STATE_MASK) | n as u32;
                }
                Transition::Ignore => {}
                Transition::Invalid => invalid = true,
            }
            st = new;
            prev = old;
            (new != old).then_some(new)
        });
        (st, self.timeouts.of(proto::TCP, st), invalid, prev)
    }

    /// Finds the live flow of `key` without touching its state or timer
    /// (ICMP errors and TTL checks use this). Returns the direction of
    /// `key` and the other direction's tuple.
    pub fn peek(&self, key: &Tuple, now: Time) -> Option<(Dir, Tuple)> {
        self.peek_flags(key, now).map(|(d, t, _)| (d, t))
    }

    /// [`peek`](FlowTable::peek) that also returns the flow's flag word
    /// (state byte masked out).
    pub fn peek_flags(&self, key: &Tuple, now: Time) -> Option<(Dir, Tuple, u32)> {
        let w = key.pack();
        let h = self.hash_packed(w);
        let index = self.shards.read(self.shard(h));
        let pos = index.find((h >> 32) as u32, |idx, dir| {
            self.slot(idx).is_some_and(|s| s.has(dir.index(), w))
        })?;
        let (_, idx, dir) = decode(index.words[pos]);
        let s = self.slot(idx)?;
        (s.expires.load(Relaxed) > now.0).then(|| {
            (
                dir,
                s.tuple(1 - dir.index()),
                s.state.load(Relaxed) & !flags::STATE_MASK,
            )
        })
    }

    /// True if some live or not-yet-swept flow uses `key` in either direction.
    pub fn contains(&self, key: &Tuple) -> bool {
        let w = key.pack();
        let h = self.hash_packed(w);
        let index = self.shards.read(self.shard(h));
        index
            .find((h >> 32) as u32, |idx, dir| {
                self.slot(idx).is_some_and(|s| s.has(dir.index(), w))
            })
            .is_some()
    }

    /// Inserts a new flow. Fails without side effects if the table is full,
    /// the original tuple is already tracked, or the reply tuple is taken.
    pub fn insert(&self, f: &NewFlow, now: Time) -> Result<FlowId, InsertError> {
        let counted = match self.sources.admit(f.orig.src) {
            Admit::Refused => return Err(InsertError::SourceLimit),
            Admit::Counted => flags::COUNTED,
            Admit::Uncounted => 0,
        };
        let r = self.insert_counted(f, counted, now);
        if r.is_err() && counted != 0 {
            self.sources.release(f.orig.src);
        }
        r
    }

    /// Counts one more live flow unless the table holds `max_flows`
    /// already. Never counts past the limit, even for a moment (a
    /// fetch_add undone by a fetch_sub did: `natgw stats` could read
    /// `max_flows + 1` while the table was full).
    fn reserve(&self) -> bool {
        self.live
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max).then_some(n + 1))
            .is_ok()
    }

    fn insert_counted(&self, f: &NewFlow, counted: u32, now: Time) -> Result<FlowId, InsertError> {
        if !self.reserve() {
            return Err(InsertError::Full);
        }
        let Some(idx) = self.alloc_slot() else {
            self.live.fetch_sub(1, Relaxed);
            return Err(InsertError::Full);
        };
        let Some(s) = self.slot(idx) else {
            self.live.fetch_sub(1, Relaxed);
            return Err(InsertError::Full);
        };
        let (mut st, mut timeout) = match (f.orig.proto, f.tcp_flags) {
            (proto::TCP, Some(fl)) => {
                // A SYN opens SYN_SENT; anything but RST picks up mid-stream
                // (Linux nf_conntrack_tcp_loose=1).
                match tcp_transition(Dir::Orig, TcpEvent::from_flags(fl), TcpState::None) {
                    Transition::To(n) => (n as u32, self.timeouts.tcp(n)),
                    _ => (TcpState::SynSent as u32, self.timeouts.tcp_syn_sent),
                }
            }
            (proto::UDP, _) => (0, self.timeouts.udp),
            (proto::ICMP, _) => (0, self.timeouts.icmp),
            _ => (0, self.timeouts.generic),
        };
        if st == TcpState::Established as u32 {
            st |= flags::ASSURED;
            timeout = self.timeouts.tcp_established;
        }
        let exp = now.0.saturating_add(timeout as u64 * 1_000_000_000);
        if f.orig.proto == proto::TCP {
            self.reset_window(idx, f.seg.as_ref().and_then(window::initial));
        }
        let rec = FlowRecord {
            orig: f.orig,
            reply: f.reply,
            tcp_state: TcpState::from_u8(st as u8),
            flags: (st & !flags::STATE_MASK) | (f.flags & !flags::COUNTED) | counted,
            mark: f.mark,
            expires: Time(exp.max(1)),
            born: now,
            packets: [1, 0],
            bytes: [f.len as u64, 0],
        };
        self.link(idx, s, &rec)
    }

    /// Inserts a flow from a record (snapshot restore, state sync).
    /// A restored flow is counted in its source's flows but never refused
    /// for the per-source limit: it exists already.
    pub fn insert_record(&self, rec: &FlowRecord) -> Result<FlowId, InsertError> {
        if !self.reserve() {
            return Err(InsertError::Full);
        }
        let slot = self.alloc_slot().and_then(|i| self.slot(i).map(|s| (i, s)));
        let Some((idx, s)) = slot else {
            self.live.fetch_sub(1, Relaxed);
            return Err(InsertError::Full);
        };
        if rec.orig.proto == proto::TCP {
            // Its window scales are not in the record: tracked liberally.
            self.reset_window(idx, None);
        }
        let counting = self.sources.counting();
        let rec = FlowRecord {
            flags: (rec.flags & !flags::COUNTED) | if counting { flags::COUNTED } else { 0 },
            ..rec.clone()
        };
        if counting {
            self.sources.force(rec.orig.src);
        }
        let r = self.link(idx, s, &rec);
        if r.is_err() && counting {
            self.sources.release(rec.orig.src);
        }
        r
    }

    /// Per-source live flows and refusals.
    pub fn sources(&self) -> &SourceCounts {
        &self.sources
    }

    /// Sets `flows_per_source` (`None`: no limit). The first limit turns
    /// counting on; the flows already in the table are then counted too
    /// (each under its index shard's read lock, so none can be removed
    /// meanwhile, and flagged so none is counted twice). A flow that a
    /// packet linked while this runs, having looked before counting was
    /// on, may stay uncounted for its life (an undercount, never a leak).
    pub fn set_source_limit(&self, limit: Option<u32>) {
        if !self.sources.set_limit(limit) {
            return;
        }
        let high = self.alloc.high();
        for idx in 0..high {
            let Some(s) = self.slot(idx) else { continue };
            if s.expires.load(Relaxed) == 0 {
                continue;
            }
            let orig = s.tuple(0);
            let h = self.hash(&orig);
            let index = self.shards.read(self.shard(h));
            let linked = index
                .find((h >> 32) as u32, |i, d| i == idx && d == Dir::Orig)
                .is_some();
            if linked
                && s.tuple(0) == orig
                && s.state.fetch_or(flags::COUNTED, Relaxed) & flags::COUNTED == 0
            {
                self.sources.force(orig.src);
            }
        }
    }

    /// Fills slot `idx` from `rec` and links both tuples into the index.
    fn link(&self, idx: u32, s: &Slot, rec: &FlowRecord) -> Result<FlowId, InsertError> {
        for (d, t) in [rec.orig, rec.reply].iter().enumerate() {
            let [a, b] = t.pack();
            s.tuples[d][0].store(a, Relaxed);
            s.tuples[d][1].store(b, Relaxed);
        }
        s.state.store(
            rec.tcp_state as u32 | (rec.flags & !flags::STATE_MASK),
            Relaxed,
        );
        s.mark.store(rec.mark, Relaxed);
        s.born.store(narrow_born(rec.born), Relaxed);
        for h in &s.hops {
            h.store(0, Relaxed);
        }
        for d in 0..2 {
            s.packets[d].store(rec.packets[d], Relaxed);
            s.bytes[d].store(rec.bytes[d], Relaxed);
        }
        s.expires.store(rec.expires.0.max(1), Release);
        let id = FlowId {
            idx,
            gen_: s.gen_.load(Relaxed),
        };

        let (h1, h2) = (self.hash(&rec.orig), self.hash(&rec.reply));
        let result = self.with_two_shards(h1, h2, |a, b| {
            let eq = |key: Tuple| {
                move |i: u32, d: Dir| self.slot(i).is_some_and(|s| s.tuple(d.index()) == key)
            };
            let ia: &Index = a;
            if ia.find((h1 >> 32) as u32, eq(rec.orig)).is_some() {
                return Err(InsertError::OrigExists);
            }
            let ib: &Index = b.as_deref().unwrap_or(ia);
            if ib.find((h2 >> 32) as u32, eq(rec.reply)).is_some() {
                return Err(InsertError::ReplyTaken);
            }
            a.insert(encode((h1 >> 32) as u32, idx, Dir::Orig));
            match b {
                Some(b) => b.insert(encode((h2 >> 32) as u32, idx, Dir::Reply)),
                None => a.insert(encode((h2 >> 32) as u32, idx, Dir::Reply)),
            }
            Ok(id)
        });
        if result.is_err() {
            s.expires.store(0, Relaxed);
            self.free_slot(idx, s);
        }
        result
    }

    /// Runs `f` with the write locks of the shards of `h1` and `h2` (the
    /// second is `None` when both hash to the same shard). Locks are taken
    /// in shard order so two removers never deadlock.
    fn with_two_shards<R>(
        &self,
        h1: u64,
        h2: u64,
        f: impl FnOnce(&mut Index, Option<&mut Index>) -> R,
    ) -> R {
        let (s1, s2) = (h1 as usize & (SHARDS - 1), h2 as usize & (SHARDS - 1));
        if s1 == s2 {
            let mut a = self.shards.write(s1);
            return f(&mut a, None);
        }
        let (lo, hi) = (s1.min(s2), s1.max(s2));
        let mut g_lo = self.shards.write(lo);
        let mut g_hi = self.shards.write(hi);
        if s1 == lo {
            f(&mut g_lo, Some(&mut g_hi))
        } else {
            f(&mut g_hi, Some(&mut g_lo))
        }
    }

    fn alloc_slot(&self) -> Option<u32> {
        let idx = self.alloc.take()?;
        let chunk = self.chunks.get((idx >> CHUNK_BITS) as usize)?;
        chunk.get_or_init(|| self.new_chunk());
        Some(idx)
    }

    fn free_slot(&self, idx: u32, s: &Slot) {
        s.gen_.fetch_add(1, Relaxed);
        self.alloc.put(idx);
        self.live.fetch_sub(1, Relaxed);
    }

    /// Removes flow `id` if it still exists (and, with `if_expired_at`, only
    /// if its timer has run out by then). Returns what it held.
    pub fn remove(&self, id: FlowId, if_expired_at: Option<Time>) -> Option<FlowRecord> {
        let s = self.slot(id.idx)?;
        if s.gen_.load(Relaxed) != id.gen_ || s.expires.load(Relaxed) == 0 {
            return None;
        }
        let (orig, reply) = (s.tuple(0), s.tuple(1));
        let (h1, h2) = (self.hash(&orig), self.hash(&reply));
        let mut rec = self.with_two_shards(h1, h2, |a, b| {
            // Re-check under the locks: another remover may have won.
            let exp = s.expires.load(Relaxed);
            if s.gen_.load(Relaxed) != id.gen_ || exp == 0 {
                return None;
            }
            if if_expired_at.is_some_and(|now| exp > now.0) {
                return None;
            }
            let mut rec = s.record();
            if s.state.load(Relaxed) & flags::COUNTED != 0 {
                rec.flags |= flags::COUNTED;
            }
            let mine = |want: Dir| move |i: u32, d: Dir| i == id.idx && d == want;
            if let Some(p) = a.find((h1 >> 32) as u32, mine(Dir::Orig)) {
                a.remove_at(p);
            }
            let b: &mut Index = match b {
                Some(b) => b,
                None => a,
            };
            if let Some(p) = b.find((h2 >> 32) as u32, mine(Dir::Reply)) {
                b.remove_at(p);
            }
            s.expires.store(0, Relaxed);
            // Bump the generation while the shards are locked, so a remover
            // that raced us sees the slot changed hands.
            s.gen_.fetch_add(1, Relaxed);
            Some(rec)
        })?;
        self.alloc.put(id.idx);
        self.live.fetch_sub(1, Relaxed);
        if rec.flags & flags::COUNTED != 0 {
            self.sources.release(rec.orig.src);
            rec.flags &= !flags::COUNTED;
        }
        Some(rec)
    }

    /// Conntrack-style early drop: samples up to 128 flow slots (from a
    /// cursor that moves on with every call, so the whole table is
    /// covered over time whatever its size) and removes the first flow
    /// that is expired or not assured. Returns the removed flow.
    pub fn evict_unassured(&self, now: Time) -> Option<FlowRecord> {
        let high = self.alloc.high();
        if high == 0 {
            return None;
        }
        let start = self.evict_cursor.fetch_add(128, Relaxed) % high;
        let victim = (0..128.min(high)).find_map(|k| {
            let idx = (start + k) % high;
            let s = self.slot(idx)?;
            let exp = s.expires.load(Relaxed);
            if exp == 0 {
                return None;
            }
            let assured = s.state.load(Relaxed) & flags::ASSURED != 0;
            (exp <= now.0 || !assured).then(|| FlowId {
                idx,
                gen_: s.gen_.load(Relaxed),
            })
        })?;
        self.remove(victim, None)
    }

    /// Visits up to `budget` slots from where the last sweep stopped and
    /// removes the flows whose timer ran out by `now`, handing each to `out`.
    /// Returns how many were removed.
    pub fn sweep(&self, now: Time, budget: usize, mut out: impl FnMut(FlowRecord)) -> usize {
        let high = self.alloc.high();
        if high == 0 {
            return 0;
        }
        let start = self.sweep_cursor.fetch_add(budget as u32, Relaxed) % high;
        let mut removed = 0;
        for k in 0..(budget as u32).min(high) {
            let idx = (start + k) % high;
            let Some(s) = self.slot(idx) else { continue };
            let exp = s.expires.load(Relaxed);
            if exp == 0 || exp > now.0 {
                continue;
            }
            let id = FlowId {
                idx,
                gen_: s.gen_.load(Relaxed),
            };
            if let Some(rec) = self.remove(id, Some(now)) {
                removed += 1;
                out(rec);
            }
        }
        removed
    }

    /// The flow whose original-direction tuple is `orig`, as it is now
    /// (read under its index shard's lock, so the slot cannot change hands
    /// meanwhile); `None` if there is none.
    pub fn get(&self, orig: &Tuple) -> Option<FlowRecord> {
        self.with_orig(orig, |_, s| s.record())
            .filter(|r| r.expires.0 != 0)
    }

    /// Finds the flow whose original-direction tuple is `orig`.
    pub fn find(&self, orig: &Tuple) -> Option<FlowId> {
        self.with_orig(orig, |idx, s| FlowId {
            idx,
            gen_: s.gen_.load(Relaxed),
        })
    }

    /// Runs `f` on the slot of the flow whose original-direction tuple is
    /// `orig`, under its index shard's read lock (so the slot cannot change
    /// hands meanwhile).
    fn with_orig<R>(&self, orig: &Tuple, f: impl FnOnce(u32, &Slot) -> R) -> Option<R> {
        let w = orig.pack();
        let h = self.hash_packed(w);
        let index = self.shards.read(self.shard(h));
        let pos = index.find((h >> 32) as u32, |idx, dir| {
            dir == Dir::Orig && self.slot(idx).is_some_and(|s| s.has(0, w))
        })?;
        let (_, idx, _) = decode(index.words[pos]);
        Some(f(idx, self.slot(idx)?))
    }

    /// Calls `f` for every live flow that a packet created or touched at
    /// or after `since` (a handover's changes since its last copy). Every
    /// packet sets a flow's deadline to its arrival time plus the timeout
    /// of the state it leaves the flow in ([`Timeouts::of`]), so a flow
    /// last touched before `since` has `expires < since + timeout` and one
    /// touched since has `expires >= since + timeout`: no flow is missed,
    /// and no per-packet bookkeeping is needed for it.
    pub fn for_each_touched_since(&self, since: Time, mut f: impl FnMut(FlowId, FlowRecord)) {
        self.for_each(|id, r| {
            let word = r.tcp_state as u32 | r.flags;
            let t = u64::from(self.timeouts.of(r.orig.proto, word)) * 1_000_000_000;
            if r.expires.0 >= since.0.saturating_add(t) {
                f(id, r)
            }
        })
    }

    /// Calls `f` for every live flow (a moment's view; flows may come and
    /// go meanwhile).
    pub fn for_each(&self, mut f: impl FnMut(FlowId, FlowRecord)) {
        let high = self.alloc.high();
        for idx in 0..high {
            let Some(s) = self.slot(idx) else { continue };
            if s.expires.load(Relaxed) == 0 {
                continue;
            }
            let id = FlowId {
                idx,
                gen_: s.gen_.load(Relaxed),
            };
            let rec = s.record();
            if rec.expires.0 != 0 {
                f(id, rec);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> NewFlow {
        let orig = Tuple {
            src: 0x0a00_0002,
            dst: 0xc633_6414,
            sport: 40000,
            dport: 53,
            proto: proto::UDP,
        };
        NewFlow {
            orig,
            reply: orig.invert(),
            tcp_flags: None,
            seg: None,
            flags: 0,
            mark: 0,
            len: 40,
        }
    }

    fn pkt() -> PacketInfo {
        PacketInfo {
            tcp_flags: None,
            len: 40,
            seg: None,
        }
    }

    /// The hop a `track_routed` call ends with, and whether it had to
    /// compute it.
    fn hop(t: &FlowTable, key: &Tuple, tag: u32, word: u64) -> (u64, bool) {
        let mut filled = false;
        let l = t.track_routed(key, &pkt(), Time::from_secs(1), tag, |_, _, _| {
            filled = true;
            word
        });
        let Lookup::Hit(h) = l else { panic!("{l:?}") };
        (h.hop, filled)
    }

    /// A UDP flow is assured (and gets the stream timeout) from its first
    /// reply on, and stays so; an ICMP flow only records the reply.
    #[test]
    fn packets_without_a_tcp_state_only_add_flags() {
        let t = FlowTable::new(16, Timeouts::default(), 1);
        let tm = Timeouts::default();
        let now = Time::from_secs(1);
        let at = |secs: u32| Time(now.0 + secs as u64 * 1_000_000_000);
        // The flags a packet of `key` leaves on flow `f`, and its deadline.
        let track = |f: &NewFlow, key: &Tuple| {
            let l = t.track(key, &pkt(), now);
            let Lookup::Hit(h) = l else { panic!("{l:?}") };
            let rec = t.get(&f.orig).unwrap();
            assert_eq!(h.flags & flags::STATE_MASK, 0);
            (h.flags & (flags::SEEN_REPLY | flags::ASSURED), rec.expires)
        };
        let both = flags::SEEN_REPLY | flags::ASSURED;
        let udp = flow();
        t.insert(&udp, now).unwrap();
        assert_eq!(track(&udp, &udp.orig), (0, at(tm.udp)), "one way");
        assert_eq!(track(&udp, &udp.reply), (both, at(tm.udp_stream)), "reply");
        assert_eq!(track(&udp, &udp.orig), (both, at(tm.udp_stream)), "kept");

        let mut icmp = flow();
        icmp.orig.proto = proto::ICMP;
        icmp.reply = icmp.orig.invert();
        t.insert(&icmp, now).unwrap();
        assert_eq!(track(&icmp, &icmp.orig), (0, at(tm.icmp)));
        let seen = (flags::SEEN_REPLY, at(tm.icmp));
        assert_eq!(track(&icmp, &icmp.reply), seen, "not assured");
        assert_eq!(track(&icmp, &icmp.orig), seen);
    }

    #[test]
    fn a_flow_keeps_each_directions_hop_while_the_tag_holds() {
        let t = FlowTable::new(16, Timeouts::default(), 1);
        let f = flow();
        t.insert(&f, Time::from_secs(1)).unwrap();
        let out = 7 << HOP_TAG_BITS | 5;
        assert_eq!(
            hop(&t, &f.orig, 5, out),
            (out, true),
            "first packet computes"
        );
        assert_eq!(hop(&t, &f.orig, 5, 1), (out, false), "next ones take it");
        let back = 9 << HOP_TAG_BITS | 5;
        assert_eq!(hop(&t, &f.reply, 5, back), (back, true), "per direction");
        assert_eq!(hop(&t, &f.orig, 5, 1), (out, false));
        // Another tag (the routes changed): computed again.
        let out6 = 8 << HOP_TAG_BITS | 6;
        assert_eq!(hop(&t, &f.orig, 6, out6), (out6, true));
        // Tag 0 never takes a cached word; a fill of 0 stores nothing.
        assert_eq!(hop(&t, &f.orig, 0, 0), (0, true));
        assert_eq!(hop(&t, &f.orig, 6, 1), (out6, false));
        // Forgotten by clear_hops.
        t.clear_hops();
        assert_eq!(hop(&t, &f.orig, 6, out6), (out6, true));
        assert_eq!(hop(&t, &f.reply, 5, back), (back, true));
    }
}
