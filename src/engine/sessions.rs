//! NAT session log events, as workers see them: a flow created, a flow
//! ended, and the alarms (an outside address out of ports, the flow
//! table full, a source at its `flows_per_source` limit). Workers write them into per-lane rings
//! ([`super::changes::LaneRings`]) and never block or allocate for them;
//! the session logger ([`crate::sessionlog`]) drains the rings on its own
//! thread and exports IPFIX and syslog. An event lost to a full ring is
//! counted ([`SessionLog::missed`]).
//!
//! Off (nothing allocated, one atomic load per flow) until
//! [`SessionLog::enable`]. A node in HA standby logs nothing: its flows
//! are the active node's copies, which that node logs.
//!
//! The alarms fire per refused packet under a flood, so each kind is
//! written at most once per second (the refusals themselves are counted
//! as drop reasons); flows are always logged, never sampled.

use super::changes::LaneRings;
use crate::conntrack::{FlowRecord, Time};
use crate::packet::Tuple;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Events per ring (8 rings, 96 bytes an event: 48 MiB when on). The
/// logger drains them every 5 ms, but it may not get a CPU for a while
/// on a busy box: a ring holds ~0.3 s of a worker's 100k new flows per
/// second and as many ends (bench/sessionlog.sh saw 32 Ki overflow with
/// the logger on the worker's CPU).
pub const SESSION_RING_CAP: usize = 64 * 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEventKind {
    /// A flow was created.
    Create,
    /// A flow ended (its timer ran out, early drop, flush).
    Delete,
    /// A new flow was refused: no free port on `xlat.src` for its protocol.
    PortsExhausted,
    /// A new flow was refused: the flow table holds `max_flows` flows.
    TableFull,
    /// A new flow was refused: its source (`orig.src`) holds
    /// `flows_per_source` flows.
    SourceLimit,
}

impl SessionEventKind {
    pub const ALL: [SessionEventKind; 5] = [
        SessionEventKind::Create,
        SessionEventKind::Delete,
        SessionEventKind::PortsExhausted,
        SessionEventKind::TableFull,
        SessionEventKind::SourceLimit,
    ];

    /// The name logs and metrics use.
    pub fn name(self) -> &'static str {
        match self {
            SessionEventKind::Create => "create",
            SessionEventKind::Delete => "delete",
            SessionEventKind::PortsExhausted => "ports_exhausted",
            SessionEventKind::TableFull => "table_full",
            SessionEventKind::SourceLimit => "source_limit",
        }
    }
}

/// One event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEvent {
    pub kind: SessionEventKind,
    /// When, on the engine's clock; `Time(0)`: when the logger reads it
    /// (removals by `natgw flush`, which has no clock at hand).
    pub at: Time,
    /// The flow's original tuple as it arrived (the refused packet's for
    /// the alarms).
    pub orig: Tuple,
    /// The original direction as it leaves the gateway (after NAT). For
    /// [`SessionEventKind::PortsExhausted`] only `src` (the outside address
    /// out of ports) and `proto` mean anything; for `TableFull` it is
    /// `orig`.
    pub xlat: Tuple,
    /// When the flow was created (10 ms resolution); `at` for the alarms.
    pub born: Time,
    /// Packets and bytes, `[original, reply]` (a `Delete`'s totals).
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// The event rings and the alarms' rate limit; see the module docs.
#[derive(Default)]
pub struct SessionLog {
    rings: LaneRings<SessionEvent>,
    on: AtomicBool,
    /// Per alarm kind: the second (engine clock) of the last one written.
    last_alarm: [AtomicU64; 3],
}

impl SessionLog {
    /// Starts taking events (idempotent).
    pub fn enable(&self) {
        self.rings.enable(SESSION_RING_CAP);
        self.on.store(true, Relaxed);
    }

    /// Stops taking events (a reload that turned logging off); what the
    /// rings hold stays there to be drained.
    pub fn disable(&self) {
        self.on.store(false, Relaxed);
    }

    /// True while taking events.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// A flow with tuples `orig` / `reply` was created at `now`.
    #[inline]
    pub(super) fn created(&self, lane: usize, orig: Tuple, reply: Tuple, now: Time, len: u32) {
        if self.enabled() {
            self.rings.note(
                lane,
                SessionEvent {
                    kind: SessionEventKind::Create,
                    at: now,
                    orig,
                    xlat: reply.invert(),
                    born: now,
                    packets: [1, 0],
                    bytes: [len as u64, 0],
                },
            );
        }
    }

