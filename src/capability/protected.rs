//! The control plane: keel's own files, which no skill may touch.
//!
//! keel is steered by files on disk — the `keel.toml` in use, the data
//! directory (`keel.db` with the grants and the audit log, run owners, user
//! skills) and every folder skills are loaded from. A skill that could write
//! any of them could grant itself anything (rewrite the policy to
//! `default = "allow"`), plant or rewrite skills (itself included), or erase
//! the audit log; one that could read them could read other skills' code and
//! state. keel's own `/proc/<pid>` is protected the same way: its
//! `environ` holds every secret the `env` rules deny. So file access to
//! them is refused before the policy is consulted:
//! no declaration, policy rule or grant reaches them.
//!
//! This module is pure: the kernel hands it absolute paths (lexical and
//! canonical forms) when it builds the gate, and [`ProtectedPaths::covering`]
//! answers by path component for a canonical target. Folders *above* a
//! protected path are not protected: listing the workspace shows the name
//! `skills`, but nothing beneath it can be read, listed or written.
//! On case-insensitive file systems (macOS, Windows defaults) the match
//! ignores ASCII case, so `./SKILLS/x` cannot dodge `./skills`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::CapabilityKind;

/// What a protected path is to keel; says why it is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtectedKind {
    /// The configuration file in use (or the one a start here would read).
    Config,
    /// The data directory: the database, run owners, user skills.
    DataDir,
    /// A folder skills are loaded from.
    SkillPath,
    /// keel's own process in `/proc` (its environment, memory, open files).
    Process,
}

impl ProtectedKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Config => "keel's own configuration",
            Self::DataDir => "keel's own data (its database, audit log and user skills)",
            Self::SkillPath => "a folder keel loads skills from",
            Self::Process => {
                "keel's own process (its environment with the secrets it holds, its memory and open files)"
            }
        }
    }
}

/// One protected path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// The path as configured, made absolute (for messages).
    pub path: PathBuf,
    pub kind: ProtectedKind,
    /// Forms the path is matched by: as configured, and with symlinks
    /// resolved.
    forms: Vec<PathBuf>,
}

/// Every path no fs capability reaches.
#[derive(Debug, Clone, Default)]
pub struct ProtectedPaths(Vec<Protected>);

/// A refused file access to a protected path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{capability}` on `{target}` is refused: {} is {}; no skill may read or write it, whatever the policy or grants say (keep the files a skill works on elsewhere in the workspace)",
    protected.display(), kind.describe()
)]
pub struct ControlPlaneRefusal {
    pub capability: CapabilityKind,
    pub target: String,
    /// The protected path the target is in (or is).
    pub protected: PathBuf,
    pub kind: ProtectedKind,
}

impl ProtectedPaths {
    pub fn new() -> Self {
        Self::default()
    }

    /// Protects `path` (absolute) and everything beneath it. `canonical` is
    /// the same path with symlinks resolved, when the caller could resolve it.
    pub fn add(&mut self, kind: ProtectedKind, path: PathBuf, canonical: Option<PathBuf>) {
        let mut forms = vec![super::paths::normalize_lexically(&path)];
        if let Some(c) = canonical
            && !forms.contains(&c)
        {
            forms.push(c);
        }
        self.0.push(Protected { path, kind, forms });
    }

    /// Builder form of [`add`](Self::add).
    pub fn with(mut self, kind: ProtectedKind, path: PathBuf, canonical: Option<PathBuf>) -> Self {
        self.add(kind, path, canonical);
        self
    }

    pub fn entries(&self) -> &[Protected] {
        &self.0
    }

    /// Every form of every protected path (as configured and with symlinks
    /// resolved): what a confinement that works by path must leave out.
    pub fn all_forms(&self) -> impl Iterator<Item = &Path> {
        self.0
            .iter()
            .flat_map(|p| p.forms.iter().map(PathBuf::as_path))
    }

    /// The protected path `target` (canonical, absolute) is, or is beneath.
    pub fn covering(&self, target: &Path) -> Option<&Protected> {
        self.0
            .iter()
            .find(|p| p.forms.iter().any(|f| beneath(target, f)))
    }

    /// Refuses a file capability on a protected target; everything else
    /// (other kinds, non-path targets, paths elsewhere) passes.
    pub fn refuse(
        &self,
        capability: CapabilityKind,
        target: &super::Target<'_>,
    ) -> Option<ControlPlaneRefusal> {
        let super::Target::Path(path) = target else {
            return None;
        };
        if !matches!(capability, CapabilityKind::FsRead | CapabilityKind::FsWrite) {
            return None;
        }
        self.covering(path).map(|p| ControlPlaneRefusal {
            capability,
            target: path.display().to_string(),
            protected: p.path.clone(),
            kind: p.kind,
        })
    }
}

/// `target` is `base` or beneath it, by whole components.
fn beneath(target: &Path, base: &Path) -> bool {
    if cfg!(any(target_os = "macos", target_os = "windows")) {
        let mut t = target.components();
        base.components().all(|b| {
            t.next().is_some_and(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .eq_ignore_ascii_case(&b.as_os_str().to_string_lossy())
            })
        })
    } else {
        target.starts_with(base)
    }
}

impl fmt::Display for ProtectedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::Target;

    fn paths() -> ProtectedPaths {
        ProtectedPaths::new()
            .with(ProtectedKind::Config, "/ws/keel.toml".into(), None)
            .with(
                ProtectedKind::DataDir,
                "/ws/link-data".into(),
                Some("/real/data".into()),
            )
            .with(ProtectedKind::SkillPath, "/ws/./skills".into(), None)
    }

    #[test]
    fn protects_each_path_and_everything_beneath_by_component() {
        let p = paths();
        for (t, kind) in [
            ("/ws/keel.toml", ProtectedKind::Config),
            ("/ws/keel.toml/x", ProtectedKind::Config),
            ("/real/data/keel.db", ProtectedKind::DataDir),
            ("/ws/link-data/keel.db", ProtectedKind::DataDir),
            ("/ws/skills", ProtectedKind::SkillPath),
            ("/ws/skills/evil/skill.toml", ProtectedKind::SkillPath),
        ] {
            assert_eq!(p.covering(Path::new(t)).map(|p| p.kind), Some(kind), "{t}");
        }
        for t in [
            "/ws",
            "/ws/keel.toml.bak",
            "/ws/skills-old/x",
            "/real",
            "/ws/notes",
        ] {
            assert!(p.covering(Path::new(t)).is_none(), "{t}");
        }
    }

    #[test]
    fn only_file_capabilities_on_paths_are_refused_and_the_message_says_why() {
        let p = paths();
        let t = Path::new("/ws/keel.toml");
        let e = p.refuse(CapabilityKind::FsWrite, &Target::Path(t)).unwrap();
        let msg = e.to_string();
        assert!(msg.contains("keel's own configuration"), "{msg}");
        assert!(msg.contains("no skill may read or write it"), "{msg}");
        assert!(msg.contains("`fs.write`"), "{msg}");
        assert!(p.refuse(CapabilityKind::FsRead, &Target::Path(t)).is_some());
        assert!(
            p.refuse(CapabilityKind::Exec, &Target::Name("keel.toml"))
                .is_none()
        );
        assert!(p.refuse(CapabilityKind::Kv, &Target::None).is_none());
        let d = p
            .refuse(
                CapabilityKind::FsRead,
                &Target::Path(Path::new("/real/data/keel.db")),
            )
            .unwrap();
        assert!(d.to_string().contains("/ws/link-data"), "{d}");
        assert!(d.to_string().contains("audit log"), "{d}");
    }
}
