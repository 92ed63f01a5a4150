//! Loads our own XDP program (bpf/natgw_xdp.c) with libbpf and attaches it
//! through a bpf_link, so it is detached automatically when the link fd is
//! closed (normal exit, panic, or even SIGKILL).
use std::{ffi::CString, io, ptr};

use libbpf_sys as bpf;

static OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/natgw_xdp.o"));

pub struct XdpProg {
    obj: *mut bpf::bpf_object,
    link_fd: i32,
    xsks_map_fd: i32,
    stats_map_fd: i32,
    #[allow(dead_code)]
    pub ifindex: u32,
}

fn errno_res(ret: i32, what: &str) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::new(
            io::Error::from_raw_os_error(-ret).kind(),
            format!("{what}: {}", io::Error::from_raw_os_error(-ret)),
        ))
    } else {
        Ok(ret)
    }
}

pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).unwrap();
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { Err(io::Error::last_os_error()) } else { Ok(idx) }
}

impl XdpProg {
    /// miss_action: libc XDP action used when xsks_map[rx_queue] is empty
    /// (2 = XDP_PASS, 1 = XDP_DROP). skb_mode selects generic XDP.
    pub fn load_and_attach(ifname: &str, miss_action: u32, skb_mode: bool, force: bool) -> io::Result<Self> {
        let ifindex = ifindex(ifname)?;
        // SAFETY: libbpf is called as documented: the option structs are
        // zeroed and sized, every name is a NUL-terminated string that
        // outlives its call, `obj` is checked for null and closed on every
        // error path, and the .rodata value is read within its reported size.
        unsafe {
            let name = CString::new(format!("natgw_{ifname}")).unwrap();
            let mut oo: bpf::bpf_object_open_opts = std::mem::zeroed();
            oo.sz = std::mem::size_of::<bpf::bpf_object_open_opts>() as _;
            oo.object_name = name.as_ptr();
            let obj = bpf::bpf_object__open_mem(OBJ.as_ptr() as *const _, OBJ.len() as _, &oo);
            if obj.is_null() {
                return Err(io::Error::last_os_error());
            }
            // Patch `volatile const __u32 miss_action` in .rodata before load.
            let rodata =
                bpf::bpf_object__find_map_by_name(obj, c".rodata".as_ptr());
            if rodata.is_null() {
                bpf::bpf_object__close(obj);
                return Err(io::Error::other(".rodata map not found"));
            }
            let mut sz: bpf::size_t = 0;
            let cur = bpf::bpf_map__initial_value(rodata, &mut sz) as *mut u8;
            if cur.is_null() || (sz as usize) < 4 {
                bpf::bpf_object__close(obj);
                return Err(io::Error::other(".rodata initial value missing"));
            }
            let mut buf = std::slice::from_raw_parts(cur, sz as usize).to_vec();
            buf[..4].copy_from_slice(&miss_action.to_ne_bytes()); // miss_action is the only rodata var
            errno_res(
                bpf::bpf_map__set_initial_value(rodata, buf.as_ptr() as *const _, buf.len() as _),
                "set .rodata",
            )?;
            if let Err(e) = errno_res(bpf::bpf_object__load(obj), "bpf_object__load") {
                bpf::bpf_object__close(obj);
                return Err(e);
            }
            let prog = bpf::bpf_object__find_program_by_name(obj, c"natgw_xdp".as_ptr());
            let prog_fd = bpf::bpf_program__fd(prog);
            let xsks_map_fd = bpf::bpf_object__find_map_fd_by_name(obj, c"xsks_map".as_ptr());
            let stats_map_fd = bpf::bpf_object__find_map_fd_by_name(obj, c"stats".as_ptr());
            let mut lo: bpf::bpf_link_create_opts = std::mem::zeroed();
            lo.sz = std::mem::size_of::<bpf::bpf_link_create_opts>() as _;
            lo.flags = if skb_mode { bpf::XDP_FLAGS_SKB_MODE } else { bpf::XDP_FLAGS_DRV_MODE };
            let mut link_fd = bpf::bpf_link_create(prog_fd, ifindex as _, bpf::BPF_XDP, &lo);
            if link_fd == -libc::EBUSY && force {
                // A legacy (netlink-attached) program is left over, e.g. from a crashed
                // libxdp-mode run: remove it (same as `ip link set dev X xdp off`) and retry.
                bpf::bpf_xdp_detach(ifindex as _, lo.flags, ptr::null());
                link_fd = bpf::bpf_link_create(prog_fd, ifindex as _, bpf::BPF_XDP, &lo);
            }
            if let Err(e) = errno_res(link_fd, "bpf_link_create(BPF_XDP)") {
                bpf::bpf_object__close(obj);
                return Err(e);
            }
            Ok(Self { obj, link_fd, xsks_map_fd, stats_map_fd, ifindex })
        }
    }

    /// Put an AF_XDP socket fd into xsks_map[queue_id].
    pub fn register_xsk(&self, queue_id: u32, xsk_fd: i32) -> io::Result<()> {
        // SAFETY: key and value point to live locals of the map's key and value
        // sizes (u32 queue id, i32 socket fd) for the duration of the call.
        let ret = unsafe {
            bpf::bpf_map_update_elem(
                self.xsks_map_fd,
                &queue_id as *const u32 as *const _,
                &xsk_fd as *const i32 as *const _,
                0,
            )
        };
        errno_res(ret, "bpf_map_update_elem(xsks_map)").map(|_| ())
    }

    pub fn unregister_xsk(&self, queue_id: u32) {
        // SAFETY: the key points to a live u32, the map's key size.
        unsafe { bpf::bpf_map_delete_elem(self.xsks_map_fd, &queue_id as *const u32 as *const _) };
    }

    /// Sum of per-CPU counters [redirected, passed_non_ipv4, short].
    pub fn stats(&self) -> [u64; 3] {
        // SAFETY: a plain query without arguments.
        let ncpu = unsafe { bpf::libbpf_num_possible_cpus() }.max(1) as usize;
        let mut out = [0u64; 3];
        for (k, o) in out.iter_mut().enumerate() {
            let key = k as u32;
            let mut vals = vec![0u64; ncpu];
            // SAFETY: the key is a live u32 and `vals` holds one u64 per possible
            // CPU, the size of a per-CPU array map value.
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
        // SAFETY: the link fd and the object are owned by this value and
        // closed exactly once, here.
        unsafe {
            // Closing the last fd of the link detaches the program from the interface.
            libc::close(self.link_fd);
            bpf::bpf_object__close(self.obj);
        }
    }
}
