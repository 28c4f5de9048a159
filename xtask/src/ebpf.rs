//! Building the eBPF object. Shared, with `#[path]`, by geminst's build script (so a plain
//! `cargo build -p geminst` always embeds the current object) and by `cargo xtask build-ebpf`.
//! Only std, because a build script should not pull in more than it needs.
//!
//! The build needs a toolchain of its own: the nightly (for `-Z build-std`), its rust-src (the
//! `core` it compiles for the BPF target) and bpf-linker. Without them the build script embeds a
//! placeholder instead (`decide`), so work on the rest of geminst needs none of them.

use std::{
    env,
    ffi::OsStr,
    fmt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
};

/// The eBPF target; little-endian like every machine geminst runs on.
pub const BPF_TARGET: &str = "bpfel-unknown-none";
/// Name of the eBPF binary in geminst-ebpf/Cargo.toml.
pub const BPF_BIN: &str = "geminst";
/// The toolchain the eBPF crate is built with (rustup's name for it).
const NIGHTLY: &str = "nightly";

/// Why the eBPF object could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// bpf-linker is on neither PATH nor cargo's bin directory.
    LinkerMissing,
    /// `rustc` with `RUSTUP_TOOLCHAIN=nightly` did not run, or is not a nightly (no rustup, or
    /// rustup without the nightly). `found` is what answered instead, if anything did.
    NightlyMissing { found: Option<String> },
    /// The nightly has no rust-src component, whose `core` `-Z build-std=core` compiles.
    RustSrcMissing { sysroot: PathBuf },
    /// cargo could not be started (`detail` says why).
    CargoNotStarted(String),
    /// The build ran and failed: a compile error in the eBPF crate, printed by cargo above.
    BuildFailed(ExitStatus),
    /// The build succeeded but left no object where it should be.
    ObjectMissing(PathBuf),
}

impl BuildError {
    /// True when what is missing is the toolchain, not something wrong in the sources.
    pub fn is_missing_toolchain(&self) -> bool {
        matches!(self, Self::LinkerMissing | Self::NightlyMissing { .. } | Self::RustSrcMissing { .. })
    }

