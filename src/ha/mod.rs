//! HA pair: flow-state sync to a standby node, and the node's role.
//!
//! keepalived (VRRP) decides which node holds the virtual addresses and
//! tells natgw through its notify script (`natgw ha role master|backup|
//! fault`); natgw does not elect anything itself. This module keeps the
//! two nodes' flow tables equal so that the standby, when it becomes
//! active, already has every flow with the same translation and ports.
//!
//! # Roles
//!
//! - **master** (active): forwards; streams its flow changes to the peer.
//! - **backup** / **fault** (standby): forwards nothing (transit packets
//!   dropped and counted `standby`), answers ARP and ping for the
//!   interfaces' own addresses only (the shared ones are the active
//!   node's), applies what the peer streams. A node starts as backup.
//!
//! # The stream
//!
//! One sync thread per node, with a kernel UDP socket on the sync link
//! (`[ha] local`, accepting only `[ha] peer`). What it sends:
//! - **changes** (active node): workers note each new flow and each TCP
//!   state change in per-worker rings ([`crate::engine::ChangeLog`],
//!   never blocking; a full ring is counted as `tap_missed`); the sync
//!   thread drains them every millisecond, reads each flow's current record
//!   and sends it (a flow that is gone by then is sent as a deletion: time
//!   left 0). `natgw flush` deletions go the same way.
//! - **refresh** (active node), every `[ha] refresh` seconds: every flow a
//!   packet touched since the last refresh (its timer moved on), and the
//!   whole EIM, set and persistence state, so the standby's timers stay
//!   within one refresh of the active's and what a full ring missed
//!   arrives anyway.
//! - **bulk** on request: everything (`natgw ha status` shows it). A node
//!   that starts, sees the peer begin a new stream, or cannot repair a gap
//!   asks for one and reports `in sync` only once it has it all.
//!
//! Every datagram carries the sender's epoch (its stream id) and the
//! sequenced ones a sequence number; the receiver applies them in order,
//! ACKs cumulatively, NACKs gaps, and the sender resends on a NACK or
//! after `RTO` without an ACK ([`stream`]). A gap not filled within
//! `GAP_LIMIT` is skipped and repaired by a bulk resync. The wire format
//! ([`wire`]) is versioned and checked (CRC-32, or an HMAC-SHA256 with
//! `[ha] key`); bad, truncated, foreign, replayed and duplicate datagrams
//! are dropped and counted. The body of a change datagram is a snapshot
//! payload ([`crate::snapshot`]), applied with the snapshot restore (ports,
//! EIM references and real-server counts follow the flows).
//!
//! Not streamed: the standby's own expiry removes flows whose timers run
//! out (the active node's expiries are not sent); LB services changed at
//! run time (`natgw lb`) are not synced (configure both nodes alike).

pub mod stream;
pub mod wire;

use crate::conntrack::Time;
use crate::dataplane::sys;
use crate::engine::Engine;
use crate::packet::Tuple;
use crate::snapshot::{
    self, Elapsed, FlowEntry, RestoreOptions, ServicePolicy, SetSnapshot, Snapshot,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stream::{Incoming, Item, Outgoing};
use wire::{Auth, Header, Kind, WireError};

/// Resend a sequenced datagram not acknowledged within this.
const RTO: Duration = Duration::from_millis(40);
/// Sequenced datagrams in flight at most.
const WINDOW: usize = 2048;
/// Bytes queued for sending at most (a bulk of ~4M flows).
const MAX_QUEUED: usize = 256 << 20;
/// Early datagrams held for reordering at most.
const MAX_HELD: usize = 8192;
/// Give up on a gap after this and resync in bulk.
const GAP_LIMIT: Duration = Duration::from_secs(1);
/// Heartbeat interval.
const ALIVE_EVERY: Duration = Duration::from_millis(100);
/// The peer is down after this long without a valid datagram from it.
const DEAD_AFTER: Duration = Duration::from_secs(1);
/// Ask again for a bulk that has not begun after this.
const RESYNC_RETRY: Duration = Duration::from_secs(1);
/// Acknowledge at least this often while datagrams arrive.
const ACK_EVERY: Duration = Duration::from_millis(5);
/// Socket buffers of the sync socket, bytes.
const SOCKET_BUFFER: usize = 8 << 20;
/// Flows per change datagram to start from (halved while too big).
const FLOWS_PER_DATAGRAM: usize = 24;

/// `[ha]`: the sync link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HaConfig {
    /// This node's sync address (a kernel UDP socket on the sync link).
    pub local: SocketAddrV4,
    /// The peer's; datagrams from anywhere else are refused.
    pub peer: SocketAddrV4,
    /// HMAC-SHA256 key for every datagram (both nodes alike); `None`: a
    /// CRC-32 only (a private sync link).
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    /// Seconds between refreshes of the flows touched meanwhile.
    pub refresh_secs: u32,
    /// Largest datagram sent (IP payload), at most the sync link's MTU
    /// minus 28.
    pub max_datagram: u16,
}

