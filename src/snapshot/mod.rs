//! Snapshots: the state a running gateway needs so that its flows live on
//! in another process — after a handover, a restart or a crash.
//!
//! [`Snapshot::capture`] reads a running [`Engine`]; [`encode`] /
//! [`write_atomic`] turn it into a file; [`read`] / [`decode`] check and
//! load one (this version or an older one); [`Snapshot::restore`] puts it
//! into another `Engine`, re-based onto that process's clock.
//!
//! # What is stored
//!
//! | part | contents |
//! |---|---|
//! | flows | both tuples (so the translation), TCP state, flag bits (below), mark, packets and bytes per direction, time left on the timer, age (v3: so the session log keeps the flow's start) |
//! | EIM mappings | inside endpoint, outside endpoint, endpoint-independent filtering flag, the longest time left among the flows that hold it |
//! | set entries | per set name, every live entry except the permanent ones the config file lists (a restore gets those from its own config): prefix and time left, or none for a permanent entry added at run time |
//! | LB persistence entries | service (VIP, port, protocol), client network and netmask, real server and port, time left |
//! | LB services (v2) | every virtual service spec in force at the capture, run-time changes included |
//! | counters (v2) | the counters summed over the workers at the capture (filled in by the caller: the engine does not own them) |
//!
//! Port usage counts and EIM reference counts are not stored: a restore
//! derives them from the flows it puts back, so they cannot disagree.
//! Not stored at all: fragment-tracking entries (they live seconds),
//! the exhaustion counts of `natgw stats` port use, ICMP rate-limit state,
//! scheduler positions (`rr` restarts at the first server), real-server
//! health (health checks re-learn it) and per-real-server totals.
//!
//! # Time
//!
//! Engine times are nanoseconds on the process's own clock
//! (`CLOCK_MONOTONIC`), meaningless in another process after a reboot. So
//! every time is stored as the time *left* at the capture instant
//! (nanoseconds), and the payload starts with the wall-clock
//! time of the capture (`captured_unix_ns`, nanoseconds since the Unix
//! epoch). A restore at engine time `now` puts a deadline at
//! `now + left - elapsed`, where `elapsed` is chosen by
//! [`RestoreOptions::elapsed`]:
//!
//! - [`Elapsed::WallClock`] (the default): the wall-clock time between the
//!   capture and the restore, 0 if the wall clock went backwards. Right for
//!   crash recovery from a periodic snapshot, where minutes may have gone
//!   by, and harmless for a handover (a few milliseconds).
//! - [`Elapsed::Ignore`]: 0, as if no time had passed (when the wall clock
//!   cannot be trusted, e.g. a host without NTP after a reboot).
//! - [`Elapsed::Fixed`]: a given duration (tests, or a caller that knows).
//!
//! Whatever has `left <= elapsed` is expired and not restored (counted in
//! the [`RestoreReport`]). A flow's `left` is first cut to the longest
//! timeout of the restoring engine's config (no gateway sets a timer
//! further ahead), counted as `flows_clamped`.
//!
//! # File layout
//!
//! All integers in the header are little-endian. 32 bytes of header, then
//! the payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `NATGWSNP` (ASCII) |
//! | 8 | 2 | format version (u16): 1, 2 or 3; [`CURRENT_VERSION`] is 3 |
//! | 10 | 2 | flags (u16): none defined, must be 0; a reader refuses bits it does not know (a future writer sets one only to keep old readers away) |
//! | 12 | 4 | CRC-32 (IEEE, as zlib's `crc32`) of the payload |
//! | 16 | 8 | payload length in bytes (u64); the file is exactly header + payload |
//! | 24 | 4 | reserved, 0 |
//! | 28 | 4 | CRC-32 of bytes 0..28 (the header itself) |
//! | 32 | n | payload |
//!
//! Every future version keeps bytes 0..12 (magic, version, flags) where
//! they are, so any natgw can tell a newer file from a corrupt one.
//!
//! The payload is a [postcard](https://postcard.jamesmunns.com/wire-format)
//! encoding (serde; unsigned integers as LEB128 varints, `bool` and `u8`
//! as one byte, sequences and strings prefixed by a varint length,
//! `Option` as a 0/1 byte then the value, structs as their fields in
//! order, fixed arrays as their elements). Addresses are 4 bytes in
//! network order. Version 3, field by field:
//!
//! ```text
//! Payload  = captured_unix_ns: u64
//!            flows:       seq<Flow>
//!            eim:         seq<Eim>
//!            sets:        seq<Set>
//!            persistence: seq<Persist>
//!            services_json: option<string>   JSON array of lb::ServiceSpec (serde's form)
//!            counters:    option<seq<(string, u64)>>  "rx_packets", ...; drops as "drop.<name>"
//! Flow     = orig: Tuple, reply: Tuple, tcp_state: u8, flags: u32, mark: u32,
//!            packets: [u64; 2], bytes: [u64; 2], remaining_ns: u64, age_ns: u64
//! Tuple    = src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8
//! Eim      = inside_addr: [u8; 4], inside_port: u16, outside_addr: [u8; 4],
//!            outside_port: u16, eif: bool, remaining_ns: u64
//! Set      = name: string, entries: seq<Member>
//! Member   = addr: [u8; 4], len: u8, remaining_ns: option<u64>   (none: permanent)
//! Persist  = vip: [u8; 4], vport: u16, proto: u8, client: [u8; 4], netmask: u8,
//!            real: [u8; 4], real_port: u16, remaining_ns: u64
//! ```
//!
//! `orig` is the tuple of the packet that created the flow as received,
//! `reply` the tuple a reply has on arrival (the inverse of the translated
//! original); the translation is the difference. `packets`/`bytes` are
//! `[original direction, reply direction]`. `tcp_state` is Linux's order:
//! 0 NONE, 1 SYN_SENT, 2 SYN_RECV, 3 ESTABLISHED, 4 FIN_WAIT, 5 CLOSE_WAIT,
//! 6 LAST_ACK, 7 TIME_WAIT, 8 CLOSE, 9 SYN_SENT2. `mark` is the flow's rule
//! word (`destination rule number << 16 | source rule number`, 1-based, 0
//! for none) in the ruleset of the process that captured it. `flags` bits:
//!
//! | bit | meaning |
//! |---|---|
//! | 8 | SEEN_REPLY: a reply was seen |
//! | 9 | ASSURED: established / two-way (early drop spares it) |
//! | 16 | SNAT: source translated (counts in port use of `reply.dst`) |
//! | 17 | DNAT: destination translated |
//! | 18 | EIM: holds the EIM mapping of `orig.src:orig.sport` |
//! | 19 | EIF_IN: let in by endpoint-independent filtering; holds the mapping of `reply.src:reply.sport` |
//! | 20 | HAIRPIN |
//! | 21 | LB: scheduled to a real server (`orig.dst:dport` the VIP, `reply.src:sport` the real) |
//! | 24-31 | the flow's mark (a rule's `set_mark`, 1-255; 0 none) |
//!
//! `age_ns` is how long the flow had lived at the capture; a restore puts
//! its start that far (plus the elapsed time) back from its own clock.
//!
//! Version 2 is version 3 without `age_ns` in each flow (a restore from
//! it takes the restore as the flows' start). natgw reads it.
//!
//! Version 1 is the same header and the version 2 payload without the last two
//! fields (`services_json`, `counters`): it had no services and no
//! counters. natgw reads it; a restore from it keeps the services of the
//! config and [`Snapshot::services`] / [`Snapshot::counters`] are `None`.
//!
//! # Versions: a migration chain
//!
//! Only the current version has a full decoder and encoder
//! (`format/current.rs`: its payload struct and the conversions from and
//! to a [`Snapshot`], with every check). An old version keeps only what
//! reading it needs, frozen in its own module (`format/v1.rs`): its
//! payload struct, the record types it introduced, and an upgrade step
//! to the next version. Reading a file decodes the payload into the
//! struct of its version, upgrades it step by step (v1 -> v2 -> ... ->
//! current), then converts the current payload. natgw writes only the
//! current version (tests write old ones through test-only downgrade
//! steps).
//!
//! To add version N+1 (N the current version):
//!
//! 1. Freeze version N: copy the current `Payload` struct into a new
//!    `format/vN.rs` as it is, and move there (or leave in the module that
//!    introduced them) the record types N+1 changes. Never edit a frozen
//!    module afterwards.
//! 2. Give `vN::Payload` an `upgrade(self) -> current::Payload` step (and a
//!    `#[cfg(test)] downgrade` for the tests' old-file writer); point the
//!    upgrade of version N-1 at `vN::Payload` instead of the current one.
//! 3. Change `current::Payload` and its conversions; bump
//!    [`CURRENT_VERSION`]; add `N => take_all::<vN::Payload>(..)?.upgrade()`
//!    to `decode_payload` (and one more `.upgrade()` to each older arm).
//! 4. Describe the new payload above, check in `testdata/v{N+1}.snap`
//!    (`write_fixtures`) next to the old files, which must keep loading.
//!
//! # Checks on reading
//!
//! [`read`] refuses, each with a [`SnapshotError`] naming the file and the
//! problem: a file over the size limit (before reading it), a bad magic, a
//! truncated file, a version it does not read, a header or payload
//! checksum mismatch, unknown flags, bytes after the payload, and a payload
//! that does not decode. Arbitrary bytes never make it panic.
//!
//! [`Snapshot::restore`] then skips, counted as `flows_bad`, each flow no
//! running gateway writes ([`FlowEntry::is_consistent`]: e.g. an original
//! and a reply tuple of two protocols) and goes on with the rest.

