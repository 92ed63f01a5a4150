//! SCENARIOS 7 recipes 2 and 3 through the core (issue 14): two natgw
//! engines, A and B, joined by an IPIP or GRE tunnel that natgw itself
//! terminates at both ends, with a virtual clock — what the netns test
//! (tests/e2e_tunnel.rs) shows live, here packet by packet.
//!
//! ```text
//!  client 198.51.100.7 ── rtr ── wan0 A 203.0.113.1 ══ tun1 ══ 203.0.113.50 wan0 B lan0 10.9.0.1 ── app 10.9.0.5
//!                                route 5.5.5.5 dev tun1        recipe 2: app holds 5.5.5.5, route from 5.5.5.5 dev tun1
//!                                                              recipe 3: DNAT 5.5.5.5 -> 10.9.0.5, set_mark 3, route mark 3 dev tun1
//! ```

mod common;

use common::*;
use natgw::engine::DropReason;
use natgw::packet::tunnel::{Mode, encap};

const CLIENT: &str = "198.51.100.7";
const OLD: &str = "5.5.5.5";
const A: &str = "203.0.113.1";
const B: &str = "203.0.113.50";
const APP: &str = "10.9.0.5";

fn tunnel_section(mode: &str, local: &str, remote: &str) -> String {
    let key = if mode == "gre" { "key = 42\n" } else { "" };
    format!(
        "\n[[tunnel]]\nname = \"tun1\"\nmode = \"{}\"\n{key}local = \"{local}\"\nremote = \"{remote}\"\n",
        mode
    )
}

/// Gateway A: the standard interfaces, the tunnel to B, 5.5.5.5 into it.
fn gw_a(mode: &str) -> Gw {
    Gw::new(&config(
        "seed = 7",
        &format!(
            "{}\n[[route]]\nto = \"{OLD}/32\"\ndev = \"tun1\"\n",
            tunnel_section(mode, A, B)
        ),
    ))
}

/// Gateway B: wan0 203.0.113.50, lan0 10.9.0.1 in front of the app host.
fn gw_b(mode: &str, recipe3: bool) -> Gw {
    let mut text = format!(
        r#"[gateway]
seed = 7

[[interface]]
name = "lan0"
role = "inside"
address = "10.9.0.1/24"

[[interface]]
name = "wan0"
role = "outside"
address = "{B}/24"

[[route]]
to = "0.0.0.0/0"
via = "203.0.113.254"
{}"#,
        tunnel_section(mode, B, A)
    );
    if recipe3 {
        text += &format!(
            r#"
[[rule]]
name = "moved"
iif = "tun1"
dst = "{OLD}"
action = "dnat"
to = "{APP}"
set_mark = 3

[[route]]
to = "0.0.0.0/0"
dev = "tun1"
mark = 3
"#
        );
    } else {
        text += &format!(
            r#"
[[route]]
to = "{OLD}/32"
via = "{APP}"

[[route]]
to = "0.0.0.0/0"
dev = "tun1"
from = "{OLD}/32"
"#
        );
    }
    Gw::new(&text)
}

/// The datagram inside an encapsulated frame (as an Ethernet frame).
fn inner_of(frame: &[u8], mode: &str) -> Vec<u8> {
    let oh = if mode == "gre" { 28 } else { 20 };
    let mut v = frame[..14].to_vec();
    v.extend_from_slice(&frame[14 + oh..]);
    v
}

