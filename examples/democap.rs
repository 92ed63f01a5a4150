//! Writes the demo capture for `scripts/demo.sh`: what a gateway with the
//! addresses of `examples/natgw.toml` sees on its two links.
//!
//! - 10.0.0.10 fetches a web page from 198.51.100.80 (TCP open, data, close)
//!   and pings it;
//! - 10.0.0.11 plays on a game server 192.0.2.53:27015 (UDP) and sends to a closed port,
//!   which answers with ICMP port unreachable;
//! - 10.0.0.70 (in the "vip" set) opens a connection: it leaves from the pool;
//! - an outside client 192.0.2.77 opens 203.0.113.1:8080, forwarded to the
//!   inside server 10.0.0.5:80;
//! - a probe with TTL 1 (traceroute's first hop) and a corrupted frame.
//!
//! Replies from outside are addressed to the translated address and port.
//! natgw keeps the inside port when it is free, which it is here, so the
//! capture can name them in advance (the replay shows the mapping it chose).
//!
//! Usage: `cargo run --example democap -- OUT.pcap`

use etherparse::PacketBuilder;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use std::time::Duration;

const GW_LAN: [u8; 6] = [2, 0, 0, 0, 0, 1];
const GW_WAN: [u8; 6] = [2, 0, 0, 0, 0, 2];
const ROUTER: [u8; 6] = [2, 0, 0, 0, 0xfe, 0xfe];

fn host_mac(last: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0x10, last]
}

struct Cap {
    frames: Vec<(u64, Vec<u8>)>,
    t: u64,
}

impl Cap {
    /// Appends a frame 1 ms after the previous one.
    fn push(&mut self, b: PacketBuilderStep, payload: &[u8]) {
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("write frame");
        self.t += 1_000_000;
        self.frames.push((self.t, out));
    }
}

type PacketBuilderStep = etherparse::PacketBuilderStep<etherparse::TcpHeader>;

