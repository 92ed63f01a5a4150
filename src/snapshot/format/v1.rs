//! Format version 1, frozen: its payload, the record types it
//! introduced, and its upgrade step to version 2.
//!
//! Nothing here may change: version 1 files on disk are decoded with
//! exactly these structs. The record types ([`WireFlow`] and the others)
//! are still those of the current version, except the flow: version 3
//! wraps [`WireFlow`] in its own record (with the flow's age).

use super::v2;
use serde::{Deserialize, Serialize};

/// An IPv4 address, 4 bytes in network order.
pub(in crate::snapshot) type Addr = [u8; 4];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::snapshot) struct WireTuple {
    pub(in crate::snapshot) src: Addr,
    pub(in crate::snapshot) dst: Addr,
    pub(in crate::snapshot) sport: u16,
    pub(in crate::snapshot) dport: u16,
    pub(in crate::snapshot) proto: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::snapshot) struct WireFlow {
    pub(in crate::snapshot) orig: WireTuple,
    pub(in crate::snapshot) reply: WireTuple,
    pub(in crate::snapshot) tcp_state: u8,
    pub(in crate::snapshot) flags: u32,
    pub(in crate::snapshot) mark: u32,
    pub(in crate::snapshot) packets: [u64; 2],
    pub(in crate::snapshot) bytes: [u64; 2],
    pub(in crate::snapshot) remaining_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::snapshot) struct WireEim {
    pub(in crate::snapshot) inside_addr: Addr,
    pub(in crate::snapshot) inside_port: u16,
    pub(in crate::snapshot) outside_addr: Addr,
    pub(in crate::snapshot) outside_port: u16,
    pub(in crate::snapshot) eif: bool,
    pub(in crate::snapshot) remaining_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::snapshot) struct WireMember {
    pub(in crate::snapshot) addr: Addr,
    pub(in crate::snapshot) len: u8,
    pub(in crate::snapshot) remaining_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::snapshot) struct WireSet {
    pub(in crate::snapshot) name: String,
    pub(in crate::snapshot) entries: Vec<WireMember>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::snapshot) struct WirePersist {
    pub(in crate::snapshot) vip: Addr,
    pub(in crate::snapshot) vport: u16,
    pub(in crate::snapshot) proto: u8,
    pub(in crate::snapshot) client: Addr,
    pub(in crate::snapshot) netmask: u8,
    pub(in crate::snapshot) real: Addr,
    pub(in crate::snapshot) real_port: u16,
    pub(in crate::snapshot) remaining_ns: u64,
}

/// Version 1: flows, EIM mappings, set entries, persistence entries.
#[derive(Debug, Serialize, Deserialize)]
pub(in crate::snapshot) struct Payload {
    pub(in crate::snapshot) captured_unix_ns: u64,
    pub(in crate::snapshot) flows: Vec<WireFlow>,
    pub(in crate::snapshot) eim: Vec<WireEim>,
    pub(in crate::snapshot) sets: Vec<WireSet>,
    pub(in crate::snapshot) persistence: Vec<WirePersist>,
}

impl Payload {
    /// Version 1 -> 2: version 1 had no services and no counters (a
    /// restore keeps the services of its config).
    pub(super) fn upgrade(self) -> v2::Payload {
        let Payload {
            captured_unix_ns,
            flows,
            eim,
            sets,
            persistence,
        } = self;
        v2::Payload {
            captured_unix_ns,
            flows,
            eim,
            sets,
            persistence,
            services_json: None,
            counters: None,
        }
    }

    /// What a version 1 writer wrote for `p` (tests write old files with
    /// it; natgw itself only writes the current version).
    #[cfg(test)]
    pub(super) fn downgrade(p: v2::Payload) -> Payload {
        Payload {
            captured_unix_ns: p.captured_unix_ns,
            flows: p.flows,
            eim: p.eim,
            sets: p.sets,
            persistence: p.persistence,
        }
    }
}
