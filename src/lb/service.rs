//! A virtual service and its real servers: the configuration as plain data
//! ([`ServiceSpec`], [`RealSpec`]), the built service
//! ([`VirtualService`]) and the live state of a real server
//! ([`RealState`]) that table versions share.

use super::persist::{PersistEntry, PersistTable, Slot, Sweep};
use super::sched::{SchedState, Scheduler};
use super::table::LbError;
use super::{MAX_REALS, MAX_WEIGHT, ipv4};
use crate::conntrack::{TcpState, Time};
use crate::packet::proto;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// Identifies a virtual service, like `ipvsadm -t VIP:port` (or `-u`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    #[serde(with = "ipv4")]
    pub vip: u32,
    /// 0 stands for every port; such a service needs persistence (IPVS).
    pub port: u16,
    /// [`proto::TCP`] or [`proto::UDP`].
    pub proto: u8,
}

/// Same client (or client network) -> same real server for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persistence {
    /// Seconds an entry lives after the client's last new connection
    /// (`ipvsadm -p`, 300 by default there).
    pub timeout_secs: u32,
    /// Prefix length that groups clients (`-M`); `None` is /32.
    #[serde(default)]
    pub netmask: Option<u8>,
    /// Forget the entry of a client whose server was set to weight 0
    /// instead of sending the client there (IPVS sysctl
    /// `expire_quiescent_template`; off by default as in IPVS).
    #[serde(default)]
    pub expire_quiescent: bool,
}

/// A real server as configured (`ipvsadm -a -r addr:port -w weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealSpec {
    #[serde(with = "ipv4")]
    pub addr: u32,
    /// 0: the flow keeps its destination port (for port-0 services).
    pub port: u16,
    /// Share of new clients; 0 drains the server. At most
    /// [`MAX_WEIGHT`].
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// A virtual service as configured: the plain data that config files,
/// the control socket and [`LbTable::build`](super::LbTable::build) use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub key: ServiceKey,
    pub scheduler: Scheduler,
    #[serde(default)]
    pub persistence: Option<Persistence>,
    /// In list order, which `rr`, `wrr`, the least-connection tie-breaks
    /// and the hash tables follow.
    #[serde(default)]
    pub reals: Vec<RealSpec>,
    /// How packets reach the real servers.
    #[serde(default)]
    pub forward: Forward,
}

/// How a service forwards to its real servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// Classic LVS-NAT (`ipvsadm -m`, "Masq"): only the destination is
    /// translated; the real servers must route replies via the director.
    #[default]
    Masq,
    /// Full NAT: the client source is also translated to the director's
    /// address on the interface towards the real server, so real servers
    /// need no route back through the director (they see the director).
    Fullnat,
}

impl Forward {
    /// As `ipvsadm -L` names the forwarding method.
    pub fn name(self) -> &'static str {
        match self {
            Forward::Masq => "Masq",
            Forward::Fullnat => "FullNat",
        }
    }
}

/// Position of a real server in its service's list (one table version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RealIdx(pub u32);

impl RealIdx {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Whether a server takes new clients, as health checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
}

/// How a connection counts against its real server. IPVS counts a TCP
/// connection as active while it is ESTABLISHED and everything else
/// (handshake, closing states, UDP) as inactive; `lc` weighs an active
/// connection as 256 inactive ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnState {
    Active,
    Inactive,
}

impl ConnState {
    /// The kind a flow in `tcp` state counts as (`tcp` is ignored for
    /// other protocols).
    pub fn of(proto: u8, tcp: TcpState) -> ConnState {
        if proto == proto::TCP && tcp == TcpState::Established {
            ConnState::Active
        } else {
            ConnState::Inactive
        }
    }
}

/// Live state of one real server, shared by every table version that has
/// it: health and connection counts. The data path moves the counts with
/// [`transition`](RealState::transition) as flows are assigned, become
/// established, leave that state and end.
#[derive(Debug, Default)]
pub struct RealState {
    down: AtomicBool,
    active: AtomicU32,
    inactive: AtomicU32,
    /// Connections ever scheduled to the server.
    conns: AtomicU64,
    /// Packets in, packets out, bytes in, bytes out (client->server is
    /// in) of its connections, live and ended: the engine counts each
    /// packet of a flow that carries this server's [`RealIds`] id, and
    /// folds in a flow's counters when it has none (see [`RealIds`]).
    /// Reading them never walks the flow table. In [`LANES`] lanes, each
    /// on a cache line of its own: workers add to different lanes (their
    /// `Counters::lane`), so a server's packets on several queues do not
    /// bounce one line between CPUs, nor the line of the fields above
    /// that the schedulers read for every new connection. Read as the sum.
    traffic: [CachePadded<[AtomicU64; 4]>; LANES],
    /// Id in the engine's [`RealIds`] (0: none yet).
    id: AtomicU32,
}

