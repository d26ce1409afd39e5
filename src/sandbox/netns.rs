//! One empty network namespace per skill, made once and joined by every
//! program that skill runs without `net.http`.
//!
//! Creating a network namespace is the dearest part of confining a child
//! (0.4–0.8 ms here, and much more under load: the kernel tears the old ones
//! down on a shared work queue that new ones wait behind), so a fresh one
//! per exec broke the issue's ~1 ms budget. Instead keel makes, the first
//! time a skill runs a program without `net.http`, a user namespace `HU`
//! (mapping only keel's own uid and gid, `setgroups` denied) and inside it a
//! network namespace `HN`, and keeps both alive by holding their file
//! descriptors — no process sits in them. Each exec's outer child `setns`es
//! into `HU`, then `HN`, then unshares its **own** user and PID namespaces
//! (see `child.rs`), so:
//!
//! ```text
//! init userns ── HU (owns HN) ── U2 (per exec: owns the PID namespace)
//!                                └─ init (pid 1) ─ program
//! ```
//!
//! **What is shared**, and only between programs of the *same* skill in the
//! same workspace: the network namespace — its interfaces (just `lo`, left
//! down, so no address, not even 127.0.0.1, is reachable), its routing and
//! firewall state, and its abstract Unix socket names. The program's
//! capabilities are those of `U2`, a child of `HU`, so it holds none over
//! `HN`: it cannot bring `lo` up, add an address or a route, open a raw or
//! packet socket, or change anything a later program of the skill would
//! see. Landlock (ABI 6) scopes abstract Unix sockets to the exec's own
//! domain, so two programs running at once cannot meet there either; on a
//! kernel with Landlock below ABI 6 they could (both are the same skill's,
//! with the same grants). Nothing outlives a call in `HN`: every process of
//! an exec dies with its PID namespace.
//!
//! **What is never shared**: `HN` between two skills (the key is the
//! workspace and the skill's name), or with keel or the host; a skill that
//! holds `net.http` stays in keel's network namespace as before (Landlock
//! still denies TCP bind). keel holds at most [`MAX_HELD`] pairs; beyond
//! that the least recently used is dropped (programs still running in it
//! keep it alive; the skill's next program gets a fresh one). When keel
//! exits its descriptors close and the kernel frees the namespaces; there is
//! no holder process to outlive it.
//!
//! Without user namespaces (`Namespaces::Pid`: root with user namespaces
//! disabled) a program is real root in any network namespace keel makes and
//! could leave state in a shared one, so that mode keeps a fresh network
//! namespace per exec.

use std::collections::HashMap;
use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock};

use super::Owner;

/// The most network namespaces keel keeps for skills at once.
pub const MAX_HELD: usize = 128;

/// A held user namespace and the network namespace it owns.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) user: OwnedFd,
    pub(super) net: OwnedFd,
}

struct Entry {
    held: Arc<Held>,
    last_used: u64,
}

#[derive(Default)]
struct Registry {
    held: HashMap<Owner, Entry>,
    clock: u64,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The namespaces for `owner`'s programs, made on first use. `Err` says
/// why they could not be made (the caller falls back to a fresh network
/// namespace per exec).
pub(super) fn for_owner(
    owner: &Owner,
    maps: &super::child::UserMaps,
) -> std::io::Result<Arc<Held>> {
    // The lock is held while a pair is made (about a millisecond, once per
    // skill), so two first execs of one skill cannot make two.
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    reg.clock += 1;
    let now = reg.clock;
    if let Some(e) = reg.held.get_mut(owner) {
        e.last_used = now;
        return Ok(e.held.clone());
    }
    let held = Arc::new(make(maps)?);
    if reg.held.len() >= MAX_HELD
        && let Some(oldest) = reg
            .held
            .iter()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, _)| k.clone())
    {
        reg.held.remove(&oldest);
    }
    reg.held.insert(
        owner.clone(),
        Entry {
            held: held.clone(),
            last_used: now,
        },
    );
    Ok(held)
}

