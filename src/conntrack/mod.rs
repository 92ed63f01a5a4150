//! Connection tracking: flow entries found from either direction, protocol
//! state close to Linux conntrack, timeouts, limits and bounded expiry.
//!
//! Pure: time is passed in as [`Time`], nothing here reads a clock, opens a
//! socket or starts a thread. The table is shared by all workers.

// The index shards' lock: the only unsafe code outside the data plane's
// system module (three guarded dereferences, see its SAFETY notes).
#[allow(unsafe_code)]
mod brlock;
mod slots;
mod source;
mod state;
mod table;
mod window;

/// This thread's lane, one of [`LANES`] (threads beyond that many share
/// lanes): the index of per-thread state that is summed or shared out
/// rarely (reader counts, free slots, port use).
pub(crate) use brlock::{LANES, lane as thread_lane};
pub use source::{Offender, SourceCounts, TOP as SOURCE_TOP};
pub use state::{
    Dir, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpEvent, TcpState, Time, Timeouts, Transition,
    tcp_transition,
};
pub use table::{
    BORN_UNIT_NS, FlowId, FlowRecord, FlowTable, HOP_TAG_BITS, HOP_TAG_MASK, Hit, InsertError,
    Lookup, MAX_FLOWS_LIMIT, NewFlow, PacketInfo, flags,
};
pub use window::TcpSeg;
