//! xdpfwd: AF_XDP two-port forwarder prototype (one shared UMEM, two sockets).
//!
//! usage: xdpfwd --a IF --b IF --a-peer MAC --b-peer MAC [--a-ip IP] [--b-ip IP]
//!               [--prog own|libxdp] [--skb] [--force] [--miss pass|drop] [--bind copy|auto|zc]
//!               [--frames N] [--stats SECS] [--register 0]
mod pkt;
mod xdpprog;

/// Our own XDP program, loaded with libbpf-sys.
enum Prog {
    Libbpf(xdpprog::XdpProg),
}
impl Prog {
    fn register_xsk(&mut self, q: u32, fd: i32) -> io::Result<()> {
        match self {
            Prog::Libbpf(p) => p.register_xsk(q, fd),
        }
    }
    fn unregister_xsk(&mut self, q: u32) {
        match self {
            Prog::Libbpf(p) => p.unregister_xsk(q),
        }
    }
    fn stats(&self) -> [u64; 3] {
        match self {
            Prog::Libbpf(p) => p.stats(),
        }
    }
}

use std::{
    collections::HashMap,
    io,
    net::Ipv4Addr,
    num::NonZeroU32,
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use xsk_rs::{
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
    config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags},
};

static STOP: AtomicBool = AtomicBool::new(false);
extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

const BATCH: usize = 64;
const RING: u32 = 2048; // rx/tx/fill/comp ring sizes
const FQ_TARGET: usize = RING as usize; // keep the whole fill ring posted

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|x| u8::from_str_radix(x, 16).expect("bad MAC")).collect();
    v.try_into().expect("bad MAC")
}

fn if_mac(ifname: &str) -> [u8; 6] {
    parse_mac(std::fs::read_to_string(format!("/sys/class/net/{ifname}/address")).unwrap().trim())
}

struct Port {
    name: String,
    mac: [u8; 6],
    peer_mac: [u8; 6],
    ip: Option<[u8; 4]>,
    tx: TxQueue,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
    in_fq: usize, // frames owned by kernel via fill ring (or sitting in rx ring)
    in_tx: usize, // frames submitted to tx ring, not yet completed
    pending_tx: Vec<FrameDesc>,
    st: Stats,
    prog: Option<Prog>,
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    rx: u64,
    rx_arp: u64,
    fwd: u64,
    arp_reply: u64,
    drop: u64,
    tx_full: u64,
    tx_done: u64,
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut kv: HashMap<String, String> = HashMap::new();
    let mut flags = std::collections::HashSet::new();
    let mut i = 0;
    while i < args.len() {
        let k = args[i].trim_start_matches("--").to_string();
        if k == "skb" || k == "force" {
            flags.insert(k);
            i += 1;
        } else {
            kv.insert(k, args.get(i + 1).cloned().expect("missing value"));
            i += 2;
        }
    }
    let get = |k: &str| kv.get(k).cloned();
    let (a, b) = (get("a").expect("--a"), get("b").expect("--b"));
    // --prog own (libbpf-sys loader) | libxdp (libxdp default prog)
    let prog_kind = get("prog").unwrap_or_else(|| "own".into());
    let own_prog = prog_kind != "libxdp";
    let skb = flags.contains("skb");
    // --force: replace a leftover legacy XDP program on the interface (libbpf loader only)
    let force = flags.contains("force");
    let miss = if get("miss").as_deref() == Some("drop") { 1 } else { 2 }; // XDP_DROP / XDP_PASS
    let nframes: u32 = get("frames").map(|s| s.parse().unwrap()).unwrap_or(8192);
    // --register 0: attach our program but leave xsks_map empty (to observe the miss action)
    let register = get("register").as_deref() != Some("0");
    let stats_every = Duration::from_secs(get("stats").map(|s| s.parse().unwrap()).unwrap_or(0));

    // SAFETY: `on_signal` only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    // ---- UMEM shared by both sockets ----
    let ucfg = UmemConfig::builder()
        .frame_size(FrameSize::new(2048).unwrap())
        .fill_queue_size(QueueSize::new(RING).unwrap())
        .comp_queue_size(QueueSize::new(RING).unwrap())
        .build()
        .unwrap();
    let (umem, mut pool) =
        Umem::new(ucfg, NonZeroU32::new(nframes).unwrap(), false).map_err(io::Error::other)?;
    let total = pool.len();