impl RealState {
    /// Moves one connection from `from` to `to`; `None` is "not counted"
    /// (before assignment, after the flow ended). A new flow is
    /// `(None, Some(Inactive))`. Counts never wrap below zero.
    pub fn transition(&self, from: Option<ConnState>, to: Option<ConnState>) {
        if from == to {
            return;
        }
        if let Some(f) = from {
            // A failed update means the count is already 0: nothing to undo.
            let _ = self
                .counter(f)
                .fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
        }
        if let Some(t) = to {
            self.counter(t).fetch_add(1, Relaxed);
        }
    }

    pub fn active(&self) -> u32 {
        self.active.load(Relaxed)
    }

    /// Counts a connection scheduled to this server.
    pub fn count_conn(&self) {
        self.conns.fetch_add(1, Relaxed);
    }

    /// Connections ever scheduled to this server.
    pub fn conns(&self) -> u64 {
        self.conns.load(Relaxed)
    }

    /// Adds packets and bytes (`[to server, from server]`) counted
    /// elsewhere: a flow's own counters when it ends without an id, or
    /// when it is restored from a snapshot.
    pub fn add_traffic(&self, packets: [u64; 2], bytes: [u64; 2]) {
        for (c, v) in self.traffic[0]
            .iter()
            .zip([packets[0], packets[1], bytes[0], bytes[1]])
        {
            if v > 0 {
                c.fetch_add(v, Relaxed);
            }
        }
    }

    /// Counts one packet of `bytes` in direction `dir` (0: to the server,
    /// 1: back) in `lane` (the worker's). Called by the data path for
    /// every packet of a flow that has this server's id. An atomic add
    /// (more workers than lanes share one), on a line no other worker
    /// writes while there are no more workers than [`LANES`].
    #[inline]
    pub fn count(&self, lane: usize, dir: usize, bytes: u64) {
        let (t, d) = (&self.traffic[lane % LANES], dir & 1);
        t[d].fetch_add(1, Relaxed);
        t[2 + d].fetch_add(bytes, Relaxed);
    }

    /// Packets in, packets out, bytes in, bytes out (see `traffic`).
    pub fn traffic(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.traffic.iter().map(|l| l[i].load(Relaxed)).sum())
    }

    /// Its id in the engine's [`RealIds`], 0 when it has none.
    pub fn id(&self) -> u16 {
        self.id.load(Relaxed) as u16
    }

    pub fn inactive(&self) -> u32 {
        self.inactive.load(Relaxed)
    }

    pub fn health(&self) -> Health {
        if self.down.load(Relaxed) {
            Health::Down
        } else {
            Health::Up
        }
    }

    pub fn is_up(&self) -> bool {
        !self.down.load(Relaxed)
    }

    /// Sets the health; returns whether it changed.
    pub(super) fn set_health(&self, h: Health) -> bool {
        self.down.swap(h == Health::Down, Relaxed) != (h == Health::Down)
    }

    fn counter(&self, s: ConnState) -> &AtomicU32 {
        match s {
            ConnState::Active => &self.active,
            ConnState::Inactive => &self.inactive,
        }
    }

    fn busy(&self) -> bool {
        self.active() + self.inactive() > 0
    }
}

/// Lanes of a real server's traffic counters (see `RealState::traffic`).
pub const LANES: usize = 8;

/// Chunks of [`RealIds`] and slots per chunk: 64 × 1024 ids, the most a
/// mark's upper 16 bits can name (id 0 is "none").
const ID_CHUNKS: usize = 64;
const ID_CHUNK: usize = 1024;

/// One chunk of [`RealIds`]: [`ID_CHUNK`] slots, each set once.
type IdChunk = Box<[OnceLock<Arc<RealState>>]>;

