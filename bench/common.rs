//! Shared by the `core` and `memory` benches: the gateway config, flow and
//! frame generators, and a DashMap-indexed flow table to compare ours with.
//!
//! Flows are UDP, inside `10.0.0.0/16` -> remote `198.18.0.0/15`, masqueraded
//! to the outside address `203.0.113.1`. Flow number `k` maps to a distinct
//! original tuple; with [`Ports::Keep`] its reply tuple is also distinct
//! (remote = k >> 10, inside port = k & 1023), so the allocator keeps the
//! inside port on its first try; with [`Ports::Clash`] every flow uses inside
//! port 5000, so all but the first flow to each remote must pick another.

#![allow(dead_code)]

use crossbeam_utils::CachePadded;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use natgw::conntrack::{Dir, InsertError, NewFlow, Time, flags};
use natgw::control::config::Config;
use natgw::engine::{Counters, Engine, Verdict};
use natgw::nat::IfId;
use natgw::packet::{Link, Tuple, proto};
use parking_lot::Mutex;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::Release};

/// Outside address (wan0) every flow is masqueraded to.
pub const OUTSIDE: u32 = 0xcb00_7101; // 203.0.113.1
const INSIDE_NET: u32 = 0x0a00_0000; // 10.0.0.0/16
const REMOTE_NET: u32 = 0xc612_0000; // 198.18.0.0/15
pub const DPORT: u16 = 4500;
pub const LAN: IfId = 0;
pub const WAN: IfId = 1;
/// Frame length: Ethernet 14 + IPv4 20 + UDP 8 + 22 bytes payload.
pub const FRAME: usize = 64;
/// The clock the benches run at; nothing expires (UDP timeouts >= 30 s).
pub const NOW: Time = Time(10_000_000_000);

pub fn config_text(max_flows: u32) -> String {
    format!(
        r#"
[gateway]
seed = 7

[limits]
max_flows = {max_flows}
early_drop = false

[[interface]]
name = "lan0"
role = "inside"
address = "10.0.0.1/16"

[[interface]]
name = "wan0"
role = "outside"
address = "203.0.113.1/24"

[[route]]
to = "0.0.0.0/0"
via = "203.0.113.254"

[[rule]]
oif = "wan0"
src = "10.0.0.0/16"
action = "masquerade"
"#
    )
}

/// A masquerading engine with room for `max_flows` flows.
pub fn engine(max_flows: u32) -> Engine {
    let cfg = Config::parse(&config_text(max_flows), Path::new("bench.toml"))
        .expect("the bench config is valid");
    Engine::new(cfg.engine, cfg.ruleset, cfg.sets)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ports {
    /// Distinct inside ports per remote: the inside port is kept.
    Keep,
    /// Inside port 5000 for all: the allocator must remap most flows.
    Clash,
}

/// The original (inside -> remote) tuple of flow `k` (k < 2^24).
pub fn orig(k: u32, ports: Ports) -> Tuple {
    match ports {
        Ports::Keep => Tuple {
            src: INSIDE_NET + 2 + (k % 65_000),
            dst: REMOTE_NET + (k >> 10),
            sport: 20_000 + (k & 1023) as u16,
            dport: DPORT,
            proto: proto::UDP,
        },
        Ports::Clash => Tuple {
            src: INSIDE_NET + 2 + ((k >> 10) % 65_000),
            dst: REMOTE_NET + 0x1_0000 + (k & 1023),
            sport: 5000,
            dport: DPORT,
            proto: proto::UDP,
        },
    }
}

/// The reply tuple a masqueraded flow with kept port would get.
pub fn reply_kept(o: &Tuple) -> Tuple {
    Tuple {
        src: o.dst,
        dst: OUTSIDE,
        sport: o.dport,
        dport: o.sport,
        proto: o.proto,
    }
}

/// A 64-byte Ethernet/IPv4/UDP frame carrying tuple `t`, checksums valid.
pub fn frame(t: &Tuple) -> [u8; FRAME] {
    let mut out = [0u8; FRAME];
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4(t.src.to_be_bytes(), t.dst.to_be_bytes(), 64)
        .udp(t.sport, t.dport);
    let payload = [0x5au8; FRAME - 42];
    b.write(&mut &mut out[..], &payload)
        .expect("64 bytes hold the frame");
    out
}

/// Source port of a processed (rewritten) frame.
pub fn frame_sport(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[34], f[35]])
}

