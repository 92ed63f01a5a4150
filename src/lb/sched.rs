//! Schedulers: which real server a new client gets, with the semantics of
//! the Linux IPVS modules of the same names (`net/netfilter/ipvs/ip_vs_*.c`).
//!
//! Every scheduler skips servers that are not eligible (weight 0 or down);
//! IPVS skips weight-0 and overloaded servers the same way. Ties go to the
//! server listed first. The hash schedulers live in [`super::hash`].

use super::hash;
use super::service::{NewConn, RealServer};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// A scheduling algorithm (`ipvsadm -s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin: each new client goes to the next eligible server in
    /// list order, weights aside (`ip_vs_rr`).
    Rr,
    /// Weighted round robin (`ip_vs_wrr`): passes over the list with a
    /// current weight `cw` that starts at the largest weight and drops by
    /// the weights' gcd each pass; a pass picks, in list order, each server
    /// whose weight is at least `cw`. Over one cycle every server is picked
    /// `weight / gcd` times, interleaved (3:1 gives A A A B, 4:3:2 gives
    /// A A B A B C A B C).
    Wrr,
    /// Least connection (`ip_vs_lc`): the server with the smallest
    /// `active * 256 + inactive`.
    Lc,
    /// Weighted least connection (`ip_vs_wlc`, IPVS's default): the
    /// smallest `(active * 256 + inactive) / weight`.
    Wlc,
    /// Shortest expected delay (`ip_vs_sed`): the smallest
    /// `(active + 1) / weight`.
    Sed,
    /// Never queue (`ip_vs_nq`): the first idle server (no active
    /// connections) if any, otherwise as `sed`.
    Nq,
    /// Source hashing (`ip_vs_sh`): a 256-bucket table filled in list order,
    /// each server taking `weight` consecutive buckets per round (a weight-0
    /// server still takes one and is skipped at lookup), indexed by a hash
    /// of the client address (and port with `port`). Stable while the
    /// server list is; any change of list or weights reshuffles most
    /// clients.
    Sh(HashOpts),
    /// Destination hashing (`ip_vs_dh`): like `sh` over the destination
    /// address, one bucket per server per round (weights only say whether
    /// a server is eligible). Meant for cache clusters where a service
    /// covers many destinations; with one VIP every client gets the same
    /// server.
    Dh(HashOpts),
    /// Maglev consistent hashing (`ip_vs_mh`, Eisenbud et al., NSDI 2016):
    /// every server walks its own permutation of a prime-sized lookup
    /// table, taking free slots in turns proportional to its weight, and a
    /// client hash indexes the table. Removing one of N servers moves about
    /// 1/N of the clients, little more. Slots are sized by each server's
    /// last non-zero weight, so draining a server moves nobody else.
    Mh(MhOpts),
}

/// Options of `sh` and `dh` (`ipvsadm -b sh-fallback,sh-port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HashOpts {
    /// When the hashed server is unavailable, probe the table for another
    /// (deterministically, from the client's own hash) instead of giving
    /// up. On by default in natgw, off in IPVS (see the module docs).
    pub fallback: bool,
    /// Hash the port too (the client's for `sh`, the destination's for
    /// `dh`), spreading one client's connections.
    pub port: bool,
}

/// Options of `mh` (`ipvsadm -b mh-fallback,mh-port`) and its table size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MhOpts {
    pub fallback: bool,
    pub port: bool,
    /// Lookup table size: a prime, well above 100 times the number of
    /// servers for an even spread (Maglev's advice). IPVS offers primes
    /// from 251 to 131071 and defaults to 4093. Below 64 slots per server,
    /// skewed weights can leave a server late in the list without a slot,
    /// as in IPVS.
    pub table_size: u32,
}

/// Largest `mh` table natgw builds.
pub const MAX_MH_TABLE: u32 = 1 << 20;

