//! TUN backend: the fallback where AF_XDP is not available. The kernel
//! keeps doing link-layer work (ARP, Ethernet, routing, fragmentation on
//! output) and policy routing steers every IPv4 packet that arrives on a
//! data interface through natgw.
//!
//! # Data path
//!
//! For each configured interface `X` (index `i` in the config) natgw opens
//! a TUN device `{tun.prefix}X` (default `ngw-X`; IFF_TUN | IFF_NO_PI, so
//! a read gives one bare IPv4 packet: [`Link::Ip`]), with `X`'s MTU, up.
//! One worker thread per TUN device reads a batch of up to [`BATCH`]
//! packets, runs [`Engine::process`] on each with `iif` = `i`, and writes
//! every `Forward`, `Reply` and `Local` packet back into the same TUN
//! device; `Pass` (IPv6) goes back unchanged; `Drop` was counted by the
//! engine. A packet written into a TUN device is a packet *received* on
//! it: the kernel routes the translated packet by its own tables, so the
//! verdict's `oif`/`next_hop` are not needed here (the engine still needs
//! its routes to choose the masquerade address; keep `[[route]]` in the
//! config in line with the kernel's: a destination the engine has no
//! route for is dropped as `no_route`). The kernel, natgw and the kernel
//! again each decrement the TTL: a traceroute through the gateway shows it
//! at two hops (the kernel's and natgw's time-exceeded) and a silent third
//! (the kernel's error goes to the already translated source, the gateway).
//!
//! ```text
//!  lan0 --rule iif lan0--> table 7100: default dev ngw-lan0 --> natgw (iif 0)
//!                                                                  | rewrite
//!  wan0 <--main table, local table (pref 32000)-- ngw-lan0 <-------+
//! ```
//!
//! # Routing
//!
//! With `T = tun.table_base + i` (default 7100 + i):
//!
//! ```text
//! ip rule add iif X lookup T pref T
//! ip route replace default dev {prefix}X table T            # while running
//! ip route replace blackhole default metric 4294967295 table T   # backstop
//! ip rule add pref 32000 lookup local; ip rule del pref 0 lookup local
//! ip rule add pref T0-1 ipproto tcp dport 61000-61999 lookup local   # health checks
//! ```
//!
//! - Packets *from* the TUN devices match no `iif` rule and are routed by
//!   the `local` and `main` tables as usual; a packet written into a TUN
//!   can never be routed back into one, so there is no loop.
//! - Masquerade and DNAT traffic is addressed to the gateway itself, so the
//!   `local` table must be looked up *after* natgw's rules: its rule moves
//!   from pref 0 to [`LOCAL_PREF`] (32000, before `main` at 32766). Only
//!   packets received on the data interfaces are affected; locally
//!   generated ones match no `iif X` rule.
//! - Health checks (`crate::health`) are kernel sockets on the gateway
//!   whose source ports come from `PortRange::HEALTH_CHECK` (61000-61999);
//!   their replies arrive on the data interfaces. One rule just before
//!   natgw's first (`T0 - 1`, 7099 by default) sends TCP to those ports to
//!   the `local` table, where the gateway's own addresses are found (other
//!   destinations fall through to natgw's rules as before). natgw never
//!   uses those ports for NAT, so no NAT flow takes this path.
//! - The blackhole route has the worst metric, so the TUN route wins while
//!   natgw runs; when the TUN device goes away (stop, crash, SIGKILL) the
//!   kernel drops its route and the blackhole is what is left: packets on
//!   the data interfaces are dropped — never forwarded untranslated, never
//!   delivered locally (where the kernel would RST natgw's flows).
//! - ARP: the kernel decides whether to answer an ARP request by routing
//!   its target address with `iif X`, which now finds the TUN route, not
//!   a `local` one, so it would no longer answer for its own addresses.
//!   natgw therefore adds proxy ARP entries (`ip neigh add proxy A dev X`)
//!   for every address it owns on `X`'s network (the interface address,
//!   `extra_addresses`, SNAT pool and netmap addresses there; at most
//!   [`MAX_PROXY`] per interface) and sets `X`'s `neigh/proxy_delay` to 0.
//!   The kernel answers proxied addresses only while the TUN route is
//!   there: a stopped natgw is invisible on its data interfaces.
//!
//! Rules and routes are made with the `ip` command (iproute2) through
//! `std::process::Command`, reading its JSON output (`ip -N -j`; both in
//! `host`, with the sysctls): natgw has
//! no netlink crate yet, `ip` is on every host that can run natgw, and
//! every step is a command an operator can read in the error and replay.
//! Each exit status is checked; a failure is a [`DataplaneError`] naming
//! the command and quoting its stderr.
//!
//! # Sysctls
//!
//! `net.ipv4.ip_forward = 1` and `forwarding = 1` on the data interfaces and
//! TUN devices. Reverse-path filtering must be off on the TUN devices (they
//! have no address, so even loose mode drops what natgw writes back); the
//! kernel uses max(`all`, device), so a non-zero `conf/all/rp_filter` is
//! set to 0 after raising every other device's own value (and `default`'s)
//! to the old `all` value, which leaves their effective mode unchanged.
//! Strict mode on a data interface becomes loose (2). The TUN devices also
//! get `accept_local = 1` (translated packets may carry a gateway address
//! as source) and IPv6 disabled. These settings are not undone on stop.
//!
//! # Startup and idempotence
//!
//! Everything is checked before anything changes: the interfaces exist and
//! carry their configured addresses, no device has a TUN name yet (another
//! natgw?), the tables and rule preferences are free of other software's
//! rules and routes, and no `lookup local` rule sits before natgw's. Rules
//! and routes natgw left behind (its guard, below) are recognised and
//! reused, so `natgw run` starts cleanly after a stop or a crash. Setup
//! order keeps traffic safe at every step: proxy entries, then table `T`
//! (blackhole first), then the rule into it, then the `local` move, then
//! the workers. If a step fails, what is left is at most the guard.
//!
//! # Stop, and the guard left behind
//!
//! [`TunGuard`]'s drop (after the workers are joined, see
//! [`Running::shutdown`]) deletes the TUN routes, the proxy ARP entries and,
//! with the workers gone, the TUN devices. It deliberately leaves the
//! guard: the `iif X lookup T` rules, the blackhole in each table `T` and
//! the `local` rule at pref 32000, so that a stopped natgw leaks nothing.
//! The health-check rule stays too (it only hands the kernel what natgw
//! never uses) and is reused by the next start.
//! After a crash (no drop at all) the TUN routes still go with the devices;
//! the proxy ARP entries stay, answer nothing while only the blackhole is
//! there, and are taken over by the next start.
//! The log says so at stop and prints the commands that hand the
//! interfaces back to the kernel ([`release_commands`]); for the defaults
//! and two interfaces:
//!
//! ```text
//! ip rule add pref 0 lookup local
//! ip rule del pref 32000 lookup local
//! ip rule del pref 7100 iif lan0 lookup 7100
//! ip route flush table 7100
//! ip rule del pref 7101 iif wan0 lookup 7101
//! ip route flush table 7101
//! ip rule del pref 7099 ipproto tcp dport 61000-61999 lookup local
//! ```
//!
//! # Receive CPUs
//!
//! The kernel's receive work for a packet bound for natgw (IP input, the
//! policy lookup, forwarding into the TUN device) costs about as much as
//! natgw's own work on it, and under a flood most of it is wasted: the TUN
//! queue is full and the packet is dropped after it (`FULL_RING`). If that
//! work runs on a worker's CPU it runs first (softirq, and inline at the
//! end of each of the worker's own `write`s, which enable bottom halves),
//! so the worker starves: 64-byte UDP through natgw fell to 4-52k pps
//! under a 190-310k pps flood, below what it sustains at a paced rate
//! and a fraction of the kernel NAT's 140-210k (`perf/tun.md`). So at start natgw moves that work off its own
//! CPUs: when its affinity mask (e.g. `taskset`) leaves some online CPUs
//! out, every receive queue of every data interface whose RPS mask
//! (`/sys/class/net/X/queues/rx-N/rps_cpus`) is empty or includes one of
//! natgw's CPUs gets the CPUs natgw does not run on; the old masks are put
//! back at stop (not after a crash). A queue already steered elsewhere is
//! left alone. When natgw may run on every CPU it changes nothing and
//! logs a warning: pin it (`taskset -c`) to CPUs other than those that
//! take the data interfaces' interrupts. What is left on natgw's CPUs is
//! the kernel's forwarding of the packets natgw writes back.
//!
//! # Limits
//!
//! One queue and one thread per interface; a syscall per packet each way
//! (TUN has no batch interface without vnet headers). Replies to the
//! gateway's own connections on data interfaces go through natgw: TCP and
//! UDP are handed back as `Local`, but an ICMP echo reply (the gateway's own
//! ping) or a lone RST matches no flow and is dropped. `Local` packets for
//! addresses the host does not have (pool or netmap addresses) are dropped
//! as `local_undeliverable` rather than handed back, where the kernel would
//! route them out again. The host's addresses and the proxy ARP entries
//! are read and made at start; a ruleset reload or an address added later
//! does not change them.

