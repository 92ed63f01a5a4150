//! Per-protocol connection state and timeouts, modelled on Linux conntrack
//! (`nf_conntrack_proto_tcp.c`, `_udp.c`, `_icmp.c`).

use serde::{Deserialize, Serialize};

/// Nanoseconds on the caller's clock. The core never reads a clock: every
/// call that needs time is handed `now`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    pub const fn from_secs(s: u64) -> Time {
        Time(s * 1_000_000_000)
    }
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms * 1_000_000)
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
    pub fn saturating_sub(self, o: Time) -> Time {
        Time(self.0.saturating_sub(o.0))
    }
    pub fn saturating_add(self, o: Time) -> Time {
        Time(self.0.saturating_add(o.0))
    }
    pub fn plus_secs(self, s: u32) -> Time {
        Time(self.0.saturating_add(s as u64 * 1_000_000_000))
    }
}

/// Which way a packet goes relative to the packet that created its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dir {
    Orig = 0,
    Reply = 1,
}

impl Dir {
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn flip(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
}

/// TCP connection-tracking states (Linux names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum TcpState {
    None = 0,
    SynSent = 1,
    SynRecv = 2,
    Established = 3,
    FinWait = 4,
    CloseWait = 5,
    LastAck = 6,
    TimeWait = 7,
    Close = 8,
    /// Simultaneous open: a SYN seen in both directions.
    SynSent2 = 9,
}

impl TcpState {
    pub const ALL: [TcpState; 10] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];

    pub fn from_u8(v: u8) -> TcpState {
        TcpState::ALL
            .get(v as usize)
            .copied()
            .unwrap_or(TcpState::None)
    }

    /// The name `conntrack -L` prints.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }

    pub fn parse(s: &str) -> Option<TcpState> {
        TcpState::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

/// The TCP segment kinds the state table is indexed by (Linux
/// `get_conntrack_index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEvent {
    Syn = 0,
    SynAck = 1,
    Fin = 2,
    Ack = 3,
    Rst = 4,
    None = 5,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

impl TcpEvent {
    pub fn from_flags(flags: u8) -> TcpEvent {
        if flags & TCP_RST != 0 {
            TcpEvent::Rst
        } else if flags & TCP_SYN != 0 {
            if flags & TCP_ACK != 0 {
                TcpEvent::SynAck
            } else {
                TcpEvent::Syn
            }
        } else if flags & TCP_FIN != 0 {
            TcpEvent::Fin
        } else if flags & TCP_ACK != 0 {
            TcpEvent::Ack
        } else {
            TcpEvent::None
        }
    }
}

/// Outcome of feeding a segment to the state table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    To(TcpState),
    /// Segment accepted, state unchanged (Linux sIG).
    Ignore,
    /// Segment does not fit the state (Linux sIV): counted, state kept.
    Invalid,
}

use TcpState as S;
use Transition::{Ignore as IG, Invalid as IV};
const fn to(s: TcpState) -> Transition {
    Transition::To(s)
}
const SS: Transition = to(S::SynSent);
const SR: Transition = to(S::SynRecv);
const ES: Transition = to(S::Established);
const FW: Transition = to(S::FinWait);
const CW: Transition = to(S::CloseWait);
const LA: Transition = to(S::LastAck);
const TW: Transition = to(S::TimeWait);
const CL: Transition = to(S::Close);
const S2: Transition = to(S::SynSent2);

