//! Syslog lines (RFC 5424) for NAT events: one line per event, key=value
//! fields that grep and awk take apart. Pure: the logger sends them.
//!
//! ```text
//! <134>1 2026-12-02T09:00:01.234Z gw1 natgw 4242 create - proto=tcp src=10.0.0.2:40000 xsrc=203.0.113.1:1024 dst=198.51.100.5:80 xdst=198.51.100.5:80
//! <134>1 2026-12-02T09:00:31.240Z gw1 natgw 4242 delete - proto=tcp src=10.0.0.2:40000 xsrc=203.0.113.1:1024 dst=198.51.100.5:80 xdst=198.51.100.5:80 start=2026-12-02T09:00:01.230Z duration=30.010 packets=12/10 bytes=1400/52000
//! <132>1 2026-12-02T09:00:40.000Z gw1 natgw 4242 ports_exhausted - proto=udp xsrc=203.0.113.1
//! <132>1 2026-12-02T09:00:41.000Z gw1 natgw 4242 table_full - max_flows=1000000
//! <132>1 2026-12-02T09:00:42.000Z gw1 natgw 4242 source_limit - src=10.0.0.2 flows_per_source=100
//! ```
//!
//! `src`/`dst` are the flow's first packet as it arrived, `xsrc`/`xdst` as
//! it left (after NAT); the MSGID is the event. Flows are logged at
//! severity info (6), the alarms at warning (4).

use super::LogEvent;
use crate::engine::SessionEventKind;
use crate::packet::proto;
use std::io::Write;
use std::net::Ipv4Addr;

/// A syslog facility by name (`local0`..`local7`, `user`, `daemon`,
/// `authpriv`); its number.
pub fn facility(name: &str) -> Option<u8> {
    Some(match name {
        "user" => 1,
        "daemon" => 3,
        "authpriv" => 10,
        _ => {
            let n: u8 = name.strip_prefix("local")?.parse().ok()?;
            if n > 7 {
                return None;
            }
            16 + n
        }
    })
}

/// Formats timestamps, keeping the text of the last two seconds seen (a
/// batch of events mostly shares one, and a delete's start another).
#[derive(Default)]
struct Clock {
    /// (second, "YYYY-MM-DDTHH:MM:SS"), most recent first.
    cache: [(u64, String); 2],
}

impl Clock {
    fn write(&mut self, unix_ms: u64, out: &mut Vec<u8>) {
        let sec = unix_ms / 1000;
        if self.cache[0].0 != sec || self.cache[0].1.is_empty() {
            if self.cache[1].0 == sec && !self.cache[1].1.is_empty() {
                self.cache.swap(0, 1);
            } else {
                let text = match jiff::Timestamp::from_second(sec as i64) {
                    Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S").to_string(),
                    Err(_) => String::new(),
                };
                if text.is_empty() {
                    out.push(b'-');
                    return;
                }
                self.cache.swap(0, 1);
                self.cache[0] = (sec, text);
            }
        }
        out.extend_from_slice(self.cache[0].1.as_bytes());
        let _ = write!(out, ".{:03}Z", unix_ms % 1000);
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        _ => "",
    }
}

fn write_proto(out: &mut Vec<u8>, p: u8) {
    match proto_name(p) {
        "" => {
            let _ = write!(out, "{p}");
        }
        n => out.extend_from_slice(n.as_bytes()),
    }
}

/// Writes syslog lines into a caller's buffer without allocating (the
/// timestamps of the current second are reused).
pub struct LineWriter {
    facility: u8,
    /// "HOSTNAME natgw PROCID", the header after the timestamp.
    origin: String,
    clock: Clock,
}

impl LineWriter {
    /// `host` and `pid` fill the header's HOSTNAME and PROCID.
    pub fn new(facility: u8, host: &str, pid: u32) -> LineWriter {
        LineWriter {
            facility,
            origin: format!("{host} natgw {pid}"),
            clock: Clock::default(),
        }
    }

