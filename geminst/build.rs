//! Builds the eBPF object on every build where its sources changed, and hands its path to the
//! crate (`GEMINST_EBPF_OBJECT`), so the binary never embeds a stale object.
//!
//! Without the eBPF toolchain (the nightly, its rust-src, bpf-linker) it embeds an empty
//! placeholder instead and says why in `GEMINST_EBPF_PLACEHOLDER`, so work on the rest of geminst
//! needs none of it: the tracer then refuses to start, naming what is missing. A compile error in
//! the eBPF crate still fails the build, and in CI (`CI=true`) so does a missing toolchain.

#[path = "../xtask/src/ebpf.rs"]
mod ebpf;

use std::{env, fs, path::PathBuf};

use ebpf::Embed;

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
    println!("cargo:rerun-if-env-changed=CI");

    // One eBPF target directory for all profiles of the outer build, beside the usual ones.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("bpf");
    // Copied into OUT_DIR so each outer build has its own stable file to include.
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("geminst.bpf.o");
    let in_ci = ebpf::in_ci(env::var_os("CI").as_deref());
    match ebpf::decide(ebpf::build(&workspace, &target_dir), in_ci) {
        Embed::Object(object) => {
            fs::copy(&object, &out).expect("copying the eBPF object into OUT_DIR");
        }
        Embed::Placeholder(missing) => {
            println!(
                "cargo:warning=geminst is built without its eBPF programs, so `geminst trace` and `geminst run` will refuse to start: {missing}"
            );
            println!("cargo:rustc-env=GEMINST_EBPF_PLACEHOLDER={missing}");
            // Built again once `cargo xtask setup` has installed what was missing.
            for path in missing.watch_paths() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            fs::write(&out, b"").expect("writing the placeholder object into OUT_DIR");
        }
        Embed::Fail(e) => {
            if e.is_missing_toolchain() {
                eprintln!("error: {e} (CI must build the real eBPF object, never a placeholder)");
            } else {
                eprintln!("error: {e}");
            }
            std::process::exit(1);
        }
    }
    println!("cargo:rustc-env=GEMINST_EBPF_OBJECT={}", out.display());
}
