//! Offline replay: run the engine over a pcap capture and write what the
//! gateway would transmit.
//!
//! - The clock is the capture's: each packet's timestamp is `now`, and
//!   expiry runs every 64 packets with that time.
//! - A later fragment ahead of its first is held, as a worker holds it,
//!   and run again right after the packet that translated its first
//!   fragment; one still held after `FRAG_HOLD_TIME` (or at the end) is
//!   dropped as `frag_timeout`.
//! - The ingress interface of each packet is the one the gateway would
//!   reach its sender by (a reverse route lookup of the source address),
//!   unless `--iif` names one for all packets.
//! - Output frames get the egress interface's MAC (`mac` in the config, or
//!   `02:00:00:00:00:NN` with NN the interface number) as source, and as
//!   destination the MAC the capture showed for the next hop (learned from
//!   the source MACs of earlier frames), else the broadcast address.
//! - Only forwarded frames and replies natgw generates are written;
//!   dropped, local and passed frames are summarised.

use crate::conntrack::Time;
use crate::engine::{CounterSnapshot, Counters, DropReason, Engine, FragKey, Verdict};
use crate::nat::IfId;
use crate::packet::{self, Link};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading capture: {0}")]
    Read(pcap_file::PcapError),
    #[error("writing capture: {0}")]
    Write(pcap_file::PcapError),
    #[error("capture link type {0:?} is not supported (use Ethernet or raw IPv4)")]
    LinkType(DataLink),
    #[error("--iif: no interface named `{0}`")]
    NoSuchInterface(String),
}

/// What happened to one packet.
#[derive(Debug, Clone, Serialize)]
pub struct PacketLine {
    /// 1-based position in the capture.
    pub n: u64,
    /// Seconds since the first packet.
    pub t: f64,
    pub iif: String,
    pub oif: Option<String>,
    /// `new` (created a flow), `fwd`, `reply` (natgw answered), `local`,
    /// `pass`, `drop:<reason>`, or `held` (a later fragment ahead of its
    /// first; its line comes again when it is sent, `... (held, after
    /// #N)`, or given up, `drop:frag_timeout (held #N)`).
    pub verdict: String,
    pub before: String,
    pub after: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub packets_in: u64,
    pub written: u64,
    pub packets: Vec<PacketLine>,
    pub counters: CounterSnapshot,
    pub flows: Vec<crate::protocol::FlowView>,
    /// `conntrack -L`-style lines of the flows left at the end.
    pub flow_lines: Vec<String>,
}

fn describe(buf: &[u8], link: Link) -> String {
    match packet::parse(buf, link) {
        Ok(p) => match p.icmp_error_info(buf) {
            Some(e) => format!(
                "icmp {} > {} type={} code={} quoting [{}]",
                p.tuple.src_ip(),
                p.tuple.dst_ip(),
                e.ty,
                e.code,
                e.inner
            ),
            _ if p.frag == packet::Frag::Later => {
                format!(
                    "{} {} > {} fragment id={}",
                    packet::proto_name(p.tuple.proto),
                    p.tuple.src_ip(),
                    p.tuple.dst_ip(),
                    p.ip_id
                )
            }
            _ if packet::tunnel::outer(buf, &p).is_ok() => {
                // An IPIP/GRE packet: its outer endpoints, then the inner
                // datagram (shown as a frame of its own).
                let o = packet::tunnel::outer(buf, &p).expect("checked by the guard");
                let key = o.key.map(|k| format!(" key={k}")).unwrap_or_default();
                let inner = describe(&buf[o.inner..o.end], Link::Ip);
                format!(
                    "{} {} > {}{key} [{inner}]",
                    if o.proto == packet::tunnel::IPPROTO_GRE {
                        "gre"
                    } else {
                        "ipip"
                    },
                    p.tuple.src_ip(),
                    p.tuple.dst_ip()
                )
            }
            _ => p.tuple.to_string(),
        },
        Err(e) => format!("unparsed ({e:?})"),
    }
}

