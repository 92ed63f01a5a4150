//! The sync link's datagrams: a fixed header, a body, and a checksum or
//! an HMAC over both.
//!
//! All integers little-endian. 40 bytes of header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `NGHA` |
//! | 4 | 1 | version ([`VERSION`]) |
//! | 5 | 1 | kind ([`Kind`]) |
//! | 6 | 2 | flags: bit 0 = the trailer is an HMAC-SHA256 (else a CRC-32); others 0 |
//! | 8 | 8 | epoch: the sending process's stream id (its start time, ns since the Unix epoch; a restart, or a stream reset, takes a larger one) |
//! | 16 | 8 | seq: [`Kind::Data`], [`Kind::BulkStart`], [`Kind::BulkEnd`]: the datagram's sequence number (1, 2, ... per epoch); [`Kind::Alive`]: the next one the sender will use |
//! | 24 | 8 | a: [`Kind::Ack`]: every seq up to this one is applied; [`Kind::Nack`]: first missing seq; [`Kind::BulkEnd`]: flows in the bulk |
//! | 32 | 4 | b: [`Kind::Nack`]: how many missing from `a` on; [`Kind::Alive`]: bit 0 active (master), bit 1 in sync |
//! | 36 | 2 | body length |
//! | 38 | 2 | reserved, 0 |
//! | 40 | n | body: [`Kind::Data`] only, a snapshot payload ([`crate::snapshot::encode_body`]) |
//! | 40+n | 4 or 32 | CRC-32 (IEEE) of bytes 0..40+n, or HMAC-SHA256 of them with the configured key |
//!
//! A receiver with a key accepts only HMAC datagrams (a CRC one is
//! refused as unauthenticated); one without a key accepts only CRC ones.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const MAGIC: [u8; 4] = *b"NGHA";
/// 2: the bodies carry snapshot format 3 (flows with their age). What
/// natgw sends.
pub const VERSION: u8 = 2;
/// The oldest version natgw takes (1: bodies in snapshot format 2), so
/// an upgraded standby keeps in sync with an active node not yet
/// upgraded. An older natgw refuses this one's datagrams (`bad_version`).
pub const OLDEST_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 40;
const FLAG_HMAC: u16 = 1;
const CRC_LEN: usize = 4;
const MAC_LEN: usize = 32;

/// What a datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Flow changes (sequenced).
    Data = 1,
    /// Cumulative acknowledgement.
    Ack = 2,
    /// A gap: please resend `b` datagrams from `a`.
    Nack = 3,
    /// Heartbeat: role, sync state, next sequence number.
    Alive = 4,
    /// Please send me everything (bulk resync).
    Resync = 5,
    /// A bulk resync begins (sequenced).
    BulkStart = 6,
    /// A bulk resync is complete (sequenced).
    BulkEnd = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Data,
            2 => Kind::Ack,
            3 => Kind::Nack,
            4 => Kind::Alive,
            5 => Kind::Resync,
            6 => Kind::BulkStart,
            7 => Kind::BulkEnd,
            _ => return None,
        })
    }

    /// True for the kinds that take a sequence number (and are resent).
    pub fn sequenced(self) -> bool {
        matches!(self, Kind::Data | Kind::BulkStart | Kind::BulkEnd)
    }
}

/// A datagram's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub epoch: u64,
    pub seq: u64,
    pub a: u64,
    pub b: u32,
}

impl Header {
    pub fn new(kind: Kind, epoch: u64) -> Header {
        Header {
            kind,
            epoch,
            seq: 0,
            a: 0,
            b: 0,
        }
    }
}

/// How datagrams are signed: a CRC-32, or an HMAC-SHA256 with a key.
#[derive(Clone)]
pub enum Auth {
    Crc,
    Hmac(Vec<u8>),
}

impl Auth {
    fn trailer_len(&self) -> usize {
        match self {
            Auth::Crc => CRC_LEN,
            Auth::Hmac(_) => MAC_LEN,
        }
    }

    /// Bytes a datagram adds around its body.
    pub fn overhead(&self) -> usize {
        HEADER_LEN + self.trailer_len()
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Why a datagram was refused (each is counted by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("shorter than a header")]
    Short,
    #[error("not a natgw sync datagram (bad magic)")]
    Magic,
    #[error("sync format version this natgw does not speak")]
    Version,
    #[error("unknown kind or flags, or reserved bits set")]
    Malformed,
    #[error("length does not match the body length field")]
    Length,
    #[error("checksum mismatch")]
    Checksum,
    #[error("authentication failed (HMAC missing, or wrong)")]
    Auth,
}

impl WireError {
    /// Counter name in `natgw ha status`.
    pub fn name(self) -> &'static str {
        match self {
            WireError::Short => "short",
            WireError::Magic => "bad_magic",
            WireError::Version => "bad_version",
            WireError::Malformed => "malformed",
            WireError::Length => "bad_length",
            WireError::Checksum => "bad_checksum",
            WireError::Auth => "bad_auth",
        }
    }
    pub const ALL: [WireError; 7] = [
        WireError::Short,
        WireError::Magic,
        WireError::Version,
        WireError::Malformed,
        WireError::Length,
        WireError::Checksum,
        WireError::Auth,
    ];
}

