//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Rewriting a header never re-sums the packet: every changed 16-bit word
//! is folded into a [`Delta`], and the delta is applied to each checksum
//! that covers the word (IPv4 header, L4 pseudo-header, ICMP body) with
//! RFC 1624 equation 3: `HC' = ~(~HC + ~m + m')`.

/// Ones'-complement sum of `data` (big-endian 16-bit words, odd tail
/// padded with zero) added to `initial`. Not folded.
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    fold64(acc) as u32
}

fn fold64(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Folds a 32-bit partial sum to 16 bits with end-around carry.
pub fn fold(acc: u32) -> u16 {
    fold64(acc as u64)
}

/// The checksum to store for `data` (complement of the folded sum).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// Sum of the TCP/UDP pseudo-header (RFC 793 / 768).
pub fn pseudo_header(src: u32, dst: u32, proto: u8, l4_len: u16) -> u32 {
    (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto as u32 + l4_len as u32
}

/// Accumulated change of 16-bit words covered by a checksum.
///
/// `Delta::default()` means "nothing changed"; applying it is a no-op.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    /// Records that one 16-bit word went from `old` to `new`.
    #[inline]
    pub fn word(&mut self, old: u16, new: u16) {
        // Folded once, when applied: a u64 cannot overflow from 16-bit words.
        self.0 += (!old) as u64 + new as u64;
    }

    /// Records that a 32-bit field (an address) went from `old` to `new`.
    #[inline]
    pub fn addr(&mut self, old: u32, new: u32) {
        self.word((old >> 16) as u16, (new >> 16) as u16);
        self.word(old as u16, new as u16);
    }

    /// Adds another delta (the words it covers are covered here too).
    #[inline]
    pub fn add(&mut self, other: Delta) {
        self.0 += other.0;
    }

    /// True when no word changed (or the changes cancel out).
    pub fn is_zero(self) -> bool {
        // 0xffff is ones'-complement negative zero.
        let f = fold64(self.0);
        f == 0 || f == 0xffff
    }

    /// Applies the delta to a stored checksum (RFC 1624 eqn. 3).
    #[inline]
    pub fn apply(self, csum: u16) -> u16 {
        if self.is_zero() {
            return csum;
        }
        !fold64((!csum) as u64 + self.0)
    }

    /// Like [`Delta::apply`] for a UDP checksum: zero means "no checksum"
    /// and stays zero; a computed zero is sent as 0xffff (RFC 768).
    #[inline]
    pub fn apply_udp(self, csum: u16) -> u16 {
        if csum == 0 {
            return 0;
        }
        match self.apply(csum) {
            0 => 0xffff,
            c => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // IPv4 header from RFC 1071 discussions / Wikipedia's worked example.
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn full_checksum_of_known_header() {
        let mut h = HDR;
        assert_eq!(checksum(&h), 0, "a valid header sums to zero");
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12], 0), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56], 0), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_matches_recompute() {
        let mut h = HDR;
        let old = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let new = 0x0a00_0001u32;
        h[12..16].copy_from_slice(&new.to_be_bytes());
        let mut d = Delta::default();
        d.addr(old, new);
        let inc = d.apply(0xb861);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc, checksum(&h));
    }

    #[test]
    fn delta_that_cancels_is_zero() {
        let mut d = Delta::default();
        d.word(0x1234, 0x4321);
        d.word(0x4321, 0x1234);
        assert!(d.is_zero());
        assert_eq!(d.apply(0xabcd), 0xabcd);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut d = Delta::default();
        d.word(1, 2);
        assert_eq!(d.apply_udp(0), 0);
    }
}
