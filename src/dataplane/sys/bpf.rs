//! natgw's XDP program (bpf/natgw_xdp.c): load, attach, register sockets,
//! park frames while no socket is registered, hand the program over to the
//! next natgw process, detach.
//!
//! # Pinning
//!
//! The program is attached through a BPF link pinned, with all the
//! program's maps, in the interface's pin directory
//! `<bpffs>/natgw/<netns inode>-<ifindex>/` ([`pin_root`]; the inode of
//! the calling thread's network namespace keeps interfaces of the same
//! name in different namespaces apart). The link is pinned as `link`, the
//! maps under their names (`xsks_map`, `stats`, `parked`, `kernel_addrs`,
//! `kernel_ports`) by libbpf (`LIBBPF_PIN_BY_NAME`, `pin_root_path`). The
//! bpffs is /sys/fs/bpf, or /run/natgw/bpffs where `ip netns exec` hides
//! the first (see [`pin_root`]); with neither, [`XdpProg::attach`] mounts
//! one at /sys/fs/bpf; if it cannot, it warns and attaches unpinned (the program then lives
//! exactly as long as the process, and nothing parks across processes).
//!
//! # Adoption
//!
//! If the pin directory already holds a link attached to the interface (a
//! previous natgw released it in a handover, or was killed with `-9`),
//! [`XdpProg::attach`] adopts it: it loads its program reusing the pinned
//! maps (so registrations, counters and parked frames carry over) and
//! swaps it into the link with `bpf_link_update`, atomically: no frame
//! meets an interface without the program. A pinned map that this natgw's
//! program declares differently (another natgw version) is unpinned and
//! created afresh, with a warning: what it held is lost. The attach mode
//! (native/generic) is the link's; a different `native` request only
//! warns. [`XdpProg::adopted`] tells which case happened.
//!
//! # Parking
//!
//! A frame for natgw (IPv4 not for the kernel, ARP) on a receive queue with
//! no AF_XDP socket in `xsks_map` is copied into the BPF queue map
//! `parked` (oldest first, up to [`ParkQueue::MAX_FRAME`] bytes, with its
//! receive time and queue) and dropped. [`XdpProg::unregister`] makes a
//! queue park; [`XdpProg::park_queue`] gives a handle whose
//! [`ParkQueue::pop`] drains the frames, e.g. from the worker of the new
//! process before it reads its socket.
//!
//! # Release vs drop
//!
//! [`XdpProg::release`] (handover) closes this process's descriptors and
//! leaves the pins: the program stays attached and parks every frame until
//! the next natgw adopts it. Dropping an `XdpProg` (a normal stop) removes
//! the pins and the directory and closes the link: the program detaches,
//! no XDP program is left on the interface. If another process has adopted
//! the link meanwhile (it runs another program), drop leaves the pins to
//! that process. A natgw killed with `-9` leaves its pins (the program
//! keeps parking) for the next natgw to adopt.
//!
//! # Stale pins
//!
//! [`remove_stale_pins`] (called at natgw start) removes the pin
//! directories whose link no longer points at a device (the interface or
//! its namespace is gone) or whose link pin cannot be opened (a process
//! died while attaching). A directory is locked (`flock`) while a natgw
//! attaches to it, and the cleanup skips locked directories.
//!
//! [`XdpProg::pass_to_kernel`] names the TCP traffic the program leaves to
//! the kernel: replies to the gateway's health-check sockets (destination
//! one of the gateway's addresses, destination port in
//! `PortRange::HEALTH_CHECK`). Until it is called, nothing passes.

use crate::nat::PortRange;
use libbpf_sys as bpf;
use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

static OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/natgw_xdp.o"));

/// Where natgw's pin directories live (one per interface).
/// Where bpffs is normally mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// A bpffs that `ip netns exec` does not hide (see [`pin_root`]).
pub const BPFFS_RUN: &str = "/run/natgw/bpffs";
const LINK_PIN: &str = "link";

/// Number of counters of [`XdpProg::counters`].
pub const N_COUNTERS: usize = 7;

/// Size of `struct parked` in bpf/natgw_xdp.c: ktime (8), len (4),
/// queue (4), data.
const PARKED_VALUE: usize = 16 + ParkQueue::MAX_FRAME;