mod format;

#[cfg(test)]
mod tests;

pub use format::{
    CURRENT_VERSION, DEFAULT_MAX_BYTES, HEADER_LEN, MAGIC, OLDEST_VERSION, SnapshotError, decode,
    decode_body, decode_body_of, decode_from, encode, encode_body, max_bytes_for, read,
    write_atomic, write_transient,
};

use crate::conntrack::{Dir, FlowRecord, InsertError, TcpState, Time};
use crate::engine::{CounterSnapshot, Engine};
use crate::lb::{LbError, LbTable, PersistEntry, ServiceKey, ServiceSpec};
use crate::nat::{Prefix, nat_flags};
use crate::packet::{Tuple, proto};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Everything a gateway's flows need to live on in another process. Plain
/// data; all times are relative to the capture (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Format version it was decoded from ([`CURRENT_VERSION`] for a
    /// capture).
    pub version: u16,
    /// Wall-clock time of the capture, nanoseconds since the Unix epoch.
    pub captured_unix_ns: u64,
    pub flows: Vec<FlowEntry>,
    pub eim: Vec<EimEntry>,
    /// Sets with at least one stored entry, by name.
    pub sets: Vec<SetSnapshot>,
    pub persistence: Vec<PersistSnap>,
    /// The virtual services at the capture (always `Some` from
    /// [`capture`](Self::capture)); `None` from a version 1 file.
    pub services: Option<Vec<ServiceSpec>>,
    /// Counters at the capture. [`Snapshot::capture`] leaves this `None`:
    /// the workers own the counters, so the caller fills it in. Always
    /// `None` from a version 1 file.
    pub counters: Option<CounterSnapshot>,
}