/// A node's role, as keepalived gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Backup,
    Fault,
}

impl Role {
    fn from_u8(v: u8) -> Role {
        match v {
            0 => Role::Master,
            1 => Role::Backup,
            _ => Role::Fault,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            Role::Master => 0,
            Role::Backup => 1,
            Role::Fault => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
            Role::Fault => "fault",
        }
    }
}

/// What `natgw ha status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    pub role: String,
    pub local: String,
    pub peer: String,
    /// A valid datagram came from the peer within the last second.
    pub peer_alive: bool,
    /// The peer's role from its last heartbeat.
    pub peer_role: Option<String>,
    /// This node holds the peer's state: it completed a bulk resync and
    /// has no gap since, or it is the active node.
    pub in_sync: bool,
    /// This node's stream: epoch, next sequence number, highest
    /// acknowledged, in flight, queued.
    pub epoch: u64,
    pub next_seq: u64,
    pub acked_seq: u64,
    pub in_flight: u64,
    pub queued: u64,
    /// The oldest unacknowledged datagram's wait, milliseconds.
    pub lag_ms: u64,
    /// The peer's stream as received: epoch and next sequence number
    /// expected.
    pub peer_epoch: Option<u64>,
    pub peer_expected: u64,
    /// Counters (see README "HA pair").
    pub counters: BTreeMap<String, u64>,
}

/// The node's HA state shared with the control thread.
struct Shared {
    role: AtomicU8,
    in_sync: AtomicBool,
    stop: AtomicBool,
    status: parking_lot::Mutex<HaStatus>,
}

/// A running sync thread.
pub struct Ha {
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    thread: Option<JoinHandle<()>>,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

/// The sync socket: UDP on `a` with SO_REUSEPORT, so a natgw taking over
/// (`--takeover`) binds it while the old one still has it — before its
/// cut, so an address it cannot bind stops the takeover while the old
/// process still forwards.
pub fn bind(a: SocketAddrV4) -> Result<UdpSocket, String> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let err = |what: &str, e: nix::Error| format!("ha.local {a}: {what}: {e}");
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| err("socket", e))?;
    setsockopt(&fd, sockopt::ReusePort, &true).map_err(|e| err("SO_REUSEPORT", e))?;
    // Room for a burst (a bulk's window) while the thread is busy applying:
    // forced past rmem_max when natgw may (root), else what the kernel allows.
    let _ = setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUFFER));
    let _ = setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(&fd, sockopt::SndBuf, &SOCKET_BUFFER));
    bind(fd.as_raw_fd(), &SockaddrIn::from(a)).map_err(|e| err("bind", e))?;
    Ok(UdpSocket::from(fd))
}

impl Ha {
    /// Binds the sync socket (an error names the address) and starts the
    /// sync thread. The node starts as backup: it forwards nothing until
    /// `role` says master (unless `initial` says otherwise: a takeover
    /// keeps the old process's role).
    pub fn start(cfg: HaConfig, engine: Arc<Engine>, initial: Role) -> Result<Ha, String> {
        let sock = bind(cfg.local)?;
        Ha::start_on(sock, cfg, engine, initial)
    }

    /// [`start`](Self::start) on a socket from [`bind`].
    pub fn start_on(
        sock: UdpSocket,
        cfg: HaConfig,
        engine: Arc<Engine>,
        initial: Role,
    ) -> Result<Ha, String> {
        engine.changes().enable(crate::engine::CHANGE_RING_CAP);
        let shared = Arc::new(Shared {
            role: AtomicU8::new(initial.as_u8()),
            in_sync: AtomicBool::new(initial == Role::Master),
            stop: AtomicBool::new(false),
            status: parking_lot::Mutex::new(HaStatus::default()),
        });
        engine.set_standby(initial != Role::Master);
        let mut t = SyncThread::new(cfg, engine.clone(), shared.clone(), sock);
        t.publish(Instant::now());
        let thread = std::thread::Builder::new()
            .name("natgw-ha".into())
            .spawn(move || t.run())
            .map_err(|e| format!("ha: cannot start the sync thread: {e}"))?;
        Ok(Ha {
            shared,
            engine,
            thread: Some(thread),
        })
    }

