//! The SQLite backend: a capsule copied into one table by `geminst import`. Connections are
//! read-only and pooled (a rusqlite connection is used by one thread at a time; the pool grows to
//! the number of workers that query at once).

use std::{
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{Body, Child, Entry};
use crate::exit::BadInput;

/// The schema version `import` writes and `serve --db` accepts (table `meta`, key `format`).
pub const FORMAT: &str = "geminst-capsule-1";

/// The schema: `path` is relative (segments joined by `/`, no leading slash; '' is the root),
/// `parent` the path of its directory (NULL for the root), `body` the file's bytes (NULL for
/// directories).
pub const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    path TEXT PRIMARY KEY,
    parent TEXT,
    name TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    body BLOB
);
CREATE INDEX entries_by_parent ON entries (parent, name);
";

pub struct DbStore {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

impl DbStore {
    /// Opens a database made by `geminst import`, checking its format.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(BadInput(format!("capsule database {} does not exist", path.display())).into());
        }
        let store = Self { path: path.to_owned(), pool: Mutex::new(Vec::new()) };
        let conn = store.connect()?;
        let format: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| r.get(0))
            .optional()
            .unwrap_or(None);
        if format.as_deref() != Some(FORMAT) {
            return Err(BadInput(format!(
                "{} is not a capsule database made by `geminst import` (format {FORMAT})",
                path.display()
            ))
            .into());
        }
        store.pool.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        Ok(store)
    }

    fn connect(&self) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Connection::open_with_flags(&self.path, flags)
            .with_context(|| format!("opening {}", self.path.display()))
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> io::Result<T> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.connect().map_err(io::Error::other)?,
        };
        let result = f(&conn).map_err(io::Error::other);
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        result
    }

    pub fn entry(&self, rel: &str) -> io::Result<Entry> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT is_dir, body FROM entries WHERE path = ?1")?;
            let row = stmt
                .query_row([rel], |r| Ok((r.get::<_, bool>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)))
                .optional()?;
            Ok(match row {
                None => Entry::Missing,
                Some((true, _)) => Entry::Dir,
                Some((false, body)) => Entry::File(Body::Bytes(body.unwrap_or_default())),
            })
        })
    }

    pub fn list(&self, rel: &str) -> io::Result<Vec<Child>> {
        let mut children = self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT name, is_dir FROM entries WHERE parent = ?1")?;
            let rows = stmt.query_map([rel], |r| Ok(Child { name: r.get(0)?, dir: r.get(1)? }))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        // Sorted here rather than by SQL, so both backends sort with the same function.
        children.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(children)
    }
}
