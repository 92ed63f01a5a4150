//! The current format version ([`CURRENT_VERSION`](super::CURRENT_VERSION)):
//! its payload and the only full codec, [`Payload::from_snapshot`] and
//! [`Payload::into_snapshot`]. Older versions reach it through their
//! upgrade steps.

use super::v1::{Addr, WireEim, WireFlow, WireMember, WirePersist, WireSet, WireTuple};
use crate::conntrack::TcpState;
use crate::engine::CounterSnapshot;
use crate::lb::{ServiceKey, ServiceSpec};
use crate::nat::Prefix;
use crate::packet::Tuple;
use crate::snapshot::{EimEntry, FlowEntry, PersistSnap, SetMember, SetSnapshot, Snapshot};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A flow of version 3: version 1's record, then the flow's age at the
/// capture (0: unknown, from an older file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::snapshot) struct WireFlow3 {
    pub(in crate::snapshot) f: WireFlow,
    pub(in crate::snapshot) age_ns: u64,
}

/// Version 3: version 2 with each flow's age (so a delete logged after a
/// restore or handover has the flow's real start).
#[derive(Debug, Serialize, Deserialize)]
pub(in crate::snapshot) struct Payload {
    pub(in crate::snapshot) captured_unix_ns: u64,
    pub(in crate::snapshot) flows: Vec<WireFlow3>,
    pub(in crate::snapshot) eim: Vec<WireEim>,
    pub(in crate::snapshot) sets: Vec<WireSet>,
    pub(in crate::snapshot) persistence: Vec<WirePersist>,
    /// `[ServiceSpec]` as JSON: self-describing, so fields that
    /// `ServiceSpec` gains later (with serde defaults) do not break it.
    pub(in crate::snapshot) services_json: Option<String>,
    /// Counter name -> value; drop counters as `drop.<name>`.
    pub(in crate::snapshot) counters: Option<Vec<(String, u64)>>,
}

fn addr(a: u32) -> Addr {
    a.to_be_bytes()
}

fn unaddr(a: Addr) -> u32 {
    u32::from_be_bytes(a)
}

impl From<&Tuple> for WireTuple {
    fn from(t: &Tuple) -> WireTuple {
        WireTuple {
            src: addr(t.src),
            dst: addr(t.dst),
            sport: t.sport,
            dport: t.dport,
            proto: t.proto,
        }
    }
}

impl From<WireTuple> for Tuple {
    fn from(t: WireTuple) -> Tuple {
        Tuple {
            src: unaddr(t.src),
            dst: unaddr(t.dst),
            sport: t.sport,
            dport: t.dport,
            proto: t.proto,
        }
    }
}

impl Payload {
    /// The payload of `s`.
    pub(in crate::snapshot) fn from_snapshot(s: &Snapshot) -> Payload {
        Payload {
            captured_unix_ns: s.captured_unix_ns,
            flows: s
                .flows
                .iter()
                .map(|f| WireFlow3 {
                    f: WireFlow {
                        orig: (&f.orig).into(),
                        reply: (&f.reply).into(),
                        tcp_state: f.tcp_state as u8,
                        flags: f.flags,
                        mark: f.mark,
                        packets: f.packets,
                        bytes: f.bytes,
                        remaining_ns: f.remaining_ns,
                    },
                    age_ns: f.age_ns,
                })
                .collect(),
            eim: s
                .eim
                .iter()
                .map(|m| WireEim {
                    inside_addr: addr(m.inside.0),
                    inside_port: m.inside.1,
                    outside_addr: addr(m.outside.0),
                    outside_port: m.outside.1,
                    eif: m.eif,
                    remaining_ns: m.remaining_ns,
                })
                .collect(),
            sets: s
                .sets
                .iter()
                .map(|set| WireSet {
                    name: set.name.clone(),
                    entries: set
                        .entries
                        .iter()
                        .map(|e| WireMember {
                            addr: addr(e.prefix.addr),
                            len: e.prefix.len,
                            remaining_ns: e.remaining_ns,
                        })
                        .collect(),
                })
                .collect(),
            persistence: s
                .persistence
                .iter()
                .map(|p| WirePersist {
                    vip: addr(p.service.vip),
                    vport: p.service.port,
                    proto: p.service.proto,
                    client: addr(p.client),
                    netmask: p.netmask,
                    real: addr(p.real),
                    real_port: p.port,
                    remaining_ns: p.remaining_ns,
                })
                .collect(),
            services_json: s
                .services
                .as_ref()
                .map(|v| serde_json::to_string(v).expect("service specs serialise to JSON")),
            counters: s.counters.as_ref().map(counters_to_wire),
        }
    }

