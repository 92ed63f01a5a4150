//! The file format: header, versioned payloads, checks, atomic writes.
//! See the module docs of [`super`] for the byte layout.

use super::{EimEntry, FlowEntry, PersistSnap, SetMember, SetSnapshot, Snapshot};
use crate::conntrack::TcpState;
use crate::engine::CounterSnapshot;
use crate::lb::{ServiceKey, ServiceSpec};
use crate::nat::Prefix;
use crate::packet::Tuple;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// First eight bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"NATGWSNP";
/// The version [`encode`] writes.
pub const CURRENT_VERSION: u16 = 2;
/// Oldest version [`decode`] still reads.
pub const OLDEST_VERSION: u16 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 32;
/// A sensible `max_bytes` for [`read`] when nothing better is known
/// (see [`max_bytes_for`]).
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// A size limit for [`read`] that fits a table of `max_flows` flows with
/// plenty of room: 256 bytes per flow (a flow takes about 40-60) plus
/// 64 MiB for sets, persistence entries and services.
pub fn max_bytes_for(max_flows: u32) -> u64 {
    max_flows as u64 * 256 + (64 << 20)
}

/// Why a snapshot could not be read or written. Every message names the
/// file (or `(in memory)` for [`decode`]) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {}: cannot {op}: {source}", file.display())]
    Io {
        file: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "snapshot {}: {size} bytes is more than the limit of {max} bytes (refused without reading it)",
        file.display()
    )]
    TooLarge { file: PathBuf, size: u64, max: u64 },
    #[error("snapshot {}: truncated: {detail}", file.display())]
    Truncated { file: PathBuf, detail: String },
    #[error(
        "snapshot {}: not a natgw snapshot (starts with {found:02x?}, expected \"NATGWSNP\")",
        file.display()
    )]
    BadMagic { file: PathBuf, found: Vec<u8> },
    #[error(
        "snapshot {}: format version {version} is not one this natgw reads (it reads {OLDEST_VERSION} to {CURRENT_VERSION}); a newer natgw wrote it, or the file is corrupt",
        file.display()
    )]
    UnsupportedVersion { file: PathBuf, version: u16 },
    #[error(
        "snapshot {}: header checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the header is corrupt",
        file.display()
    )]
    HeaderChecksum {
        file: PathBuf,
        stored: u32,
        computed: u32,
    },
    #[error(
        "snapshot {}: header flags {flags:#06x} include bits this natgw does not know",
        file.display()
    )]
    UnknownFlags { file: PathBuf, flags: u16 },
    #[error(
        "snapshot {}: {extra} bytes follow the {len}-byte payload the header announces",
        file.display()
    )]
    TrailingBytes { file: PathBuf, len: u64, extra: u64 },
    #[error(
        "snapshot {}: payload checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt",
        file.display()
    )]
    Checksum {
        file: PathBuf,
        stored: u32,
        computed: u32,
    },
    #[error(
        "snapshot {}: version {version} payload does not decode: {reason}",
        file.display()
    )]
    Decode {
        file: PathBuf,
        version: u16,
        reason: String,
    },
}

// ---------------------------------------------------------------------------
// Wire types. These, not the in-memory types, define the payload: a change
// here is a new format version (keep the old structs for its decoder).

pub(super) type Addr = [u8; 4];

fn addr(a: u32) -> Addr {
    a.to_be_bytes()
}

fn unaddr(a: Addr) -> u32 {
    u32::from_be_bytes(a)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WireTuple {
    pub(super) src: Addr,
    pub(super) dst: Addr,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) proto: u8,
}

impl From<&Tuple> for WireTuple {
    fn from(t: &Tuple) -> WireTuple {
        WireTuple {
            src: addr(t.src),
            dst: addr(t.dst),
            sport: t.sport,
            dport: t.dport,
            proto: t.proto,
        }
    }
}