/// XDP attach mode actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    Native,
    Generic,
}

/// The program attached to one interface.
pub struct XdpProg {
    obj: *mut bpf::bpf_object,
    link_fd: i32,
    xsks_map_fd: i32,
    stats_map_fd: i32,
    kernel_addrs_fd: i32,
    kernel_ports_fd: i32,
    parked_fd: i32,
    /// The program id the link ran when we attached or adopted it.
    prog_id: u32,
    /// The pin directory, None if attached unpinned.
    pin_dir: Option<PathBuf>,
    adopted: bool,
    pub mode: Attached,
}

// SAFETY: the bpf_object pointer is only used by this value (load happens
// in `attach`, close in `drop`/`release`); libbpf objects are not tied to a
// thread.
unsafe impl Send for XdpProg {}
// SAFETY: the methods taking `&self` only issue map syscalls on fds.
unsafe impl Sync for XdpProg {}

fn check(ret: i32, what: &str) -> io::Result<i32> {
    if ret < 0 {
        let e = io::Error::from_raw_os_error(-ret);
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(ret)
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// A libbpf object, closed on drop unless taken with `into_raw`.
struct Obj(*mut bpf::bpf_object);

impl Obj {
    /// Opens natgw's object; with `pin_root`, its pinned maps live there.
    fn open(name: &str, pin_root: Option<&Path>) -> io::Result<Obj> {
        let oname = CString::new(format!("natgw_{name}")).map_err(io::Error::other)?;
        let root = pin_root.map(cpath).transpose()?;
        // SAFETY: `oo` is a zeroed opts struct with its size set, as libbpf
        // requires; the strings it points to outlive the call (libbpf
        // copies them); OBJ is 'static. The result is checked for null.
        let obj = unsafe {
            let mut oo: bpf::bpf_object_open_opts = std::mem::zeroed();
            oo.sz = std::mem::size_of::<bpf::bpf_object_open_opts>() as _;
            oo.object_name = oname.as_ptr();
            if let Some(r) = &root {
                oo.pin_root_path = r.as_ptr();
            }
            bpf::bpf_object__open_mem(OBJ.as_ptr() as *const _, OBJ.len() as _, &oo)
        };
        if obj.is_null() {
            return Err(io::Error::other(format!(
                "{name}: cannot open natgw's XDP object"
            )));
        }
        Ok(Obj(obj))
    }

    fn load(&self) -> io::Result<()> {
        // SAFETY: self.0 is an opened, not yet loaded object.
        check(
            unsafe { bpf::bpf_object__load(self.0) },
            "loading natgw's XDP program",
        )
        .map(|_| ())
    }

    /// Names of the object's pinned maps (all but the scratch buffer).
    fn pinned_maps(&self) -> Vec<String> {
        let mut out = Vec::new();
        // SAFETY: iterating the maps of a live object; names are
        // NUL-terminated strings owned by the object, copied at once.
        unsafe {
            let mut m = bpf::bpf_object__next_map(self.0, std::ptr::null());
            while !m.is_null() {
                if !bpf::bpf_map__pin_path(m).is_null() {
                    out.push(
                        CStr::from_ptr(bpf::bpf_map__name(m))
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
                m = bpf::bpf_object__next_map(self.0, m);
            }
        }
        out
    }

    /// Pinned maps in `dir` that this object declares differently (type,
    /// key, value, entries, flags): libbpf would refuse to reuse them.
    fn incompatible_pins(&self, dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        // SAFETY: iterating the maps of a live (opened) object; each pinned
        // map fd we open is owned by an OwnedFd; `info` is a zeroed
        // bpf_map_info of the size we pass.
        unsafe {
            let mut m = bpf::bpf_object__next_map(self.0, std::ptr::null());
            while !m.is_null() {
                let name = CStr::from_ptr(bpf::bpf_map__name(m))
                    .to_string_lossy()
                    .into_owned();
                let pinned = !bpf::bpf_map__pin_path(m).is_null();
                let path = dir.join(&name);
                if pinned && path.exists() {
                    let same = obj_get(&path).ok().and_then(|fd| {
                        let mut info: bpf::bpf_map_info = std::mem::zeroed();
                        let mut len = std::mem::size_of::<bpf::bpf_map_info>() as u32;
                        (bpf::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) == 0)
                            .then_some(info)
                    });
                    let ok = same.is_some_and(|i| {
                        i.type_ == bpf::bpf_map__type(m)
                            && i.key_size == bpf::bpf_map__key_size(m)
                            && i.value_size == bpf::bpf_map__value_size(m)
                            && i.max_entries == bpf::bpf_map__max_entries(m)
                            && i.map_flags == bpf::bpf_map__map_flags(m)
                    });
                    if !ok {
                        out.push(name);
                    }
                }
                m = bpf::bpf_object__next_map(self.0, m);
            }
        }
        out
    }

    fn prog_fd(&self) -> i32 {
        // SAFETY: looking up a program of a live object by a static name.
        unsafe {
            let prog = bpf::bpf_object__find_program_by_name(self.0, c"natgw_xdp".as_ptr());
            if prog.is_null() {
                -1
            } else {
                bpf::bpf_program__fd(prog)
            }
        }
    }

    fn map_fd(&self, name: &CStr) -> i32 {
        // SAFETY: looking up a map of a live object by a NUL-terminated name.
        unsafe { bpf::bpf_object__find_map_fd_by_name(self.0, name.as_ptr()) }
    }

    fn into_raw(self) -> *mut bpf::bpf_object {
        let p = self.0;
        std::mem::forget(self);
        p
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        // SAFETY: the object was opened by Obj::open and is closed once
        // (into_raw forgets self). Closing does not remove pins.
        unsafe { bpf::bpf_object__close(self.0) }
    }
}

/// Opens a pinned BPF object (map or link).
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: `c` is a NUL-terminated path; a non-negative result is a new
    // fd that we own.
    let fd = check(
        unsafe { bpf::bpf_obj_get(c.as_ptr()) },
        &format!("opening pin {}", path.display()),
    )?;
    // SAFETY: fd is a freshly opened descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn obj_pin(fd: i32, path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: fd is a live BPF object fd, `c` a NUL-terminated path.
    check(
        unsafe { bpf::bpf_obj_pin(fd, c.as_ptr()) },
        &format!("pinning {}", path.display()),
    )
    .map(|_| ())
}

/// (link type, ifindex for XDP links, program id) of a link.
fn link_info(fd: i32) -> io::Result<(u32, u32, u32)> {
    // SAFETY: `info` is a zeroed bpf_link_info of the size we pass; the
    // kernel fills at most that many bytes. The xdp member of the union is
    // read only for XDP links (and it is plain integers either way).
    unsafe {
        let mut info: bpf::bpf_link_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<bpf::bpf_link_info>() as u32;
        check(
            bpf::bpf_link_get_info_by_fd(fd, &mut info, &mut len),
            "reading a BPF link",
        )?;
        let ifindex = if info.type_ == bpf::BPF_LINK_TYPE_XDP {
            info.__bindgen_anon_1.xdp.ifindex
        } else {
            0
        };
        Ok((info.type_, ifindex, info.prog_id))
    }
}

/// The mode the XDP program on `ifindex` runs in (the calling thread's
/// namespace).
fn query_mode(ifindex: u32) -> Option<Attached> {
    // SAFETY: `o` is a zeroed opts struct with its size set.
    unsafe {
        let mut o: bpf::bpf_xdp_query_opts = std::mem::zeroed();
        o.sz = std::mem::size_of::<bpf::bpf_xdp_query_opts>() as _;
        if bpf::bpf_xdp_query(ifindex as _, 0, &mut o) != 0 {
            return None;
        }
        match o.attach_mode as u32 {
            bpf::XDP_ATTACHED_DRV => Some(Attached::Native),
            bpf::XDP_ATTACHED_SKB => Some(Attached::Generic),
            _ => None,
        }
    }
}

/// Makes sure bpffs is mounted at /sys/fs/bpf (mounting it if not).
fn is_bpffs(p: &str) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == libc::BPF_FS_MAGIC)
}

