//! The file format: header, versioned payloads, checks, atomic writes.
//! See the module docs of [`super`] for the byte layout and "Versions"
//! for the migration chain: [`current`] holds the current payload and the
//! only full codec; `v1` (and every later frozen version) holds an old
//! payload struct and its upgrade step to the next version.

pub(super) mod current;
mod v1;
mod v2;

use super::Snapshot;
use serde::Deserialize;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// First eight bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"NATGWSNP";
/// The version [`encode`] writes.
pub const CURRENT_VERSION: u16 = 3;
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
// Encoding

/// The payload of `s` in the current version.
fn encode_payload(s: &Snapshot) -> Vec<u8> {
    // Serialising plain structs into a growable Vec cannot fail.
    postcard::to_allocvec(&current::Payload::from_snapshot(s)).expect("postcard encodes into a Vec")
}

/// `p` as a payload of format `version`, downgraded as a writer of that
/// version would have written it (tests write old files with it).
#[cfg(test)]
pub(super) fn payload_as(p: current::Payload, version: u16) -> Vec<u8> {
    let r = match version {
        1 => postcard::to_allocvec(&v1::Payload::downgrade(v2::Payload::downgrade(p))),
        2 => postcard::to_allocvec(&v2::Payload::downgrade(p)),
        CURRENT_VERSION => postcard::to_allocvec(&p),
        v => unreachable!("no test encoder for version {v}"),
    };
    r.expect("postcard encodes into a Vec")
}

/// `s` as a bare payload of the current version, without the file header
/// (HA sync sends these in its own checked datagrams).
pub fn encode_body(s: &Snapshot) -> Vec<u8> {
    encode_payload(s)
}

/// Decodes a bare current-version payload ([`encode_body`]). Never panics,
/// whatever the bytes.
pub fn decode_body(payload: &[u8]) -> Result<Snapshot, String> {
    decode_payload(payload, CURRENT_VERSION)
}

/// Decodes a bare payload of format `version` (an older HA peer's).
/// Never panics, whatever the bytes.
pub fn decode_body_of(payload: &[u8], version: u16) -> Result<Snapshot, String> {
    decode_payload(payload, version)
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

/// The whole file (header and payload) in the current version.
pub fn encode(s: &Snapshot) -> Vec<u8> {
    let p = encode_payload(s);
    let mut h = header(CURRENT_VERSION, &p).to_vec();
    h.extend_from_slice(&p);
    h
}

/// A file of `s` in format `version` (tests write old versions with it).
#[cfg(test)]
pub(super) fn encode_as(s: &Snapshot, version: u16) -> Vec<u8> {
    let p = payload_as(current::Payload::from_snapshot(s), version);
    let mut h = header(version, &p).to_vec();
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

/// The migration chain: an old version's payload is decoded into its own
/// frozen struct and upgraded one version at a time to the current one,
/// which alone is checked and converted into a [`Snapshot`] (see the
/// module docs of [`super`], "Versions").
fn decode_payload(payload: &[u8], version: u16) -> Result<Snapshot, String> {
    let current = match version {
        1 => take_all::<v1::Payload>(payload)?.upgrade().upgrade(),
        2 => take_all::<v2::Payload>(payload)?.upgrade(),
        CURRENT_VERSION => take_all::<current::Payload>(payload)?,
        v => return Err(format!("no decoder for version {v}")),
    };
    current.into_snapshot(version)
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
    write_file(path, s, true)
}

/// Like [`write_atomic`] but without the fsyncs: for a file another
/// process reads at once and nobody needs after a crash (a handover's
/// steps), where an fsync would only lengthen the cut.
pub fn write_transient(path: &Path, s: &Snapshot) -> Result<u64, SnapshotError> {
    write_file(path, s, false)
}

fn write_file(path: &Path, s: &Snapshot, durable: bool) -> Result<u64, SnapshotError> {
    use std::os::unix::fs::OpenOptionsExt;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    let payload = encode_payload(s);
    let h = header(CURRENT_VERSION, &payload);
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
        if durable {
            f.sync_all().map_err(io(&tmp, "fsync"))?;
        }
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(path, "rename the temporary file over it"))?;
        if durable {
            let d = std::fs::File::open(&dir).map_err(io(&dir, "open the directory"))?;
            d.sync_all().map_err(io(&dir, "fsync the directory"))?;
        }
        Ok((h.len() + payload.len()) as u64)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
