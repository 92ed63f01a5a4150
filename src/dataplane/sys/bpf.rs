//! natgw's XDP program (bpf/natgw_xdp.c): load, attach, register sockets,
//! detach. The program is attached through a BPF link, so closing the link
//! (on drop, on exit, even on `kill -9`) detaches it: no XDP program is
//! left on an interface after natgw ends.
//!
//! [`XdpProg::pass_to_kernel`] names the TCP traffic the program leaves to
//! the kernel: replies to the gateway's health-check sockets (destination
//! one of the gateway's addresses, destination port in
//! `PortRange::HEALTH_CHECK`). Until it is called, nothing passes.

use crate::nat::PortRange;
use libbpf_sys as bpf;
use std::ffi::CString;
use std::io;

static OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/natgw_xdp.o"));

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
    pub mode: Attached,
}

// SAFETY: the bpf_object pointer is only used by this value (load happens
// in `attach`, close in `drop`); libbpf objects are not tied to a thread.
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

impl XdpProg {
    /// Loads the program and attaches it to interface `ifindex` (`name` for
    /// messages). `native`: Some(true) driver mode only, Some(false) generic
    /// only, None driver mode with a fallback to generic.
    pub fn attach(name: &str, ifindex: u32, native: Option<bool>) -> io::Result<XdpProg> {
        let oname = CString::new(format!("natgw_{name}")).map_err(io::Error::other)?;
        // SAFETY: `oo` is a zeroed opts struct with its size set, as libbpf
        // requires; OBJ outlives the object (it is 'static); every pointer
        // libbpf returns is checked before use, and the object is closed on
        // every error path (or by Drop).
        unsafe {
            let mut oo: bpf::bpf_object_open_opts = std::mem::zeroed();
            oo.sz = std::mem::size_of::<bpf::bpf_object_open_opts>() as _;
            oo.object_name = oname.as_ptr();
            let obj = bpf::bpf_object__open_mem(OBJ.as_ptr() as *const _, OBJ.len() as _, &oo);
            if obj.is_null() {
                return Err(io::Error::other(format!(
                    "{name}: cannot open natgw's XDP object"
                )));
            }
            if let Err(e) = check(bpf::bpf_object__load(obj), "loading natgw's XDP program") {
                bpf::bpf_object__close(obj);
                return Err(e);
            }
            let prog = bpf::bpf_object__find_program_by_name(obj, c"natgw_xdp".as_ptr());
            let prog_fd = if prog.is_null() {
                -1
            } else {
                bpf::bpf_program__fd(prog)
            };
            let xsks_map_fd = bpf::bpf_object__find_map_fd_by_name(obj, c"xsks_map".as_ptr());
            let stats_map_fd = bpf::bpf_object__find_map_fd_by_name(obj, c"stats".as_ptr());
            let kernel_addrs_fd =
                bpf::bpf_object__find_map_fd_by_name(obj, c"kernel_addrs".as_ptr());
            let kernel_ports_fd =
                bpf::bpf_object__find_map_fd_by_name(obj, c"kernel_ports".as_ptr());
            if prog_fd < 0 || xsks_map_fd < 0 || kernel_addrs_fd < 0 || kernel_ports_fd < 0 {
                bpf::bpf_object__close(obj);
                return Err(io::Error::other(
                    "natgw's XDP object lacks its program or map",
                ));
            }
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
                let mut lo: bpf::bpf_link_create_opts = std::mem::zeroed();
                lo.sz = std::mem::size_of::<bpf::bpf_link_create_opts>() as _;
                lo.flags = flags;
                let link_fd = bpf::bpf_link_create(prog_fd, ifindex as _, bpf::BPF_XDP, &lo);
                match check(link_fd, &format!("attaching XDP to {name}")) {
                    Ok(fd) => {
                        return Ok(XdpProg {
                            obj,
                            link_fd: fd,
                            xsks_map_fd,
                            stats_map_fd,
                            kernel_addrs_fd,
                            kernel_ports_fd,
                            mode,
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) || link_fd == -libc::EBUSY => {
                        bpf::bpf_object__close(obj);
                        return Err(io::Error::other(format!(
                            "{name} already has an XDP program attached (another natgw, or a leftover: `ip link set dev {name} xdp off`)"
                        )));
                    }
                    Err(e) => last = e,
                }
            }
            bpf::bpf_object__close(obj);
            Err(last)
        }
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

    /// Frames the program [redirected to natgw, passed to the kernel, too
    /// short, health-check replies passed to the kernel (also in the
    /// second)].
    pub fn counters(&self) -> [u64; 4] {
        // SAFETY: plain libbpf query with no arguments.
        let ncpu = unsafe { bpf::libbpf_num_possible_cpus() }.max(1) as usize;
        let mut out = [0u64; 4];
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

impl Drop for XdpProg {
    fn drop(&mut self) {
        // SAFETY: link_fd is ours and closed once; closing the link's last
        // fd detaches the program. The object was opened by `attach`.
        unsafe {
            libc::close(self.link_fd);
            bpf::bpf_object__close(self.obj);
        }
    }
}