impl Default for HashOpts {
    fn default() -> HashOpts {
        HashOpts {
            fallback: true,
            port: false,
        }
    }
}

impl Default for MhOpts {
    fn default() -> MhOpts {
        MhOpts {
            fallback: true,
            port: false,
            table_size: 65_537,
        }
    }
}

impl Scheduler {
    /// The `ipvsadm` name.
    pub fn name(&self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Sh(_) => "sh",
            Scheduler::Dh(_) => "dh",
            Scheduler::Mh(_) => "mh",
        }
    }

    /// Checks options against `reals` servers.
    pub(super) fn validate(&self, reals: usize) -> Result<(), String> {
        let Scheduler::Mh(o) = self else {
            return Ok(());
        };
        let m = o.table_size;
        if !(3..=MAX_MH_TABLE).contains(&m) || !is_prime(m) {
            return Err(format!(
                "mh table size {m} is not a prime in 3..={MAX_MH_TABLE}"
            ));
        }
        if reals as u32 >= m {
            return Err(format!("mh table size {m} too small for {reals} servers"));
        }
        Ok(())
    }
}

impl FromStr for Scheduler {
    type Err = String;

    /// An `ipvsadm` scheduler name, with default options.
    fn from_str(s: &str) -> Result<Scheduler, String> {
        Ok(match s {
            "rr" => Scheduler::Rr,
            "wrr" => Scheduler::Wrr,
            "lc" => Scheduler::Lc,
            "wlc" => Scheduler::Wlc,
            "sed" => Scheduler::Sed,
            "nq" => Scheduler::Nq,
            "sh" => Scheduler::Sh(HashOpts::default()),
            "dh" => Scheduler::Dh(HashOpts::default()),
            "mh" => Scheduler::Mh(MhOpts::default()),
            _ => {
                return Err(format!(
                    "unknown scheduler {s:?} (rr wrr lc wlc sed nq sh dh mh)"
                ));
            }
        })
    }
}

/// `rr`/`wrr` position meaning "before the first server" (IPVS: the list
/// head).
const HEAD: u32 = u32::MAX;

/// A scheduler built for one table version.
pub(super) enum SchedState {
    /// Index of the server picked last.
    Rr(AtomicU32),
    Wrr(Wrr),
    Lc,
    Wlc,
    Sed,
    Nq,
    Sh(Box<[u16]>, HashOpts),
    Dh(Box<[u16]>, HashOpts),
    Mh(Box<[u16]>, MhOpts),
}

impl SchedState {
    /// Builds the scheduler for `reals`. `prev` (the state and servers of
    /// the version being replaced) carries the round-robin position over,
    /// so frequent changes do not keep restarting at the first server.
    pub(super) fn new(
        s: &Scheduler,
        reals: &[RealServer],
        prev: Option<(&SchedState, &[RealServer])>,
    ) -> SchedState {
        match *s {
            Scheduler::Rr => {
                let last = match prev {
                    Some((SchedState::Rr(l), old)) => carry_position(l.load(Relaxed), old, reals),
                    _ => HEAD,
                };
                SchedState::Rr(AtomicU32::new(last))
            }
            Scheduler::Wrr => {
                let cw = match prev {
                    Some((SchedState::Wrr(w), _)) => Some(unpack(w.mark.load(Relaxed)).1),
                    _ => None,
                };
                SchedState::Wrr(Wrr::new(reals, cw))
            }
            Scheduler::Lc => SchedState::Lc,
            Scheduler::Wlc => SchedState::Wlc,
            Scheduler::Sed => SchedState::Sed,
            Scheduler::Nq => SchedState::Nq,
            Scheduler::Sh(o) => SchedState::Sh(hash::sh_table(reals), o),
            Scheduler::Dh(o) => SchedState::Dh(hash::dh_table(reals), o),
            Scheduler::Mh(o) => SchedState::Mh(hash::maglev_table(reals, o.table_size), o),
        }
    }

