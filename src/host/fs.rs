//! `keel.fs`: files beneath granted folders.
//!
//! A path from a script is made absolute against the workspace and resolved
//! (symlinks followed, `..` applied) before the gate judges it. The file is
//! then opened *beneath the declared root* with cap-std, which refuses any
//! walk that leaves it — so a symlink swapped in between the check and the
//! open still cannot escape. After opening, the descriptor's real path is
//! read back; if it differs from what was checked, the gate judges it again
//! (a swap inside the root must not reach a denied sub-folder).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use serde_json::{Value, json};

use super::{Args, CallCtx, HostError, HostFn, p};
use crate::capability::{CapabilityKind, CapabilityRule, Scope, Target};

/// Largest file `fs.read` returns.
pub const MAX_READ: u64 = 16 * 1024 * 1024;
/// Most entries `fs.list` returns.
pub const MAX_LIST: usize = 10_000;

pub const FUNCTIONS: &[HostFn] = &[
    HostFn {
        namespace: "fs",
        name: "read",
        params: &[p("path", "string")],
        returns: "string",
        capability: Some(CapabilityKind::FsRead),
        doc: "Reads a UTF-8 text file (at most 16 MiB). Relative paths are relative to the workspace root.",
        luau_example: r#"local text = keel.fs.read("./notes/today.md")"#,
        rhai_example: r#"let text = keel::fs::read("./notes/today.md");"#,
        call: read,
    },
    HostFn {
        namespace: "fs",
        name: "write",
        params: &[p("path", "string"), p("content", "string")],
        returns: "nil",
        capability: Some(CapabilityKind::FsWrite),
        doc: "Creates or replaces a file with the given text. The folder must exist (see `fs.mkdir`).",
        luau_example: r##"keel.fs.write("./notes/today.md", "# Today\n")"##,
        rhai_example: r##"keel::fs::write("./notes/today.md", "# Today\n");"##,
        call: write,
    },
    HostFn {
        namespace: "fs",
        name: "append",
        params: &[p("path", "string"), p("content", "string")],
        returns: "nil",
        capability: Some(CapabilityKind::FsWrite),
        doc: "Appends text to a file, creating it if needed.",
        luau_example: r#"keel.fs.append("./notes/log.md", "- done\n")"#,
        rhai_example: r#"keel::fs::append("./notes/log.md", "- done\n");"#,
        call: append,
    },
    HostFn {
        namespace: "fs",
        name: "list",
        params: &[p("path", "string")],
        returns: "{ { name: string, type: string, size: number } }",
        capability: Some(CapabilityKind::FsRead),
        doc: "Lists a folder: each entry's name, type (`file`, `dir`, `symlink` or `other`) and size, sorted by name.",
        luau_example: r#"for _, e in keel.fs.list("./notes") do print(e.name, e.type) end"#,
        rhai_example: r#"for e in keel::fs::list("./notes") { print(e.name); }"#,
        call: list,
    },
    HostFn {
        namespace: "fs",
        name: "exists",
        params: &[p("path", "string")],
        returns: "boolean",
        capability: Some(CapabilityKind::FsRead),
        doc: "Whether a file or folder exists.",
        luau_example: r#"if keel.fs.exists("./notes/today.md") then ... end"#,
        rhai_example: r#"if keel::fs::exists("./notes/today.md") { ... }"#,
        call: exists,
    },
    HostFn {
        namespace: "fs",
        name: "remove",
        params: &[p("path", "string")],
        returns: "boolean",
        capability: Some(CapabilityKind::FsWrite),
        doc: "Removes a file or an empty folder; returns false when there was nothing to remove.",
        luau_example: r#"keel.fs.remove("./notes/old.md")"#,
        rhai_example: r#"keel::fs::remove("./notes/old.md");"#,
        call: remove,
    },
    HostFn {
        namespace: "fs",
        name: "mkdir",
        params: &[p("path", "string")],
        returns: "nil",
        capability: Some(CapabilityKind::FsWrite),
        doc: "Creates a folder and any missing parents.",
        luau_example: r#"keel.fs.mkdir("./notes/2026")"#,
        rhai_example: r#"keel::fs::mkdir("./notes/2026");"#,
        call: mkdir,
    },
];

/// A checked target: the declared root to open beneath and the path below it.
struct Beneath {
    dir: Dir,
    rel: PathBuf,
    target: PathBuf,
}