/// Real servers by a small id, kept by the engine so that the data path
/// finds a load-balanced flow's server without a lookup: the id lives in
/// the upper 16 bits of the flow's mark, and each packet of the flow adds
/// to that server's [`RealState`] traffic counters. Reading a server's
/// packets and bytes (`natgw services`, metrics) is then a few atomic
/// loads, never a walk over the flow table.
///
/// Ids are handed out once per [`RealState`] and never reused (a removed
/// server keeps its id while flows name it); after 65535 servers in one
/// process's life, later ones get no id and their flows' counters are
/// folded in when the flows end instead.
pub struct RealIds {
    chunks: Box<[OnceLock<IdChunk>]>,
    next: Mutex<u32>,
}

impl Default for RealIds {
    fn default() -> Self {
        RealIds {
            chunks: (0..ID_CHUNKS).map(|_| OnceLock::new()).collect(),
            next: Mutex::new(1),
        }
    }
}

impl RealIds {
    /// The id of `st`, given one now if it has none; 0 when all are taken.
    pub fn id_of(&self, st: &Arc<RealState>) -> u16 {
        let id = st.id();
        if id != 0 {
            return id;
        }
        let mut next = self.next.lock();
        // Another thread may have registered it meanwhile.
        let id = st.id();
        if id != 0 {
            return id;
        }
        let i = *next as usize;
        if i >= ID_CHUNKS * ID_CHUNK {
            return 0;
        }
        let chunk = self.chunks[i / ID_CHUNK]
            .get_or_init(|| (0..ID_CHUNK).map(|_| OnceLock::new()).collect());
        if chunk[i % ID_CHUNK].set(st.clone()).is_err() {
            return 0;
        }
        st.id.store(i as u32, Relaxed);
        *next += 1;
        i as u16
    }

    /// The server with id `id` (none for 0 or an id not handed out).
    #[inline]
    pub fn get(&self, id: u16) -> Option<&RealState> {
        let i = id as usize;
        let chunk = self.chunks.get(i / ID_CHUNK)?.get()?;
        chunk.get(i % ID_CHUNK)?.get().map(|a| &**a)
    }
}

/// A real server in one table version: configuration plus the shared
/// [`RealState`].
#[derive(Debug, Clone)]
pub struct RealServer {
    pub addr: u32,
    /// 0: the flow keeps its destination port.
    pub port: u16,
    pub weight: u32,
    /// Last non-zero weight (IPVS `last_weight`): what `mh` sizes the
    /// server's share by, so draining it does not move other clients.
    last_weight: u32,
    state: Arc<RealState>,
}

impl RealServer {
    pub fn state(&self) -> &RealState {
        &self.state
    }

    /// The shared state itself (to register it in [`RealIds`]).
    pub fn state_arc(&self) -> &Arc<RealState> {
        &self.state
    }

    pub fn health(&self) -> Health {
        self.state.health()
    }

    pub fn active(&self) -> u32 {
        self.state.active()
    }

    pub fn inactive(&self) -> u32 {
        self.state.inactive()
    }

    pub fn last_weight(&self) -> u32 {
        self.last_weight
    }

    /// Takes new clients: weight above 0 and up.
    pub fn eligible(&self) -> bool {
        self.weight > 0 && self.state.is_up()
    }

    pub fn socket_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.addr.into(), self.port)
    }

    pub fn spec(&self) -> RealSpec {
        RealSpec {
            addr: self.addr,
            port: self.port,
            weight: self.weight,
        }
    }
}

/// What a scheduler may look at in a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewConn {
    pub client: u32,
    pub client_port: u16,
    /// Destination as received: the VIP, and the port for port-0 services.
    pub dst: u32,
    pub dst_port: u16,
}

/// A built virtual service: immutable configuration, scheduler structures
/// for this version, and shared runtime parts (see the module docs).
pub struct VirtualService {
    pub key: ServiceKey,
    pub scheduler: Scheduler,
    pub persistence: Option<Persistence>,
    pub forward: Forward,
    reals: Vec<RealServer>,
    /// `(addr, port)` -> position in `reals`.
    index: HashMap<(u32, u16), u32, ahash::RandomState>,
    /// Removed servers that still had connections (IPVS's trash).
    trash: Vec<RealServer>,
    sched: SchedState,
    persist: Option<Arc<PersistTable>>,
}

impl VirtualService {
    /// Picks the real server for a new connection from `client`, or `None`
    /// when no server may take it (IPVS then drops the packet and answers
    /// ICMP port unreachable). Persistence first: an unexpired entry of the client's network
    /// whose server is still up (and, with `expire_quiescent`, still
    /// weighted) wins and is refreshed; otherwise the scheduler picks and
    /// the entry is written.
    pub fn schedule(&self, client: u32, client_port: u16, now: Time) -> Option<RealIdx> {
        self.schedule_conn(
            &NewConn {
                client,
                client_port,
                dst: self.key.vip,
                dst_port: self.key.port,
            },
            now,
        )
    }

