//! The `natgw` binary as a user runs it: `check` on good and bad configs,
//! `replay` of a capture, output read back by an independent pcap reader
//! (and by tcpdump when it is installed).

mod common;

use common::{ConfigText, dnat_web, fragment, masquerade_lan};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Port forwarding and masquerade on the base interfaces (no `[gateway]`).
fn config() -> String {
    ConfigText::base()
        .rule(dnat_web())
        .rule(masquerade_lan())
        .text()
}

fn natgw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_natgw"))
        .args(args)
        .output()
        .expect("run natgw")
}

/// A scratch directory, removed when the test ends, pass or fail.
fn tmpdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("natgw-cli-{name}-"))
        .tempdir()
        .unwrap()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("natgw.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_prints_the_effective_ruleset() {
    let d = tmpdir("check-ok");
    let cfg = write_config(d.path(), &config());
    let out = natgw(&["check", "--config", cfg.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("iif wan0 tcp dport 8080 -> dnat to 10.0.0.5:80"),
        "{stdout}"
    );
    assert!(
        stdout.contains("oif wan0 src 10.0.0.0/24 -> masquerade"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0.0.0.0/0 via 203.0.113.254 dev wan0"),
        "{stdout}"
    );
}

#[test]
fn check_refuses_a_bad_config_naming_file_line_and_field() {
    let d = tmpdir("check-bad");
    let cfg = write_config(
        d.path(),
        &config().replace("oif = \"wan0\"", "oif = \"eth9\""),
    );
    let out = natgw(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:24:7: rule[1].oif: no interface named `eth9`",
        cfg.display()
    );
    assert!(err.contains(&want), "stderr was: {err}");
    assert!(out.stdout.is_empty());

    let out = natgw(&["check", "--config", "/nonexistent/x.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.toml: cannot read"));
}

/// `natgw replay --json` of capture `inp` into `outp`; its report.
fn replay_json(cfg: &Path, inp: &Path, outp: &Path) -> serde_json::Value {
    let out = natgw(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--in",
        inp.to_str().unwrap(),
        "--out",
        outp.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json report")
}

/// Writes `frames` to an Ethernet pcap, 1 ms apart.
fn write_capture(path: &Path, frames: &[Vec<u8>]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::with_header(
        file,
        PcapHeader {
            datalink: DataLink::ETHERNET,
            ..Default::default()
        },
    )
    .unwrap();
    for (i, fr) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            Duration::from_millis(1000 + i as u64),
            fr.len() as u32,
            fr,
        ))
        .unwrap();
    }
}

/// Writes a capture: an inside client's UDP query and the server's reply to
/// the gateway's address, then an outside client opening the port forward.
fn capture(path: &Path) {
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut f = |b: etherparse::PacketBuilderStep<etherparse::UdpHeader>, p: &[u8]| {
        let mut o = Vec::new();
        b.write(&mut o, p).unwrap();
        frames.push(o);
    };
    let e = |s: u8, d: u8| PacketBuilder::ethernet2([2, 0, 0, 0, 0, s], [2, 0, 0, 0, 0, d]);
    f(
        e(10, 1)
            .ipv4([10, 0, 0, 10], [198, 51, 100, 9], 64)
            .udp(5000, 7),
        b"ping",
    );
    f(
        e(99, 2)
            .ipv4([198, 51, 100, 9], [203, 0, 113, 1], 64)
            .udp(7, 5000),
        b"pong",
    );
    let mut o = Vec::new();
    e(99, 2)
        .ipv4([192, 0, 2, 77], [203, 0, 113, 1], 64)
        .tcp(51000, 8080, 1, 1000)
        .syn()
        .write(&mut o, &[])
        .unwrap();
    frames.push(o);
    write_capture(path, &frames);
}