    /// Files whose change may mean the missing piece was installed (`cargo xtask setup`), for the
    /// build script to watch while it embeds a placeholder: cargo's bin directories for
    /// bpf-linker, rustup's record of installed toolchains, the nightly's list of components.
    /// Only paths that exist: cargo reruns a build script on every build for one that does not.
    #[allow(dead_code, reason = "used by geminst/build.rs, not by xtask")]
    pub fn watch_paths(&self) -> Vec<PathBuf> {
        let paths = match self {
            Self::LinkerMissing => cargo_bin_dirs(),
            Self::NightlyMissing { .. } => {
                rustup_home().map(|h| h.join("update-hashes")).into_iter().collect()
            }
            Self::RustSrcMissing { sysroot } => vec![sysroot.join("lib/rustlib/components")],
            _ => Vec::new(),
        };
        paths.into_iter().filter(|p| p.exists()).collect()
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LinkerMissing => {
                write!(f, "bpf-linker was not found on PATH or in ~/.cargo/bin: run `cargo xtask setup`")
            }
            Self::NightlyMissing { found: None } => {
                write!(
                    f,
                    "the nightly toolchain was not found (rustup's `{NIGHTLY}`): run `cargo xtask setup`"
                )
            }
            Self::NightlyMissing { found: Some(found) } => write!(
                f,
                "the nightly toolchain was not found (rustup's `{NIGHTLY}`; `rustc` is {found}): run `cargo xtask setup`"
            ),
            Self::RustSrcMissing { sysroot } => write!(
                f,
                "the nightly toolchain at {} has no rust-src, which `-Z build-std=core` needs: run `cargo xtask setup`",
                sysroot.display()
            ),
            Self::CargoNotStarted(detail) => {
                write!(f, "running `cargo +nightly build` for geminst-ebpf: {detail}")
            }
            Self::BuildFailed(status) => write!(
                f,
                "building the eBPF object failed ({status}); if the nightly's rust-src or bpf-linker is missing, run `cargo xtask setup`"
            ),
            Self::ObjectMissing(object) => {
                write!(f, "the eBPF build succeeded but {} is missing", object.display())
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// cargo's bin directories, where `cargo install` puts bpf-linker.
fn cargo_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs
}

fn rustup_home() -> Option<PathBuf> {
    env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
}

/// Finds bpf-linker on PATH or in cargo's bin directory, where `cargo install` puts it.
pub fn find_bpf_linker() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        env::var_os("PATH").map(|p| env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(cargo_bin_dirs());
    dirs.into_iter().map(|d| d.join("bpf-linker")).find(|p| p.is_file())
}

/// `rustc` as the eBPF build runs it: the PATH's, asked for the nightly through rustup, and never
/// installing one on its own (rustup 1.28 and later may, unless told not to).
fn nightly_rustc() -> Command {
    let mut cmd = Command::new("rustc");
    cmd.env("RUSTUP_TOOLCHAIN", NIGHTLY).env("RUSTUP_AUTO_INSTALL", "0");
    cmd
}

/// A command's stdout, trimmed, if it ran and succeeded.
fn stdout_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// True if `rustc -vV` printed a release that takes `-Z` flags: a nightly, or a local build.
fn is_nightly(version: &str) -> bool {
    version
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .is_some_and(|r| r.ends_with("-nightly") || r.ends_with("-dev"))
}

/// True if the toolchain at `sysroot` has rust-src (cargo's `-Z build-std` reads the standard
/// library's own lock file from it).
fn has_rust_src(sysroot: &Path) -> bool {
    sysroot.join("lib/rustlib/src/rust/library/Cargo.lock").is_file()
}

/// What was found of the eBPF toolchain: bpf-linker, `rustc -vV` of the nightly and its sysroot.
struct Found {
    linker: Option<PathBuf>,
    version: Option<String>,
    sysroot: Option<PathBuf>,
}

impl Found {
    fn look() -> Self {
        let version = stdout_of(nightly_rustc().arg("-vV"));
        let sysroot = stdout_of(nightly_rustc().args(["--print", "sysroot"])).map(PathBuf::from);
        Self { linker: find_bpf_linker(), version, sysroot }
    }

    /// bpf-linker's path if the whole toolchain is there, else the first piece missing, in the
    /// order `cargo xtask setup` installs them (bpf-linker is linked against the nightly's LLVM).
    fn check(self) -> Result<PathBuf, BuildError> {
        let version = self.version.unwrap_or_default();
        if !is_nightly(&version) {
            let found = version.lines().next().filter(|l| !l.is_empty()).map(str::to_string);
            return Err(BuildError::NightlyMissing { found });
        }
        let sysroot = self.sysroot.ok_or(BuildError::NightlyMissing { found: None })?;
        if !has_rust_src(&sysroot) {
            return Err(BuildError::RustSrcMissing { sysroot });
        }
        self.linker.ok_or(BuildError::LinkerMissing)
    }
}

/// Builds the eBPF object with the nightly toolchain into `target_dir` and returns its path.
pub fn build(workspace: &Path, target_dir: &Path) -> Result<PathBuf, BuildError> {
    let linker = Found::look().check()?;
    let linker_dir = linker.parent().expect("a file has a parent directory");
    let path = env::join_paths(
        std::iter::once(linker_dir.to_path_buf())
            .chain(env::var_os("PATH").map(|p| env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default()),
    )
    .map_err(|e| BuildError::CargoNotStarted(format!("building PATH for the eBPF build: {e}")))?;

    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace.join("geminst-ebpf"))
        .args(["build", "--release", "-Z", "build-std=core", "--target", BPF_TARGET])
        .arg("--target-dir")
        .arg(target_dir)
        .env("PATH", path)
        // The outer cargo's toolchain and wrappers (stable, clippy-driver, coverage flags) must
        // not leak into the nightly eBPF build.
        .env("RUSTUP_TOOLCHAIN", NIGHTLY);
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
    let status = cmd.status().map_err(|e| BuildError::CargoNotStarted(e.to_string()))?;
    if !status.success() {
        return Err(BuildError::BuildFailed(status));
    }
    let object = target_dir.join(BPF_TARGET).join("release").join(BPF_BIN);
    if !object.is_file() {
        return Err(BuildError::ObjectMissing(object));
    }
    Ok(object)
}

/// What the build script embeds.
#[derive(Debug)]
#[allow(dead_code, reason = "used by geminst/build.rs, not by xtask")]
pub enum Embed {
    /// The object built.
    Object(PathBuf),
    /// An empty placeholder, because the toolchain is missing: the tracer then refuses to start.
    Placeholder(BuildError),
    /// Nothing: the build fails.
    Fail(BuildError),
}

/// The build script's choice. Only a missing toolchain gives the placeholder, and only outside
/// CI: a compile error must fail the build, and CI must never test a placeholder.
#[allow(dead_code, reason = "used by geminst/build.rs, not by xtask")]
pub fn decide(built: Result<PathBuf, BuildError>, in_ci: bool) -> Embed {
    match built {
        Ok(object) => Embed::Object(object),
        Err(e) if e.is_missing_toolchain() && !in_ci => Embed::Placeholder(e),
        Err(e) => Embed::Fail(e),
    }
}

/// True if the `CI` variable says this is CI, as CI services set it (`CI=true`); the same test
/// as the integration tests' `in_ci`.
#[allow(dead_code, reason = "used by geminst/build.rs, not by xtask")]
pub fn in_ci(ci: Option<&OsStr>) -> bool {
    ci.is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::process::ExitStatusExt};

    use super::*;

    const NIGHTLY_VV: &str =
        "rustc 1.97.0-nightly (abc 2026-05-19)\nbinary: rustc\nrelease: 1.97.0-nightly\nLLVM version: 22.1.0";
    const STABLE_VV: &str =
        "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\nrelease: 1.95.0\nLLVM version: 22.1.0";

    /// A fresh directory under the target directory.
    fn temp(name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-tmp/xtask-ebpf").join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A sysroot with rust-src, or without it.
    fn sysroot(name: &str, rust_src: bool) -> PathBuf {
        let root = temp(name);
        let library = root.join("lib/rustlib/src/rust/library");
        fs::create_dir_all(&library).unwrap();
        if rust_src {
            fs::write(library.join("Cargo.lock"), "").unwrap();
        }
        root
    }

    fn found(linker: bool, version: Option<&str>, sysroot: Option<PathBuf>) -> Found {
        Found {
            linker: linker.then(|| PathBuf::from("/opt/bin/bpf-linker")),
            version: version.map(str::to_string),
            sysroot,
        }
    }

    #[test]
    fn a_whole_toolchain_passes_and_gives_the_linker() {
        let f = found(true, Some(NIGHTLY_VV), Some(sysroot("whole", true)));
        assert_eq!(f.check().unwrap(), PathBuf::from("/opt/bin/bpf-linker"));
    }

    #[test]
    fn each_missing_piece_is_named() {
        let with_src = sysroot("with-src", true);
        let without_src = sysroot("without-src", false);
        let cases = [
            (found(false, Some(NIGHTLY_VV), Some(with_src.clone())), "linker"),
            (found(true, None, None), "nightly"),
            (found(true, Some(STABLE_VV), Some(with_src.clone())), "nightly"),
            (found(true, Some(NIGHTLY_VV), None), "nightly"),
            (found(true, Some(NIGHTLY_VV), Some(without_src.clone())), "rust-src"),
            // With everything missing, the first to install is named.
            (found(false, None, None), "nightly"),
        ];
        for (f, want) in cases {
            let e = f.check().unwrap_err();
            let got = match &e {
                BuildError::LinkerMissing => "linker",
                BuildError::NightlyMissing { .. } => "nightly",
                BuildError::RustSrcMissing { .. } => "rust-src",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, want, "{e}");
            assert!(e.is_missing_toolchain());
            assert!(e.to_string().contains("cargo xtask setup"), "{e}");
        }
        // The stable that answered instead is named.
        let e = found(true, Some(STABLE_VV), Some(with_src)).check().unwrap_err();
        assert!(e.to_string().contains("rustc 1.95.0"), "{e}");
        let e = found(true, Some(NIGHTLY_VV), Some(without_src.clone())).check().unwrap_err();
        assert!(e.to_string().contains(&without_src.display().to_string()), "{e}");
    }

    #[test]
    fn a_local_build_counts_as_a_nightly() {
        assert!(is_nightly("binary: rustc\nrelease: 1.98.0-dev\n"));
        assert!(!is_nightly("binary: rustc\nrelease: 1.98.0-beta.2\n"));
        assert!(!is_nightly(""));
    }

    #[test]
    fn only_a_missing_toolchain_outside_ci_gives_the_placeholder() {
        let failed = || BuildError::BuildFailed(ExitStatus::from_raw(101 << 8));
        let missing = || BuildError::NightlyMissing { found: None };
        assert!(matches!(decide(Ok(PathBuf::from("o")), false), Embed::Object(_)));
        assert!(matches!(decide(Ok(PathBuf::from("o")), true), Embed::Object(_)));
        assert!(matches!(decide(Err(BuildError::LinkerMissing), false), Embed::Placeholder(_)));
        assert!(matches!(decide(Err(missing()), false), Embed::Placeholder(_)));
        assert!(matches!(
            decide(Err(BuildError::RustSrcMissing { sysroot: PathBuf::new() }), false),
            Embed::Placeholder(_)
        ));
        // In CI a missing toolchain fails the build.
        assert!(matches!(decide(Err(BuildError::LinkerMissing), true), Embed::Fail(_)));
        assert!(matches!(decide(Err(missing()), true), Embed::Fail(_)));
        // A compile error fails it everywhere, and so does a build that leaves no object.
        assert!(matches!(decide(Err(failed()), false), Embed::Fail(_)));
        assert!(matches!(decide(Err(BuildError::ObjectMissing(PathBuf::from("o"))), false), Embed::Fail(_)));
        assert!(matches!(decide(Err(BuildError::CargoNotStarted("no cargo".into())), false), Embed::Fail(_)));
        assert!(failed().to_string().starts_with("building the eBPF object failed ("));
    }

    #[test]
    fn ci_is_told_by_its_variable() {
        assert!(in_ci(Some(OsStr::new("true"))));
        assert!(in_ci(Some(OsStr::new("1"))));
        for v in [None, Some(""), Some("0"), Some("false")] {
            assert!(!in_ci(v.map(OsStr::new)), "{v:?}");
        }
    }

    #[test]
    fn only_existing_paths_are_watched() {
        let sysroot = sysroot("watched", false);
        let e = BuildError::RustSrcMissing { sysroot: sysroot.clone() };
        assert!(e.watch_paths().is_empty());
        fs::write(sysroot.join("lib/rustlib/components"), "rustc\n").unwrap();
        assert_eq!(e.watch_paths(), vec![sysroot.join("lib/rustlib/components")]);
    }
}
