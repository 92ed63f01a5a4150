//! The Prometheus examples (`examples/prometheus/`): `promtool` accepts the
//! scrape config and the alert rules, and every natgw metric the rules
//! use is one natgw exports (except the HA one, marked as not exported
//! yet in the file).
//!
//! Needs `promtool` (Debian package `prometheus`, installed by
//! scripts/setup.sh). Without it the test says SKIPPED, unless it must
//! run (root, `CI` or `NATGW_E2E=1`): then it fails.

use natgw::control::metrics::METRIC_NAMES;
use std::path::Path;
use std::process::Command;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/prometheus");
/// Metrics the rules may name before natgw exports them (none today).
const NOT_YET: &[&str] = &[];

fn must_run() -> bool {
    let set = |k: &str| {
        std::env::var(k).is_ok_and(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "false" | "no"
            )
        })
    };
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false);
    root || set("CI") || set("NATGW_E2E")
}

/// `promtool ARGS` in the examples directory; None (skip) without promtool
/// where that is allowed.
fn promtool(args: &[&str]) -> Option<(bool, String)> {
    match Command::new("promtool")
        .args(args)
        .current_dir(DIR)
        .output()
    {
        Ok(o) => Some((
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )),
        Err(e) if !must_run() => {
            eprintln!("SKIPPED: promtool: {e} (scripts/setup.sh installs it)");
            None
        }
        Err(e) => panic!("promtool: {e}; run scripts/setup.sh (Debian package prometheus)"),
    }
}

#[test]
fn alert_rules_pass_promtool_and_name_exported_metrics() {
    let Some((ok, out)) = promtool(&["check", "rules", "natgw-alerts.yml"]) else {
        return;
    };
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");

    let rules = std::fs::read_to_string(Path::new(DIR).join("natgw-alerts.yml")).unwrap();
    let mut used: Vec<String> = Vec::new();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        let mut rest = line;
        while let Some(i) = rest.find("natgw_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            used.push(name);
        }
    }
    for want in [
        "natgw_conntrack_entries",
        "natgw_nat_port_exhausted_total",
        "natgw_drops_total",
        "natgw_ha_in_sync",
        "natgw_ha_peer_alive",
    ] {
        assert!(used.iter().any(|u| u == want), "no rule uses {want}");
    }
    for u in &used {
        assert!(
            METRIC_NAMES.contains(&u.as_str()) || NOT_YET.contains(&u.as_str()),
            "the rules use {u}, which natgw does not export"
        );
    }
    for n in NOT_YET {
        assert!(
            !METRIC_NAMES.contains(n),
            "{n} is exported now: drop it from NOT_YET and the rule file's note"
        );
    }
}

#[test]
fn scrape_config_passes_promtool() {
    let Some((ok, out)) = promtool(&["check", "config", "prometheus.yml"]) else {
        return;
    };
    assert!(ok, "promtool check config:\n{out}");
    assert!(
        out.contains("is valid prometheus config file syntax"),
        "{out}"
    );
}
