//! Host setup for the TUN backend, kept apart from the device: running
//! `ip` (iproute2) and reading its JSON output (`ip -N -j rule|route
//! show`), and the sysctls the backend needs. What natgw decides from
//! these facts (which rules and routes it adds, reuses or refuses) stays
//! in [`tun`](super::tun).

use super::DataplaneError;
use crate::nat::PortRange;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

/// The kernel's `local` routing table.
pub(super) const LOCAL_TABLE: u32 = 255;

/// One `ip rule`, as far as natgw cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IpRule {
    pub(super) pref: u32,
    pub(super) table: Option<u32>,
    pub(super) iif: Option<String>,
    /// No selector but (at most) `iif`, and a plain `lookup` action.
    pub(super) plain: bool,
    /// natgw's health-check rule: `ipproto tcp dport LO-HI lookup local`
    /// for `PortRange::HEALTH_CHECK`, nothing else.
    pub(super) check: bool,
    /// As `ip rule` would show it (roughly), for messages.
    pub(super) text: String,
}

/// An `ip -j` object as `key value ...` (roughly `ip`'s own text), for
/// messages; `skip` names keys left out.
pub(super) fn render(o: &serde_json::Map<String, Value>, skip: &[&str]) -> String {
    let mut v = Vec::new();
    for (k, x) in o {
        if skip.contains(&k.as_str()) {
            continue;
        }
        match x {
            Value::Null => v.push(k.clone()),
            Value::Array(a) if a.is_empty() => {}
            Value::String(s) => v.push(format!("{k} {s}")),
            x => v.push(format!("{k} {x}")),
        }
    }
    v.join(" ")
}

fn s_or(o: &serde_json::Map<String, Value>, k: &str) -> String {
    o.get(k)
        .and_then(Value::as_str)
        .map_or_else(|| "?".into(), String::from)
}

/// Parses `ip -N -j rule show`.
pub(super) fn parse_rules(json: &str) -> Result<Vec<IpRule>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let list = v.as_array().ok_or("not a JSON array")?;
    // Keys a rule of the form `[iif X] lookup T` has.
    const PLAIN: [&str; 6] = [
        "priority",
        "src",
        "iif",
        "iif_detached",
        "table",
        "protocol",
    ];
    list.iter()
        .map(|r| {
            let o = r.as_object().ok_or("a rule is not a JSON object")?;
            let pref = o
                .get("priority")
                .and_then(Value::as_u64)
                .ok_or("a rule without a priority")? as u32;
            let table = o
                .get("table")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok());
            let iif = o.get("iif").and_then(Value::as_str).map(String::from);
            let src_all = o
                .get("src")
                .and_then(Value::as_str)
                .is_none_or(|s| s == "all");
            let plain = o.keys().all(|k| PLAIN.contains(&k.as_str())) && src_all && table.is_some();
            const CHECK: [&str; 7] = [
                "priority",
                "src",
                "ipproto",
                "dport_start",
                "dport_end",
                "table",
                "protocol",
            ];
            let port = |k: &str| o.get(k).and_then(Value::as_u64);
            let check = o.keys().all(|k| CHECK.contains(&k.as_str()))
                && src_all
                && table == Some(LOCAL_TABLE)
                && o.get("ipproto")
                    .and_then(Value::as_str)
                    .is_some_and(|p| ["tcp", "ipproto-6", "6"].contains(&p))
                && port("dport_start") == Some(PortRange::HEALTH_CHECK.lo as u64)
                && port("dport_end") == Some(PortRange::HEALTH_CHECK.hi as u64);
            Ok(IpRule {
                pref,
                table,
                iif,
                plain,
                check,
                text: format!(
                    "{} lookup {}",
                    render(o, &["priority", "table"]),
                    s_or(o, "table")
                ),
            })
        })
        .collect()
}

/// One route of `ip -N -j route show table T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IpRoute {
    pub(super) kind: String,
    pub(super) dst: String,
    pub(super) dev: Option<String>,
    pub(super) metric: u64,
    pub(super) text: String,
}

pub(super) fn parse_routes(json: &str) -> Result<Vec<IpRoute>, String> {
    let json = json.trim();
    if json.is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let list = v.as_array().ok_or("not a JSON array")?;
    list.iter()
        .map(|r| {
            let o = r.as_object().ok_or("a route is not a JSON object")?;
            let s = |k: &str| o.get(k).and_then(Value::as_str).map(String::from);
            Ok(IpRoute {
                // Unicast routes have no "type"; `-N` prints the number
                // (6 is RTN_BLACKHOLE).
                kind: match s("type").as_deref() {
                    None => "unicast".into(),
                    Some("6") => "blackhole".into(),
                    Some(t) => t.into(),
                },
                dst: s("dst").unwrap_or_default(),
                dev: s("dev"),
                metric: o.get("metric").and_then(Value::as_u64).unwrap_or(0),
                text: render(o, &[]),
            })
        })
        .collect()
}

