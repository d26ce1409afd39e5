//! The Landlock ruleset for one child, built in keel before `fork`.
//!
//! Every file-system right the kernel knows (up to ABI 6) is *handled*, so
//! anything not granted by a rule is denied; the `landlock` crate drops the
//! rights an older kernel does not know (best effort), and
//! [`super::support`] reports the ABI so the status line says what holds.
//! TCP bind is always handled (denied); TCP connect is handled when the
//! skill has no `net.http`. Signals and abstract Unix sockets are scoped to
//! the child's own domain, so it cannot signal keel or reach its sockets.

use std::os::fd::OwnedFd;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope,
};

use super::SandboxError;
use super::plan::{Rights, Rule};

/// The newest ABI whose rights keel hands out.
const TARGET: ABI = ABI::V6;

fn fs_rights(rights: Rights, is_dir: bool) -> BitFlags<AccessFs> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let all = match rights {
        Rights::Read => read,
        Rights::ReadWriteFile => AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate,
        Rights::Write => {
            AccessFs::WriteFile
                | AccessFs::Truncate
                | AccessFs::RemoveFile
                | AccessFs::RemoveDir
                | AccessFs::MakeReg
                | AccessFs::MakeDir
                | AccessFs::MakeSym
                | AccessFs::MakeFifo
                | AccessFs::MakeSock
                | AccessFs::Refer
        }
        Rights::Execute => AccessFs::Execute | AccessFs::ReadFile,
    };
    if is_dir {
        all
    } else {
        all & AccessFs::from_file(TARGET)
    }
}

/// Builds the ruleset; returns its file descriptor for the child's
/// `landlock_restrict_self`.
pub(super) fn ruleset(rules: &[Rule], network: bool) -> Result<OwnedFd, SandboxError> {
    let err = |e: &dyn std::fmt::Display| SandboxError::Landlock(e.to_string());
    let mut net: BitFlags<AccessNet> = AccessNet::BindTcp.into();
    if !network {
        net |= AccessNet::ConnectTcp;
    }
    let mut created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET))
        .map_err(|e| err(&e))?
        .handle_access(net)
        .map_err(|e| err(&e))?
        .scope(Scope::from_all(TARGET))
        .map_err(|e| err(&e))?
        .create()
        .map_err(|e| err(&e))?;
    for rule in rules {
        // O_PATH without following a final link: the plan resolved system
        // links already, and a grant path is canonical, so a link here was
        // swapped in since; it gets nothing.
        let Ok(file) = open_path(&rule.path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let rights = fs_rights(rule.rights, meta.is_dir());
        created = created
            .add_rule(PathBeneath::new(file, rights))
            .map_err(|e| err(&e))?;
    }
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or_else(|| SandboxError::Landlock("the kernel returned no ruleset".into()))
}

fn open_path(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// The Landlock ABI this kernel supports (0 if none).
pub(super) fn abi_version() -> i32 {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the
    // VERSION flag only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    i32::try_from(v).unwrap_or(0).max(0)
}
