//! Hot reload: watch the skill folders and reload on change.
//!
//! Events are debounced (editors write in several steps, or write a temp
//! file and rename it into place), editor droppings are ignored, and then the
//! kernel reloads. A reload never replaces a working version with a broken
//! one, so a half-written file costs at most one reported failure, followed
//! by a good reload when the write completes. A file caught emptied (the
//! truncate of an in-place rewrite) is not even a failure: the reload keeps
//! the working version and the watcher looks again every [`DEBOUNCE`], up
//! to [`EMPTY_RETRIES`] times, before taking the empty file at its word.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::kernel::Kernel;

/// How long the file system must be quiet before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(40);

/// How many times a reload that found a file emptied is retried before the
/// empty file is believed (40 ms apart: about a second).
pub const EMPTY_RETRIES: u32 = 25;

/// Reloads; while a skill is seen mid-rewrite, looks again after the
/// debounce, and after [`EMPTY_RETRIES`] takes the files as they are.
fn reload_until_settled(k: &Kernel) {
    for _ in 0..EMPTY_RETRIES {
        if k.reload().incomplete.is_empty() {
            return;
        }
        std::thread::sleep(DEBOUNCE);
    }
    k.reload_settled();
}

type Watcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Keeps the watch alive; dropping it stops watching.
pub struct SkillWatcher {
    _debouncer: Arc<Mutex<Option<Watcher>>>,
    pub watched: Vec<PathBuf>,
}

/// Files that editors create beside the real one: swap files, backups,
/// vim's `4913` probe, and hidden temp files.
pub fn is_editor_noise(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return true;
    };
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
        || name == "4913"
}

/// Whether the events touch a path `wanted` accepts (ignoring editor
/// droppings and reads).
fn touches(res: &DebounceEventResult, wanted: impl Fn(&Path) -> bool) -> bool {
    match res {
        Ok(events) => events.iter().any(|e| {
            !matches!(e.kind, notify::EventKind::Access(_))
                && e.paths.iter().any(|p| !is_editor_noise(p) && wanted(p))
        }),
        // A watcher error (e.g. overflow) may have hidden real changes.
        Err(_) => true,
    }
}

/// Starts watching every existing folder in the kernel's search path, and
/// the configuration file (through its folder, so that a file renamed into
/// place or created later is seen). A search folder that does not exist yet
/// (`scripts/` before the first one-file skill) is watched for through its
/// nearest existing parent; once it appears it is watched like the others
/// and the skills in it load.
pub fn watch(kernel: &Kernel) -> Result<SkillWatcher, notify::Error> {
    let k = kernel.clone();
    let skill_dirs = kernel.search_path().dirs;
    let (dirs, missing): (Vec<PathBuf>, Vec<PathBuf>) =
        skill_dirs.iter().cloned().partition(|d| d.is_dir());
    let config = kernel.config_path();
    let config_file = config.clone();
    let missing = Arc::new(Mutex::new(missing));
    let shared: Arc<Mutex<Option<Watcher>>> = Arc::new(Mutex::new(None));
    let (waiting, handle) = (missing.clone(), Arc::downgrade(&shared));
    let debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
        if touches(&res, |p| p == config_file) {
            let _ = k.reload_config();
        }
        // A search folder that appeared: watch it from now on.
        let appeared: Vec<PathBuf> = {
            let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
            let (now, still): (Vec<PathBuf>, Vec<PathBuf>) = w.drain(..).partition(|d| d.is_dir());
            *w = still;
            now
        };
        if !appeared.is_empty()
            && let Some(shared) = handle.upgrade()
            && let Some(d) = shared.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
        {
            for dir in &appeared {
                if let Err(e) = d.watch(dir, RecursiveMode::Recursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a new skill folder");
                }
            }
        }
        if !appeared.is_empty() || touches(&res, |p| skill_dirs.iter().any(|d| p.starts_with(d))) {
            reload_until_settled(&k);
        }
    })?;
    let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
    let d = guard.insert(debouncer);
    let mut watched = Vec::new();
    for dir in dirs {
        d.watch(&dir, RecursiveMode::Recursive)?;
        watched.push(dir);
    }
    // Each missing folder's nearest existing parent, once, non-recursively.
    let mut parents: Vec<PathBuf> = Vec::new();
    for dir in missing.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        if let Some(p) = dir.ancestors().skip(1).find(|a| a.is_dir())
            && !parents.iter().any(|q| q == p)
        {
            parents.push(p.to_path_buf());
        }
    }
    if let Some(parent) = config.parent().filter(|p| p.is_dir())
        && !parents.iter().any(|q| q == parent)
    {
        parents.push(parent.to_path_buf());
    }
    for p in &parents {
        d.watch(p, RecursiveMode::NonRecursive)?;
    }
    if config.parent().is_some_and(|p| p.is_dir()) {
        watched.push(config.clone());
    }
    drop(guard);
    Ok(SkillWatcher {
        _debouncer: shared,
        watched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_droppings_are_ignored() {
        for noise in [
            ".main.luau.swp",
            "main.luau~",
            "4913",
            ".#main.luau",
            "x.tmp",
        ] {
            assert!(is_editor_noise(Path::new(noise)), "{noise}");
        }
        assert!(!is_editor_noise(Path::new("skills/notes/main.luau")));
        assert!(!is_editor_noise(Path::new("skill.toml")));
    }
}
