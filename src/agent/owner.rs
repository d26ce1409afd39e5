//! Which keel process owns a run.
//!
//! Each process that runs agents holds an exclusive lock on its own file,
//! `owners/ID.lock` under the data directory, for as long as it lives; the
//! operating system drops the lock when the process dies, `kill -9`
//! included. A run records its owner's id, so recovery can tell a run whose
//! process died (fail it: interrupted) from one that another live keel (a
//! console in the next terminal) is still working on (leave it).
//!
//! Recovery runs when an agent starts, while a run waits its turn, and
//! before every listing of runs and sessions ([`recover_dead_runs`]), so
//! `keel runs` never shows a dead process's run as `running`. It is cheap
//! when nothing died: one read and a lock probe per live owner.
//!
//! A lock file gets its name only once it is locked (it is created and
//! locked under a temporary name, then renamed), so anyone who finds
//! `ID.lock` unlocked knows its process is gone and may delete it: a file
//! that is still being set up can never be mistaken for a dead one. Files
//! of dead processes are swept at start and whenever a dead owner is
//! noticed.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::{Store, StoreError};

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
        let setting_up = dir.join("owners").join(format!(".{id}.new"));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&setting_up)?;
        let locked = file
            .try_lock()
            .map_err(|e| match e {
                TryLockError::Error(e) => e,
                TryLockError::WouldBlock => std::io::Error::other("owner lock already held"),
            })
            .and_then(|()| std::fs::rename(&setting_up, &path));
        if let Err(e) = locked {
            let _ = std::fs::remove_file(&setting_up);
            return Err(e);
        }
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

/// Removes the lock files of owners that are gone: `ID.lock` files nobody
/// holds, and files left half set up (`.ID.new`) by a process that died in
/// the instant between creating and locking one. Returns how many.
pub fn sweep(data_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir.join("owners")) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".lock") {
            if !Owner::is_alive(data_dir, id) {
                removed += 1;
            }
        } else if name.starts_with('.') && name.ends_with(".new") {
            // Its process locks it a moment after creating it; one that is
            // still unlocked a minute later belongs to a process that died
            // in between.
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60));
            // Probe the lock only then: probing takes it for a moment, and
            // a process locking its new file in that moment would fail to
            // start.
            let unlocked = || {
                OpenOptions::new()
                    .write(true)
                    .open(entry.path())
                    .is_ok_and(|f| f.try_lock().is_ok())
            };
            if old && unlocked() && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Fails (interrupted) the unfinished runs whose owner process is gone, for
/// a process that is only looking (a listing): liveness is read from the
/// lock files. Does nothing for an in-memory store, whose runs no other
/// process can own.
pub fn recover_dead_runs(store: &Store) -> Result<usize, StoreError> {
    let Some(dir) = store.data_dir() else {
        return Ok(0);
    };
    let recovered = store.recover_interrupted_runs(&|id| Owner::is_alive(dir, id))?;
    if recovered > 0 {
        sweep(dir);
    }
    Ok(recovered)
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

    #[test]
    fn a_sweep_racing_new_owners_never_takes_a_live_one() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sweeper = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sweep(&dir);
                }
            })
        };
        for _ in 0..300 {
            let o = Owner::acquire(Some(&dir)).unwrap();
            assert!(Owner::is_alive(&dir, o.id()), "a live owner was swept");
            assert!(lock_path(&dir, o.id()).exists());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sweeper.join().unwrap();
        // Dead owners' files (unlocked, as after kill -9) are swept.
        std::fs::write(lock_path(&dir, "1-dead"), "").unwrap();
        let live = Owner::acquire(Some(&dir)).unwrap();
        assert_eq!(sweep(&dir), 1);
        assert!(!lock_path(&dir, "1-dead").exists());
        assert!(lock_path(&dir, live.id()).exists());
    }
}