/// The datagram of `h` and `body`, signed per `auth`. `body` must fit the
/// 16-bit length field (the sync thread never builds more than a path MTU).
pub fn encode(h: &Header, body: &[u8], auth: &Auth) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("sync body fits a datagram");
    let mut v = Vec::with_capacity(HEADER_LEN + body.len() + auth.trailer_len());
    v.extend_from_slice(&MAGIC);
    v.push(VERSION);
    v.push(h.kind as u8);
    let flags = match auth {
        Auth::Crc => 0,
        Auth::Hmac(_) => FLAG_HMAC,
    };
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&h.epoch.to_le_bytes());
    v.extend_from_slice(&h.seq.to_le_bytes());
    v.extend_from_slice(&h.a.to_le_bytes());
    v.extend_from_slice(&h.b.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(body);
    match auth {
        Auth::Crc => v.extend_from_slice(&crc32fast::hash(&v).to_le_bytes()),
        Auth::Hmac(key) => {
            let mut m = mac(key);
            m.update(&v);
            v.extend_from_slice(&m.finalize().into_bytes());
        }
    }
    v
}

fn le<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// The version of a datagram [`decode`] took.
pub fn version_of(buf: &[u8]) -> u8 {
    buf.get(4).copied().unwrap_or(0)
}

/// Checks and splits a received datagram. Never panics, whatever the bytes.
pub fn decode<'a>(buf: &'a [u8], auth: &Auth) -> Result<(Header, &'a [u8]), WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::Short);
    }
    if buf[0..4] != MAGIC {
        return Err(WireError::Magic);
    }
    if !(OLDEST_VERSION..=VERSION).contains(&buf[4]) {
        return Err(WireError::Version);
    }
    let kind = Kind::from_u8(buf[5]).ok_or(WireError::Malformed)?;
    let flags = u16::from_le_bytes(le(buf, 6));
    if flags & !FLAG_HMAC != 0 || buf[38..40] != [0, 0] {
        return Err(WireError::Malformed);
    }
    let len = u16::from_le_bytes(le(buf, 36)) as usize;
    let signed = HEADER_LEN + len;
    let want_hmac = matches!(auth, Auth::Hmac(_));
    if (flags & FLAG_HMAC != 0) != want_hmac {
        return Err(WireError::Auth);
    }
    if buf.len() != signed + auth.trailer_len() {
        return Err(WireError::Length);
    }
    let (data, trailer) = buf.split_at(signed);
    match auth {
        Auth::Crc => {
            if crc32fast::hash(data).to_le_bytes() != trailer {
                return Err(WireError::Checksum);
            }
        }
        Auth::Hmac(key) => {
            let mut m = mac(key);
            m.update(data);
            m.verify_slice(trailer).map_err(|_| WireError::Auth)?;
        }
    }
    if kind != Kind::Data && len != 0 {
        return Err(WireError::Malformed);
    }
    let h = Header {
        kind,
        epoch: u64::from_le_bytes(le(buf, 8)),
        seq: u64::from_le_bytes(le(buf, 16)),
        a: u64::from_le_bytes(le(buf, 24)),
        b: u32::from_le_bytes(le(buf, 32)),
    };
    Ok((h, &data[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> Header {
        Header {
            kind: Kind::Data,
            epoch: 7,
            seq: 42,
            a: 3,
            b: 9,
        }
    }

    #[test]
    fn round_trip_with_crc_and_hmac() {
        for auth in [Auth::Crc, Auth::Hmac(b"secret".to_vec())] {
            let d = encode(&h(), b"body", &auth);
            assert_eq!(d.len(), auth.overhead() + 4);
            let (hh, body) = decode(&d, &auth).unwrap();
            assert_eq!(hh, h());
            assert_eq!(body, b"body");
        }
    }

    #[test]
    fn every_damage_is_refused_by_name() {
        let crc = Auth::Crc;
        let d = encode(&h(), b"body", &crc);
        assert_eq!(decode(&d[..10], &crc), Err(WireError::Short));
        assert_eq!(decode(&d[..d.len() - 1], &crc), Err(WireError::Length));
        let mut x = d.clone();
        x[0] = b'X';
        assert_eq!(decode(&x, &crc), Err(WireError::Magic));
        for v in [0, OLDEST_VERSION - 1, VERSION + 1] {
            let mut x = d.clone();
            x[4] = v;
            assert_eq!(decode(&x, &crc), Err(WireError::Version));
        }
        let mut x = d.clone();
        x[5] = 99;
        assert_eq!(decode(&x, &crc), Err(WireError::Malformed));
        let mut x = d.clone();
        x[41] ^= 1;
        assert_eq!(decode(&x, &crc), Err(WireError::Checksum));
        // A body on a kind that has none, correctly checksummed.
        let a = encode(&Header::new(Kind::Ack, 1), b"x", &crc);
        assert_eq!(decode(&a, &crc), Err(WireError::Malformed));
        // Keyed receiver: CRC datagrams, wrong keys and tampering refused.
        let key = Auth::Hmac(b"k1".to_vec());
        assert_eq!(decode(&d, &key), Err(WireError::Auth));
        let other = encode(&h(), b"body", &Auth::Hmac(b"k2".to_vec()));
        assert_eq!(decode(&other, &key), Err(WireError::Auth));
        let mut good = encode(&h(), b"body", &key);
        assert!(decode(&good, &key).is_ok());
        good[20] ^= 1;
        assert_eq!(decode(&good, &key), Err(WireError::Auth));
        assert_eq!(decode(&encode(&h(), b"", &key), &crc), Err(WireError::Auth));
    }
}
