//! The stop guard: an nftables table that keeps the kernel from touching
//! NAT traffic on natgw's data interfaces while natgw is not running.
//!
//! With AF_XDP, natgw takes every IPv4 frame off its interfaces, so the
//! kernel never sees NAT traffic while natgw runs. Between a stop and the
//! next start (restart, upgrade, crash) the kernel would: it would forward
//! inside traffic untranslated (if `ip_forward` is on) and answer packets
//! of NATed connections addressed to the gateway with TCP RST or ICMP port
//! unreachable, killing connections that natgw could have picked up again.
//! The guard drops, on the data interfaces only: all forwarding, and TCP,
//! UDP and ICMP replies/errors addressed to the host. Senders retransmit
//! and connections survive a restart.
//!
//! One exception: TCP to the health checks' source ports
//! (`PortRange::HEALTH_CHECK`, 61000-61999) is accepted, because natgw's
//! health checks are kernel sockets on the gateway and their replies must
//! reach them while natgw runs (the XDP program passes exactly those up).
//! natgw never gives a NAT flow a port in that range, so accepting it
//! cannot hand a NATed connection to the kernel.
//!
//! `natgw run` installs it (replacing any earlier copy) and leaves it in
//! place on exit, on purpose. Remove it with `nft delete table inet natgw_guard`
//! when the box should stop being a gateway.

use crate::nat::PortRange;
use std::io::Write;
use std::process::{Command, Stdio};

pub const TABLE: &str = "natgw_guard";

/// The nftables script for interfaces `ifs`.
pub fn script(ifs: &[String]) -> String {
    let set = ifs
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "table inet {TABLE} {{}}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority -300; policy accept;\n\
         \t\tiifname {{ {set} }} tcp dport {lo}-{hi} accept\n\
         \t\tiifname {{ {set} }} meta l4proto {{ tcp, udp }} drop\n\
         \t\tiifname {{ {set} }} icmp type {{ echo-reply, destination-unreachable, time-exceeded, parameter-problem }} drop\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority -300; policy accept;\n\
         \t\tiifname {{ {set} }} drop\n\
         \t\toifname {{ {set} }} drop\n\
         \t}}\n\
         }}\n",
        lo = PortRange::HEALTH_CHECK.lo,
        hi = PortRange::HEALTH_CHECK.hi,
    )
}

/// Removes the guard if it is there; returns whether it was. The TUN
/// backend calls this once it runs: it routes through the kernel's
/// forwarding path, which the guard blocks, and has its own stop
/// protection (blackhole routes).
pub fn remove() -> Result<bool, String> {
    let out = Command::new("nft")
        .args(["delete", "table", "inet", TABLE])
        .output()
        .map_err(|e| format!("cannot run nft ({e}); install nftables"))?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such file") || err.contains("does not exist") {
        Ok(false)
    } else {
        Err(format!("nft delete table inet {TABLE}: {}", err.trim()))
    }
}

/// Installs (or replaces) the guard. An error says why; the caller decides
/// whether that is fatal.
pub fn install(ifs: &[String]) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft ({e}); install nftables"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script(ifs).as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the guard table: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn script_names_every_interface() {
        let s = super::script(&["lan0".into(), "wan0".into()]);
        assert!(s.contains("iifname { \"lan0\", \"wan0\" } drop"));
        let accept = s
            .find("tcp dport 61000-61999 accept")
            .expect("health-check replies accepted");
        assert!(accept < s.find("meta l4proto { tcp, udp } drop").unwrap());
        assert!(s.starts_with("table inet natgw_guard {}\ndelete table inet natgw_guard\n"));
    }
}