    /// The scheduler's choice for `c`, by position in `reals`.
    pub(super) fn pick(&self, reals: &[RealServer], c: &NewConn) -> Option<usize> {
        match self {
            SchedState::Rr(last) => rr(reals, last),
            SchedState::Wrr(w) => w.pick(reals),
            SchedState::Lc => least(reals, lc_overhead, false, false),
            SchedState::Wlc => least(reals, lc_overhead, true, false),
            SchedState::Sed => least(reals, |r| r.active() as u64 + 1, true, false),
            SchedState::Nq => least(reals, |r| r.active() as u64 + 1, true, true),
            SchedState::Sh(t, o) => {
                let port = if o.port { c.client_port } else { 0 };
                hash::bucket_lookup(t, reals, c.client, port, o.fallback)
            }
            SchedState::Dh(t, o) => {
                let port = if o.port { c.dst_port } else { 0 };
                hash::bucket_lookup(t, reals, c.dst, port, o.fallback)
            }
            SchedState::Mh(t, o) => {
                let port = if o.port { c.client_port } else { 0 };
                hash::maglev_lookup(t, reals, c.client, port, o.fallback)
            }
        }
    }
}

/// `rr`: the first eligible server after the last one picked, wrapping.
/// The position moves by compare-and-swap, so concurrent callers each get
/// the next server exactly once.
fn rr(reals: &[RealServer], last: &AtomicU32) -> Option<usize> {
    let n = reals.len();
    let mut cur = last.load(Relaxed);
    loop {
        let start = if cur == HEAD { 0 } else { cur as usize + 1 };
        let i = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| reals[i].eligible())?;
        match last.compare_exchange_weak(cur, i as u32, Relaxed, Relaxed) {
            Ok(_) => return Some(i),
            Err(now) => cur = now,
        }
    }
}

/// Maps an `rr` position in `old` to `new`: the same server if it stayed,
/// else the nearest one before it that did (IPVS `ip_vs_rr_del_dest`).
fn carry_position(last: u32, old: &[RealServer], new: &[RealServer]) -> u32 {
    if last == HEAD || last as usize >= old.len() {
        return HEAD;
    }
    (0..=last as usize)
        .rev()
        .find_map(|i| {
            let o = &old[i];
            new.iter()
                .position(|r| r.addr == o.addr && r.port == o.port)
        })
        .map_or(HEAD, |i| i as u32)
}

/// `wrr` state: gcd `di` and top weight `mw` of this version, and the
/// position `(cl, cw)` packed in one word for compare-and-swap.
pub(super) struct Wrr {
    di: i32,
    mw: i32,
    mark: AtomicU64,
}

impl Wrr {
    /// `ip_vs_wrr_init_svc` / `_dest_changed`; `old_cw` is the current
    /// weight of the version being replaced.
    fn new(reals: &[RealServer], old_cw: Option<i32>) -> Wrr {
        let di = reals
            .iter()
            .map(|r| r.weight)
            .filter(|&w| w > 0)
            .fold(0, gcd)
            .max(1) as i32;
        let max = reals.iter().map(|r| r.weight).max().unwrap_or(0) as i32;
        // IPVS lowers mw by di - 1 so the last pass (cw = 1) also catches
        // weights that are not multiples of di.
        let mw = if max == 0 { 0 } else { max - (di - 1) };
        let cw = match old_cw {
            Some(cw) if cw <= mw && cw != 0 && di > 1 => (cw / di) * di + 1,
            Some(cw) if cw <= mw && cw != 0 => cw,
            _ => mw,
        };
        Wrr {
            di,
            mw,
            mark: AtomicU64::new(pack(HEAD, cw)),
        }
    }

