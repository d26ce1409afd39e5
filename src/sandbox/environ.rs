//! keel's own secrets: out of its environment block, and out of reach of
//! anything that reads the process from outside.
//!
//! keel reads its environment once, at start, into the kernel's map; API
//! keys live there and are handed out only through the gate. But the
//! environment block the kernel gave the process at `exec` stays in memory,
//! and `/proc/<keel pid>/environ` shows *that block* — `remove_var` or
//! `set_var` only change the C library's pointer table, not the block. A
//! program a skill runs (as the same user, or as root when keel is root)
//! could read every key the env rules deny. So [`seal`]:
//!
//! 1. copies every variable into memory the C library owns (`setenv`
//!    allocates a new `NAME=value` string and repoints `environ` at it), so
//!    keel and its libraries still see the same environment;
//! 2. overwrites the original block with zeros, so `/proc/<pid>/environ`
//!    reads as empty;
//! 3. marks keel non-dumpable (`PR_SET_DUMPABLE 0`): no core files with
//!    keys in them, and no same-user process may ptrace keel or read its
//!    `/proc/<pid>/mem`. (Root can still do both; against a root-run keel
//!    the defence is that sandboxed children cannot reach `/proc` at all,
//!    and Landlock forbids them to ptrace anything outside their domain.)
//!
//! Non-dumpable makes keel's `/proc/self/*` files root-owned; keel reading
//! its *own* `/proc/self/fd` still works (the kernel lets a process inspect
//! its own descriptors).
//!
//! [`seal`] must run first in `main`, before any thread starts: `setenv` is
//! not thread-safe.

/// What [`seal`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Variables whose original bytes were overwritten.
    pub scrubbed: usize,
    /// Whether the process is now non-dumpable.
    pub non_dumpable: bool,
}

/// Scrubs the original environment block and marks the process
/// non-dumpable. See the module docs.
///
/// # Safety
///
/// Must be called while the process has exactly one thread (first thing
/// in `main`), and nothing may hold a pointer into the original environment
/// strings (nothing has run yet that could).
pub unsafe fn seal() -> Sealed {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: forwarded from the caller.
        unsafe { seal_linux() }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        Sealed::default()
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe fn seal_linux() -> Sealed {
    use std::ffi::CStr;

    // SAFETY: single-threaded (the caller's contract); `environ` is the C
    // library's NULL-terminated table of NUL-terminated strings.
    unsafe {
        // 1. Where the original strings are.
        let mut originals: Vec<(*mut libc::c_char, usize)> = Vec::new();
        let mut p = libc::environ;
        if !p.is_null() {
            while !(*p).is_null() {
                originals.push((*p, CStr::from_ptr(*p).to_bytes().len()));
                p = p.add(1);
            }
        }
        // 2. Move every variable into memory the C library owns. setenv
        // with overwrite replaces the table entry with a fresh copy.
        for &(s, len) in &originals {
            let bytes = std::slice::from_raw_parts(s.cast::<u8>(), len);
            let Some(eq) = bytes.iter().position(|&b| b == b'=') else {
                continue;
            };
            if eq == 0 {
                continue;
            }
            let (Ok(name), Ok(value)) = (
                std::ffi::CString::new(&bytes[..eq]),
                std::ffi::CString::new(&bytes[eq + 1..]),
            ) else {
                continue;
            };
            libc::setenv(name.as_ptr(), value.as_ptr(), 1);
        }
        // 3. Zero every original string the table no longer points to.
        let still_used = |s: *mut libc::c_char| {
            let mut q = libc::environ;
            while !q.is_null() && !(*q).is_null() {
                if *q == s {
                    return true;
                }
                q = q.add(1);
            }
            false
        };
        let mut scrubbed = 0;
        for &(s, len) in &originals {
            if still_used(s) {
                continue;
            }
            for i in 0..len {
                std::ptr::write_volatile(s.add(i), 0);
            }
            scrubbed += 1;
        }
        let non_dumpable = libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0;
        Sealed {
            scrubbed,
            non_dumpable,
        }
    }
}
