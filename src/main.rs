//! `natgw`: thin command-line front end over the library.
//!
//! The clap argument types live here and convert into the library's
//! [`protocol`](natgw::protocol) requests; replies come back typed and are
//! printed by `control::format` (or as JSON).

use clap::{Parser, Subcommand};
use natgw::control::config::Config;
use natgw::control::socket;
use natgw::control::{format, replay};
use natgw::daemon;
use natgw::protocol::{self, FlowFilter, SetOp};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "natgw", version, about = "Userspace NAT gateway")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a config file and print the effective ruleset.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Print nothing on success (errors still go to stderr).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run the NAT core over a pcap capture and write what the gateway would
    /// transmit (packet timestamps are the clock).
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// Input capture (pcap; Ethernet or raw IPv4 link type).
        #[arg(long = "in", value_name = "IN.pcap")]
        input: PathBuf,
        /// Output capture of transmitted frames.
        #[arg(long = "out", value_name = "OUT.pcap")]
        output: PathBuf,
        /// Treat every packet as received on this interface (default: the
        /// interface that routes back to the packet's source).
        #[arg(long)]
        iif: Option<String>,
        /// Print only the summary, not one line per packet.
        #[arg(long, short)]
        quiet: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the gateway in the foreground until SIGINT/SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Start from this snapshot (crash recovery: the file `[snapshot]
        /// path` names). A missing or bad file is an error unless
        /// --allow-empty.
        #[arg(long, value_name = "FILE", conflicts_with = "takeover")]
        snapshot: Option<PathBuf>,
        /// Take over from the natgw running on the config's control socket:
        /// it hands over its state and exits, this one carries on with the
        /// same flows (upgrade or restart without dropping connections).
        #[arg(long)]
        takeover: bool,
        /// With --snapshot: start with no state if the file is missing or
        /// unreadable (logged) instead of refusing to start.
        #[arg(long, requires = "snapshot")]
        allow_empty: bool,
    },
    /// Write a snapshot of the running gateway's state now (to FILE, else
    /// the config's `[snapshot] path`).
    Snapshot {
        #[command(flatten)]
        target: Target,
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
    },
    /// Counters, drops by reason, flow-table fill, port use and fast-path
    /// latency of the running gateway.
    Stats {
        #[command(flatten)]
        target: Target,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace rules, sets and routes of the running gateway from a config
    /// file, atomically; validates it completely first. Flows keep their
    /// translation. (SIGHUP reloads the file natgw started with.)
    Reload {
        /// The new config (default: the file natgw started with).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Control socket path (default: from --config, else the default).
        #[arg(long, short)]
        socket: Option<PathBuf>,
        /// Also remove the live flows that no rule of the new config matches.
        #[arg(long)]
        flush_unmatched: bool,
        #[arg(long)]
        json: bool,
    },
    /// Change or list a named address set at run time (like ipset).
    Set {
        #[command(flatten)]
        target: Target,
        /// add, del, list or flush.
        op: SetOpArg,
        /// The set's name (a [[set]] of the config).
        name: String,
        /// Address or prefix (add, del).
        addr: Option<String>,
        /// Seconds the entry lives (add; default: the set's timeout; 0 = permanent).
        #[arg(long)]
        timeout: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Remove flows matching the filters, like `conntrack -D` (at least one
    /// filter, or --all).
    Flush {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: FilterArgs,
        /// Remove every flow.
        #[arg(long)]
        all: bool,
    },
    /// HA pair (`[ha]`): set the role (keepalived's notify script), show
    /// the sync state, or gate a takeover on it (keepalived's vrrp_script).
    Ha {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: HaOp,
    },
    /// List virtual services like `ipvsadm -L -n`: scheduler, flags, and
    /// per real server forward method, weight, active/inactive connections
    /// and health.
    Services {
        #[command(flatten)]
        target: Target,
        /// Connections, packets and bytes per service and server.
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        /// Connections, packets and bytes per second (last 2 s).
        #[arg(long, conflicts_with = "persistent")]
        rate: bool,
        /// Also list the persistence entries (client network -> server).
        #[arg(long)]
        persistent: bool,
        #[arg(long)]
        json: bool,
    },
    /// Add, edit or delete a virtual service at run time (`ipvsadm -A/-E/-D`).
    Service {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: ServiceOp,
    },
    /// Add, edit (weight; 0 drains) or delete a real server at run time
    /// (`ipvsadm -a/-e/-d`).
    Real {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: RealOp,
    },
    /// List flows like `conntrack -L` (filters combine with AND).
    Flows {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: FilterArgs,
        /// Print only the number of matching flows.
        #[arg(long)]
        count: bool,
        /// Print the flows as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `natgw set`'s operation.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SetOpArg {
    Add,
    Del,
    List,
    Flush,
}

impl From<SetOpArg> for SetOp {
    fn from(op: SetOpArg) -> SetOp {
        match op {
            SetOpArg::Add => SetOp::Add,
            SetOpArg::Del => SetOp::Del,
            SetOpArg::List => SetOp::List,
            SetOpArg::Flush => SetOp::Flush,
        }
    }
}

/// `conntrack -L`-style filters; every given field must match (`natgw
/// flows` and `natgw flush` options; a [`FlowFilter`] on the wire).
#[derive(Clone, Default, clap::Args)]
struct FilterArgs {
    /// Original-direction source (like conntrack `-s`).
    #[arg(long)]
    src: Option<String>,
    /// Original-direction destination (`-d`).
    #[arg(long)]
    dst: Option<String>,
    /// Reply-direction source (`-r`).
    #[arg(long)]
    reply_src: Option<String>,
    /// Reply-direction destination (`-q`).
    #[arg(long)]
    reply_dst: Option<String>,
    /// Any address of either tuple.
    #[arg(long)]
    addr: Option<String>,
    /// tcp, udp or icmp.
    #[arg(long, short)]
    proto: Option<String>,
    /// Original-direction source port.
    #[arg(long)]
    sport: Option<u16>,
    /// Original-direction destination port.
    #[arg(long)]
    dport: Option<u16>,
    /// Any port of either tuple.
    #[arg(long)]
    port: Option<u16>,
    /// TCP state name (ESTABLISHED, TIME_WAIT, ...).
    #[arg(long)]
    state: Option<String>,
}

impl From<FilterArgs> for FlowFilter {
    fn from(a: FilterArgs) -> FlowFilter {
        FlowFilter {
            src: a.src,
            dst: a.dst,
            reply_src: a.reply_src,
            reply_dst: a.reply_dst,
            addr: a.addr,
            proto: a.proto,
            sport: a.sport,
            dport: a.dport,
            port: a.port,
            state: a.state,
        }
    }
}

/// A virtual service on the command line: `--tcp VIP:PORT` or `--udp VIP:PORT`.
#[derive(clap::Args, Clone)]
#[group(required = true, multiple = false)]
struct SvcId {
    /// TCP service (`ipvsadm -t`).
    #[arg(long, short = 't', value_name = "VIP:PORT")]
    tcp: Option<std::net::SocketAddrV4>,
    /// UDP service (`ipvsadm -u`).
    #[arg(long, short = 'u', value_name = "VIP:PORT")]
    udp: Option<std::net::SocketAddrV4>,
}

impl SvcId {
    fn key(&self) -> natgw::lb::ServiceKey {
        let (a, proto) = match (self.tcp, self.udp) {
            (Some(a), _) => (a, natgw::packet::proto::TCP),
            (None, Some(a)) => (a, natgw::packet::proto::UDP),
            (None, None) => unreachable!("clap requires one"),
        };
        natgw::lb::ServiceKey {
            vip: u32::from(*a.ip()),
            port: a.port(),
            proto,
        }
    }
}

#[derive(clap::Args)]
struct SvcArgs {
    #[command(flatten)]
    svc: SvcId,
    /// rr, wrr, lc, wlc, sed, nq, sh, dh or mh.
    #[arg(long, default_value = "wlc")]
    scheduler: String,
    /// Persistence timeout in seconds (`ipvsadm -p`).
    #[arg(long, short = 'p', value_name = "SECS")]
    persistent: Option<u32>,
    /// Persistence granularity as a prefix length (`ipvsadm -M`).
    #[arg(long, short = 'M', value_name = "LEN", requires = "persistent")]
    netmask: Option<u8>,
    /// Also translate the client source to the director's address.
    #[arg(long)]
    fullnat: bool,
}

impl SvcArgs {
    fn parts(
        &self,
    ) -> anyhow::Result<(
        natgw::lb::ServiceKey,
        natgw::lb::Scheduler,
        Option<natgw::lb::Persistence>,
    )> {
        let sched: natgw::lb::Scheduler = self.scheduler.parse().map_err(anyhow::Error::msg)?;
        let pers = self.persistent.map(|t| natgw::lb::Persistence {
            timeout_secs: t,
            netmask: self.netmask,
            expire_quiescent: false,
        });
        Ok((self.svc.key(), sched, pers))
    }
}

#[derive(Subcommand)]
enum ServiceOp {
    /// A new service without real servers (add them with `natgw real add`).
    Add(SvcArgs),
    /// New scheduler or persistence; real servers stay.
    Edit(SvcArgs),
    /// Remove the service; its flows carry on until they end.
    Del {
        #[command(flatten)]
        svc: SvcId,
    },
}

#[derive(clap::Args)]
struct RealArgs {
    #[command(flatten)]
    svc: SvcId,
    /// The real server (`ipvsadm -r`); port 0 keeps the client's port.
    #[arg(long, short = 'r', value_name = "RIP:PORT")]
    real: std::net::SocketAddrV4,
    /// Share of new connections; 0 drains (`ipvsadm -w`).
    #[arg(long, short = 'w', default_value_t = 1)]
    weight: u32,
}

#[derive(Subcommand)]
enum RealOp {
    Add(RealArgs),
    /// Change the weight (0: no new connections, established ones carry on).
    Edit(RealArgs),
    Del {
        #[command(flatten)]
        svc: SvcId,
        #[arg(long, short = 'r', value_name = "RIP:PORT")]
        real: std::net::SocketAddrV4,
        /// Also remove the server's flows now (IPVS `expire_nodest_conn`).
        #[arg(long)]
        expire_flows: bool,
    },
}

#[derive(Subcommand)]
enum HaOp {
    /// Set this node's role: master forwards and streams its flows to the
    /// peer; backup and fault forward nothing and apply the peer's stream.
    Role {
        #[arg(value_enum)]
        role: HaRoleArg,
    },
    /// Role, peer, in sync or not, sequence numbers, counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if this node may take the virtual addresses: it is the active
    /// node, or it holds the peer's state (bulk resync complete). Exit 1
    /// otherwise, or if natgw is not running.
    Check,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum HaRoleArg {
    Master,
    Backup,
    Fault,
}

/// Which running natgw to talk to.
#[derive(clap::Args)]
struct Target {
    /// Control socket path.
    #[arg(long, short, global = true)]
    socket: Option<PathBuf>,
    /// Take the control socket path from this config file.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

impl Target {
    fn path(&self) -> anyhow::Result<PathBuf> {
        Ok(match (&self.socket, &self.config) {
            (Some(s), _) => s.clone(),
            (None, Some(c)) => Config::load(c)?.run.control_socket,
            (None, None) => PathBuf::from(natgw::control::config::DEFAULT_CONTROL_SOCKET),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run { .. }) {
        natgw::dataplane::sys::default_sigpipe();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natgw: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use anyhow::Context;
    match cli.cmd {
        Cmd::Check { config, quiet } => {
            let c = Config::load(&config)?;
            if !quiet {
                print!("{}", format::config_summary(&c));
            }
        }
        Cmd::Replay {
            config,
            input,
            output,
            iif,
            quiet,
            json,
        } => {
            let c = Config::load(&config)?;
            let engine = c.build_engine().map_err(anyhow::Error::msg)?;
            let inf = File::open(&input).with_context(|| format!("opening {}", input.display()))?;
            let outf =
                File::create(&output).with_context(|| format!("creating {}", output.display()))?;
            let report = replay::replay(
                &engine,
                BufReader::new(inf),
                BufWriter::new(outf),
                iif.as_deref(),
            )
            .with_context(|| format!("replaying {}", input.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", replay::render(&report, quiet));
            }
        }
        Cmd::Run {
            config,
            snapshot,
            takeover,
            allow_empty,
        } => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .format_timestamp_millis()
                .init();
            let opts = daemon::RunOptions {
                snapshot,
                takeover,
                allow_empty,
            };
            daemon::run(&config, &opts).map_err(anyhow::Error::msg)?;
        }
        Cmd::Snapshot { target, to } => {
            let to = to.map(|p| std::path::absolute(&p).unwrap_or(p));
            let r = socket::call(&target.path()?, protocol::Snapshot { path: to })
                .map_err(anyhow::Error::msg)?;
            print!("{}", format::snapshot_text(&r));
        }
        Cmd::Stats { target, json } => {
            let r =
                socket::call(&target.path()?, protocol::Stats {}).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", format::json(&r)?);
            } else {
                print!("{}", format::stats_text(&r));
            }
        }
        Cmd::Reload {
            config,
            socket: sock,
            flush_unmatched,
            json,
        } => {
            let target = Target {
                socket: sock,
                config: config.clone(),
            };
            // Validate here too: a bad file fails with its line and field
            // before the daemon is asked.
            if let Some(c) = &config {
                Config::load(c)?;
            }
            let config = config.map(|c| std::fs::canonicalize(&c).unwrap_or(c));
            let req = protocol::Reload {
                config,
                flush_unmatched,
            };
            let r = socket::call(&target.path()?, req).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", format::json(&r)?);
            } else {
                print!("{}", format::reload_text(&r, flush_unmatched));
            }
        }
        Cmd::Set {
            target,
            op,
            name,
            addr,
            timeout,
            json,
        } => {
            let req = protocol::Set {
                op: op.into(),
                name,
                prefix: addr,
                timeout,
            };
            let r = socket::call(&target.path()?, req).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", format::json(&r)?);
            } else {
                print!("{}", format::set_text(&r, op == SetOpArg::List));
            }
        }
        Cmd::Flush {
            target,
            filter,
            all,
        } => {
            let filter = FlowFilter::from(filter);
            filter.compile().map_err(anyhow::Error::msg)?;
            if !all && filter == FlowFilter::default() {
                anyhow::bail!("flush: give a filter (see --help) or --all to remove every flow");
            }
            let r = socket::call(&target.path()?, protocol::Flush { filter })
                .map_err(anyhow::Error::msg)?;
            println!("flushed {} flow(s)", r.flushed);
        }
        Cmd::Ha { target, op } => {
            let path = target.path()?;
            let role = match op {
                HaOp::Role { role } => Some(match role {
                    HaRoleArg::Master => natgw::ha::Role::Master,
                    HaRoleArg::Backup => natgw::ha::Role::Backup,
                    HaRoleArg::Fault => natgw::ha::Role::Fault,
                }),
                _ => None,
            };
            let r = socket::call(&path, protocol::Ha { role }).map_err(anyhow::Error::msg)?;
            match op {
                HaOp::Role { .. } => println!("role {}", r.role),
                HaOp::Status { json: true } => println!("{}", format::json(&r)?),
                HaOp::Status { json: false } => print!("{}", format::ha_text(&r)),
                HaOp::Check => {
                    if r.role != "master" && !r.in_sync {
                        anyhow::bail!(
                            "not in sync with the peer {} (role {}): do not take the virtual addresses yet",
                            r.peer,
                            r.role
                        );
                    }
                    println!(
                        "ok: role {}, {}",
                        r.role,
                        if r.in_sync { "in sync" } else { "active" }
                    );
                }
            }
        }
        Cmd::Services {
            target,
            stats,
            rate,
            persistent,
            json,
        } => {
            let r =
                socket::call(&target.path()?, protocol::Services {}).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", format::json(&r)?);
            } else {
                let view = match (stats, rate, persistent) {
                    (true, _, _) => format::ServicesView::Stats,
                    (_, true, _) => format::ServicesView::Rate,
                    (_, _, true) => format::ServicesView::Persistence,
                    _ => format::ServicesView::List,
                };
                print!("{}", format::services_text(&r, view));
            }
        }
        Cmd::Service { target, op } => {
            use natgw::lb::{Change, Forward, ServiceSpec};
            let change = match op {
                ServiceOp::Add(a) => {
                    let (key, scheduler, persistence) = a.parts()?;
                    Change::AddService(ServiceSpec {
                        key,
                        scheduler,
                        persistence,
                        reals: Vec::new(),
                        forward: if a.fullnat {
                            Forward::Fullnat
                        } else {
                            Forward::Masq
                        },
                    })
                }
                ServiceOp::Edit(a) => {
                    if a.fullnat {
                        anyhow::bail!(
                            "service edit: the forward method cannot change; delete and add the service"
                        );
                    }
                    let (key, scheduler, persistence) = a.parts()?;
                    Change::EditService {
                        key,
                        scheduler,
                        persistence,
                    }
                }
                ServiceOp::Del { svc } => Change::DelService { key: svc.key() },
            };
            lb_call(&target, change, false)?;
        }
        Cmd::Real { target, op } => {
            use natgw::lb::{Change, RealSpec};
            let spec = |a: &RealArgs| RealSpec {
                addr: u32::from(*a.real.ip()),
                port: a.real.port(),
                weight: a.weight,
            };
            let (change, expire) = match op {
                RealOp::Add(a) => (
                    Change::AddReal {
                        service: a.svc.key(),
                        real: spec(&a),
                    },
                    false,
                ),
                RealOp::Edit(a) => (
                    Change::EditReal {
                        service: a.svc.key(),
                        real: spec(&a),
                    },
                    false,
                ),
                RealOp::Del {
                    svc,
                    real,
                    expire_flows,
                } => (
                    Change::DelReal {
                        service: svc.key(),
                        addr: u32::from(*real.ip()),
                        port: real.port(),
                    },
                    expire_flows,
                ),
            };
            lb_call(&target, change, expire)?;
        }
        Cmd::Flows {
            target,
            filter,
            count,
            json,
        } => {
            // Check the filter here too, so a typo fails before connecting.
            let filter = FlowFilter::from(filter);
            filter.compile().map_err(anyhow::Error::msg)?;
            let q = protocol::Flows {
                filter,
                count_only: count && !json,
            };
            let r = socket::call(&target.path()?, q).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r.flows)?);
            } else if count {
                println!("{}", r.matched.unwrap_or(r.flows.len()));
            } else {
                for l in &r.lines {
                    println!("{l}");
                }
                eprintln!("natgw: {} flow(s) shown of {} live", r.lines.len(), r.total);
            }
        }
    }
    Ok(())
}

fn lb_call(target: &Target, change: natgw::lb::Change, expire_flows: bool) -> anyhow::Result<()> {
    let req = protocol::Lb {
        change,
        expire_flows,
    };
    let r = socket::call(&target.path()?, req).map_err(anyhow::Error::msg)?;
    println!("{}", r.changed);
    Ok(())
}
