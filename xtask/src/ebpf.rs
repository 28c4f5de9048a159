//! Building the eBPF object. Shared, with `#[path]`, by geminst's build script (so a plain
//! `cargo build -p geminst` always embeds the current object) and by `cargo xtask build-ebpf`.
//! Only std, because a build script should not pull in more than it needs.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// The eBPF target; little-endian like every machine geminst runs on.
pub const BPF_TARGET: &str = "bpfel-unknown-none";
/// Name of the eBPF binary in geminst-ebpf/Cargo.toml.
pub const BPF_BIN: &str = "geminst";

/// Finds bpf-linker on PATH or in cargo's bin directory, where `cargo install` puts it.
pub fn find_bpf_linker() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        env::var_os("PATH").map(|p| env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join("bpf-linker")).find(|p| p.is_file())
}

/// Builds the eBPF object with the nightly toolchain into `target_dir` and returns its path.
pub fn build(workspace: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let linker = find_bpf_linker().ok_or_else(|| {
        "bpf-linker was not found on PATH or in ~/.cargo/bin: run `cargo xtask setup`".to_string()
    })?;
    let linker_dir = linker.parent().expect("a file has a parent directory");
    let path = env::join_paths(
        std::iter::once(linker_dir.to_path_buf())
            .chain(env::var_os("PATH").map(|p| env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default()),
    )
    .map_err(|e| format!("building PATH for the eBPF build: {e}"))?;

    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace.join("geminst-ebpf"))
        .args(["build", "--release", "-Z", "build-std=core", "--target", BPF_TARGET])
        .arg("--target-dir")
        .arg(target_dir)
        .env("PATH", path)
        // The outer cargo's toolchain and wrappers (stable, clippy-driver, coverage flags) must
        // not leak into the nightly eBPF build.
        .env("RUSTUP_TOOLCHAIN", "nightly");
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO",
        "RUSTDOC",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(|e| format!("running `cargo +nightly build` for geminst-ebpf: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the eBPF object failed ({status}); if the nightly's rust-src or bpf-linker is missing, run `cargo xtask setup`"
        ));
    }
    let object = target_dir.join(BPF_TARGET).join("release").join(BPF_BIN);
    if !object.is_file() {
        return Err(format!("the eBPF build succeeded but {} is missing", object.display()));
    }
    Ok(object)
}
