//! The child side: what runs between `fork` and `exec`.
//!
//! Everything in [`Setup::apply`]'s `pre_exec` closure runs in a copy of a
//! multi-threaded process, so it makes only async-signal-safe system calls
//! (no allocation, no locks): everything it needs was prepared in keel.
//!
//! With namespaces, one `fork` becomes three processes:
//!
//! ```text
//! keel ── A (outside: waits)
//!          ├─ B (pid 1 in the new PID namespace: CLONE_VM, reaps, holds it open)
//!          └─ C (pid 2: the program: no_new_privs, Landlock, exec)
//! ```
//!
//! `A` is what keel's `Child` sees. It leads the process group, joins the
//! skill's held network namespace when it has one ([`super::netns`]),
//! unshares new user and PID namespaces (and a fresh network namespace when
//! none is held), and starts `B`, the namespace's init, then `C`. `B` is a
//! `CLONE_VM` child on a small stack of its own: it shares `A`'s memory, so
//! no page tables of a large keel are copied for it. It ignores `SIGCHLD`,
//! which makes the kernel reap every orphan handed to it, and sleeps on a
//! pipe only `A` holds, so it ends when `A` ends, however that happens. `C`
//! is `A`'s own child (a fork, because it returns into the standard
//! library's exec path): `A` waits for it, kills `B` — and with `B` the
//! kernel kills whatever is left in the namespace, including processes
//! that escaped the group with `setsid` — then exits the way `C` did (same
//! code, or the same signal), so keel reads the program's own status.
//! Killing the group kills all three. `A` and `B` close every descriptor
//! they inherited, so the standard library's exec-error pipe and the output
//! pipes see the program's end, not theirs. `A` and `C` ask for `SIGKILL`
//! when their parent dies, and `B` ends with `A`, so a `kill -9` of keel
//! unwinds the whole chain.
//!
//! Measured (BENCHMARKS.md, S2): making a network namespace per exec cost
//! 0.4–0.8 ms (more under load); joining a held one costs two `setns`. The
//! rest of the overhead is the Landlock ruleset (built in keel), one user
//! and one PID namespace, and `A`'s and `C`'s forks.

use std::ffi::CStr;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use super::netns::Held;
use super::{Namespaces, Support};

/// Prepared in keel; read (never allocated) in the child.
pub(super) struct Setup {
    ruleset: Option<Arc<OwnedFd>>,
    /// The skill's network namespace (and the user namespace owning it)
    /// for `A` to join before it unshares ([`super::netns`]).
    join: Option<Arc<Held>>,
    /// `unshare` flags for `A` (0: no namespaces).
    unshare: libc::c_int,
    user_maps: Option<UserMaps>,
    /// keel's pid, to notice a parent that died before PDEATHSIG was set.
    parent: libc::pid_t,
}

/// The id maps `A` writes for its new user namespace.
#[derive(Clone)]
pub(super) struct UserMaps {
    uid: Vec<u8>,
    gid: Vec<u8>,
    /// An unprivileged process must give up `setgroups` before it may
    /// write a gid map.
    deny_setgroups: bool,
}

impl UserMaps {
    pub(super) fn for_current_user() -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        // A process may map only its own ids into a namespace it created
        // (writing more needs CAP_SETUID in the parent namespace, which it
        // just left). For root that is a gain: the child is root over files
        // root owns, but has no capability over the host and no DAC
        // override on other users' files.
        Self {
            uid: format!("{uid} {uid} 1\n").into_bytes(),
            gid: format!("{gid} {gid} 1\n").into_bytes(),
            deny_setgroups: true,
        }
    }
}

impl Setup {
    /// `join`: the skill's held network namespace, if it has one; without
    /// it and without `network`, `A` makes a fresh network namespace.
    pub(super) fn new(
        ruleset: Option<OwnedFd>,
        ns: Namespaces,
        network: bool,
        join: Option<Arc<Held>>,
    ) -> Self {
        let join = if network || ns != Namespaces::UserAndPid {
            None
        } else {
            join
        };
        let net = if network || join.is_some() {
            0
        } else {
            libc::CLONE_NEWNET
        };
        let (unshare, user_maps) = match ns {
            Namespaces::UserAndPid => (
                libc::CLONE_NEWUSER | libc::CLONE_NEWPID | net,
                Some(UserMaps::for_current_user()),
            ),
            Namespaces::Pid => (libc::CLONE_NEWPID | net, None),
            Namespaces::None => (0, None),
        };
        Self {
            ruleset: ruleset.map(Arc::new),
            join,
            unshare,
            user_maps,
            // SAFETY: getpid cannot fail.
            parent: unsafe { libc::getpid() },
        }
    }

