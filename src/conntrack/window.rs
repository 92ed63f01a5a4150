//! TCP window tracking, after Linux conntrack's `tcp_in_window`
//! (`nf_conntrack_proto_tcp.c`, from Guido van Rooij's "Real Stateful TCP
//! Packet Filtering in IP Filter").
//!
//! For each direction the tracker keeps the highest sequence number sent
//! (`end`), the highest the receiver has allowed (`maxend`: its ACK plus
//! its window) and the largest window seen (`maxwin`), with the window
//! scale each side announced in its SYN. A segment is in window when:
//!
//! 1. its first byte is at most `maxend` of its sender (the receiver let
//!    it send that far);
//! 2. its last byte is not older than the sender's `end` minus the
//!    receiver's largest window (not data acknowledged long ago), unless
//!    the receiver has not been seen yet;
//! 3. what it acknowledges was sent (at most the receiver's `end`);
//! 4. what it acknowledges is not older than the largest window (at least
//!    66000 bytes) behind the receiver's `end`.
//!
//! Failing 1-3 is [`Verdict::OutOfWindow`]: the engine drops the segment
//! and counts it (`tcp_out_of_window`); the flow's state and timer do not
//! move, and natgw never answers with a reset of its own. Failing only 4
//! (an ACK delayed past the window, as Linux since 6.1) is
//! [`Verdict::Ignore`]: forwarded, nothing learnt from it.
//!
//! A flow picked up mid-stream (its first segment was no SYN, or it came
//! from a snapshot, a handover or the HA peer) is tracked liberally: its
//! window scales are unknown, so, as Linux does for such flows, no segment
//! is refused for its window. `[gateway] tcp_window = "liberal"` makes
//! every flow so (Linux `nf_conntrack_tcp_be_liberal`).
//!
//! Both directions' state is behind one small per-flow lock bit: the two
//! directions of a flow may be handled by two workers at once. A worker
//! that cannot take it within a few spins lets the segment through
//! unchecked (never a false drop).

use super::state::{Dir, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpState};
use std::sync::atomic::{AtomicU32, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

/// What a TCP segment carries that window tracking needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpSeg {
    pub seq: u32,
    pub ack: u32,
    /// Sequence number after the segment: `seq` + payload + SYN + FIN.
    pub end: u32,
    /// Highest right edge of the SACK blocks, or `ack` when there are none.
    pub sack: u32,
    /// Window field as sent (unscaled).
    pub win: u16,
    pub flags: u8,
    /// Window scale option (SYN segments; 0xff: none).
    pub wscale: u8,
    /// SACK-permitted option (SYN segments).
    pub sack_perm: bool,
}

const NO_WSCALE: u8 = 0xff;
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_WSCALE: u8 = 3;
const OPT_SACK_PERM: u8 = 4;
const OPT_SACK: u8 = 5;
/// Largest window scale (RFC 7323 2.3).
const MAX_WSCALE: u8 = 14;

impl TcpSeg {
    /// Reads a TCP header and its payload (`tcp`: from the TCP header to
    /// the end of the IP datagram). `None` if the header is cut short or
    /// its data offset is wrong (the parser has refused those already).
    pub fn parse(tcp: &[u8]) -> Option<TcpSeg> {
        let h = tcp.get(..20)?;
        let doff = (h[12] >> 4) as usize * 4;
        if doff < 20 || doff > tcp.len() {
            return None;
        }
        let be32 = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let flags = h[13];
        let seq = be32(4);
        let ack = be32(8);
        let mut seg = TcpSeg {
            seq,
            ack,
            end: seq
                .wrapping_add((tcp.len() - doff) as u32)
                .wrapping_add(u32::from(flags & TCP_SYN != 0))
                .wrapping_add(u32::from(flags & TCP_FIN != 0)),
            sack: ack,
            win: u16::from_be_bytes([h[14], h[15]]),
            flags,
            wscale: NO_WSCALE,
            sack_perm: false,
        };
        if doff > 20 {
            seg.options(&tcp[20..doff]);
        }
        Some(seg)
    }

    fn options(&mut self, mut o: &[u8]) {
        let syn = self.flags & TCP_SYN != 0;
        while let [kind, rest @ ..] = o {
            match *kind {
                OPT_EOL => return,
                OPT_NOP => {
                    o = rest;
                    continue;
                }
                _ => {}
            }
            let Some(&len) = rest.first() else { return };
            let len = len as usize;
            if len < 2 || len > o.len() {
                return;
            }
            let body = &o[2..len];
            match (*kind, body.len()) {
                (OPT_WSCALE, 1) if syn => self.wscale = body[0].min(MAX_WSCALE),
                (OPT_SACK_PERM, 0) if syn => self.sack_perm = true,
                (OPT_SACK, n) if n % 8 == 0 && self.flags & TCP_ACK != 0 => {
                    for b in body.chunks_exact(8) {
                        let right = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                        if after(right, self.sack) {
                            self.sack = right;
                        }
                    }
                }
                _ => {}
            }
            o = &o[len..];
        }
    }
}