/// The folder a declared rule roots file access at.
fn rule_root(rule: &CapabilityRule) -> PathBuf {
    match &rule.scope {
        Scope::Path { path, glob: false } => path.clone(),
        // Everything before the first component with a wildcard.
        Scope::Path { path, glob: true } => path
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains('*'))
            .collect(),
        _ => PathBuf::from("/"),
    }
}

fn failed(op: &str, path: &str, e: std::io::Error) -> HostError {
    HostError::Failed(format!("{op} {path:?}: {e}"))
}

/// Errors from opening beneath the root: a refused symlink gets a message
/// naming the capability and where the link points.
fn open_failed(
    kind: CapabilityKind,
    op: &str,
    path: &str,
    b: &Beneath,
    e: std::io::Error,
) -> HostError {
    // cap-std's words for a walk that would leave the root, and the
    // kernel's for O_NOFOLLOW meeting a link.
    let outside = e.to_string().contains("outside of the filesystem");
    if outside || e.raw_os_error() == Some(libc::ELOOP) {
        let to = b
            .dir
            .read_link_contents(&b.rel)
            .map(|t| format!(" -> {:?}", t.display().to_string()))
            .unwrap_or_default();
        return HostError::Denied(format!(
            "`{kind}` refused for {path:?}: it is a symbolic link{to} that does not resolve to a file inside the declared folder (or it changed after the check); keel does not {op} through such links"
        ));
    }
    failed(op, path, e)
}

/// Resolves and checks `path`, then opens the declared root as a `Dir`.
fn beneath(ctx: &CallCtx, kind: CapabilityKind, path: &str) -> Result<Beneath, HostError> {
    let target = ctx.resolve_path(path)?;
    beneath_target(ctx, kind, path, target)
}

fn beneath_target(
    ctx: &CallCtx,
    kind: CapabilityKind,
    path: &str,
    target: PathBuf,
) -> Result<Beneath, HostError> {
    let rule = ctx.check(kind, Target::Path(&target))?;
    let mut root = rule_root(&rule);
    // A rule may name a single file, or a folder that does not exist yet:
    // open the nearest existing folder above it. `rel` then still only
    // names components beneath the rule's root, none of which exist yet
    // (so none is a symlink).
    while !root.is_dir() && root.pop() {}
    let rel = target
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .map_err(|_| HostError::Denied(format!("{path:?} is outside the declared folder")))?;
    let dir = Dir::open_ambient_dir(&root, ambient_authority())
        .map_err(|e| failed("open folder", &root.display().to_string(), e))?;
    Ok(Beneath { dir, rel, target })
}

impl Beneath {
    fn rel_or_dot(&self) -> &Path {
        if self.rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.rel
        }
    }
}

/// Re-judges an opened file by where it really is.
fn verify_opened(
    ctx: &CallCtx,
    kind: CapabilityKind,
    b: &Beneath,
    fd: i32,
) -> Result<(), HostError> {
    let real = std::fs::read_link(format!("/proc/self/fd/{fd}"));
    if let Ok(real) = real
        && real != b.target
    {
        ctx.check(kind, Target::Path(&real))?;
    }
    Ok(())
}

fn read(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let path = args.str(0)?;
    let b = beneath(ctx, CapabilityKind::FsRead, path)?;
    let file = b
        .dir
        .open(b.rel_or_dot())
        .map_err(|e| failed("read", path, e))?;
    let mut file = file.into_std();
    verify_opened(ctx, CapabilityKind::FsRead, &b, file.as_raw_fd())?;
    let meta = file.metadata().map_err(|e| failed("read", path, e))?;
    if meta.is_dir() {
        return Err(HostError::Failed(format!(
            "read {path:?}: is a folder (use keel.fs.list)"
        )));
    }
    let mut buf = Vec::new();
    (&mut file)
        .take(MAX_READ + 1)
        .read_to_end(&mut buf)
        .map_err(|e| failed("read", path, e))?;
    if buf.len() as u64 > MAX_READ {
        return Err(HostError::Failed(format!(
            "read {path:?}: file is larger than the {} MiB limit",
            MAX_READ / (1024 * 1024)
        )));
    }
    String::from_utf8(buf)
        .map(Value::String)
        .map_err(|_| HostError::Failed(format!("read {path:?}: not UTF-8 text")))
}