/// A datagram's last fragment captured ahead of its first: `replay` holds
/// it, as a worker does, and writes it right after the first with the
/// same translation; a lone later fragment is dropped as `frag_timeout`.
#[test]
fn replay_holds_a_fragment_ahead_of_its_first() {
    let d = tmpdir("replay-frag");
    let cfg = write_config(d.path(), &config());
    let (inp, outp) = (d.path().join("in.pcap"), d.path().join("out.pcap"));
    let mut whole = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 10], [2, 0, 0, 0, 0, 1])
        .ipv4([10, 0, 0, 10], [198, 51, 100, 9], 64)
        .udp(5000, 7)
        .write(&mut whole, &[0x5a; 300])
        .unwrap();
    let (first, last) = fragment(&whole, 160);
    let mut stray = last.clone();
    stray[18..20].copy_from_slice(&[0x77, 0x77]); // another IP id
    common::fix_ip_checksum(&mut stray);
    write_capture(&inp, &[last, first, stray]);
    let report = replay_json(&cfg, &inp, &outp);
    let lines: Vec<(u64, String)> = report["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["n"].as_u64().unwrap(),
                p["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (1, "held".to_string()),
            (2, "new".to_string()),
            (1, "fwd (held, after #2)".to_string()),
            (3, "held".to_string()),
            (3, "drop:frag_timeout (held #3)".to_string()),
        ],
        "{report}"
    );
    assert_eq!(report["written"], 2);
    assert_eq!(report["counters"]["frags_translated"], 1);
    let mut r = PcapReader::new(std::fs::File::open(&outp).unwrap()).unwrap();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        assert_eq!(&p.data[26..30], &[203, 0, 113, 1], "translated source");
    }
}

#[test]
fn replay_writes_translated_frames() {
    let d = tmpdir("replay");
    let cfg = write_config(d.path(), &config());
    let (inp, outp) = (d.path().join("in.pcap"), d.path().join("out.pcap"));
    capture(&inp);
    let report = replay_json(&cfg, &inp, &outp);
    assert_eq!(report["packets_in"], 3);
    assert_eq!(report["written"], 3);
    assert_eq!(report["counters"]["flows_created"], 2);

    // Read the output with etherparse (independent of natgw's parser).
    let mut r = PcapReader::new(std::fs::File::open(&outp).unwrap()).unwrap();
    let mut seen = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let s = SlicedPacket::from_ethernet(&p.data).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
            panic!("not ipv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let ports = match &s.transport {
            Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
            Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
            _ => panic!("unexpected transport"),
        };
        seen.push((h.source, h.destination, ports));
    }
    assert_eq!(
        seen,
        vec![
            // The query leaves from the gateway's outside address...
            ([203, 0, 113, 1], [198, 51, 100, 9], (5000, 7)),
            // ...the reply reaches the inside client...
            ([198, 51, 100, 9], [10, 0, 0, 10], (7, 5000)),
            // ...and the port forward reaches the inside server, client address kept.
            ([192, 0, 2, 77], [10, 0, 0, 5], (51000, 80)),
        ]
    );

    // tcpdump, when present, reads the same thing.
    if let Ok(td) = Command::new("tcpdump")
        .args(["-nn", "-r", outp.to_str().unwrap()])
        .output()
        && td.status.success()
    {
        let text = String::from_utf8_lossy(&td.stdout);
        assert!(
            text.contains("203.0.113.1.5000 > 198.51.100.9.7: UDP"),
            "{text}"
        );
        assert!(
            text.contains("192.0.2.77.51000 > 10.0.0.5.80: Flags [S]"),
            "{text}"
        );
    }
}

#[test]
fn replay_refuses_an_unknown_interface() {
    let d = tmpdir("replay-iif");
    let cfg = write_config(d.path(), &config());
    let inp = d.path().join("in.pcap");
    capture(&inp);
    let out = natgw(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--in",
        inp.to_str().unwrap(),
        "--out",
        d.path().join("o.pcap").to_str().unwrap(),
        "--iif",
        "eth7",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--iif: no interface named `eth7`"));
}

#[test]
fn stats_and_flows_without_a_daemon_say_so() {
    let out = natgw(&["stats", "--socket", "/nonexistent/natgw.sock"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach natgw at /nonexistent/natgw.sock") && err.contains("natgw run"),
        "{err}"
    );
    let out = natgw(&["flows", "--socket", "/nonexistent/natgw.sock", "--json"]);
    assert!(!out.status.success());
}

#[test]
fn flows_refuses_a_bad_filter_before_connecting() {
    for (args, want) in [
        (
            vec!["--state", "OPEN"],
            "--state: `OPEN` is not a TCP state",
        ),
        (
            vec!["--proto", "sctp"],
            "--proto: `sctp` is not one of tcp, udp, icmp",
        ),
        (
            vec!["--src", "10.0.0.300"],
            "--src: `10.0.0.300` is not an IPv4 address",
        ),
    ] {
        let mut a = vec!["flows", "--socket", "/nonexistent/natgw.sock"];
        a.extend(args);
        let out = natgw(&a);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert!(
            !err.contains("cannot reach"),
            "filter checked after connecting: {err}"
        );
    }
}
