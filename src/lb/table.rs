//! The table of virtual services: one immutable version at a time, changes
//! as new versions, listings and persistence snapshots.

use super::ipv4;
use super::persist::{PersistEntry, Sweep};
use super::sched::Scheduler;
use super::service::{
    Forward, Health, Persistence, RealSpec, ServiceKey, ServiceSpec, VirtualService, sock,
};
use crate::conntrack::Time;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A run-time change, named after the `ipvsadm` command it mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// `-A`: a new service, with its real servers.
    AddService(ServiceSpec),
    /// `-E`: new scheduler or persistence; real servers stay. A new
    /// netmask (or turning persistence off) drops the persistence entries.
    EditService {
        key: ServiceKey,
        scheduler: Scheduler,
        persistence: Option<Persistence>,
    },
    /// `-D`.
    DelService { key: ServiceKey },
    /// `-a`: appended to the list.
    AddReal { service: ServiceKey, real: RealSpec },
    /// `-e`: a new weight (0 drains).
    EditReal { service: ServiceKey, real: RealSpec },
    /// `-d`: its persistence entries go; its flows stay (flow table).
    DelReal {
        service: ServiceKey,
        #[serde(with = "ipv4")]
        addr: u32,
        port: u16,
    },
}

/// Why a change or a table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    #[error("service {0} already exists")]
    ServiceExists(ServiceKey),
    #[error("no service {0}")]
    NoService(ServiceKey),
    #[error("service {service}: real server {real} already exists")]
    RealExists {
        service: ServiceKey,
        real: SocketAddrV4,
    },
    #[error("service {service}: no real server {real}")]
    NoReal {
        service: ServiceKey,
        real: SocketAddrV4,
    },
    #[error("service {service}: {reason}")]
    Invalid { service: ServiceKey, reason: String },
}

/// A service as `ipvsadm -L -n` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub key: ServiceKey,
    pub scheduler: Scheduler,
    pub persistence: Option<Persistence>,
    #[serde(default)]
    pub forward: Forward,
    pub reals: Vec<RealStatus>,
}

/// A real server's line in a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealStatus {
    #[serde(with = "ipv4")]
    pub addr: u32,
    pub port: u16,
    pub weight: u32,
    pub health: Health,
    /// `ActiveConn`: established TCP connections.
    pub active: u32,
    /// `InActConn`: every other connection.
    pub inactive: u32,
    /// Live persistence entries pointing at it (`PersistConn`).
    pub persistent: u32,
    /// Connections ever scheduled to it.
    #[serde(default)]
    pub conns: u64,
    /// Packets and bytes client->server (`in`) and back (`out`) of its
    /// connections, live and ended (see `RealState`'s traffic counters).
    #[serde(default)]
    pub packets_in: u64,
    #[serde(default)]
    pub packets_out: u64,
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
}

/// Virtual services by `(vip, port, proto)`. Immutable once built, except
/// for the interior state described in the module docs; build a new one
/// with [`apply`](LbTable::apply) or [`build`](LbTable::build) and swap.
pub struct LbTable {
    seed: u64,
    services: HashMap<ServiceKey, Arc<VirtualService>, ahash::RandomState>,
    /// Some service has port 0, so lookups try the port-0 key too.
    wildcard: bool,
    /// Service the next expiry sweep starts with.
    sweep_from: AtomicUsize,
}

impl LbTable {
    /// An empty table; `seed` keys its internal hash maps.
    pub fn new(seed: u64) -> LbTable {
        LbTable::from_map(seed, HashMap::with_hasher(hasher(seed)))
    }

    /// Builds a table from a whole configuration (a reload), carrying over
    /// from `prev` the runtime state of services and servers that stay.
    pub fn build(specs: &[ServiceSpec], prev: &LbTable) -> Result<LbTable, LbError> {
        let mut services = HashMap::with_hasher(hasher(prev.seed));
        for s in specs {
            let old = prev.services.get(&s.key).map(|a| &**a);
            let svc = VirtualService::build(s, old, prev.seed)?;
            if services.insert(s.key, Arc::new(svc)).is_some() {
                return Err(LbError::ServiceExists(s.key));
            }
        }
        Ok(LbTable::from_map(prev.seed, services))
    }

