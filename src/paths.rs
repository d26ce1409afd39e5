//! Resolving paths on disk: the one place outside the file host functions
//! that follows symlinks to find where a path really is.
//!
//! Capability checks match targets and rules by resolved paths, but
//! `capability/` is pure: it gets this resolver through
//! [`ScopeBase`](crate::capability::ScopeBase) ([`scope_base`]) and never
//! reads the disk itself.

use std::path::{Component, Path, PathBuf};

use crate::capability::ScopeBase;

/// The scope base for rules in `workspace`, resolving paths on disk.
pub fn scope_base(workspace: &Path) -> ScopeBase<'_> {
    ScopeBase {
        workspace,
        resolve: canonicalize_lenient,
    }
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
