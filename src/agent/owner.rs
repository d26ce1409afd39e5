//! Which keel process owns a run.
//!
//! Each process that runs agents holds an exclusive lock on its own file,
//! `owners/ID.lock` under the data directory, for as long as it lives; the
//! operating system drops the lock when the process dies, `kill -9`
//! included. A run records its owner's id, so recovery at start can tell a
//! run whose process died (fail it: interrupted) from one that another live
//! keel (a console in the next terminal) is still working on (leave it).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// This process's claim. Dropping it releases the lock and removes the file.
#[derive(Debug)]
pub struct Owner {
    id: String,
    /// The locked file and the data directory it is under; `None` when
    /// there is no data directory (an in-memory store, where no other
    /// process can see the runs anyway).
    held: Option<(File, PathBuf, PathBuf)>,
}

fn lock_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("owners").join(format!("{id}.lock"))
}

impl Owner {
    /// Takes a fresh owner id and locks its file under `data_dir`, or only
    /// makes up an id when `data_dir` is `None`.
    pub fn acquire(data_dir: Option<&Path>) -> std::io::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // The pid alone could be reused by a later process; the start time
        // makes the id unique.
        let id = format!("{}-{:x}", std::process::id(), nanos);
        let Some(dir) = data_dir else {
            return Ok(Self { id, held: None });
        };
        std::fs::create_dir_all(dir.join("owners"))?;
        let path = lock_path(dir, &id);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.try_lock().map_err(|e| match e {
            TryLockError::Error(e) => e,
            TryLockError::WouldBlock => std::io::Error::other("owner lock already held"),
        })?;
        Ok(Self {
            id,
            held: Some((file, path, dir.to_path_buf())),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the run owner `id` is alive as seen from this process: it is
    /// this process, or another one holding its lock under the same data
    /// directory.
    pub fn sees_alive(&self, id: &str) -> bool {
        id == self.id
            || self
                .held
                .as_ref()
                .is_some_and(|(_, _, dir)| Self::is_alive(dir, id))
    }

    /// Whether the process that took `id` is still alive: its lock file
    /// exists and is locked. A dead owner's leftover file is removed.
    pub fn is_alive(data_dir: &Path, id: &str) -> bool {
        // Ids are made here; anything else (a path) is not a live owner.
        if !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return false;
        }
        let path = lock_path(data_dir, id);
        let Ok(file) = OpenOptions::new().write(true).open(&path) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                drop(file);
                let _ = std::fs::remove_file(&path);
                false
            }
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(_)) => false,
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some((_, path, _)) = &self.held {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_owner_is_alive_and_a_released_one_is_not() {
        let d = tempfile::tempdir().unwrap();
        let a = Owner::acquire(Some(d.path())).unwrap();
        assert!(Owner::is_alive(d.path(), a.id()));
        let b = Owner::acquire(Some(d.path())).unwrap();
        assert!(b.sees_alive(a.id()) && b.sees_alive(b.id()));
        assert!(!b.sees_alive("123-abc"));
        let id = a.id().to_string();
        drop(a);
        assert!(!Owner::is_alive(d.path(), &id));
        assert!(!Owner::is_alive(d.path(), "../../etc/passwd"));
        // A file left behind by a dead process (no lock held) is not alive,
        // and is cleaned up.
        let stale = lock_path(d.path(), "123-abc");
        std::fs::write(&stale, "").unwrap();
        assert!(!Owner::is_alive(d.path(), "123-abc"));
        assert!(!stale.exists());
    }
}
