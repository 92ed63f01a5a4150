//! Format tests: round trips, the version 1 -> 2 upgrade (a file written
//! by the test-only version 1 downgrade, and a checked-in one), every
//! refusal, and arbitrary bytes.

use super::format::{self, encode_as};
use super::*;
use crate::conntrack::flags;
use crate::lb::{Forward, Persistence, RealSpec, Scheduler};
use crate::packet::proto;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn a(s: &str) -> u32 {
    s.parse::<std::net::Ipv4Addr>().unwrap().into()
}

fn t(src: &str, sport: u16, dst: &str, dport: u16, p: u8) -> Tuple {
    Tuple {
        src: a(src),
        dst: a(dst),
        sport,
        dport,
        proto: p,
    }
}

/// A snapshot with a bit of everything (fixed, so fixtures can be
/// compared with it).
fn sample() -> Snapshot {
    let masq = FlowEntry {
        orig: t("10.0.0.2", 40000, "198.51.100.9", 443, proto::TCP),
        reply: t("198.51.100.9", 443, "203.0.113.1", 40000, proto::TCP),
        tcp_state: TcpState::Established,
        flags: flags::SEEN_REPLY | flags::ASSURED | nat_flags::SNAT,
        mark: 3,
        packets: [12, 10],
        bytes: [1500, 90_000],
        remaining_ns: 431_999_000_000_123,
        age_ns: 3_600_000_000_017,
    };
    let dnat = FlowEntry {
        orig: t("198.51.100.20", 5555, "203.0.113.1", 8080, proto::TCP),
        reply: t("10.0.0.5", 80, "198.51.100.20", 5555, proto::TCP),
        tcp_state: TcpState::SynRecv,
        flags: flags::SEEN_REPLY | nat_flags::DNAT,
        mark: 1 << 16,
        packets: [1, 1],
        bytes: [60, 60],
        remaining_ns: 59_000_000_000,
        age_ns: 1_000_000_000,
    };
    let eim = FlowEntry {
        orig: t("10.0.0.7", 5000, "192.0.2.53", 53, proto::UDP),
        reply: t("192.0.2.53", 53, "203.0.113.1", 61000, proto::UDP),
        tcp_state: TcpState::None,
        flags: nat_flags::SNAT | nat_flags::EIM,
        mark: 4,
        packets: [1, 0],
        bytes: [80, 0],
        remaining_ns: 29_500_000_000,
        age_ns: 500_000_000,
    };
    let svc = ServiceSpec {
        key: ServiceKey {
            vip: a("203.0.113.10"),
            port: 80,
            proto: proto::TCP,
        },
        scheduler: Scheduler::Wrr,
        persistence: Some(Persistence {
            timeout_secs: 300,
            netmask: Some(24),
            expire_quiescent: false,
        }),
        reals: vec![
            RealSpec {
                addr: a("10.0.0.20"),
                port: 8080,
                weight: 3,
            },
            RealSpec {
                addr: a("10.0.0.21"),
                port: 8080,
                weight: 0,
            },
        ],
        forward: Forward::Masq,
    };
    let mut counters = CounterSnapshot {
        rx_packets: 1_000_000,
        rx_bytes: 640_000_000,
        tx_packets: 999_000,
        fast_path: 998_000,
        flows_created: 2_000,
        ..CounterSnapshot::default()
    };
    counters.drops.insert("port_exhausted".into(), 7);
    counters.drops.insert("no_route".into(), 1);
    Snapshot {
        version: CURRENT_VERSION,
        captured_unix_ns: 1_790_000_000_123_456_789,
        flows: vec![masq, dnat, eim],
        eim: vec![EimEntry {
            inside: (a("10.0.0.7"), 5000),
            outside: (a("203.0.113.1"), 61000),
            eif: true,
            remaining_ns: 29_500_000_000,
        }],
        sets: vec![SetSnapshot {
            name: "blocked".into(),
            entries: vec![
                SetMember {
                    prefix: "192.0.2.0/24".parse().unwrap(),
                    remaining_ns: None,
                },
                SetMember {
                    prefix: "198.51.100.7/32".parse().unwrap(),
                    remaining_ns: Some(299_000_000_000),
                },
            ],
        }],
        persistence: vec![PersistSnap {
            service: svc.key,
            client: a("198.51.100.0"),
            netmask: 24,
            real: a("10.0.0.20"),
            port: 8080,
            remaining_ns: 250_000_000_000,
        }],
        services: Some(vec![svc]),
        counters: Some(counters),
    }
}

