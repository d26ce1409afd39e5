//! From a [`Spec`] (what the grants allow) to the list of Landlock rules:
//! which files and folders get which rights.
//!
//! Landlock only *adds* access: a rule on a folder covers everything beneath
//! it, and nothing can carve a hole out of it afterwards. So a granted folder
//! that contains something the child must never reach (keel.toml, the data
//! directory, a skill search path, a path the policy denies or only allows
//! after asking) is not added whole: it is split into its entries, and every
//! entry except the way to the excluded path is added instead, recursively
//! down to the excluded path. The price, documented for operators: a new
//! entry created *directly* in a split folder after the split (a new file in
//! the workspace root, when the workspace holds keel.toml) is not covered,
//! so a program cannot create or read it. Symbolic links met while splitting
//! are skipped (Landlock rules follow the real hierarchy, so a link inside a
//! covered folder never leads outside it; a link *as* a rule target would).

use std::path::{Path, PathBuf};

use super::{SandboxError, Spec};

/// The rights a rule gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rights {
    /// Read files and list folders.
    Read,
    /// Read, and read-write the device (for `/dev/null`).
    ReadWriteFile,
    /// Create, write, truncate, rename and remove beneath a folder.
    Write,
    /// Execute (and read) one program file.
    Execute,
}

/// One rule: a path and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub path: PathBuf,
    pub rights: Rights,
}

/// At most this many rules: splitting a huge folder to exclude something in
/// it is refused rather than turned into a slow exec.
pub const MAX_RULES: usize = 4096;

/// Folders every dynamically linked program reads to start and to work at
/// all (shared libraries, the loader cache, locale, time zones, user names,
/// CA certificates). Read-only. Deliberately absent: `/proc` (keel's own
/// environment and memory), `/usr/bin` and `/bin` (so the loader cannot be
/// made to run a shell it was never granted), home folders, `/etc` as a
/// whole, `/tmp`, `/run`, `/var`.
pub const SYSTEM_READ: &[&str] = &[
    "/lib",
    "/lib32",
    "/lib64",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/share/locale",
    "/usr/share/i18n",
    "/usr/share/zoneinfo",
    "/usr/share/ca-certificates",
    "/usr/share/terminfo",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/locale.alias",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// Devices a program may write (output it wants to throw away).
pub const SYSTEM_WRITE_FILES: &[&str] = &["/dev/null"];

/// The rules for `spec`, deduplicated, in a stable order.
pub fn rules(spec: &Spec) -> Result<Vec<Rule>, SandboxError> {
    let mut out = Vec::new();
    for p in SYSTEM_READ {
        add_split(Path::new(p), Rights::Read, &spec.excluded, &mut out)?;
    }
    for p in SYSTEM_WRITE_FILES {
        add_split(
            Path::new(p),
            Rights::ReadWriteFile,
            &spec.excluded,
            &mut out,
        )?;
    }
    for p in &spec.read {
        add_split(p, Rights::Read, &spec.excluded, &mut out)?;
    }
    for p in &spec.write {
        add_split(p, Rights::Write, &spec.excluded, &mut out)?;
    }
    // Programs were each checked by the exec gate by exact name: they are
    // added as single files, whatever folder they sit in.
    for p in &spec.execute {
        if p.exists() {
            out.push(Rule {
                path: p.clone(),
                rights: Rights::Execute,
            });
        }
    }
    out.sort_by(|a, b| (&a.path, a.rights).cmp(&(&b.path, b.rights)));
    out.dedup();
    if out.len() > MAX_RULES {
        return Err(SandboxError::TooManyRules { count: out.len() });
    }
    Ok(out)
}

/// Adds `root` with `rights`, split around anything in `excluded`.
fn add_split(
    root: &Path,
    rights: Rights,
    excluded: &[PathBuf],
    out: &mut Vec<Rule>,
) -> Result<(), SandboxError> {
    // Missing system paths are simply not there on this machine.
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return Ok(());
    };
    let root = if meta.file_type().is_symlink() {
        // Only the fixed system list can name a link (`/lib` -> `usr/lib`
        // on merged-/usr systems); grant paths are canonical already.
        match root.canonicalize() {
            Ok(real) => real,
            Err(_) => return Ok(()),
        }
    } else {
        root.to_path_buf()
    };
    if excluded.iter().any(|x| root.starts_with(x)) {
        return Ok(());
    }
    if !excluded.iter().any(|x| x.starts_with(&root)) {
        out.push(Rule { path: root, rights });
        return Ok(());
    }
    let entries = std::fs::read_dir(&root).map_err(|e| SandboxError::Split {
        path: root.clone(),
        reason: e.to_string(),
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| SandboxError::Split {
            path: root.clone(),
            reason: e.to_string(),
        })?;
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(true);
        if is_link {
            continue;
        }
        add_split(&entry.path(), rights, excluded, out)?;
        if out.len() > MAX_RULES {
            return Err(SandboxError::TooManyRules { count: out.len() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(read: Vec<PathBuf>, write: Vec<PathBuf>, excluded: Vec<PathBuf>) -> Spec {
        Spec {
            read,
            write,
            execute: Vec::new(),
            excluded,
            network: false,
            owner: Default::default(),
        }
    }

    fn user_rules(rules: &[Rule], under: &Path) -> Vec<(String, Rights)> {
        rules
            .iter()
            .filter_map(|r| {
                r.path
                    .strip_prefix(under)
                    .ok()
                    .map(|p| (p.display().to_string(), r.rights))
            })
            .collect()
    }

    #[test]
    fn a_granted_folder_without_exclusions_is_one_rule() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().canonicalize().unwrap();
        std::fs::create_dir(ws.join("notes")).unwrap();
        let r = rules(&spec(vec![ws.join("notes")], vec![], vec![])).unwrap();
        assert_eq!(user_rules(&r, &ws), [("notes".into(), Rights::Read)]);
    }

    #[test]
    fn a_folder_holding_control_plane_paths_is_split_around_them() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().canonicalize().unwrap();
        for dir in ["skills/a", "data/x", "src/deep", "docs"] {
            std::fs::create_dir_all(ws.join(dir)).unwrap();
        }
        std::fs::write(ws.join("keel.toml"), "").unwrap();
        std::fs::write(ws.join("README"), "").unwrap();
        std::os::unix::fs::symlink(ws.join("data"), ws.join("link-to-data")).unwrap();
        let excluded = vec![ws.join("keel.toml"), ws.join("skills"), ws.join("data/x")];
        let r = rules(&spec(vec![], vec![ws.clone()], excluded)).unwrap();
        let mut got = user_rules(&r, &ws);
        got.sort();
        // Everything but the excluded paths, the link, and the split
        // folders themselves.
        assert_eq!(
            got,
            [
                ("README".into(), Rights::Write),
                ("docs".into(), Rights::Write),
                ("src".into(), Rights::Write),
            ]
        );
    }

    #[test]
    fn a_grant_inside_an_excluded_path_gives_nothing() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(ws.join("data/skills/me")).unwrap();
        let r = rules(&spec(
            vec![ws.join("data/skills/me")],
            vec![],
            vec![ws.join("data")],
        ))
        .unwrap();
        assert!(user_rules(&r, &ws).is_empty(), "{r:?}");
    }

    #[test]
    fn the_system_set_never_names_proc_or_shells() {
        for p in SYSTEM_READ {
            assert!(!p.starts_with("/proc"), "{p}");
            assert!(!p.starts_with("/bin") && !p.starts_with("/usr/bin"), "{p}");
            assert!(!p.starts_with("/home") && !p.starts_with("/root"), "{p}");
        }
    }
}