/// One frame with the interface it arrives on.
#[derive(Clone, Copy)]
pub struct Template {
    pub bytes: [u8; FRAME],
    pub iif: IfId,
}

/// Creates flows `ks` through `engine` (original then one reply, so each
/// is assured) and returns both directions' frames in a shuffled order.
pub fn establish(engine: &Engine, ks: impl Iterator<Item = u32>) -> Vec<Template> {
    let c = Counters::default();
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    for k in ks {
        let o = orig(k, Ports::Keep);
        let f = frame(&o);
        buf[..FRAME].copy_from_slice(&f);
        let v = engine.process(&mut buf, FRAME, Link::Ethernet, LAN, NOW, &c);
        assert!(matches!(v, Verdict::Forward { oif: WAN, .. }), "{v:?}");
        let port = frame_sport(&buf);
        let r = Tuple {
            src: o.dst,
            dst: OUTSIDE,
            sport: o.dport,
            dport: port,
            proto: proto::UDP,
        };
        let rf = frame(&r);
        buf[..FRAME].copy_from_slice(&rf);
        let v = engine.process(&mut buf, FRAME, Link::Ethernet, WAN, NOW, &c);
        assert!(matches!(v, Verdict::Forward { oif: LAN, .. }), "{v:?}");
        out.push(Template { bytes: f, iif: LAN });
        out.push(Template {
            bytes: rf,
            iif: WAN,
        });
    }
    checked_shuffled(out, &c)
}

/// A 64-byte Ethernet/IPv4/TCP frame of tuple `t` (`t.proto` is ignored):
/// `flags` (SYN 0x02, ACK 0x10), `seq`, `ack`, window 64240, and 10 bytes
/// of payload unless it is a SYN.
pub fn frame_tcp(t: &Tuple, flags: u8, seq: u32, ack: u32) -> [u8; FRAME] {
    let mut out = [0u8; FRAME];
    let mut b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4(t.src.to_be_bytes(), t.dst.to_be_bytes(), 64)
        .tcp(t.sport, t.dport, seq, 64240);
    if flags & 0x02 != 0 {
        b = b.syn();
    }
    if flags & 0x10 != 0 {
        b = b.ack(ack);
    }
    let payload = [0x5au8; FRAME - 54];
    let payload: &[u8] = if flags & 0x02 != 0 { &[] } else { &payload };
    b.write(&mut &mut out[..], payload)
        .expect("64 bytes hold the frame");
    out
}

/// Opens TCP connections `ks` through `engine` (SYN, SYN-ACK, ACK: each
/// ESTABLISHED, windows tracked) and returns a data segment of each
/// direction (10 bytes, in window; sent again and again they are
/// retransmissions) in a shuffled order.
pub fn establish_tcp(engine: &Engine, ks: impl Iterator<Item = u32>) -> Vec<Template> {
    let c = Counters::default();
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    let mut run = |f: &[u8; FRAME], iif: IfId, to: IfId| {
        buf[..FRAME].copy_from_slice(f);
        let v = engine.process(&mut buf, FRAME, Link::Ethernet, iif, NOW, &c);
        assert!(
            matches!(v, Verdict::Forward { oif, .. } if oif == to),
            "{v:?}"
        );
        frame_sport(&buf)
    };
    for k in ks {
        let o = Tuple {
            proto: proto::TCP,
            ..orig(k, Ports::Keep)
        };
        let port = run(&frame_tcp(&o, 0x02, 1000, 0), LAN, WAN);
        let r = Tuple {
            src: o.dst,
            dst: OUTSIDE,
            sport: o.dport,
            dport: port,
            proto: proto::TCP,
        };
        run(&frame_tcp(&r, 0x12, 5000, 1001), WAN, LAN);
        run(&frame_tcp(&o, 0x10, 1001, 5001), LAN, WAN);
        let (f, rf) = (
            frame_tcp(&o, 0x10, 1001, 5001),
            frame_tcp(&r, 0x10, 5001, 1011),
        );
        run(&f, LAN, WAN);
        run(&rf, WAN, LAN);
        out.push(Template { bytes: f, iif: LAN });
        out.push(Template {
            bytes: rf,
            iif: WAN,
        });
    }
    checked_shuffled(out, &c)
}

