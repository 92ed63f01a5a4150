//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Rewriting a header never re-sums the packet: every changed 16-bit word
//! is folded into a [`Delta`], and the delta is applied to each checksum
//! that covers the word (IPv4 header, L4 pseudo-header, ICMP body) with
//! RFC 1624 equation 3: `HC' = ~(~HC + ~m + m')`.
//!
//! Zero has two ones'-complement forms, and equation 3 can never yield
//! 0xffff (the complement of +0). That is right whenever the covered data
//! has a non-zero word: its sum is then never +0, so the checksum computed
//! from scratch is never 0xffff (RFC 1624 section 3). IPv4 headers (version
//! byte) and TCP/UDP (protocol number in the pseudo-header) always have one.
//! ICMP has no pseudo-header: an echo reply with id 0, seq 0 and an empty
//! or all-zero payload sums to +0, and its only valid checksum is 0xffff
//! (a stored 0x0000 makes the receiver's sum +0, not all ones). Checksums
//! without a pseudo-header therefore go through [`Delta::apply_unpseudo`].

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

/// Folds a 64-bit partial sum to 16 bits with end-around carry: two
/// halving steps, each an add whose carry is added back (it cannot carry
/// again: a sum that carried is at most all ones minus one).
#[inline]
pub fn fold64(acc: u64) -> u16 {
    let (s, c) = (acc as u32).overflowing_add((acc >> 32) as u32);
    let s = s + c as u32;
    let (t, c) = (s as u16).overflowing_add((s >> 16) as u16);
    t + c as u16
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

    /// Applies the delta to a stored checksum (RFC 1624 eqn. 3). Exact for
    /// data that always has a non-zero word (IPv4 header, TCP with its
    /// pseudo-header); ICMP uses [`Delta::apply_unpseudo`], UDP
    /// [`Delta::apply_udp`].
    #[inline]
    pub fn apply(self, csum: u16) -> u16 {
        // Folded once: the zero test and the update share it.
        let f = fold64(self.0);
        if f == 0 || f == 0xffff {
            return csum;
        }
        // Two 16-bit values: one end-around carry step folds them.
        let (s, c) = (!csum).overflowing_add(f);
        !(s + c as u16)
    }

    /// [`Delta::apply`] for a checksum without a pseudo-header (ICMP), whose
    /// covered bytes may all be zero. `covered` is the data the checksum
    /// covers as far as it is present, already rewritten; the two bytes at
    /// `at` are the checksum field itself and are not looked at. When
    /// equation 3 gives 0x0000 and every other covered byte is zero, the
    /// sum is +0 and the checksum must be 0xffff (what a from-scratch
    /// computation gives); otherwise the result of equation 3 stands.
    /// Only a 0x0000 result costs a scan. (If `covered` is only the start
    /// of the data, 0xffff still verifies: with a sum of -0 both forms do.)
    #[inline]
    pub fn apply_unpseudo(self, csum: u16, covered: &[u8], at: usize) -> u16 {
        match self.apply(csum) {
            0 if all_zero_but(covered, at) => 0xffff,
            c => c,
        }
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

/// True if every byte of `b` outside `b[at..at + 2]` is zero.
fn all_zero_but(b: &[u8], at: usize) -> bool {
    b.iter()
        .enumerate()
        .all(|(i, &x)| x == 0 || i == at || i == at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // IPv4 header from RFC 1071 discussions / Wikipedia's worked example.
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    /// The fixed-step fold agrees with folding until nothing carries, on
    /// the largest sums and on pseudo-random ones.
    #[test]
    fn fold64_matches_folding_until_no_carry() {
        let slow = |mut a: u64| {
            while a >> 16 != 0 {
                a = (a & 0xffff) + (a >> 16);
            }
            a as u16
        };
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let edges = [
            0,
            0xffff,
            0x10000,
            0x1_0001,
            0x1_fffe,
            0xffff_ffff,
            0x1_ffff_fffe,
            u64::MAX,
        ];
        for a in edges.into_iter().chain((0..100_000).map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> (x % 48)
        })) {
            assert_eq!(fold64(a), slow(a), "{a:#x}");
        }
    }

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

    /// An echo request (type 8, id 0, seq 0, empty payload) becomes a reply:
    /// the covered data sums to +0, and only 0xffff verifies.
    #[test]
    fn delta_to_data_summing_to_zero() {
        let mut m = [8u8, 0, 0, 0, 0, 0, 0, 0];
        let c = checksum(&m);
        assert_eq!(c, 0xf7ff);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut d = Delta::default();
        d.word(0x0800, 0x0000);
        m[0] = 0;
        let inc = d.apply_unpseudo(c, &m, 2);
        m[2..4].copy_from_slice(&[0, 0]);
        // From scratch: the sum is +0, so ~0.
        assert_eq!(inc, 0xffff);
        assert_eq!(inc, checksum(&m));
        // Receiver's check: the sum over everything must be all ones.
        m[2..4].copy_from_slice(&inc.to_be_bytes());
        assert_eq!(fold(sum(&m, 0)), 0xffff);

        // All-zero data after a change that cancels out, from a stored 0x0000
        // (valid before: the old data was non-zero and summed to -0).
        let mut m = [0xffu8, 0xff, 0, 0];
        assert_eq!(checksum(&m), 0x0000);
        let mut d = Delta::default();
        d.word(0xffff, 0x0000); // ~0xffff + 0 = 0: the delta is zero
        assert!(d.is_zero());
        m[0] = 0;
        m[1] = 0;
        assert_eq!(d.apply_unpseudo(0x0000, &m, 2), 0xffff);
    }

    /// Non-zero data summing to -0: 0x0000, as from scratch (RFC 1624).
    #[test]
    fn delta_to_data_summing_to_negative_zero() {
        // 0x1234 + 0xedcb = 0xffff after the change.
        let mut m = [0x12u8, 0x34, 0, 0, 0x00, 0x01];
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut d = Delta::default();
        d.word(0x0001, 0xedcb);
        m[4..6].copy_from_slice(&[0xed, 0xcb]);
        let inc = d.apply_unpseudo(c, &m, 2);
        m[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(inc, 0x0000);
        assert_eq!(inc, checksum(&m));
        assert_eq!(inc, d.apply(c));
    }
}
