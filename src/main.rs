//! `natgw`: thin command-line front end over the library.

use clap::{Parser, Subcommand};
use natgw::control::config::Config;
use natgw::control::{format, replay};
use natgw::engine::Engine;
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
            let engine = Engine::new(c.engine, c.ruleset, c.sets);
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
    }
    Ok(())
}