/// A flow, its timer as the time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEntry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub tcp_state: TcpState,
    /// [`crate::conntrack::flags`] and [`nat_flags`] bits.
    pub flags: u32,
    pub mark: u32,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub remaining_ns: u64,
    /// How long the flow had lived at the capture (0: unknown, from a
    /// version 1 or 2 file).
    pub age_ns: u64,
}

impl FlowEntry {
    /// The flow of `r` as seen at `now`.
    pub fn from_record(r: &FlowRecord, now: Time) -> FlowEntry {
        FlowEntry {
            orig: r.orig,
            reply: r.reply,
            tcp_state: r.tcp_state,
            flags: r.flags,
            mark: r.mark,
            packets: r.packets,
            bytes: r.bytes,
            remaining_ns: r.remaining(now).0,
            age_ns: now.0.saturating_sub(r.born.0),
        }
    }

    /// True if the flow is one a running gateway can have: both tuples of
    /// one protocol; a TCP state only on a TCP flow; an ICMP flow's id in
    /// the request's `sport` and the reply's `dport` (the other port 0);
    /// no ports on other protocols; EIM / EIF_IN (one of them) only on
    /// UDP, LB only on TCP or UDP.
    pub fn is_consistent(&self) -> bool {
        let (o, r) = (&self.orig, &self.reply);
        if o.proto != r.proto {
            return false;
        }
        if o.proto != proto::TCP && self.tcp_state != TcpState::None {
            return false;
        }
        let ports_ok = match o.proto {
            proto::TCP | proto::UDP => true,
            proto::ICMP => o.dport == 0 && r.sport == 0,
            _ => o.sport == 0 && o.dport == 0 && r.sport == 0 && r.dport == 0,
        };
        let eim = self.flags & (nat_flags::EIM | nat_flags::EIF_IN);
        let eim_ok = eim == 0 || (o.proto == proto::UDP && eim.count_ones() == 1);
        let lb_ok = self.flags & nat_flags::LB == 0 || matches!(o.proto, proto::TCP | proto::UDP);
        ports_ok && eim_ok && lb_ok
    }

