//! End-to-end fixture: real hosts in network namespaces around a gateway.
//!
//! Use it from a test file with `mod netns;`. [`Topology::new`] builds, for
//! the standard [`Spec`]:
//!
//! ```text
//!   inside 10.0.0.0/24           gateway "gw"             outside 203.0.113.0/24
//!   cl1 10.0.0.10 ─┐                                    ┌─ out  203.0.113.100
//!   cl2 10.0.0.11 ─┼─ brlan ── lan0 10.0.0.1            ├─ out2 203.0.113.101
//!   srv 10.0.0.5  ─┘           wan0 203.0.113.1 ── brwan ┴─ rtr  203.0.113.254
//!                                                           rtr  198.51.100.1 ── far 198.51.100.10
//! ```
//!
//! Hosts have one veth `eth0` (rtr: `eth0` outside, `eth1` far side). The
//! two bridges live in their own namespace "sw", so the gateway has exactly
//! one inside interface (`lan0`) and one outside interface (`wan0`), the
//! names of the natgw config [`NATGW_CONFIG`]. Inside hosts route by
//! default via 10.0.0.1; outside hosts route by default via the outside
//! router `rtr` (203.0.113.254) and have no route to 10.0.0.0/24, so an
//! untranslated packet never gets an answer. `rtr` gives a hop beyond the
//! gateway (for TTL-exceeded tests) and the far network 198.51.100.0/24.
//! [`Spec::minimal`] is just cl1 ── lan0 gw wan0 ── out, straight veths.
//!
//! The gateway starts bare: addresses and the default route via
//! 203.0.113.254 are set, `ip_forward` is 0, no nftables rules, ICMP
//! redirects off: ready for natgw to take over. [`Topology::use_kernel_gateway`]
//! turns it into the Linux reference instead (ip_forward=1 plus
//! [`KERNEL_RULESET`]).
//!
//! ```ignore
//! mod netns;
//! use netns::{Spec, Topology, scenarios};
//! let Some(t) = Topology::new_or_skip(Spec::standard(), "my_test") else { return };
//! let _natgw = t.spawn_natgw(env!("CARGO_BIN_EXE_natgw"), ""); // or t.use_kernel_gateway()
//! scenarios::masquerade_http(&t);
//! ```
//!
//! Every namespace is named `ngt<pid>n<k>-<host>` (unique per process and
//! per topology); every veth outside "sw" has TX checksum offload off
//! (see MACHINE-NOTES: a wire delivers full checksums); IPv6 is disabled
//! everywhere (no DAD/RS noise); and everything — spawned processes by
//! process-group id, namespaces, the scratch directory — is removed on
//! drop, panics included. Namespaces left behind by a killed test process
//! (their pid is gone), and what runs in them, are removed by the next
//! topology.
#![allow(dead_code)]

pub mod scenarios;
pub mod traffic;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The gateway's inside address (lan0).
pub const GW_LAN: &str = "10.0.0.1";
/// The gateway's outside address (wan0): what masqueraded flows leave from.
pub const GW_WAN: &str = "203.0.113.1";
pub const LAN_NET: &str = "10.0.0.0/24";
pub const CL1: &str = "10.0.0.10";
pub const CL2: &str = "10.0.0.11";
/// The inside server, published on GW_WAN:DNAT_PORT.
pub const SRV: &str = "10.0.0.5";
pub const OUT: &str = "203.0.113.100";
pub const OUT2: &str = "203.0.113.101";
/// The outside router (the gateway's default route).
pub const RTR: &str = "203.0.113.254";
pub const RTR_FAR: &str = "198.51.100.1";
/// A host one hop beyond the outside router.
pub const FAR: &str = "198.51.100.10";
/// Port forwarding: GW_WAN:DNAT_PORT -> SRV:SRV_PORT.
pub const DNAT_PORT: u16 = 8080;
pub const SRV_PORT: u16 = 80;

/// The Linux reference gateway's ruleset, equivalent to [`NATGW_CONFIG`]:
/// port forwarding (from either side, so hairpinned flows are translated
/// too), masquerade of the LAN out of wan0, and hairpin masquerade (a
/// DNATed flow that leaves lan0 again gets the gateway's inside address).
/// One definition, shared with scripts/netns.sh.
pub const KERNEL_RULESET: &str = include_str!("../../scripts/topology/kernel.nft");

