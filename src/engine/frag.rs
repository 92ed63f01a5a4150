//! Translation of non-first IPv4 fragments.
//!
//! Only the first fragment carries ports, so it is translated with its flow
//! like any packet; the engine then records `(src, dst, proto, IP id)` ->
//! translated addresses here, and later fragments of the same datagram get
//! the same address translation. natgw does not reassemble.
//!
//! A later fragment that arrives before its first fragment (or after the
//! entry expired) gets [`Verdict::HoldFragment`](super::Verdict): the
//! worker keeps the frame as it is (at most `FRAG_HOLD_MAX` per worker,
//! for `FRAG_HOLD_TIME`; see `dataplane/worker.rs`) and runs it again once
//! [`Engine::fragment_ready`](super::Engine::fragment_ready) says the first
//! fragment was translated, whichever worker saw it. What does not fit is
//! dropped as `frag_hold_full`, what waits too long as `frag_timeout`.

use crate::conntrack::Time;
use parking_lot::Mutex;
use std::collections::HashMap;

/// How long a datagram's translation is kept (Linux `ipfrag_time`).
pub const FRAG_TIMEOUT_SECS: u32 = 30;

/// A datagram: (source, destination, protocol, IP id) as received.
pub type FragKey = (u32, u32, u8, u16);
type Key = FragKey;

pub struct FragTable {
    map: Mutex<HashMap<Key, (u32, u32, Time)>>,
    max: usize,
}

impl FragTable {
    pub fn new(max: usize) -> FragTable {
        FragTable {
            map: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// Remembers that fragments of datagram `key` go out as `src -> dst`.
    /// Returns false (and records nothing) when the table is full.
    pub fn record(&self, key: Key, src: u32, dst: u32, now: Time) -> bool {
        let mut m = self.map.lock();
        if m.len() >= self.max && !m.contains_key(&key) {
            m.retain(|_, e| e.2 > now);
            if m.len() >= self.max {
                return false;
            }
        }
        m.insert(key, (src, dst, now.plus_secs(FRAG_TIMEOUT_SECS)));
        true
    }

    /// The translated `(src, dst)` for a later fragment of `key`.
    pub fn lookup(&self, key: Key, now: Time) -> Option<(u32, u32)> {
        let m = self.map.lock();
        m.get(&key).filter(|e| e.2 > now).map(|e| (e.0, e.1))
    }

    pub fn prune(&self, now: Time) {
        self.map.lock().retain(|_, e| e.2 > now);
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
