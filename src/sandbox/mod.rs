//! What confines the programs a skill runs, built from the same grants that
//! gate the skill's script.
//!
//! `keel.exec.run` checks the program with the gate; this module makes sure
//! that, once running, the program can do no more than the skill could do
//! itself. A grant of `exec:git` is a grant to run git on the skill's files,
//! not a grant of whatever git can be talked into running
//! (`git -c alias.x=!sh x`, `--upload-pack=…`).
//!
//! On Linux every child gets, before its program starts:
//!
//! - **its own process group**, killed whole (`SIGKILL` to the group) when
//!   the call ends — the program exited, timed out, or the run was cancelled
//!   — so a `sh -c 'sleep 300 &'` leaves nothing behind;
//! - **its own PID namespace** (and user namespace, which gives a root keel's
//!   child no power over the host's kernel), with a tiny init that reaps
//!   and exits with the program: when it exits the kernel kills every
//!   process left in the namespace, including ones that escaped the process
//!   group with `setsid`;
//! - **`PR_SET_PDEATHSIG`**, so a `kill -9` of keel takes its children with
//!   it;
//! - **`no_new_privs`**, so no setuid program regains what was dropped;
//! - **Landlock** ([`plan`]): read access to the folders the skill holds
//!   `fs.read` for and the policy allows outright, write access to its
//!   `fs.write` folders, execute access only to the program called, other
//!   programs the skill may run by exact name, and their ELF or `#!`
//!   interpreters ([`elf`]), plus a fixed read-only system set (shared
//!   libraries, locale, time zones, certificates). Never `/proc` (keel's
//!   environment), never keel.toml, the data directory or a skill search
//!   path, never a path the policy denies or only allows after asking.
//!   Signals and abstract Unix sockets are scoped to the child (ABI 6);
//! - **no network** unless the skill holds `net.http`: an empty network
//!   namespace (only `lo`, down) and Landlock denies TCP bind and connect.
//!   The namespace is made once per skill and joined by each of its
//!   programs ([`netns`] says exactly what that shares: nothing between
//!   two skills, and nothing a program can change for the skill's next
//!   one). Landlock filters ports, not hosts, so a skill holding any
//!   `net.http` grant gets TCP connect to any host for its programs;
//!   binding a port is always denied.
//!
//! The ruleset is built in keel, before `fork`; the child only makes
//! async-signal-safe system calls ([`child`]).
//!
//! Where this does not apply: other operating systems (the gate's checks on
//! the program, the working folder and the environment still hold, but a
//! granted program can do whatever the OS lets keel's user do), and Linux
//! without Landlock, where programs are refused unless the operator opts out
//! with `KEEL_EXEC_SANDBOX=off` in keel's environment. [`status`] says which
//! one is in force; `keel skills` prints it.

pub mod elf;
pub mod environ;
pub mod plan;

#[cfg(target_os = "linux")]
mod child;
#[cfg(target_os = "linux")]
mod landlock;
#[cfg(target_os = "linux")]
pub mod netns;

use std::path::PathBuf;
use std::process::Command;

/// What a child may reach, from the skill's grants. Paths are absolute and
/// canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    /// Folders and files to read (`fs.read` the policy allows outright).
    pub read: Vec<PathBuf>,
    /// Folders and files to write (`fs.write` the policy allows outright).
    pub write: Vec<PathBuf>,
    /// Program files the child may execute (interpreters are added by
    /// [`prepare`]).
    pub execute: Vec<PathBuf>,
    /// Never reachable, even beneath a granted folder: keel's control plane
    /// and the policy's deny and ask paths.
    pub excluded: Vec<PathBuf>,
    /// The skill holds `net.http`: TCP connect is allowed.
    pub network: bool,
    /// Whose program this is. Without `network`, programs of one owner
    /// share one empty network namespace ([`netns`]); two owners never do.
    pub owner: Owner,
}

/// A skill in a workspace: the unit that may share a network namespace
/// between its programs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The workspace root, canonical.
    pub workspace: PathBuf,
    /// The skill's name.
    pub skill: String,
}