    /// The table after `change`. Only the service it touches is rebuilt
    /// (its scheduler tables included); the others are shared. Calls must
    /// be serialised by the caller (the control thread), which then swaps
    /// the result in.
    pub fn apply(&self, change: &Change) -> Result<LbTable, LbError> {
        let (key, spec) = match change {
            Change::AddService(s) => {
                if self.services.contains_key(&s.key) {
                    return Err(LbError::ServiceExists(s.key));
                }
                (s.key, Some(s.clone()))
            }
            Change::EditService {
                key,
                scheduler,
                persistence,
            } => {
                let mut s = self.get(key)?.spec();
                s.scheduler = *scheduler;
                s.persistence = *persistence;
                (*key, Some(s))
            }
            Change::DelService { key } => {
                self.get(key)?;
                (*key, None)
            }
            Change::AddReal { service, real } => {
                let mut s = self.get(service)?.spec();
                if s.reals.iter().any(|r| same(r, real.addr, real.port)) {
                    let real = sock(real.addr, real.port);
                    return Err(LbError::RealExists {
                        service: *service,
                        real,
                    });
                }
                s.reals.push(*real);
                (*service, Some(s))
            }
            Change::EditReal { service, real } => {
                let mut s = self.get(service)?.spec();
                let r = s
                    .reals
                    .iter_mut()
                    .find(|r| same(r, real.addr, real.port))
                    .ok_or(no_real(*service, real.addr, real.port))?;
                *r = *real;
                (*service, Some(s))
            }
            Change::DelReal {
                service,
                addr,
                port,
            } => {
                let mut s = self.get(service)?.spec();
                let before = s.reals.len();
                s.reals.retain(|r| !same(r, *addr, *port));
                if s.reals.len() == before {
                    return Err(no_real(*service, *addr, *port));
                }
                (*service, Some(s))
            }
        };
        let mut services = self.services.clone();
        match spec {
            Some(s) => {
                let old = self.services.get(&key).map(|a| &**a);
                let svc = VirtualService::build(&s, old, self.seed)?;
                services.insert(key, Arc::new(svc));
            }
            None => {
                services.remove(&key);
            }
        }
        Ok(LbTable::from_map(self.seed, services))
    }

    /// Marks a real server up or down, in place: no new version, no table
    /// rebuild (a down server is skipped like an overloaded one in IPVS).
    /// Returns whether the health changed.
    pub fn set_health(
        &self,
        service: ServiceKey,
        addr: u32,
        port: u16,
        h: Health,
    ) -> Result<bool, LbError> {
        let svc = self.get(&service)?;
        let i = svc
            .find_real(addr, port)
            .ok_or(no_real(service, addr, port))?;
        Ok(svc.real(i).state().set_health(h))
    }

    /// The service a new flow to `vip:port` over `proto` belongs to: the
    /// exact key, else a port-0 service of that address.
    pub fn lookup(&self, vip: u32, port: u16, proto: u8) -> Option<&Arc<VirtualService>> {
        let k = ServiceKey { vip, port, proto };
        self.services.get(&k).or_else(|| {
            let any = ServiceKey { port: 0, ..k };
            (self.wildcard).then(|| self.services.get(&any)).flatten()
        })
    }