/// True if `buf` is an IPIP/GRE packet.
fn is_tunneled(buf: &[u8], link: Link) -> bool {
    packet::parse(buf, link)
        .ok()
        .is_some_and(|p| packet::tunnel::outer(buf, &p).is_ok())
}

/// Replays `input` through `engine`, writing transmitted frames to `output`.
/// A later fragment ahead of its first, kept as a worker keeps it.
struct Held {
    data: Vec<u8>,
    key: FragKey,
    /// The interface it is run again as (a tunnel's when it came
    /// decapsulated).
    iif: IfId,
    /// Its position in the capture and its time.
    n: u64,
    ts: Duration,
    before: String,
}

/// When a held fragment is given up: as long as a worker holds one.
fn h_deadline(h: &Held) -> Time {
    Time(h.ts.as_nanos() as u64).saturating_add(crate::dataplane::worker::FRAG_HOLD_TIME)
}

/// The replay's state while it runs.
struct Run<'a, W: Write> {
    engine: &'a Engine,
    link: Link,
    writer: PcapWriter<W>,
    counters: Counters,
    /// Source MACs seen, by IP address (for the output frames).
    neigh: HashMap<u32, [u8; 6]>,
    report: &'a mut ReplayReport,
    /// Timestamp of the first packet.
    t0: Option<Duration>,
}

impl<W: Write> Run<'_, W> {
    fn ifname(&self, i: IfId) -> String {
        self.engine
            .interface(i)
            .map(|f| f.name.clone())
            .or_else(|| self.engine.tunnel(i).map(|t| t.name.clone()))
            .unwrap_or_else(|| format!("#{i}"))
    }

    /// Drops held fragment `h` at `ts` (its first fragment did not come
    /// in time, or the capture ended), counted as `frag_timeout`.
    fn give_up(&mut self, h: Held, ts: Duration) {
        self.counters.drop(DropReason::FragTimeout);
        let verdict = format!("drop:{} (held #{})", DropReason::FragTimeout.name(), h.n);
        self.line(h.n, ts, h.iif, verdict, h.before);
    }

    /// A line for a packet that leaves nothing.
    fn line(&mut self, n: u64, ts: Duration, iif: IfId, verdict: String, before: String) {
        let t0 = *self.t0.get_or_insert(ts);
        let line = PacketLine {
            n,
            t: ts.saturating_sub(t0).as_secs_f64(),
            iif: self.ifname(iif),
            oif: None,
            verdict,
            before,
            after: None,
        };
        self.report.packets.push(line);
    }

    /// Runs packet `n` (the first `len` bytes of `buf`, arriving on
    /// `in_if` at `ts`) through the engine, writes what leaves and
    /// reports it. `again`: a held fragment sent after packet `again`.
    /// Returns the packet to hold, if it is a later fragment ahead of its
    /// first.
    fn one(
        &mut self,
        buf: &mut [u8],
        len: usize,
        in_if: IfId,
        ts: Duration,
        n: u64,
        again: Option<u64>,
    ) -> Result<Option<Held>, ReplayError> {
        let (engine, link) = (self.engine, self.link);
        let t0 = *self.t0.get_or_insert(ts);
        let now = Time(ts.as_nanos() as u64);
        let before = describe(&buf[..len], link);
        let tunneled_in = is_tunneled(&buf[..len], link);
        let created_before = self
            .counters
            .flows_created
            .load(std::sync::atomic::Ordering::Relaxed);
        let v = engine.process(buf, len, link, in_if, now, &self.counters);
        let created = self
            .counters
            .flows_created
            .load(std::sync::atomic::Ordering::Relaxed)
            > created_before;
        let (verdict, out) = match v {
            Verdict::Forward { oif, next_hop } => (
                if created { "new" } else { "fwd" }.to_string(),
                Some((oif, next_hop, len)),
            ),
            Verdict::Reply { oif, next_hop, len } => {
                // Encapsulated or decapsulated on the way: say which.
                let out_tunneled = is_tunneled(&buf[..len], link);
                let v = match (tunneled_in, out_tunneled) {
                    (false, true) => "encap",
                    (true, false) => "decap",
                    (true, true) => "decap+encap",
                    (false, false) => "reply",
                };
                (v.to_string(), Some((oif, next_hop, len)))
            }
            Verdict::Local => ("local".to_string(), None),
            Verdict::Pass => ("pass".to_string(), None),
            Verdict::Drop(r) => (format!("drop:{}", r.name()), None),
            Verdict::HoldFragment { key, again_as } => {
                if again.is_some() {
                    // Never held twice.
                    self.counters.drop(DropReason::FragTimeout);
                    (format!("drop:{}", DropReason::FragTimeout.name()), None)
                } else {
                    let (iif, l) = again_as.unwrap_or((in_if, len));
                    self.line(n, ts, in_if, "held".to_string(), before.clone());
                    return Ok(Some(Held {
                        data: buf[..l].to_vec(),
                        key,
                        iif,
                        n,
                        ts,
                        before,
                    }));
                }
            }
        };
        let verdict = match again {
            Some(after) => format!("{verdict} (held, after #{after})"),
            None => verdict,
        };
        let mut line = PacketLine {
            n,
            t: ts.saturating_sub(t0).as_secs_f64(),
            iif: self.ifname(in_if),
            oif: None,
            verdict,
            before,
            after: None,
        };
        if let Some((oif, next_hop, out_len)) = out {
            if link == Link::Ethernet && out_len >= 12 {
                let src = engine.interface(oif).and_then(|f| f.mac).unwrap_or([
                    2,
                    0,
                    0,
                    0,
                    0,
                    oif as u8 + 1,
                ]);
                let dst = self.neigh.get(&next_hop).copied().unwrap_or([0xff; 6]);
                buf[0..6].copy_from_slice(&dst);
                buf[6..12].copy_from_slice(&src);
            }
            line.oif = Some(self.ifname(oif));
            line.after = Some(describe(&buf[..out_len], link));
            let o = PcapPacket::new(ts, out_len as u32, &buf[..out_len]);
            self.writer.write_packet(&o).map_err(ReplayError::Write)?;
            Counters::bump(&self.counters.tx_packets);
            Counters::add(&self.counters.tx_bytes, out_len as u64);
            self.report.written += 1;
        }
        self.report.packets.push(line);
        Ok(None)
    }
}

