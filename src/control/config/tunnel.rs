//! `[[tunnel]]` sections and the policy selectors of `[[route]]` (`from`,
//! `mark`): parsed and validated here, beside the rest of the config.
//!
//! ```toml
//! [[tunnel]]
//! name = "tun1"          # an interface name for routes and rules
//! mode = "gre"           # or "ipip"
//! key = 42               # GRE only, optional
//! local = "203.0.113.1"  # one of the gateway's addresses
//! remote = "203.0.113.50"
//! mtu = 1476             # optional: the underlying device's MTU (1500 here) minus the
//!                        # overhead (20 ipip, 24 gre, 28 gre with key)
//! ```
//!
//! A tunnel's id follows the interfaces' (`interfaces.len() + k`); the
//! underlying interface is whatever the main table routes `remote` to,
//! which must exist and must not be a tunnel.

use super::{ConfigError, Src, parse_addr};
use crate::engine::{Interface, Route, RouteTable, Tunnel};
use crate::nat::IfId;
use crate::packet::tunnel::Mode;
use serde::Deserialize;
use std::collections::HashMap;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTunnel {
    name: Spanned<String>,
    mode: Spanned<String>,
    key: Option<Spanned<u32>>,
    local: Spanned<String>,
    remote: Spanned<String>,
    mtu: Option<Spanned<u16>>,
}

/// Builds the tunnels and adds their names to `names` (ids after the
/// interfaces').
pub(super) fn build_tunnels(
    raw: &[Spanned<RawTunnel>],
    src: &Src<'_>,
    interfaces: &[Interface],
    names: &mut HashMap<String, IfId>,
) -> Result<Vec<Tunnel>, ConfigError> {
    let mut out: Vec<Tunnel> = Vec::new();
    for (i, rt) in raw.iter().enumerate() {
        let r = rt.get_ref();
        let f = |name: &str| format!("tunnel[{i}].{name}");
        let name = r.name.get_ref().clone();
        if name.is_empty() || name.len() > 15 {
            return Err(src.err(
                r.name.span(),
                format!("{}: interface names are 1-15 characters", f("name")),
            ));
        }
        let id = interfaces.len() + i;
        if names.insert(name.clone(), id as IfId).is_some() {
            return Err(src.err(
                r.name.span(),
                format!(
                    "{}: `{name}` is already the name of an interface or tunnel",
                    f("name")
                ),
            ));
        }
        let mode = src.parse(&f("mode"), &r.mode, |s| match s {
            "ipip" => Ok(Mode::Ipip),
            "gre" => Ok(Mode::Gre { key: None }),
            _ => Err(format!("`{s}` is not one of \"ipip\", \"gre\"")),
        })?;
        let mode = match (mode, &r.key) {
            (Mode::Gre { .. }, Some(k)) => Mode::Gre {
                key: Some(*k.get_ref()),
            },
            (Mode::Ipip, Some(k)) => {
                return Err(src.err(
                    k.span(),
                    format!("{}: only a GRE tunnel has a key", f("key")),
                ));
            }
            (m, None) => m,
        };
        let local = src.parse(&f("local"), &r.local, parse_addr)?;
        let owned = |a: u32| {
            interfaces
                .iter()
                .any(|x| x.addr.addr == a || x.extra.contains(&a))
        };
        if !owned(local) {
            return Err(src.err(
                r.local.span(),
                format!(
                    "{}: {} is not an address of the gateway (an interface's `address` or `extra_addresses`)",
                    f("local"),
                    r.local.get_ref()
                ),
            ));
        }
        let remote = src.parse(&f("remote"), &r.remote, parse_addr)?;
        if owned(remote) {
            return Err(src.err(
                r.remote.span(),
                format!(
                    "{}: {} is the gateway's own address",
                    f("remote"),
                    r.remote.get_ref()
                ),
            ));
        }
        if let Some(o) = out
            .iter()
            .find(|t| t.local == local && t.remote == remote && t.mode.proto() == mode.proto())
        {
            return Err(src.err(
                r.remote.span(),
                format!(
                    "{}: tunnel `{}` already has these endpoints and mode",
                    f("remote"),
                    o.name
                ),
            ));
        }
        let oh = mode.overhead() as u16;
        let mtu = match &r.mtu {
            Some(m) => {
                let v = *m.get_ref();
                if !(68..=u16::MAX - oh).contains(&v) {
                    return Err(src.err(
                        m.span(),
                        format!("{}: must be 68..={}, not {v}", f("mtu"), u16::MAX - oh),
                    ));
                }
                v
            }
            None => 1500 - oh,
        };
        out.push(Tunnel {
            name,
            mode,
            local,
            remote,
            mtu,
            mtu_auto: r.mtu.is_none(),
        });
    }
    Ok(out)
}

/// Every tunnel's remote must be reachable by the main table, and not
/// through a tunnel (its outer packets would loop).
pub(super) fn check_underlay(
    raw: &[Spanned<RawTunnel>],
    tunnels: &[Tunnel],
    src: &Src<'_>,
    interfaces: &[Interface],
    routes: &[Route],
) -> Result<(), ConfigError> {
    let table = RouteTable::new(interfaces, routes);
    for (i, (t, rt)) in tunnels.iter().zip(raw).enumerate() {
        let span = rt.get_ref().remote.span();
        match table.lookup(t.remote) {
            None => {
                return Err(src.err(
                    span,
                    format!(
                        "tunnel[{i}].remote: no route to {} (the tunnel's underlying interface is the one the routes send its remote to)",
                        std::net::Ipv4Addr::from(t.remote)
                    ),
                ));
            }
            Some(h) if usize::from(h.oif) >= interfaces.len() => {
                return Err(src.err(
                    span,
                    format!(
                        "tunnel[{i}].remote: the route to {} goes into a tunnel; it must leave by a physical interface",
                        std::net::Ipv4Addr::from(t.remote)
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}