    /// Checks and converts the payload of a file of format `version`
    /// (this version's, or an older one's upgraded); `Err` is a reason.
    pub(super) fn into_snapshot(self, version: u16) -> Result<Snapshot, String> {
        let services = match &self.services_json {
            Some(j) => Some(
                serde_json::from_str::<Vec<ServiceSpec>>(j)
                    .map_err(|e| format!("services: {e}"))?,
            ),
            None => None,
        };
        let counters = self.counters.as_deref().map(counters_from_wire);
        let mut flows = Vec::with_capacity(self.flows.len());
        for (i, WireFlow3 { f, age_ns }) in self.flows.into_iter().enumerate() {
            if f.tcp_state as usize >= TcpState::ALL.len() {
                return Err(format!("flow {i}: unknown TCP state {}", f.tcp_state));
            }
            flows.push(FlowEntry {
                orig: f.orig.into(),
                reply: f.reply.into(),
                tcp_state: TcpState::from_u8(f.tcp_state),
                flags: f.flags,
                mark: f.mark,
                packets: f.packets,
                bytes: f.bytes,
                remaining_ns: f.remaining_ns,
                age_ns,
            });
        }
        let eim = self
            .eim
            .into_iter()
            .map(|m| EimEntry {
                inside: (unaddr(m.inside_addr), m.inside_port),
                outside: (unaddr(m.outside_addr), m.outside_port),
                eif: m.eif,
                remaining_ns: m.remaining_ns,
            })
            .collect();
        let mut sets = Vec::with_capacity(self.sets.len());
        for s in self.sets {
            let mut entries = Vec::with_capacity(s.entries.len());
            for e in s.entries {
                if e.len > 32 {
                    return Err(format!(
                        "set `{}`: prefix length {} is more than 32",
                        s.name, e.len
                    ));
                }
                entries.push(SetMember {
                    prefix: Prefix::new(Ipv4Addr::from(e.addr), e.len),
                    remaining_ns: e.remaining_ns,
                });
            }
            sets.push(SetSnapshot {
                name: s.name,
                entries,
            });
        }
        let mut persistence = Vec::with_capacity(self.persistence.len());
        for p in self.persistence {
            if p.netmask > 32 {
                return Err(format!(
                    "persistence entry: netmask {} is more than 32",
                    p.netmask
                ));
            }
            persistence.push(PersistSnap {
                service: ServiceKey {
                    vip: unaddr(p.vip),
                    port: p.vport,
                    proto: p.proto,
                },
                client: unaddr(p.client),
                netmask: p.netmask,
                real: unaddr(p.real),
                port: p.real_port,
                remaining_ns: p.remaining_ns,
            });
        }
        Ok(Snapshot {
            version,
            captured_unix_ns: self.captured_unix_ns,
            flows,
            eim,
            sets,
            persistence,
            services,
            counters,
        })
    }
}

/// One counter of a [`CounterSnapshot`].
type Field = fn(&mut CounterSnapshot) -> &mut u64;

/// Every counter but the drops, by its name in the file, in the order
/// they are written.
const COUNTERS: [(&str, Field); 13] = [
    ("rx_packets", |c| &mut c.rx_packets),
    ("rx_bytes", |c| &mut c.rx_bytes),
    ("tx_packets", |c| &mut c.tx_packets),
    ("tx_bytes", |c| &mut c.tx_bytes),
    ("fast_path", |c| &mut c.fast_path),
    ("flows_created", |c| &mut c.flows_created),
    ("early_drops", |c| &mut c.early_drops),
    ("tcp_invalid", |c| &mut c.tcp_invalid),
    ("icmp_errors_translated", |c| &mut c.icmp_errors_translated),
    ("frags_translated", |c| &mut c.frags_translated),
    ("ttl_exceeded_sent", |c| &mut c.ttl_exceeded_sent),
    ("local", |c| &mut c.local),
    ("passed", |c| &mut c.passed),
];

fn counters_to_wire(c: &CounterSnapshot) -> Vec<(String, u64)> {
    let mut c = c.clone();
    let mut v: Vec<(String, u64)> = COUNTERS
        .iter()
        .map(|(k, field)| (k.to_string(), *field(&mut c)))
        .collect();
    v.extend(c.drops.iter().map(|(k, n)| (format!("drop.{k}"), *n)));
    v
}

/// Names this natgw does not know are ignored (drop counters are kept by
/// name whatever they are).
fn counters_from_wire(v: &[(String, u64)]) -> CounterSnapshot {
    let mut c = CounterSnapshot::default();
    for (k, n) in v {
        if let Some((_, field)) = COUNTERS.iter().find(|(name, _)| name == k) {
            *field(&mut c) = *n;
        } else if let Some(d) = k.strip_prefix("drop.") {
            c.drops.insert(d.to_string(), *n);
        }
    }
    c
}