/// `out` shuffled, once `c` shows that setting it up dropped nothing.
fn checked_shuffled(mut out: Vec<Template>, c: &Counters) -> Vec<Template> {
    let s = c.snapshot();
    assert_eq!(s.total_drops(), 0, "{s:?}");
    shuffle(&mut out, 0x5eed);
    out
}

/// Fisher-Yates with a fixed-seed xorshift (no rand dependency).
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// Resident set size of this process in bytes (/proc/self/statm, 4 KiB pages).
pub fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("procfs is mounted");
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}

/// The new flow `k` as the NAT layer would hand it to the table (port kept).
pub fn new_flow(k: u32) -> NewFlow {
    let o = orig(k, Ports::Keep);
    NewFlow {
        orig: o,
        reply: reply_kept(&o),
        tcp_flags: None,
        seg: None,
        flags: 0,
        mark: 0,
        len: 50,
    }
}

// ---------------------------------------------------------------------------
// The DashMap alternative.
//
// Same job and same entry layout as `natgw::conntrack::FlowTable`: a slab of
// all-atomic slots in lazily allocated 64 Ki chunks (so the comparison is
// about the index only), a mutex-guarded free list, and an index from either
// tuple to `slot << 1 | dir` — here one `DashMap` (default shard count,
// ahash) instead of 256 open-addressing shards of `u64` words. Lookup holds
// the DashMap shard's read guard while updating the slot, as ours does.

const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Index key: the packed tuple, hashed as two words.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u64; 2]);

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.0[0]);
        h.write_u64(self.0[1]);
    }
}

/// Same fields (and size, 104 bytes) as the table's private `Slot`.
#[derive(Default)]
pub struct Slot {
    tuples: [[AtomicU64; 2]; 2],
    expires: AtomicU64,
    state: AtomicU32,
    gen_: AtomicU32,
    mark: AtomicU32,
    _born: AtomicU32,
    packets: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    _hops: [AtomicU64; 2],
}

impl Slot {
    fn tuple(&self, d: usize) -> Tuple {
        Tuple::unpack([
            self.tuples[d][0].load(Relaxed),
            self.tuples[d][1].load(Relaxed),
        ])
    }
}

pub struct DashTable {
    index: DashMap<Key, u32, ahash::RandomState>,
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    alloc: Mutex<(u32, Vec<u32>)>,
    live: CachePadded<AtomicUsize>,
    max: usize,
    shards: usize,
}

/// What a lookup returns (mirrors `Lookup::Hit`'s useful fields).
#[derive(Debug, Clone, Copy)]
pub struct DashHit {
    pub idx: u32,
    pub dir: Dir,
    pub other: Tuple,
}

impl DashTable {
    /// A table for `max` flows with DashMap's default shard count
    /// (4 x CPUs rounded up to a power of two: 8 here).
    pub fn new(max: usize) -> DashTable {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        DashTable::with_shards(max, (cpus * 4).next_power_of_two())
    }