/// The natgw config equivalent to [`KERNEL_RULESET`] for the bare gateway
/// namespace (`natgw run --config FILE` inside `gw`). Hairpinning is
/// natgw's `hairpin = true`: a DNATed flow routed back out of its input
/// interface gets the input interface's address. One definition, shared
/// with scripts/netns.sh (`scripts/netns.sh config`), the demo and the
/// benchmarks.
pub const NATGW_CONFIG: &str = include_str!("../../scripts/topology/natgw.toml");

/// The script that builds the topology (the one definition of it).
pub const NETNS_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns.sh");

/// [`NATGW_CONFIG`] with `control_socket` set and `extra` lines added to
/// its `[gateway]` table.
pub fn natgw_config(control_socket: &Path, extra: &str) -> String {
    let mut gateway = format!(
        "[gateway]\ncontrol_socket = {:?}\n",
        control_socket.display().to_string()
    );
    for l in extra.lines() {
        gateway += l.trim();
        gateway.push('\n');
    }
    NATGW_CONFIG.replacen("[gateway]\n", &gateway, 1)
}

/// Default limit for [`Topology::exec`] and friends.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Which side of the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Inside,
    Outside,
}

/// A host namespace: its short name (used in every call, at most 13
/// characters) and its address (/24 on its side).
#[derive(Clone, Debug)]
pub struct Host {
    pub name: &'static str,
    pub addr: &'static str,
}

impl Host {
    pub const fn new(name: &'static str, addr: &'static str) -> Host {
        Host { name, addr }
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Hosts on the LAN (10.0.0.0/24), default route via 10.0.0.1.
    pub inside: Vec<Host>,
    /// Hosts on the outside network (203.0.113.0/24).
    pub outside: Vec<Host>,
    /// true: each side is a bridge in namespace "sw" (any number of hosts);
    /// false: one inside and one outside host wired straight to lan0/wan0.
    pub switched: bool,
    /// Add the outside router "rtr" (203.0.113.254, 198.51.100.1) and the
    /// far host "far" (198.51.100.10); outside hosts route via rtr.
    /// Needs `switched`.
    pub router: bool,
    /// An HA pair: a second gateway "gw2" on both bridges and a sync link
    /// (see scripts/netns.sh `NETNS_HA`). Needs `switched`.
    pub ha: bool,
}

impl Spec {
    /// cl1, cl2, srv inside; out, out2 outside; rtr and far beyond.
    pub fn standard() -> Spec {
        Spec {
            inside: vec![
                Host::new("cl1", CL1),
                Host::new("cl2", CL2),
                Host::new("srv", SRV),
            ],
            outside: vec![Host::new("out", OUT), Host::new("out2", OUT2)],
            switched: true,
            router: true,
            ha: false,
        }
    }

    /// cl1 — gw — out over two plain veth pairs (no bridge, no router):
    /// the shortest path, for first bring-up and throughput work.
    pub fn minimal() -> Spec {
        Spec {
            inside: vec![Host::new("cl1", CL1)],
            outside: vec![Host::new("out", OUT)],
            switched: false,
            router: false,
            ha: false,
        }
    }
}

/// The gateway's interface name for a side (names inside namespace "gw").
pub fn gw_ifname(role: Role) -> &'static str {
    match role {
        Role::Inside => "lan0",
        Role::Outside => "wan0",
    }
}

/// Why the e2e tests cannot run here (not root, no CAP_SYS_ADMIN or
/// CAP_NET_ADMIN), or None. Tests print it and return (skip).
pub fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    };
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string));
    if euid.as_deref() != Some("0") {
        return Some("not root: network namespaces need root".into());
    }
    let caps = field("CapEff:")
        .and_then(|c| u64::from_str_radix(&c, 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    if caps & (CAP_NET_ADMIN | CAP_SYS_ADMIN) != CAP_NET_ADMIN | CAP_SYS_ADMIN {
        return Some("root without CAP_SYS_ADMIN/CAP_NET_ADMIN: cannot create namespaces".into());
    }
    None
}

/// Whether end-to-end tests must run (not skip): `NATGW_E2E=1`, or `CI`
/// set as CI systems do (`CI=true`).
pub fn e2e_required() -> bool {
    let set = |k: &str| {
        std::env::var(k)
            .map(|v| {
                !matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "" | "0" | "false" | "no"
                )
            })
            .unwrap_or(false)
    };
    set("NATGW_E2E") || set("CI")
}

