//! Opening files beneath a directory handle without following symlinks.
//!
//! Everything `keel.fs` touches is reached from a directory handle by a
//! relative path of plain names, and no symbolic link is followed on the way
//! — not in the folders, not at the end. On Linux 5.6+ the kernel does the
//! walk in one `openat2` call with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`;
//! where `openat2` is missing (`ENOSYS`: older kernels, some seccomp
//! profiles, other Unixes) the same walk is done one component at a time
//! with `openat(…, O_NOFOLLOW)`, each step holding the previous folder open.
//! Either way a symlink swapped in by another process at any moment makes the
//! open fail with `ELOOP` (or `ENOTDIR`), never land somewhere else. `..`
//! never reaches here: callers pass the normalised path below the root.
//!
//! Nothing here reads `/proc`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU8, Ordering};

/// Flags for a directory handle used only to walk from.
#[cfg(any(target_os = "linux", target_os = "android"))]
const DIR_HANDLE: libc::c_int = libc::O_PATH | libc::O_DIRECTORY;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const DIR_HANDLE: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY;

/// How paths are resolved: decided once per process on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// One `openat2` call; the kernel refuses symlinks and escapes.
    Openat2,
    /// One `openat(O_NOFOLLOW)` per component.
    PerComponent,
}

const UNKNOWN: u8 = 0;
const OPENAT2: u8 = 1;
const PER_COMPONENT: u8 = 2;
static WALK: AtomicU8 = AtomicU8::new(UNKNOWN);

/// The walk this process uses (openat2 until the kernel says it has none).
pub fn walk() -> Walk {
    match WALK.load(Ordering::Relaxed) {
        PER_COMPONENT => Walk::PerComponent,
        _ => Walk::Openat2,
    }
}

fn cstr(name: &std::ffi::OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// The plain names of `rel`, or an error if it holds anything else (`..`,
/// a root, a prefix): callers must have normalised it.
fn names(rel: &Path) -> io::Result<Vec<CString>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => cstr(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", rel.display()),
            )),
        })
        .collect()
}

fn check_fd(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the kernel just returned this descriptor to us; nothing
        // else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// `openat` with `O_NOFOLLOW | O_CLOEXEC` added.
fn openat_nofollow(
    dir: BorrowedFd<'_>,
    name: &CString,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is a valid C string and `dir` a live descriptor.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
    check_fd(fd)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn openat2(
    dir: BorrowedFd<'_>,
    path: &CString,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    /// `struct open_how` from linux/openat2.h (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS already refuses a final link,
        // and with O_PATH the flag would open the link itself instead.
        flags: (flags | libc::O_CLOEXEC) as u64,
        // The kernel rejects a mode without O_CREAT.
        mode: if flags & libc::O_CREAT != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `how` is a properly laid out `open_how` of the size passed,
    // `path` a valid C string, `dir` a live descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    check_fd(fd as libc::c_int)
}

/// Opens `rel` beneath `dir` with `flags` (`O_CLOEXEC` is always added),
/// following no symlink anywhere on the way, the last name included. An empty `rel`
/// opens `dir` itself (`.`).
pub fn open(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    open_with(walk(), dir, rel, flags, mode)
}

/// [`open`] with the walk chosen by the caller (tests exercise both).
pub fn open_with(
    how: Walk,
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let names = names(rel)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if how == Walk::Openat2 {
        let joined = if names.is_empty() {
            CString::from(c".")
        } else {
            let mut bytes = Vec::new();
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    bytes.push(b'/');
                }
                bytes.extend_from_slice(n.as_bytes());
            }
            cstr(std::ffi::OsStr::from_bytes(&bytes))?
        };
        match openat2(dir, &joined, flags, mode) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                WALK.store(PER_COMPONENT, Ordering::Relaxed);
            }
            // Some seccomp profiles answer unknown syscalls with EPERM. The
            // walk is as strict, so its answer stands, without giving up
            // openat2 for good (EPERM can also be a real answer, which the
            // walk then repeats).
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                return walk_components(dir, &names, flags, mode);
            }
            other => {
                WALK.store(OPENAT2, Ordering::Relaxed);
                return other;
            }
        }
    }
    let _ = how;
    walk_components(dir, &names, flags, mode)
}