fn write_with(ctx: &CallCtx, args: Args, append: bool) -> Result<Value, HostError> {
    let path = args.str(0)?;
    let content = args.str(1)?;
    let b = beneath(ctx, CapabilityKind::FsWrite, path)?;
    // Never create or write through a link at the end of the path: a
    // dangling link could otherwise create a file wherever it points
    // beneath the root, before the re-check below could refuse it.
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).custom_flags(libc::O_NOFOLLOW);
    if append {
        opts.append(true);
    } else {
        opts.truncate(true);
    }
    let op = if append { "append" } else { "write" };
    let file = b
        .dir
        .open_with(b.rel_or_dot(), &opts)
        .map_err(|e| open_failed(CapabilityKind::FsWrite, op, path, &b, e))?;
    let mut file = file.into_std();
    verify_opened(ctx, CapabilityKind::FsWrite, &b, file.as_raw_fd())?;
    file.write_all(content.as_bytes())
        .map_err(|e| failed(op, path, e))?;
    Ok(Value::Null)
}

fn write(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    write_with(ctx, args, false)
}

fn append(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    write_with(ctx, args, true)
}

fn list(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let path = args.str(0)?;
    let b = beneath(ctx, CapabilityKind::FsRead, path)?;
    let entries = b
        .dir
        .read_dir(b.rel_or_dot())
        .map_err(|e| failed("list", path, e))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| failed("list", path, e))?;
        if out.len() >= MAX_LIST {
            return Err(HostError::Failed(format!(
                "list {path:?}: more than {MAX_LIST} entries"
            )));
        }
        let ft = e.file_type().map_err(|e| failed("list", path, e))?;
        let kind = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else {
            "other"
        };
        let size = if ft.is_file() {
            e.metadata().map(|m| m.len()).unwrap_or(0)
        } else {
            0
        };
        out.push(json!({ "name": e.file_name().to_string_lossy(), "type": kind, "size": size }));
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Value::Array(out))
}

fn exists(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let path = args.str(0)?;
    let b = beneath(ctx, CapabilityKind::FsRead, path)?;
    Ok(Value::Bool(
        b.dir.try_exists(b.rel_or_dot()).unwrap_or(false),
    ))
}

fn remove(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let path = args.str(0)?;
    // Removing a symlink removes the link, not what it points to: resolve
    // the folder, keep the last component as written.
    let p = Path::new(path);
    let Some(name) = p.file_name() else {
        return Err(HostError::BadArgument(format!(
            "remove {path:?}: name a file or folder (not `.`, `..` or a root)"
        )));
    };
    let parent = match p.parent().map(|d| d.to_string_lossy()) {
        Some(d) if !d.is_empty() => ctx.resolve_path(&d)?,
        _ => ctx.resolve_path(".")?,
    };
    let b = beneath_target(ctx, CapabilityKind::FsWrite, path, parent.join(name))?;
    if b.rel.as_os_str().is_empty() {
        return Err(HostError::Denied(format!(
            "remove {path:?}: refusing to remove a declared root folder itself"
        )));
    }
    let meta = match b.dir.symlink_metadata(&b.rel) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Value::Bool(false)),
        Err(e) => return Err(failed("remove", path, e)),
    };
    let r = if meta.is_dir() {
        b.dir.remove_dir(&b.rel)
    } else {
        b.dir.remove_file(&b.rel)
    };
    r.map_err(|e| failed("remove", path, e))?;
    Ok(Value::Bool(true))
}

fn mkdir(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let path = args.str(0)?;
    let b = beneath(ctx, CapabilityKind::FsWrite, path)?;
    if !b.rel.as_os_str().is_empty() {
        b.dir
            .create_dir_all(&b.rel)
            .map_err(|e| failed("mkdir", path, e))?;
    }
    Ok(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::ScopeBase;

    #[test]
    fn opening_beneath_never_follows_a_final_symlink() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("locked")).unwrap();
        std::os::unix::fs::symlink("locked/created.txt", d.path().join("dangling")).unwrap();
        let dir = Dir::open_ambient_dir(d.path(), ambient_authority()).unwrap();
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).custom_flags(libc::O_NOFOLLOW);
        let err = dir.open_with("dangling", &opts).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        assert!(!d.path().join("locked/created.txt").exists());
    }

    #[test]
    fn glob_rules_root_at_their_static_prefix() {
        let ws = PathBuf::from("/ws");
        let r =
            CapabilityRule::parse("fs.read:./notes/*.md", &ScopeBase { workspace: &ws }).unwrap();
        assert_eq!(rule_root(&r), PathBuf::from("/ws/notes"));
    }
}