use super::config::DataplaneConfig;
use super::device::{Device, SysClock};
use super::host::{
    IpRoute, IpRule, LOCAL_TABLE, host_ipv4, ip, ip_batch, parse_routes, parse_rules, read_mtu,
    set_sysctls,
};
use super::worker::Worker;
use super::{DataplaneError, Running, WorkerStats, sys};
use crate::engine::Engine;
use crate::nat::{IfId, PortRange};
use crate::packet::Link;
use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Packets a worker reads and processes in one batch.
pub const BATCH: usize = 64;
/// How long a worker waits for a packet before it looks at the stop flag.
const WAIT: Duration = Duration::from_millis(100);
/// A frame buffer: the largest IPv4 packet, with the rest as room for a
/// reply the engine writes in place.
const BUF_LEN: usize = 65_536;
/// Where natgw moves the `lookup local` rule: after its own rules (from
/// `table_base`), before `main` (32766).
pub const LOCAL_PREF: u32 = 32_000;
/// The backstop's metric: the worst there is, so the TUN route wins.
const BLACKHOLE_METRIC: u32 = u32::MAX;
/// Proxy ARP entries natgw installs per interface at most.
pub const MAX_PROXY: usize = 4096;
/// Transmit queue of the TUN devices (the kernel's default is 500): the
/// burst that waits for a worker.
const TXQUEUELEN: &str = "4096";
/// Kernel routing table ids that are taken (unspec, default, main, local).
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

/// What natgw installs for one data interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Steer {
    ifid: IfId,
    ifname: String,
    tun: String,
    /// Routing table, and the preference of the rule that looks it up.
    table: u32,
    /// Addresses natgw owns on the interface's network: proxy ARP entries.
    proxies: Vec<u32>,
}

/// The TUN backend's footprint on the host; dropping it removes all but
/// the guard (see the module docs). The TUN devices themselves belong to
/// the workers and go away when those end.
pub struct TunGuard {
    steers: Vec<Steer>,
    /// Proxy ARP entries added so far, per steer (a prefix of `proxies`).
    proxied: Vec<usize>,
    /// RPS masks natgw changed (put back at stop).
    rps: Vec<RpsSaved>,
}

/// A receive queue's RPS mask file natgw wrote, and what it held before.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RpsSaved {
    path: String,
    old: String,
}