    /// Flow `r` ended at `now` (`Time(0)`: unknown, see [`SessionEvent::at`]).
    #[inline]
    pub(super) fn deleted(&self, lane: usize, r: &FlowRecord, now: Time) {
        if self.enabled() {
            self.rings.note(
                lane,
                SessionEvent {
                    kind: SessionEventKind::Delete,
                    at: now,
                    orig: r.orig,
                    xlat: r.reply.invert(),
                    born: r.born,
                    packets: r.packets,
                    bytes: r.bytes,
                },
            );
        }
    }

    /// A new flow was refused (`PortsExhausted`, `TableFull` or
    /// `SourceLimit`); written at most once per second per kind.
    pub(super) fn alarm(
        &self,
        lane: usize,
        kind: SessionEventKind,
        orig: Tuple,
        xlat: Tuple,
        now: Time,
    ) {
        if !self.enabled() {
            return;
        }
        let slot = &self.last_alarm[match kind {
            SessionEventKind::TableFull => 1,
            SessionEventKind::SourceLimit => 2,
            _ => 0,
        }];
        let sec = now.0 / 1_000_000_000 + 1;
        let last = slot.load(Relaxed);
        if last == sec || slot.compare_exchange(last, sec, Relaxed, Relaxed).is_err() {
            return;
        }
        self.rings.note(
            lane,
            SessionEvent {
                kind,
                at: now,
                orig,
                xlat,
                born: now,
                packets: [0; 2],
                bytes: [0; 2],
            },
        );
    }

    /// Moves every pending event into `out`; returns how many.
    pub fn drain(&self, out: &mut Vec<SessionEvent>) -> usize {
        self.rings.drain(out)
    }

    /// How many more events lane `lane`'s ring takes now (unbounded when
    /// logging is off).
    pub fn room(&self, lane: usize) -> usize {
        if self.enabled() {
            SESSION_RING_CAP.saturating_sub(self.rings.backlog(lane))
        } else {
            usize::MAX
        }
    }

    /// Logs the end of `r` at `now` from the control thread (workers
    /// stopped), through a ring with room: waits up to `patience` for the
    /// logger to make room, then counts the event lost like a worker's.
    pub fn deleted_waiting(&self, r: &FlowRecord, now: Time, patience: std::time::Duration) {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(lane) =
                (0..super::changes::RINGS).find(|&l| self.rings.backlog(l) < SESSION_RING_CAP)
            {
                self.deleted(lane, r, now);
                return;
            }
            if t0.elapsed() >= patience {
                self.deleted(0, r, now);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Events lost because their ring was full.
    pub fn missed(&self) -> u64 {
        self.rings.missed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u16) -> Tuple {
        Tuple {
            src: 0x0a00_0001,
            dst: 0x0808_0808,
            sport: n,
            dport: 53,
            proto: 17,
        }
    }

    #[test]
    fn alarms_are_written_once_per_second_and_flows_always() {
        let log = SessionLog::default();
        log.created(0, t(1), t(1).invert(), Time::from_secs(1), 60);
        let mut out = Vec::new();
        assert_eq!(log.drain(&mut out), 0, "off: nothing");
        log.enable();
        for ms in 0..3000 {
            let now = Time::from_millis(10_000 + ms);
            log.alarm(1, SessionEventKind::TableFull, t(2), t(2), now);
            log.alarm(1, SessionEventKind::PortsExhausted, t(2), t(3), now);
            if ms % 10 == 0 {
                log.created(2, t(ms as u16), t(9).invert(), now, 60);
            }
        }
        log.drain(&mut out);
        let count = |k| out.iter().filter(|e| e.kind == k).count();
        assert_eq!(count(SessionEventKind::TableFull), 3, "one per second");
        assert_eq!(count(SessionEventKind::PortsExhausted), 3);
        assert_eq!(count(SessionEventKind::Create), 300, "every flow");
        let c = out
            .iter()
            .find(|e| e.kind == SessionEventKind::Create)
            .unwrap();
        assert_eq!(c.xlat, t(9), "xlat: the original direction after NAT");
        assert_eq!(log.missed(), 0);
        // The logger counts by `kind as usize`: `ALL` is in that order.
        for (i, k) in SessionEventKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
    }
}