/// Linux's `tcp_conntracks[dir][event][state]`, columns in [`TcpState`] order:
/// NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK,
/// TIME_WAIT, CLOSE, SYN_SENT2.
const TCP_TABLE: [[[Transition; 10]; 6]; 2] = [
    [
        /* orig syn    */ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
        /* orig synack */ [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
        /* orig fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* orig ack    */ [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
        /* orig rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* orig none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
    [
        /* reply syn    */ [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
        /* reply synack */ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
        /* reply fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* reply ack    */ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
        /* reply rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* reply none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
];

/// Looks up the TCP state table.
pub fn tcp_transition(dir: Dir, ev: TcpEvent, from: TcpState) -> Transition {
    TCP_TABLE[dir.index()][ev as usize][from as usize]
}

/// Timeouts in seconds; defaults are Linux's (`nf_conntrack_*_timeout_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_close_wait: u32,
    pub tcp_last_ack: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    /// UDP flow that has not seen a reply.
    pub udp: u32,
    /// UDP flow that has seen traffic both ways.
    pub udp_stream: u32,
    pub icmp: u32,
    /// Other protocols (only forwarded untranslated).
    pub generic: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            generic: 600,
        }
    }
}

impl Timeouts {
    /// The longest of all the timeouts, in seconds: no flow's timer is
    /// ever set further ahead than this.
    pub fn longest(&self) -> u32 {
        let Timeouts {
            tcp_syn_sent,
            tcp_syn_recv,
            tcp_established,
            tcp_fin_wait,
            tcp_close_wait,
            tcp_last_ack,
            tcp_time_wait,
            tcp_close,
            udp,
            udp_stream,
            icmp,
            generic,
        } = *self;
        [
            tcp_syn_sent,
            tcp_syn_recv,
            tcp_established,
            tcp_fin_wait,
            tcp_close_wait,
            tcp_last_ack,
            tcp_time_wait,
            tcp_close,
            udp,
            udp_stream,
            icmp,
            generic,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    /// The timeout (seconds) a flow of protocol `p` gets on each packet,
    /// given its state word (TCP state in the low byte, then the table's
    /// flags: a UDP flow that has seen a reply gets `udp_stream`).
    pub fn of(&self, p: u8, state_word: u32) -> u32 {
        use crate::packet::proto;
        match p {
            proto::TCP => self.tcp(TcpState::from_u8((state_word & 0xff) as u8)),
            proto::UDP if state_word & super::table::flags::SEEN_REPLY != 0 => self.udp_stream,
            proto::UDP => self.udp,
            proto::ICMP => self.icmp,
            _ => self.generic,
        }
    }

    pub fn tcp(&self, s: TcpState) -> u32 {
        match s {
            TcpState::None | TcpState::SynSent | TcpState::SynSent2 => self.tcp_syn_sent,
            TcpState::SynRecv => self.tcp_syn_recv,
            TcpState::Established => self.tcp_established,
            TcpState::FinWait => self.tcp_fin_wait,
            TcpState::CloseWait => self.tcp_close_wait,
            TcpState::LastAck => self.tcp_last_ack,
            TcpState::TimeWait => self.tcp_time_wait,
            TcpState::Close => self.tcp_close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: TcpState, steps: &[(Dir, u8)]) -> TcpState {
        let mut s = start;
        for &(d, f) in steps {
            if let Transition::To(n) = tcp_transition(d, TcpEvent::from_flags(f), s) {
                s = n;
            }
        }
        s
    }

    #[test]
    fn handshake_data_close() {
        use Dir::*;
        let s = run(
            S::None,
            &[(Orig, TCP_SYN), (Reply, TCP_SYN | TCP_ACK), (Orig, TCP_ACK)],
        );
        assert_eq!(s, S::Established);
        let s = run(s, &[(Orig, TCP_FIN | TCP_ACK)]);
        assert_eq!(s, S::FinWait);
        let s = run(s, &[(Reply, TCP_ACK)]);
        assert_eq!(s, S::CloseWait);
        let s = run(s, &[(Reply, TCP_FIN | TCP_ACK)]);
        assert_eq!(s, S::LastAck);
        let s = run(s, &[(Orig, TCP_ACK)]);
        assert_eq!(s, S::TimeWait);
    }

    #[test]
    fn rst_closes_and_bad_segments_are_invalid() {
        assert_eq!(
            tcp_transition(Dir::Reply, TcpEvent::Rst, S::Established),
            CL
        );
        assert_eq!(tcp_transition(Dir::Orig, TcpEvent::SynAck, S::None), IV);
        assert_eq!(tcp_transition(Dir::Reply, TcpEvent::Ack, S::SynSent), IG);
        assert_eq!(tcp_transition(Dir::Orig, TcpEvent::Syn, S::TimeWait), SS);
    }

    #[test]
    fn linux_default_timeouts() {
        let t = Timeouts::default();
        assert_eq!(t.tcp(S::Established), 432_000);
        assert_eq!(t.tcp(S::SynSent), 120);
        assert_eq!(t.tcp(S::TimeWait), 120);
        assert_eq!(t.tcp(S::Close), 10);
        assert_eq!((t.udp, t.udp_stream, t.icmp), (30, 120, 30));
        assert_eq!(t.longest(), 432_000);
        let g = Timeouts {
            generic: 500_000,
            ..t
        };
        assert_eq!(g.longest(), 500_000);
    }
}