    /// The distinct virtual addresses (the director owns them: answers
    /// ARP and pings for them).
    pub fn vips(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.services.keys().map(|k| k.vip).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Arc<VirtualService>> {
        self.services.get(key)
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The configuration, sorted by key (what a config dump writes).
    pub fn specs(&self) -> Vec<ServiceSpec> {
        let mut v: Vec<_> = self.services.values().map(|s| s.spec()).collect();
        v.sort_by_key(|s| s.key);
        v
    }

    /// The `ipvsadm -L -n` view, sorted by key.
    pub fn status(&self, now: Time) -> Vec<ServiceStatus> {
        let mut v: Vec<ServiceStatus> = self
            .services
            .values()
            .map(|svc| {
                let mut persistent: HashMap<(u32, u16), u32> = HashMap::new();
                for e in svc.entries(now) {
                    *persistent.entry((e.real, e.port)).or_default() += 1;
                }
                let reals = svc
                    .reals()
                    .iter()
                    .map(|r| RealStatus {
                        addr: r.addr,
                        port: r.port,
                        weight: r.weight,
                        health: r.health(),
                        active: r.active(),
                        inactive: r.inactive(),
                        persistent: persistent.get(&(r.addr, r.port)).copied().unwrap_or(0),
                        conns: r.state().conns(),
                        packets_in: r.state().traffic()[0],
                        packets_out: r.state().traffic()[1],
                        bytes_in: r.state().traffic()[2],
                        bytes_out: r.state().traffic()[3],
                    })
                    .collect();
                ServiceStatus {
                    key: svc.key,
                    scheduler: svc.scheduler,
                    persistence: svc.persistence,
                    forward: svc.forward,
                    reals,
                }
            })
            .collect();
        v.sort_by_key(|s| s.key);
        v
    }

    /// Expires persistence entries across services, looking at no more
    /// than `budget` entries. Each call starts with the next service, so a
    /// big one cannot starve the rest.
    pub fn expire(&self, now: Time, budget: usize) -> Sweep {
        let n = self.services.len();
        let mut total = Sweep::default();
        if n == 0 {
            return total;
        }
        let start = self.sweep_from.fetch_add(1, Relaxed) % n;
        for svc in self.services.values().cycle().skip(start).take(n) {
            if total.visited >= budget {
                break;
            }
            let sw = svc.expire(now, budget - total.visited);
            total.visited += sw.visited;
            total.removed += sw.removed;
        }
        total
    }

    /// Every live persistence entry, for a snapshot.
    pub fn entries(&self, now: Time) -> Vec<PersistEntry> {
        let mut v: Vec<PersistEntry> = self
            .services
            .values()
            .flat_map(|s| s.entries(now))
            .collect();
        v.sort_by_key(|e| (e.service, e.client));
        v
    }

    /// Writes entries back from a snapshot (same clock as `now`). Entries
    /// whose service, persistence or server is gone, or that expired, are
    /// skipped; returns how many were restored.
    pub fn restore(&self, entries: &[PersistEntry], now: Time) -> usize {
        entries
            .iter()
            .filter(|e| {
                self.services
                    .get(&e.service)
                    .is_some_and(|s| s.restore(e, now))
            })
            .count()
    }

    fn from_map(
        seed: u64,
        services: HashMap<ServiceKey, Arc<VirtualService>, ahash::RandomState>,
    ) -> LbTable {
        LbTable {
            seed,
            wildcard: services.keys().any(|k| k.port == 0),
            services,
            sweep_from: AtomicUsize::new(0),
        }
    }

    fn get(&self, key: &ServiceKey) -> Result<&Arc<VirtualService>, LbError> {
        self.services.get(key).ok_or(LbError::NoService(*key))
    }
}

impl std::fmt::Debug for LbTable {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let mut v: Vec<_> = self.services.values().collect();
        v.sort_by_key(|s| s.key);
        f.debug_list().entries(v).finish()
    }
}

fn hasher(seed: u64) -> ahash::RandomState {
    ahash::RandomState::with_seeds(seed, 0x6c62, 0x7461, 0x626c)
}

fn same(r: &RealSpec, addr: u32, port: u16) -> bool {
    r.addr == addr && r.port == port
}

fn no_real(service: ServiceKey, addr: u32, port: u16) -> LbError {
    LbError::NoReal {
        service,
        real: sock(addr, port),
    }
}

#[cfg(test)]
mod tests {
    use super::super::service::tests::{VIP, rip, spec};
    use super::super::{ConnState, MhOpts};
    use super::*;
    use crate::packet::proto;