    /// Sets the role (keepalived's notify). The data plane follows at once.
    pub fn set_role(&self, r: Role) {
        let old = Role::from_u8(self.shared.role.swap(r.as_u8(), Relaxed));
        self.engine.set_standby(r != Role::Master);
        if r == Role::Master {
            // The active node's table is the truth.
            self.shared.in_sync.store(true, Relaxed);
        }
        if old != r {
            log::info!("ha: role {} -> {}", old.name(), r.name());
        }
        self.shared.status.lock().role = r.name().into();
    }

    pub fn role(&self) -> Role {
        Role::from_u8(self.shared.role.load(Relaxed))
    }

    pub fn status(&self) -> HaStatus {
        let mut s = self.shared.status.lock().clone();
        s.role = self.role().name().into();
        s.in_sync = self.shared.in_sync.load(Relaxed);
        s
    }

    /// Stops the sync thread (the socket closes with it).
    pub fn stop(mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counters by name (a `BTreeMap` keeps `natgw ha status` in order).
#[derive(Default)]
struct Counts(BTreeMap<&'static str, u64>);

impl Counts {
    fn add(&mut self, k: &'static str, n: u64) {
        *self.0.entry(k).or_default() += n;
    }
    fn bump(&mut self, k: &'static str) {
        self.add(k, 1)
    }
}

struct SyncThread {
    cfg: HaConfig,
    auth: Auth,
    engine: Arc<Engine>,
    shared: Arc<Shared>,
    sock: UdpSocket,
    peer: SocketAddr,
    out: Outgoing,
    inc: Incoming,
    counts: Counts,
    peer_seen: Option<Instant>,
    peer_flags: Option<u32>,
    /// The peer went silent while we had changes for it: a new stream
    /// (so it resyncs) once it is back.
    reset_when_back: bool,
    last_alive: Instant,
    last_ack_sent: u64,
    last_ack_at: Instant,
    last_nack: Option<((u64, u32), Instant)>,
    last_refresh: Instant,
    last_refresh_t: Time,
    /// The peer asked for a bulk.
    resync_asked: bool,
    /// Items of our last bulk still queued or in flight (until its end is
    /// acknowledged, requests are not answered again).
    bulk_end_seq: Option<u64>,
    /// We asked for a bulk at this time and have not seen it begin.
    resync_sent: Option<Instant>,
    /// A bulk from the peer is arriving.
    bulk_incoming: bool,
    pending: Snapshot,
    pending_items: usize,
    taps: Vec<Tuple>,
    /// Flows sent as changes since the last refresh (which skips them).
    sent_since_refresh: HashSet<Tuple>,
}

fn empty_snapshot() -> Snapshot {
    Snapshot {
        version: snapshot::CURRENT_VERSION,
        captured_unix_ns: 0,
        flows: Vec::new(),
        eim: Vec::new(),
        sets: Vec::new(),
        persistence: Vec::new(),
        services: None,
        counters: None,
    }
}

impl SyncThread {
    fn new(cfg: HaConfig, engine: Arc<Engine>, shared: Arc<Shared>, sock: UdpSocket) -> SyncThread {
        let now = Instant::now();
        let auth = cfg.key.clone().map_or(Auth::Crc, Auth::Hmac);
        SyncThread {
            peer: SocketAddr::V4(cfg.peer),
            out: Outgoing::new(unix_ns(), WINDOW, MAX_QUEUED, RTO),
            inc: Incoming::new(MAX_HELD),
            auth,
            cfg,
            engine,
            shared,
            sock,
            counts: Counts::default(),
            peer_seen: None,
            peer_flags: None,
            reset_when_back: false,
            last_alive: now - ALIVE_EVERY,
            last_ack_sent: 0,
            last_ack_at: now,
            last_nack: None,
            last_refresh: now,
            last_refresh_t: sys::now(),
            resync_asked: false,
            bulk_end_seq: None,
            resync_sent: None,
            bulk_incoming: false,
            pending: empty_snapshot(),
            pending_items: 0,
            taps: Vec::new(),
            sent_since_refresh: HashSet::new(),
        }
    }

    fn role(&self) -> Role {
        Role::from_u8(self.shared.role.load(Relaxed))
    }

    fn in_sync(&self) -> bool {
        self.shared.in_sync.load(Relaxed)
    }

    fn set_in_sync(&self, v: bool) {
        if self.shared.in_sync.swap(v, Relaxed) != v {
            log::info!("ha: {}", if v { "in sync" } else { "out of sync" });
        }
    }

    fn peer_alive(&self, now: Instant) -> bool {
        self.peer_seen
            .is_some_and(|t| now.saturating_duration_since(t) < DEAD_AFTER)
    }

    fn run(mut self) {
        let mut buf = vec![0u8; 65536];
        while !self.shared.stop.load(Relaxed) {
            self.wait_readable(Duration::from_millis(1));
            let now = Instant::now();
            // Everything that arrived, then the sending side.
            for _ in 0..4096 {
                match self.sock.recv_from(&mut buf) {
                    Ok((n, from)) => self.on_datagram(&buf[..n], from, now),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        // e.g. ECONNREFUSED from an ICMP error: the peer is down.
                        self.counts.bump("receive_errors");
                        break;
                    }
                }
            }
            // Acknowledge what arrived in order before applying it: a
            // long apply (a bulk) must not look like loss to the sender.
            self.send_ack(now);
            self.apply_pending();
            if self.inc.gap_stuck(now, GAP_LIMIT) {
                let items = self.inc.skip_gap();
                self.counts.bump("gaps_skipped");
                log::warn!("ha: a gap in the peer's stream was not repaired; resyncing in bulk");
                self.take_items(items);
                self.apply_pending();
                self.want_resync();
            }
            self.send_side(now);
            self.publish(now);
        }
    }

    fn wait_readable(&self, d: Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(d.as_millis()).unwrap_or(u16::MAX);
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }

    fn send(&mut self, h: &Header, body: &[u8]) {
        let d = wire::encode(h, body, &self.auth);
        match self.sock.send_to(&d, self.peer) {
            Ok(_) => {
                self.counts.bump("datagrams_sent");
                self.counts.add("bytes_sent", d.len() as u64);
            }
            Err(_) => self.counts.bump("send_errors"),
        }
    }

    fn on_datagram(&mut self, d: &[u8], from: SocketAddr, now: Instant) {
        if from != self.peer {
            self.counts.bump("refused_foreign");
            return;
        }
        let (h, body) = match wire::decode(d, &self.auth) {
            Ok(x) => x,
            Err(e) => {
                self.counts.bump(refused_name(e));
                return;
            }
        };
        self.counts.bump("datagrams_received");
        match h.kind {
            Kind::Data | Kind::BulkStart | Kind::BulkEnd => {
                // A peer of sync version 1 sends snapshot format 2: carried
                // forward here, so the stream holds current bodies only (one
                // that does not convert is left as it is and refused as a
                // bad body when applied).
                let body = match (h.kind, wire::version_of(d)) {
                    (Kind::Data, 1) => snapshot::decode_body_of(body, 2)
                        .map(|s| snapshot::encode_body(&s))
                        .unwrap_or_else(|_| body.to_vec()),
                    _ => body.to_vec(),
                };
                let item = Item {
                    kind: h.kind,
                    a: h.a,
                    body,
                };
                let r = self.inc.on_item(h.epoch, h.seq, item, now);
                if r.stale_epoch {
                    self.counts.bump("refused_stale_epoch");
                    return;
                }
                self.peer_seen = Some(now);
                if r.duplicate {
                    self.counts.bump("duplicates");
                    // Our ACK may have been lost: repeat it.
                    self.last_ack_sent = 0;
                }
                if r.overflow {
                    self.counts.bump("reorder_overflow");
                }
                self.on_new_epoch(r.new_epoch);
                self.take_items(r.ready);
                if let Some(g) = r.gap {
                    self.nack(g, now);
                }
            }
            Kind::Alive => {
                let r = self.inc.on_alive(h.epoch, h.seq, now);
                if r.stale_epoch {
                    self.counts.bump("refused_stale_epoch");
                    return;
                }
                self.peer_seen = Some(now);
                self.peer_flags = Some(h.b);
                self.on_new_epoch(r.new_epoch);
                if let Some(g) = r.gap {
                    self.nack(g, now);
                }
            }
            Kind::Ack | Kind::Nack | Kind::Resync => {
                // About our stream: only for its current epoch.
                if h.epoch != self.out.epoch {
                    self.counts.bump("refused_stale_epoch");
                    return;
                }
                self.peer_seen = Some(now);
                match h.kind {
                    Kind::Ack => {
                        self.out.ack(h.a);
                        if self.bulk_end_seq.is_some_and(|s| h.a >= s) {
                            self.bulk_end_seq = None;
                        }
                    }
                    Kind::Nack => {
                        self.counts.bump("nacks_received");
                        let unknown = self.out.nack(h.a, h.b);
                        self.counts.add("nacked_not_held", unknown);
                    }
                    _ => self.resync_asked = true,
                }
            }
        }
    }

    /// The peer's stream is new: we may lack what it sent before.
    fn on_new_epoch(&mut self, new: bool) {
        if !new {
            return;
        }
        self.counts.bump("peer_streams");
        self.bulk_incoming = false;
        if self.role() != Role::Master {
            self.want_resync();
        }
    }

    fn want_resync(&mut self) {
        if self.role() != Role::Master {
            self.set_in_sync(false);
        }
        self.resync_sent = None;
        self.bulk_incoming = false;
    }

    fn nack(&mut self, gap: (u64, u32), now: Instant) {
        // One NACK per gap per RTO: the resend is on its way.
        if let Some((g, t)) = self.last_nack
            && g == gap
            && now.saturating_duration_since(t) < RTO
        {
            return;
        }
        self.last_nack = Some((gap, now));
        let h = Header {
            a: gap.0,
            b: gap.1,
            ..Header::new(Kind::Nack, self.inc.epoch.unwrap_or(0))
        };
        self.counts.bump("nacks_sent");
        self.send(&h, &[]);
    }

    /// In-order items from the peer: data joins the pending batch, bulk
    /// markers move the sync state.
    fn take_items(&mut self, items: Vec<Item>) {
        for it in items {
            match it.kind {
                Kind::Data => match snapshot::decode_body(&it.body) {
                    Ok(s) => {
                        self.pending.flows.extend(s.flows);
                        self.pending.eim.extend(s.eim);
                        self.pending.sets.extend(s.sets);
                        self.pending.persistence.extend(s.persistence);
                        self.pending_items += 1;
                    }
                    Err(e) => {
                        self.counts.bump("refused_bad_body");
                        log::warn!("ha: a change datagram from the peer does not decode: {e}");
                    }
                },
                Kind::BulkStart => {
                    self.bulk_incoming = true;
                    self.counts.bump("bulks_received");
                }
                Kind::BulkEnd => {
                    self.apply_pending();
                    if self.bulk_incoming {
                        self.bulk_incoming = false;
                        self.resync_sent = None;
                        self.counts.add("bulk_flows_received", it.a);
                        log::info!("ha: bulk resync received ({} flow(s))", it.a);
                        self.set_in_sync(true);
                    }
                }
                _ => {}
            }
        }
    }

    fn apply_pending(&mut self) {
        if self.pending_items == 0 {
            return;
        }
        let snap = std::mem::replace(&mut self.pending, empty_snapshot());
        self.pending_items = 0;
        // A standby takes the peer's records over its own (its workers
        // touch nothing). An active node forwards: replacing a flow there
        // (take, then insert) would let a packet in between create a
        // different one, and its own records are the newer ones anyway
        // (what the peer sent while it was still active, or a split
        // brain): it only adds the flows it lacks.
        let master = self.role() == Role::Master;
        let opts = RestoreOptions {
            elapsed: Elapsed::Ignore,
            services: ServicePolicy::FromConfig,
            replace: !master,
        };
        match snap.restore(&self.engine, sys::now(), opts) {
            Ok(r) => {
                self.counts.add("flows_applied", r.flows as u64);
                self.counts.add("flows_deleted", r.flows_expired as u64);
                self.counts.add("flows_displaced", r.flows_displaced as u64);
                self.counts
                    .add("apply_conflicts", (r.flows_duplicate + r.flows_bad) as u64);
                self.counts
                    .add("apply_table_full", r.flows_table_full as u64);
            }
            Err(e) => log::warn!("ha: applying the peer's changes: {e}"),
        }
    }

    fn send_side(&mut self, now: Instant) {
        let master = self.role() == Role::Master;
        let alive = self.peer_alive(now);
        // Changes noted by the workers.
        self.taps.clear();
        let n = self.engine.changes().drain(&mut self.taps);
        if n > 0 {
            if master && alive {
                let taps = std::mem::take(&mut self.taps);
                self.send_changes(&taps);
                self.taps = taps;
            } else if master {
                self.counts.add("changes_unsent_peer_down", n as u64);
                self.reset_when_back = true;
            }
        }
        if master && !alive && self.out.in_flight() + self.out.queued() > 0 {
            let dropped = self.out.reset(unix_ns().max(self.out.epoch + 1));
            self.counts
                .add("datagrams_dropped_peer_down", dropped as u64);
            self.reset_when_back = true;
        }
        if alive && self.reset_when_back {
            // Our stream restarts: the peer sees a new epoch and resyncs.
            self.reset_when_back = false;
            self.out.reset(unix_ns().max(self.out.epoch + 1));
            self.bulk_end_seq = None;
        }
        // Refresh of the flows touched meanwhile.
        let t = sys::now();
        if now.saturating_duration_since(self.last_refresh)
            >= Duration::from_secs(self.cfg.refresh_secs as u64)
        {
            if master && alive {
                let mut snap = Snapshot::capture_touched(&self.engine, t, self.last_refresh_t);
                // Flows sent as changes meanwhile have their timer there
                // already (a packet since then would not move it much).
                let sent = std::mem::take(&mut self.sent_since_refresh);
                snap.flows.retain(|f| !sent.contains(&f.orig));
                let n = snap.flows.len();
                self.queue_snapshot(snap);
                self.counts.bump("refreshes");
                self.counts.add("refresh_flows", n as u64);
            }
            self.last_refresh = now;
            self.last_refresh_t = t;
        }
        // A bulk for the peer.
        if self.resync_asked {
            self.resync_asked = false;
            if self.bulk_end_seq.is_none() {
                let snap = Snapshot::capture(&self.engine, t);
                let flows = snap.flows.len() as u64;
                self.push(Kind::BulkStart, 0, Vec::new());
                self.queue_snapshot(snap);
                let end_seq = self.out.next_seq() + self.out.queued() as u64;
                self.push(Kind::BulkEnd, flows, Vec::new());
                self.bulk_end_seq = Some(end_seq);
                self.counts.bump("bulks_sent");
                log::info!("ha: bulk resync for the peer: {flows} flow(s)");
            }
        }
        // Sequenced datagrams due.
        let mut due = Vec::new();
        self.out.due(now, |s| {
            due.push((s.seq, s.item.kind, s.item.a, s.item.body.clone(), s.resend))
        });
        let epoch = self.out.epoch;
        for (seq, kind, a, body, resend) in due {
            if resend {
                self.counts.bump("resent");
            }
            let h = Header {
                seq,
                a,
                ..Header::new(kind, epoch)
            };
            self.send(&h, &body);
        }
        self.send_ack(now);
        // Ask for a bulk while we lack the peer's state.
        if !master
            && !self.in_sync()
            && !self.bulk_incoming
            && let Some(pe) = self.inc.epoch
            && self
                .resync_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= RESYNC_RETRY)
        {
            self.resync_sent = Some(now);
            self.counts.bump("resyncs_requested");
            self.send(&Header::new(Kind::Resync, pe), &[]);
        }
        // Heartbeat.
        if now.saturating_duration_since(self.last_alive) >= ALIVE_EVERY {
            self.last_alive = now;
            let flags = u32::from(master) | (u32::from(self.in_sync()) << 1);
            let h = Header {
                seq: self.out.next_seq(),
                b: flags,
                ..Header::new(Kind::Alive, self.out.epoch)
            };
            self.send(&h, &[]);
        }
    }

    /// Acknowledges everything received in order (at most every
    /// `ACK_EVERY`).
    fn send_ack(&mut self, now: Instant) {
        let got = self.inc.expected.saturating_sub(1);
        if let Some(pe) = self.inc.epoch
            && got != self.last_ack_sent
            && now.saturating_duration_since(self.last_ack_at) >= ACK_EVERY
        {
            self.last_ack_sent = got;
            self.last_ack_at = now;
            let h = Header {
                a: got,
                ..Header::new(Kind::Ack, pe)
            };
            self.send(&h, &[]);
        }
    }

    fn push(&mut self, kind: Kind, a: u64, body: Vec<u8>) {
        if !self.out.push(Item { kind, a, body }) {
            self.counts.bump("datagrams_dropped_queue_full");
            self.reset_when_back = true;
        }
    }

    /// The current record of every noted flow (deduplicated), or a
    /// deletion for a flow gone by now.
    fn send_changes(&mut self, taps: &[Tuple]) {
        let now = sys::now();
        let mut seen = HashSet::with_capacity(taps.len());
        let mut flows = Vec::with_capacity(taps.len());
        for t in taps {
            if !seen.insert(*t) {
                continue;
            }
            let f = match self.engine.table().get(t) {
                Some(r) if r.expires > now => FlowEntry::from_record(&r, now),
                _ => deletion(*t),
            };
            flows.push(f);
        }
        self.counts.add("changes_sent", flows.len() as u64);
        self.sent_since_refresh.extend(flows.iter().map(|f| f.orig));
        let mut s = empty_snapshot();
        s.flows = flows;
        self.queue_snapshot(s);
    }

    /// Splits `s` into datagram bodies and queues them.
    fn queue_snapshot(&mut self, s: Snapshot) {
        let max = usize::from(self.cfg.max_datagram).saturating_sub(self.auth.overhead());
        let mut bodies = Vec::new();
        for part in split(s) {
            pack(part, max, &mut bodies, &mut self.counts);
        }
        for b in bodies {
            self.push(Kind::Data, 0, b);
        }
    }

    fn publish(&mut self, now: Instant) {
        let missed = self.engine.changes().missed();
        let mut st = self.shared.status.lock();
        st.role = self.role().name().into();
        st.local = self.cfg.local.to_string();
        st.peer = self.cfg.peer.to_string();
        st.peer_alive = self.peer_alive(now);
        st.peer_role = self
            .peer_flags
            .map(|f| if f & 1 != 0 { "master" } else { "backup" }.to_string());
        st.in_sync = self.in_sync();
        st.epoch = self.out.epoch;
        st.next_seq = self.out.next_seq();
        st.acked_seq = self.out.acked;
        st.in_flight = self.out.in_flight() as u64;
        st.queued = self.out.queued() as u64;
        st.lag_ms = self.out.oldest_unacked(now).as_millis() as u64;
        st.peer_epoch = self.inc.epoch;
        st.peer_expected = self.inc.expected;
        st.counters = self
            .counts
            .0
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        st.counters.insert("tap_missed".into(), missed);
    }
}

/// The receiving side of the sync link without its thread: datagrams are
/// handed in one at a time with the time they arrived, as the sync thread
/// would (the fuzz target `ha` and tests drive it). What it would send
/// (acknowledgements, NACKs, resync requests) goes to the configured
/// peer address from a socket on `cfg.local`. It does not turn on the
/// engine's change log (what a node sends is not its business).
pub struct Receiver {
    t: SyncThread,
}

impl Receiver {
    /// A receiving node in `role` for `engine`, bound to `cfg.local`.
    pub fn new(cfg: HaConfig, engine: Arc<Engine>, role: Role) -> Result<Receiver, String> {
        let sock = bind(cfg.local)?;
        // (The change log is the sending side's: not enabled here.)
        engine.set_standby(role != Role::Master);
        let shared = Arc::new(Shared {
            role: AtomicU8::new(role.as_u8()),
            in_sync: AtomicBool::new(role == Role::Master),
            stop: AtomicBool::new(false),
            status: parking_lot::Mutex::new(HaStatus::default()),
        });
        Ok(Receiver {
            t: SyncThread::new(cfg, engine, shared, sock),
        })
    }