/// The directory natgw pins under: `natgw/` in the first of [`BPFFS`] and
/// [`BPFFS_RUN`] that is a bpffs. `ip netns exec` (how natgw runs in a
/// network namespace without its own mount namespace set up) mounts a
/// fresh sysfs over /sys, hiding /sys/fs/bpf, but leaves /run as it is:
/// a bpffs at /run/natgw/bpffs (scripts/setup.sh mounts one) is the same
/// for every process, so natgw's run through `ip netns exec` can hand
/// their programs to each other. With neither, it mounts bpffs at
/// /sys/fs/bpf (in the host's mount namespace that is the usual one).
pub fn pin_root() -> io::Result<PathBuf> {
    for base in [BPFFS, BPFFS_RUN] {
        if is_bpffs(base) {
            return Ok(Path::new(base).join("natgw"));
        }
    }
    // SAFETY: all four pointers are NUL-terminated static strings; a null
    // data argument is allowed.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("no bpffs at {BPFFS} or {BPFFS_RUN}, and mounting one at {BPFFS} failed: {e}"),
        ));
    }
    if is_bpffs(BPFFS) {
        Ok(Path::new(BPFFS).join("natgw"))
    } else {
        Err(io::Error::other(format!("{BPFFS} is not bpffs")))
    }
}