    fn pick(&self, reals: &[RealServer]) -> Option<usize> {
        let mut cur = self.mark.load(Relaxed);
        loop {
            let (i, next) = self.step(reals, unpack(cur))?;
            match self
                .mark
                .compare_exchange_weak(cur, pack(i as u32, next), Relaxed, Relaxed)
            {
                Ok(_) => return Some(i),
                Err(now) => cur = now,
            }
        }
    }

    /// From position `(cl, cw)`, walks the list; at its end `cw` drops by
    /// `di` (back to `mw` below 1). Returns the first eligible server with
    /// weight >= `cw` and the `cw` it was found at. Gives up after every
    /// `cw` value has been tried on every server.
    fn step(&self, reals: &[RealServer], (mut cl, mut cw): (u32, i32)) -> Option<(usize, i32)> {
        if self.mw <= 0 || reals.is_empty() {
            return None;
        }
        let n = reals.len();
        let passes = (self.mw / self.di) as usize + 2;
        for _ in 0..passes * (n + 1) {
            let i = if cl == HEAD { 0 } else { cl as usize + 1 };
            if i >= n {
                cl = HEAD;
                cw -= self.di;
                if cw <= 0 {
                    cw = self.mw;
                }
                continue;
            }
            cl = i as u32;
            let r = &reals[i];
            if r.eligible() && r.weight as i32 >= cw {
                return Some((i, cw));
            }
        }
        None
    }
}

fn pack(cl: u32, cw: i32) -> u64 {
    ((cl as u64) << 32) | cw as u32 as u64
}

fn unpack(m: u64) -> (u32, i32) {
    ((m >> 32) as u32, m as u32 as i32)
}

/// IPVS `ip_vs_dest_conn_overhead`.
fn lc_overhead(r: &RealServer) -> u64 {
    ((r.active() as u64) << 8) + r.inactive() as u64
}

/// The eligible server with the least `overhead` (divided by weight when
/// `weighted`), first listed on ties. Compares `a/wa > b/wb` as
/// `a*wb > b*wa`, like IPVS. `idle_first` (nq) takes the first server with
/// no active connection at once.
fn least(
    reals: &[RealServer],
    overhead: impl Fn(&RealServer) -> u64,
    weighted: bool,
    idle_first: bool,
) -> Option<usize> {
    let w = |r: &RealServer| if weighted { r.weight as u64 } else { 1 };
    let mut best: Option<(usize, u64)> = None;
    for (i, r) in reals.iter().enumerate() {
        if !r.eligible() {
            continue;
        }
        if idle_first && r.active() == 0 {
            return Some(i);
        }
        let oh = overhead(r);
        match best {
            Some((b, boh)) if boh * w(r) <= oh * w(&reals[b]) => {}
            _ => best = Some((i, oh)),
        }
    }
    best.map(|(i, _)| i)
}