/// Validates the host, installs TUN devices, routes and rules, and starts
/// one worker per interface. On error nothing but the guard is left.
pub fn start(
    cfg: &DataplaneConfig,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
) -> Result<Running, DataplaneError> {
    // 1. Check everything; change nothing.
    let steers = plan(cfg)?;
    for (s, i) in steers.iter().zip(&cfg.interfaces) {
        sys::ifindex(&s.ifname)
            .map_err(|e| DataplaneError(format!("{e} (config interface `{}`)", s.ifname)))?;
        if !sys::has_ipv4(&s.ifname, i.addr.addr).map_err(|e| DataplaneError(e.to_string()))? {
            return Err(DataplaneError(format!(
                "address {} is not on interface `{}` (add it: ip addr add {} dev {})",
                Ipv4Addr::from(i.addr.addr),
                s.ifname,
                i.addr,
                s.ifname
            )));
        }
        if sys::ifindex(&s.tun).is_ok() {
            return Err(DataplaneError(format!(
                "a device named `{}` exists already: is another natgw running? \
                 (choose another [tun] prefix; if the device is stale: ip link del {})",
                s.tun, s.tun
            )));
        }
    }
    let rules = parse_rules(&ip(&["-N", "-j", "rule", "show"])?)
        .map_err(|e| DataplaneError(format!("reading `ip -N -j rule show`: {e}")))?;
    let rule_plan = check_rules(&rules, &steers).map_err(DataplaneError)?;
    for w in &rule_plan.warnings {
        log::warn!("{w}");
    }
    let mut have_blackhole = Vec::new();
    for s in &steers {
        let t = s.table.to_string();
        let routes = match ip(&["-N", "-j", "route", "show", "table", &t]) {
            Ok(out) => {
                parse_routes(&out).map_err(|e| DataplaneError(format!("reading table {t}: {e}")))?
            }
            // A table with no routes does not exist for the kernel.
            Err(e) if e.0.contains("does not exist") => Vec::new(),
            Err(e) => return Err(e),
        };
        have_blackhole.push(check_routes(&routes, s).map_err(DataplaneError)?);
    }
    let mtus = steers
        .iter()
        .map(|s| read_mtu(&s.ifname))
        .collect::<Result<Vec<u16>, _>>()?;
    let host_addrs: Arc<[u32]> = host_ipv4()?.into();

    // 2. TUN devices (closed, hence gone, if anything below fails).
    let mut devs = Vec::new();
    for (s, &mtu) in steers.iter().zip(&mtus) {
        let mut c = tun::Configuration::default();
        // Down until its sysctls are set (no IPv6 chatter at link-up).
        c.tun_name(&s.tun).layer(tun::Layer::L3).mtu(mtu).down();
        let dev = tun::create(&c)
            .map_err(|e| DataplaneError(format!("creating TUN device `{}`: {e}", s.tun)))?;
        dev.set_nonblock()
            .map_err(|e| DataplaneError(format!("{}: O_NONBLOCK: {e}", s.tun)))?;
        devs.push(dev);
    }

    // 3. Sysctls, then proxy ARP, routes, rules, the local move. The guard
    // exists from here on, so an error removes the proxy entries again.
    let pairs: Vec<(&str, &str)> = steers
        .iter()
        .map(|s| (s.tun.as_str(), s.ifname.as_str()))
        .collect();
    set_sysctls(&pairs)?;
    for s in &steers {
        ip(&["link", "set", "dev", &s.tun, "txqueuelen", TXQUEUELEN, "up"])?;
    }
    let mut guard = TunGuard {
        proxied: vec![0; steers.len()],
        steers,
        rps: Vec::new(),
    };
    steer_receive(&mut guard);
    for k in 0..guard.steers.len() {
        let s = &guard.steers[k];
        let lines: Vec<String> = s
            .proxies
            .iter()
            .map(|&a| format!("neigh replace proxy {} dev {}", Ipv4Addr::from(a), s.ifname))
            .collect();
        // Counted first: a batch that fails half-way is undone in full.
        guard.proxied[k] = lines.len();
        ip_batch(&lines, false)?;
    }
    for (s, &blackhole) in guard.steers.iter().zip(&have_blackhole) {
        let t = s.table.to_string();
        if !blackhole {
            let m = BLACKHOLE_METRIC.to_string();
            ip(&[
                "route",
                "replace",
                "blackhole",
                "default",
                "metric",
                &m,
                "table",
                &t,
            ])?;
        }
        ip(&["route", "replace", "default", "dev", &s.tun, "table", &t])?;
    }
    for (pref, iif) in &rule_plan.stale {
        let p = pref.to_string();
        ip(&["rule", "del", "pref", &p, "iif", iif, "lookup", &p])?;
    }
    for &pref in &rule_plan.check_stale {
        let args = check_rule_args(pref);
        let mut v = vec!["rule", "del"];
        v.extend(args.iter().map(String::as_str));
        ip(&v)?;
    }
    if !rule_plan.check_present {
        let args = check_rule_args(check_pref(&guard.steers));
        let mut v = vec!["rule", "add"];
        v.extend(args.iter().map(String::as_str));
        ip(&v)?;
    }
    for &k in &rule_plan.add {
        let s = &guard.steers[k];
        let t = s.table.to_string();
        ip(&["rule", "add", "iif", &s.ifname, "lookup", &t, "pref", &t])?;
    }
    // Add the late `local` lookup before removing the early one, so that
    // there is always one.
    if !rule_plan.local_moved {
        let p = LOCAL_PREF.to_string();
        ip(&["rule", "add", "pref", &p, "lookup", "local"])?;
    }
    if rule_plan.local_at_0 {
        ip(&["rule", "del", "pref", "0", "lookup", "local"])?;
    }

    // 4. Workers.
    let mut running = Running::default();
    let neigh = Arc::new(super::neigh::Neighbours::default());
    for (s, dev) in guard.steers.iter().zip(devs) {
        let stats = Arc::new(WorkerStats::new(s.tun.clone()));
        running.stats.push(stats.clone());
        let dev = TunDevice::new(s.ifid, s.tun.clone(), dev, BATCH);
        let mut w = Worker::new(dev, SysClock, engine.clone(), neigh.clone(), stats, BATCH)
            .with_host_addrs(host_addrs.clone())
            .with_idle_wait(WAIT);
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .name(format!("natgw-{}", s.ifname))
            .spawn(move || w.run(&stop, &AtomicBool::new(false)))
            .map_err(|e| DataplaneError(format!("spawning worker: {e}")))?;
        running.workers.push(h);
    }
    log::info!(
        "tun: steering {} through natgw (policy tables {})",
        guard
            .steers
            .iter()
            .map(|s| format!("{} via {}", s.ifname, s.tun))
            .collect::<Vec<_>>()
            .join(", "),
        guard
            .steers
            .iter()
            .map(|s| s.table.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    running.tun = Some(guard);
    // An AF_XDP run leaves its nftables guard behind, which drops the
    // forwarding this backend relies on: replace it by ours (above).
    match super::guard::remove() {
        Ok(true) => log::info!(
            "tun: removed the AF_XDP stop guard (inet {}); the TUN backend's blackhole routes guard instead",
            super::guard::TABLE
        ),
        Ok(false) => {}
        Err(e) => log::warn!("tun: {e}; forwarding through the TUN devices may be blocked"),
    }
    Ok(running)
}

/// The commands that hand the data interfaces back to the kernel after
/// natgw has stopped (removing the guard it leaves; see the module docs).
pub fn release_commands(cfg: &DataplaneConfig) -> Vec<String> {
    release_lines(
        cfg.interfaces
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), cfg.tun.table_base + i as u32)),
    )
}

