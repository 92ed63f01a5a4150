//! IPFIX (RFC 7011) messages carrying NAT events with the information
//! elements of RFC 8158: one template per event kind, data records packed
//! into messages of at most `max` bytes. Pure: events and times in, bytes
//! out; the sending is the logger's.
//!
//! Templates (ids 256-259; field: IANA element id, bytes):
//!
//! | id | event (natEvent) | fields |
//! |---|---|---|
//! | 256 | NAT44 session create (4) | observationTimeMilliseconds 323/8, natEvent 230/1, protocolIdentifier 4/1, sourceIPv4Address 8/4, sourceTransportPort 7/2, postNATSourceIPv4Address 225/4, postNAPTSourceTransportPort 227/2, destinationIPv4Address 12/4, destinationTransportPort 11/2, postNATDestinationIPv4Address 226/4, postNAPTDestinationTransportPort 228/2 |
//! | 257 | NAT44 session delete (5) | 256's, then flowStartMilliseconds 152/8, flowEndMilliseconds 153/8, initiatorPackets 298/8, responderPackets 299/8, initiatorOctets 231/8, responderOctets 232/8 |
//! | 258 | NAT ports exhausted (12) | observationTimeMilliseconds, natEvent, postNATSourceIPv4Address, protocolIdentifier |
//! | 259 | quota exceeded (13): max session entries | observationTimeMilliseconds, natEvent, natQuotaExceededEvent 466/4 (= 1), maxSessionEntries 471/4 |
//! | 260 | quota exceeded (13): max entries per user (`flows_per_source`) | observationTimeMilliseconds, natEvent, natQuotaExceededEvent 466/4 (= 3), maxEntriesPerUser 473/4, sourceIPv4Address 8/4 |
//!
//! For ICMP the ports are the echo identifier (source) and 0.

use super::LogEvent;
use crate::engine::SessionEventKind;

/// IPFIX version number in every message header.
const VERSION: u16 = 10;
const HEADER: usize = 16;
const SET_HEADER: usize = 4;
const TEMPLATE_SET_ID: u16 = 2;

/// natEvent values (RFC 8158 / IANA "NAT Event Type").
pub const NAT44_SESSION_CREATE: u8 = 4;
pub const NAT44_SESSION_DELETE: u8 = 5;
pub const NAT_PORTS_EXHAUSTED: u8 = 12;
pub const QUOTA_EXCEEDED: u8 = 13;
/// natQuotaExceededEvent: maximum session entries.
pub const MAX_SESSION_ENTRIES: u32 = 1;
/// natQuotaExceededEvent: maximum entries per user.
pub const MAX_ENTRIES_PER_USER: u32 = 3;

const SESSION: &[(u16, u16)] = &[
    (323, 8),
    (230, 1),
    (4, 1),
    (8, 4),
    (7, 2),
    (225, 4),
    (227, 2),
    (12, 4),
    (11, 2),
    (226, 4),
    (228, 2),
];
const SESSION_END: &[(u16, u16)] = &[(152, 8), (153, 8), (298, 8), (299, 8), (231, 8), (232, 8)];
const PORTS: &[(u16, u16)] = &[(323, 8), (230, 1), (225, 4), (4, 1)];
const QUOTA: &[(u16, u16)] = &[(323, 8), (230, 1), (466, 4), (471, 4)];
const USER_QUOTA: &[(u16, u16)] = &[(323, 8), (230, 1), (466, 4), (473, 4), (8, 4)];

/// Template id of each event kind.
pub fn template_id(k: SessionEventKind) -> u16 {
    match k {
        SessionEventKind::Create => 256,
        SessionEventKind::Delete => 257,
        SessionEventKind::PortsExhausted => 258,
        SessionEventKind::TableFull => 259,
        SessionEventKind::SourceLimit => 260,
    }
}

fn fields(k: SessionEventKind) -> Vec<(u16, u16)> {
    match k {
        SessionEventKind::Create => SESSION.to_vec(),
        SessionEventKind::Delete => [SESSION, SESSION_END].concat(),
        SessionEventKind::PortsExhausted => PORTS.to_vec(),
        SessionEventKind::TableFull => QUOTA.to_vec(),
        SessionEventKind::SourceLimit => USER_QUOTA.to_vec(),
    }
}

fn record_len(k: SessionEventKind) -> usize {
    fields(k).iter().map(|f| f.1 as usize).sum()
}

/// One observation domain's export stream: sequence numbers and the
/// message being filled.
pub struct Exporter {
    domain: u32,
    /// Data records sent before the message being filled (RFC 7011 3.1).
    seq: u32,
    max: usize,
    msg: Vec<u8>,
    /// Records in `msg` (not yet counted in `seq`).
    records: u32,
    /// Template of the data set open at the end of `msg`, and where its
    /// header starts.
    open: Option<(u16, usize)>,
}