/// The pin directory of `ifindex` in the calling thread's namespace.
fn pin_dir(ifindex: u32) -> io::Result<PathBuf> {
    let ino = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    Ok(pin_root()?.join(format!("{ino}-{ifindex}")))
}

/// Creates and locks (flock, exclusive) the pin directory. The lock keeps
/// [`remove_stale_pins`] of another natgw out while we attach.
fn lock_dir(dir: &Path) -> io::Result<File> {
    for _ in 0..5 {
        std::fs::create_dir_all(dir)?;
        let Ok(f) = File::open(dir) else { continue };
        f.lock()?;
        // Removed (by a stale-pin cleanup) between mkdir and lock? Retry.
        match std::fs::metadata(dir) {
            Ok(m) if m.ino() == f.metadata()?.ino() => return Ok(f),
            _ => continue,
        }
    }
    Err(io::Error::other(format!(
        "cannot create pin directory {}",
        dir.display()
    )))
}

/// Removes the pins in `dir` (all of them, or all but the link).
fn clear_dir(dir: &Path, keep_link: bool) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if keep_link && e.file_name() == LINK_PIN {
                continue;
            }
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn remove_dir(dir: &Path) {
    clear_dir(dir, false);
    let _ = std::fs::remove_dir(dir);
}

/// Removes pin directories under [`pin_root`] whose link no longer points
/// at a device (the interface or its namespace is gone: the link's ifindex
/// is 0) or whose link pin cannot be opened; skips directories a natgw is
/// attaching to right now. Returns how many were removed. Called at natgw
/// start.
pub fn remove_stale_pins() -> usize {
    let Ok(rd) = pin_root().and_then(std::fs::read_dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        let Ok(lock) = File::open(&dir) else { continue };
        if lock.try_lock().is_err() {
            continue; // a natgw is attaching right now
        }
        let stale = match obj_get(&dir.join(LINK_PIN)) {
            Err(_) => true,
            Ok(fd) => match link_info(fd.as_raw_fd()) {
                Ok((t, ifindex, _)) => t == bpf::BPF_LINK_TYPE_XDP && ifindex == 0,
                Err(_) => true,
            },
        };
        if stale {
            log::info!("removing stale XDP pins {}", dir.display());
            remove_dir(&dir);
            n += 1;
        }
    }
    n
}

/// A handle on the `parked` queue map: frames that arrived while no socket
/// was registered for their queue. Send (not Sync): give it to the worker
/// that drains it.
pub struct ParkQueue {
    fd: OwnedFd,
    /// One `struct parked`, reused by every pop.
    value: RefCell<Box<[u8]>>,
}

/// What [`ParkQueue::pop`] wrote into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    /// Frame length (bytes at the start of the buffer).
    pub len: usize,
    /// The receive queue the frame arrived on.
    pub queue: u32,
    /// Time since the program parked it (CLOCK_MONOTONIC), nanoseconds.
    pub age_ns: u64,
}

