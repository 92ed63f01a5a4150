//! ARP for IPv4 over Ethernet (RFC 826): parse a frame into an [`Arp`],
//! build requests and replies, write them with their Ethernet header.
//! Pure: byte slices in, values out; nothing here panics on any input.

/// Ethertype of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// ARP operation: request.
pub const ARP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const ARP_REPLY: u16 = 2;
/// Length of an ARP frame with its Ethernet header (no VLAN tag, no padding).
pub const ARP_FRAME_LEN: usize = 42;
/// The shortest Ethernet frame (without FCS): ARP frames are padded to it.
pub const ETH_MIN_LEN: usize = 60;

/// Hardware type Ethernet (1), protocol type IPv4 (0x0800), hardware
/// address length 6, protocol address length 4.
const HEADER: [u8; 6] = [0, 1, 8, 0, 6, 4];

/// An Ethernet/IPv4 ARP packet (no VLAN tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    /// Sender hardware and protocol address.
    pub sha: [u8; 6],
    pub spa: u32,
    /// Target hardware and protocol address.
    pub tha: [u8; 6],
    pub tpa: u32,
}

impl Arp {
    /// A request for `target` from `mac`/`ip`.
    pub fn request(target: u32, mac: [u8; 6], ip: u32) -> Arp {
        Arp {
            op: ARP_REQUEST,
            sha: mac,
            spa: ip,
            tha: [0; 6],
            tpa: target,
        }
    }

    /// The reply to this request, from `mac` (the owner of `self.tpa`).
    pub fn reply(&self, mac: [u8; 6]) -> Arp {
        Arp {
            op: ARP_REPLY,
            sha: mac,
            spa: self.tpa,
            tha: self.sha,
            tpa: self.spa,
        }
    }

    pub fn is_request(&self) -> bool {
        self.op == ARP_REQUEST
    }
}

/// Parses an ARP frame (Ethernet, IPv4 over Ethernet hardware); `None` for
/// anything else or anything short.
pub fn parse(f: &[u8]) -> Option<Arp> {
    let f = f.get(..ARP_FRAME_LEN)?;
    if u16::from_be_bytes([f[12], f[13]]) != ETH_P_ARP {
        return None;
    }
    let a = &f[14..];
    if a[0..6] != HEADER {
        return None;
    }
    let mac = |o: usize| -> [u8; 6] { [a[o], a[o + 1], a[o + 2], a[o + 3], a[o + 4], a[o + 5]] };
    let ip = |o: usize| u32::from_be_bytes([a[o], a[o + 1], a[o + 2], a[o + 3]]);
    Some(Arp {
        op: u16::from_be_bytes([a[6], a[7]]),
        sha: mac(8),
        spa: ip(14),
        tha: mac(18),
        tpa: ip(24),
    })
}

/// Writes `a` with its Ethernet header into `buf`, zero-padded to the
/// Ethernet minimum where `buf` has room; returns the frame length (60, or
/// 42 in a shorter buffer), or `None` if `buf` cannot hold 42 bytes.
pub fn write(buf: &mut [u8], eth_dst: [u8; 6], eth_src: [u8; 6], a: &Arp) -> Option<usize> {
    let f = buf.get_mut(..ARP_FRAME_LEN)?;
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&eth_src);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..20].copy_from_slice(&HEADER);
    f[20..22].copy_from_slice(&a.op.to_be_bytes());
    f[22..28].copy_from_slice(&a.sha);
    f[28..32].copy_from_slice(&a.spa.to_be_bytes());
    f[32..38].copy_from_slice(&a.tha);
    f[38..42].copy_from_slice(&a.tpa.to_be_bytes());
    let padded = ETH_MIN_LEN.min(buf.len());
    buf[ARP_FRAME_LEN..padded].fill(0);
    Some(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request for 10.0.0.1 from 10.0.0.10 (02:00:00:00:00:09), as a
    /// host puts it on the wire (broadcast, 18 bytes of padding).
    const REQUEST: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 9, 0x08, 0x06, // Ethernet
        0, 1, 8, 0, 6, 4, 0, 1, // Ethernet/IPv4, request
        2, 0, 0, 0, 0, 9, 10, 0, 0, 10, // sender
        0, 0, 0, 0, 0, 0, 10, 0, 0, 1, // target
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    #[test]
    fn deconstruct() {
        let a = parse(&REQUEST).unwrap();
        assert_eq!(
            a,
            Arp {
                op: ARP_REQUEST,
                sha: [2, 0, 0, 0, 0, 9],
                spa: 0x0a00_000a,
                tha: [0; 6],
                tpa: 0x0a00_0001,
            }
        );
        assert!(a.is_request());
    }

    #[test]
    fn construct_matches_the_wire() {
        let mut buf = [0xaa; 64];
        let req = Arp::request(0x0a00_0001, [2, 0, 0, 0, 0, 9], 0x0a00_000a);
        assert_eq!(
            write(&mut buf, [0xff; 6], [2, 0, 0, 0, 0, 9], &req),
            Some(60)
        );
        assert_eq!(buf[..60], REQUEST[..]);
        assert_eq!(buf[60..], [0xaa; 4], "nothing written past the padding");
    }

    #[test]
    fn reply_swaps_sender_and_target() {
        let req = parse(&REQUEST).unwrap();
        let rep = req.reply([2, 0, 0, 0, 0, 1]);
        assert_eq!(rep.op, ARP_REPLY);
        assert!(!rep.is_request());
        assert_eq!((rep.sha, rep.spa), ([2, 0, 0, 0, 0, 1], 0x0a00_0001));
        assert_eq!((rep.tha, rep.tpa), ([2, 0, 0, 0, 0, 9], 0x0a00_000a));
        let mut buf = [0u8; 60];
        let n = write(&mut buf, req.sha, rep.sha, &rep).unwrap();
        assert_eq!(parse(&buf[..n]), Some(rep));
    }

    #[test]
    fn short_buffers_and_other_frames_are_refused() {
        assert_eq!(parse(&REQUEST[..41]), None, "truncated");
        assert_eq!(parse(&[]), None);
        let mut ipv4 = REQUEST;
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse(&ipv4), None, "not ARP");
        let mut v6 = REQUEST;
        v6[16..18].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(parse(&v6), None, "not IPv4 over Ethernet");
        let mut small = [0u8; 41];
        assert_eq!(
            write(&mut small, [0; 6], [0; 6], &parse(&REQUEST).unwrap()),
            None
        );
        // Room for the frame but not the padding: unpadded.
        let mut exact = [0u8; 42];
        assert_eq!(
            write(&mut exact, [0; 6], [0; 6], &parse(&REQUEST).unwrap()),
            Some(42)
        );
    }
}
