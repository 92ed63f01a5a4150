//! Compiles natgw's XDP program (bpf/natgw_xdp.c) with clang for the BPF
//! target; the object is embedded in the binary. Uses the libbpf headers
//! that libbpf-sys ships (DEP_BPF_INCLUDE), so libbpf-dev is not needed.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"));
    let src = "bpf/natgw_xdp.c";
    println!("cargo:rerun-if-changed={src}");
    let mut cmd = Command::new(env::var("BPF_CLANG").unwrap_or_else(|_| "clang".into()));
    cmd.args(["-O2", "-g", "-Wall", "-target", "bpf", "-c", src, "-o"])
        .arg(out.join("natgw_xdp.o"));
    if let Some(inc) = env::var_os("DEP_BPF_INCLUDE") {
        cmd.arg("-I").arg(inc);
    }
    // <asm/types.h> lives under the multiarch include directory on Debian.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    cmd.arg(format!("-I/usr/include/{arch}-linux-gnu"));
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang -target bpf failed ({s}); run scripts/setup.sh"),
        Err(e) => panic!("cannot run clang ({e}); run scripts/setup.sh to install it"),
    }
}