/// What a version 1 file of [`sample`] holds.
/// What a version 2 file of [`sample`] decodes to: no flow ages.
fn sample_v2() -> Snapshot {
    let mut s = sample();
    s.version = 2;
    for f in &mut s.flows {
        f.age_ns = 0;
    }
    s
}

fn sample_v1() -> Snapshot {
    Snapshot {
        version: 1,
        services: None,
        counters: None,
        ..sample_v2()
    }
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/snapshot/testdata")
        .join(name)
}

#[test]
fn current_version_round_trips() {
    let s = sample();
    let bytes = encode(&s);
    assert_eq!(&bytes[..8], b"NATGWSNP");
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 3);
    assert_eq!(decode(&bytes).unwrap(), s);
    // An empty snapshot too.
    let empty = Snapshot {
        flows: vec![],
        eim: vec![],
        sets: vec![],
        persistence: vec![],
        services: Some(vec![]),
        counters: Some(CounterSnapshot::default()),
        ..s
    };
    assert_eq!(decode(&encode(&empty)).unwrap(), empty);
}

/// An HA peer of sync version 1 sends bare format 2 payloads: they decode
/// (no flow ages), and carried forward they are current bodies.
#[test]
fn an_older_peers_body_decodes_and_carries_forward() {
    let old = format::payload_as(format::current::Payload::from_snapshot(&sample()), 2);
    let s = decode_body_of(&old, 2).unwrap();
    assert_eq!(s, sample_v2());
    assert!(
        decode_body(&old).is_err(),
        "not misread as the current format"
    );
    let forward = encode_body(&s);
    let mut back = decode_body(&forward).unwrap();
    back.version = 2;
    assert_eq!(back, sample_v2());
}

#[test]
fn a_file_written_by_the_version_1_encoder_loads() {
    let bytes = encode_as(&sample(), 1);
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1);
    let s = decode(&bytes).unwrap();
    assert_eq!(s, sample_v1());
    // Version 1 is the version 2 payload less its last two fields.
    let v2 = encode_as(&sample(), 2);
    assert!(bytes.len() < v2.len());
    assert_eq!(
        bytes[HEADER_LEN..],
        v2[HEADER_LEN..HEADER_LEN + bytes.len() - HEADER_LEN]
    );
}