pub(super) fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn is_prime(n: u32) -> bool {
    let n = n as u64;
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::super::service::tests::{Rng, build, rip, spec};
    use super::super::{ConnState, Health, LbTable};
    use super::*;
    use crate::conntrack::Time;
    use proptest::prelude::*;

    fn picks(s: Scheduler, weights: &[u32], n: usize) -> Vec<usize> {
        let svc = build(&spec(s, weights));
        (0..n)
            .map(|c| svc.schedule(rip(100), c as u16, Time(0)).unwrap().index())
            .collect()
    }

    #[test]
    fn rr_is_exact_round_robin_skipping_ineligible() {
        assert_eq!(picks(Scheduler::Rr, &[1, 5, 1], 7), [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(picks(Scheduler::Rr, &[1, 0, 1], 4), [0, 2, 0, 2]);
        let svc = build(&spec(Scheduler::Rr, &[1, 1, 1, 1]));
        svc.reals()[1].state().set_health(Health::Down);
        let got: Vec<_> = (0..6)
            .map(|_| svc.schedule(1, 1, Time(0)).unwrap().index())
            .collect();
        assert_eq!(got, [0, 2, 3, 0, 2, 3]);
    }

    #[test]
    fn rr_stays_exact_with_concurrent_callers() {
        let svc = build(&spec(Scheduler::Rr, &[1, 1, 1]));
        let counts: Vec<AtomicU32> = (0..3).map(|_| AtomicU32::new(0)).collect();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for c in 0..30_000u32 {
                        let i = svc.schedule(c, 1, Time(0)).unwrap();
                        counts[i.index()].fetch_add(1, Relaxed);
                    }
                });
            }
        });
        let got: Vec<u32> = counts.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(got, [20_000; 3]);
    }

    #[test]
    fn rr_position_survives_a_change() {
        let t = LbTable::build(&[spec(Scheduler::Rr, &[1, 1, 1])], &LbTable::new(1)).unwrap();
        let key = spec(Scheduler::Rr, &[]).key;
        let at = |t: &LbTable| {
            t.service(&key)
                .unwrap()
                .schedule(1, 1, Time(0))
                .unwrap()
                .index()
        };
        assert_eq!(at(&t), 0);
        assert_eq!(at(&t), 1);
        // Server 2 (index 1, picked last) goes: continue after server 1.
        let t = t
            .apply(&crate::lb::Change::DelReal {
                service: key,
                addr: rip(2),
                port: 8080,
            })
            .unwrap();
        assert_eq!(at(&t), 1); // server 3, now at index 1
        assert_eq!(at(&t), 0);
    }

    #[test]
    fn wrr_interleaves_by_gcd() {
        assert_eq!(picks(Scheduler::Wrr, &[3, 1], 8), [0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(
            picks(Scheduler::Wrr, &[4, 3, 2], 9),
            [0, 0, 1, 0, 1, 2, 0, 1, 2]
        );
        // gcd 2: 4:2 is 2:1.
        assert_eq!(picks(Scheduler::Wrr, &[4, 2], 6), [0, 0, 1, 0, 0, 1]);
        // Weight 0 and down servers are passed over.
        assert_eq!(picks(Scheduler::Wrr, &[0, 2, 1], 6), [1, 1, 2, 1, 1, 2]);
    }

    #[test]
    fn wrr_three_to_one_over_100k_flows() {
        let p = picks(Scheduler::Wrr, &[3, 1], 100_000);
        let a = p.iter().filter(|&&i| i == 0).count() as f64 / p.len() as f64;
        assert!((a - 0.75).abs() < 0.02, "share of the weight-3 server: {a}");
    }

    fn with_conns(s: Scheduler, weights: &[u32], conns: &[(u32, u32)]) -> usize {
        let svc = build(&spec(s, weights));
        for (r, &(act, inact)) in svc.reals().iter().zip(conns) {
            for _ in 0..act {
                r.state().transition(None, Some(ConnState::Active));
            }
            for _ in 0..inact {
                r.state().transition(None, Some(ConnState::Inactive));
            }
        }
        svc.schedule(1, 1, Time(0)).unwrap().index()
    }

    #[test]
    fn least_connection_family_follows_counts() {
        // lc: 1 active weighs as 256 inactive.
        assert_eq!(with_conns(Scheduler::Lc, &[1, 1], &[(1, 0), (0, 255)]), 1);
        assert_eq!(with_conns(Scheduler::Lc, &[1, 1], &[(1, 0), (0, 256)]), 0);
        // lc ignores weights; wlc divides by them.
        assert_eq!(with_conns(Scheduler::Lc, &[1, 4], &[(2, 0), (3, 0)]), 0);
        assert_eq!(with_conns(Scheduler::Wlc, &[1, 4], &[(2, 0), (3, 0)]), 1);
        assert_eq!(with_conns(Scheduler::Wlc, &[1, 4], &[(1, 0), (5, 0)]), 0);
        // Ties go to the first listed; ineligible servers never win.
        assert_eq!(with_conns(Scheduler::Wlc, &[2, 2], &[(1, 0), (1, 0)]), 0);
        assert_eq!(with_conns(Scheduler::Wlc, &[0, 2], &[(0, 0), (9, 0)]), 1);
        // sed: (active + 1) / weight; wlc would take the idle weight-1.
        assert_eq!(with_conns(Scheduler::Wlc, &[1, 10], &[(0, 0), (1, 0)]), 0);
        assert_eq!(with_conns(Scheduler::Sed, &[1, 10], &[(0, 0), (1, 0)]), 1);
        // nq: an idle server first, whatever the weights.
        assert_eq!(with_conns(Scheduler::Nq, &[10, 1], &[(1, 0), (0, 0)]), 1);
        assert_eq!(with_conns(Scheduler::Nq, &[10, 1], &[(1, 0), (1, 0)]), 0);
    }

    #[test]
    fn wlc_balances_a_stream_of_long_flows() {
        // Each pick becomes an active connection: wlc converges to the
        // weights 1:2:3.
        let svc = build(&spec(Scheduler::Wlc, &[1, 2, 3]));
        let mut rng = Rng(3);
        for _ in 0..6000 {
            let i = svc.schedule(rng.next() as u32, 1, Time(0)).unwrap();
            svc.real(i)
                .state()
                .transition(None, Some(ConnState::Active));
        }
        let act: Vec<u32> = svc.reals().iter().map(|r| r.active()).collect();
        assert_eq!(act, [1000, 2000, 3000]);
    }

    #[test]
    fn names_parse_back() {
        for s in super::super::service::tests::all_schedulers() {
            assert_eq!(s.name().parse::<Scheduler>().unwrap().name(), s.name());
        }
        assert!("fifo".parse::<Scheduler>().is_err());
        assert!(
            Scheduler::Mh(MhOpts {
                table_size: 1000,
                ..MhOpts::default()
            })
            .validate(3)
            .is_err()
        );
        assert!(
            Scheduler::Mh(MhOpts {
                table_size: 7,
                ..MhOpts::default()
            })
            .validate(7)
            .is_err()
        );
        assert!(Scheduler::Mh(MhOpts::default()).validate(100).is_ok());
    }

    proptest! {
        /// Over one wrr cycle each server is picked exactly weight/gcd times.
        #[test]
        fn wrr_cycle_matches_weights(weights in prop::collection::vec(0u32..12, 1..8)) {
            let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
            prop_assume!(g > 0);
            let cycle: u32 = weights.iter().map(|w| w / g).sum();
            let p = picks(Scheduler::Wrr, &weights, cycle as usize);
            for (i, w) in weights.iter().enumerate() {
                prop_assert_eq!(p.iter().filter(|&&x| x == i).count() as u32, w / g);
            }
        }

        /// Whatever the weights and health, every scheduler returns an
        /// eligible server exactly when one exists (hash schedulers with
        /// fallback; sh weights kept within its 256 buckets).
        #[test]
        fn only_eligible_servers_and_only_none_when_none(
            servers in prop::collection::vec((0u32..12, any::<bool>()), 0..20),
            clients in prop::collection::vec(any::<u32>(), 1..20),
        ) {
            for s in super::super::service::tests::all_schedulers() {
                let weights: Vec<u32> = servers.iter().map(|x| x.0).collect();
                let svc = build(&spec(s, &weights));
                for (r, &(_, up)) in svc.reals().iter().zip(&servers) {
                    r.state().set_health(if up { Health::Up } else { Health::Down });
                }
                let any = svc.reals().iter().any(|r| r.eligible());
                for &c in &clients {
                    let conn = NewConn { client: c, client_port: c as u16, dst: c, dst_port: 80 };
                    match svc.schedule_conn(&conn, Time(0)) {
                        Some(i) => prop_assert!(svc.real(i).eligible(), "{:?}", s),
                        None => prop_assert!(!any, "{:?} gave none", s),
                    }
                }
            }
        }
    }
}