#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// One direction's window state (Linux `struct ip_ct_tcp_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// Highest sequence number sent + 1.
    pub end: u32,
    /// Highest sequence number the other side allowed (its ACK + window).
    pub maxend: u32,
    /// Largest window (scaled) this side announced; 0: not seen yet.
    pub maxwin: u32,
    pub scale: u8,
    /// [`WSCALE`] and [`SACK_PERM`].
    pub flags: u8,
}

/// The side sent the window scale option in its SYN.
pub const WSCALE: u8 = 1;
/// The side sent SACK-permitted in its SYN.
pub const SACK_PERM: u8 = 2;

/// Linux `MAXACKWINCONST`: the least window an ACK may lag behind.
const MAX_ACK_WIN: u32 = 66_000;

/// What window tracking says of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// In window; the state was updated.
    Accept,
    /// Forward, but learn nothing from it (an overly delayed ACK).
    Ignore,
    /// Out of window: drop and count.
    OutOfWindow,
}

impl Seen {
    /// The state a SYN (or the first segment of a reopened connection)
    /// sets for its sender.
    fn from_syn(seg: &TcpSeg) -> Seen {
        let mut s = Seen {
            end: seg.end,
            maxend: seg.end,
            maxwin: u32::from(seg.win).max(1),
            scale: 0,
            flags: 0,
        };
        s.take_options(seg);
        s
    }

    fn take_options(&mut self, seg: &TcpSeg) {
        if seg.wscale != NO_WSCALE {
            self.flags |= WSCALE;
            self.scale = seg.wscale;
        }
        if seg.sack_perm {
            self.flags |= SACK_PERM;
        }
    }
}

/// The window state of a new flow whose first segment is `seg` (from the
/// original direction): `None` if it is no SYN (picked up mid-stream:
/// tracked liberally).
pub fn initial(seg: &TcpSeg) -> Option<[Seen; 2]> {
    (seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN)
        .then(|| [Seen::from_syn(seg), Seen::default()])
}

/// Checks segment `seg` going in direction `dir` of a flow in TCP state
/// `state` (before the segment), updating `seen` when it is in window.
pub fn check(seen: &mut [Seen; 2], dir: Dir, state: TcpState, seg: &TcpSeg) -> Verdict {
    let syn = seg.flags & TCP_SYN != 0;
    let has_ack = seg.flags & TCP_ACK != 0;
    let rst = seg.flags & TCP_RST != 0;
    // A SYN reopening a finished connection starts it afresh.
    if syn && !has_ack && matches!(state, TcpState::TimeWait | TcpState::Close) {
        seen[dir.index()] = Seen::from_syn(seg);
        seen[1 - dir.index()] = Seen::default();
        return Verdict::Accept;
    }
    let (s, r) = match dir {
        Dir::Orig => {
            let [a, b] = seen;
            (a, b)
        }
        Dir::Reply => {
            let [a, b] = seen;
            (b, a)
        }
    };
    let (mut seq, mut end) = (seg.seq, seg.end);
    let mut ack = seg.ack;
    let mut sack = if r.flags & SACK_PERM != 0 {
        seg.sack
    } else {
        seg.ack
    };
    let win = u32::from(seg.win);

    if s.maxwin == 0 {
        if syn {
            // SYN-ACK answering the SYN (or a SYN of a simultaneous open).
            *s = Seen::from_syn(seg);
            // RFC 7323: scaling only when both sides offered it.
            if s.flags & r.flags & WSCALE == 0 {
                s.scale = 0;
                r.scale = 0;
            }
            if !has_ack {
                return Verdict::Accept;
            }
        } else {
            // This direction's first segment is no SYN: learn from it.
            s.end = end;
            s.maxwin = (win << s.scale).max(1);
            s.maxend = end.wrapping_add(s.maxwin);
            if r.maxwin == 0 {
                r.end = sack;
                r.maxend = sack;
            } else if sack == r.end.wrapping_add(1) {
                // Likely the answer to a keepalive.
                r.end = r.end.wrapping_add(1);
            }
        }
    } else if ((state == TcpState::SynSent && dir == Dir::Orig)
        || (state == TcpState::SynRecv && dir == Dir::Reply))
        && after(end, s.end)
    {
        // A retransmitted SYN (or SYN-ACK) with a new initial sequence.
        s.end = end;
        s.maxend = end;
        s.maxwin = win.max(1);
        s.take_options(seg);
    }

    if !has_ack || (rst && ack == 0) {
        // No ACK (or a stack's RST with ACK set and 0 in it): nothing to check.
        ack = r.end;
        sack = r.end;
    }
    if rst && seq == 0 && state == TcpState::SynSent {
        // A RST answering the SYN.
        seq = s.end;
        end = s.end;
    }

    let max_ack_win = s.maxwin.max(MAX_ACK_WIN);
    let upper = before(seq, s.maxend.wrapping_add(1));
    let lower = r.maxwin == 0 || after(end, s.end.wrapping_sub(r.maxwin).wrapping_sub(1));
    let acked_sent = before(sack, r.end.wrapping_add(1));
    let ack_recent = after(sack, r.end.wrapping_sub(max_ack_win).wrapping_sub(1));
    if !(upper && lower && acked_sent) {
        return Verdict::OutOfWindow;
    }
    if !ack_recent {
        return Verdict::Ignore;
    }

    let win = if syn { win } else { win << s.scale };
    let swin = win.wrapping_add(sack.wrapping_sub(ack));
    if s.maxwin < swin {
        s.maxwin = swin;
    }
    if after(end, s.end) {
        s.end = end;
    }
    if r.maxwin != 0 && after(end, s.maxend) {
        r.maxwin = r.maxwin.wrapping_add(end.wrapping_sub(s.maxend));
    }
    if after(sack.wrapping_add(win), r.maxend.wrapping_sub(1)) {
        r.maxend = sack.wrapping_add(win);
        if win == 0 {
            r.maxend = r.maxend.wrapping_add(1);
        }
    }
    Verdict::Accept
}