/// The fallback walk: every folder on the way opened with `O_NOFOLLOW`
/// relative to the one before, the last name opened with `flags`.
fn walk_components(
    dir: BorrowedFd<'_>,
    names: &[CString],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let Some((last, folders)) = names.split_last() else {
        return openat_nofollow(dir, &CString::from(c"."), flags, mode);
    };
    let mut held: Option<OwnedFd> = None;
    for name in folders {
        let cur = held.as_ref().map_or(dir, |f| f_borrow(f));
        let next = openat_nofollow(cur, name, DIR_HANDLE, 0)
            .map_err(|e| symlink_as_eloop(cur, name, e))?;
        held = Some(next);
    }
    let cur = held.as_ref().map_or(dir, |f| f_borrow(f));
    let fd = openat_nofollow(cur, last, flags, mode).map_err(|e| symlink_as_eloop(cur, last, e))?;
    // `O_PATH | O_NOFOLLOW` opens a final symlink itself instead of failing.
    if is_symlink(f_borrow(&fd))? {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(fd)
}

fn f_borrow(f: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    f.as_fd()
}

/// `O_DIRECTORY | O_NOFOLLOW` on a symlink says `ENOTDIR`; say `ELOOP` as
/// `openat2` does, so callers see one error for "a link was in the way".
fn symlink_as_eloop(dir: BorrowedFd<'_>, name: &CString, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ENOTDIR)
        && matches!(lstat_at(dir, name), Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFLNK)
    {
        return io::Error::from_raw_os_error(libc::ELOOP);
    }
    e
}

/// `fstat` of an open descriptor.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is large enough for a `stat`, `fd` is live.
    let r = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

fn is_symlink(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(fstat(fd)?.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

/// `fstatat(…, AT_SYMLINK_NOFOLLOW)`: `None` when the name does not exist.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &CString) -> io::Result<Option<libc::stat>> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid C string, live descriptor, `st` large enough.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(Some(unsafe { st.assume_init() }))
}

/// Opens an absolute path as a directory handle, following no symlink in
/// any of its components.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not an absolute path", path.display()),
        )
    })?;
    let slash = openat_nofollow(
        // SAFETY: AT_FDCWD is not a descriptor to own; borrowing it for one
        // call is how the *at functions are meant to be used with it.
        unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) },
        &CString::from(c"/"),
        DIR_HANDLE,
        0,
    )?;
    open(f_borrow(&slash), rel, DIR_HANDLE, 0)
}

/// A directory handle for `rel` beneath `dir` (empty `rel`: `dir` again).
pub fn open_dir(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open(dir, rel, DIR_HANDLE, 0)
}

/// Creates `rel` beneath `dir` one folder at a time (`mkdir -p`): each
/// component is made with `mkdirat` in the folder before it and then opened
/// without following links, so a link swapped in after a `mkdirat` stops
/// the walk instead of redirecting it.
pub fn mkdir_all(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<()> {
    mkdir_all_with(walk(), dir, rel)
}

fn mkdir_all_with(how: Walk, dir: BorrowedFd<'_>, rel: &Path) -> io::Result<()> {
    let mut held: Option<OwnedFd> = None;
    for name in names(rel)? {
        let cur = held.as_ref().map_or(dir, |f| f_borrow(f));
        // SAFETY: valid C string, live descriptor.
        let r = unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o777) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        let name = Path::new(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let next = open_with(how, cur, name, DIR_HANDLE, 0)?;
        held = Some(next);
    }
    Ok(())
}

/// Removes `name` from the folder `dir`: a file or symlink (the link, never
/// what it points to) or an empty folder. `Ok(false)` when there was nothing.
pub fn remove_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<bool> {
    let name = cstr(name)?;
    // SAFETY: valid C string, live descriptor.
    let mut r = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => return Ok(false),
            // Linux says EISDIR, POSIX allows EPERM, for a folder.
            Some(libc::EISDIR) | Some(libc::EPERM) => {
                // SAFETY: as above.
                r = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
                if r < 0 {
                    let e2 = io::Error::last_os_error();
                    return match e2.raw_os_error() {
                        Some(libc::ENOENT) => Ok(false),
                        // Not a folder after all: the first error was the real one.
                        Some(libc::ENOTDIR) => Err(e),
                        _ => Err(e2),
                    };
                }
            }
            _ => return Err(e),
        }
    }
    Ok(true)
}