impl Exporter {
    /// An exporter for observation domain `domain`, messages of at most
    /// `max` bytes (at least 256).
    pub fn new(domain: u32, max: usize) -> Exporter {
        Exporter {
            domain,
            seq: 0,
            max: max.max(256),
            msg: Vec::new(),
            records: 0,
            open: None,
        }
    }

    /// Data records sent so far (the next message's sequence number).
    pub fn sequence(&self) -> u32 {
        self.seq
    }

    /// A message holding the template set (sent at start and every
    /// refresh interval; it carries no data records).
    pub fn templates(&self, export_secs: u32) -> Vec<u8> {
        let mut m = Vec::with_capacity(256);
        header(&mut m, export_secs, self.seq, self.domain);
        let set = m.len();
        put16(&mut m, TEMPLATE_SET_ID);
        put16(&mut m, 0);
        for k in SessionEventKind::ALL {
            let f = fields(k);
            put16(&mut m, template_id(k));
            put16(&mut m, f.len() as u16);
            for (id, len) in f {
                put16(&mut m, id);
                put16(&mut m, len);
            }
        }
        let set_len = (m.len() - set) as u16;
        m[set + 2..set + 4].copy_from_slice(&set_len.to_be_bytes());
        finish(&mut m);
        m
    }

    /// Adds `e`; returns the previous message if `e` did not fit in it.
    pub fn push(&mut self, e: &LogEvent, export_secs: u32) -> Option<Vec<u8>> {
        let tid = template_id(e.ev.kind);
        let need = record_len(e.ev.kind)
            + if self.open.is_some_and(|(t, _)| t == tid) {
                0
            } else {
                SET_HEADER
            };
        let full = (!self.msg.is_empty() && self.msg.len() + need > self.max)
            .then(|| self.take())
            .flatten();
        if self.msg.is_empty() {
            header(&mut self.msg, export_secs, self.seq, self.domain);
        }
        if self.open.is_none_or(|(t, _)| t != tid) {
            self.close_set();
            self.open = Some((tid, self.msg.len()));
            put16(&mut self.msg, tid);
            put16(&mut self.msg, 0);
        }
        self.record(e);
        self.records += 1;
        full
    }