pub fn replay(
    engine: &Engine,
    input: impl Read,
    output: impl Write,
    iif: Option<&str>,
) -> Result<ReplayReport, ReplayError> {
    let mut reader = PcapReader::new(input).map_err(ReplayError::Read)?;
    let header = reader.header();
    let link = match header.datalink {
        DataLink::ETHERNET => Link::Ethernet,
        DataLink::RAW | DataLink::IPV4 => Link::Ip,
        other => return Err(ReplayError::LinkType(other)),
    };
    let fixed_iif = match iif {
        Some(n) => Some(
            engine
                .interface_id(n)
                .ok_or_else(|| ReplayError::NoSuchInterface(n.into()))?,
        ),
        None => None,
    };
    let writer =
        PcapWriter::with_header(output, PcapHeader { ..header }).map_err(ReplayError::Write)?;
    let mut report = ReplayReport {
        packets_in: 0,
        written: 0,
        packets: Vec::new(),
        counters: CounterSnapshot::default(),
        flows: Vec::new(),
        flow_lines: Vec::new(),
    };
    let mut run = Run {
        engine,
        link,
        writer,
        counters: Counters::default(),
        neigh: HashMap::new(),
        report: &mut report,
        t0: None,
    };
    let mut held: Vec<Held> = Vec::new();
    let mut now = Time(0);
    let mut buf = vec![0u8; 65_536 + 128];
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(ReplayError::Read)?;
        run.report.packets_in += 1;
        let n = run.report.packets_in;
        let ts = pkt.timestamp;
        now = Time(ts.as_nanos() as u64);
        let len = pkt.data.len().min(buf.len());
        buf[..len].copy_from_slice(&pkt.data[..len]);
        Counters::bump(&run.counters.rx_packets);
        Counters::add(&run.counters.rx_bytes, len as u64);

        let parsed = packet::parse(&buf[..len], link).ok();
        if let (Link::Ethernet, Some(p)) = (link, &parsed) {
            run.neigh
                .insert(p.tuple.src, buf[6..12].try_into().unwrap_or([0; 6]));
        }
        let in_if = fixed_iif
            .or_else(|| {
                parsed
                    .as_ref()
                    .and_then(|p| engine.route(p.tuple.src))
                    .map(|h| h.oif)
            })
            .unwrap_or(0);
        held.extend(run.one(&mut buf, len, in_if, ts, n, None)?);
        // Held fragments whose first fragment has now been translated go
        // out right after it, as a worker sends them; those that waited
        // longer than a worker would are dropped.
        let mut i = 0;
        while i < held.len() {
            if engine.fragment_ready(held[i].key, now) {
                let h = held.swap_remove(i);
                let len = h.data.len();
                buf[..len].copy_from_slice(&h.data);
                run.one(&mut buf, len, h.iif, ts, h.n, Some(n))?;
            } else if now >= h_deadline(&held[i]) {
                run.give_up(held.swap_remove(i), ts);
            } else {
                i += 1;
            }
        }
        if n.is_multiple_of(64) {
            let _ = engine.expire(now, 4096);
        }
    }
    for h in held.drain(..) {
        let ts = h.ts;
        run.give_up(h, ts);
    }
    let Run {
        writer, counters, ..
    } = run;
    writer
        .into_writer()
        .flush()
        .map_err(|e| ReplayError::Write(pcap_file::PcapError::IoError(e)))?;
    report.counters = counters.snapshot();
    let mut flows = engine.flows(now);
    flows.sort_by_key(|f| f.orig);
    report.flow_lines = flows
        .iter()
        .map(|f| super::format::flow_line(f, now))
        .collect();
    report.flows = flows
        .iter()
        .map(|f| crate::protocol::FlowView::new(f, now))
        .collect();
    Ok(report)
}