fn tcp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: [u8; 4],
    sp: u16,
    d: [u8; 4],
    dp: u16,
    seq: u32,
) -> PacketBuilderStep {
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(s, d, 64)
        .tcp(sp, dp, seq, 64240)
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "demo-in.pcap".into());
    let mut cap = Cap {
        frames: Vec::new(),
        t: 1_700_000_000_000_000_000,
    };
    let mut extra: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut raw = |cap: &mut Cap, bytes: Vec<u8>| {
        cap.t += 1_000_000;
        extra.push((cap.t, bytes));
    };

    // 1. 10.0.0.10:40000 -> 198.51.100.80:80, web fetch.
    let (c, s) = ([10, 0, 0, 10], [198, 51, 100, 80]);
    let g = [203, 0, 113, 1];
    let cm = host_mac(10);
    cap.push(tcp(cm, GW_LAN, c, 40000, s, 80, 1000).syn(), &[]);
    cap.push(
        tcp(ROUTER, GW_WAN, s, 80, g, 40000, 5000).syn().ack(1001),
        &[],
    );
    cap.push(tcp(cm, GW_LAN, c, 40000, s, 80, 1001).ack(5001), &[]);
    cap.push(
        tcp(cm, GW_LAN, c, 40000, s, 80, 1001).ack(5001).psh(),
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
    );
    cap.push(
        tcp(ROUTER, GW_WAN, s, 80, g, 40000, 5001).ack(1035).psh(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    );
    cap.push(tcp(cm, GW_LAN, c, 40000, s, 80, 1035).ack(5044).fin(), &[]);
    cap.push(
        tcp(ROUTER, GW_WAN, s, 80, g, 40000, 5044).ack(1036).fin(),
        &[],
    );
    cap.push(tcp(cm, GW_LAN, c, 40000, s, 80, 1036).ack(5045), &[]);

    // 2. ping 198.51.100.80 from 10.0.0.10, id 0x1234.
    let ping = |src_mac, dst_mac, a: [u8; 4], b: [u8; 4]| {
        PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(a, b, 64)
    };
    let push_icmp =
        |cap: &mut Cap, b: etherparse::PacketBuilderStep<etherparse::IpHeaders>, req: bool| {
            let mut o = Vec::new();
            let b = if req {
                b.icmpv4_echo_request(0x1234, 1)
            } else {
                b.icmpv4_echo_reply(0x1234, 1)
            };
            b.write(&mut o, b"natgw-demo").expect("write");
            cap.t += 1_000_000;
            cap.frames.push((cap.t, o));
        };
    push_icmp(&mut cap, ping(cm, GW_LAN, c, s), true);
    push_icmp(&mut cap, ping(ROUTER, GW_WAN, s, g), false);

    // 3. A UDP game session 10.0.0.11:53000 -> 192.0.2.53:27015 and an answer.
    let c2 = [10, 0, 0, 11];
    let dns = [192, 0, 2, 53];
    let udp = |sm, dm, a: [u8; 4], ap, b: [u8; 4], bp| {
        PacketBuilder::ethernet2(sm, dm).ipv4(a, b, 64).udp(ap, bp)
    };
    let push_udp =
        |cap: &mut Cap, b: etherparse::PacketBuilderStep<etherparse::UdpHeader>, p: &[u8]| {
            let mut o = Vec::new();
            b.write(&mut o, p).expect("write");
            cap.t += 1_000_000;
            cap.frames.push((cap.t, o));
        };
    push_udp(
        &mut cap,
        udp(host_mac(11), GW_LAN, c2, 53000, dns, 27015),
        b"join",
    );
    push_udp(
        &mut cap,
        udp(ROUTER, GW_WAN, dns, 27015, g, 53000),
        b"welcome",
    );

    // 4. UDP to a closed port, and the port unreachable that comes back
    //    quoting the translated datagram.
    push_udp(
        &mut cap,
        udp(host_mac(11), GW_LAN, c2, 40002, s, 9999),
        b"anyone?",
    );
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(g, s, 63)
        .udp(40002, 9999)
        .write(&mut quoted, b"anyone?")
        .expect("write");
    let mut o = Vec::new();
    PacketBuilder::ethernet2(ROUTER, GW_WAN)
        .ipv4(s, g, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut o, &quoted[..28])
        .expect("write");
    raw(&mut cap, o);

    // 5. A "vip" host (10.0.0.70) leaves from the persistent SNAT pool.
    cap.push(
        tcp(host_mac(70), GW_LAN, [10, 0, 0, 70], 41000, s, 443, 7000).syn(),
        &[],
    );

    // 6. Outside client opens the port forward 203.0.113.1:8080.
    let oc = [192, 0, 2, 77];
    let srv = [10, 0, 0, 5];
    cap.push(tcp(ROUTER, GW_WAN, oc, 51000, g, 8080, 9000).syn(), &[]);
    cap.push(
        tcp(host_mac(5), GW_LAN, srv, 80, oc, 51000, 3000)
            .syn()
            .ack(9001),
        &[],
    );
    cap.push(tcp(ROUTER, GW_WAN, oc, 51000, g, 8080, 9001).ack(3001), &[]);

    // 7. Traceroute's first probe (TTL 1) and a frame with a bad checksum.
    let mut o = Vec::new();
    PacketBuilder::ethernet2(cm, GW_LAN)
        .ipv4(c, s, 1)
        .udp(33434, 33434)
        .write(&mut o, b"probe")
        .expect("write");
    raw(&mut cap, o);
    let mut o = Vec::new();
    PacketBuilder::ethernet2(cm, GW_LAN)
        .ipv4(c, s, 64)
        .udp(40001, 27015)
        .write(&mut o, b"corrupt")
        .expect("write");
    o[24] ^= 0xff; // IPv4 header checksum
    raw(&mut cap, o);

    let mut frames = cap.frames;
    frames.extend(extra);
    frames.sort_by_key(|f| f.0);
    let file = std::fs::File::create(&out).expect("create output file");
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(file, header).expect("pcap header");
    for (t, f) in &frames {
        w.write_packet(&PcapPacket::new(
            Duration::from_nanos(*t),
            f.len() as u32,
            f,
        ))
        .expect("write packet");
    }
    eprintln!("wrote {} frames to {out}", frames.len());
}
