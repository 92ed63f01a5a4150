//! The config loader. Oracle: no panic; an error names the file, a line
//! inside the text and a column; a config that loads builds its engine and
//! its data-plane config, and its engine processes a frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use natgw::control::config::{Config, ConfigError};
use std::path::Path;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Err(ConfigError::Invalid {
            file, line, col, ..
        }) => {
            assert_eq!(file, "fuzz.toml");
            let lines = text.split('\n').count();
            assert!(
                (1..=lines).contains(&line),
                "error on line {line} of a {lines}-line text"
            );
            assert!(col >= 1, "column {col}");
        }
        Err(e) => panic!("parse gave a non-located error: {e}"),
        Ok(c) => {
            // A loaded config builds; reload onto itself changes nothing.
            let engine = match c.build_engine() {
                Ok(e) => e,
                Err(e) => panic!("a config that loads does not build: {e}"),
            };
            let _ = c.dataplane();
            let _ = c.checks();
            let _ = c.vips();
            let _ = natgw::control::format::config_summary(&c);
            let now = natgw::conntrack::Time::from_secs(1);
            if let Err(e) = engine.reload(&c.engine, c.ruleset.clone(), &c.sets, now) {
                panic!("reloading a config onto its own engine fails: {e}");
            }
            let mut buf = [0u8; 128];
            let f = natgw_fuzz::tiny_udp();
            buf[..f.len()].copy_from_slice(&f);
            let counters = natgw::engine::Counters::default();
            for iif in 0..c.engine.interfaces.len().min(4) as natgw::nat::IfId {
                let _ = engine.process(
                    &mut buf.clone(),
                    f.len(),
                    natgw::packet::Link::Ethernet,
                    iif,
                    natgw::conntrack::Time::from_secs(1),
                    &counters,
                );
            }
        }
    }
}
