//! What a run's server is started with that is not part of the run's data: the certificate and
//! key every server presents, the capsule with a file of each response size the profile asks for
//! (for servers without the bench routes), and the servers' own state (geminst's bench data file,
//! the built Go server). They live in a cache folder shared by runs, made once, so a run's folder
//! holds its data set and an experiment of many runs does not hold many copies of them.

use std::{
    fs,
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::kinds::HOSTNAME;
use crate::serve::{bench_routes::PATTERN, certs};

/// Where generated response files live in a capsule: `/_sized/N.txt` holds N bytes of the bench
/// pattern, so its body equals `/_bench/bytes/N` and its type is text/plain for every server.
pub const SIZED_DIR: &str = "_sized";

/// The path a server without bench routes serves N response bytes at.
pub fn sized_path(n: u64) -> String {
    format!("/{SIZED_DIR}/{n}.txt")
}

/// The shared folder: `$XDG_CACHE_HOME/geminst/run`, else `~/.cache/geminst/run`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("geminst")
        .join("run")
}

/// The fixtures of one run, ready.
#[derive(Debug, Clone)]
pub struct Fixtures {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The servers' own state folder (shared by runs).
    pub state_dir: PathBuf,
    /// The capsule the server serves.
    pub root: PathBuf,
}

/// Holds an exclusive lock on the cache while fixtures are made, so two runs at once never see a
/// half-made certificate or capsule.
struct CacheLock {
    /// The lock is released when the file is closed.
    _file: fs::File,
}

impl CacheLock {
    fn take(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(".lock");
        let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("locking the run cache");
        }
        Ok(Self { _file: file })
    }
}

/// Prepares the certificate, and the capsule: `root` (default the sample capsule) as it is when
/// the server has the bench routes or no sizes are needed, else a copy with a file of each of
/// `sizes` bytes under /_sized/.
pub fn prepare(root: Option<&Path>, sizes: &[u64], bench_routes: bool) -> Result<Fixtures> {
    let cache = cache_dir();
    let _lock = CacheLock::take(&cache)?;
    let state_dir = cache.join("server-state");
    fs::create_dir_all(&state_dir)?;
    let cert = certs::load_or_generate(&state_dir, &[HOSTNAME.to_string()])?;
    let root = root.map(Path::to_path_buf).unwrap_or_else(crate::serve::sample_capsule);
    let root = if bench_routes || sizes.is_empty() { root } else { sized_capsule(&cache, &root, sizes)? };
    Ok(Fixtures { cert: cert.cert_path, key: state_dir.join(certs::KEY_FILE), state_dir, root })
}

/// A copy of `root` with the sized files, made once per (root, sizes).
fn sized_capsule(cache: &Path, root: &Path, sizes: &[u64]) -> Result<PathBuf> {
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    // Named for what it holds, so the same root and sizes find it again.
    let key = format!("{}\0{sizes:?}", root.display());
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let name: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let dir = cache.join("capsules").join(name);
    let done = dir.join(".complete");
    if done.is_file() {
        return Ok(dir);
    }
    let _ = fs::remove_dir_all(&dir);
    copy_tree(root, &dir)
        .with_context(|| format!("copying the capsule {} to {}", root.display(), dir.display()))?;
    let sized = dir.join(SIZED_DIR);
    fs::create_dir_all(&sized)?;
    for n in sizes {
        let path = sized.join(format!("{n}.txt"));
        let mut f = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut left = n;
        let block: Vec<u8> = PATTERN.iter().copied().cycle().take(64 * 1024).collect();
        while left > 0 {
            let k = left.min(block.len() as u64) as usize;
            f.write_all(&block[..k])?;
            left -= k as u64;
        }
    }
    fs::write(&done, b"")?;
    Ok(dir)
}

/// Copies files and folders (not symlinks leaving the tree, not names starting with a dot).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ty = entry.file_type()?;
        if ty.is_dir() {
            copy_tree(&entry.path(), &to.join(&name))?;
        } else if ty.is_file() {
            fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_files_hold_the_bench_pattern() {
        let cache = std::env::temp_dir().join(format!("geminst-fixtures-{}", std::process::id()));
        let root = cache.join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("index.gmi"), "# hi\n").unwrap();
        fs::write(root.join(".hidden"), "x").unwrap();
        let dir = sized_capsule(&cache, &root, &[100_000, 0, 100_000]).unwrap();
        let body = fs::read(dir.join("_sized/100000.txt")).unwrap();
        assert_eq!(body.len(), 100_000);
        assert!(body.iter().enumerate().all(|(i, &b)| b == PATTERN[i % 64]));
        assert_eq!(fs::read(dir.join("_sized/0.txt")).unwrap().len(), 0);
        assert!(dir.join("index.gmi").is_file() && dir.join("sub").is_dir());
        assert!(!dir.join(".hidden").exists());
        // Made once: the same inputs give the same folder without rewriting it.
        assert_eq!(sized_capsule(&cache, &root, &[0, 100_000]).unwrap(), dir);
        assert_eq!(sized_path(5), "/_sized/5.txt");
        fs::remove_dir_all(&cache).unwrap();
    }
}