    /// The message being filled, finished; `None` if it is empty.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        if self.msg.is_empty() {
            return None;
        }
        self.close_set();
        let mut m = std::mem::take(&mut self.msg);
        finish(&mut m);
        self.seq = self.seq.wrapping_add(self.records);
        self.records = 0;
        Some(m)
    }

    fn close_set(&mut self) {
        if let Some((_, at)) = self.open.take() {
            let len = (self.msg.len() - at) as u16;
            self.msg[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    fn record(&mut self, e: &LogEvent) {
        let m = &mut self.msg;
        let ev = &e.ev;
        m.extend_from_slice(&e.at_ms.to_be_bytes());
        match ev.kind {
            SessionEventKind::Create | SessionEventKind::Delete => {
                m.push(if ev.kind == SessionEventKind::Create {
                    NAT44_SESSION_CREATE
                } else {
                    NAT44_SESSION_DELETE
                });
                m.push(ev.orig.proto);
                m.extend_from_slice(&ev.orig.src.to_be_bytes());
                put16(m, ev.orig.sport);
                m.extend_from_slice(&ev.xlat.src.to_be_bytes());
                put16(m, ev.xlat.sport);
                m.extend_from_slice(&ev.orig.dst.to_be_bytes());
                put16(m, ev.orig.dport);
                m.extend_from_slice(&ev.xlat.dst.to_be_bytes());
                put16(m, ev.xlat.dport);
                if ev.kind == SessionEventKind::Delete {
                    for v in [
                        e.born_ms,
                        e.at_ms,
                        ev.packets[0],
                        ev.packets[1],
                        ev.bytes[0],
                        ev.bytes[1],
                    ] {
                        m.extend_from_slice(&v.to_be_bytes());
                    }
                }
            }
            SessionEventKind::PortsExhausted => {
                m.push(NAT_PORTS_EXHAUSTED);
                m.extend_from_slice(&ev.xlat.src.to_be_bytes());
                m.push(ev.orig.proto);
            }
            SessionEventKind::TableFull => {
                m.push(QUOTA_EXCEEDED);
                m.extend_from_slice(&MAX_SESSION_ENTRIES.to_be_bytes());
                m.extend_from_slice(&e.max_flows.to_be_bytes());
            }
            SessionEventKind::SourceLimit => {
                m.push(QUOTA_EXCEEDED);
                m.extend_from_slice(&MAX_ENTRIES_PER_USER.to_be_bytes());
                m.extend_from_slice(&e.per_source.to_be_bytes());
                m.extend_from_slice(&ev.orig.src.to_be_bytes());
            }
        }
    }
}

fn put16(m: &mut Vec<u8>, v: u16) {
    m.extend_from_slice(&v.to_be_bytes());
}

fn header(m: &mut Vec<u8>, export_secs: u32, seq: u32, domain: u32) {
    m.reserve(HEADER);
    put16(m, VERSION);
    put16(m, 0);
    m.extend_from_slice(&export_secs.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&domain.to_be_bytes());
}

/// Writes the message length into the header.
fn finish(m: &mut [u8]) {
    let len = m.len() as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Time;
    use crate::engine::SessionEvent;
    use crate::packet::Tuple;

    fn ev(kind: SessionEventKind, n: u16) -> LogEvent {
        let orig = Tuple {
            src: 0x0a00_0002,
            dst: 0xc633_6405,
            sport: 40000 + n,
            dport: 80,
            proto: 6,
        };
        LogEvent {
            ev: SessionEvent {
                kind,
                at: Time(0),
                orig,
                xlat: Tuple {
                    src: 0xcb00_7101,
                    sport: 1024 + n,
                    ..orig
                },
                born: Time(0),
                packets: [3, 2],
                bytes: [300, 200],
            },
            at_ms: 1_764_000_000_000 + n as u64,
            born_ms: 1_763_999_990_000,
            max_flows: 1000,
            per_source: 0,
        }
    }

    /// Walks a message's sets: (set id, set bytes).
    fn sets(m: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut v = Vec::new();
        let mut at = HEADER;
        while at < m.len() {
            let id = u16::from_be_bytes([m[at], m[at + 1]]);
            let len = u16::from_be_bytes([m[at + 2], m[at + 3]]) as usize;
            assert!(len >= 4 && at + len <= m.len(), "set length {len} at {at}");
            v.push((id, m[at + 4..at + len].to_vec()));
            at += len;
        }
        v
    }

    #[test]
    fn templates_describe_every_record_length() {
        let x = Exporter::new(7, 1400);
        let m = x.templates(5);
        assert_eq!(u16::from_be_bytes([m[0], m[1]]), 10);
        assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len());
        assert_eq!(u32::from_be_bytes([m[12], m[13], m[14], m[15]]), 7);
        let s = sets(&m);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, TEMPLATE_SET_ID);
        let body = &s[0].1;
        let mut at = 0;
        for k in SessionEventKind::ALL {
            assert_eq!(u16::from_be_bytes([body[at], body[at + 1]]), template_id(k));
            let n = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
            let sum: usize = (0..n)
                .map(|i| {
                    let o = at + 4 + i * 4 + 2;
                    u16::from_be_bytes([body[o], body[o + 1]]) as usize
                })
                .sum();
            assert_eq!(sum, record_len(k));
            at += 4 + n * 4;
        }
        assert_eq!(at, body.len());
    }

    #[test]
    fn records_pack_into_messages_no_larger_than_max_with_sequence_numbers() {
        let mut x = Exporter::new(1, 300);
        let mut msgs = Vec::new();
        for n in 0..20u16 {
            let k = if n % 3 == 0 {
                SessionEventKind::Delete
            } else {
                SessionEventKind::Create
            };
            msgs.extend(x.push(&ev(k, n), 9));
        }
        msgs.extend(x.take());
        assert!(x.take().is_none());
        let mut seq = 0;
        let mut records = 0;
        for m in &msgs {
            assert!(m.len() <= 300, "{}", m.len());
            assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len());
            assert_eq!(u32::from_be_bytes([m[8], m[9], m[10], m[11]]), seq);
            let mut here = 0;
            for (id, body) in sets(m) {
                let k = if id == 256 {
                    SessionEventKind::Create
                } else {
                    SessionEventKind::Delete
                };
                assert_eq!(body.len() % record_len(k), 0);
                here += body.len() / record_len(k);
            }
            seq += here as u32;
            records += here;
        }
        assert_eq!(records, 20);
        assert_eq!(x.sequence(), 20);
        // The first record: a delete of flow 0, field by field.
        let (id, body) = &sets(&msgs[0])[0];
        assert_eq!(*id, 257);
        assert_eq!(&body[0..8], &1_764_000_000_000u64.to_be_bytes());
        assert_eq!(body[8], NAT44_SESSION_DELETE);
        assert_eq!(body[9], 6);
        assert_eq!(&body[10..14], &[10, 0, 0, 2]);
        assert_eq!(&body[14..16], &40000u16.to_be_bytes());
        assert_eq!(&body[16..20], &[203, 0, 113, 1]);
        assert_eq!(&body[20..22], &1024u16.to_be_bytes());
        assert_eq!(&body[34..42], &1_763_999_990_000u64.to_be_bytes());
        assert_eq!(&body[58..66], &2u64.to_be_bytes(), "responder packets");
    }
}