/// [`release_commands`] for (interface, table) pairs.
fn release_lines<'a>(steers: impl IntoIterator<Item = (&'a str, u32)>) -> Vec<String> {
    let mut v = vec![
        "ip rule add pref 0 lookup local".to_string(),
        format!("ip rule del pref {LOCAL_PREF} lookup local"),
    ];
    let mut first = None::<u32>;
    for (name, t) in steers {
        first = Some(first.map_or(t, |f| f.min(t)));
        v.push(format!("ip rule del pref {t} iif {name} lookup {t}"));
        v.push(format!("ip route flush table {t}"));
    }
    if let Some(f) = first {
        v.push(format!("ip rule del {}", check_rule_args(f - 1).join(" ")));
    }
    v
}

/// Moves the kernel's receive processing (RPS) of the data interfaces off
/// the CPUs natgw runs on (module docs, "Receive CPUs"). Never fails: what
/// it cannot read or write is logged and left as it is.
fn steer_receive(guard: &mut TunGuard) {
    let (online, mine) = match (sys::online_cpus(), sys::affinity()) {
        (Ok(o), Ok(a)) => (o, a),
        (Err(e), _) | (_, Err(e)) => {
            log::warn!("tun: reading the CPUs: {e}; receive processing left where it is");
            return;
        }
    };
    let names: Vec<&str> = guard.steers.iter().map(|s| s.ifname.as_str()).collect();
    let Some(rx) = receive_cpus(&online, &mine) else {
        log::warn!(
            "tun: natgw may run on every online CPU ({}), so the kernel's receive processing \
             of {} can take the TUN workers' CPU and starve them under a flood; run natgw on \
             CPUs other than those that take the interfaces' interrupts (e.g. taskset -c) to \
             have it moved off them",
            cpu_list(&online),
            names.join(", ")
        );
        return;
    };
    let mask = rps_mask(&rx);
    for name in &names {
        let dir = format!("/sys/class/net/{name}/queues");
        let mut queues: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(d) => d
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("rx-"))
                .collect(),
            Err(e) => {
                log::warn!("tun: {dir}: {e}; receive processing of {name} left where it is");
                continue;
            }
        };
        queues.sort();
        for q in queues {
            let path = format!("{dir}/{q}/rps_cpus");
            let old = match std::fs::read_to_string(&path) {
                Ok(o) => o.trim().to_string(),
                Err(e) => {
                    log::warn!("tun: {path}: {e} (no RPS?); receive processing left where it is");
                    continue;
                }
            };
            let cur = parse_rps_mask(&old).unwrap_or_default();
            if !cur.is_empty() && !cur.iter().any(|c| mine.contains(c)) {
                continue;
            }
            match std::fs::write(&path, &mask) {
                Ok(()) => guard.rps.push(RpsSaved { path, old }),
                Err(e) => log::warn!("tun: {path}: writing {mask}: {e}"),
            }
        }
    }
    if !guard.rps.is_empty() {
        log::info!(
            "tun: receive processing of {} moved to CPU(s) {} (RPS mask {mask} on {} queue(s)), \
             off natgw's CPU(s) {}; put back at stop",
            names.join(", "),
            cpu_list(&rx),
            guard.rps.len(),
            cpu_list(&mine)
        );
    }
}

/// The online CPUs natgw does not run on; `None` if there are none.
fn receive_cpus(online: &[usize], natgw: &[usize]) -> Option<Vec<usize>> {
    let v: Vec<usize> = online
        .iter()
        .copied()
        .filter(|c| !natgw.contains(c))
        .collect();
    (!v.is_empty()).then_some(v)
}

