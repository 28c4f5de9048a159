//! `cargo xtask setup`: installs what a fresh machine lacks, says what it did, and is a quick
//! no-op when everything is there. Each step checks before it acts.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, workspace};

/// Debian packages: libpcap for the capture, tcpdump and bpftool as the tests' independent
/// witnesses, molly-brown as a peer server, openssl's s_client as an independent Gemini client.
const DEBIAN_PACKAGES: &[&str] =
    &["libpcap-dev", "pkg-config", "tcpdump", "bpftool", "molly-brown", "openssl", "iproute2"];

/// bpf-linker links eBPF bitcode with a libLLVM of the same major version as the nightly rustc.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The cargo-fuzz used by the fuzz smoke runs in `cargo xtask test`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// A setup step: `None` when nothing was needed, else what it did.
type Step = fn() -> Result<Option<String>>;

pub fn run() -> Result<()> {
    let steps: [(&str, Step); 5] = [
        ("Debian packages", debian_packages),
        ("nightly toolchain", nightly_toolchain),
        ("bpf-linker", bpf_linker),
        ("cargo-fuzz", cargo_fuzz),
        ("Python virtual environment", python_venv),
    ];
    for (name, step) in steps {
        match step().with_context(|| format!("setup step `{name}`"))? {
            None => println!("setup: {name}: present"),
            Some(done) => println!("setup: {name}: {done}"),
        }
    }
    Ok(())
}

fn package_installed(pkg: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn debian_packages() -> Result<Option<String>> {
    let mut missing: Vec<&str> = DEBIAN_PACKAGES.iter().copied().filter(|p| !package_installed(p)).collect();
    // The venv module is part of CPython but split into its own package on Debian.
    if !cmd::succeeds(Command::new("python3").args(["-c", "import ensurepip, venv"])) {
        missing.push("python3-venv");
    }
    if missing.is_empty() {
        return Ok(None);
    }
    cmd::run(cmd::as_root("apt-get").args(["update", "-qq"]))?;
    cmd::run(
        cmd::as_root("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(Some(format!("installed {}", missing.join(" "))))
}

/// Components of the nightly the project uses: rust-src for `-Z build-std=core` (the eBPF
/// build), rustfmt and clippy for checking the eBPF crate's formatting and lints.
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "rustfmt", "clippy"];

fn nightly_toolchain() -> Result<Option<String>> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]));
    let Some(installed) = installed else {
        let components = NIGHTLY_COMPONENTS.join(",");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            &components,
        ]))?;
        return Ok(Some(format!("installed the nightly toolchain with {components}")));
    };
    let missing: Vec<&str> = NIGHTLY_COMPONENTS
        .iter()
        .copied()
        // Listed as `rust-src`, or with the host triple: `rustfmt-x86_64-unknown-linux-gnu`.
        .filter(|c| !installed.lines().any(|l| l == *c || l.starts_with(&format!("{c}-"))))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    cmd::run(Command::new("rustup").args(["component", "add", "--toolchain", "nightly"]).args(&missing))?;
    Ok(Some(format!("added {} to the nightly toolchain", missing.join(" "))))
}

/// The nightly's LLVM major version, from `rustc +nightly -vV`.
fn nightly_llvm_major() -> Result<u32> {
    let vv =
        cmd::output(Command::new("rustc").args(["+nightly", "-vV"])).context("running rustc +nightly -vV")?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV did not print an LLVM version")?;
    version.split('.').next().unwrap_or_default().parse().context("parsing the nightly's LLVM version")
}

/// The nightly toolchain's own shared libLLVM (rustc links it dynamically on Linux).
fn nightly_libllvm() -> Result<PathBuf> {
    let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("running rustc +nightly --print sysroot")?;
    let lib = Path::new(sysroot.trim()).join("lib");
    fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("geminst")
}

fn bpf_linker() -> Result<Option<String>> {
    let current = crate::ebpf::find_bpf_linker()
        .and_then(|p| cmd::output(Command::new(p).arg("--version")))
        .unwrap_or_default();
    if current.contains(BPF_LINKER_VERSION) {
        return Ok(None);
    }
    // Debian 12 has no LLVM as new as the nightly's, and apt.llvm.org is out of reach, so
    // bpf-linker is linked against the nightly's own libLLVM: same version by construction. It
    // looks for $LLVM_PREFIX/lib/libLLVM.so and records that directory as its rpath.
    let major = nightly_llvm_major()?;
    if !(21..=23).contains(&major) {
        bail!("the nightly uses LLVM {major}; bpf-linker {BPF_LINKER_VERSION} supports LLVM 21 to 23");
    }
    let libllvm = nightly_libllvm()?;
    let prefix = cache_dir().join(format!("llvm-{major}"));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for name in ["libLLVM.so".into(), libllvm.file_name().expect("a file").to_owned()] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    cmd::run(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .env("RUSTUP_TOOLCHAIN", "stable")
            .args(["install", "--locked", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
            .args(["--no-default-features", "--features", &format!("llvm-{major}")]),
    )?;
    Ok(Some(format!("installed bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major}")))
}

fn cargo_fuzz() -> Result<Option<String>> {
    let current = cmd::output(Command::new("cargo").args(["fuzz", "--version"])).unwrap_or_default();
    if current.contains(CARGO_FUZZ_VERSION) {
        return Ok(None);
    }
    cmd::run(Command::new("cargo").args([
        "install",
        "--locked",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
    ]))?;
    Ok(Some(format!("installed cargo-fuzz {CARGO_FUZZ_VERSION}")))
}

/// Path of the virtual environment's Python.
pub fn venv_python() -> PathBuf {
    workspace().join(".venv/bin/python")
}

fn python_venv() -> Result<Option<String>> {
    let root = workspace();
    let requirements = root.join("xtask/requirements.txt");
    let wanted =
        fs::read_to_string(&requirements).with_context(|| format!("reading {}", requirements.display()))?;
    let venv = root.join(".venv");
    let stamp = venv.join(".geminst-requirements");
    let python = venv_python();
    let healthy =
        python.is_file() && cmd::succeeds(Command::new(&python).args(["-c", "import pyarrow, duckdb"]));
    if healthy && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(None);
    }
    if !python.is_file() {
        cmd::run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    cmd::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
    )?;
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(Some(format!("installed {} into {}", requirements.display(), venv.display())))
}