    /// As [`schedule`](Self::schedule), with the destination spelled out
    /// (`dh` hashes it; port-0 services see the real destination port).
    pub fn schedule_conn(&self, c: &NewConn, now: Time) -> Option<RealIdx> {
        let pick = || self.sched.pick(&self.reals, c);
        let (Some(p), Some(table)) = (&self.persistence, &self.persist) else {
            return pick().map(|i| RealIdx(i as u32));
        };
        let sticky = |addr, port| {
            let i = self.find(addr, port)?;
            let r = &self.reals[i];
            let ok = r.state.is_up() && (r.weight > 0 || !p.expire_quiescent);
            ok.then_some(i)
        };
        let placed = table.place(
            c.client & mask(p.netmask),
            now,
            now.plus_secs(p.timeout_secs),
            sticky,
            || pick().map(|i| (i, self.reals[i].addr, self.reals[i].port)),
        );
        placed.map(|i| RealIdx(i as u32))
    }

    /// Extends the persistence entry of `client`'s network to at least
    /// `timeout` from `now` (the engine calls this when a persistent flow
    /// ends). Returns whether there was an entry.
    pub fn touch(&self, client: u32, now: Time) -> bool {
        match (&self.persistence, &self.persist) {
            (Some(p), Some(t)) => t.touch(client & mask(p.netmask), now.plus_secs(p.timeout_secs)),
            _ => false,
        }
    }

    pub fn real(&self, idx: RealIdx) -> &RealServer {
        &self.reals[idx.index()]
    }

    pub fn reals(&self) -> &[RealServer] {
        &self.reals
    }

    pub fn find_real(&self, addr: u32, port: u16) -> Option<RealIdx> {
        self.find(addr, port).map(|i| RealIdx(i as u32))
    }

    /// Counters of the server a flow was given, also after the server was
    /// removed while the flow lived (until its connections are gone).
    pub fn real_state(&self, addr: u32, port: u16) -> Option<&Arc<RealState>> {
        self.any_real(addr, port).map(|r| &r.state)
    }

    /// Live persistence entries at `now`, by client network.
    pub fn entries(&self, now: Time) -> Vec<PersistEntry> {
        let Some(t) = &self.persist else {
            return Vec::new();
        };
        let len = self.persistence.and_then(|p| p.netmask).unwrap_or(32);
        t.entries(now)
            .into_iter()
            .map(|s| PersistEntry {
                service: self.key,
                client: s.client,
                netmask: len,
                real: s.addr,
                port: s.port,
                expires: s.expires,
            })
            .collect()
    }

    /// Removes expired entries (and entries of servers no longer here),
    /// looking at no more than `budget` of them; resumes where the last
    /// call stopped.
    pub fn expire(&self, now: Time, budget: usize) -> Sweep {
        match &self.persist {
            Some(t) => t.expire(now, budget, |a, p| self.find(a, p).is_some()),
            None => Sweep::default(),
        }
    }

    /// The configuration this service was built from.
    pub fn spec(&self) -> ServiceSpec {
        ServiceSpec {
            key: self.key,
            scheduler: self.scheduler,
            persistence: self.persistence,
            reals: self.reals.iter().map(RealServer::spec).collect(),
            forward: self.forward,
        }
    }

