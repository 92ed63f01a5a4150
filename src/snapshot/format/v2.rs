//! Format version 2, frozen: its payload and its upgrade step to
//! version 3.
//!
//! Nothing here may change: version 2 files on disk are decoded with
//! exactly this struct. Its flow record is version 1's [`WireFlow`].

use super::current;
use super::v1::{WireEim, WireFlow, WirePersist, WireSet};
use serde::{Deserialize, Serialize};

/// Version 2: version 1 plus the virtual services (JSON) and counters.
#[derive(Debug, Serialize, Deserialize)]
pub(in crate::snapshot) struct Payload {
    pub(in crate::snapshot) captured_unix_ns: u64,
    pub(in crate::snapshot) flows: Vec<WireFlow>,
    pub(in crate::snapshot) eim: Vec<WireEim>,
    pub(in crate::snapshot) sets: Vec<WireSet>,
    pub(in crate::snapshot) persistence: Vec<WirePersist>,
    /// `[ServiceSpec]` as JSON: self-describing, so fields that
    /// `ServiceSpec` gains later (with serde defaults) do not break it.
    pub(in crate::snapshot) services_json: Option<String>,
    /// Counter name -> value; drop counters as `drop.<name>`.
    pub(in crate::snapshot) counters: Option<Vec<(String, u64)>>,
}

impl Payload {
    /// Version 2 -> 3: version 2 did not store the flows' ages (a restore
    /// takes the restore as their start, as before).
    pub(super) fn upgrade(self) -> current::Payload {
        let Payload {
            captured_unix_ns,
            flows,
            eim,
            sets,
            persistence,
            services_json,
            counters,
        } = self;
        current::Payload {
            captured_unix_ns,
            flows: flows
                .into_iter()
                .map(|f| current::WireFlow3 { f, age_ns: 0 })
                .collect(),
            eim,
            sets,
            persistence,
            services_json,
            counters,
        }
    }

    /// What a version 2 writer wrote for `p` (tests write old files with
    /// it; natgw itself only writes the current version).
    #[cfg(test)]
    pub(super) fn downgrade(p: current::Payload) -> Payload {
        Payload {
            captured_unix_ns: p.captured_unix_ns,
            flows: p.flows.into_iter().map(|f| f.f).collect(),
            eim: p.eim,
            sets: p.sets,
            persistence: p.persistence,
            services_json: p.services_json,
            counters: p.counters,
        }
    }
}
