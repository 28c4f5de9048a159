//! The file-system backend. Every path is opened relative to the root with openat2(2) and
//! RESOLVE_BENEATH, so the kernel refuses any resolution that leaves the root: `..` past it,
//! absolute symlinks, and relative symlinks pointing outside. Symlinks that stay inside are
//! followed. Kernels without openat2 (before 5.6) get the same rule from a canonicalize-and-compare
//! fallback.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::{Body, Child, Entry, join, servable_name};
use crate::exit::BadInput;

/// struct open_how of linux/openat2.h (libc's is non-exhaustive, so not constructible here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

/// A kind of entry, with the identity of directories (to detect symlink cycles when walking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir { dev: u64, ino: u64 },
}

pub struct FsStore {
    /// Canonical root.
    root: PathBuf,
    /// The root, opened O_PATH, for openat2.
    dir: OwnedFd,
    /// openat2 works here; otherwise the fallback is used.
    beneath: bool,
}

impl FsStore {
    pub fn open(root: &Path) -> Result<Self> {
        let canonical =
            root.canonicalize().map_err(|e| BadInput(format!("capsule root {}: {e}", root.display())))?;
        if !canonical.is_dir() {
            return Err(BadInput(format!("capsule root {} is not a directory", root.display())).into());
        }
        let c = CString::new(canonical.as_os_str().as_bytes()).context("root path has a NUL byte")?;
        // SAFETY: c is a valid C string; the returned descriptor is checked before use.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("opening {}", canonical.display()));
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut store = Self { root: canonical, dir, beneath: true };
        // Probe once: ENOSYS (old kernel) or EPERM (seccomp) selects the fallback.
        if let Err(e) = store.openat2(".", libc::O_PATH) {
            if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) {
                store.beneath = false;
            } else {
                return Err(e).with_context(|| format!("opening {}", store.root.display()));
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn openat2(&self, rel: &str, flags: i32) -> io::Result<File> {
        let c = CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
        // openat2 refuses flags that mean nothing with O_PATH, O_NOCTTY among them.
        let noctty = if flags & libc::O_PATH == 0 { libc::O_NOCTTY } else { 0 };
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC | noctty) as u64,
            mode: 0,
            resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: the pointers are valid for the call; size is the struct's size, as openat2 wants.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nobody else owns.
        Ok(unsafe { File::from_raw_fd(fd as i32) })
    }

    /// Opens `rel` beneath the root, or fails with NotFound if it resolves outside.
    fn open_beneath(&self, rel: &str, flags: i32) -> io::Result<File> {
        let rel = if rel.is_empty() { "." } else { rel };
        if self.beneath {
            return self.openat2(rel, flags);
        }
        let canonical = self.root.join(rel).canonicalize()?;
        if !canonical.starts_with(&self.root) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let c = CString::new(canonical.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
        // SAFETY: c is a valid C string.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nobody else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// What `rel` names. A file is opened for reading (O_NONBLOCK, so a FIFO cannot hang the
    /// worker; it is then refused as not regular).
    pub fn entry(&self, rel: &str) -> io::Result<Entry> {
        let file = match self.open_beneath(rel, libc::O_RDONLY | libc::O_NONBLOCK) {
            Ok(f) => f,
            Err(e) if missing(&e) => return Ok(Entry::Missing),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        Ok(if meta.is_file() {
            Entry::File(Body::File { file, len: meta.len() })
        } else if meta.is_dir() {
            Entry::Dir
        } else {
            Entry::Missing
        })
    }

    /// The kind of `rel` without opening it for reading (O_PATH), None if it is neither a file
    /// nor a directory beneath the root.
    pub fn kind(&self, rel: &str) -> io::Result<Option<Kind>> {
        let file = match self.open_beneath(rel, libc::O_PATH) {
            Ok(f) => f,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        Ok(if meta.is_file() {
            Some(Kind::File)
        } else if meta.is_dir() {
            Some(Kind::Dir { dev: meta.dev(), ino: meta.ino() })
        } else {
            None
        })
    }

    pub fn list(&self, rel: &str) -> io::Result<Vec<Child>> {
        let dir = self.open_beneath(rel, libc::O_RDONLY | libc::O_DIRECTORY)?;
        // Read the directory that was opened (not the path again), through its /proc link.
        let mut children = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if !servable_name(&name) {
                continue;
            }
            match self.kind(&join(rel, &name))? {
                Some(Kind::File) => children.push(Child { name, dir: false }),
                Some(Kind::Dir { .. }) => children.push(Child { name, dir: true }),
                None => {}
            }
        }
        children.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(children)
    }
}

/// Errors that mean "nothing servable here": absent, a file used as a directory, outside the root
/// (EXDEV from RESOLVE_BENEATH), symlink loops, names too long, or not readable by the server.
fn missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOTDIR | libc::EXDEV | libc::ELOOP | libc::ENAMETOOLONG | libc::EACCES | libc::EPERM)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("geminst-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn symlinks_inside_are_followed_and_outside_refused() {
        let base = temp("links");
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(base.join("secret.txt"), "secret").unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("../secret.txt", root.join("out.txt")).unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), root.join("abs.txt")).unwrap();
        std::os::unix::fs::symlink("sub/a.txt", root.join("in.txt")).unwrap();
        std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        let store = FsStore::open(&root).unwrap();
        for beneath in [true, false] {
            let store = FsStore { beneath, root: store.root.clone(), dir: store.dir.try_clone().unwrap() };
            assert!(matches!(store.entry("out.txt").unwrap(), Entry::Missing), "beneath={beneath}");
            assert!(matches!(store.entry("up/secret.txt").unwrap(), Entry::Missing), "beneath={beneath}");
            assert!(matches!(store.entry("in.txt").unwrap(), Entry::File(Body::File { len: 1, .. })));
            assert!(matches!(store.entry("sub").unwrap(), Entry::Dir));
            assert!(matches!(store.entry("").unwrap(), Entry::Dir));
            assert!(matches!(store.entry("nope").unwrap(), Entry::Missing));
            assert!(matches!(store.entry("sub/a.txt/x").unwrap(), Entry::Missing));
            let names: Vec<_> = store.list("").unwrap().into_iter().map(|c| (c.name, c.dir)).collect();
            assert_eq!(
                names,
                vec![("in.txt".to_string(), false), ("sub".to_string(), true)],
                "beneath={beneath}"
            );
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