    /// The record to insert at `now`, `elapsed_ns` after the capture;
    /// `None` if its timer ran out by then.
    pub fn to_record(&self, now: Time, elapsed_ns: u64) -> Option<FlowRecord> {
        let left = rebase(self.remaining_ns, elapsed_ns)?;
        Some(FlowRecord {
            orig: self.orig,
            reply: self.reply,
            tcp_state: self.tcp_state,
            flags: self.flags,
            mark: self.mark,
            expires: now.saturating_add(Time(left)),
            // Its start: its age at the capture plus the time since, back
            // from now (the restore's time when the file did not say).
            born: if self.age_ns == 0 {
                now
            } else {
                Time(now.0.saturating_sub(self.age_ns.saturating_add(elapsed_ns)))
            },
            packets: self.packets,
            bytes: self.bytes,
        })
    }
}

/// An endpoint-independent mapping. The mapping lives as long as flows
/// hold it; `remaining_ns` is the longest time left among them (for
/// listings; a restore counts the references from the flows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EimEntry {
    pub inside: (u32, u16),
    pub outside: (u32, u16),
    pub eif: bool,
    pub remaining_ns: u64,
}

/// The stored entries of one address set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSnapshot {
    pub name: String,
    pub entries: Vec<SetMember>,
}

/// One set entry; `remaining_ns` `None` is a permanent entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetMember {
    pub prefix: Prefix,
    pub remaining_ns: Option<u64>,
}

/// A load-balancer persistence entry, its deadline as the time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistSnap {
    pub service: ServiceKey,
    /// Client network (masked by `netmask`).
    pub client: u32,
    pub netmask: u8,
    pub real: u32,
    pub port: u16,
    pub remaining_ns: u64,
}

/// How much time to take off every stored "time left" on restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Elapsed {
    /// The wall-clock time since the capture (0 if the clock went back).
    #[default]
    WallClock,
    /// None: as if the restore happened at the capture instant.
    Ignore,
    /// This much.
    Fixed(Duration),
}

/// Which virtual services the restored engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServicePolicy {
    /// Replace the engine's services by the snapshot's (run-time changes
    /// survive). A version 1 snapshot has none: the engine's stay.
    #[default]
    FromSnapshot,
    /// Keep the engine's services (those of its config).
    FromConfig,
}