    /// One datagram, from the peer or from `from`.
    pub fn datagram(&mut self, d: &[u8], from: Option<SocketAddr>, now: Instant) {
        let from = from.unwrap_or(self.t.peer);
        self.t.on_datagram(d, from, now);
    }

    /// What the sync thread does after a batch of datagrams: acknowledge,
    /// apply what arrived in order, give up on a stuck gap.
    pub fn settle(&mut self, now: Instant) {
        self.t.send_ack(now);
        self.t.apply_pending();
        if self.t.inc.gap_stuck(now, GAP_LIMIT) {
            let items = self.t.inc.skip_gap();
            self.t.counts.bump("gaps_skipped");
            self.t.take_items(items);
            self.t.apply_pending();
            self.t.want_resync();
        }
    }

    /// The authentication this node expects (to seal test datagrams).
    pub fn auth(&self) -> &Auth {
        &self.t.auth
    }

    /// Counters by name, as `natgw ha status` shows them.
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        self.t.counts.0.clone()
    }

    /// True once a bulk resync completed (or as the active node).
    pub fn in_sync(&self) -> bool {
        self.t.in_sync()
    }
}

fn refused_name(e: WireError) -> &'static str {
    match e {
        WireError::Short => "refused_short",
        WireError::Magic => "refused_bad_magic",
        WireError::Version => "refused_bad_version",
        WireError::Malformed => "refused_malformed",
        WireError::Length => "refused_bad_length",
        WireError::Checksum => "refused_bad_checksum",
        WireError::Auth => "refused_bad_auth",
    }
}