/// Client -> 5.5.5.5 through A and B to the app, and the reply back; the
/// app sees the real client (recipe 2) at 5.5.5.5, or at its own address
/// (recipe 3), and the client sees 5.5.5.5 answer.
fn round_trip(mode: &str, recipe3: bool) {
    let a = gw_a(mode);
    let b = gw_b(mode, recipe3);
    let syn = tcp(&format!("{CLIENT}:40000"), &format!("{OLD}:80"), SYN, b"");

    // A: into the tunnel, out of wan0 towards B (a connected address).
    let out = a.on_wan(&syn);
    let Out::Reply {
        oif,
        next_hop,
        frame,
    } = &out
    else {
        panic!("A should encapsulate, got {}", out.short())
    };
    assert_eq!((*oif, next_hop.to_string()), (a.wan, B.to_string()));
    let outer = view(frame);
    assert_eq!((outer.src, outer.dst), (ip(A), ip(B)));
    assert_eq!(outer.proto, if mode == "gre" { 47 } else { 4 });
    assert_eq!(outer.ttl, 64);
    let inner = view(&inner_of(frame, mode));
    assert_eq!(inner.src_sa(), sa(&format!("{CLIENT}:40000")));
    assert_eq!(inner.dst_sa(), sa(&format!("{OLD}:80")));
    assert_eq!(inner.ttl, 63, "A routes the inner datagram (TTL - 1)");

    // B: decapsulated, to the app on lan0.
    let out = b.on_wan(frame);
    let Out::Reply {
        oif,
        next_hop,
        frame: to_app,
    } = &out
    else {
        panic!("B should decapsulate, got {}", out.short())
    };
    assert_eq!((*oif, next_hop.to_string()), (b.lan, APP.to_string()));
    let seen = view(to_app);
    assert_eq!(
        seen.src_sa(),
        sa(&format!("{CLIENT}:40000")),
        "the app sees the real client"
    );
    let app_addr = if recipe3 { APP } else { OLD };
    assert_eq!(seen.dst_sa(), sa(&format!("{app_addr}:80")));

    // The app answers; B sends it back into the tunnel (policy routing
    // from 5.5.5.5, or the flow's mark 3).
    let synack = tcp(
        &format!("{app_addr}:80"),
        &format!("{CLIENT}:40000"),
        SYN | ACK,
        b"",
    );
    let out = b.on_lan(&synack);
    let Out::Reply { oif, frame, .. } = &out else {
        panic!("B should encapsulate the reply, got {}", out.short())
    };
    assert_eq!(*oif, b.wan);
    let outer = view(frame);
    assert_eq!((outer.src, outer.dst), (ip(B), ip(A)));
    let inner = view(&inner_of(frame, mode));
    assert_eq!(inner.src_sa(), sa(&format!("{OLD}:80")));

    // A: decapsulated, back to the client by the default route.
    let out = a.on_wan(frame);
    let Out::Reply {
        oif,
        next_hop,
        frame,
    } = &out
    else {
        panic!("A should decapsulate, got {}", out.short())
    };
    assert_eq!(
        (*oif, next_hop.to_string()),
        (a.wan, "203.0.113.254".to_string())
    );
    let seen = view(frame);
    assert_eq!(seen.src_sa(), sa(&format!("{OLD}:80")));
    assert_eq!(seen.dst_sa(), sa(&format!("{CLIENT}:40000")));
    assert_eq!(seen.tcp_flags, SYN | ACK);

    // Flows on both: tracked like any other; B's recipe-3 flow is marked.
    let fb = b.flows();
    assert_eq!(fb.len(), 1);
    assert_eq!(fb[0].orig.dst, u32::from(ip(OLD)));
    assert_eq!(
        natgw::nat::nat_flags::mark_of(fb[0].flags),
        if recipe3 { 3 } else { 0 }
    );
    let stats = a.engine.tunnel_stats();
    assert_eq!((stats[0].tx_packets, stats[0].rx_packets), (1, 1));
    assert_eq!(stats[0].drops, 0);
    assert_eq!(a.nonzero_drops(), vec![]);
    assert_eq!(b.nonzero_drops(), vec![]);
}

#[test]
fn recipe2_ipip_app_sees_the_real_client() {
    round_trip("ipip", false);
}

#[test]
fn recipe2_gre_app_sees_the_real_client() {
    round_trip("gre", false);
}

#[test]
fn recipe3_ipip_dnat_on_b_and_the_mark_steers_replies() {
    round_trip("ipip", true);
}

#[test]
fn recipe3_gre_dnat_on_b_and_the_mark_steers_replies() {
    round_trip("gre", true);
}