    /// Builds a service, carrying over from `prev` (the same key in the
    /// table being replaced) the state of servers that stay, the trash,
    /// persistence entries and scheduler positions.
    pub(super) fn build(
        spec: &ServiceSpec,
        prev: Option<&VirtualService>,
        seed: u64,
    ) -> Result<VirtualService, LbError> {
        spec.validate()?;
        let reals: Vec<RealServer> = spec
            .reals
            .iter()
            .map(|r| {
                let old = prev.and_then(|p| p.any_real(r.addr, r.port));
                RealServer {
                    addr: r.addr,
                    port: r.port,
                    weight: r.weight,
                    // IPVS: a new server, or a non-zero weight, sets it.
                    last_weight: match old {
                        Some(o) if r.weight == 0 => o.last_weight,
                        _ => r.weight,
                    },
                    state: old.map(|o| o.state.clone()).unwrap_or_default(),
                }
            })
            .collect();
        let mut index = HashMap::with_hasher(ahash::RandomState::with_seeds(seed, 1, 2, 3));
        for (i, r) in reals.iter().enumerate() {
            index.insert((r.addr, r.port), i as u32);
        }

        let mut trash = Vec::new();
        let mut dropped = false;
        if let Some(p) = prev {
            for r in p.reals.iter().chain(&p.trash) {
                if index.contains_key(&(r.addr, r.port)) {
                    continue;
                }
                dropped = true;
                if r.state.busy() {
                    trash.push(r.clone());
                }
            }
        }

        let persist = spec.persistence.map(|want| {
            let same_key =
                |p: &VirtualService| p.persistence.map(|o| o.netmask) == Some(want.netmask);
            match prev.filter(|p| same_key(p)).and_then(|p| p.persist.clone()) {
                Some(t) => {
                    if dropped {
                        t.purge(|a, p| !index.contains_key(&(a, p)));
                    }
                    t
                }
                None => Arc::new(PersistTable::new(seed)),
            }
        });

        let sched = SchedState::new(
            &spec.scheduler,
            &reals,
            prev.map(|p| (&p.sched, p.reals.as_slice())),
        );
        Ok(VirtualService {
            key: spec.key,
            scheduler: spec.scheduler,
            persistence: spec.persistence,
            forward: spec.forward,
            reals,
            index,
            trash,
            sched,
            persist,
        })
    }

    /// Writes a restored entry; false when its server is not here or it
    /// has expired.
    pub(super) fn restore(&self, e: &PersistEntry, now: Time) -> bool {
        let (Some(p), Some(t)) = (&self.persistence, &self.persist) else {
            return false;
        };
        if e.expires <= now || self.find(e.real, e.port).is_none() {
            return false;
        }
        t.insert(Slot {
            client: e.client & mask(p.netmask),
            addr: e.real,
            port: e.port,
            // Never longer than this service's persistence timeout (a
            // snapshot may say anything).
            expires: e
                .expires
                .min(now.saturating_add(Time::from_secs(p.timeout_secs.into()))),
        });
        true
    }

    fn find(&self, addr: u32, port: u16) -> Option<usize> {
        self.index.get(&(addr, port)).map(|&i| i as usize)
    }

    fn any_real(&self, addr: u32, port: u16) -> Option<&RealServer> {
        match self.find(addr, port) {
            Some(i) => Some(&self.reals[i]),
            None => self.trash.iter().find(|r| r.addr == addr && r.port == port),
        }
    }
}

impl fmt::Debug for VirtualService {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("VirtualService")
            .field("key", &self.key)
            .field("scheduler", &self.scheduler)
            .field("persistence", &self.persistence)
            .field("reals", &self.reals)
            .finish_non_exhaustive()
    }
}

impl ServiceSpec {
    /// Checks what IPVS would refuse, and natgw's own limits.
    pub fn validate(&self) -> Result<(), LbError> {
        let bad = |reason: String| {
            Err(LbError::Invalid {
                service: self.key,
                reason,
            })
        };
        if self.key.proto != proto::TCP && self.key.proto != proto::UDP {
            return bad(format!("protocol {} (tcp or udp only)", self.key.proto));
        }
        if self.key.port == 0 && self.persistence.is_none() {
            return bad("port 0 (all ports) needs persistence".into());
        }
        if let Some(p) = self.persistence {
            if p.timeout_secs == 0 {
                return bad("persistence timeout 0".into());
            }
            if let Some(m) = p.netmask.filter(|&m| m > 32) {
                return bad(format!("netmask /{m}"));
            }
        }
        if self.reals.len() > MAX_REALS {
            return bad(format!(
                "{} real servers (at most {MAX_REALS})",
                self.reals.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for r in &self.reals {
            if r.weight > MAX_WEIGHT {
                return bad(format!("weight {} (at most {MAX_WEIGHT})", r.weight));
            }
            if !seen.insert((r.addr, r.port)) {
                return bad(format!("real server {} listed twice", sock(r.addr, r.port)));
            }
        }
        self.scheduler.validate(self.reals.len()).or_else(bad)
    }
}

impl fmt::Display for ServiceKey {
    /// `TCP  192.0.2.1:80`, as `ipvsadm -L -n` prints it.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let p = match self.proto {
            proto::TCP => "TCP",
            proto::UDP => "UDP",
            _ => "?",
        };
        write!(f, "{p}  {}", sock(self.vip, self.port))
    }
}

pub(super) fn sock(addr: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr), port)
}