    pub fn with_shards(max: usize, shards: usize) -> DashTable {
        DashTable {
            index: DashMap::with_hasher_and_shard_amount(ahash::RandomState::with_seed(7), shards),
            shards,
            chunks: (0..max.div_ceil(CHUNK)).map(|_| OnceLock::new()).collect(),
            alloc: Mutex::new((0, Vec::new())),
            live: CachePadded::new(AtomicUsize::new(0)),
            max,
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn len(&self) -> usize {
        self.live.load(Relaxed)
    }

    fn slot(&self, idx: u32) -> &Slot {
        &self.chunks[(idx >> CHUNK_BITS) as usize]
            .get()
            .expect("slot chunks exist before their slots are indexed")[idx as usize & (CHUNK - 1)]
    }

    /// The equivalent of `FlowTable::track` for a UDP packet of `len` bytes.
    #[inline]
    pub fn track(&self, key: &Tuple, len: u32, now: Time) -> Option<DashHit> {
        let g = self.index.get(&Key(key.pack()))?;
        let w = *g.value();
        let (idx, d) = (w >> 1, (w & 1) as usize);
        let s = self.slot(idx);
        if s.expires.load(Relaxed) <= now.0 {
            return None;
        }
        let dir = if d == 0 { Dir::Orig } else { Dir::Reply };
        let _ = s.state.fetch_update(Relaxed, Relaxed, |old| {
            let mut new = old;
            if dir == Dir::Reply {
                new |= flags::SEEN_REPLY;
            }
            if new & flags::SEEN_REPLY != 0 {
                new |= flags::ASSURED;
            }
            (new != old).then_some(new)
        });
        s.expires
            .store(now.0.saturating_add(120 * 1_000_000_000), Relaxed);
        s.packets[d].fetch_add(1, Relaxed);
        s.bytes[d].fetch_add(len as u64, Relaxed);
        Some(DashHit {
            idx,
            dir,
            other: s.tuple(1 - d),
        })
    }

    /// The equivalent of `FlowTable::insert`: fails if full, if the
    /// original tuple exists, or if the reply tuple is taken.
    pub fn insert(&self, f: &NewFlow, now: Time) -> Result<u32, InsertError> {
        if self.live.fetch_add(1, Relaxed) >= self.max {
            self.live.fetch_sub(1, Relaxed);
            return Err(InsertError::Full);
        }
        let idx = {
            let mut a = self.alloc.lock();
            match a.1.pop() {
                Some(i) => i,
                None => {
                    a.0 += 1;
                    a.0 - 1
                }
            }
        };
        self.chunks[(idx >> CHUNK_BITS) as usize]
            .get_or_init(|| (0..CHUNK).map(|_| Slot::default()).collect());
        let s = self.slot(idx);
        for (d, t) in [f.orig, f.reply].iter().enumerate() {
            let [a, b] = t.pack();
            s.tuples[d][0].store(a, Relaxed);
            s.tuples[d][1].store(b, Relaxed);
        }
        s.state.store(f.flags, Relaxed);
        s.mark.store(f.mark, Relaxed);
        s.packets[0].store(1, Relaxed);
        s.bytes[0].store(f.len as u64, Relaxed);
        s.packets[1].store(0, Relaxed);
        s.bytes[1].store(0, Relaxed);
        s.expires
            .store(now.0.saturating_add(30 * 1_000_000_000), Release);
        let (ko, kr) = (Key(f.orig.pack()), Key(f.reply.pack()));
        let r = match self.index.entry(ko) {
            Entry::Occupied(_) => Err(InsertError::OrigExists),
            Entry::Vacant(v) => {
                v.insert(idx << 1);
                Ok(())
            }
        }
        .and_then(|()| match self.index.entry(kr) {
            Entry::Occupied(_) => {
                self.index.remove(&ko);
                Err(InsertError::ReplyTaken)
            }
            Entry::Vacant(v) => {
                v.insert(idx << 1 | 1);
                Ok(())
            }
        });
        if let Err(e) = r {
            self.free(idx);
            return Err(e);
        }
        Ok(idx)
    }

    fn free(&self, idx: u32) {
        let s = self.slot(idx);
        s.expires.store(0, Relaxed);
        s.gen_.fetch_add(1, Relaxed);
        self.alloc.lock().1.push(idx);
        self.live.fetch_sub(1, Relaxed);
    }

    /// Removes the flow in slot `idx` (both index entries).
    pub fn remove(&self, idx: u32) {
        let s = self.slot(idx);
        self.index.remove(&Key(s.tuple(0).pack()));
        self.index.remove(&Key(s.tuple(1).pack()));
        self.free(idx);
    }
}