impl ParkQueue {
    /// The longest frame parked (PARK_MAX in bpf/natgw_xdp.c); longer
    /// frames are dropped and counted (counter 6).
    pub const MAX_FRAME: usize = 1536;

    /// Pops the oldest parked frame into `buf` (at least
    /// [`ParkQueue::MAX_FRAME`] bytes); None when the queue is empty.
    /// Allocation-free.
    pub fn pop(&self, buf: &mut [u8]) -> io::Result<Option<Parked>> {
        if buf.len() < Self::MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ParkQueue::pop needs a buffer of {} bytes", Self::MAX_FRAME),
            ));
        }
        let mut v = self.value.borrow_mut();
        // SAFETY: a queue map takes a null key; `v` holds value_size
        // (PARKED_VALUE) writable bytes, checked at creation.
        let r = unsafe {
            bpf::bpf_map_lookup_and_delete_elem(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                v.as_mut_ptr() as *mut _,
            )
        };
        if r == -libc::ENOENT {
            return Ok(None);
        }
        check(r, "popping a parked frame")?;
        let ktime = u64::from_ne_bytes(v[0..8].try_into().expect("8 bytes"));
        let len = u32::from_ne_bytes(v[8..12].try_into().expect("4 bytes")) as usize;
        let queue = u32::from_ne_bytes(v[12..16].try_into().expect("4 bytes"));
        let len = len.min(Self::MAX_FRAME);
        buf[..len].copy_from_slice(&v[16..16 + len]);
        Ok(Some(Parked {
            len,
            queue,
            age_ns: (super::now().0).saturating_sub(ktime),
        }))
    }
}

impl XdpProg {
    /// Loads the program and attaches it to interface `ifindex` (`name` for
    /// messages) of the calling thread's network namespace, pinned (see the
    /// module docs): adopts the pinned link of a previous natgw if there
    /// is one (then the mode is the link's), else attaches afresh.
    /// `native`: Some(true) driver mode only, Some(false) generic only,
    /// None driver mode with a fallback to generic. Without bpffs (and
    /// unable to mount it) it warns and attaches unpinned.
    pub fn attach(name: &str, ifindex: u32, native: Option<bool>) -> io::Result<XdpProg> {
        let dir = pin_dir(ifindex);
        let dir = match dir {
            Ok(d) => d,
            Err(e) => {
                log::warn!(
                    "{name}: XDP program attached unpinned ({e}): it detaches when natgw ends, \
                     frames are not parked across a handover"
                );
                return Self::attach_fresh(name, ifindex, native, None);
            }
        };
        let lock = match lock_dir(&dir) {
            Ok(l) => l,
            Err(e) => {
                log::warn!(
                    "{name}: XDP program attached unpinned ({e}): it detaches when natgw ends, \
                     frames are not parked across a handover"
                );
                return Self::attach_fresh(name, ifindex, native, None);
            }
        };
        let link_path = dir.join(LINK_PIN);
        let existing = if link_path.exists() {
            match obj_get(&link_path).and_then(|fd| link_info(fd.as_raw_fd()).map(|i| (fd, i))) {
                Ok((fd, (t, i, _))) if t == bpf::BPF_LINK_TYPE_XDP && i == ifindex => Some(fd),
                Ok(_) => {
                    log::warn!(
                        "{name}: removing stale XDP pins {} (link detached)",
                        dir.display()
                    );
                    None
                }
                Err(e) => {
                    log::warn!("{name}: removing unusable XDP pins {}: {e}", dir.display());
                    None
                }
            }
        } else {
            None
        };
        let r = match existing {
            Some(link) => Self::adopt(name, ifindex, native, &dir, link),
            None => {
                // Map pins without a link: a natgw died while attaching.
                // Start clean.
                clear_dir(&dir, false);
                Self::attach_fresh(name, ifindex, native, Some(&dir))
            }
        };
        drop(lock);
        r
    }

