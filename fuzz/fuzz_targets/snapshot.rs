//! Snapshot decode. Raw bytes go to `decode`; with bit 0 of the first
//! byte the rest is taken as a payload and given a correct header (magic,
//! version 1 or 2, CRCs) so the fuzzer reaches the payload decoders.
//! Oracle: no panic; what decodes re-encodes and decodes to the same
//! snapshot; restored into an engine it stays under max_flows, and once
//! every timer ran out nothing is left (flows, ports, EIM mappings).
#![no_main]
use libfuzzer_sys::fuzz_target;
use natgw::conntrack::Time;
use natgw::snapshot::{
    CURRENT_VERSION, Elapsed, MAGIC, RestoreOptions, ServicePolicy, Snapshot, decode, encode,
};
use natgw_fuzz::harness;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let bytes = if sel & 1 != 0 {
        with_header(if sel & 2 != 0 { 1 } else { 2 }, rest)
    } else {
        rest.to_vec()
    };
    let Ok(s) = decode(&bytes) else {
        return;
    };
    let again = decode(&encode(&s)).expect("a decoded snapshot re-encodes and decodes");
    let s_cur = Snapshot {
        version: CURRENT_VERSION,
        ..s.clone()
    };
    assert_eq!(again, s_cur, "encode/decode round trip");
    let cfg = &harness::configs()[(sel >> 2 & 31) as usize];
    let engine = cfg.build_engine().expect("harness config builds");
    let now = Time::from_secs(1000);
    let opts = RestoreOptions {
        elapsed: Elapsed::Ignore,
        services: if sel & 0x80 != 0 {
            ServicePolicy::FromConfig
        } else {
            ServicePolicy::FromSnapshot
        },
        replace: sel & 0x40 != 0,
    };
    if s.restore(&engine, now, opts).is_err() {
        return;
    }
    let max = cfg.engine.max_flows as usize;
    assert!(engine.table().len() <= max, "restore went past max_flows");
    let cap = Snapshot::capture(&engine, now);
    assert!(
        cap.flows.iter().all(|f| f.is_consistent()),
        "restored an inconsistent flow"
    );
    let end = now.saturating_add(Time::from_secs(10_000_000));
    while engine.expire(end, 1 << 16) > 0 {}
    assert_eq!(engine.table().len(), 0);
    assert!(
        engine.nat().port_usage().iter().all(|u| u.flows == 0),
        "ports in use after every flow expired: {:?}",
        engine.nat().port_usage()
    );
    assert!(engine.nat().eim_mappings().is_empty(), "EIM mappings left");
}

/// A header for `payload` as the format describes it (src/snapshot/mod.rs).
fn with_header(version: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 32];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    h[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let hc = crc32fast::hash(&h[..28]);
    h[28..32].copy_from_slice(&hc.to_le_bytes());
    let mut v = h.to_vec();
    v.extend_from_slice(payload);
    v
}