/// Files checked in when each version was current: the decoder must keep
/// reading them byte for byte.
#[test]
fn checked_in_files_of_every_version_load() {
    let v1 = read(&testdata("v1.snap"), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(v1, sample_v1());
    let v2 = read(&testdata("v2.snap"), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(v2, sample_v2());
    let v3 = read(&testdata("v3.snap"), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(v3, sample());
    // And this encoder still writes the version 3 file byte for byte, and
    // the test-only version 2 writer the version 2 one.
    assert_eq!(
        encode(&sample()),
        std::fs::read(testdata("v3.snap")).unwrap()
    );
    assert_eq!(
        encode_as(&sample(), 2),
        std::fs::read(testdata("v2.snap")).unwrap()
    );
}

/// `cargo test --lib snapshot::tests::write_fixtures -- --ignored` writes
/// the checked-in files (only ever for a new version: old ones must stay).
#[test]
#[ignore]
fn write_fixtures() {
    std::fs::create_dir_all(testdata("")).unwrap();
    std::fs::write(testdata("v1.snap"), encode_as(&sample(), 1)).unwrap();
    std::fs::write(testdata("v2.snap"), encode_as(&sample(), 2)).unwrap();
    std::fs::write(testdata("v3.snap"), encode(&sample())).unwrap();
}

#[test]
fn flag_bits_and_states_are_pinned_by_the_format() {
    // The module docs define these values; changing one is a new version.
    assert_eq!(flags::SEEN_REPLY, 1 << 8);
    assert_eq!(flags::ASSURED, 1 << 9);
    assert_eq!(nat_flags::SNAT, 1 << 16);
    assert_eq!(nat_flags::DNAT, 1 << 17);
    assert_eq!(nat_flags::EIM, 1 << 18);
    assert_eq!(nat_flags::EIF_IN, 1 << 19);
    assert_eq!(nat_flags::HAIRPIN, 1 << 20);
    assert_eq!(nat_flags::LB, 1 << 21);
    let names: Vec<&str> = TcpState::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(names.len(), 10);
    for (i, s) in TcpState::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i);
    }
    assert_eq!(TcpState::ALL[3], TcpState::Established);
    assert_eq!(TcpState::ALL[9], TcpState::SynSent2);
}

#[test]
fn counters_keep_unknown_drop_names_and_ignore_other_unknowns() {
    let mut s = sample();
    let c = s.counters.as_mut().unwrap();
    c.drops.insert("some_future_reason".into(), 3);
    let d = decode(&encode(&s)).unwrap();
    assert_eq!(d.counters.unwrap().drops["some_future_reason"], 3);
}

// ---------------------------------------------------------------------------
// Refusals

struct TmpDir(PathBuf);

impl TmpDir {
    fn new(tag: &str) -> TmpDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("natgw-snap-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TmpDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `bytes` and reads them back; the error's message.
fn refusal(dir: &TmpDir, bytes: &[u8], max: u64) -> String {
    let p = dir.path("bad.snap");
    std::fs::write(&p, bytes).unwrap();
    let e = read(&p, max).expect_err("must be refused");
    let m = e.to_string();
    assert!(
        m.starts_with(&format!("snapshot {}: ", p.display())),
        "names the file: {m}"
    );
    m
}

/// Re-seals the header checksum after a test edited the header.
fn reseal(b: &mut [u8]) {
    let c = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn each_problem_is_refused_with_a_clear_message() {
    let dir = TmpDir::new("refuse");
    let good = encode(&sample());
    let max = DEFAULT_MAX_BYTES;

    let m = refusal(&dir, &good, 100);
    assert!(
        m.contains(&format!(
            "{} bytes is more than the limit of 100 bytes",
            good.len()
        )),
        "{m}"
    );

    let m = refusal(&dir, b"GIF89a....................................", max);
    assert!(m.contains("not a natgw snapshot"), "{m}");

    let m = refusal(&dir, &good[..20], max);
    assert!(
        m.contains("truncated: 20 bytes, shorter than the 32-byte header"),
        "{m}"
    );
    let m = refusal(&dir, &good[..good.len() - 1], max);
    assert!(m.contains("truncated: the header announces a"), "{m}");
    let m = refusal(&dir, &[], max);
    assert!(m.contains("truncated: 0 bytes"), "{m}");

    let mut newer = good.clone();
    newer[8..10].copy_from_slice(&4u16.to_le_bytes());
    reseal(&mut newer);
    let m = refusal(&dir, &newer, max);
    assert!(
        m.contains("format version 4 is not one this natgw reads (it reads 1 to 3)"),
        "{m}"
    );

    let mut hdr = good.clone();
    hdr[24] ^= 1;
    let m = refusal(&dir, &hdr, max);
    assert!(m.contains("header checksum mismatch"), "{m}");

    let mut fl = good.clone();
    fl[10] = 1;
    reseal(&mut fl);
    let m = refusal(&dir, &fl, max);
    assert!(m.contains("header flags 0x0001"), "{m}");

    let mut long = good.clone();
    long.push(0);
    let m = refusal(&dir, &long, max);
    assert!(m.contains("1 bytes follow the"), "{m}");

    let mut crc = good.clone();
    let last = crc.len() - 1;
    crc[last] ^= 0x40;
    let m = refusal(&dir, &crc, max);
    assert!(m.contains("payload checksum mismatch"), "{m}");

    // A payload with a valid checksum that does not decode.
    let mut junk = header_for(2, &[0xff; 40]);
    junk.extend_from_slice(&[0xff; 40]);
    let m = refusal(&dir, &junk, max);
    assert!(m.contains("version 2 payload does not decode"), "{m}");
    // A TCP state that does not exist.
    let mut w = format::current::Payload::from_snapshot(&sample());
    w.captured_unix_ns = 1;
    w.flows[1].f.tcp_state = 10;
    let p = format::payload_as(w, 1);
    let mut b = header_for(1, &p);
    b.extend_from_slice(&p);
    let m = refusal(&dir, &b, max);
    assert!(
        m.contains("version 1 payload does not decode: flow 1: unknown TCP state 10"),
        "{m}"
    );

    let m = read(&dir.path("missing.snap"), max)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("missing.snap: cannot open it: No such file"),
        "{m}"
    );
}

fn header_for(version: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    h[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    reseal(&mut h);
    h
}

#[test]
fn the_size_limit_is_checked_before_reading() {
    let dir = TmpDir::new("big");
    let p = dir.path("huge.snap");
    // A sparse 1 TiB file: reading it would take forever.
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(1 << 40).unwrap();
    let e = read(&p, DEFAULT_MAX_BYTES).unwrap_err();
    assert!(matches!(e, SnapshotError::TooLarge { size, .. } if size == 1 << 40));
}

#[test]
fn every_truncation_and_every_bit_flip_is_refused() {
    let good = encode(&sample());
    for n in 0..good.len() {
        assert!(decode(&good[..n]).is_err(), "truncated to {n} bytes");
    }
    // CRC-32 catches every single-bit error, in the header and payload.
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut b = good.clone();
            b[i] ^= 1 << bit;
            assert!(decode(&b).is_err(), "bit {bit} of byte {i} flipped");
        }
    }
    for v in [1, 2] {
        let mut b = encode_as(&sample(), v);
        b.truncate(b.len() - 3);
        assert!(decode(&b).is_err());
    }
}

/// Every prefix of a valid payload, sealed with a valid header: the
/// decoder must fail cleanly (no panic, no huge allocation).
#[test]
fn short_payloads_with_valid_checksums_are_refused() {
    for v in [1u16, 2] {
        let good = encode_as(&sample(), v);
        let p = &good[HEADER_LEN..];
        for n in 0..p.len() {
            let mut b = header_for(v, &p[..n]);
            b.extend_from_slice(&p[..n]);
            assert!(
                matches!(decode(&b), Err(SnapshotError::Decode { .. })),
                "version {v}, payload cut to {n}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&b);
    }

    /// Garbage behind a valid header and checksum reaches the payload
    /// decoder itself.
    #[test]
    fn arbitrary_payloads_never_panic(
        v in 1u16..=2,
        p in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut b = header_for(v, &p);
        b.extend_from_slice(&p);
        let _ = decode(&b);
    }

    /// Mutations of a valid payload (re-sealed, so they get past the
    /// checksums).
    #[test]
    fn mutated_payloads_never_panic(
        v in 1u16..=2,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let good = encode_as(&sample(), v);
        let mut p = good[HEADER_LEN..].to_vec();
        for (i, x) in edits {
            let i = i.index(p.len());
            p[i] = x;
        }
        let mut b = header_for(v, &p);
        b.extend_from_slice(&p);
        let _ = decode(&b);
    }
}

// ---------------------------------------------------------------------------
// Files

#[test]
fn write_atomic_replaces_the_file_with_mode_0600_and_leaves_nothing_behind() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TmpDir::new("write");
    let p = dir.path("state.snap");
    std::fs::write(&p, b"old contents").unwrap();
    let n = write_atomic(&p, &sample()).unwrap();
    assert_eq!(n, std::fs::metadata(&p).unwrap().len());
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(read(&p, DEFAULT_MAX_BYTES).unwrap(), sample());
    // Again over itself; no temporary files stay.
    write_atomic(&p, &sample_v1()).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state.snap"]);
    // The version written is the current one, whatever was decoded.
    assert_eq!(
        read(&p, DEFAULT_MAX_BYTES).unwrap().version,
        CURRENT_VERSION
    );

    let e = write_atomic(&dir.path("no/such/dir/x.snap"), &sample()).unwrap_err();
    assert!(
        e.to_string().contains("cannot create a temporary file"),
        "{e}"
    );
}

#[test]
fn rebasing_takes_elapsed_time_off_and_drops_what_ran_out() {
    let f = sample().flows[0];
    let now = Time::from_secs(7);
    let r = f.to_record(now, 1_000).unwrap();
    assert_eq!(r.expires, Time(now.0 + f.remaining_ns - 1_000));
    assert!(f.to_record(now, f.remaining_ns).is_none());
    let back = FlowEntry::from_record(&r, now);
    assert_eq!(back.remaining_ns, f.remaining_ns - 1_000);

    let s = Snapshot {
        captured_unix_ns: unix_now_ns() - 5_000_000_000,
        ..sample()
    };
    let e = s.elapsed(Elapsed::WallClock);
    assert!(
        e >= Duration::from_secs(5) && e < Duration::from_secs(60),
        "{e:?}"
    );
    assert_eq!(s.elapsed(Elapsed::Ignore), Duration::ZERO);
    let future = Snapshot {
        captured_unix_ns: unix_now_ns() + 3_600_000_000_000,
        ..sample()
    };
    assert_eq!(future.elapsed(Elapsed::WallClock), Duration::ZERO);
}

#[test]
fn a_flow_mark_travels_in_the_flag_word() {
    // A rule's `set_mark` lives in the flag word's top byte (see the
    // module docs): no new version, and older natgw carry it untouched.
    assert_eq!(nat_flags::MARK_SHIFT, 24);
    let mut s = sample();
    s.flows[1].flags |= 3 << nat_flags::MARK_SHIFT;
    let back = decode(&encode(&s)).unwrap();
    assert_eq!(nat_flags::mark_of(back.flows[1].flags), 3);
    assert_eq!(back, s);
}