/// What kind of object a `stat` describes, in words for error messages.
pub fn kind_of(st: &libc::stat) -> &'static str {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a folder",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO (named pipe)",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "a special file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    const BOTH: [Walk; 2] = [Walk::Openat2, Walk::PerComponent];

    fn setup() -> (tempfile::TempDir, OwnedFd) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f.txt"), "F").unwrap();
        std::fs::create_dir(root.join("locked")).unwrap();
        std::fs::write(root.join("locked/secret"), "S").unwrap();
        std::os::unix::fs::symlink(root.join("locked"), root.join("a/link")).unwrap();
        std::os::unix::fs::symlink("b/f.txt", root.join("a/flink")).unwrap();
        std::os::unix::fs::symlink("new.txt", root.join("a/dangling")).unwrap();
        let fd = open_root(&root).unwrap();
        (d, fd)
    }

    #[test]
    fn both_walks_open_plain_paths_and_refuse_every_symlink() {
        for how in BOTH {
            let (d, root) = setup();
            let r = root.as_fd();
            let ok = open_with(how, r, Path::new("a/b/f.txt"), libc::O_RDONLY, 0).unwrap();
            assert_eq!(
                fstat(ok.as_fd()).unwrap().st_mode & libc::S_IFMT,
                libc::S_IFREG
            );
            for rel in ["a/link/secret", "a/flink", "a/link"] {
                let e = open_with(how, r, Path::new(rel), libc::O_RDONLY, 0).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{how:?} {rel}: {e}");
            }
            // Creating through a dangling link creates nothing.
            let e = open_with(
                how,
                r,
                Path::new("a/dangling"),
                libc::O_WRONLY | libc::O_CREAT,
                0o600,
            )
            .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{how:?}: {e}");
            assert!(!d.path().join("a/new.txt").exists());
            // A handle for a link is refused too.
            let e = open_with(how, r, Path::new("a/link"), DIR_HANDLE, 0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{how:?}: {e}");
            // `..` never gets this far.
            assert!(open_with(how, r, Path::new("a/../locked"), libc::O_RDONLY, 0).is_err());
        }
    }

    fn exchange(a: &Path, b: &Path) {
        let a = CString::new(a.as_os_str().as_bytes()).unwrap();
        let b = CString::new(b.as_os_str().as_bytes()).unwrap();
        // SAFETY: two valid C strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
    }

    /// Another thread atomically exchanges a real folder with a link to a
    /// locked one while both walks open, create and `mkdir -p` through it:
    /// nothing in the locked folder is ever read, created or changed.
    #[test]
    fn both_walks_hold_against_a_swapper_thread() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        for how in BOTH {
            let d = tempfile::tempdir().unwrap();
            let base = d.path().canonicalize().unwrap();
            std::fs::create_dir_all(base.join("allowed/sw")).unwrap();
            std::fs::write(base.join("allowed/sw/f.txt"), "OK").unwrap();
            std::fs::create_dir(base.join("locked")).unwrap();
            std::fs::write(base.join("locked/f.txt"), "LOCKED").unwrap();
            std::os::unix::fs::symlink(base.join("locked"), base.join("allowed/sw-link")).unwrap();
            let root = open_root(&base).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let swapper = {
                let (stop, sw, link) = (
                    stop.clone(),
                    base.join("allowed/sw"),
                    base.join("allowed/sw-link"),
                );
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && n < 100_000_000 {
                        exchange(&sw, &link);
                        n += 1;
                    }
                    if n % 2 == 1 {
                        exchange(&sw, &link);
                    }
                })
            };
            let (mut ok, mut refused) = (0u32, 0u32);
            for _ in 0..5000 {
                let r = root.as_fd();
                match open_with(how, r, Path::new("allowed/sw/f.txt"), libc::O_RDONLY, 0) {
                    Ok(fd) => {
                        let mut s = String::new();
                        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s)
                            .unwrap();
                        assert_eq!(s, "OK", "{how:?} read through the link");
                        ok += 1;
                    }
                    Err(_) => refused += 1,
                }
                let _ = open_with(
                    how,
                    r,
                    Path::new("allowed/sw/new.txt"),
                    libc::O_WRONLY | libc::O_CREAT,
                    0o600,
                );
                let _ = mkdir_all_with(how, r, Path::new("allowed/sw/made/deeper"));
            }
            stop.store(true, Ordering::Relaxed);
            swapper.join().unwrap();
            let names: Vec<_> = std::fs::read_dir(base.join("locked"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                names,
                ["f.txt"],
                "{how:?}: something was created in the locked folder"
            );
            assert_eq!(
                std::fs::read_to_string(base.join("locked/f.txt")).unwrap(),
                "LOCKED"
            );
            assert!(
                ok > 0 && refused > 0,
                "{how:?}: the race did not happen (ok={ok}, refused={refused})"
            );
        }
    }

    #[test]
    fn a_root_path_with_a_symlink_in_it_is_refused() {
        let (d, _root) = setup();
        let base = d.path().canonicalize().unwrap();
        assert!(open_root(&base.join("a/b")).is_ok());
        let e = open_root(&base.join("a/link")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
    }

    #[test]
    fn mkdir_all_stops_at_a_symlink_and_remove_removes_the_link_only() {
        let (d, root) = setup();
        let base = d.path().canonicalize().unwrap();
        mkdir_all(root.as_fd(), Path::new("a/b/c/d")).unwrap();
        assert!(base.join("a/b/c/d").is_dir());
        let e = mkdir_all(root.as_fd(), Path::new("a/link/made")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert!(!base.join("locked/made").exists());
        let a = open_dir(root.as_fd(), Path::new("a")).unwrap();
        assert!(remove_at(a.as_fd(), std::ffi::OsStr::new("link")).unwrap());
        assert!(base.join("locked/secret").exists());
        assert!(!remove_at(a.as_fd(), std::ffi::OsStr::new("link")).unwrap());
        // An empty folder goes; a full one stays.
        let b = open_dir(root.as_fd(), Path::new("a/b/c")).unwrap();
        assert!(remove_at(b.as_fd(), std::ffi::OsStr::new("d")).unwrap());
        assert!(remove_at(a.as_fd(), std::ffi::OsStr::new("b")).is_err());
        assert!(base.join("a/b/f.txt").exists());
    }
}
