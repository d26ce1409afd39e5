//! `keel.fs`: files beneath granted folders.
//!
//! A path from a script is made absolute against the workspace and resolved
//! (symlinks followed, `..` applied) before the gate judges it. The gate says
//! which declaration covers it and which policy rule or grant allowed it;
//! the file is then reached from a directory handle on the *narrower* of the
//! two roots, by the checked path below it, with no symlink followed
//! anywhere — not in the root's own path, not in the folders beneath it, not
//! at the end (see [`beneath`]: `openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, or an `O_NOFOLLOW` walk where the kernel lacks it).
//! So what is opened is exactly what was checked: a symlink swapped in by
//! another process between the check and the open makes the call fail, it
//! never lands in a denied sub-folder, keel's own files, or outside.
//!
//! Only regular files and folders are read or written. Files are opened
//! with `O_NONBLOCK` (a FIFO or device never blocks the open) and `fstat`ed
//! before any byte moves; anything else is refused at once. Writes open
//! without `O_TRUNC`, check what they opened, and only then truncate; a file
//! with several hard links is not written (its other names were never
//! checked). `mkdir` creates one folder at a time beneath the handle,
//! `remove` unlinks by name in a parent folder opened the same way. Nothing
//! here reads `/proc`, and a refusal never says where a link points.

mod beneath;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Args, CallCtx, HostError, HostFn, p};
use crate::capability::{CapabilityKind, CapabilityRule, Scope, Target};
use crate::kernel::gate::Allowed;

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

/// A checked target: a handle on the root the gate allowed, and the checked
/// path below it (plain names only).
struct Beneath {
    root: OwnedFd,
    rel: PathBuf,
}

/// The folder a rule roots file access at.
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

/// The deepest root among the declaration and the allowing rule that holds
/// `target`: both cover it, so access is confined to where both reach.
fn allowed_root(allowed: &Allowed, target: &Path) -> Option<PathBuf> {
    std::iter::once(&allowed.declared)
        .chain(allowed.by.as_ref())
        .map(rule_root)
        .filter(|r| target.starts_with(r))
        .max_by_key(|r| r.components().count())
}

fn failed(op: &str, path: &str, e: std::io::Error) -> HostError {
    HostError::Failed(format!("{op} {path:?}: {e}"))
}

/// Errors from opening beneath the root. A link met on the way is a denial
/// that names the capability — never where the link points.
fn open_failed(kind: CapabilityKind, op: &str, path: &str, e: std::io::Error) -> HostError {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) => HostError::Denied(format!(
            "`{kind}` refused for {path:?}: part of the path is a symbolic link (or it changed after the check); keel does not {op} through symbolic links — use the real path"
        )),
        Some(libc::ENXIO) => special(op, path, "a FIFO or socket with nothing on the other end"),
        _ => failed(op, path, e),
    }
}

fn special(op: &str, path: &str, what: &str) -> HostError {
    HostError::Failed(format!(
        "{op} {path:?}: it is {what}; keel only reads and writes regular files and folders"
    ))
}

/// Resolves and checks `path`, then opens a handle on the allowed root.
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
    let allowed = ctx.check(kind, Target::Path(&target))?;
    let Some(mut root) = allowed_root(&allowed, &target) else {
        return Err(HostError::Denied(format!(
            "{path:?} is outside the declared folder"
        )));
    };
    // A rule may name a single file, or a folder that does not exist yet:
    // open the nearest existing folder above it. `rel` then still only
    // names components beneath the rule's root, and the walk refuses any
    // of them that is a link by the time it is opened.
    while std::fs::symlink_metadata(&root).map_or(true, |m| !m.is_dir()) && root.pop() {}
    let rel = target
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .map_err(|_| HostError::Denied(format!("{path:?} is outside the declared folder")))?;
    let root = beneath::open_root(&root).map_err(|e| open_failed(kind, "open", path, e))?;
    Ok(Beneath { root, rel })
}

/// Refuses anything but a regular file (and says what it is).
fn require_regular(op: &str, path: &str, st: &libc::stat) -> Result<(), HostError> {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Ok(()),
        libc::S_IFDIR => Err(HostError::Failed(format!(
            "{op} {path:?}: is a folder (use keel.fs.list)"
        ))),
        _ => Err(special(op, path, beneath::kind_of(st))),
    }
}

/// Flags every data open carries: never block on a FIFO or device, never
/// make a terminal ours.
const NO_WAIT: libc::c_int = libc::O_NONBLOCK | libc::O_NOCTTY;

/// `fs.read`, `fs.list`, `fs.exists`, `fs.remove`, `fs.mkdir`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathArgs<'a> {
    path: &'a str,
}

/// `fs.write`, `fs.append`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs<'a> {
    path: &'a str,
    content: &'a str,
}