/// Why a child could not be confined. The program is not run.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// Splitting a granted folder around an excluded path would need too
    /// many rules.
    #[error(
        "the sandbox would need {count} rules (at most {max}) to keep keel's own files out of a granted folder; grant narrower folders",
        max = plan::MAX_RULES
    )]
    TooManyRules { count: usize },
    /// A folder that must be split could not be listed.
    #[error("cannot list `{path}` to build the sandbox: {reason}")]
    Split { path: PathBuf, reason: String },
    /// The kernel refused to build the Landlock ruleset.
    #[error("cannot build the Landlock sandbox: {0}")]
    Landlock(String),
    /// This Linux kernel has no Landlock and the operator has not accepted
    /// running programs unconfined.
    #[error(
        "this Linux kernel does not support Landlock, so keel cannot confine the program to the skill's grants and refuses to run it; upgrade the kernel (5.13+ with Landlock enabled), or accept the weaker checks by starting keel with KEEL_EXEC_SANDBOX=off"
    )]
    Unavailable,
}

/// Whether the operator accepts running programs without an OS sandbox
/// where none is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Confine, or refuse to run (the default).
    Required,
    /// Confine where possible; run with only the gate's checks otherwise.
    BestEffort,
}

impl Mode {
    /// From the value of `KEEL_EXEC_SANDBOX` in keel's environment.
    pub fn from_setting(value: Option<&str>) -> Self {
        match value {
            Some(v) if v.eq_ignore_ascii_case("off") => Mode::BestEffort,
            _ => Mode::Required,
        }
    }
}

/// What this machine can enforce, probed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// The Landlock ABI version (0: none).
    pub landlock_abi: i32,
    /// Children get their own PID (and user) namespace.
    pub namespaces: Namespaces,
}

/// Which namespaces a child can be given here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespaces {
    /// User + PID (+ network when the skill has no `net.http`).
    UserAndPid,
    /// PID (+ network) without a user namespace (root, userns disabled).
    Pid,
    /// None: descendants are killed by process group only, so one that
    /// calls `setsid` can outlive the call.
    None,
}

/// What this machine enforces.
pub fn support() -> Support {
    #[cfg(target_os = "linux")]
    {
        child::support()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Support {
            landlock_abi: 0,
            namespaces: Namespaces::None,
        }
    }
}

/// One line saying how programs run by skills are confined here, for
/// `keel skills` and logs.
pub fn status() -> String {
    let s = support();
    if !cfg!(target_os = "linux") {
        return "programs run by skills: gate checks only (no OS sandbox on this system; \
                weaker than on Linux)"
            .to_string();
    }
    if s.landlock_abi == 0 {
        return "programs run by skills: refused (this kernel has no Landlock); with \
                KEEL_EXEC_SANDBOX=off they run with gate checks only (weaker)"
            .to_string();
    }
    let ns = match s.namespaces {
        Namespaces::UserAndPid => "own user, PID and network namespaces",
        Namespaces::Pid => "own PID and network namespaces",
        Namespaces::None => "process group only (setsid children can escape)",
    };
    format!(
        "programs run by skills: Landlock ABI {} from the skill's grants, no_new_privs, {ns}",
        s.landlock_abi
    )
}

/// A child's confinement, ready to attach to a [`Command`]. Holds the
/// Landlock ruleset open until the child has started.
pub struct Confinement {
    #[cfg(target_os = "linux")]
    inner: Option<child::Setup>,
    /// The rules it enforces (for logs and tests).
    pub rules: usize,
    /// Whether an OS sandbox is in force (false: gate checks only).
    pub enforced: bool,
}

impl std::fmt::Debug for Confinement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confinement")
            .field("rules", &self.rules)
            .field("enforced", &self.enforced)
            .finish()
    }
}