/// A flow's window state in the table: both directions, behind a lock bit.
#[derive(Default)]
pub(crate) struct Windows {
    /// Per direction: end, maxend, maxwin.
    words: [[AtomicU32; 3]; 2],
    /// Per direction a byte (scale in the low nibble, flags above); then
    /// [`LIBERAL`] and [`LOCKED`].
    meta: AtomicU32,
}

/// The flow is tracked liberally (picked up mid-stream).
const LIBERAL: u32 = 1 << 16;
const LOCKED: u32 = 1 << 31;
/// Spins before a worker gives up on the lock (and lets the segment by).
const SPINS: u32 = 64;

impl Windows {
    /// Sets the state of a new (or restored) flow: `None` is liberal.
    pub(crate) fn reset(&self, init: Option<[Seen; 2]>) {
        match init {
            Some(seen) => self.store(&seen, 0),
            None => {
                for d in &self.words {
                    for w in d {
                        w.store(0, Relaxed);
                    }
                }
                self.meta.store(LIBERAL, Release);
            }
        }
    }

    fn store(&self, seen: &[Seen; 2], extra: u32) {
        let mut meta = extra;
        for (d, s) in seen.iter().enumerate() {
            self.words[d][0].store(s.end, Relaxed);
            self.words[d][1].store(s.maxend, Relaxed);
            self.words[d][2].store(s.maxwin, Relaxed);
            meta |= (u32::from(s.scale & 0xf) | u32::from(s.flags) << 4) << (8 * d);
        }
        self.meta.store(meta, Release);
    }

    /// Window check of one segment (see [`check`]); a liberal flow, or a
    /// lock held too long by the other direction's worker, accepts.
    #[inline]
    pub(crate) fn check(&self, dir: Dir, state: TcpState, seg: &TcpSeg) -> Verdict {
        let mut m = self.meta.load(Relaxed);
        if m & LIBERAL != 0 {
            return Verdict::Accept;
        }
        let mut spins = 0;
        loop {
            if m & LOCKED == 0 {
                match self
                    .meta
                    .compare_exchange_weak(m, m | LOCKED, Acquire, Relaxed)
                {
                    Ok(_) => break,
                    Err(now) => m = now,
                }
            } else {
                spins += 1;
                if spins > SPINS {
                    return Verdict::Accept;
                }
                std::hint::spin_loop();
                m = self.meta.load(Relaxed);
            }
            if m & LIBERAL != 0 {
                return Verdict::Accept;
            }
        }
        let mut seen = [Seen::default(); 2];
        for (d, s) in seen.iter_mut().enumerate() {
            let byte = (m >> (8 * d)) as u8;
            *s = Seen {
                end: self.words[d][0].load(Relaxed),
                maxend: self.words[d][1].load(Relaxed),
                maxwin: self.words[d][2].load(Relaxed),
                scale: byte & 0xf,
                flags: byte >> 4,
            };
        }
        let v = check(&mut seen, dir, state, seg);
        // Storing the meta word releases the lock.
        self.store(&seen, m & LIBERAL);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: u8, seq: u32, ack: u32, win: u16, len: u32) -> TcpSeg {
        let end = seq
            .wrapping_add(len)
            .wrapping_add(u32::from(flags & TCP_SYN != 0))
            .wrapping_add(u32::from(flags & TCP_FIN != 0));
        TcpSeg {
            seq,
            ack,
            end,
            sack: ack,
            win,
            flags,
            wscale: NO_WSCALE,
            sack_perm: false,
        }
    }

