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
use std::fmt::Write;
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

/// RFC 3339 UTC with milliseconds, as RFC 5424 wants its TIMESTAMP.
pub fn timestamp(unix_ms: u64) -> String {
    match jiff::Timestamp::from_millisecond(unix_ms as i64) {
        Ok(t) => format!("{t:.3}"),
        Err(_) => "-".into(),
    }
}

fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        p => p.to_string(),
    }
}

fn ep(a: u32, port: u16) -> String {
    format!("{}:{port}", Ipv4Addr::from(a))
}

/// The line for `e` (no trailing newline). `host` and `pid` fill the
/// header's HOSTNAME and PROCID.
pub fn line(e: &LogEvent, facility: u8, host: &str, pid: u32) -> String {
    let ev = &e.ev;
    let severity = match ev.kind {
        SessionEventKind::Create | SessionEventKind::Delete => 6,
        _ => 4,
    };
    let mut s = format!(
        "<{}>1 {} {host} natgw {pid} {} -",
        facility as u16 * 8 + severity,
        timestamp(e.at_ms),
        ev.kind.name()
    );
    let o = &ev.orig;
    let x = &ev.xlat;
    match ev.kind {
        SessionEventKind::Create | SessionEventKind::Delete => {
            let _ = write!(
                s,
                " proto={} src={} xsrc={} dst={} xdst={}",
                proto_name(o.proto),
                ep(o.src, o.sport),
                ep(x.src, x.sport),
                ep(o.dst, o.dport),
                ep(x.dst, x.dport)
            );
            if ev.kind == SessionEventKind::Delete {
                let dur = e.at_ms.saturating_sub(e.born_ms);
                let _ = write!(
                    s,
                    " start={} duration={}.{:03} packets={}/{} bytes={}/{}",
                    timestamp(e.born_ms),
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
            let _ = write!(
                s,
                " proto={} xsrc={}",
                proto_name(o.proto),
                Ipv4Addr::from(x.src)
            );
        }
        SessionEventKind::TableFull => {
            let _ = write!(s, " max_flows={}", e.max_flows);
        }
        SessionEventKind::SourceLimit => {
            let _ = write!(
                s,
                " src={} flows_per_source={}",
                Ipv4Addr::from(o.src),
                e.per_source
            );
        }
    }
    s
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
        assert_eq!(facility("daemon"), Some(3));
    }
}
