//! `natgw`: thin command-line front end over the library.

use clap::{Parser, Subcommand};
use natgw::control::config::Config;
use natgw::control::socket::{
    self, FlowFilter, FlowsReport, ReloadReply, Request, SetOp, SetReport, StatsReport,
};
use natgw::control::{daemon, format, replay};
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
        op: SetOp,
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
        filter: FlowFilter,
        /// Remove every flow.
        #[arg(long)]
        all: bool,
    },
    /// List flows like `conntrack -L` (filters combine with AND).
    Flows {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: FlowFilter,
        /// Print only the number of matching flows.
        #[arg(long)]
        count: bool,
        /// Print the flows as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which running natgw to talk to.
#[derive(clap::Args)]
struct Target {
    /// Control socket path.
    #[arg(long, short)]
    socket: Option<PathBuf>,
    /// Take the control socket path from this config file.
    #[arg(long, short)]
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
        Cmd::Run { config } => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .format_timestamp_millis()
                .init();
            daemon::run(&config).map_err(anyhow::Error::msg)?;
        }
        Cmd::Stats { target, json } => {
            let data =
                socket::call(&target.path()?, &Request::Stats).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                let r: StatsReport = serde_json::from_value(data)?;
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
            let req = Request::Reload {
                config,
                flush_unmatched,
            };
            let data = socket::call(&target.path()?, &req).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                let r: ReloadReply = serde_json::from_value(data)?;
                println!(
                    "reloaded {}: {} rule(s), {} set(s); {} live flow(s) keep their translation, {} match no rule now{}",
                    r.config,
                    r.report.rules,
                    r.report.sets,
                    r.report.flows,
                    r.report.unmatched_flows,
                    if flush_unmatched {
                        format!(", {} flushed", r.flushed)
                    } else {
                        String::new()
                    }
                );
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
            let req = Request::Set {
                op,
                name,
                prefix: addr,
                timeout,
            };
            let data = socket::call(&target.path()?, &req).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                let r: SetReport = serde_json::from_value(data)?;
                if !r.changed.is_empty() {
                    println!("set {}: {}", r.name, r.changed);
                }
                if op == SetOp::List {
                    println!(
                        "set {} (default timeout {}s), {} entries:",
                        r.name,
                        r.default_timeout,
                        r.entries.len()
                    );
                    for e in &r.entries {
                        match e.expires_in {
                            Some(s) => println!("  {} timeout {s}", e.prefix),
                            None => println!("  {}", e.prefix),
                        }
                    }
                }
            }
        }
        Cmd::Flush {
            target,
            filter,
            all,
        } => {
            filter.compile().map_err(anyhow::Error::msg)?;
            if !all && filter == FlowFilter::default() {
                anyhow::bail!("flush: give a filter (see --help) or --all to remove every flow");
            }
            let data = socket::call(&target.path()?, &Request::Flush { filter })
                .map_err(anyhow::Error::msg)?;
            println!("flushed {} flow(s)", data["flushed"]);
        }
        Cmd::Flows {
            target,
            filter,
            count,
            json,
        } => {
            // Check the filter here too, so a typo fails before connecting.
            filter.compile().map_err(anyhow::Error::msg)?;
            let data = socket::call(&target.path()?, &Request::Flows { filter })
                .map_err(anyhow::Error::msg)?;
            let r: FlowsReport = serde_json::from_value(data)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r.flows)?);
            } else if count {
                println!("{}", r.flows.len());
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