/// Builds the confinement for `spec`: the Landlock ruleset (in keel, before
/// any fork) and the namespaces to enter.
pub fn prepare(spec: &Spec, mode: Mode) -> Result<Confinement, SandboxError> {
    #[cfg(target_os = "linux")]
    {
        let support = support();
        if support.landlock_abi == 0 {
            if mode == Mode::Required {
                return Err(SandboxError::Unavailable);
            }
            warn_once();
            return Ok(Confinement {
                inner: Some(child::Setup::new(
                    None,
                    support.namespaces,
                    spec.network,
                    held_netns(spec, support.namespaces),
                )),
                rules: 0,
                enforced: false,
            });
        }
        let mut spec = spec.clone();
        spec.execute = with_interpreters(&spec.execute);
        let rules = plan::rules(&spec)?;
        let fd = landlock::ruleset(&rules, spec.network)?;
        Ok(Confinement {
            inner: Some(child::Setup::new(
                Some(fd),
                support.namespaces,
                spec.network,
                held_netns(&spec, support.namespaces),
            )),
            rules: rules.len(),
            enforced: true,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (spec, mode);
        warn_once();
        Ok(Confinement {
            rules: 0,
            enforced: false,
        })
    }
}

impl Confinement {
    /// Makes `cmd` start its child confined: own process group, then (in
    /// the child) the namespaces, `no_new_privs` and the ruleset.
    pub fn apply(&self, cmd: &mut Command) {
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt as _;
            cmd.process_group(0);
        }
        #[cfg(target_os = "linux")]
        if let Some(setup) = &self.inner {
            setup.apply(cmd);
        }
    }
}

/// Kills every process in the group `pgid` (a child started by
/// [`Confinement::apply`] leads its own group, so `pgid` is its pid). Call
/// it before reaping the leader, so the id cannot have been reused.
pub fn kill_group(pgid: u32) {
    #[cfg(unix)]
    if let Ok(pgid) = libc::pid_t::try_from(pgid)
        && pgid > 1
    {
        // SAFETY: killpg has no memory effects; a group that is already
        // gone is ESRCH, which is fine.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
    #[cfg(not(unix))]
    let _ = pgid;
}

/// The owner's shared network namespace, when its programs get one (no
/// `net.http`, user namespaces available). If it cannot be made, each exec
/// makes its own, as before: slower, never weaker.
#[cfg(target_os = "linux")]
fn held_netns(spec: &Spec, ns: Namespaces) -> Option<std::sync::Arc<netns::Held>> {
    if spec.network || ns != Namespaces::UserAndPid {
        return None;
    }
    match netns::for_owner(&spec.owner, &child::UserMaps::for_current_user()) {
        Ok(held) => Some(held),
        Err(e) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "cannot make a shared network namespace for skills' programs ({e}); \
                     each program gets its own (slower)"
                )
            });
            None
        }
    }
}

/// The programs plus what the kernel opens to start each of them.
fn with_interpreters(programs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut queue: Vec<PathBuf> = programs.to_vec();
    // A script's interpreter may itself be a script (rare), or `env`
    // naming the real interpreter; a few levels are plenty.
    let mut budget = 16;
    while let Some(p) = queue.pop() {
        if out.contains(&p) || budget == 0 {
            continue;
        }
        budget -= 1;
        match elf::interpreter_of(&p) {
            Ok(elf::Interpreter::Elf(i)) => queue.push(real(i)),
            Ok(elf::Interpreter::Script { path, arg }) => {
                let is_env = path.file_name().is_some_and(|n| n == "env");
                queue.push(real(path));
                if is_env
                    && let Some(name) = arg.as_deref().and_then(|a| a.split_whitespace().next())
                    && !name.starts_with('-')
                    && let Some(found) = on_default_path(name)
                {
                    queue.push(found);
                }
            }
            _ => {}
        }
        out.push(p);
    }
    out
}

fn real(p: PathBuf) -> PathBuf {
    p.canonicalize().unwrap_or(p)
}

/// `env NAME` in a `#!` line searches the child's PATH, which keel sets
/// from the skill's `env` grants; the system folders are the usual answer.
fn on_default_path(name: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .map(real)
}

fn warn_once() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| tracing::warn!("{}", status()));
}