/// A DF datagram bigger than the tunnel MTU (1500 - 20) gets ICMP
/// fragmentation-needed with MTU 1480 from A, quoting it as sent; one
/// that fits goes through; one without DF is dropped (no fragmentation).
#[test]
fn too_big_for_the_tunnel_gets_frag_needed_with_the_tunnel_mtu() {
    let a = gw_a("ipip");
    let mut big = udp(
        &format!("{CLIENT}:5000"),
        &format!("{OLD}:53"),
        &[0u8; 1472],
    );
    big[20] |= 0x40; // DF
    fix_ip_checksum(&mut big);
    let out = a.on_wan(&big);
    let Out::Reply {
        oif,
        next_hop,
        frame,
    } = &out
    else {
        panic!("expected frag-needed, got {}", out.short())
    };
    assert_eq!(
        (*oif, next_hop.to_string()),
        (a.wan, "203.0.113.254".to_string())
    );
    let v = view(frame);
    assert_eq!((v.src, v.dst), (ip(A), ip(CLIENT)));
    assert_eq!((v.icmp().ty, v.icmp().code, v.icmp().mtu()), (3, 4, 1480));
    assert_eq!(v.inner().dst_sa(), sa(&format!("{OLD}:53")));
    assert_eq!(
        a.counters
            .frag_needed_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    let mut fits = udp(
        &format!("{CLIENT}:5000"),
        &format!("{OLD}:53"),
        &[0u8; 1452],
    );
    fits[20] |= 0x40;
    fix_ip_checksum(&mut fits);
    let out = a.on_wan(&fits);
    let Out::Reply { frame, .. } = &out else {
        panic!("1480 bytes fit, got {}", out.short())
    };
    assert_eq!(frame.len(), 14 + 1500);

    let nodf = udp(
        &format!("{CLIENT}:5001"),
        &format!("{OLD}:53"),
        &[0u8; 1472],
    );
    assert_eq!(a.on_wan(&nodf), Out::Drop(DropReason::TunnelTooBig));
    assert_eq!(a.engine.tunnel_stats()[0].drops, 2);
}

/// Only the configured remote may send into a tunnel: other IPIP/GRE
/// packets to the gateway, and GRE with the wrong key, are dropped and
/// counted by reason; transit IPIP (not to the gateway) is routed as is.
#[test]
fn foreign_tunnel_packets_are_dropped_by_reason() {
    let inner = tcp(&format!("{CLIENT}:1"), &format!("{OLD}:80"), SYN, b"");
    let wrap = |mode: Mode, src: &str, dst: &str| {
        let mut buf = inner.clone();
        buf.resize(inner.len() + 64, 0);
        let n = encap(
            &mut buf,
            14,
            inner.len(),
            mode,
            ip(src).into(),
            ip(dst).into(),
        )
        .unwrap();
        buf.truncate(n);
        buf
    };
    let b = gw_b("gre", false);
    let stranger = wrap(Mode::Gre { key: Some(42) }, "203.0.113.66", B);
    assert_eq!(b.on_wan(&stranger), Out::Drop(DropReason::TunnelUnknown));
    let wrong_key = wrap(Mode::Gre { key: Some(41) }, A, B);
    assert_eq!(b.on_wan(&wrong_key), Out::Drop(DropReason::TunnelKey));
    let no_key = wrap(Mode::Gre { key: None }, A, B);
    assert_eq!(b.on_wan(&no_key), Out::Drop(DropReason::TunnelKey));
    let ipip = wrap(Mode::Ipip, A, B);
    assert_eq!(b.on_wan(&ipip), Out::Drop(DropReason::TunnelUnknown));
    let mut v1 = wrap(Mode::Gre { key: Some(42) }, A, B);
    v1[35] |= 1; // GRE version 1 (PPTP)
    assert_eq!(b.on_wan(&v1), Out::Drop(DropReason::TunnelGreVersion));
    // Nested: IPIP inside the tunnel to the gateway again.
    let nested_inner = wrap(Mode::Ipip, A, B);
    let mut buf = nested_inner.clone();
    buf.resize(nested_inner.len() + 64, 0);
    let n = encap(
        &mut buf,
        14,
        nested_inner.len(),
        Mode::Gre { key: Some(42) },
        ip(A).into(),
        ip(B).into(),
    )
    .unwrap();
    assert_eq!(b.on_wan(&buf[..n]), Out::Drop(DropReason::TunnelNested));
    assert_eq!(b.engine.tunnel_stats()[0].drops, 4);
    let reasons = &b.engine.tunnel_stats()[0].drop_reasons;
    assert_eq!(
        reasons
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        vec![
            ("tunnel_gre_version", 1),
            ("tunnel_key", 2),
            ("tunnel_nested", 1)
        ],
        "per tunnel, by reason (the stranger counts only globally)"
    );
    assert_eq!(b.drops(DropReason::TunnelUnknown), 2);
    assert_eq!(b.engine.tunnel_stats()[0].rx_packets, 0);
    // Transit: an IPIP packet between two other hosts is just routed.
    let transit = wrap(Mode::Ipip, "192.0.2.1", "198.51.100.9");
    let out = b.on_lan(&transit);
    assert!(out.is_forward(), "transit IPIP: {}", out.short());
    // Hostile bytes: every truncation of a GRE frame, no panic.
    let good = wrap(Mode::Gre { key: Some(42) }, A, B);
    for cut in 14..good.len() {
        let mut f = good[..cut].to_vec();
        if f.len() >= 34 {
            let total = (f.len() - 14) as u16;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            fix_ip_checksum(&mut f);
        }
        let _ = b.engine.process(
            &mut f.clone(),
            f.len(),
            natgw::packet::Link::Ethernet,
            b.wan,
            b.now,
            &b.counters,
        );
    }
}

/// Config errors name the file, line, column and field.
#[test]
fn bad_tunnel_config_is_refused_with_file_line_and_field() {
    let cases = [
        (
            "mode = \"vxlan\"",
            "tunnel[0].mode: `vxlan` is not one of \"ipip\", \"gre\"",
        ),
        (
            "local = \"192.0.2.1\"",
            "tunnel[0].local: 192.0.2.1 is not an address of the gateway",
        ),
        ("key = 5", "tunnel[0].key: only a GRE tunnel has a key"),
        (
            "name = \"wan0\"",
            "tunnel[0].name: `wan0` is already the name",
        ),
        ("mtu = 20", "tunnel[0].mtu: must be 68..="),
        (
            "remote = \"203.0.113.1\"",
            "tunnel[0].remote: 203.0.113.1 is the gateway's own address",
        ),
    ];
    for (line, want) in cases {
        let key = line.split(" = ").next().unwrap();
        let mut t = String::from("\n[[tunnel]]\n");
        for (k, v) in [
            ("name", "\"tun1\""),
            ("mode", "\"ipip\""),
            ("local", "\"203.0.113.1\""),
            ("remote", "\"203.0.113.50\""),
        ] {
            if k != key {
                t += &format!("{k} = {v}\n");
            }
        }
        t += line;
        t += "\n";
        let text = config("seed = 7", &t);
        let err = match natgw::control::config::Config::parse(&text, std::path::Path::new("t.toml"))
        {
            Ok(_) => panic!("`{line}` accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.starts_with("t.toml:") && err.contains(want),
            "`{line}`: {err}"
        );
        let line_no: usize = err.split(':').nth(1).unwrap().parse().unwrap();
        assert_eq!(text.lines().nth(line_no - 1).unwrap().trim(), line, "{err}");
    }
    // A route into an unknown device, and a mark of 0.
    let text = config(
        "seed = 7",
        "\n[[route]]\nto = \"5.5.5.5/32\"\ndev = \"tun9\"\n",
    );
    let err = natgw::control::config::Config::parse(&text, std::path::Path::new("t.toml"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("route[1].dev: no interface named `tun9`"),
        "{err}"
    );
    let text = config(
        "seed = 7",
        "\n[[rule]]\naction = \"accept\"\nset_mark = 0\n",
    );
    let err = natgw::control::config::Config::parse(&text, std::path::Path::new("t.toml"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("rule[0].set_mark: marks are 1-255"), "{err}");
    // The tunnel's remote must be reachable by a physical interface.
    let text = format!(
        "[gateway]\nseed = 7\n\n[[interface]]\nname = \"wan0\"\nrole = \"outside\"\naddress = \"203.0.113.1/24\"\n{}",
        tunnel_section("ipip", A, "192.0.2.50")
    );
    let err = natgw::control::config::Config::parse(&text, std::path::Path::new("t.toml"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tunnel[0].remote: no route to 192.0.2.50"),
        "{err}"
    );
}

/// Recipe 3: an ICMP error from the application about a datagram of a
/// marked flow goes back the way the flow came (into the tunnel, by the
/// mark), translated (from 5.5.5.5, quoting the datagram as the client
/// sent it).
#[test]
fn recipe3_icmp_error_from_the_app_follows_the_mark_into_the_tunnel() {
    let b = gw_b("ipip", true);
    let a = gw_a("ipip");
    let dgram = udp(&format!("{CLIENT}:5000"), &format!("{OLD}:9"), b"hi");
    let Out::Reply { frame, .. } = a.on_wan(&dgram) else {
        panic!("A encapsulates")
    };
    let Out::Reply { frame: to_app, .. } = b.on_wan(&frame) else {
        panic!("B decapsulates")
    };
    assert_eq!(view(&to_app).dst, ip(APP));
    let err = icmp_error(APP, CLIENT, IcmpKind::PortUnreachable, &to_app, Quote::Full);
    let out = b.on_lan(&err);
    let Out::Reply { oif, frame, .. } = &out else {
        panic!(
            "B should send the error into the tunnel, got {}",
            out.short()
        )
    };
    assert_eq!(*oif, b.wan);
    let outer = view(frame);
    assert_eq!((outer.src, outer.dst, outer.proto), (ip(B), ip(A), 4));
    let Out::Reply { frame, .. } = a.on_wan(frame) else {
        panic!("A decapsulates the error")
    };
    let v = view(&frame);
    assert_eq!((v.src, v.dst), (ip(OLD), ip(CLIENT)));
    assert_eq!(v.icmp().ty, 3);
    assert_eq!(v.inner().dst_sa(), sa(&format!("{OLD}:9")));
    assert_eq!(v.inner().src_sa(), sa(&format!("{CLIENT}:5000")));
}

/// `natgw replay` (the offline core over a capture) names what it
/// encapsulated and decapsulated, with the outer and inner headers.
#[test]
fn replay_shows_encap_and_decap() {
    let dir = std::env::temp_dir().join(format!("natgw-tunnel-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("a.toml");
    let text = config(
        "seed = 7",
        &format!(
            "{}\n[[route]]\nto = \"{OLD}/32\"\ndev = \"tun1\"\n",
            tunnel_section("gre", A, B)
        ),
    );
    std::fs::write(&cfg_path, &text).unwrap();
    // The client's SYN, and B's answer already in the tunnel.
    let syn = tcp(&format!("{CLIENT}:40000"), &format!("{OLD}:80"), SYN, b"");
    let synack = tcp(
        &format!("{OLD}:80"),
        &format!("{CLIENT}:40000"),
        SYN | ACK,
        b"",
    );
    let mut buf = synack.clone();
    buf.resize(synack.len() + 64, 0);
    let n = encap(
        &mut buf,
        14,
        synack.len(),
        Mode::Gre { key: Some(42) },
        ip(B).into(),
        ip(A).into(),
    )
    .unwrap();
    let pcap = dir.join("in.pcap");
    {
        let f = std::fs::File::create(&pcap).unwrap();
        let mut w = pcap_file::pcap::PcapWriter::new(f).unwrap();
        for (i, fr) in [&syn[..], &buf[..n]].iter().enumerate() {
            let ts = std::time::Duration::from_millis(1000 + i as u64);
            w.write_packet(&pcap_file::pcap::PcapPacket::new(ts, fr.len() as u32, fr))
                .unwrap();
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_natgw"))
        .args(["replay", "--config"])
        .arg(&cfg_path)
        .arg("--in")
        .arg(&pcap)
        .arg("--out")
        .arg(dir.join("out.pcap"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let l1 = lines
        .iter()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    let l2 = lines
        .iter()
        .find(|l| l.trim_start().starts_with("2 "))
        .unwrap();
    assert!(
        l1.contains("encap")
            && l1.contains(&format!(
                "=>  gre {A} > {B} key=42 [tcp {CLIENT}:40000 > {OLD}:80]"
            )),
        "{text}"
    );
    assert!(
        l2.contains("decap")
            && l2.contains(&format!(
                "gre {B} > {A} key=42 [tcp {OLD}:80 > {CLIENT}:40000]"
            ))
            && l2.contains(&format!("=>  tcp {OLD}:80 > {CLIENT}:40000")),
        "{text}"
    );
}

/// Rules see tunnels as interfaces: `oif = "tun1"` masquerade gives the
/// tunnel's local address to what leaves through it, and the replies come
/// back through the tunnel to the inside host.
#[test]
fn masquerade_out_of_a_tunnel_uses_its_local_address() {
    let a = Gw::new(&config(
        "seed = 7",
        &format!(
            "{}\n[[route]]\nto = \"{OLD}/32\"\ndev = \"tun1\"\n\n[[rule]]\noif = \"tun1\"\naction = \"masquerade\"\n",
            tunnel_section("ipip", A, B)
        ),
    ));
    let syn = tcp("10.0.0.2:40000", &format!("{OLD}:80"), SYN, b"");
    let Out::Reply { frame, .. } = a.on_lan(&syn) else {
        panic!("A encapsulates")
    };
    let inner = view(&inner_of(&frame, "ipip"));
    assert_eq!(
        inner.src,
        ip(A),
        "masqueraded to the tunnel's local address"
    );
    let port = inner.sport;
    // B's answer, in the tunnel, reaches the inside host.
    let synack = tcp(&format!("{OLD}:80"), &format!("{A}:{port}"), SYN | ACK, b"");
    let mut buf = synack.clone();
    buf.resize(synack.len() + 64, 0);
    let n = encap(
        &mut buf,
        14,
        synack.len(),
        Mode::Ipip,
        ip(B).into(),
        ip(A).into(),
    )
    .unwrap();
    let out = a.on_wan(&buf[..n]);
    let Out::Reply { oif, frame, .. } = &out else {
        panic!("A decapsulates, got {}", out.short())
    };
    assert_eq!(*oif, a.lan);
    assert_eq!(view(frame).dst_sa(), sa("10.0.0.2:40000"));
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// An outer IPv4 header A -> B of protocol `proto` around `payload`
    /// (valid header checksum), as an Ethernet frame.
    fn outer(proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (20 + payload.len()) as u16;
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&ip(A).octets());
        h[16..20].copy_from_slice(&ip(B).octets());
        f.extend_from_slice(&h);
        f.extend_from_slice(payload);
        fix_ip_checksum(&mut f);
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever follows a valid outer header from the configured
        /// remote (a GRE header with any flags, any inner bytes), the
        /// engine never panics, and what it sends fits its buffer and is
        /// an IPv4 frame.
        #[test]
        fn any_tunnel_payload_is_handled_without_panic(
            gre in any::<bool>(),
            flags in any::<u16>(),
            inner in proptest::collection::vec(any::<u8>(), 0..120),
            valid_inner in any::<bool>(),
        ) {
            let b = gw_b(if gre { "gre" } else { "ipip" }, true);
            let mut payload = Vec::new();
            if gre {
                payload.extend_from_slice(&flags.to_be_bytes());
                payload.extend_from_slice(&[0x08, 0x00]);
                payload.extend_from_slice(&42u32.to_be_bytes());
            }
            if valid_inner {
                // A real inner datagram, then the random bytes as its payload.
                let u = udp(&format!("{CLIENT}:1"), &format!("{OLD}:2"), &inner);
                payload.extend_from_slice(&u[14..]);
            } else {
                payload.extend_from_slice(&inner);
            }
            let f = outer(if gre { 47 } else { 4 }, &payload);
            let mut buf = vec![0u8; f.len() + 128];
            buf[..f.len()].copy_from_slice(&f);
            let v = b.engine.process(&mut buf, f.len(), natgw::packet::Link::Ethernet, b.wan, b.now, &b.counters);
            match v {
                natgw::engine::Verdict::Reply { len, .. } => {
                    prop_assert!(len <= buf.len());
                    prop_assert!(natgw::packet::parse(&buf[..len], natgw::packet::Link::Ethernet).is_ok());
                }
                natgw::engine::Verdict::Forward { .. } => {
                    prop_assert!(natgw::packet::parse(&buf[..f.len()], natgw::packet::Link::Ethernet).is_ok());
                }
                _ => {}
            }
        }
    }
}

/// A tunnel without `mtu` follows its underlying device (the interface
/// the main table routes its remote to) minus the overhead, as Linux
/// derives it; a configured `mtu` stays.
#[test]
fn tunnel_mtu_follows_the_underlying_device_unless_configured() {
    let text = config(
        "seed = 7",
        &format!(
            "{}{}mtu = 1300\n",
            tunnel_section("gre", A, B),
            tunnel_section("ipip", A, "203.0.113.60").replace("tun1", "tun2")
        ),
    );
    let mut cfg =
        natgw::control::config::Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
    assert_eq!(
        cfg.engine.tunnels[0].mtu,
        1500 - 28,
        "before reading devices"
    );
    natgw::engine::set_tunnel_mtus(&mut cfg.engine, |dev| (dev == "wan0").then_some(9000));
    assert_eq!(cfg.engine.tunnels[0].mtu, 9000 - 28);
    assert_eq!(cfg.engine.tunnels[1].mtu, 1300, "configured");
}

/// A reload that keeps recipe 3's rule (`iif = "tun1"`) finds the flows
/// that came in by the tunnel still matched (their input interface is the
/// one their replies are routed to: the tunnel, by the mark).
#[test]
fn reload_sees_tunnel_flows_as_matched() {
    let a = gw_a("ipip");
    let b = gw_b("ipip", true);
    let syn = tcp(&format!("{CLIENT}:40000"), &format!("{OLD}:80"), SYN, b"");
    let Out::Reply { frame, .. } = a.on_wan(&syn) else {
        panic!("A encapsulates")
    };
    assert!(matches!(b.on_wan(&frame), Out::Reply { .. }));
    assert_eq!(b.flows().len(), 1);
    let unmatched = b.engine.unmatched_flows(&b.engine.ruleset(), b.now);
    assert!(unmatched.is_empty(), "{unmatched:?}");
}

/// `natgw check` prints the tunnels and the policy routes it will use.
#[test]
fn check_prints_tunnels_and_policy_routes() {
    let dir = std::env::temp_dir().join(format!("natgw-tunnel-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("b.toml");
    let b_text = {
        let mut s = String::new();
        s += "[[interface]]\nname = \"lan0\"\nrole = \"inside\"\naddress = \"10.9.0.1/24\"\n\n";
        s += &format!(
            "[[interface]]\nname = \"wan0\"\nrole = \"outside\"\naddress = \"{B}/24\"\n\n"
        );
        s += "[[route]]\nto = \"0.0.0.0/0\"\nvia = \"203.0.113.254\"\n";
        s += &tunnel_section("gre", B, A);
        s += "\n[[route]]\nto = \"0.0.0.0/0\"\ndev = \"tun1\"\nmark = 3\n";
        s += "\n[[route]]\nto = \"0.0.0.0/0\"\ndev = \"tun1\"\nfrom = \"5.5.5.5/32\"\n";
        s
    };
    std::fs::write(&p, b_text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_natgw"))
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("  0.0.0.0/0 dev tun1 mark 3\n"), "{text}");
    assert!(
        text.contains("  0.0.0.0/0 dev tun1 from 5.5.5.5/32\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tun1            gre key 42 local {B} remote {A} mtu 1472"
        )),
        "{text}"
    );
}

/// A datagram whose TTL runs out at B (traceroute through the tunnel):
/// B's time-exceeded, from its tunnel address, goes back into the tunnel
/// (policy route from 5.5.5.5) and A hands it to the client, quoting the
/// datagram as the client sent it.
#[test]
fn ttl_expiring_beyond_the_tunnel_comes_back_through_it() {
    let a = gw_a("gre");
    let b = gw_b("gre", false);
    let mut probe = udp(
        &format!("{CLIENT}:33434"),
        &format!("{OLD}:33434"),
        b"trace",
    );
    set_ttl(&mut probe, 2);
    let Out::Reply { frame, .. } = a.on_wan(&probe) else {
        panic!("A encapsulates (TTL 2 -> 1)")
    };
    let out = b.on_wan(&frame);
    let Out::Reply { oif, frame, .. } = &out else {
        panic!(
            "B answers time-exceeded into the tunnel, got {}",
            out.short()
        )
    };
    assert_eq!(*oif, b.wan);
    assert_eq!(view(frame).dst, ip(A), "encapsulated towards A");
    let out = a.on_wan(frame);
    let Out::Reply { frame, .. } = &out else {
        panic!("A decapsulates, got {}", out.short())
    };
    let v = view(frame);
    assert_eq!((v.src, v.dst), (ip(B), ip(CLIENT)));
    assert_eq!((v.icmp().ty, v.icmp().code), (11, 0));
    assert_eq!(v.inner().src_sa(), sa(&format!("{CLIENT}:33434")));
    assert_eq!(v.inner().dst_sa(), sa(&format!("{OLD}:33434")));
}