    /// Takes over the pinned link `link`: our program, the pinned maps.
    fn adopt(
        name: &str,
        ifindex: u32,
        native: Option<bool>,
        dir: &Path,
        link: OwnedFd,
    ) -> io::Result<XdpProg> {
        let mut obj = Obj::open(name, Some(dir))?;
        let bad = obj.incompatible_pins(dir);
        if !bad.is_empty() {
            log::warn!(
                "{name}: pinned XDP maps {bad:?} differ from this natgw's (another version): \
                 recreating them; what they held (parked frames, socket registrations, \
                 counters, kernel addresses) is not carried over"
            );
            for m in &bad {
                let _ = std::fs::remove_file(dir.join(m));
            }
        }
        if let Err(e) = obj.load() {
            log::warn!(
                "{name}: cannot reuse the pinned XDP maps ({e}): recreating all of them; \
                 parked frames and registrations of the old program are not carried over"
            );
            drop(obj);
            for m in Obj::open(name, Some(dir))?.pinned_maps() {
                let _ = std::fs::remove_file(dir.join(m));
            }
            obj = Obj::open(name, Some(dir))?;
            obj.load()?;
        }
        let fds = Fds::of(&obj)?;
        // SAFETY: both fds are live (the link's is owned by `link`, the
        // program's by `obj`); null opts means no flags.
        let r = unsafe { bpf::bpf_link_update(link.as_raw_fd(), fds.prog, std::ptr::null()) };
        check(r, &format!("{name}: taking over the pinned XDP link"))?;
        let (_, _, prog_id) = link_info(link.as_raw_fd())?;
        let mode = query_mode(ifindex).unwrap_or(Attached::Generic);
        match (native, mode) {
            (Some(true), Attached::Generic) | (Some(false), Attached::Native) => log::warn!(
                "{name}: adopted the XDP link in {mode:?} mode; the configured mode applies \
                 only after natgw stops (not hands over)"
            ),
            _ => {}
        }
        log::info!("{name}: adopted the pinned XDP link ({mode:?}), parked frames kept");
        Ok(fds.into_prog(obj, link, prog_id, Some(dir.to_path_buf()), true, mode))
    }

    /// Loads the program (its maps pinned in `dir` if given) and attaches
    /// it through a new link (pinned in `dir` if given).
    fn attach_fresh(
        name: &str,
        ifindex: u32,
        native: Option<bool>,
        dir: Option<&Path>,
    ) -> io::Result<XdpProg> {
        let cleanup = || {
            if let Some(d) = dir {
                remove_dir(d);
            }
        };
        let obj = Obj::open(name, dir)?;
        let r = obj.load().and_then(|_| Fds::of(&obj));
        let fds = match r {
            Ok(f) => f,
            Err(e) => {
                drop(obj);
                cleanup();
                return Err(e);
            }
        };
        let modes: &[(u32, Attached)] = match native {
            Some(true) => &[(bpf::XDP_FLAGS_DRV_MODE, Attached::Native)],
            Some(false) => &[(bpf::XDP_FLAGS_SKB_MODE, Attached::Generic)],
            None => &[
                (bpf::XDP_FLAGS_DRV_MODE, Attached::Native),
                (bpf::XDP_FLAGS_SKB_MODE, Attached::Generic),
            ],
        };
        let mut last = io::Error::other("no XDP mode tried");
        for &(flags, mode) in modes {
            // SAFETY: `lo` is a zeroed opts struct with its size set; the
            // program fd is live (owned by `obj`).
            let link_fd = unsafe {
                let mut lo: bpf::bpf_link_create_opts = std::mem::zeroed();
                lo.sz = std::mem::size_of::<bpf::bpf_link_create_opts>() as _;
                lo.flags = flags;
                bpf::bpf_link_create(fds.prog, ifindex as _, bpf::BPF_XDP, &lo)
            };
            match check(link_fd, &format!("attaching XDP to {name}")) {
                Ok(fd) => {
                    // SAFETY: a fresh link fd owned by nobody else.
                    let link = unsafe { OwnedFd::from_raw_fd(fd) };
                    if let Some(d) = dir
                        && let Err(e) = obj_pin(fd, &d.join(LINK_PIN))
                    {
                        drop(link);
                        drop(obj);
                        cleanup();
                        return Err(e);
                    }
                    let prog_id = link_info(fd).map(|i| i.2).unwrap_or(0);
                    return Ok(fds.into_prog(
                        obj,
                        link,
                        prog_id,
                        dir.map(Path::to_path_buf),
                        false,
                        mode,
                    ));
                }
                Err(_) if link_fd == -libc::EBUSY => {
                    drop(obj);
                    cleanup();
                    return Err(io::Error::other(format!(
                        "{name} already has an XDP program attached (another natgw, or a leftover: `ip link set dev {name} xdp off`)"
                    )));
                }
                Err(e) => last = e,
            }
        }
        drop(obj);
        cleanup();
        Err(last)
    }

