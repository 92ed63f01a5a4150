//! A raw AF_PACKET socket that only sends: the handover bridge's way out
//! while the queue's AF_XDP socket cannot be bound yet (see
//! [`bridge`](crate::dataplane::bridge)).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Sends whole Ethernet frames out of one interface, through its qdisc,
/// as AF_XDP's copy mode does. Protocol 0: receives nothing.
pub struct PacketTx {
    fd: OwnedFd,
}

impl PacketTx {
    /// Opens a send-only packet socket bound to interface `ifindex`.
    pub fn open(ifindex: u32) -> io::Result<PacketTx> {
        // SAFETY: plain socket(2) call; a non-negative result is a new fd
        // we own from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by
        // nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = 0;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketTx { fd })
    }

    /// Sends one frame (Ethernet header included); never blocks.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is a valid readable slice for the call's
        // duration; the socket is bound, so no address is needed.
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