    /// Appends the line for `e` to `out` (no trailing newline).
    pub fn write(&mut self, e: &LogEvent, out: &mut Vec<u8>) {
        let ev = &e.ev;
        let severity = match ev.kind {
            SessionEventKind::Create | SessionEventKind::Delete => 6,
            _ => 4,
        };
        let _ = write!(out, "<{}>1 ", self.facility as u16 * 8 + severity);
        self.clock.write(e.at_ms, out);
        let _ = write!(out, " {} {} -", self.origin, ev.kind.name());
        let o = &ev.orig;
        let x = &ev.xlat;
        let ip = Ipv4Addr::from;
        match ev.kind {
            SessionEventKind::Create | SessionEventKind::Delete => {
                out.extend_from_slice(b" proto=");
                write_proto(out, o.proto);
                let _ = write!(
                    out,
                    " src={}:{} xsrc={}:{} dst={}:{} xdst={}:{}",
                    ip(o.src),
                    o.sport,
                    ip(x.src),
                    x.sport,
                    ip(o.dst),
                    o.dport,
                    ip(x.dst),
                    x.dport
                );
                if ev.kind == SessionEventKind::Delete {
                    let dur = e.at_ms.saturating_sub(e.born_ms);
                    out.extend_from_slice(b" start=");
                    self.clock.write(e.born_ms, out);
                    let _ = write!(
                        out,
                        " duration={}.{:03} packets={}/{} bytes={}/{}",
                        dur / 1000,
                        dur % 1000,
                        ev.packets[0],
                        ev.packets[1],
                        ev.bytes[0],
                        ev.bytes[1]
                    );
                }
            }
            SessionEventKind::PortsExhausted => {
                out.extend_from_slice(b" proto=");
                write_proto(out, o.proto);
                let _ = write!(out, " xsrc={}", ip(x.src));
            }
            SessionEventKind::TableFull => {
                let _ = write!(out, " max_flows={}", e.max_flows);
            }
            SessionEventKind::SourceLimit => {
                let _ = write!(out, " src={} flows_per_source={}", ip(o.src), e.per_source);
            }
        }
    }
}

/// The line for `e` (no trailing newline). `host` and `pid` fill the
/// header's HOSTNAME and PROCID.
pub fn line(e: &LogEvent, facility: u8, host: &str, pid: u32) -> String {
    let mut out = Vec::new();
    LineWriter::new(facility, host, pid).write(e, &mut out);
    String::from_utf8(out).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Time;
    use crate::engine::SessionEvent;
    use crate::packet::Tuple;

    #[test]
    fn lines_name_the_event_and_both_sides_of_the_translation() {
        let orig = Tuple {
            src: u32::from(Ipv4Addr::new(10, 0, 0, 2)),
            dst: u32::from(Ipv4Addr::new(198, 51, 100, 5)),
            sport: 40000,
            dport: 80,
            proto: 6,
        };
        let xlat = Tuple {
            src: u32::from(Ipv4Addr::new(203, 0, 113, 1)),
            sport: 1024,
            ..orig
        };
        let mut e = LogEvent {
            ev: SessionEvent {
                kind: SessionEventKind::Delete,
                at: Time(0),
                orig,
                xlat,
                born: Time(0),
                packets: [12, 10],
                bytes: [1400, 52000],
            },
            at_ms: 1_796_202_031_240,
            born_ms: 1_796_202_001_230,
            max_flows: 1000,
            per_source: 25,
        };
        assert_eq!(
            line(&e, facility("local0").unwrap(), "gw1", 4242),
            "<134>1 2026-12-02T09:00:31.240Z gw1 natgw 4242 delete - proto=tcp src=10.0.0.2:40000 \
             xsrc=203.0.113.1:1024 dst=198.51.100.5:80 xdst=198.51.100.5:80 \
             start=2026-12-02T09:00:01.230Z duration=30.010 packets=12/10 bytes=1400/52000"
        );
        e.ev.kind = SessionEventKind::TableFull;
        assert!(line(&e, 16, "gw1", 1).starts_with("<132>1 "));
        assert!(line(&e, 16, "gw1", 1).ends_with(" table_full - max_flows=1000"));
        e.ev.kind = SessionEventKind::SourceLimit;
        assert!(
            line(&e, 16, "gw1", 1).ends_with(" source_limit - src=10.0.0.2 flows_per_source=25"),
            "{}",
            line(&e, 16, "gw1", 1)
        );
        assert_eq!(facility("local8"), None);
        // Two writes in a row agree (no state leaks between lines).
        let mut w = LineWriter::new(16, "gw1", 1);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        w.write(&e, &mut a);
        w.write(&e, &mut b);
        assert_eq!(a, b);
    }

    /// The cached second never leaks into a timestamp of another second,
    /// forwards or back (a delete's start is usually an earlier one).
    #[test]
    fn timestamps_match_jiff_across_seconds() {
        let mut c = Clock::default();
        for ms in [
            1_796_202_031_240u64,
            1_796_202_031_999,
            1_796_202_032_000,
            1_796_202_031_001,
            1_796_202_032_500,
            1_796_202_099_007,
            0,
        ] {
            let mut out = Vec::new();
            c.write(ms, &mut out);
            let want = format!(
                "{:.3}",
                jiff::Timestamp::from_millisecond(ms as i64).unwrap()
            );
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        assert_eq!(facility("daemon"), Some(3));
    }
}
