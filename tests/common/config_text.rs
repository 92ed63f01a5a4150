//! [`ConfigText`]: the TOML config text of a test gateway, built from the
//! base interfaces and route plus the sections a test adds, so the tests do
//! not paste the same text again and again.
//!
//! ```ignore
//! let text = ConfigText::seeded()
//!     .table("limits", "max_flows = 4096")
//!     .rule(dnat_web().name("web"))
//!     .rule(masquerade_lan().s("mapping", "endpoint-independent"))
//!     .text();
//! ```

use std::fmt::Display;

/// Connected networks and a default route shared by most tests: a LAN
/// `10.0.0.0/24` behind `lan0` (the gateway is 10.0.0.1) and the public side
/// `203.0.113.0/24` on `wan0` (the gateway is 203.0.113.1, the upstream
/// router 203.0.113.254).
pub const BASE_INTERFACES: &str = r#"
[[interface]]
name = "lan0"
role = "inside"
address = "10.0.0.1/24"

[[interface]]
name = "wan0"
role = "outside"
address = "203.0.113.1/24"

[[route]]
to = "0.0.0.0/0"
via = "203.0.113.254"
"#;

/// A whole config: `[gateway]` (left out when empty), [`BASE_INTERFACES`],
/// then the tables, sets, rules and services in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct ConfigText {
    gateway: String,
    rest: String,
}

impl ConfigText {
    /// The base interfaces and route, no `[gateway]` table.
    pub fn base() -> ConfigText {
        ConfigText::default()
    }

    /// [`base`](Self::base) with a fixed port-allocation seed (`seed = 7`),
    /// so that runs are repeatable.
    pub fn seeded() -> ConfigText {
        ConfigText::base().gateway_opt("seed", 7)
    }

    /// `key = value` in `[gateway]`; `value` is TOML text (`7`, `"pass"`).
    pub fn gateway_opt(self, key: &str, value: impl Display) -> ConfigText {
        self.gateway_lines(&format!("{key} = {value}\n"))
    }

    /// Lines of TOML text in `[gateway]`.
    pub fn gateway_lines(mut self, lines: &str) -> ConfigText {
        self.gateway.push_str(lines);
        if !self.gateway.is_empty() && !self.gateway.ends_with('\n') {
            self.gateway.push('\n');
        }
        self
    }

    /// A table such as `[limits]` or `[timeouts]` with its lines.
    pub fn table(self, name: &str, lines: &str) -> ConfigText {
        self.raw(&format!("\n[{name}]\n{lines}\n"))
    }

    /// A `[[set]]`.
    pub fn set(self, f: Fields) -> ConfigText {
        self.raw(&format!("\n[[set]]\n{f}"))
    }

    /// A `[[rule]]`.
    pub fn rule(self, f: Fields) -> ConfigText {
        self.raw(&format!("\n[[rule]]\n{f}"))
    }

    /// A `[[service]]` and its `[[service.real]]`s.
    pub fn service(self, f: Fields, reals: &[Fields]) -> ConfigText {
        let mut c = self.raw(&format!("\n[[service]]\n{f}"));
        for r in reals {
            c = c.raw(&format!("\n[[service.real]]\n{r}"));
        }
        c
    }

    /// TOML text as it is, after what is there.
    pub fn raw(mut self, text: &str) -> ConfigText {
        self.rest.push_str(text);
        self
    }

    pub fn text(&self) -> String {
        let gateway = if self.gateway.is_empty() {
            String::new()
        } else {
            format!("[gateway]\n{}\n", self.gateway)
        };
        format!("{gateway}{BASE_INTERFACES}{}", self.rest)
    }
}

/// The `key = value` lines of one table, in order.
#[derive(Debug, Clone, Default)]
pub struct Fields(String);

impl Fields {
    pub fn new() -> Fields {
        Fields::default()
    }

    /// `key = "value"`.
    pub fn s(self, key: &str, value: &str) -> Fields {
        self.v(key, format!("\"{value}\""))
    }

    /// `key = value`, `value` as TOML text (a number, `true`, an array).
    pub fn v(mut self, key: &str, value: impl Display) -> Fields {
        self.0.push_str(&format!("{key} = {value}\n"));
        self
    }

    /// `name = "name"`, first.
    pub fn name(self, name: &str) -> Fields {
        Fields(format!("name = \"{name}\"\n{}", self.0))
    }
}

impl Display for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Masquerade for the LAN on the way out of wan0 (iptables
/// `-s 10.0.0.0/24 -o wan0 -j MASQUERADE`).
pub fn masquerade_lan() -> Fields {
    Fields::new()
        .s("oif", "wan0")
        .s("src", "10.0.0.0/24")
        .s("action", "masquerade")
}

/// Port forwarding `public:8080 -> 10.0.0.5:80` for outside TCP clients.
pub fn dnat_web() -> Fields {
    Fields::new()
        .s("iif", "wan0")
        .s("proto", "tcp")
        .v("dport", 8080)
        .s("action", "dnat")
        .s("to", "10.0.0.5:80")
}