/// Network mask for a prefix length (`None` is /32).
fn mask(len: Option<u8>) -> u32 {
    match len.unwrap_or(32) {
        0 => 0,
        l => u32::MAX << (32 - l.min(32)),
    }
}

fn default_weight() -> u32 {
    1
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{Change, HashOpts, LbTable, MhOpts};
    use super::*;

    #[test]
    fn real_ids_are_given_once_and_run_out_cleanly() {
        let ids = RealIds::default();
        let (a, b) = (
            Arc::new(RealState::default()),
            Arc::new(RealState::default()),
        );
        assert_eq!(ids.get(0).map(|_| ()), None, "0 names no server");
        let ia = ids.id_of(&a);
        assert_eq!((ia, ids.id_of(&a), ids.id_of(&b)), (1, 1, 2));
        ids.get(ia).expect("registered").count(1, 1, 60);
        a.count(LANES + 2, 0, 40);
        a.add_traffic([1, 0], [10, 0]);
        assert_eq!(a.traffic(), [2, 1, 50, 60], "lanes summed");
        assert_eq!(ids.get(3).map(|_| ()), None, "not handed out");
        // Every id taken: later servers get 0 (their flows are folded in
        // when they end) and nothing panics.
        let mut last = 0;
        for _ in 2..ID_CHUNKS * ID_CHUNK {
            last = ids.id_of(&Arc::new(RealState::default()));
        }
        assert_eq!(last, 0);
        assert_eq!(ids.id_of(&Arc::new(RealState::default())), 0);
        assert!(ids.get(u16::MAX).is_some());
    }

    pub const VIP: u32 = 0xc000_0201; // 192.0.2.1

    /// `10.0.0.<n>`
    pub fn rip(n: u8) -> u32 {
        0x0a00_0000 | n as u32
    }

    pub fn spec(s: Scheduler, weights: &[u32]) -> ServiceSpec {
        ServiceSpec {
            key: ServiceKey {
                vip: VIP,
                port: 80,
                proto: proto::TCP,
            },
            scheduler: s,
            persistence: None,
            reals: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| RealSpec {
                    addr: rip(i as u8 + 1),
                    port: 8080,
                    weight: w,
                })
                .collect(),
            forward: Forward::Masq,
        }
    }

    pub fn build(s: &ServiceSpec) -> VirtualService {
        VirtualService::build(s, None, 7).unwrap()
    }

    pub fn all_schedulers() -> Vec<Scheduler> {
        let h = HashOpts::default();
        vec![
            Scheduler::Rr,
            Scheduler::Wrr,
            Scheduler::Lc,
            Scheduler::Wlc,
            Scheduler::Sed,
            Scheduler::Nq,
            Scheduler::Sh(h),
            Scheduler::Dh(h),
            Scheduler::Mh(MhOpts {
                table_size: 251,
                ..MhOpts::default()
            }),
        ]
    }

    /// splitmix64, for reproducible client addresses.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            super::super::hash::mix64(self.0)
        }
    }

    #[test]
    fn drained_and_down_servers_get_no_new_flows() {
        for s in all_schedulers() {
            // Server 2 is drained, server 3 goes down; 1 and 4 share.
            let svc = build(&spec(s, &[1, 0, 1, 1]));
            svc.reals()[2].state().set_health(Health::Down);
            let mut seen = [0u32; 4];
            for c in 0..2000u32 {
                // dh hashes the destination: vary it for that one.
                let conn = NewConn {
                    client: 0x6440_0000 + c * 7919,
                    client_port: 1024 + c as u16,
                    dst: VIP ^ c,
                    dst_port: 80,
                };
                let i = svc.schedule_conn(&conn, Time(0)).unwrap();
                // Count the flow, so the least-connection family moves on.
                svc.real(i)
                    .state()
                    .transition(None, Some(ConnState::Active));
                seen[i.index()] += 1;
            }
            assert_eq!((seen[1], seen[2]), (0, 0), "{s:?}: {seen:?}");
            assert!(seen[0] > 0 && seen[3] > 0, "{s:?}: {seen:?}");
        }
    }

    #[test]
    fn nobody_eligible_means_none() {
        for s in all_schedulers() {
            let svc = build(&spec(s, &[0, 1]));
            svc.reals()[1].state().set_health(Health::Down);
            assert_eq!(svc.schedule(rip(200), 5000, Time(0)), None, "{s:?}");
            let empty = build(&spec(s, &[]));
            assert_eq!(empty.schedule(rip(200), 5000, Time(0)), None, "{s:?}");
        }
    }

    fn persistent(s: Scheduler, weights: &[u32], p: Persistence) -> LbTable {
        let mut sp = spec(s, weights);
        sp.persistence = Some(p);
        LbTable::build(&[sp], &LbTable::new(7)).unwrap()
    }

    fn key() -> ServiceKey {
        spec(Scheduler::Rr, &[]).key
    }

    #[test]
    fn persistence_netmask_groups_clients_and_expires_on_time() {
        let p = Persistence {
            timeout_secs: 300,
            netmask: Some(24),
            expire_quiescent: false,
        };
        let t = persistent(Scheduler::Rr, &[1, 1, 1], p);
        let svc = t.service(&key()).unwrap();
        let t0 = Time::from_secs(1000);
        // rr would rotate; persistence keeps each /24 on one server.
        for net in 0..6u32 {
            let base = 0x6440_0000 | (net << 8);
            let first = svc.schedule(base | 1, 40000, t0).unwrap();
            for host in 2..50 {
                assert_eq!(
                    svc.schedule(base | host, 40000 + host as u16, t0),
                    Some(first)
                );
            }
        }
        assert_eq!(svc.entries(t0).len(), 6);
        // Six networks over three servers in rr order: two each.
        let mut per = [0; 3];
        for e in svc.entries(t0) {
            per[svc.find_real(e.real, e.port).unwrap().index()] += 1;
        }
        assert_eq!(per, [2, 2, 2]);

        // Entries live 300 s after the last connection of the network.
        let c = 0x6440_0005;
        let first = svc.schedule(c, 1, t0).unwrap();
        assert_eq!(svc.schedule(c, 2, t0.plus_secs(299)), Some(first));
        let later = t0.plus_secs(299 + 299);
        assert_eq!(svc.schedule(c, 3, later), Some(first));
        assert_eq!(svc.entries(later.plus_secs(300)).len(), 0);
        // Bounded expiry: every entry is due 300 s after t0 except the
        // refreshed one.
        let swept = t.expire(t0.plus_secs(300), 4);
        assert_eq!(swept.visited, 4);
        let rest = t.expire(t0.plus_secs(300), 100);
        assert_eq!(swept.removed + rest.removed, 5);
        assert_eq!(svc.entries(t0.plus_secs(300)).len(), 1);
    }

    #[test]
    fn persistent_clients_follow_ipvs_on_drain_and_health() {
        let p = Persistence {
            timeout_secs: 60,
            netmask: None,
            expire_quiescent: false,
        };
        let t = persistent(Scheduler::Rr, &[1, 1], p);
        let now = Time::from_secs(10);
        let a = t
            .service(&key())
            .unwrap()
            .schedule(rip(100), 1, now)
            .unwrap();
        let ra = t.service(&key()).unwrap().real(a).spec();

        // Quiesced (weight 0): the persistent client still goes there ...
        let t = t
            .apply(&Change::EditReal {
                service: key(),
                real: RealSpec { weight: 0, ..ra },
            })
            .unwrap();
        let svc = t.service(&key()).unwrap();
        assert_eq!(svc.schedule(rip(100), 2, now), Some(a));
        // ... but a new client does not.
        assert_ne!(svc.schedule(rip(101), 2, now), Some(a));

        // With expire_quiescent the entry is dropped instead.
        let t2 = t
            .apply(&Change::EditService {
                key: key(),
                scheduler: Scheduler::Rr,
                persistence: Some(Persistence {
                    expire_quiescent: true,
                    ..p
                }),
            })
            .unwrap();
        assert_ne!(
            t2.service(&key()).unwrap().schedule(rip(100), 3, now),
            Some(a)
        );

        // Down: the client is placed afresh.
        let t = persistent(Scheduler::Rr, &[1, 1], p);
        let svc = t.service(&key()).unwrap();
        let a = svc.schedule(rip(100), 1, now).unwrap();
        let ra = svc.real(a).spec();
        assert!(t.set_health(key(), ra.addr, ra.port, Health::Down).unwrap());
        let b = svc.schedule(rip(100), 2, now).unwrap();
        assert_ne!(a, b);
        // And stays on the new server after the old one recovers.
        t.set_health(key(), ra.addr, ra.port, Health::Up).unwrap();
        assert_eq!(svc.schedule(rip(100), 3, now), Some(b));
    }

    #[test]
    fn removing_a_server_drops_its_entries_and_keeps_the_others() {
        let p = Persistence {
            timeout_secs: 60,
            netmask: None,
            expire_quiescent: false,
        };
        let t = persistent(Scheduler::Rr, &[1, 1, 1], p);
        let now = Time::from_secs(1);
        let svc = t.service(&key()).unwrap();
        let placed: Vec<RealIdx> = (0..30)
            .map(|c| svc.schedule(rip(100 + c), 1, now).unwrap())
            .collect();
        let t2 = t
            .apply(&Change::DelReal {
                service: key(),
                addr: rip(2),
                port: 8080,
            })
            .unwrap();
        let svc2 = t2.service(&key()).unwrap();
        let entries = svc2.entries(now);
        assert_eq!(entries.len(), 20);
        assert!(entries.iter().all(|e| e.real != rip(2)));
        for (c, old) in placed.iter().enumerate() {
            let addr = svc.real(*old).addr;
            let new = svc2.schedule(rip(100 + c as u8), 2, now).unwrap();
            if addr != rip(2) {
                assert_eq!(svc2.real(new).addr, addr, "client {c} moved");
            }
        }
    }

    #[test]
    fn counters_follow_flows_across_versions_and_removal() {
        let t = LbTable::build(&[spec(Scheduler::Lc, &[1, 1])], &LbTable::new(1)).unwrap();
        let svc = t.service(&key()).unwrap();
        let st = svc.real_state(rip(1), 8080).unwrap().clone();
        st.transition(None, Some(ConnState::Inactive));
        st.transition(Some(ConnState::Inactive), Some(ConnState::Active));
        assert_eq!((st.active(), st.inactive()), (1, 0));

        // A weight change keeps the counts.
        let t = t
            .apply(&Change::EditReal {
                service: key(),
                real: RealSpec {
                    addr: rip(1),
                    port: 8080,
                    weight: 5,
                },
            })
            .unwrap();
        assert_eq!(t.service(&key()).unwrap().reals()[0].active(), 1);

        // Removed while busy: the closing flow still finds its counters.
        let del = Change::DelReal {
            service: key(),
            addr: rip(1),
            port: 8080,
        };
        let t = t.apply(&del).unwrap();
        let svc = t.service(&key()).unwrap();
        assert!(svc.find_real(rip(1), 8080).is_none());
        let trashed = svc.real_state(rip(1), 8080).unwrap();
        assert!(Arc::ptr_eq(trashed, &st));
        trashed.transition(Some(ConnState::Active), None);
        assert_eq!(st.active(), 0);
        // Once idle it leaves the trash on the next change.
        let t = t
            .apply(&Change::EditReal {
                service: key(),
                real: RealSpec {
                    addr: rip(2),
                    port: 8080,
                    weight: 2,
                },
            })
            .unwrap();
        assert!(
            t.service(&key())
                .unwrap()
                .real_state(rip(1), 8080)
                .is_none()
        );
        // Underflow is absorbed.
        st.transition(Some(ConnState::Active), None);
        assert_eq!(st.active(), 0);
    }

    #[test]
    fn shared_by_workers() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<VirtualService>();
        send_sync::<LbTable>();
    }

    #[test]
    fn conn_state_of_flows() {
        assert_eq!(
            ConnState::of(proto::TCP, TcpState::Established),
            ConnState::Active
        );
        assert_eq!(
            ConnState::of(proto::TCP, TcpState::SynRecv),
            ConnState::Inactive
        );
        assert_eq!(
            ConnState::of(proto::UDP, TcpState::Established),
            ConnState::Inactive
        );
    }

    #[test]
    fn validation() {
        let bad = |s: &ServiceSpec| VirtualService::build(s, None, 0).is_err();
        let mut s = spec(Scheduler::Rr, &[1, 1]);
        assert!(!bad(&s));
        s.reals[1].addr = s.reals[0].addr;
        assert!(bad(&s));
        let mut s = spec(Scheduler::Rr, &[1]);
        s.key.port = 0;
        assert!(bad(&s));
        s.persistence = Some(Persistence {
            timeout_secs: 10,
            netmask: Some(33),
            expire_quiescent: false,
        });
        assert!(bad(&s));
        let s = spec(Scheduler::Rr, &[MAX_WEIGHT + 1]);
        assert!(bad(&s));
        let mut s = spec(Scheduler::Rr, &[1]);
        s.key.proto = proto::ICMP;
        assert!(bad(&s));
    }
}
