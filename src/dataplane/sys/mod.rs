//! The data plane's system interface, and the only module of natgw where
//! `unsafe` code is allowed: [`bpf`] (the XDP program through libbpf),
//! [`xsk`] (AF_XDP sockets and UMEM frames through xsk-rs), [`packet`] (a
//! send-only AF_PACKET socket) and [`poll_in`].
//! Every `unsafe` block carries a `// SAFETY:` comment naming the
//! invariant it relies on (enforced by `clippy::undocumented_unsafe_blocks`).
//! The rest of this file reads facts about the host's interfaces and CPUs
//! without `unsafe` (sysfs and nix's safe wrappers).

pub mod bpf;
pub mod packet;
pub mod xsk;

use crate::conntrack::Time;
use std::io;

/// Kernel interface index of `name`.
pub fn ifindex(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name)
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("interface `{name}`: {e}")))
}

/// MAC address of `name`.
pub fn mac(name: &str) -> io::Result<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))?;
    let b: Vec<u8> = s
        .trim()
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    b.try_into()
        .map_err(|_| io::Error::other(format!("interface `{name}`: unreadable MAC `{}`", s.trim())))
}

/// Number of receive queues of `name`.
pub fn rx_queues(name: &str) -> io::Result<u32> {
    let n = std::fs::read_dir(format!("/sys/class/net/{name}/queues"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(n.max(1) as u32)
}

/// True if `name` carries IPv4 address `addr`.
pub fn has_ipv4(name: &str, addr: u32) -> io::Result<bool> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addrs.filter(|a| a.interface_name == name).any(|a| {
        a.address
            .and_then(|s| s.as_sockaddr_in().map(|sin| sin.ip()))
            .is_some_and(|ip| u32::from(ip) == addr)
    }))
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(io::Error::from)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// Runs the calling thread under `SCHED_FIFO` at `priority` (1-99): it
/// then preempts every ordinary thread on its CPU as soon as it is woken.
pub fn set_realtime(priority: u32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority as libc::c_int,
    };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0
    // is the calling thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs this process may run on (its affinity mask, e.g. from
/// `taskset`), in ascending order.
pub fn affinity() -> io::Result<Vec<usize>> {
    let set =
        nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).map_err(io::Error::from)?;
    Ok((0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// The online CPUs (`/sys/devices/system/cpu/online`, a CPU list such as
/// `0-3,6`).
pub fn online_cpus() -> io::Result<Vec<usize>> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    parse_cpulist(s.trim())
        .ok_or_else(|| io::Error::other(format!("unreadable CPU list `{}`", s.trim())))
}

/// Parses a kernel CPU list (`0-3,6`; empty = none).
pub fn parse_cpulist(s: &str) -> Option<Vec<usize>> {
    let mut v = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let a: usize = part.parse().ok()?;
                (a, a)
            }
        };
        if b < a || b >= 1 << 16 {
            return None;
        }
        v.extend(a..=b);
    }
    v.sort_unstable();
    v.dedup();
    Some(v)
}

/// Number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Gives SIGPIPE its default action back (end the process quietly), as
/// command-line tools have it: `natgw stats | head` then ends without
/// Rust's "failed printing to stdout" panic. Not for `natgw run`: the
/// daemon must outlive a client that hung up.
pub fn default_sigpipe() {
    // SAFETY: installs the default disposition for one signal; called at
    // the start of a short-lived client process, before any thread runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The monotonic clock (shared by all processes on the host, so a snapshot
/// taken by one process means the same to the next).
pub fn now() -> Time {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC);
    ts.map_or(Time(0), |t| {
        Time(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
    })
}

/// Waits up to `ms` milliseconds until one of `fds` is readable (or has
/// an error); returns the number of ready descriptors (0 on timeout or
/// interruption).
pub fn poll_in(fds: &mut [libc::pollfd], ms: i32) -> usize {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd of
    // the given length for the duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    r.max(0) as usize
}