    /// A handshake with window scaling (client 7, server 8), as
    /// `(seen, client isn, server isn)` after it.
    fn established() -> ([Seen; 2], u32, u32) {
        let (c, s) = (1_000_000u32, 4_000_000_000u32);
        let syn = TcpSeg {
            wscale: 7,
            sack_perm: true,
            ..seg(TCP_SYN, c, 0, 64240, 0)
        };
        let mut seen = initial(&syn).unwrap();
        let synack = TcpSeg {
            wscale: 8,
            sack_perm: true,
            ..seg(TCP_SYN | TCP_ACK, s, c + 1, 65160, 0)
        };
        assert_eq!(
            check(&mut seen, Dir::Reply, TcpState::SynSent, &synack),
            Verdict::Accept
        );
        let ack = seg(TCP_ACK, c + 1, s.wrapping_add(1), 2000, 0);
        assert_eq!(
            check(&mut seen, Dir::Orig, TcpState::SynRecv, &ack),
            Verdict::Accept
        );
        assert_eq!((seen[0].scale, seen[1].scale), (7, 8));
        (seen, c, s)
    }

    #[test]
    fn a_connection_passes_and_a_far_segment_does_not() {
        let (mut seen, c, s) = established();
        let s1 = s.wrapping_add(1);
        // 1 MB from the server in 1000-byte segments, acked as it goes.
        for i in 0..1000u32 {
            let data = seg(TCP_ACK, s1.wrapping_add(i * 1000), c + 1, 300, 1000);
            assert_eq!(
                check(&mut seen, Dir::Reply, TcpState::Established, &data),
                Verdict::Accept,
                "segment {i}"
            );
            let ack = seg(TCP_ACK, c + 1, s1.wrapping_add((i + 1) * 1000), 2000, 0);
            assert_eq!(
                check(&mut seen, Dir::Orig, TcpState::Established, &ack),
                Verdict::Accept
            );
        }
        let next = s1.wrapping_add(1_000_000);
        // Half the sequence space away: out of window either way.
        let far = seg(TCP_ACK, next.wrapping_add(1 << 31), c + 1, 300, 10);
        assert_eq!(
            check(&mut seen, Dir::Reply, TcpState::Established, &far),
            Verdict::OutOfWindow
        );
        let rst = seg(TCP_RST, next.wrapping_add(0x4000_0000), 0, 0, 0);
        assert_eq!(
            check(&mut seen, Dir::Reply, TcpState::Established, &rst),
            Verdict::OutOfWindow
        );
        // ACKing data never sent.
        let bad_ack = seg(TCP_ACK, c + 1, next.wrapping_add(5_000_000), 2000, 0);
        assert_eq!(
            check(&mut seen, Dir::Orig, TcpState::Established, &bad_ack),
            Verdict::OutOfWindow
        );
        // An in-window RST still passes.
        let rst = seg(TCP_RST, next, 0, 0, 0);
        assert_eq!(
            check(&mut seen, Dir::Reply, TcpState::Established, &rst),
            Verdict::Accept
        );
    }