/// The choices a restore leaves to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreOptions {
    pub elapsed: Elapsed,
    pub services: ServicePolicy,
    /// A flow whose original tuple the engine already has replaces it
    /// (the changes of a handover, over its full copy); otherwise it is
    /// skipped as a duplicate.
    pub replace: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Time taken off every timer (see [`Elapsed`]), in milliseconds.
    pub elapsed_ms: u64,
    /// Services installed from the snapshot; `None` when the engine kept
    /// its own.
    pub services: Option<usize>,
    pub flows: usize,
    /// Flows whose timer ran out by the restore.
    pub flows_expired: usize,
    /// Flows whose original or reply tuple the engine already had.
    pub flows_duplicate: usize,
    /// Flows that did not fit under `max_flows`.
    pub flows_table_full: usize,
    /// Flows no running gateway writes, skipped: tuples of two protocols,
    /// a TCP state on another protocol, misplaced ICMP ids or ports, NAT
    /// flags on a protocol that never gets them (see
    /// [`FlowEntry::is_consistent`]).
    #[serde(default)]
    pub flows_bad: usize,
    /// With [`RestoreOptions::replace`]: flows that replaced the engine's
    /// copy of the same flow (also counted in `flows`).
    #[serde(default)]
    pub flows_replaced: usize,
    /// With [`RestoreOptions::replace`]: other flows of the engine removed
    /// because they held a restored flow's reply tuple.
    #[serde(default)]
    pub flows_displaced: usize,
    /// Restored flows (counted in `flows`) whose time left was longer than
    /// the longest timeout of the engine's config, cut down to it.
    #[serde(default)]
    pub flows_clamped: usize,
    /// EIM mappings live after the restore (each held by a restored flow).
    pub eim: usize,
    /// Stored mappings not restored: no restored flow holds them, or they
    /// clash with a mapping the engine had.
    pub eim_dropped: usize,
    pub set_entries: usize,
    pub set_entries_expired: usize,
    /// Stored sets the engine has no set for (their entries are skipped).
    pub sets_missing: Vec<String>,
    pub persistence: usize,
    /// Persistence entries expired, or whose service, persistence or real
    /// server the engine does not have.
    pub persistence_skipped: usize,
}

/// Why a restore failed. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot services cannot be installed: {0}")]
    Services(#[from] LbError),
}

/// The longest time a set entry can be given (`natgw set add --timeout`
/// takes u32 seconds).
const SET_TIMEOUT_MAX_NS: u64 = u32::MAX as u64 * 1_000_000_000;