/// Makes a user namespace with a network namespace inside, and returns
/// descriptors for both.
///
/// A short-lived child is cloned with `CLONE_FILES`, so the descriptors it
/// opens on its *own* `/proc/self/ns/*` land in keel's table: keel cannot
/// open the child's namespace files itself, because keel is non-dumpable
/// and so is its child (and making the child dumpable, even briefly, would
/// let a same-user process read a copy of keel's memory). The child reports
/// the two descriptor numbers through a pipe and exits.
fn make(maps: &super::child::UserMaps) -> std::io::Result<Held> {
    let mut pipe = [-1 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let (rx_fd, tx_fd) = (pipe[0], pipe[1]);
    // SAFETY: clone without CLONE_VM is fork (with a shared descriptor
    // table); the child makes only system calls on memory prepared before
    // the clone, and always exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_FILES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    } as libc::pid_t;
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: the child: system calls only, then _exit.
        unsafe { in_holder_child(maps, tx_fd) }
    }
    // The child shares this descriptor table, so closing the write end
    // here closes it for both: wait for the child first.
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    drop(tx);
    let mut buf = [0u8; 8];
    // SAFETY: reads into a live buffer; the write end is closed, so this
    // cannot block.
    let n = unsafe { libc::read(rx_fd, buf.as_mut_ptr().cast(), 8) };
    drop(rx);
    if n != 8 || !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(std::io::Error::other(
            "the child making the skill's network namespace failed",
        ));
    }
    let user = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let net = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if user < 0 || net < 0 {
        return Err(std::io::Error::other(
            "the child making the skill's network namespace reported no descriptors",
        ));
    }
    // SAFETY: the child opened these in our (shared) table and exited
    // without closing them; nothing else knows their numbers.
    Ok(unsafe {
        Held {
            user: OwnedFd::from_raw_fd(user),
            net: OwnedFd::from_raw_fd(net),
        }
    })
}

/// The holder child: new user + network namespaces, its id maps, then
/// descriptors on both (in keel's table), reported through `tx`.
unsafe fn in_holder_child(maps: &super::child::UserMaps, tx: RawFd) -> ! {
    // SAFETY (whole function): system calls on memory prepared before the
    // clone; no allocation.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0
            || super::child::write_maps(maps).is_err()
        {
            libc::_exit(1);
        }
        let flags = libc::O_RDONLY | libc::O_CLOEXEC;
        let user = libc::open(c"/proc/self/ns/user".as_ptr(), flags);
        let net = libc::open(c"/proc/self/ns/net".as_ptr(), flags);
        if user < 0 || net < 0 {
            // Shared table: do not leave keel a stray descriptor.
            if user >= 0 {
                libc::close(user);
            }
            if net >= 0 {
                libc::close(net);
            }
            libc::_exit(1);
        }
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&user.to_ne_bytes());
        buf[4..].copy_from_slice(&net.to_ne_bytes());
        if libc::write(tx, buf.as_ptr().cast(), 8) != 8 {
            libc::close(user);
            libc::close(net);
            libc::_exit(1);
        }
        libc::_exit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn inode(fd: &OwnedFd) -> u64 {
        std::fs::File::from(fd.try_clone().unwrap())
            .metadata()
            .unwrap()
            .ino()
    }

    fn owner(i: usize) -> Owner {
        Owner {
            workspace: "/netns-test-workspace".into(),
            skill: format!("s{i}"),
        }
    }

    #[test]
    fn each_owner_has_its_own_and_the_oldest_is_dropped_past_the_bound() {
        if super::super::support().namespaces != super::super::Namespaces::UserAndPid {
            eprintln!("skipped: no user namespaces here");
            return;
        }
        let maps = super::super::child::UserMaps::for_current_user();
        let first = for_owner(&owner(0), &maps).unwrap();
        let again = for_owner(&owner(0), &maps).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "one owner, one namespace");
        let mut seen = std::collections::HashSet::new();
        seen.insert(inode(&first.net));
        // Past the bound: every owner still gets a namespace no other
        // owner has, and the registry stays bounded.
        for i in 1..=MAX_HELD {
            let held = for_owner(&owner(i), &maps).unwrap();
            assert!(
                seen.insert(inode(&held.net)),
                "owner {i} got a shared namespace"
            );
        }
        let reg = registry().lock().unwrap();
        assert!(reg.held.len() <= MAX_HELD);
        assert!(
            !reg.held.contains_key(&owner(0)),
            "the least recently used stays"
        );
        drop(reg);
        // The dropped owner gets a fresh one, not the old one back (which
        // `first` still keeps alive, as a running program would).
        let fresh = for_owner(&owner(0), &maps).unwrap();
        assert_ne!(inode(&fresh.net), inode(&first.net));
    }
}