/// Forwarding on, reverse-path filtering off where natgw needs it, ARP
/// answers without delay (see the module docs).
///
/// `pairs` are (TUN device, data interface).
pub(super) fn set_sysctls(pairs: &[(&str, &str)]) -> Result<(), DataplaneError> {
    const CONF: &str = "/proc/sys/net/ipv4/conf";
    let tuns: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let old_all: u32 = read_sysctl(&format!("{CONF}/all/rp_filter"))?;
    if old_all != 0 {
        let dir = std::fs::read_dir(CONF).map_err(|e| DataplaneError(format!("{CONF}: {e}")))?;
        for d in dir.filter_map(Result::ok) {
            let name = d.file_name().to_string_lossy().into_owned();
            if name == "all" || tuns.contains(&name.as_str()) {
                continue;
            }
            let path = format!("{CONF}/{name}/rp_filter");
            if read_sysctl(&path)? < old_all {
                write_sysctl(&path, old_all)?;
            }
        }
        write_sysctl(&format!("{CONF}/all/rp_filter"), 0)?;
        log::warn!(
            "tun: set net.ipv4.conf.all.rp_filter from {old_all} to 0 (the TUN devices need \
             it off) and raised other devices' own rp_filter to {old_all}, which keeps their \
             effective mode"
        );
    }
    for &(t, x) in pairs {
        write_sysctl(&format!("{CONF}/{t}/rp_filter"), 0)?;
        write_sysctl(&format!("{CONF}/{t}/accept_local"), 1)?;
        write_sysctl(&format!("{CONF}/{t}/forwarding"), 1)?;
        // No IPv6 on the TUN devices: nothing to route there, and no
        // router solicitations for natgw to read.
        let v6 = format!("/proc/sys/net/ipv6/conf/{t}/disable_ipv6");
        if std::path::Path::new(&v6).exists() {
            write_sysctl(&v6, 1)?;
        }
        if read_sysctl(&format!("{CONF}/{x}/rp_filter"))? == 1 {
            write_sysctl(&format!("{CONF}/{x}/rp_filter"), 2)?;
            log::info!("tun: {x}: rp_filter strict -> loose (2)");
        }
        write_sysctl(&format!("{CONF}/{x}/forwarding"), 1)?;
        write_sysctl(&format!("/proc/sys/net/ipv4/neigh/{x}/proxy_delay"), 0)?;
    }
    write_sysctl("/proc/sys/net/ipv4/ip_forward", 1)
}

pub(super) fn read_sysctl(path: &str) -> Result<u32, DataplaneError> {
    let s = std::fs::read_to_string(path).map_err(|e| DataplaneError(format!("{path}: {e}")))?;
    s.trim()
        .parse()
        .map_err(|_| DataplaneError(format!("{path}: `{}` is not a number", s.trim())))
}

/// Writes `v` to sysctl `path` unless it holds `v` already.
pub(super) fn write_sysctl(path: &str, v: u32) -> Result<(), DataplaneError> {
    if read_sysctl(path)? == v {
        return Ok(());
    }
    std::fs::write(path, format!("{v}\n"))
        .map_err(|e| DataplaneError(format!("setting {path} to {v}: {e}")))
}

pub(super) fn read_mtu(ifname: &str) -> Result<u16, DataplaneError> {
    let path = format!("/sys/class/net/{ifname}/mtu");
    let mtu: u32 = read_sysctl(&path)?;
    // TUN takes at most 65535; a larger MTU is capped there.
    Ok(mtu.min(u16::MAX as u32) as u16)
}

/// Every IPv4 address the host has, on any device.
pub(super) fn host_ipv4() -> Result<Vec<u32>, DataplaneError> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| DataplaneError(format!("listing addresses: {e}")))?;
    let mut v: Vec<u32> = addrs
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| u32::from(s.ip())))
        .collect();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Runs `ip ARGS`; returns its stdout, or an error with the command and
/// its stderr.
pub(super) fn ip(args: &[&str]) -> Result<String, DataplaneError> {
    let cmd = format!("ip {}", args.join(" "));
    let out = Command::new("ip").args(args).output().map_err(|e| {
        DataplaneError(format!(
            "cannot run `{cmd}`: {e} (the tun backend needs iproute2)"
        ))
    })?;
    if !out.status.success() {
        return Err(DataplaneError(format!(
            "`{cmd}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `lines` through one `ip -batch -` (with `-force`: past failures).
pub(super) fn ip_batch(lines: &[String], force: bool) -> Result<(), DataplaneError> {
    if lines.is_empty() {
        return Ok(());
    }
    let fail = |e: String| DataplaneError(format!("`ip -batch -` ({}, ...): {e}", lines[0]));
    let mut child = Command::new("ip")
        .args(if force {
            &["-force", "-batch", "-"][..]
        } else {
            &["-batch", "-"][..]
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run: {e} (the tun backend needs iproute2)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let text = lines.join("\n") + "\n";
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