    /// True if [`XdpProg::attach`] took over the pinned link of a previous
    /// natgw (rather than attaching afresh).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// True if the link and maps are pinned (they outlive the process on
    /// [`XdpProg::release`] or `kill -9`).
    pub fn pinned(&self) -> bool {
        self.pin_dir.is_some()
    }

    /// The pin directory, if pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Handover: closes this process's descriptors but leaves the pins, so
    /// the program stays attached and parks frames (for queues without a
    /// socket: all of them once this process's sockets are closed) until
    /// the next natgw adopts it. Unpinned, the program detaches (warned).
    pub fn release(mut self) {
        if self.pin_dir.is_none() {
            log::warn!("releasing an unpinned XDP program: it detaches");
        }
        self.pin_dir = None;
        // Drop now only closes.
    }

    /// Stops steering queue `queue` to a socket: from now on its frames
    /// are parked. Not registered is fine.
    pub fn unregister(&self, queue: u32) -> io::Result<()> {
        // SAFETY: the key points to a live u32, the XSKMAP's key size.
        let r =
            unsafe { bpf::bpf_map_delete_elem(self.xsks_map_fd, &queue as *const u32 as *const _) };
        if r == -libc::ENOENT {
            return Ok(());
        }
        check(r, "removing an AF_XDP socket from the XSKMAP").map(|_| ())
    }

