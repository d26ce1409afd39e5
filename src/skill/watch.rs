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

/// Keeps the watch alive; dropping it stops watching.
pub struct SkillWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
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
/// place or created later is seen).
pub fn watch(kernel: &Kernel) -> Result<SkillWatcher, notify::Error> {
    let k = kernel.clone();
    let dirs: Vec<PathBuf> = kernel
        .search_path()
        .dirs
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    let config = kernel.config_path();
    let skill_dirs = dirs.clone();
    let config_file = config.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
        if touches(&res, |p| p == config_file) {
            let _ = k.reload_config();
        }
        if touches(&res, |p| skill_dirs.iter().any(|d| p.starts_with(d))) {
            reload_until_settled(&k);
        }
    })?;
    let mut watched = Vec::new();
    for dir in dirs {
        debouncer.watch(&dir, RecursiveMode::Recursive)?;
        watched.push(dir);
    }
    if let Some(parent) = config.parent().filter(|p| p.is_dir()) {
        debouncer.watch(parent, RecursiveMode::NonRecursive)?;
        watched.push(config.clone());
    }
    Ok(SkillWatcher {
        _debouncer: debouncer,
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
