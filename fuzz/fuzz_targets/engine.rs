//! The engine fed a sequence of frames on three interfaces with a virtual
//! clock, with an oracle (see `natgw_fuzz::harness`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| natgw_fuzz::harness::run(data));