    pub(super) fn apply(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt as _;
        // The closure keeps the ruleset open until the Command is dropped.
        let ruleset = self.ruleset.clone();
        let join = self.join.clone();
        let unshare = self.unshare;
        let maps = self.user_maps.clone();
        let parent = self.parent;
        // B's stack, allocated here: the child must not allocate.
        let mut stack = if unshare != 0 {
            vec![0u8; INIT_STACK].into_boxed_slice()
        } else {
            Box::default()
        };
        // SAFETY: the closure makes only async-signal-safe system calls and
        // reads memory prepared before the fork; see `in_child`.
        unsafe {
            cmd.pre_exec(move || {
                in_child(
                    ruleset.as_ref().map(|f| f.as_raw_fd()),
                    join.as_ref()
                        .map(|h| (h.user.as_raw_fd(), h.net.as_raw_fd())),
                    unshare,
                    maps.as_ref(),
                    parent,
                    stack.as_mut_ptr(),
                )
            });
        }
    }
}

/// Runs in the forked child. Returns in `C` only (which then execs);
/// `A` and `B` never return.
fn in_child(
    ruleset: Option<RawFd>,
    join: Option<(RawFd, RawFd)>,
    unshare: libc::c_int,
    maps: Option<&UserMaps>,
    parent: libc::pid_t,
    stack: *mut u8,
) -> std::io::Result<()> {
    // SAFETY (whole function): only system calls, on memory owned by this
    // process; no allocation (io::Error::last_os_error does not allocate).
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(127);
        }
        if let Some((user, net)) = join {
            // keel's euid owns the held user namespace, so `A` (still in
            // keel's) may enter it; inside it, it may enter the network
            // namespace that namespace owns. The unshare below then gives
            // the program a user namespace of its own beneath it, with no
            // capability over the shared network namespace.
            if libc::setns(user, libc::CLONE_NEWUSER) != 0
                || libc::setns(net, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        if unshare != 0 {
            if libc::unshare(unshare) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(maps) = maps {
                write_maps(maps)?;
            }
            // Held by A alone (C closes its copy at exec): B reads it and
            // ends when A is gone, however A went.
            let mut pipe = [-1 as RawFd; 2];
            if libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let b = spawn_init(stack, pipe[0]);
            if b < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let c = raw_fork();
            if c < 0 {
                let e = std::io::Error::last_os_error();
                libc::kill(b, libc::SIGKILL);
                return Err(e);
            }
            if c > 0 {
                run_outer_waiter(b, c, pipe[1]);
            }
            // C: the program, pid 2 of the namespace; its parent is A
            // (outside), its orphans go to B.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(fd) = ruleset
            && libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `fork` as a bare system call: no `atfork` handlers (they may take locks
/// another thread of keel held at the first fork).
unsafe fn raw_fork() -> libc::pid_t {
    // SAFETY: clone with only SIGCHLD and no new stack is fork.
    unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        ) as libc::pid_t
    }
}

unsafe fn write_file(path: &CStr, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        if n < 0 || n as usize != data.len() {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

pub(super) unsafe fn write_maps(maps: &UserMaps) -> std::io::Result<()> {
    // SAFETY: see write_file.
    unsafe {
        if maps.deny_setgroups {
            write_file(c"/proc/self/setgroups", b"deny")?;
        }
        write_file(c"/proc/self/uid_map", &maps.uid)?;
        write_file(c"/proc/self/gid_map", &maps.gid)?;
    }
    Ok(())
}

/// Closes every descriptor except `keep`.
unsafe fn close_all_but(keep: RawFd) {
    // SAFETY: close_range only closes descriptors of this process.
    unsafe {
        let ok_low =
            keep == 0 || libc::syscall(libc::SYS_close_range, 0u32, keep as u32 - 1, 0u32) == 0;
        let ok_high = libc::syscall(libc::SYS_close_range, keep as u32 + 1, u32::MAX, 0u32) == 0;
        if !(ok_low && ok_high) {
            for fd in 0..4096 {
                if fd != keep {
                    libc::close(fd);
                }
            }
        }
    }
}

/// A: wait for the program, end the namespace, exit the way the program
/// did.
unsafe fn run_outer_waiter(b: libc::pid_t, c: libc::pid_t, keep: RawFd) -> ! {
    // SAFETY: system calls only.
    unsafe {
        close_all_but(keep);
        let mut status: libc::c_int = 0;
        if !wait_for(c, &mut status) {
            status = 127 << 8;
        }
        // B going takes every process left in the namespace with it; the
        // kernel has killed them all by the time B can be reaped.
        libc::kill(b, libc::SIGKILL);
        let mut ignored = 0;
        wait_for(b, &mut ignored);
        exit_like(status)
    }
}

/// `waitpid(pid)`, retried on `EINTR`; false if it failed.
unsafe fn wait_for(pid: libc::pid_t, status: &mut libc::c_int) -> bool {
    // SAFETY: waitpid writes only `status`.
    unsafe {
        loop {
            if libc::waitpid(pid, status, 0) == pid {
                return true;
            }
            if *libc::__errno_location() != libc::EINTR {
                return false;
            }
        }
    }
}

/// The stack B runs on: B shares A's memory (`CLONE_VM`), so it needs its
/// own; it makes four system calls and never grows far.
pub(super) const INIT_STACK: usize = 16 * 1024;

/// Starts B, the namespace's init, as a `CLONE_VM` child of A: no copy of
/// keel's page tables (A is a fork of keel and shares its size), so it
/// costs a fraction of a fork. Returns its pid, or -1.
unsafe fn spawn_init(stack: *mut u8, a_alive: RawFd) -> libc::pid_t {
    // SAFETY: `stack` is the start of INIT_STACK bytes owned by this
    // process (allocated in keel before the fork, so A's own copy) that
    // nothing else uses; the top is aligned as the ABI wants.
    unsafe {
        let top = (stack.add(INIT_STACK) as usize & !15) as *mut libc::c_void;
        libc::clone(
            run_init,
            top,
            libc::CLONE_VM | libc::SIGCHLD,
            a_alive as isize as *mut libc::c_void,
        )
    }
}

/// B: pid 1 of the namespace. With `SIGCHLD` ignored the kernel reaps every
/// orphan that is handed to it, so B only waits for A to go (its end of
/// the pipe reads end-of-file) or to kill it; either way B exits, and the
/// kernel kills whatever is left in the namespace. It shares A's memory:
/// it touches nothing but its own stack.
extern "C" fn run_init(arg: *mut libc::c_void) -> libc::c_int {
    let a_alive = arg as isize as RawFd;
    // SAFETY: system calls only, on B's own stack.
    unsafe {
        close_all_but(a_alive);
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(libc::SIGCHLD, &ignore, std::ptr::null_mut());
        // Nobody writes: the read ends when A's end closes. (No handler
        // is installed, so it is never interrupted; errno is shared with A
        // and is not read here.)
        let mut byte = 0u8;
        while libc::read(a_alive, (&raw mut byte).cast(), 1) > 0 {}
        libc::_exit(0)
    }
}

/// Exits with `status`'s code, or dies of its signal.
unsafe fn exit_like(status: libc::c_int) -> ! {
    // SAFETY: system calls only.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &action, std::ptr::null_mut());
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            127
        })
    }
}

/// Probes once, in a throwaway child, which namespaces work here.
pub(super) fn support() -> Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    *SUPPORT.get_or_init(|| {
        let landlock_abi = super::landlock::abi_version();
        let full = libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNET;
        let namespaces = if probe(full, Some(&UserMaps::for_current_user())) {
            Namespaces::UserAndPid
        } else if probe(libc::CLONE_NEWPID | libc::CLONE_NEWNET, None) {
            Namespaces::Pid
        } else {
            Namespaces::None
        };
        Support {
            landlock_abi,
            namespaces,
        }
    })
}

/// Whether a child can enter these namespaces (and write its id maps).
fn probe(flags: libc::c_int, maps: Option<&UserMaps>) -> bool {
    // SAFETY: the child makes only system calls and exits; the parent
    // reaps it.
    unsafe {
        let pid = raw_fork();
        if pid < 0 {
            return false;
        }
        if pid == 0 {
            let ok = libc::unshare(flags) == 0 && maps.is_none_or(|m| write_maps(m).is_ok());
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                return false;
            }
        }
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }
}