    /// A handle to pop the parked frames with, from any thread: its own
    /// descriptor of the `parked` map (it stays valid after this
    /// `XdpProg` is dropped or released).
    pub fn park_queue(&self) -> io::Result<ParkQueue> {
        // SAFETY: F_DUPFD_CLOEXEC on our live map fd returns a new fd (or
        // -1), which we then own.
        let fd = unsafe { libc::fcntl(self.parked_fd, libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ParkQueue {
            fd,
            value: RefCell::new(vec![0u8; PARKED_VALUE].into_boxed_slice()),
        })
    }

    /// Steers queue `queue` to the AF_XDP socket `xsk_fd`.
    pub fn register(&self, queue: u32, xsk_fd: i32) -> io::Result<()> {
        // SAFETY: key and value point to live u32/i32 of the sizes the map
        // was declared with.
        let r = unsafe {
            bpf::bpf_map_update_elem(
                self.xsks_map_fd,
                &queue as *const u32 as *const _,
                &xsk_fd as *const i32 as *const _,
                0,
            )
        };
        check(r, "registering an AF_XDP socket in the XSKMAP").map(|_| ())
    }

    /// Lets TCP to `addrs` (the gateway's own addresses) with a
    /// destination port in `ports` through to the kernel instead of natgw:
    /// the replies to natgw's health checks, which are kernel sockets.
    pub fn pass_to_kernel(&self, addrs: &[u32], ports: PortRange) -> io::Result<()> {
        for &a in addrs {
            let key = a.to_be();
            let one: u8 = 1;
            // SAFETY: key and value point to live values of the sizes the
            // map was declared with (u32 key, u8 value).
            let r = unsafe {
                bpf::bpf_map_update_elem(
                    self.kernel_addrs_fd,
                    &key as *const u32 as *const _,
                    &one as *const u8 as *const _,
                    0,
                )
            };
            check(r, "adding an address to the XDP program's kernel_addrs")?;
        }
        let key = 0u32;
        let range: [u16; 2] = [ports.lo, ports.hi];
        // SAFETY: the value is `struct port_range { __u16 lo, hi; }`: two
        // u16 in this order, 4 bytes, as `range` is.
        let r = unsafe {
            bpf::bpf_map_update_elem(
                self.kernel_ports_fd,
                &key as *const u32 as *const _,
                range.as_ptr() as *const _,
                0,
            )
        };
        check(r, "setting the XDP program's kernel_ports").map(|_| ())
    }

    /// Frames the program handled, summed over CPUs (since the maps were
    /// created: they carry over an adoption):
    ///
    /// | index | frames |
    /// |---|---|
    /// | 0 | redirected to natgw's socket |
    /// | 1 | passed to the kernel |
    /// | 2 | too short for an Ethernet header (passed to the kernel) |
    /// | 3 | health-check replies passed to the kernel (also in 1) |
    /// | 4 | parked (no socket for their queue) |
    /// | 5 | dropped, no socket and the park queue full |
    /// | 6 | dropped, no socket and longer than [`ParkQueue::MAX_FRAME`] |
    pub fn counters(&self) -> [u64; N_COUNTERS] {
        // SAFETY: plain libbpf query with no arguments.
        let ncpu = unsafe { bpf::libbpf_num_possible_cpus() }.max(1) as usize;
        let mut out = [0u64; N_COUNTERS];
        let mut vals = vec![0u64; ncpu];
        for (k, o) in out.iter_mut().enumerate() {
            let key = k as u32;
            // SAFETY: a per-CPU array lookup writes one u64 per possible
            // CPU into `vals`, which has exactly that many.
            let r = unsafe {
                bpf::bpf_map_lookup_elem(
                    self.stats_map_fd,
                    &key as *const u32 as *const _,
                    vals.as_mut_ptr() as *mut _,
                )
            };
            if r == 0 {
                *o = vals.iter().sum();
            }
        }
        out
    }
}

/// The program's and maps' fds of a loaded object (owned by the object).
struct Fds {
    prog: i32,
    xsks_map: i32,
    stats: i32,
    kernel_addrs: i32,
    kernel_ports: i32,
    parked: i32,
}

impl Fds {
    fn of(obj: &Obj) -> io::Result<Fds> {
        let f = Fds {
            prog: obj.prog_fd(),
            xsks_map: obj.map_fd(c"xsks_map"),
            stats: obj.map_fd(c"stats"),
            kernel_addrs: obj.map_fd(c"kernel_addrs"),
            kernel_ports: obj.map_fd(c"kernel_ports"),
            parked: obj.map_fd(c"parked"),
        };
        if [
            f.prog,
            f.xsks_map,
            f.stats,
            f.kernel_addrs,
            f.kernel_ports,
            f.parked,
        ]
        .iter()
        .any(|&fd| fd < 0)
        {
            return Err(io::Error::other(
                "natgw's XDP object lacks its program or a map",
            ));
        }
        Ok(f)
    }

    fn into_prog(
        self,
        obj: Obj,
        link: OwnedFd,
        prog_id: u32,
        pin_dir: Option<PathBuf>,
        adopted: bool,
        mode: Attached,
    ) -> XdpProg {
        use std::os::fd::IntoRawFd;
        XdpProg {
            obj: obj.into_raw(),
            link_fd: link.into_raw_fd(),
            xsks_map_fd: self.xsks_map,
            stats_map_fd: self.stats,
            kernel_addrs_fd: self.kernel_addrs,
            kernel_ports_fd: self.kernel_ports,
            parked_fd: self.parked,
            prog_id,
            pin_dir,
            adopted,
            mode,
        }
    }
}

impl Drop for XdpProg {
    fn drop(&mut self) {
        if let Some(dir) = &self.pin_dir {
            // Another natgw adopted the link since (it runs another
            // program)? Then the pins are its own.
            match link_info(self.link_fd) {
                Ok((_, _, id)) if id != self.prog_id => log::info!(
                    "XDP link {} was taken over by another process: leaving its pins",
                    dir.display()
                ),
                _ => remove_dir(dir),
            }
        }
        // SAFETY: link_fd is ours and closed once; closing the link's last
        // fd (no pin left) detaches the program. The object was opened by
        // `attach` and is closed once; closing does not unpin maps.
        unsafe {
            libc::close(self.link_fd);
            bpf::bpf_object__close(self.obj);
        }
    }
}