impl From<WireTuple> for Tuple {
    fn from(t: WireTuple) -> Tuple {
        Tuple {
            src: unaddr(t.src),
            dst: unaddr(t.dst),
            sport: t.sport,
            dport: t.dport,
            proto: t.proto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WireFlow {
    pub(super) orig: WireTuple,
    pub(super) reply: WireTuple,
    pub(super) tcp_state: u8,
    pub(super) flags: u32,
    pub(super) mark: u32,
    pub(super) packets: [u64; 2],
    pub(super) bytes: [u64; 2],
    pub(super) remaining_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WireEim {
    pub(super) inside_addr: Addr,
    pub(super) inside_port: u16,
    pub(super) outside_addr: Addr,
    pub(super) outside_port: u16,
    pub(super) eif: bool,
    pub(super) remaining_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WireMember {
    pub(super) addr: Addr,
    pub(super) len: u8,
    pub(super) remaining_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WireSet {
    pub(super) name: String,
    pub(super) entries: Vec<WireMember>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WirePersist {
    pub(super) vip: Addr,
    pub(super) vport: u16,
    pub(super) proto: u8,
    pub(super) client: Addr,
    pub(super) netmask: u8,
    pub(super) real: Addr,
    pub(super) real_port: u16,
    pub(super) remaining_ns: u64,
}

/// Version 1: flows, EIM mappings, set entries, persistence entries.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PayloadV1<'a> {
    pub(super) captured_unix_ns: u64,
    pub(super) flows: Cow<'a, [WireFlow]>,
    pub(super) eim: Cow<'a, [WireEim]>,
    pub(super) sets: Cow<'a, [WireSet]>,
    pub(super) persistence: Cow<'a, [WirePersist]>,
}

/// Version 2: version 1 plus the virtual services (JSON) and counters.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PayloadV2<'a> {
    pub(super) captured_unix_ns: u64,
    pub(super) flows: Cow<'a, [WireFlow]>,
    pub(super) eim: Cow<'a, [WireEim]>,
    pub(super) sets: Cow<'a, [WireSet]>,
    pub(super) persistence: Cow<'a, [WirePersist]>,
    /// `[ServiceSpec]` as JSON: self-describing, so fields that
    /// `ServiceSpec` gains later (with serde defaults) do not break it.
    pub(super) services_json: Option<Cow<'a, str>>,
    /// Counter name -> value; drop counters as `drop.<name>`.
    pub(super) counters: Option<Cow<'a, [(String, u64)]>>,
}

/// The parts both versions share, in wire form.
pub(super) struct Common {
    pub(super) flows: Vec<WireFlow>,
    pub(super) eim: Vec<WireEim>,
    pub(super) sets: Vec<WireSet>,
    pub(super) persistence: Vec<WirePersist>,
}

pub(super) fn to_wire(s: &Snapshot) -> Common {
    Common {
        flows: s
            .flows
            .iter()
            .map(|f| WireFlow {
                orig: (&f.orig).into(),
                reply: (&f.reply).into(),
                tcp_state: f.tcp_state as u8,
                flags: f.flags,
                mark: f.mark,
                packets: f.packets,
                bytes: f.bytes,
                remaining_ns: f.remaining_ns,
            })
            .collect(),
        eim: s
            .eim
            .iter()
            .map(|m| WireEim {
                inside_addr: addr(m.inside.0),
                inside_port: m.inside.1,
                outside_addr: addr(m.outside.0),
                outside_port: m.outside.1,
                eif: m.eif,
                remaining_ns: m.remaining_ns,
            })
            .collect(),
        sets: s
            .sets
            .iter()
            .map(|set| WireSet {
                name: set.name.clone(),
                entries: set
                    .entries
                    .iter()
                    .map(|e| WireMember {
                        addr: addr(e.prefix.addr),
                        len: e.prefix.len,
                        remaining_ns: e.remaining_ns,
                    })
                    .collect(),
            })
            .collect(),
        persistence: s
            .persistence
            .iter()
            .map(|p| WirePersist {
                vip: addr(p.service.vip),
                vport: p.service.port,
                proto: p.service.proto,
                client: addr(p.client),
                netmask: p.netmask,
                real: addr(p.real),
                real_port: p.port,
                remaining_ns: p.remaining_ns,
            })
            .collect(),
    }
}

/// The shared parts, checked and converted.
struct Parts {
    flows: Vec<FlowEntry>,
    eim: Vec<EimEntry>,
    sets: Vec<SetSnapshot>,
    persistence: Vec<PersistSnap>,
}

/// Checks and converts the shared parts; `Err` is a reason.
fn from_wire(c: Common) -> Result<Parts, String> {
    let mut flows = Vec::with_capacity(c.flows.len());
    for (i, f) in c.flows.into_iter().enumerate() {
        if f.tcp_state as usize >= TcpState::ALL.len() {
            return Err(format!("flow {i}: unknown TCP state {}", f.tcp_state));
        }
        flows.push(FlowEntry {
            orig: f.orig.into(),
            reply: f.reply.into(),
            tcp_state: TcpState::from_u8(f.tcp_state),
            flags: f.flags,
            mark: f.mark,
            packets: f.packets,
            bytes: f.bytes,
            remaining_ns: f.remaining_ns,
        });
    }
    let eim = c
        .eim
        .into_iter()
        .map(|m| EimEntry {
            inside: (unaddr(m.inside_addr), m.inside_port),
            outside: (unaddr(m.outside_addr), m.outside_port),
            eif: m.eif,
            remaining_ns: m.remaining_ns,
        })
        .collect();
    let mut sets = Vec::with_capacity(c.sets.len());
    for s in c.sets {
        let mut entries = Vec::with_capacity(s.entries.len());
        for e in s.entries {
            if e.len > 32 {
                return Err(format!(
                    "set `{}`: prefix length {} is more than 32",
                    s.name, e.len
                ));
            }
            entries.push(SetMember {
                prefix: Prefix::new(Ipv4Addr::from(e.addr), e.len),
                remaining_ns: e.remaining_ns,
            });
        }
        sets.push(SetSnapshot {
            name: s.name,
            entries,
        });
    }
    let mut persistence = Vec::with_capacity(c.persistence.len());
    for p in c.persistence {
        if p.netmask > 32 {
            return Err(format!(
                "persistence entry: netmask {} is more than 32",
                p.netmask
            ));
        }
        persistence.push(PersistSnap {
            service: ServiceKey {
                vip: unaddr(p.vip),
                port: p.vport,
                proto: p.proto,
            },
            client: unaddr(p.client),
            netmask: p.netmask,
            real: unaddr(p.real),
            port: p.real_port,
            remaining_ns: p.remaining_ns,
        });
    }
    Ok(Parts {
        flows,
        eim,
        sets,
        persistence,
    })
}

fn counters_to_wire(c: &CounterSnapshot) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = [
        ("rx_packets", c.rx_packets),
        ("rx_bytes", c.rx_bytes),
        ("tx_packets", c.tx_packets),
        ("tx_bytes", c.tx_bytes),
        ("fast_path", c.fast_path),
        ("flows_created", c.flows_created),
        ("early_drops", c.early_drops),
        ("tcp_invalid", c.tcp_invalid),
        ("icmp_errors_translated", c.icmp_errors_translated),
        ("frags_translated", c.frags_translated),
        ("ttl_exceeded_sent", c.ttl_exceeded_sent),
        ("local", c.local),
        ("passed", c.passed),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    v.extend(c.drops.iter().map(|(k, n)| (format!("drop.{k}"), *n)));
    v
}

/// Names this natgw does not know are ignored (drop counters are kept by
/// name whatever they are).
fn counters_from_wire(v: &[(String, u64)]) -> CounterSnapshot {
    let mut c = CounterSnapshot::default();
    for (k, n) in v {
        let n = *n;
        match k.as_str() {
            "rx_packets" => c.rx_packets = n,
            "rx_bytes" => c.rx_bytes = n,
            "tx_packets" => c.tx_packets = n,
            "tx_bytes" => c.tx_bytes = n,
            "fast_path" => c.fast_path = n,
            "flows_created" => c.flows_created = n,
            "early_drops" => c.early_drops = n,
            "tcp_invalid" => c.tcp_invalid = n,
            "icmp_errors_translated" => c.icmp_errors_translated = n,
            "frags_translated" => c.frags_translated = n,
            "ttl_exceeded_sent" => c.ttl_exceeded_sent = n,
            "local" => c.local = n,
            "passed" => c.passed = n,
            _ => {
                if let Some(d) = k.strip_prefix("drop.") {
                    c.drops.insert(d.to_string(), n);
                }
            }
        }
    }
    c
}

// ---------------------------------------------------------------------------
// Encoding

/// The payload of `s` in format `version` (1 or 2).
fn encode_payload(s: &Snapshot, version: u16) -> Vec<u8> {
    let w = to_wire(s);
    let r = match version {
        1 => postcard::to_allocvec(&PayloadV1 {
            captured_unix_ns: s.captured_unix_ns,
            flows: Cow::Borrowed(&w.flows),
            eim: Cow::Borrowed(&w.eim),
            sets: Cow::Borrowed(&w.sets),
            persistence: Cow::Borrowed(&w.persistence),
        }),
        2 => {
            let services = s.services.as_ref().map(|v| {
                Cow::Owned(serde_json::to_string(v).expect("service specs serialise to JSON"))
            });
            let counters = s.counters.as_ref().map(|c| Cow::Owned(counters_to_wire(c)));
            postcard::to_allocvec(&PayloadV2 {
                captured_unix_ns: s.captured_unix_ns,
                flows: Cow::Borrowed(&w.flows),
                eim: Cow::Borrowed(&w.eim),
                sets: Cow::Borrowed(&w.sets),
                persistence: Cow::Borrowed(&w.persistence),
                services_json: services,
                counters,
            })
        }
        v => unreachable!("no encoder for version {v}"),
    };
    // Serialising plain structs into a growable Vec cannot fail.
    r.expect("postcard encodes into a Vec")
}

/// The 32-byte header for `payload`.
fn header(version: u16, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&version.to_le_bytes());
    h[10..12].copy_from_slice(&0u16.to_le_bytes());
    h[12..16].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    h[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    // 24..28 reserved, zero.
    let hc = crc32fast::hash(&h[..28]);
    h[28..32].copy_from_slice(&hc.to_le_bytes());
    h
}

fn encode_version(s: &Snapshot, version: u16) -> (Vec<u8>, Vec<u8>) {
    let payload = encode_payload(s, version);
    (header(version, &payload).to_vec(), payload)
}

/// The whole file (header and payload) in the current version.
pub fn encode(s: &Snapshot) -> Vec<u8> {
    let (mut h, p) = encode_version(s, CURRENT_VERSION);
    h.extend_from_slice(&p);
    h
}

/// A file in the old format `version` (tests write version 1 with it).
#[cfg(test)]
pub(super) fn encode_as(s: &Snapshot, version: u16) -> Vec<u8> {
    let (mut h, p) = encode_version(s, version);
    h.extend_from_slice(&p);
    h
}

// ---------------------------------------------------------------------------
// Decoding

const IN_MEMORY: &str = "(in memory)";

/// Decodes a whole file held in memory (any version from
/// [`OLDEST_VERSION`] to [`CURRENT_VERSION`]). Never panics, whatever the
/// bytes.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    decode_from(bytes, Path::new(IN_MEMORY))
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// As [`decode`], naming `file` in errors.
pub fn decode_from(bytes: &[u8], file: &Path) -> Result<Snapshot, SnapshotError> {
    let file = || file.to_path_buf();
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] {
        return Err(SnapshotError::BadMagic {
            file: file(),
            found: head.to_vec(),
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Truncated {
            file: file(),
            detail: format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ),
        });
    }
    let version = le16(&bytes[8..10]);
    if !(OLDEST_VERSION..=CURRENT_VERSION).contains(&version) {
        return Err(SnapshotError::UnsupportedVersion {
            file: file(),
            version,
        });
    }
    let stored = le32(&bytes[28..32]);
    let computed = crc32fast::hash(&bytes[..28]);
    if stored != computed {
        return Err(SnapshotError::HeaderChecksum {
            file: file(),
            stored,
            computed,
        });
    }
    let flags = le16(&bytes[10..12]);
    if flags != 0 {
        return Err(SnapshotError::UnknownFlags {
            file: file(),
            flags,
        });
    }
    let len = le64(&bytes[16..24]);
    let have = (bytes.len() - HEADER_LEN) as u64;
    if have < len {
        return Err(SnapshotError::Truncated {
            file: file(),
            detail: format!("the header announces a {len}-byte payload, {have} bytes follow"),
        });
    }
    if have > len {
        return Err(SnapshotError::TrailingBytes {
            file: file(),
            len,
            extra: have - len,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    let stored = le32(&bytes[12..16]);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(SnapshotError::Checksum {
            file: file(),
            stored,
            computed,
        });
    }
    decode_payload(payload, version).map_err(|reason| SnapshotError::Decode {
        file: file(),
        version,
        reason,
    })
}

/// Decodes exactly `payload` (trailing bytes are an error).
fn take_all<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
    let (v, rest) = postcard::take_from_bytes::<T>(payload).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes left over after the last field",
            rest.len()
        ));
    }
    Ok(v)
}

fn decode_payload(payload: &[u8], version: u16) -> Result<Snapshot, String> {
    match version {
        1 => {
            let p: PayloadV1 = take_all(payload)?;
            let Parts {
                flows,
                eim,
                sets,
                persistence,
            } = from_wire(Common {
                flows: p.flows.into_owned(),
                eim: p.eim.into_owned(),
                sets: p.sets.into_owned(),
                persistence: p.persistence.into_owned(),
            })?;
            Ok(Snapshot {
                version,
                captured_unix_ns: p.captured_unix_ns,
                flows,
                eim,
                sets,
                persistence,
                services: None,
                counters: None,
            })
        }
        2 => {
            let p: PayloadV2 = take_all(payload)?;
            let services = match &p.services_json {
                Some(j) => Some(
                    serde_json::from_str::<Vec<ServiceSpec>>(j)
                        .map_err(|e| format!("services: {e}"))?,
                ),
                None => None,
            };
            let counters = p.counters.as_deref().map(counters_from_wire);
            let Parts {
                flows,
                eim,
                sets,
                persistence,
            } = from_wire(Common {
                flows: p.flows.into_owned(),
                eim: p.eim.into_owned(),
                sets: p.sets.into_owned(),
                persistence: p.persistence.into_owned(),
            })?;
            Ok(Snapshot {
                version,
                captured_unix_ns: p.captured_unix_ns,
                flows,
                eim,
                sets,
                persistence,
                services,
                counters,
            })
        }
        v => Err(format!("no decoder for version {v}")),
    }
}

// ---------------------------------------------------------------------------
// Files

/// Reads and decodes the snapshot at `path`. A file bigger than
/// `max_bytes` is refused before any of it is read.
pub fn read(path: &Path, max_bytes: u64) -> Result<Snapshot, SnapshotError> {
    let io = |op: &'static str| {
        move |source| SnapshotError::Io {
            file: path.to_path_buf(),
            op,
            source,
        }
    };
    let f = std::fs::File::open(path).map_err(io("open it"))?;
    let size = f.metadata().map_err(io("stat it"))?.len();
    if size > max_bytes {
        return Err(SnapshotError::TooLarge {
            file: path.to_path_buf(),
            size,
            max: max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may grow meanwhile: never read more than the limit (+1 to
    // notice).
    f.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io("read it"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(SnapshotError::TooLarge {
            file: path.to_path_buf(),
            size: bytes.len() as u64,
            max: max_bytes,
        });
    }
    decode_from(&bytes, path)
}

/// Writes `s` to `path` atomically: a temporary file in the same
/// directory (mode 0600), fsync, rename over `path`, fsync of the
/// directory. A reader sees the old file or the new one, never a part;
/// after a crash the file is the old or the new one. Returns the bytes
/// written.
pub fn write_atomic(path: &Path, s: &Snapshot) -> Result<u64, SnapshotError> {
    use std::os::unix::fs::OpenOptionsExt;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    let (h, payload) = encode_version(s, CURRENT_VERSION);
    let io = |file: &Path, op: &'static str| {
        let file = file.to_path_buf();
        move |source| SnapshotError::Io { file, op, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| SnapshotError::Io {
            file: path.to_path_buf(),
            op: "write it",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        })?
        .to_string_lossy();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp.{}.{seq}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp, "create a temporary file"))?;
        f.write_all(&h).map_err(io(&tmp, "write"))?;
        f.write_all(&payload).map_err(io(&tmp, "write"))?;
        f.sync_all().map_err(io(&tmp, "fsync"))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(path, "rename the temporary file over it"))?;
        let d = std::fs::File::open(&dir).map_err(io(&dir, "open the directory"))?;
        d.sync_all().map_err(io(&dir, "fsync the directory"))?;
        Ok((h.len() + payload.len()) as u64)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
