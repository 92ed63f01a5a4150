//! Minimal L2/L3 handling for the prototype: MAC rewrite + TTL decrement
//! (incremental IPv4 checksum, RFC 1624) and an ARP responder.

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;

pub enum Verdict {
    /// send out of the other interface
    Forward,
    /// send back out of the interface it came in on (ARP reply)
    Reflect,
    Drop,
}

#[inline]
fn ethertype(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[12], p[13]])
}

/// Decrement TTL and patch the header checksum incrementally.
#[inline]
fn dec_ttl(ip: &mut [u8]) -> bool {
    if ip[8] <= 1 {
        return false;
    }
    // The 16-bit word holding TTL (high byte) and protocol (low byte)
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] -= 1;
    let new = u16::from_be_bytes([ip[8], ip[9]]);
    let hc = u16::from_be_bytes([ip[10], ip[11]]);
    // HC' = ~(~HC + ~m + m')
    let mut sum = (!hc as u32) + (!old as u32) + (new as u32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let hc2 = !(sum as u16);
    ip[10..12].copy_from_slice(&hc2.to_be_bytes());
    true
}

/// Process an IPv4 frame to be sent out of an interface with MAC `out_mac`
/// towards next hop `next_hop_mac`.
#[inline]
pub fn forward_ipv4(p: &mut [u8], out_mac: &[u8; 6], next_hop_mac: &[u8; 6]) -> Verdict {
    if p.len() < 34 || (p[14] >> 4) != 4 {
        return Verdict::Drop;
    }
    if !dec_ttl(&mut p[14..]) {
        return Verdict::Drop; // (a real router sends ICMP time exceeded)
    }
    p[0..6].copy_from_slice(next_hop_mac);
    p[6..12].copy_from_slice(out_mac);
    Verdict::Forward
}

/// Turn an ARP request for `my_ip` into a reply in place.
#[inline]
pub fn arp_reply(p: &mut [u8], my_mac: &[u8; 6], my_ip: [u8; 4]) -> Verdict {
    if p.len() < 42 {
        return Verdict::Drop;
    }
    let a = &p[14..42];
    // htype=1, ptype=0x0800, hlen=6, plen=4, oper=1 (request), target ip = my_ip
    if a[0..8] != [0, 1, 8, 0, 6, 4, 0, 1] || a[24..28] != my_ip {
        return Verdict::Drop;
    }
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&p[22..28]);
    let mut spa = [0u8; 4];
    spa.copy_from_slice(&p[28..32]);
    p[0..6].copy_from_slice(&sha);
    p[6..12].copy_from_slice(my_mac);
    p[21] = 2; // oper = reply
    p[22..28].copy_from_slice(my_mac);
    p[28..32].copy_from_slice(&my_ip);
    p[32..38].copy_from_slice(&sha);
    p[38..42].copy_from_slice(&spa);
    Verdict::Reflect
}

pub fn classify(p: &[u8]) -> u16 {
    if p.len() < 14 { 0 } else { ethertype(p) }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn csum(h: &[u8]) -> u16 {
        let mut s = 0u32;
        for c in h.chunks(2) {
            s += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }
    #[test]
    fn ttl_checksum() {
        for ttl in [2u8, 64, 255] {
            let mut ip = [0x45, 0, 0, 84, 0x12, 0x34, 0x40, 0, ttl, 1, 0, 0, 10, 77, 1, 2, 10, 77, 2, 2];
            let c = csum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            assert!(dec_ttl(&mut ip));
            assert_eq!(csum(&ip), 0, "ttl {ttl}");
        }
    }
}