    let mut scfg = SocketConfig::builder();
    scfg.rx_queue_size(QueueSize::new(RING).unwrap())
        .tx_queue_size(QueueSize::new(RING).unwrap())
        .bind_flags(match get("bind").as_deref() {
            // veth has no zero-copy support: "zc" fails, "auto" (no mode flag) falls back to copy
            Some("zc") => BindFlags::XDP_USE_NEED_WAKEUP | BindFlags::XDP_ZEROCOPY,
            Some("auto") => BindFlags::XDP_USE_NEED_WAKEUP,
            _ => BindFlags::XDP_USE_NEED_WAKEUP | BindFlags::XDP_COPY,
        })
        .xdp_flags(if skb { XdpFlags::XDP_FLAGS_SKB_MODE } else { XdpFlags::XDP_FLAGS_DRV_MODE });
    if own_prog {
        scfg.libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD);
    }
    let scfg = scfg.build();

    let mk_port = |name: &str, peer: &str, ip: Option<String>| -> io::Result<Port> {
        // Attach our program first so no frames hit the default path (when own_prog).
        let mut prog = match prog_kind.as_str() {
            "own" => Some(Prog::Libbpf(xdpprog::XdpProg::load_and_attach(name, miss, skb, force)?)),
            _ => None,
        };
        // SAFETY: the UMEM is shared by both sockets and lives until the end of
        // main, after the loop that uses them; each interface's queue 0 is bound once.
        let (tx, rx, fqcq) = unsafe { Socket::new(scfg, &umem, &name.parse().unwrap(), 0) }
            .map_err(|e| io::Error::other(format!("Socket::new({name}): {e}: {:?}", std::error::Error::source(&e))))?;
        let (fq, cq) = fqcq.expect("fill/comp queue for a new (ifname, queue) pair");
        if let Some(p) = prog.as_mut().filter(|_| register) {
            p.register_xsk(0, rx.fd().as_raw_fd())?;
        }
        Ok(Port {
            name: name.to_string(),
            mac: if_mac(name),
            peer_mac: parse_mac(peer),
            ip: ip.map(|s| s.parse::<Ipv4Addr>().expect("bad ip").octets()),
            tx,
            rx,
            fq,
            cq,
            in_fq: 0,
            in_tx: 0,
            pending_tx: Vec::with_capacity(BATCH * 2),
            st: Stats::default(),
            prog,
        })
    };
    let mut ports = [
        mk_port(&a, &get("a-peer").expect("--a-peer"), get("a-ip"))?,
        mk_port(&b, &get("b-peer").expect("--b-peer"), get("b-ip"))?,
    ];
    eprintln!(
        "xdpfwd: {} <-> {} ({} prog, {} mode, {} frames)",
        a,
        b,
        prog_kind,
        if skb { "skb" } else { "drv" },
        total
    );

    let mut rxbuf = vec![FrameDesc::default(); BATCH];
    let mut cqbuf = vec![FrameDesc::default(); BATCH];
    let mut last_stats = Instant::now();

    while !STOP.load(Ordering::Relaxed) {
        let mut work = 0usize;

        for p in ports.iter_mut() {
            // 1. reap tx completions -> pool
            // SAFETY: completion descriptors are frames of this UMEM the kernel has
            // finished with; they go back to the pool.
            let n = unsafe { p.cq.consume(&mut cqbuf) };
            pool.extend_from_slice(&cqbuf[..n]);
            p.in_tx -= n;
            p.st.tx_done += n as u64;
            work += n;
            // 2. top up fill ring from pool
            let want = FQ_TARGET.saturating_sub(p.in_fq).min(pool.len());
            if want > 0 {
                let start = pool.len() - want;
                // produce() hands the kernel a prefix of the slice (libxdp reserve is
                // all-or-nothing, so n is `want` or 0)
                // SAFETY: the frames come from the pool, so nothing else owns them.
                let n = unsafe { p.fq.produce(&pool[start..]) };
                pool.drain(start..start + n);
                p.in_fq += n;
            }
        }

        // 3. rx on each port, decide, queue for tx
        for i in 0..2 {
            let o = 1 - i;
            // SAFETY: `rxbuf` holds plain descriptors; consume() fills the first n
            // with frames of this UMEM that the kernel has handed over.
            let n = unsafe { ports[i].rx.consume(&mut rxbuf) };
            if n == 0 {
                continue;
            }
            work += n;
            ports[i].in_fq -= n;
            ports[i].st.rx += n as u64;
            let (out_mac, nh_mac) = (ports[o].mac, ports[o].peer_mac);
            let (my_mac, my_ip) = (ports[i].mac, ports[i].ip);
            for d in rxbuf.iter_mut().take(n) {
                let v = {
                    // SAFETY: `d` came off an RX ring of this UMEM and is owned by this
                    // loop until it is queued for TX or put back in the pool.
                    let mut data = unsafe { umem.data_mut(d) };
                    let buf = data.contents_mut();
                    match pkt::classify(buf) {
                        pkt::ETH_P_IP => pkt::forward_ipv4(buf, &out_mac, &nh_mac),
                        pkt::ETH_P_ARP => {
                            ports[i].st.rx_arp += 1;
                            match my_ip {
                                Some(ip) => pkt::arp_reply(buf, &my_mac, ip),
                                None => pkt::Verdict::Drop,
                            }
                        }
                        _ => pkt::Verdict::Drop,
                    }
                };
                match v {
                    pkt::Verdict::Forward => {
                        ports[i].st.fwd += 1;
                        ports[o].pending_tx.push(*d)
                    }
                    pkt::Verdict::Reflect => {
                        ports[i].st.arp_reply += 1;
                        ports[i].pending_tx.push(*d)
                    }
                    pkt::Verdict::Drop => {
                        ports[i].st.drop += 1;
                        pool.push(*d)
                    }
                }
            }
        }

        // 4. flush tx; kick the kernel (copy mode transmits inside sendto, max ~32/kick)
        for p in ports.iter_mut() {
            if !p.pending_tx.is_empty() {
                // SAFETY: pending frames are ours (from RX) and are handed to the kernel
                // exactly once; the ones beyond n go back to the pool.
                let n = unsafe { p.tx.produce(&p.pending_tx) };
                p.in_tx += n;
                if n < p.pending_tx.len() {
                    // tx ring full: drop the rest (return to pool)
                    p.st.tx_full += (p.pending_tx.len() - n) as u64;
                    pool.extend_from_slice(&p.pending_tx[n..]);
                }
                p.pending_tx.clear();
            }
            // In copy mode each sendto() transmits at most 32 descriptors
            // (kernel TX_BATCH_SIZE), so kick once per 32 outstanding frames,
            // reaping completions in between.
            let mut kicks = p.in_tx.div_ceil(32).min(16);
            while kicks > 0 && p.in_tx > 0 && p.tx.needs_wakeup() {
                p.tx.wakeup()?;
                // SAFETY: completion descriptors are frames of this UMEM the kernel has
                // finished with; they go back to the pool.
                let n = unsafe { p.cq.consume(&mut cqbuf) };
                pool.extend_from_slice(&cqbuf[..n]);
                p.in_tx -= n;
                p.st.tx_done += n as u64;
                kicks -= 1;
            }
        }

        debug_assert_eq!(
            pool.len() + ports.iter().map(|p| p.in_fq + p.in_tx).sum::<usize>(),
            total,
            "frame leak"
        );

        if !stats_every.is_zero() && last_stats.elapsed() >= stats_every {
            last_stats = Instant::now();
            print_stats(&ports, pool.len(), total);
        }

        // 5. idle: sleep in poll() on both rx fds (and pending completions)
        if work == 0 && ports.iter().all(|p| p.in_tx == 0) {
            let mut pfds = [
                libc::pollfd { fd: ports[0].rx.fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: ports[1].rx.fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: `pfds` is a live array of two pollfd.
            unsafe { libc::poll(pfds.as_mut_ptr(), 2, 100) };
        }
    }

    print_stats(&ports, pool.len(), total);
    let acct = pool.len() + ports.iter().map(|p| p.in_fq + p.in_tx).sum::<usize>();
    eprintln!("frame accounting: pool+fq+tx = {acct} / {total} {}", if acct == total { "OK" } else { "LEAK" });
    for p in ports.iter_mut() {
        if let Some(prog) = &mut p.prog {
            prog.unregister_xsk(0);
        }
    }
    // Drop order: sockets (queues) then UMEM; XdpProg drop closes the bpf_link => detach.
    drop(ports);
    drop(umem);
    eprintln!("xdpfwd: exited cleanly");
    Ok(())
}

fn print_stats(ports: &[Port; 2], pool: usize, total: usize) {
    for p in ports.iter() {
        let xs = p.rx.fd().xdp_statistics().ok();
        let bpfst = p.prog.as_ref().map(|x| x.stats());
        eprintln!(
            "[{}] {:?} in_fq={} in_tx={} xsk(rx_dropped={:?} rx_ring_full={:?} fill_empty={:?}) bpf[redir,pass,short]={:?}",
            p.name,
            p.st,
            p.in_fq,
            p.in_tx,
            xs.map(|s| s.rx_dropped()),
            xs.map(|s| s.rx_ring_full()),
            xs.map(|s| s.rx_fill_ring_empty_descs()),
            bpfst
        );
    }
    eprintln!("pool={pool} total={total}");
}