/// A deletion: the flow of `orig` with no time left (a restore with
/// `replace` removes it).
fn deletion(orig: Tuple) -> FlowEntry {
    FlowEntry {
        orig,
        reply: orig.invert(),
        tcp_state: crate::conntrack::TcpState::None,
        flags: 0,
        mark: 0,
        packets: [0; 2],
        bytes: [0; 2],
        remaining_ns: 0,
        age_ns: 0,
    }
}

/// `s` in parts of a few dozen entries each (one list per part).
fn split(s: Snapshot) -> Vec<Snapshot> {
    let mut parts = Vec::new();
    let one = |f: &mut dyn FnMut(&mut Snapshot)| {
        let mut p = empty_snapshot();
        f(&mut p);
        p
    };
    for c in s.flows.chunks(FLOWS_PER_DATAGRAM) {
        parts.push(one(&mut |p| p.flows = c.to_vec()));
    }
    for c in s.eim.chunks(48) {
        parts.push(one(&mut |p| p.eim = c.to_vec()));
    }
    for c in s.persistence.chunks(40) {
        parts.push(one(&mut |p| p.persistence = c.to_vec()));
    }
    for set in s.sets {
        for c in set.entries.chunks(48) {
            parts.push(one(&mut |p| {
                p.sets = vec![SetSnapshot {
                    name: set.name.clone(),
                    entries: c.to_vec(),
                }]
            }));
        }
    }
    parts
}

