//! Path normalisation for capability checks.
//!
//! Targets are matched after symlinks are resolved, so a link inside a granted
//! folder that points outside it is judged by where it points. The open itself
//! then happens from a handle on the allowed root, by the resolved path,
//! following no symlink at all (see `host::fs`), so a link swapped in between
//! this check and the open makes the open fail instead of leaving the root.
//!
//! Rules are resolved once, when they are parsed: a rule naming a path that
//! goes through a symlink covers where the link pointed at that moment.

use std::path::{Component, Path, PathBuf};

/// Removes `.` and resolves `..` textually. Only correct for paths whose
/// components are not symlinks; used for rules with wildcards and for the
/// part of a path that does not exist yet.
pub fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                // Popping past the root stays at the root, as the kernel does.
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Resolves `path` the way the kernel would: every existing component is
/// canonicalised (symlinks followed), `..` goes to the parent of what came
/// before, and components that do not exist yet are appended as written.
/// Works for paths that do not exist yet, such as a file about to be written.
/// `path` must be absolute.
pub fn canonicalize_lenient(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let mut cur = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            // `cur` never holds a symlink, so its parent is the real parent.
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(name) => {
                let next = cur.join(name);
                cur = next.canonicalize().unwrap_or(next);
            }
        }
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_normalisation_handles_dots_and_the_root() {
        assert_eq!(
            normalize_lexically(Path::new("/a/./b/../c")),
            PathBuf::from("/a/c")
        );
        assert_eq!(
            normalize_lexically(Path::new("/../../etc")),
            PathBuf::from("/etc")
        );
    }

    #[test]
    fn lenient_canonicalisation_resolves_symlinks_in_the_existing_part() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        assert_eq!(
            canonicalize_lenient(&root.join("link/new/../file.txt")),
            root.join("real/file.txt")
        );
        assert_eq!(canonicalize_lenient(&root.join("link")), root.join("real"));
    }
}