/// The tools the fixture and the scenarios call; missing ones are a setup
/// error (scripts/setup.sh installs them), not a reason to skip.
pub const TOOLS: &[&str] = &[
    "ip",
    "nft",
    "ethtool",
    "sysctl",
    "kill",
    "curl",
    "ping",
    "traceroute",
    "python3",
];

fn check_tools() {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "e2e tools missing: {missing:?}; run scripts/setup.sh"
    );
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The python3 to run helper scripts with: Debian's if present (stable
/// across pyenv and PATH changes), else whatever PATH has.
pub fn python() -> String {
    if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3".into()
    } else {
        "python3".into()
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static SWEEP: Once = Once::new();
/// `ip netns add` of parallel tests in one process take turns (the first
/// one mounts /run/netns).
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// Removes namespaces `ngt<pid>n<k>-*` whose test process is gone (killed
/// before its drop guards ran), ending the processes it had started in
/// them.
fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("ngt") else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || !rest[digits.len()..].starts_with('n') {
            continue;
        }
        let pid: u32 = digits.parse().unwrap_or(0);
        if pid != 0 && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            kill_netns_pids(&name);
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// A built topology; see the module docs. All methods take the short host
/// name ("gw", "sw", "cl1", "srv", "out", "rtr", "far", ...).
pub struct Topology {
    prefix: String,
    spec: Spec,
    created: Mutex<Vec<String>>,
    procs: Arc<Mutex<HashSet<u32>>>,
    dir: PathBuf,
    gw_ttl_cost: AtomicU8,
}

impl Topology {
    /// Builds the topology described by `spec` (gateway bare). Panics on
    /// failure after removing whatever it had built.
    pub fn new(spec: Spec) -> Topology {
        check_tools();
        SWEEP.call_once(sweep_stale);
        assert!(
            spec.switched || (spec.inside.len() == 1 && spec.outside.len() == 1 && !spec.router),
            "an unswitched topology has exactly one inside and one outside host and no router"
        );
        let prefix = format!(
            "ngt{}n{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let t = Topology {
            prefix,
            spec,
            created: Mutex::new(Vec::new()),
            procs: Arc::new(Mutex::new(HashSet::new())),
            dir,
            gw_ttl_cost: AtomicU8::new(1),
        };
        t.build();
        t
    }

    /// [`Topology::new`], or None after printing why when these tests can't
    /// run here (see [`skip_reason`]).
    ///
    /// Under CI (`CI` set to anything but "" / "0" / "false") or with
    /// `NATGW_E2E=1` (scripts/test.sh sets it when run as root) a test that
    /// cannot build its hosts fails with the reason instead: a run that
    /// executed no end-to-end test must not look green.
    pub fn new_or_skip(spec: Spec, test: &str) -> Option<Topology> {
        if let Some(why) = skip_reason() {
            if e2e_required() {
                panic!(
                    "{test}: end-to-end test cannot run: {why} \
                     (CI or NATGW_E2E=1 is set, so this is a failure, not a skip)"
                );
            }
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
        Some(Topology::new(spec))
    }

    /// The topology's name prefix (`ngt<pid>n<k>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Full namespace name of a host, e.g. `ns("gw")` = "ngt123n0-gw".
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// All host names of this topology (not "gw"/"sw").
    pub fn hosts(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.spec.inside.iter().map(|h| h.name).collect();
        v.extend(self.spec.outside.iter().map(|h| h.name));
        if self.spec.router {
            v.extend(["rtr", "far"]);
        }
        v
    }

    /// The address of a host (or of the gateway: its inside address).
    pub fn addr(&self, host: &str) -> &'static str {
        match host {
            "gw" => GW_LAN,
            "rtr" => RTR,
            "far" => FAR,
            _ => {
                self.spec
                    .inside
                    .iter()
                    .chain(&self.spec.outside)
                    .find(|h| h.name == host)
                    .unwrap_or_else(|| panic!("no host {host}"))
                    .addr
            }
        }
    }

    /// Where the other end of the gateway's lan0/wan0 sits: (host, ifname).
    /// Switched: the bridge port in "sw"; unswitched: the host's eth0. (An
    /// XDP_REDIRECT/XDP_TX into a veth needs an XDP program or NAPI — e.g.
    /// `ethtool -K IF gro on` — on this peer.)
    pub fn gw_peer(&self, role: Role) -> (String, String) {
        match (self.spec.switched, role) {
            (true, Role::Inside) => ("sw".into(), "l-gw".into()),
            (true, Role::Outside) => ("sw".into(), "w-gw".into()),
            (false, Role::Inside) => (self.spec.inside[0].name.into(), "eth0".into()),
            (false, Role::Outside) => (self.spec.outside[0].name.into(), "eth0".into()),
        }
    }

    /// A scratch directory removed on drop (e.g. for a natgw config).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `name` in [`Topology::dir`]; returns the path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, contents).expect("write scratch file");
        p
    }

    /// Builds the namespaces with scripts/netns.sh (the spec passed as its
    /// NETNS_* variables); the script removes what it built if it fails.
    fn build(&self) {
        let s = &self.spec;
        for h in s.inside.iter().chain(&s.outside) {
            assert!(h.name.len() <= 13, "host name {} too long", h.name);
            assert!(
                !["gw", "gw2", "sw", "rtr", "far"].contains(&h.name),
                "reserved host name {}",
                h.name
            );
        }
        let list = |hosts: &[Host]| {
            hosts
                .iter()
                .map(|h| format!("{}:{}", h.name, h.addr))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut names: Vec<String> = vec!["gw".into()];
        if s.ha {
            names.push("gw2".into());
        }
        if s.switched {
            names.push("sw".into());
        }
        names.extend(self.hosts().iter().map(|h| h.to_string()));
        let mut cmd = Command::new("bash");
        cmd.args([NETNS_SH, "up", &self.prefix])
            .env("NETNS_INSIDE", list(&s.inside))
            .env("NETNS_OUTSIDE", list(&s.outside))
            .env_remove("NETNS_EXTRA_INSIDE")
            .env_remove("NETNS_EXTRA_OUTSIDE")
            .env("NETNS_SWITCHED", if s.switched { "1" } else { "0" })
            .env("NETNS_ROUTER", if s.router { "1" } else { "0" })
            .env("NETNS_HA", if s.ha { "1" } else { "0" })
            .env("NETNS_QUIET", "1");
        // `ip netns add` of parallel tests take turns (the first one
        // mounts /run/netns).
        let _g = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
        self.created
            .lock()
            .unwrap()
            .extend(names.iter().map(|n| format!("{}-{n}", self.prefix)));
        let out = run_cmd(cmd, None, EXEC_TIMEOUT);
        assert!(
            out.status.success(),
            "building the topology failed ({NETNS_SH} up {}): {}",
            self.prefix,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes the gateway the Linux reference: ip_forward=1 and
    /// [`KERNEL_RULESET`].
    pub fn use_kernel_gateway(&self) {
        self.use_kernel_ruleset(KERNEL_RULESET);
    }

    /// Like [`Topology::use_kernel_gateway`] with another nftables ruleset.
    pub fn use_kernel_ruleset(&self, ruleset: &str) {
        let f = self.write_file("kernel.nft", ruleset);
        self.run(
            "gw",
            &format!(
                "sysctl -q -w net.ipv4.ip_forward=1 && nft -f {}",
                f.display()
            ),
        );
    }

    /// How many TTL a packet loses crossing the gateway (1, as a router;
    /// natgw's TUN backend: 3 — kernel, natgw, kernel). The ICMP scenario
    /// aims its "expires at rtr" probe and reads traceroute with it.
    pub fn set_gw_ttl_cost(&self, hops: u8) {
        assert!(hops >= 1);
        self.gw_ttl_cost.store(hops, Ordering::Relaxed);
    }

    pub fn gw_ttl_cost(&self) -> u8 {
        self.gw_ttl_cost.load(Ordering::Relaxed)
    }

    /// Sets the gateway's net.ipv4.ip_forward.
    pub fn set_gw_forwarding(&self, on: bool) {
        self.run(
            "gw",
            &format!("sysctl -q -w net.ipv4.ip_forward={}", u8::from(on)),
        );
    }

    /// Writes [`natgw_config`] (control socket in the scratch dir, so
    /// parallel tests don't share /run/natgw/natgw.sock) with `extra` lines
    /// added to its `[gateway]` table (e.g. `backend = "tun"`) to the
    /// scratch dir; returns the path.
    pub fn natgw_config_file(&self, extra: &str) -> PathBuf {
        let sock = self.dir.join("natgw.sock");
        self.write_file("natgw.toml", &natgw_config(&sock, extra))
    }

    /// Starts `natgw_bin run --config F` in the gateway namespace (F from
    /// [`Topology::natgw_config_file`] with `extra`), its stderr merged
    /// into stdout, and waits for its "natgw running" log line. Leave
    /// ip_forward at 0 for AF_XDP (natgw takes the frames); the TUN
    /// backend may need [`Topology::set_gw_forwarding`].
    pub fn spawn_natgw(&self, natgw_bin: &str, extra: &str) -> Proc {
        self.spawn_natgw_tables(natgw_bin, extra, "")
    }

    /// [`Topology::spawn_natgw`] with `tables` (whole TOML tables such as
    /// `[afxdp]`) appended to the config.
    pub fn spawn_natgw_tables(&self, natgw_bin: &str, extra: &str, tables: &str) -> Proc {
        let sock = self.natgw_control_socket();
        let cfg = self.write_file("natgw.toml", &(natgw_config(&sock, extra) + tables));
        let p = self.spawn(
            "gw",
            &format!("exec {natgw_bin} run --config {} 2>&1", cfg.display()),
        );
        if p.wait_for_line("natgw running", Duration::from_secs(20))
            .is_none()
        {
            panic!("natgw did not start:\n{}", p.stdout());
        }
        p
    }

    /// The control socket path [`Topology::natgw_config_file`] configures.
    pub fn natgw_control_socket(&self) -> PathBuf {
        self.dir.join("natgw.sock")
    }

    /// `natgw ARGS --json` against this topology's gateway (the binary
    /// `natgw_bin`), parsed; panics with the output if it fails.
    pub fn natgw_json(&self, natgw_bin: &str, args: &[&str]) -> serde_json::Value {
        let out = Command::new(natgw_bin)
            .args(args)
            .arg("--json")
            .arg("--socket")
            .arg(self.natgw_control_socket())
            .output()
            .expect("run natgw");
        assert!(out.status.success(), "natgw {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("natgw {args:?}: {e}"))
    }

    /// `ip netns exec NS program args...`, not started yet (for callers
    /// who want their own stdio/env).
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host), program]);
        c
    }

    /// Runs `sh -c cmd` in the host's namespace and waits (at most
    /// [`EXEC_TIMEOUT`]; on timeout the process group is killed and the
    /// status says so).
    pub fn exec(&self, host: &str, cmd: &str) -> Output {
        self.exec_timeout(host, cmd, EXEC_TIMEOUT)
    }

    pub fn exec_timeout(&self, host: &str, cmd: &str, timeout: Duration) -> Output {
        let mut c = self.command(host, "sh");
        c.args(["-c", cmd]);
        run_cmd(c, None, timeout)
    }

    /// Runs a program with arguments (no shell) in the host's namespace.
    pub fn exec_args(&self, host: &str, program: &str, args: &[&str], timeout: Duration) -> Output {
        let mut c = self.command(host, program);
        c.args(args);
        run_cmd(c, None, timeout)
    }

    /// [`Topology::exec`] that must succeed; returns stdout.
    pub fn run(&self, host: &str, cmd: &str) -> String {
        let out = self.exec(host, cmd);
        assert!(
            out.status.success(),
            "[{host}] `{cmd}` failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `sh -c cmd` in the host's namespace, in its own process
    /// group; the returned guard kills the group on drop.
    pub fn spawn(&self, host: &str, cmd: &str) -> Proc {
        let mut c = self.command(host, "sh");
        c.args(["-c", cmd]);
        self.spawn_command(c, &format!("[{host}] {cmd}"))
    }

    /// Starts a program with arguments (no shell) in the host's namespace.
    pub fn spawn_args(&self, host: &str, program: &str, args: &[&str]) -> Proc {
        let mut c = self.command(host, program);
        c.args(args);
        self.spawn_command(
            c,
            &format!("[{host}] {program} {}", args.first().unwrap_or(&"")),
        )
    }

    /// Spawns a prepared command as a [`Proc`] registered with this
    /// topology (killed at the latest when the topology drops).
    pub fn spawn_command(&self, c: Command, desc: &str) -> Proc {
        Proc::start(c, desc, Some(self.procs.clone()))
    }

    /// Runs the helper python script (see [`scenarios::PY_TOOLS`]) with a
    /// subcommand in the host's namespace, in the background.
    pub fn spawn_py(&self, host: &str, args: &[&str]) -> Proc {
        let py = python();
        let mut all = vec!["-c", scenarios::PY_TOOLS];
        all.extend_from_slice(args);
        let mut c = self.command(host, &py);
        c.args(&all);
        self.spawn_command(c, &format!("[{host}] py {}", args.join(" ")))
    }

    /// A short dump of the gateway's state, printed when a test panics.
    pub fn diag(&self) -> String {
        let o = self.exec_timeout(
            "gw",
            "echo '# ip -br addr'; ip -br addr; echo '# ip route'; ip route; \
             echo '# ip neigh'; ip neigh; echo \"# ip_forward $(sysctl -n net.ipv4.ip_forward)\"; \
             echo '# nft list ruleset'; nft list ruleset 2>&1; \
             echo '# ip -s link'; ip -s link",
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- netns topology {} (gateway state at failure) ---\n{}",
                self.prefix,
                self.diag()
            );
        }
        // Processes spawned and still alive (guards leaked or outliving us).
        let pgids: Vec<u32> = self
            .procs
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for pg in pgids {
            kill_group(pg);
        }
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        // Anything still running inside our namespaces was started by this
        // topology: end it by pid before removing the namespaces.
        for ns in &created {
            kill_netns_pids(ns);
        }
        // XDP programs a killed natgw left pinned (and parking) in our
        // namespaces: /sys/fs/bpf/natgw/<netns inode>-<ifindex>.
        let inodes: Vec<u64> = created
            .iter()
            .filter_map(|n| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(format!("/run/netns/{n}"))
                    .ok()
                    .map(|m| m.ino())
            })
            .collect();
        for dir in ["/sys/fs/bpf/natgw", "/run/natgw/bpffs/natgw"] {
            let Ok(dir) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if inodes
                    .iter()
                    .any(|i| name.split('-').next() == Some(&i.to_string()))
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let batch: String = created.iter().map(|n| format!("netns del {n}\n")).collect();
        if !batch.is_empty() {
            let _ = run_cmd(
                {
                    let mut c = Command::new("ip");
                    c.args(["-force", "-batch", "-"]);
                    c
                },
                Some(batch.as_bytes()),
                Duration::from_secs(30),
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills (by pid) every process inside one of our namespaces: only the
/// fixture starts processes there.
fn kill_netns_pids(ns: &str) {
    if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// True once the process has exited (a zombie not yet reaped counts): we
/// look before reaping, so its pid — and process group id — stays ours
/// while we kill what is left of the group.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ..." — comm may hold spaces/parens: take the last ')'.
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_none_or(|st| st == "Z" || st == "X"),
        Err(_) => true,
    }
}

fn run_cmd(c: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let mut p = Proc::start_with_stdin(c, "cmd", None, stdin.is_some());
    if let Some(input) = stdin {
        use std::io::Write;
        if let Some(mut w) = p.child.as_mut().and_then(|c| c.stdin.take()) {
            let _ = w.write_all(input);
        }
    }
    let mut timed_out = false;
    let status = p.wait(timeout).unwrap_or_else(|| {
        timed_out = true;
        p.kill();
        p.status.unwrap_or(ExitStatus::from_raw(9))
    });
    let mut stderr = p.stderr().into_bytes();
    if timed_out {
        stderr.extend_from_slice(
            format!("\n[netns: timed out after {timeout:?}, killed]\n").as_bytes(),
        );
    }
    Output {
        status,
        stdout: p.stdout().into_bytes(),
        stderr,
    }
}

type Lines = Arc<(Mutex<(Vec<String>, bool)>, Condvar)>;

/// A process started in a namespace, in its own process group. Stdout is
/// collected line by line (see [`Proc::wait_for_line`]), stderr as a whole.
/// Dropping it kills the whole group (SIGKILL) and reaps it.
pub struct Proc {
    child: Option<Child>,
    pid: u32,
    desc: String,
    status: Option<ExitStatus>,
    out: Lines,
    err: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    registry: Option<Arc<Mutex<HashSet<u32>>>>,
}

impl Proc {
    fn start(c: Command, desc: &str, registry: Option<Arc<Mutex<HashSet<u32>>>>) -> Proc {
        Proc::start_with_stdin(c, desc, registry, false)
    }

    fn start_with_stdin(
        mut c: Command,
        desc: &str,
        registry: Option<Arc<Mutex<HashSet<u32>>>>,
        stdin: bool,
    ) -> Proc {
        c.process_group(0)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
        let pid = child.id();
        if let Some(r) = &registry {
            r.lock().unwrap().insert(pid);
        }
        let out: Lines = Arc::new((Mutex::new((Vec::new(), false)), Condvar::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        if let Some(so) = child.stdout.take() {
            let out = out.clone();
            readers.push(std::thread::spawn(move || {
                let mut r = BufReader::new(so);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf).into_owned();
                            out.0.lock().unwrap().0.push(line);
                            out.1.notify_all();
                        }
                    }
                }
                out.0.lock().unwrap().1 = true;
                out.1.notify_all();
            }));
        }
        if let Some(mut se) = child.stderr.take() {
            let err = err.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = se.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    err.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
        }
        Proc {
            child: Some(child),
            pid,
            desc: desc.to_string(),
            status: None,
            out,
            err,
            readers,
            registry,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until a stdout line contains `needle`; returns it, or None on
    /// timeout or when stdout closed first.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.out;
        let mut g = m.lock().unwrap();
        let mut seen = 0;
        loop {
            if let Some(l) = g.0[seen..].iter().find(|l| l.contains(needle)) {
                return Some(l.trim_end().to_string());
            }
            seen = g.0.len();
            if g.1 {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Waits for the "READY" line the helper servers print once they
    /// listen; panics with the process's stderr if it doesn't come.
    pub fn ready(self) -> Proc {
        if self
            .wait_for_line("READY", Duration::from_secs(15))
            .is_none()
        {
            panic!("{} did not become ready: {}", self.desc, self.stderr());
        }
        self
    }

    /// The stdout lines starting with `prefix`, once there are at least
    /// `n` of them (or what there is after `timeout`, or once stdout
    /// closed): a server's log line may reach us a moment after the
    /// client got its answer.
    pub fn lines_starting(&self, prefix: &str, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.out;
        let mut g = m.lock().unwrap();
        loop {
            let v: Vec<String> =
                g.0.iter()
                    .filter(|l| l.starts_with(prefix))
                    .map(|l| l.trim_end().to_string())
                    .collect();
            let now = Instant::now();
            if v.len() >= n || g.1 || now >= deadline {
                return v;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Stdout lines so far (without line ends).
    pub fn lines(&self) -> Vec<String> {
        self.out
            .0
            .lock()
            .unwrap()
            .0
            .iter()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// Stdout so far.
    pub fn stdout(&self) -> String {
        self.out.0.lock().unwrap().0.concat()
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits for the process to exit (at most `timeout`; None if it is
    /// still running). Leftovers of its process group are killed, the
    /// process reaped and its output fully read.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + timeout;
        while !exited(self.pid) {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reap();
        self.status
    }

    /// [`Proc::wait`] that must succeed; returns stdout.
    pub fn finish(mut self, timeout: Duration) -> String {
        match self.wait(timeout) {
            Some(s) if s.success() => self.stdout(),
            st => panic!(
                "{} failed ({st:?}):\nstdout: {}\nstderr: {}",
                self.desc,
                self.stdout(),
                self.stderr()
            ),
        }
    }

    /// Asks the process to stop (SIGTERM, as `systemctl stop` does) and
    /// waits up to `timeout` for it; kills the group if it is still there.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() && !exited(self.pid) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
        }
        let st = self.wait(timeout);
        if st.is_none() {
            self.kill();
        }
        st
    }

    /// Kills the process group now.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            self.reap();
        }
    }

    fn reap(&mut self) {
        // The leader is alive or an unreaped zombie: the group id is ours.
        kill_group(self.pid);
        if let Some(mut c) = self.child.take() {
            self.status = c.wait().ok();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        if let Some(reg) = &self.registry {
            reg.lock().unwrap().remove(&self.pid);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.reap();
        }
    }
}