    #[test]
    fn retransmissions_keepalives_and_scaled_windows_pass() {
        let (mut seen, c, s) = established();
        let s1 = s.wrapping_add(1);
        // The client's scaled window (2000 << 7 = 256000) lets the server
        // send well past 65535 bytes before an ACK...
        for i in 0..200u32 {
            let data = seg(TCP_ACK, s1.wrapping_add(i * 1000), c + 1, 300, 1000);
            assert_eq!(
                check(&mut seen, Dir::Reply, TcpState::Established, &data),
                Verdict::Accept,
                "segment {i}"
            );
        }
        // ...but not past it.
        let beyond = seg(TCP_ACK, s1.wrapping_add(257_000), c + 1, 300, 1000);
        assert_eq!(
            check(&mut seen, Dir::Reply, TcpState::Established, &beyond),
            Verdict::OutOfWindow
        );
        // A retransmission of the first segment.
        let again = seg(TCP_ACK, s1, c + 1, 300, 1000);
        assert_eq!(
            check(&mut seen, Dir::Reply, TcpState::Established, &again),
            Verdict::Accept
        );
        // A keepalive: one byte before what was sent.
        let ka = seg(TCP_ACK, c, s1, 2000, 0);
        assert_eq!(
            check(&mut seen, Dir::Orig, TcpState::Established, &ka),
            Verdict::Accept
        );
    }

    #[test]
    fn without_both_scale_options_windows_are_unscaled() {
        let c = 10u32;
        let syn = TcpSeg {
            wscale: 7,
            ..seg(TCP_SYN, c, 0, 64240, 0)
        };
        let mut seen = initial(&syn).unwrap();
        let synack = seg(TCP_SYN | TCP_ACK, 500, c + 1, 65535, 0);
        check(&mut seen, Dir::Reply, TcpState::SynSent, &synack);
        assert_eq!((seen[0].scale, seen[1].scale), (0, 0));
    }

    #[test]
    fn a_syn_reopening_a_closed_connection_starts_afresh() {
        let (mut seen, _, _) = established();
        let syn = seg(TCP_SYN, 77, 0, 1000, 0);
        assert_eq!(
            check(&mut seen, Dir::Orig, TcpState::TimeWait, &syn),
            Verdict::Accept
        );
        assert_eq!(seen[0].end, 78);
        assert_eq!(seen[1], Seen::default());
        let synack = seg(TCP_SYN | TCP_ACK, 9, 78, 1000, 0);
        assert_eq!(
            check(&mut seen, Dir::Reply, TcpState::SynSent, &synack),
            Verdict::Accept
        );
    }

    #[test]
    fn a_reset_answering_the_syn_passes() {
        let syn = seg(TCP_SYN, 1000, 0, 1000, 0);
        let mut seen = initial(&syn).unwrap();
        let rst = seg(TCP_RST | TCP_ACK, 0, 1001, 0, 0);
        assert_eq!(
            check(&mut seen, Dir::Reply, TcpState::SynSent, &rst),
            Verdict::Accept
        );
    }

    #[test]
    fn options_are_read_and_bad_ones_do_not_panic() {
        let mut h = vec![0u8; 40];
        h[12] = 10 << 4;
        h[13] = TCP_SYN;
        // MSS, SACK-permitted, timestamps, NOP, window scale 9.
        h[20..40].copy_from_slice(&[
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 9,
        ]);
        let s = TcpSeg::parse(&h).unwrap();
        assert_eq!((s.wscale, s.sack_perm, s.end), (9, true, 1));
        // SACK blocks on an ACK: the highest right edge counts.
        h[13] = TCP_ACK;
        h[8..12].copy_from_slice(&100u32.to_be_bytes());
        h[20..40].copy_from_slice(&[
            1, 1, 5, 18, 0, 0, 0, 200, 0, 0, 1, 44, 0, 0, 0, 150, 0, 0, 0, 190,
        ]);
        let s = TcpSeg::parse(&h).unwrap();
        assert_eq!((s.ack, s.sack), (100, 300));
        // Zero or overlong option lengths end the walk.
        for bad in [[8u8, 0], [8, 200], [3, 1]] {
            h[20..22].copy_from_slice(&bad);
            let _ = TcpSeg::parse(&h);
        }
        assert_eq!(TcpSeg::parse(&h[..19]), None);
    }

    #[test]
    fn a_liberal_flow_accepts_anything() {
        let w = Windows::default();
        w.reset(None);
        let far = seg(TCP_ACK, 123, 456, 1, 1);
        assert_eq!(
            w.check(Dir::Reply, TcpState::Established, &far),
            Verdict::Accept
        );
        let syn = seg(TCP_SYN, 1000, 0, 1000, 0);
        w.reset(initial(&syn));
        let synack = seg(TCP_SYN | TCP_ACK, 5000, 1001, 1000, 0);
        assert_eq!(
            w.check(Dir::Reply, TcpState::SynSent, &synack),
            Verdict::Accept
        );
        let far = seg(TCP_ACK, 5001u32.wrapping_add(1 << 31), 1001, 1000, 1);
        assert_eq!(
            w.check(Dir::Reply, TcpState::SynRecv, &far),
            Verdict::OutOfWindow
        );
    }
}