    fn key() -> ServiceKey {
        spec(Scheduler::Rr, &[]).key
    }

    fn real(n: u8, weight: u32) -> RealSpec {
        RealSpec {
            addr: rip(n),
            port: 8080,
            weight,
        }
    }

    #[test]
    fn changes_like_ipvsadm() {
        let t = LbTable::new(5);
        let t = t
            .apply(&Change::AddService(spec(Scheduler::Wlc, &[1, 1])))
            .unwrap();
        assert!(matches!(
            t.apply(&Change::AddService(spec(Scheduler::Rr, &[]))),
            Err(LbError::ServiceExists(_))
        ));
        let t = t
            .apply(&Change::AddReal {
                service: key(),
                real: real(3, 2),
            })
            .unwrap();
        assert!(matches!(
            t.apply(&Change::AddReal {
                service: key(),
                real: real(3, 2),
            }),
            Err(LbError::RealExists { .. })
        ));
        let t = t
            .apply(&Change::EditReal {
                service: key(),
                real: real(1, 0),
            })
            .unwrap();
        let t = t
            .apply(&Change::EditService {
                key: key(),
                scheduler: Scheduler::Mh(MhOpts::default()),
                persistence: None,
            })
            .unwrap();
        let s = &t.specs()[0];
        assert_eq!(s.scheduler.name(), "mh");
        assert_eq!(
            s.reals.iter().map(|r| r.weight).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let err = t
            .apply(&Change::DelReal {
                service: key(),
                addr: rip(9),
                port: 8080,
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "service TCP  192.0.2.1:80: no real server 10.0.0.9:8080"
        );
        let t = t.apply(&Change::DelService { key: key() }).unwrap();
        assert!(t.is_empty());
        assert!(matches!(
            t.apply(&Change::DelService { key: key() }),
            Err(LbError::NoService(_))
        ));
    }

    #[test]
    fn other_services_are_shared_between_versions() {
        let mut other = spec(Scheduler::Rr, &[1]);
        other.key.port = 443;
        let t = LbTable::build(
            &[spec(Scheduler::Rr, &[1]), other.clone()],
            &LbTable::new(1),
        )
        .unwrap();
        let t2 = t
            .apply(&Change::AddReal {
                service: key(),
                real: real(5, 1),
            })
            .unwrap();
        assert!(Arc::ptr_eq(
            t.service(&other.key).unwrap(),
            t2.service(&other.key).unwrap()
        ));
        assert!(LbTable::build(&[other.clone(), other], &t).is_err());
    }

    #[test]
    fn lookup_falls_back_to_port_zero_services() {
        let mut all = spec(Scheduler::Rr, &[1]);
        all.key.port = 0;
        all.reals[0].port = 0;
        all.persistence = Some(Persistence {
            timeout_secs: 60,
            netmask: None,
            expire_quiescent: false,
        });
        let t = LbTable::build(&[spec(Scheduler::Rr, &[1]), all], &LbTable::new(1)).unwrap();
        assert_eq!(t.lookup(VIP, 80, proto::TCP).unwrap().key.port, 80);
        assert_eq!(t.lookup(VIP, 22, proto::TCP).unwrap().key.port, 0);
        assert!(t.lookup(VIP, 22, proto::UDP).is_none());
        assert!(t.lookup(VIP + 1, 80, proto::TCP).is_none());
    }

    #[test]
    fn status_lists_weights_health_and_counts() {
        let mut s = spec(Scheduler::Rr, &[2, 1]);
        s.persistence = Some(Persistence {
            timeout_secs: 60,
            netmask: None,
            expire_quiescent: false,
        });
        let t = LbTable::build(&[s], &LbTable::new(1)).unwrap();
        let svc = t.service(&key()).unwrap();
        let now = Time::from_secs(1);
        for c in 0..3 {
            let i = svc.schedule(rip(100 + c), 1, now).unwrap();
            svc.real(i)
                .state()
                .transition(None, Some(ConnState::Inactive));
        }
        t.set_health(key(), rip(2), 8080, Health::Down).unwrap();
        let st = t.status(now);
        let r: Vec<_> = st[0]
            .reals
            .iter()
            .map(|r| (r.weight, r.health, r.inactive, r.persistent))
            .collect();
        assert_eq!(r, [(2, Health::Up, 2, 2), (1, Health::Down, 1, 1)]);
        let j = serde_json::to_string(&st).unwrap();
        assert!(j.contains("\"10.0.0.2\"") && j.contains("\"down\""), "{j}");
    }

    #[test]
    fn persistence_snapshot_restores_into_a_new_process() {
        let mut s = spec(Scheduler::Rr, &[1, 1, 1]);
        s.persistence = Some(Persistence {
            timeout_secs: 100,
            netmask: Some(24),
            expire_quiescent: false,
        });
        let a = LbTable::build(std::slice::from_ref(&s), &LbTable::new(1)).unwrap();
        let now = Time::from_secs(50);
        let placed: Vec<_> = (0..9u32)
            .map(|n| {
                let svc = a.service(&key()).unwrap();
                let c = 0x6440_0000 | (n << 8) | 7;
                svc.real(svc.schedule(c, 1, now).unwrap()).addr
            })
            .collect();
        let snap = serde_json::to_string(&a.entries(now)).unwrap();

        // A new process with the same config but another rr position.
        let b = LbTable::build(&[s], &LbTable::new(2)).unwrap();
        b.service(&key()).unwrap().schedule(1, 1, now);
        let entries: Vec<PersistEntry> = serde_json::from_str(&snap).unwrap();
        assert_eq!(b.restore(&entries, now.plus_secs(10)), 9);
        let svc = b.service(&key()).unwrap();
        for (n, addr) in placed.iter().enumerate() {
            let c = 0x6440_0000 | ((n as u32) << 8) | 99;
            let got = svc
                .real(svc.schedule(c, 1, now.plus_secs(10)).unwrap())
                .addr;
            assert_eq!(got, *addr);
        }
        // Expired entries are not restored.
        assert_eq!(b.restore(&entries, now.plus_secs(100)), 0);
    }

    #[test]
    fn expiry_reaches_every_service() {
        let specs: Vec<ServiceSpec> = (0..4)
            .map(|p| {
                let mut s = spec(Scheduler::Rr, &[1]);
                s.key.port = 80 + p;
                s.persistence = Some(Persistence {
                    timeout_secs: 10,
                    netmask: None,
                    expire_quiescent: false,
                });
                s
            })
            .collect();
        let t = LbTable::build(&specs, &LbTable::new(1)).unwrap();
        for s in &specs {
            let svc = t.service(&s.key).unwrap();
            for c in 0..100 {
                svc.schedule(c, 1, Time(0));
            }
        }
        let later = Time::from_secs(10);
        let mut removed = 0;
        for _ in 0..8 {
            let sw = t.expire(later, 60);
            assert!(sw.visited <= 60);
            removed += sw.removed;
        }
        assert_eq!(removed, 400);
        assert!(t.entries(Time(0)).is_empty());
    }

    #[test]
    fn changes_round_trip_through_serde() {
        let c = Change::DelReal {
            service: key(),
            addr: rip(2),
            port: 8080,
        };
        let j = serde_json::to_string(&c).unwrap();
        assert!(
            j.contains("\"op\":\"del_real\"") && j.contains("\"10.0.0.2\""),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<Change>(&j).unwrap(), c);
        let add = Change::AddService(spec(Scheduler::Mh(MhOpts::default()), &[3]));
        let j = serde_json::to_string(&add).unwrap();
        assert_eq!(serde_json::from_str::<Change>(&j).unwrap(), add);
    }
}
