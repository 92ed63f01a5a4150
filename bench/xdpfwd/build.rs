// Compiles bpf/natgw_xdp.c with clang into $OUT_DIR/natgw_xdp.o (embedded via include_bytes!).
// Uses libbpf-sys's vendored headers (DEP_BPF_INCLUDE, we depend on libbpf-sys directly)
// so libbpf-dev is not required; needs clang + linux-libc-dev.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let src = "bpf/natgw_xdp.c";
    println!("cargo:rerun-if-changed={src}");
    let mut cmd = Command::new(env::var("BPF_CLANG").unwrap_or_else(|_| "clang".into()));
    cmd.args(["-O2", "-g", "-Wall", "-target", "bpf", "-c", src, "-o"])
        .arg(out.join("natgw_xdp.o"));
    if let Some(inc) = env::var_os("DEP_BPF_INCLUDE") {
        cmd.arg("-I").arg(inc);
    }
    // <asm/types.h> lives under the multiarch dir on Debian (gcc-multilib adds /usr/include/asm)
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    cmd.arg(format!("-I/usr/include/{arch}-linux-gnu"));
    let st = cmd.status().expect("failed to run clang (apt-get install clang)");
    assert!(st.success(), "clang -target bpf failed");
}
