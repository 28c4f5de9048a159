//! `geminst import`: copies a capsule directory into SQLite. The walk uses the file-system
//! backend's own `list` and `entry`, so the database holds exactly what `serve --root` would
//! serve: the same names, the same symlink rule, the same bytes.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use rusqlite::{Connection, Transaction, params};

use super::{
    Body, Entry,
    db::{FORMAT, SCHEMA},
    fs::{FsStore, Kind},
    join,
};
use crate::{clock, dataset::files::temp_path, exit::BadInput};

/// Directories deeper than this are not walked (a guard against pathological trees).
const MAX_DEPTH: usize = 64;

/// What an import copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Imported {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// Copies the capsule at `root` into a new database at `db` (replacing it). The database is
/// written under a temporary name and renamed when complete.
pub fn import(root: &Path, db: &Path) -> Result<Imported> {
    let store = FsStore::open(root)?;
    let db_abs = std::path::absolute(db).with_context(|| format!("resolving {}", db.display()))?;
    let db_dir = db_abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let db_dir =
        db_dir.canonicalize().map_err(|e| BadInput(format!("directory of --db {}: {e}", db.display())))?;
    if db_dir.starts_with(store.root()) {
        return Err(BadInput(format!(
            "--db {} is inside the capsule root {}: put the database elsewhere",
            db.display(),
            store.root().display()
        ))
        .into());
    }
    let tmp = temp_path(&db_abs);
    let _ = std::fs::remove_file(&tmp);
    let result = write(&store, &tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    std::fs::rename(&tmp, &db_abs)
        .with_context(|| format!("renaming {} to {}", tmp.display(), db_abs.display()))?;
    result
}

fn write(store: &FsStore, tmp: &PathBuf) -> Result<Imported> {
    let mut conn = Connection::open(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    conn.execute_batch(SCHEMA).context("creating the schema")?;
    let tx = conn.transaction()?;
    let meta = [
        ("format", FORMAT.to_owned()),
        ("source_root", store.root().display().to_string()),
        ("imported_at", clock::rfc3339(clock::unix_ns())),
    ];
    for (k, v) in meta {
        tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![k, v])?;
    }
    tx.execute("INSERT INTO entries (path, parent, name, is_dir, body) VALUES ('', NULL, '', 1, NULL)", [])?;
    let Some(Kind::Dir { dev, ino }) = store.kind("")? else { anyhow::bail!("the root is not a directory") };
    let mut stats = Imported { dirs: 1, ..Imported::default() };
    walk(store, "", &mut vec![(dev, ino)], &tx, &mut stats)?;
    tx.commit().context("committing the import")?;
    conn.close().map_err(|(_, e)| e).context("closing the database")?;
    Ok(stats)
}

fn walk(
    store: &FsStore,
    rel: &str,
    stack: &mut Vec<(u64, u64)>,
    tx: &Transaction,
    stats: &mut Imported,
) -> Result<()> {
    for child in store.list(rel).with_context(|| format!("listing /{rel}"))? {
        let path = join(rel, &child.name);
        match store.kind(&path)? {
            Some(Kind::File) => {
                let Entry::File(Body::File { mut file, len }) = store.entry(&path)? else { continue };
                let mut body = Vec::with_capacity(len as usize);
                file.read_to_end(&mut body).with_context(|| format!("reading /{path}"))?;
                tx.execute(
                    "INSERT INTO entries (path, parent, name, is_dir, body) VALUES (?1, ?2, ?3, 0, ?4)",
                    params![path, rel, child.name, body],
                )?;
                stats.files += 1;
                stats.bytes += body.len() as u64;
            }
            Some(Kind::Dir { dev, ino }) => {
                // A symlink back to an ancestor would repeat forever; the file server would serve
                // such paths, but there is no finite copy of them.
                if stack.contains(&(dev, ino)) || stack.len() >= MAX_DEPTH {
                    eprintln!(
                        "geminst import: skipping /{path}: a directory cycle or deeper than {MAX_DEPTH}"
                    );
                    continue;
                }
                tx.execute(
                    "INSERT INTO entries (path, parent, name, is_dir, body) VALUES (?1, ?2, ?3, 1, NULL)",
                    params![path, rel, child.name],
                )?;
                stats.dirs += 1;
                stack.push((dev, ino));
                walk(store, &path, stack, tx, stats)?;
                stack.pop();
            }
            None => {}
        }
    }
    Ok(())
}
