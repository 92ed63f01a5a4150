//! Rates per real server for `natgw services --rate`, sampled by the
//! control loop every [`RATE_WINDOW`] (like `ipvsadm --rate`'s
//! estimator). May import the engine and `protocol::RealRate` only.

use crate::engine::Engine;
use crate::protocol;
use std::time::{Duration, Instant};

/// Control-thread side of load balancing: rate sampling (and health
/// checks).
#[derive(Default)]
pub(super) struct LbControl {
    last: Option<(Instant, RealTotals)>,
    pub(super) rates: Vec<protocol::RealRate>,
}

/// Connections, packets in/out, bytes in/out per (service, real server).
type RealTotals = std::collections::HashMap<(crate::lb::ServiceKey, u32, u16), [u64; 5]>;

/// Seconds between two rate samples (`ipvsadm --rate` uses a 2 s estimator).
const RATE_WINDOW: Duration = Duration::from_secs(2);

impl LbControl {
    pub(super) fn tick(&mut self, engine: &Engine, now: crate::conntrack::Time) {
        if matches!(&self.last, Some((t, _)) if t.elapsed() < RATE_WINDOW) {
            return;
        }
        if engine.lb().is_empty() {
            self.last = None;
            self.rates.clear();
            return;
        }
        let t = Instant::now();
        let mut cur = std::collections::HashMap::new();
        for s in engine.services(now) {
            for r in &s.reals {
                cur.insert(
                    (s.key, r.addr, r.port),
                    [
                        r.conns,
                        r.packets_in,
                        r.packets_out,
                        r.bytes_in,
                        r.bytes_out,
                    ],
                );
            }
        }
        if let Some((t0, prev)) = &self.last {
            let dt = t.duration_since(*t0).as_secs_f64().max(1e-3);
            self.rates = cur
                .iter()
                .map(|(&(service, addr, port), c)| {
                    let p = prev.get(&(service, addr, port)).copied().unwrap_or(*c);
                    let rate = |i: usize| c[i].saturating_sub(p[i]) as f64 / dt;
                    protocol::RealRate {
                        service,
                        addr,
                        port,
                        cps: rate(0),
                        in_pps: rate(1),
                        out_pps: rate(2),
                        in_bps: rate(3),
                        out_bps: rate(4),
                    }
                })
                .collect();
        }
        self.last = Some((t, cur));
    }
}
