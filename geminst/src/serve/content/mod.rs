//! What the server serves: a capsule directory (`fs`) or a SQLite copy of one (`db`, made by
//! `import`). Both answer the same two questions, what is at a path and what a directory holds,
//! under the same naming rules, and the handler builds every response from those answers alone,
//! so the same URL gives byte-identical responses from either backend.

pub mod db;
pub mod fs;
pub mod import;

use std::io;

/// A response body.
#[derive(Debug)]
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `len` bytes of the bench pattern (`bench_routes::PATTERN`), made on the fly.
    Pattern(u64),
    /// The first `len` bytes of an open file, read as they are sent.
    File {
        file: std::fs::File,
        len: u64,
    },
}

/// What a relative path names.
#[derive(Debug)]
pub enum Entry {
    File(Body),
    Dir,
    Missing,
}

/// A directory's child, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub name: String,
    pub dir: bool,
}

/// A capsule backend.
pub enum Store {
    Fs(fs::FsStore),
    Db(db::DbStore),
}

impl Store {
    /// What `rel` (segments joined by `/`, no leading slash, empty for the root) names.
    pub fn entry(&self, rel: &str) -> io::Result<Entry> {
        match self {
            Store::Fs(s) => s.entry(rel),
            Store::Db(s) => s.entry(rel),
        }
    }

    /// The servable files and directories in directory `rel`, sorted by name (byte order).
    pub fn list(&self, rel: &str) -> io::Result<Vec<Child>> {
        match self {
            Store::Fs(s) => s.list(rel),
            Store::Db(s) => s.list(rel),
        }
    }
}

/// The file names the server serves, lists and imports: not hidden (a leading dot, which also
/// keeps `.git` and editor files private), not empty, no control characters (they would break a
/// gemtext line) and no `/`.
pub fn servable_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.chars().any(char::is_control)
}

/// Joins a relative path and a name.
pub fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servable_names() {
        assert!(servable_name("index.gmi"));
        assert!(servable_name("caf\u{e9} menu.txt"));
        assert!(!servable_name(".git"));
        assert!(!servable_name(""));
        assert!(!servable_name("a\nb"));
        assert!(!servable_name("a/b"));
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a/b", "c"), "a/b/c");
    }
}