/// Human-readable rendering of a report.
pub fn render(r: &ReplayReport, quiet: bool) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if !quiet {
        let _ = writeln!(
            s,
            "{:>4} {:>9}  {:<6} {:<6} {:<24} packet  =>  as transmitted",
            "#", "time", "in", "out", "verdict"
        );
        for p in &r.packets {
            let after = p
                .after
                .as_ref()
                .map(|a| format!("  =>  {a}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "{:>4} {:>9.6}  {:<6} {:<6} {:<24} {}{}",
                p.n,
                p.t,
                p.iif,
                p.oif.as_deref().unwrap_or("-"),
                p.verdict,
                p.before,
                after
            );
        }
        let _ = writeln!(s);
    }
    let c = &r.counters;
    let _ = writeln!(
        s,
        "packets in {}, written {}, new flows {}, fast path {}, icmp errors translated {}, fragments translated {}, ttl-exceeded sent {}, local {}, passed {}, dropped {}",
        r.packets_in,
        r.written,
        c.flows_created,
        c.fast_path,
        c.icmp_errors_translated,
        c.frags_translated,
        c.ttl_exceeded_sent,
        c.local,
        c.passed,
        c.total_drops()
    );
    for (k, v) in &c.drops {
        let _ = writeln!(s, "  dropped {k}: {v}");
    }
    let _ = writeln!(
        s,
        "flows at the end of the capture ({}):",
        r.flow_lines.len()
    );
    for l in &r.flow_lines {
        let _ = writeln!(s, "  {l}");
    }
    s
}