fn read(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let PathArgs { path } = args.parse()?;
    let kind = CapabilityKind::FsRead;
    let b = beneath(ctx, kind, path)?;
    let fd = beneath::open(b.root.as_fd(), &b.rel, libc::O_RDONLY | NO_WAIT, 0)
        .map_err(|e| open_failed(kind, "read", path, e))?;
    let st = beneath::fstat(fd.as_fd()).map_err(|e| failed("read", path, e))?;
    require_regular("read", path, &st)?;
    let mut file = std::fs::File::from(fd);
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
    let WriteArgs { path, content } = args.parse()?;
    let kind = CapabilityKind::FsWrite;
    let op = if append { "append" } else { "write" };
    let b = beneath(ctx, kind, path)?;
    // No O_TRUNC: nothing is cut before we know what was opened.
    let mut flags = libc::O_WRONLY | libc::O_CREAT | NO_WAIT;
    if append {
        flags |= libc::O_APPEND;
    }
    let fd = beneath::open(b.root.as_fd(), &b.rel, flags, 0o666)
        .map_err(|e| open_failed(kind, op, path, e))?;
    let st = beneath::fstat(fd.as_fd()).map_err(|e| failed(op, path, e))?;
    require_regular(op, path, &st)?;
    if st.st_nlink > 1 {
        return Err(HostError::Denied(format!(
            "`{kind}` refused for {path:?}: the file has {} hard links, and keel checked only this name; keel does not write a file that is also reachable by other names",
            st.st_nlink
        )));
    }
    let file = std::fs::File::from(fd);
    if !append {
        file.set_len(0).map_err(|e| failed(op, path, e))?;
    }
    (&file)
        .write_all(content.as_bytes())
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
    let PathArgs { path } = args.parse()?;
    let kind = CapabilityKind::FsRead;
    let b = beneath(ctx, kind, path)?;
    let fd = beneath::open(
        b.root.as_fd(),
        &b.rel,
        libc::O_RDONLY | libc::O_DIRECTORY | NO_WAIT,
        0,
    )
    .map_err(|e| open_failed(kind, "list", path, e))?;
    let dir = cap_std::fs::Dir::from_std_file(std::fs::File::from(fd));
    let entries = dir.entries().map_err(|e| failed("list", path, e))?;
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
        // Entry metadata is read relative to the folder without following
        // links, so a link's size is never its target's.
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

/// Splits `rel` into its parent folder and last name.
fn parent_and_name(rel: &Path) -> Option<(&Path, &OsStr)> {
    Some((rel.parent().unwrap_or(Path::new("")), rel.file_name()?))
}

fn exists(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let PathArgs { path } = args.parse()?;
    let b = beneath(ctx, CapabilityKind::FsRead, path)?;
    let Some((parent, name)) = parent_and_name(&b.rel) else {
        // The root itself: its handle is open, so it exists.
        return Ok(Value::Bool(true));
    };
    // Anything in the way (missing folder, a link, a file) means "not
    // there as far as this skill can reach": the answer never depends on
    // what lies past a link.
    let Ok(dir) = beneath::open_dir(b.root.as_fd(), parent) else {
        return Ok(Value::Bool(false));
    };
    let Ok(name) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name)) else {
        return Ok(Value::Bool(false));
    };
    let st = beneath::lstat_at(dir.as_fd(), &name).map_err(|e| failed("exists", path, e))?;
    Ok(Value::Bool(st.is_some_and(|st| {
        st.st_mode & libc::S_IFMT != libc::S_IFLNK
    })))
}

fn remove(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let PathArgs { path } = args.parse()?;
    let kind = CapabilityKind::FsWrite;
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
    let b = beneath_target(ctx, kind, path, parent.join(name))?;
    let Some((parent, name)) = parent_and_name(&b.rel) else {
        return Err(HostError::Denied(format!(
            "remove {path:?}: refusing to remove a declared root folder itself"
        )));
    };
    let dir = match beneath::open_dir(b.root.as_fd(), parent) {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Value::Bool(false)),
        Err(e) => return Err(open_failed(kind, "remove", path, e)),
    };
    beneath::remove_at(dir.as_fd(), name)
        .map(Value::Bool)
        .map_err(|e| failed("remove", path, e))
}

fn mkdir(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let PathArgs { path } = args.parse()?;
    let kind = CapabilityKind::FsWrite;
    let b = beneath(ctx, kind, path)?;
    beneath::mkdir_all(b.root.as_fd(), &b.rel).map_err(|e| open_failed(kind, "mkdir", path, e))?;
    Ok(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> CapabilityRule {
        let ws = PathBuf::from("/ws");
        CapabilityRule::parse(s, &crate::paths::scope_base(&ws)).unwrap()
    }

    #[test]
    fn glob_rules_root_at_their_static_prefix() {
        assert_eq!(
            rule_root(&rule("fs.read:./notes/*.md")),
            PathBuf::from("/ws/notes")
        );
    }

    #[test]
    fn access_is_rooted_at_the_narrower_of_declaration_and_policy() {
        let target = Path::new("/ws/notes/a/x.txt");
        let wide_declared = Allowed {
            declared: rule("fs.write:."),
            by: Some(rule("fs.write:./notes")),
        };
        assert_eq!(
            allowed_root(&wide_declared, target),
            Some(PathBuf::from("/ws/notes"))
        );
        let wide_policy = Allowed {
            declared: rule("fs.write:./notes/a"),
            by: Some(rule("fs.write:*")),
        };
        assert_eq!(
            allowed_root(&wide_policy, target),
            Some(PathBuf::from("/ws/notes/a"))
        );
        let by_default = Allowed {
            declared: rule("fs.write:./notes"),
            by: None,
        };
        assert_eq!(
            allowed_root(&by_default, target),
            Some(PathBuf::from("/ws/notes"))
        );
    }
}
