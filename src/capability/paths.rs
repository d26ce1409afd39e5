//! Path normalisation for capability checks: text only, no file system.
//!
//! Targets are matched after symlinks are resolved, so a link inside a granted
//! folder that points outside it is judged by where it points. Resolving
//! reads the disk, so it is not done here: the shell passes its resolver in
//! ([`ScopeBase::resolve`](super::ScopeBase), [`crate::paths`]). The open
//! itself then happens from a handle on the allowed root, by the resolved
//! path, following no symlink at all (see `host::fs`), so a link swapped in
//! between this check and the open makes the open fail instead of leaving the
//! root.
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
}
