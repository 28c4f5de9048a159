//! Builds the eBPF object on every build where its sources changed, and hands its path to the
//! crate (`GEMINST_EBPF_OBJECT`), so the binary never embeds a stale object.

#[path = "../xtask/src/ebpf.rs"]
mod ebpf;

use std::{env, fs, path::PathBuf};

/// Paths whose change must rebuild the eBPF object (directories are watched recursively).
const INPUTS: &[&str] = &[
    "geminst-ebpf/src",
    "geminst-ebpf/Cargo.toml",
    "geminst-ebpf/Cargo.lock",
    "geminst-ebpf/rust-toolchain.toml",
    "geminst-ebpf/.cargo/config.toml",
    "geminst-common/src",
    "geminst-common/Cargo.toml",
    "xtask/src/ebpf.rs",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("geminst/ sits in the workspace").to_path_buf();
    for input in INPUTS {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }

    // One eBPF target directory for all profiles of the outer build, beside the usual ones.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("bpf");
    let object = match ebpf::build(&workspace, &target_dir) {
        Ok(object) => object,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    // Copied into OUT_DIR so each outer build has its own stable file to include.
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("geminst.bpf.o");
    fs::copy(&object, &out).expect("copying the eBPF object into OUT_DIR");
    println!("cargo:rustc-env=GEMINST_EBPF_OBJECT={}", out.display());
}