fn rebase(remaining_ns: u64, elapsed_ns: u64) -> Option<u64> {
    (remaining_ns > elapsed_ns).then(|| remaining_ns - elapsed_ns)
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

impl Snapshot {
    /// Reads the state of `engine` at engine time `now` (its clock), with
    /// the wall clock read now. Safe while workers run: each flow is a
    /// consistent record checked against the table's index, flows that
    /// come and go meanwhile may or may not be in it. `counters` is left
    /// `None` for the caller.
    pub fn capture(engine: &Engine, now: Time) -> Snapshot {
        Snapshot::capture_at(engine, now, unix_now_ns())
    }

    /// As [`capture`](Self::capture) with the wall-clock time given.
    pub fn capture_at(engine: &Engine, now: Time, captured_unix_ns: u64) -> Snapshot {
        Snapshot::capture_with(engine, now, captured_unix_ns, None)
    }

    /// The changes of a handover: as [`capture`](Self::capture), but only
    /// the flows a packet created or touched at or after `since` (see
    /// [`FlowTable::for_each_touched_since`](crate::conntrack::FlowTable::for_each_touched_since)).
    /// EIM mappings, set entries, persistence entries and services are
    /// whole, as in a full capture. Restore it with
    /// [`RestoreOptions::replace`] over the full capture taken at `since`.
    pub fn capture_touched(engine: &Engine, now: Time, since: Time) -> Snapshot {
        Snapshot::capture_with(engine, now, unix_now_ns(), Some(since))
    }

    fn capture_with(
        engine: &Engine,
        now: Time,
        captured_unix_ns: u64,
        since: Option<Time>,
    ) -> Snapshot {
        let table = engine.table();
        let want_eim = !engine.nat().eim_mappings().is_empty();
        // Longest time left among the flows holding each EIM mapping.
        let mut eim_left: HashMap<(u32, u16), u64> = HashMap::new();
        let mut flows = Vec::with_capacity(if since.is_some() { 1024 } else { table.len() });
        let each =
            |f: &mut dyn FnMut(crate::conntrack::FlowId, crate::conntrack::FlowRecord)| match since
            {
                Some(t) => table.for_each_touched_since(t, f),
                None => table.for_each(f),
            };
        each(&mut |_, r| {
            if r.expires <= now {
                return;
            }
            // The record was read without a lock; keep it only if the
            // index (under its lock) still maps its original tuple to its
            // reply tuple, so a slot reused mid-read cannot leak in.
            if table.peek(&r.orig, now) != Some((Dir::Orig, r.reply)) {
                return;
            }
            let f = FlowEntry::from_record(&r, now);
            if want_eim {
                let key = if r.has(nat_flags::EIM) {
                    Some((r.orig.src, r.orig.sport))
                } else if r.has(nat_flags::EIF_IN) {
                    Some((r.reply.src, r.reply.sport))
                } else {
                    None
                };
                if let Some(k) = key {
                    let e = eim_left.entry(k).or_default();
                    *e = (*e).max(f.remaining_ns);
                }
            }
            flows.push(f);
        });
        let eim = engine
            .nat()
            .eim_mappings()
            .into_iter()
            .map(|m| EimEntry {
                inside: m.inside,
                outside: m.outside,
                eif: m.eif,
                remaining_ns: eim_left.get(&m.inside).copied().unwrap_or(0),
            })
            .collect();

        let all_sets = engine.sets();
        let mut names: Vec<&String> = all_sets.keys().collect();
        names.sort();
        let sets = names
            .into_iter()
            .filter_map(|name| {
                let set = &all_sets[name];
                let config: HashSet<Prefix> = set.config_entries().into_iter().collect();
                let entries: Vec<SetMember> = set
                    .members(now)
                    .into_iter()
                    .filter(|(p, d)| !(d.is_none() && config.contains(p)))
                    .map(|(prefix, d)| SetMember {
                        prefix,
                        remaining_ns: d.map(|d| d.saturating_sub(now).0),
                    })
                    .collect();
                (!entries.is_empty()).then(|| SetSnapshot {
                    name: name.clone(),
                    entries,
                })
            })
            .collect();

        let lb = engine.lb();
        let persistence = lb
            .entries(now)
            .into_iter()
            .map(|e| PersistSnap {
                service: e.service,
                client: e.client,
                netmask: e.netmask,
                real: e.real,
                port: e.port,
                remaining_ns: e.expires.saturating_sub(now).0,
            })
            .collect();

        Snapshot {
            version: CURRENT_VERSION,
            captured_unix_ns,
            flows,
            eim,
            sets,
            persistence,
            services: Some(lb.specs()),
            counters: None,
        }
    }

    /// The time [`Elapsed`] stands for, for this snapshot.
    pub fn elapsed(&self, e: Elapsed) -> Duration {
        match e {
            Elapsed::Ignore => Duration::ZERO,
            Elapsed::Fixed(d) => d,
            Elapsed::WallClock => {
                Duration::from_nanos(unix_now_ns().saturating_sub(self.captured_unix_ns))
            }
        }
    }

    /// Puts the snapshot into `engine` (normally a fresh one, before its
    /// workers start) at engine time `now`. In order: the services (per
    /// [`RestoreOptions::services`]; if they cannot be installed nothing is
    /// changed), set entries, EIM mappings, flows with their NAT and LB
    /// bookkeeping (port use, EIM references, real-server connection
    /// counts), then persistence entries. Flows whose tuples the engine
    /// already has, that do not fit, or that no gateway writes
    /// ([`FlowEntry::is_consistent`]) are skipped and counted; a flow's
    /// time left is cut to the engine's longest timeout
    /// ([`Timeouts::longest`](crate::conntrack::Timeouts::longest)),
    /// counted too.
    pub fn restore(
        &self,
        engine: &Engine,
        now: Time,
        opts: RestoreOptions,
    ) -> Result<RestoreReport, RestoreError> {
        let elapsed = self.elapsed(opts.elapsed);
        let el = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        let mut rep = RestoreReport {
            elapsed_ms: elapsed.as_millis() as u64,
            ..RestoreReport::default()
        };

        if let (ServicePolicy::FromSnapshot, Some(specs)) = (opts.services, &self.services) {
            let t = LbTable::build(specs, &engine.lb())?;
            engine.swap_lb(t);
            rep.services = Some(specs.len());
        }

        let sets = engine.sets();
        for s in &self.sets {
            let Some(set) = sets.get(&s.name) else {
                rep.sets_missing.push(s.name.clone());
                continue;
            };
            for e in &s.entries {
                let deadline = match e.remaining_ns {
                    None => None,
                    // No command sets more than u32::MAX seconds: a longer
                    // time left is cut to that (never "forever").
                    Some(left) => match rebase(left.min(SET_TIMEOUT_MAX_NS), el) {
                        Some(l) => Some(now.saturating_add(Time(l))),
                        None => {
                            rep.set_entries_expired += 1;
                            continue;
                        }
                    },
                };
                set.add_until(e.prefix, deadline);
                rep.set_entries += 1;
            }
        }

        let nat = engine.nat();
        let mut adopted = 0;
        for m in &self.eim {
            if nat.adopt_eim(m.inside, m.outside, m.eif) {
                adopted += 1;
            }
        }
        let longest_ns = u64::from(engine.table().timeouts().longest()) * 1_000_000_000;
        for f in &self.flows {
            if !f.is_consistent() {
                rep.flows_bad += 1;
                continue;
            }
            let clamped = f.remaining_ns > longest_ns;
            let f = FlowEntry {
                remaining_ns: f.remaining_ns.min(longest_ns),
                ..*f
            };
            let Some(r) = f.to_record(now, el) else {
                rep.flows_expired += 1;
                if opts.replace {
                    engine.remove_flow(&f.orig);
                }
                continue;
            };
            let prev = if opts.replace {
                // The newer record wins: a flow of ours that holds its
                // reply tuple (made meanwhile from a packet of the other
                // direction) goes too.
                if let Some((d, other)) = engine.table().peek(&r.reply, now) {
                    let holder = if d == Dir::Orig { r.reply } else { other };
                    if holder != r.orig && engine.remove_flow(&holder) {
                        rep.flows_displaced += 1;
                    }
                }
                engine.take_flow(&r.orig)
            } else {
                None
            };
            rep.flows_replaced += usize::from(prev.is_some());
            match engine.restore_flow_over(&r, prev.as_ref()) {
                Ok(()) => {
                    nat.adopt_flow(&r);
                    rep.flows += 1;
                    rep.flows_clamped += usize::from(clamped);
                }
                // (A restored flow is never refused for its source.)
                Err(InsertError::Full | InsertError::SourceLimit) => rep.flows_table_full += 1,
                Err(InsertError::OrigExists | InsertError::ReplyTaken) => rep.flows_duplicate += 1,
            }
        }
        let unused = nat.drop_unreferenced_eim();
        rep.eim = nat.eim_mappings().len();
        rep.eim_dropped = self.eim.len() - adopted + unused;

        let entries: Vec<PersistEntry> = self
            .persistence
            .iter()
            .filter_map(|p| {
                let left = rebase(p.remaining_ns, el)?;
                Some(PersistEntry {
                    service: p.service,
                    client: p.client,
                    netmask: p.netmask,
                    real: p.real,
                    port: p.port,
                    expires: now.saturating_add(Time(left)),
                })
            })
            .collect();
        rep.persistence = engine.lb().restore(&entries, now);
        rep.persistence_skipped = self.persistence.len() - rep.persistence;
        Ok(rep)
    }
}