/// An RPS mask as the kernel writes it: 32-bit hex groups, most
/// significant first, separated by commas.
fn rps_mask(cpus: &[usize]) -> String {
    let groups = cpus.iter().max().map_or(1, |m| m / 32 + 1);
    let mut words = vec![0u32; groups];
    for &c in cpus {
        words[c / 32] |= 1 << (c % 32);
    }
    words
        .iter()
        .rev()
        .map(|w| format!("{w:08x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The CPUs in an RPS mask (`00000000,00000003`, `3`); `None` if unreadable.
fn parse_rps_mask(s: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for (i, g) in s.trim().rsplit(',').enumerate() {
        let w = u32::from_str_radix(g, 16).ok()?;
        cpus.extend((0..32).filter(|b| w & (1 << b) != 0).map(|b| i * 32 + b));
    }
    cpus.sort_unstable();
    Some(cpus)
}

/// `0,2,3` for the log.
fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Drop for TunGuard {
    fn drop(&mut self) {
        for r in &self.rps {
            if let Err(e) = std::fs::write(&r.path, &r.old) {
                log::warn!("tun: putting back {} = {}: {e}", r.path, r.old);
            }
        }
        for (s, &n) in self.steers.iter().zip(&self.proxied) {
            // The TUN route went with the device if the worker has ended;
            // delete it now in case it has not, so traffic stops here.
            if sys::ifindex(&s.tun).is_ok() {
                let t = s.table.to_string();
                if let Err(e) = ip(&["route", "del", "default", "dev", &s.tun, "table", &t]) {
                    log::warn!("{e}");
                }
            }
            let lines: Vec<String> = s.proxies[..n]
                .iter()
                .map(|&a| format!("neigh del proxy {} dev {}", Ipv4Addr::from(a), s.ifname))
                .collect();
            if let Err(e) = ip_batch(&lines, true) {
                log::warn!("removing proxy ARP entries: {e}");
            }
        }
        let names: Vec<&str> = self.steers.iter().map(|s| s.ifname.as_str()).collect();
        let release = release_lines(self.steers.iter().map(|s| (s.ifname.as_str(), s.table)));
        log::info!(
            "tun: TUN devices removed; IPv4 arriving on {} is now dropped (rules to \
             blackhole routes, `local` looked up at pref {LOCAL_PREF}) until natgw runs \
             again. To give the interfaces back to the kernel: {}",
            names.join(", "),
            release.join("; ")
        );
    }
}

/// One TUN device as a one-port [`Device`]: a read gives one IP packet,
/// which goes into a buffer of the device's own arena (one per frame of a
/// batch, each `BUF_LEN` bytes: the largest IPv4 packet and room for a
/// reply); a write sends one back. Sent frames are free at once.
pub struct TunDevice {
    ifid: IfId,
    name: String,
    dev: tun::Device,
    bufs: Vec<Box<[u8]>>,
    free: Vec<u32>,
    pollfd: [libc::pollfd; 1],
}

/// A frame of a [`TunDevice`]: an arena buffer and its data length.
#[derive(Debug, Clone, Copy, Default)]
pub struct TunFrame {
    idx: u32,
    len: u32,
}

impl TunDevice {
    /// The device for interface `ifid`, with buffers for `batch` packets.
    fn new(ifid: IfId, name: String, dev: tun::Device, batch: usize) -> TunDevice {
        let fd = dev.as_raw_fd();
        TunDevice {
            ifid,
            name,
            dev,
            // Zeroed memory from the allocator: pages are touched only as
            // packets use them.
            bufs: (0..batch)
                .map(|_| vec![0u8; BUF_LEN].into_boxed_slice())
                .collect(),
            free: (0..batch as u32).rev().collect(),
            pollfd: [libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }],
        }
    }
}

impl Device for TunDevice {
    type Frame = TunFrame;
    type Buf<'a> = &'a mut [u8];

    fn link(&self) -> Link {
        Link::Ip
    }

    fn ports(&self) -> usize {
        1
    }

    fn ifid(&self, _port: usize) -> IfId {
        self.ifid
    }

    fn mac(&self, _port: usize) -> [u8; 6] {
        [0; 6]
    }

    fn addr(&self, _port: usize) -> u32 {
        0
    }

    /// Reads what is queued (the fd is non-blocking), up to `rx.len()`.
    fn recv(&mut self, _port: usize, rx: &mut [TunFrame]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < rx.len() {
            let Some(idx) = self.free.pop() else { break };
            match self.dev.read(&mut self.bufs[idx as usize]) {
                Ok(len) => {
                    rx[n] = TunFrame {
                        idx,
                        len: len as u32,
                    };
                    n += 1;
                }
                Err(e) => {
                    self.free.push(idx);
                    if quiet(&e) {
                        break;
                    }
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: read: {e}", self.name),
                    ));
                }
            }
        }
        Ok(n)
    }

    #[inline]
    fn len(&self, f: &TunFrame) -> usize {
        f.len as usize
    }

    fn data_mut<'a>(&'a mut self, f: &'a mut TunFrame) -> &'a mut [u8] {
        &mut self.bufs[f.idx as usize][..f.len as usize]
    }

    fn buf_mut<'a>(&'a mut self, f: &'a mut TunFrame) -> &'a mut [u8] {
        &mut self.bufs[f.idx as usize]
    }

    fn set_len(&mut self, f: &mut TunFrame, len: usize) {
        f.len = len.min(BUF_LEN) as u32;
    }

    fn alloc(&mut self) -> Option<TunFrame> {
        self.free.pop().map(|idx| TunFrame { idx, len: 0 })
    }

    fn free(&mut self, f: TunFrame) {
        self.free.push(f.idx);
    }

    /// Writes each frame; one the kernel refuses (queue full, no memory)
    /// is left to the caller, and the next is tried.
    fn transmit(&mut self, _port: usize, frames: &mut [TunFrame]) -> std::io::Result<usize> {
        let mut sent = 0;
        for i in 0..frames.len() {
            let f = frames[i];
            match self.dev.write(&self.bufs[f.idx as usize][..f.len as usize]) {
                Ok(_) => {
                    frames.swap(sent, i);
                    sent += 1;
                    self.free.push(f.idx);
                }
                Err(e) if quiet(&e) || e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => {
                    log::debug!("{}: write: {e}", self.name);
                    if e.raw_os_error() == Some(libc::EBADFD) {
                        return Err(std::io::Error::new(
                            e.kind(),
                            format!("{}: write: {e}", self.name),
                        ));
                    }
                }
            }
        }
        Ok(sent)
    }

    fn complete(&mut self, _port: usize) -> usize {
        0
    }

    fn refill(&mut self, _port: usize) {}

    fn tx_in_flight(&self, _port: usize) -> usize {
        0
    }

    fn needs_kick(&self, _port: usize) -> bool {
        false
    }

    fn kick(&mut self, _port: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        sys::poll_in(&mut self.pollfd, ms);
    }

    fn check_frames(&self, held: usize) {
        debug_assert_eq!(
            self.free.len() + held,
            self.bufs.len(),
            "TUN frame accounting"
        );
    }
}