/// The back half of `v`, taken off it.
fn half<T>(v: &mut Vec<T>) -> Vec<T> {
    v.split_off(v.len() / 2)
}

/// Encodes `s`, halving it until each body fits `max` bytes. An entry
/// that alone does not fit (a set name of kilobytes) is dropped, counted.
fn pack(s: Snapshot, max: usize, out: &mut Vec<Vec<u8>>, counts: &mut Counts) {
    let body = snapshot::encode_body(&s);
    if body.len() <= max {
        out.push(body);
        return;
    }
    let n = s.flows.len()
        + s.eim.len()
        + s.persistence.len()
        + s.sets.iter().map(|x| x.entries.len()).sum::<usize>();
    if n <= 1 {
        counts.bump("entries_too_big");
        return;
    }
    let mut a = empty_snapshot();
    let mut b = s;
    if b.flows.len() > 1 {
        a.flows = half(&mut b.flows);
    } else if b.eim.len() > 1 {
        a.eim = half(&mut b.eim);
    } else if b.persistence.len() > 1 {
        a.persistence = half(&mut b.persistence);
    } else if let Some(set) = b.sets.first_mut()
        && set.entries.len() > 1
    {
        a.sets = vec![SetSnapshot {
            name: set.name.clone(),
            entries: half(&mut set.entries),
        }];
    } else if !b.flows.is_empty() {
        // At most one entry per list, several lists: move one list.
        a.flows = std::mem::take(&mut b.flows);
    } else if !b.eim.is_empty() {
        a.eim = std::mem::take(&mut b.eim);
    } else if !b.persistence.is_empty() {
        a.persistence = std::mem::take(&mut b.persistence);
    } else {
        a.sets = vec![b.sets.remove(0)];
    }
    pack(a, max, out, counts);
    pack(b, max, out, counts);
}
