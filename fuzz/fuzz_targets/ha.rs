//! HA sync datagrams into a node's receiving side (wire decode, the
//! stream, restore into the engine), with an oracle (see `natgw_fuzz::ha`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| natgw_fuzz::ha::run(data));