/// Errors that only mean "nothing now": no packet, a timeout, a signal.
fn quiet(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Names, tables and proxy addresses for the config (no host access).
fn plan(cfg: &DataplaneConfig) -> Result<Vec<Steer>, DataplaneError> {
    let t = &cfg.tun;
    let ifs = &cfg.interfaces;
    let last = t.table_base as u64 + ifs.len() as u64 - 1;
    if t.table_base < 2 || last >= LOCAL_PREF as u64 {
        return Err(DataplaneError(format!(
            "tun.table_base = {}: natgw needs tables and rule preferences {}..={last}, \
             which must lie in 2..{LOCAL_PREF} (it moves the `local` lookup to {LOCAL_PREF} \
             and puts its health-check rule just before table_base)",
            t.table_base, t.table_base
        )));
    }
    let ranges = &cfg.owned;
    let mut steers = Vec::new();
    for (i, f) in ifs.iter().enumerate() {
        let table = t.table_base + i as u32;
        if RESERVED_TABLES.contains(&table) {
            return Err(DataplaneError(format!(
                "tun.table_base = {}: table {table} (for `{}`) is one of the kernel's \
                 (253 default, 254 main, 255 local); choose another table_base",
                t.table_base, f.name
            )));
        }
        let tun = format!("{}{}", t.prefix, f.name);
        if tun.len() > 15 {
            return Err(DataplaneError(format!(
                "TUN device name `{tun}` is over 15 characters: set a shorter [tun] prefix"
            )));
        }
        let proxies = proxies(ranges, f.addr.network());
        if proxies.len() > MAX_PROXY {
            return Err(DataplaneError(format!(
                "{} addresses natgw owns lie in `{}`'s network {}; the tun backend answers \
                 ARP for each with a proxy entry and allows at most {MAX_PROXY} per interface",
                proxies.len(),
                f.name,
                f.addr.network()
            )));
        }
        steers.push(Steer {
            ifid: i as IfId,
            ifname: f.name.clone(),
            tun,
            table,
            proxies,
        });
    }
    Ok(steers)
}

/// The addresses of `ranges` (inclusive) inside `net`, without its network
/// and broadcast addresses; stops just past [`MAX_PROXY`].
fn proxies(ranges: &[(u32, u32)], net: crate::nat::Prefix) -> Vec<u32> {
    let first = net.addr;
    let last = net.addr | !net.mask();
    let (lo_ok, hi_ok) = if net.len <= 30 {
        (first + 1, last - 1)
    } else {
        (first, last)
    };
    let mut v = Vec::new();
    for &(lo, hi) in ranges {
        let (lo, hi) = (lo.max(lo_ok), hi.min(hi_ok));
        let mut a = lo;
        while a <= hi && v.len() <= MAX_PROXY {
            v.push(a);
            if a == u32::MAX {
                break;
            }
            a += 1;
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// What to change in the rule list.
#[derive(Debug, Default, PartialEq, Eq)]
struct RulePlan {
    /// Steers (indices) whose rule is missing.
    add: Vec<usize>,
    /// natgw-shaped rules in natgw's range for another interface (a
    /// previous config): (pref, iif), deleted before `add`.
    stale: Vec<(u32, String)>,
    /// `pref 0 lookup local` is there (to delete).
    local_at_0: bool,
    /// `pref 32000 lookup local` is there already.
    local_moved: bool,
    /// The health-check rule is there at its preference.
    check_present: bool,
    /// Health-check rules at other preferences (an earlier table_base):
    /// deleted.
    check_stale: Vec<u32>,
    warnings: Vec<String>,
}

/// Preference of the health-check rule: just before natgw's first rule.
fn check_pref(steers: &[Steer]) -> u32 {
    steers.iter().map(|s| s.table).min().unwrap_or(1) - 1
}

/// `ip rule` arguments of the health-check rule at `pref`.
fn check_rule_args(pref: u32) -> Vec<String> {
    let r = PortRange::HEALTH_CHECK;
    [
        "pref".to_string(),
        pref.to_string(),
        "ipproto".into(),
        "tcp".into(),
        "dport".into(),
        format!("{}-{}", r.lo, r.hi),
        "lookup".into(),
        "local".into(),
    ]
    .into()
}

/// Checks the host's rules against what natgw needs; an `Err` names the
/// rules in the way.
fn check_rules(rules: &[IpRule], steers: &[Steer]) -> Result<RulePlan, String> {
    let ours = |pref: u32| steers.iter().position(|s| s.table == pref);
    let last = steers.iter().map(|s| s.table).max().unwrap_or(0);
    let mut plan = RulePlan::default();
    let mut have = vec![false; steers.len()];
    let mut conflicts = Vec::new();
    let check_at = check_pref(steers);
    for r in rules {
        let is_local = r.plain && r.iif.is_none() && r.table == Some(LOCAL_TABLE);
        if r.check {
            if r.pref == check_at {
                plan.check_present = true;
            } else {
                plan.check_stale.push(r.pref);
            }
        } else if let Some(k) = ours(r.pref) {
            let s = &steers[k];
            if r.plain && r.table == Some(s.table) && r.iif.as_deref() == Some(&s.ifname) {
                have[k] = true;
            } else if r.plain && r.table == Some(r.pref) && r.iif.is_some() {
                plan.stale.push((r.pref, r.iif.clone().unwrap_or_default()));
            } else {
                conflicts.push(format!("pref {}: {}", r.pref, r.text));
            }
        } else if let Some(t) = r.table.filter(|&t| ours(t).is_some()) {
            conflicts.push(format!(
                "pref {} looks up natgw's table {t}: {}",
                r.pref, r.text
            ));
        } else if r.pref == LOCAL_PREF {
            if is_local {
                plan.local_moved = true;
            } else {
                conflicts.push(format!("pref {LOCAL_PREF}: {}", r.text));
            }
        } else if r.pref == 0 && r.table == Some(LOCAL_TABLE) {
            plan.local_at_0 = true;
        } else if r.table == Some(LOCAL_TABLE) && r.pref <= last {
            conflicts.push(format!(
                "pref {} looks up the `local` table before natgw's rules: {}",
                r.pref, r.text
            ));
        } else if r.pref < last {
            plan.warnings.push(format!(
                "tun: ip rule pref {} comes before natgw's and may steer traffic past it: {}",
                r.pref, r.text
            ));
        }
    }
    if !conflicts.is_empty() {
        return Err(format!(
            "the policy-routing rules natgw needs (prefs and tables {}..={last}, and \
             `lookup local` at {LOCAL_PREF}) are in use: {}; remove those rules or set \
             [tun] table_base to a free range",
            steers.first().map_or(0, |s| s.table),
            conflicts.join("; ")
        ));
    }
    plan.add = (0..steers.len()).filter(|&k| !have[k]).collect();
    Ok(plan)
}

/// Checks table `s.table`: only natgw's blackhole (and TUN route) may be
/// there. Returns whether the blackhole is.
fn check_routes(routes: &[IpRoute], s: &Steer) -> Result<bool, String> {
    let mut blackhole = false;
    let mut foreign = Vec::new();
    for r in routes {
        if r.kind == "blackhole" && r.dst == "default" && r.metric == BLACKHOLE_METRIC as u64 {
            blackhole = true;
        } else if !(r.kind == "unicast" && r.dst == "default" && r.dev.as_deref() == Some(&s.tun)) {
            foreign.push(r.text.clone());
        }
    }
    if foreign.is_empty() {
        Ok(blackhole)
    } else {
        Err(format!(
            "routing table {} (natgw's for `{}`) holds routes natgw did not add: {}; \
             set [tun] table_base to a free range, or empty it: ip route flush table {}",
            s.table,
            s.ifname,
            foreign.join(", "),
            s.table
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::config::{AfxdpConfig, Backend, TunConfig};
    use crate::engine::{Interface, Role};
    use crate::nat::IfAddr;

    /// lan0 10.0.0.1/24 (inside), wan0 203.0.113.1/24 with extra address
    /// 203.0.113.2 (outside); natgw owns those and an SNAT pool of
    /// 203.0.113.10-203.0.113.11 and 198.51.100.1.
    fn cfg_with(table_base: u32, lan: &str) -> DataplaneConfig {
        let iface = |name: &str, role, addr: &str, extra: Vec<u32>| Interface {
            name: name.into(),
            role,
            addr: IfAddr {
                addr: ip_of(addr),
                len: 24,
            },
            extra,
            mac: None,
        };
        let one = |a: &str| (ip_of(a), ip_of(a));
        DataplaneConfig {
            backend: Backend::Tun,
            interfaces: vec![
                iface(lan, Role::Inside, "10.0.0.1", vec![]),
                iface(
                    "wan0",
                    Role::Outside,
                    "203.0.113.1",
                    vec![ip_of("203.0.113.2")],
                ),
            ],
            afxdp: AfxdpConfig::default(),
            tun: TunConfig {
                table_base,
                ..TunConfig::default()
            },
            owned: vec![
                one("10.0.0.1"),
                one("203.0.113.1"),
                one("203.0.113.2"),
                (ip_of("203.0.113.10"), ip_of("203.0.113.11")),
                one("198.51.100.1"),
            ],
        }
    }

    fn cfg() -> DataplaneConfig {
        cfg_with(7100, "lan0")
    }

    fn steers() -> Vec<Steer> {
        plan(&cfg()).unwrap()
    }

    fn ip_of(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn plan_names_tables_and_proxies() {
        let s = steers();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].tun.as_str(), s[0].table), ("ngw-lan0", 7100));
        assert_eq!((s[1].tun.as_str(), s[1].table), ("ngw-wan0", 7101));
        assert_eq!(s[0].proxies, vec![ip_of("10.0.0.1")]);
        // Interface and extra address, and the pool part on wan0's network;
        // 198.51.100.1 is on no interface's network.
        let want: Vec<u32> = ["203.0.113.1", "203.0.113.2", "203.0.113.10", "203.0.113.11"]
            .iter()
            .map(|a| ip_of(a))
            .collect();
        assert_eq!(s[1].proxies, want);
    }

    #[test]
    fn plan_refuses_bad_tables_and_names() {
        let e = plan(&cfg_with(31999, "lan0")).unwrap_err().0;
        assert!(e.contains("31999..=32000"), "{e}");
        let e = plan(&cfg_with(252, "lan0")).unwrap_err().0;
        assert!(e.contains("table 253"), "{e}");
        let e = plan(&cfg_with(7100, "enp0s31f6long")).unwrap_err().0;
        assert!(e.contains("`ngw-enp0s31f6long` is over 15"), "{e}");
    }

    #[test]
    fn proxies_skip_network_and_broadcast_and_stop_past_the_limit() {
        let net = crate::nat::Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 24);
        let base = ip_of("10.0.0.0");
        assert_eq!(
            proxies(&[(base, base + 2), (base + 255, base + 255)], net),
            vec![base + 1, base + 2]
        );
        let wide = crate::nat::Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8);
        assert_eq!(
            proxies(&[(base, base + 100_000)], wide).len(),
            MAX_PROXY + 1
        );
        let p31 = crate::nat::Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 31);
        assert_eq!(proxies(&[(base, base + 1)], p31), vec![base, base + 1]);
    }

    /// `ip -N -j rule show` on a fresh host, as iproute2 6.1 prints it.
    const FRESH: &str = r#"[{"priority":0,"src":"all","table":"255"},{"priority":32766,"src":"all","table":"254"},{"priority":32767,"src":"all","table":"253"}]"#;

    #[test]
    fn fresh_host_needs_every_rule_and_the_local_move() {
        let rules = parse_rules(FRESH).unwrap();
        let p = check_rules(&rules, &steers()).unwrap();
        assert_eq!(p.add, vec![0, 1]);
        assert!(p.local_at_0 && !p.local_moved);
        assert!(p.stale.is_empty() && p.warnings.is_empty());
    }

    #[test]
    fn leftover_guard_is_reused() {
        let json = r#"[{"priority":7099,"src":"all","ipproto":"ipproto-6","dport_start":61000,"dport_end":61999,"table":"255"},
            {"priority":7100,"src":"all","iif":"lan0","table":"7100"},
            {"priority":7101,"src":"all","iif":"wan0","iif_detached":null,"table":"7101"},
            {"priority":32000,"src":"all","table":"255"},
            {"priority":32766,"src":"all","table":"254"},{"priority":32767,"src":"all","table":"253"}]"#;
        let p = check_rules(&parse_rules(json).unwrap(), &steers()).unwrap();
        assert_eq!(
            p,
            RulePlan {
                local_moved: true,
                check_present: true,
                ..RulePlan::default()
            }
        );
    }

    #[test]
    fn health_check_rule_is_recognised_moved_or_refused() {
        let fresh = check_rules(&parse_rules(FRESH).unwrap(), &steers()).unwrap();
        assert!(!fresh.check_present && fresh.check_stale.is_empty());
        assert_eq!(
            check_rule_args(check_pref(&steers())).join(" "),
            "pref 7099 ipproto tcp dport 61000-61999 lookup local"
        );
        // Left by a run with another table_base: deleted, then added.
        let json = r#"[{"priority":4999,"src":"all","ipproto":"tcp","dport_start":61000,"dport_end":61999,"table":"255"}]"#;
        let p = check_rules(&parse_rules(json).unwrap(), &steers()).unwrap();
        assert_eq!((p.check_present, p.check_stale), (false, vec![4999]));
        // Something else that looks up `local` early is still in the way.
        let json = r#"[{"priority":7099,"src":"all","ipproto":"ipproto-6","dport_start":80,"dport_end":80,"table":"255"}]"#;
        let e = check_rules(&parse_rules(json).unwrap(), &steers()).unwrap_err();
        assert!(e.contains("looks up the `local` table before"), "{e}");
        let e = plan(&cfg_with(1, "lan0")).unwrap_err().0;
        assert!(e.contains("2..32000"), "{e}");
    }

    #[test]
    fn stale_natgw_rule_is_replaced() {
        let json = r#"[{"priority":7100,"src":"all","iif":"eth9","table":"7100"}]"#;
        let p = check_rules(&parse_rules(json).unwrap(), &steers()).unwrap();
        assert_eq!(p.stale, vec![(7100, "eth9".to_string())]);
        assert_eq!(p.add, vec![0, 1]);
    }

    #[test]
    fn foreign_rules_in_the_range_are_refused() {
        for json in [
            r#"[{"priority":7100,"src":"10.0.0.0","srclen":8,"iif":"lan0","table":"7100"}]"#,
            r#"[{"priority":7101,"src":"all","fwmark":"0x1","table":"7101"}]"#,
            r#"[{"priority":500,"src":"all","table":"7101"}]"#,
            r#"[{"priority":32000,"src":"all","table":"254"}]"#,
            r#"[{"priority":100,"src":"all","table":"255"}]"#,
        ] {
            let e = check_rules(&parse_rules(json).unwrap(), &steers()).unwrap_err();
            assert!(e.contains("are in use"), "{json}: {e}");
        }
        // Something early but elsewhere is only a warning.
        let json = r#"[{"priority":50,"src":"all","fwmark":"0x1","table":"9"}]"#;
        let p = check_rules(&parse_rules(json).unwrap(), &steers()).unwrap();
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn routes_of_natgw_and_others() {
        let s = &steers()[0];
        let ours = r#"[{"dst":"default","dev":"ngw-lan0","scope":"253","flags":[]},
            {"type":"6","dst":"default","metric":4294967295,"flags":[]}]"#;
        assert_eq!(check_routes(&parse_routes(ours).unwrap(), s), Ok(true));
        assert_eq!(check_routes(&parse_routes("").unwrap(), s), Ok(false));
        let theirs = r#"[{"dst":"10.9.0.0/16","gateway":"10.0.0.254","dev":"lan0","flags":[]}]"#;
        let e = check_routes(&parse_routes(theirs).unwrap(), s).unwrap_err();
        assert!(e.contains("ip route flush table 7100"), "{e}");
    }

    #[test]
    fn release_commands_undo_the_guard() {
        let v = release_commands(&cfg());
        assert_eq!(v[0], "ip rule add pref 0 lookup local");
        assert_eq!(v[1], "ip rule del pref 32000 lookup local");
        assert_eq!(v[2], "ip rule del pref 7100 iif lan0 lookup 7100");
        assert_eq!(v[5], "ip route flush table 7101");
        assert_eq!(
            v[6],
            "ip rule del pref 7099 ipproto tcp dport 61000-61999 lookup local"
        );
    }

    #[test]
    fn receive_work_goes_to_the_cpus_natgw_does_not_run_on() {
        assert_eq!(receive_cpus(&[0, 1], &[1]), Some(vec![0]));
        assert_eq!(receive_cpus(&[0, 1, 2, 3], &[0, 2]), Some(vec![1, 3]));
        // natgw may run everywhere: nothing to move the work to.
        assert_eq!(receive_cpus(&[0, 1], &[0, 1]), None);
        assert_eq!(rps_mask(&[0]), "00000001");
        assert_eq!(rps_mask(&[1, 3]), "0000000a");
        assert_eq!(rps_mask(&[0, 33]), "00000002,00000001");
        for m in [vec![0], vec![1, 3], vec![0, 33], vec![31, 32, 64]] {
            assert_eq!(parse_rps_mask(&rps_mask(&m)), Some(m));
        }
        assert_eq!(parse_rps_mask("0"), Some(vec![]));
        assert_eq!(parse_rps_mask("00000000,00000000"), Some(vec![]));
        assert_eq!(parse_rps_mask("2"), Some(vec![1]));
        assert_eq!(parse_rps_mask("zz"), None);
        assert_eq!(sys::parse_cpulist("0-3,6"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(sys::parse_cpulist("1"), Some(vec![1]));
        assert_eq!(sys::parse_cpulist(""), Some(vec![]));
        assert_eq!(sys::parse_cpulist("3-1"), None);
        assert_eq!(sys::parse_cpulist("x"), None);
    }
}
