//! Reading a skill's files without letting them reach elsewhere or hang.
//!
//! Discovery runs on every start and every command, so one bad file must
//! never stall it or read something it should not:
//! - a file inside a skill folder (`skill.toml`, `SKILL.md`, scripts) is
//!   opened *beneath* the folder (cap-std: `openat2(RESOLVE_BENEATH)` or an
//!   equivalent walk), so a symlink that leads out of the folder is refused
//!   — an outside file never becomes a manifest, code, or the model's
//!   instructions. Links that stay inside the folder are fine;
//! - every file is opened with `O_NONBLOCK` (a FIFO never blocks the open)
//!   and `fstat`ed before a byte is read: only regular files are read, so a
//!   FIFO, socket or device (a link to `/dev/zero`) is refused at once;
//! - at most [`MAX_FILE_BYTES`] are read, whatever the size claims.
//!
//! Each refusal is a [`SkillFileError`] that names the file and says what
//! to do; the caller reports it as that skill's failure.

use std::io::Read;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _};

/// Largest manifest, `SKILL.md` or script keel reads, in bytes (1 MiB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why a skill file was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkillFileError {
    /// A symlink (somewhere on the path) leads out of the skill's folder.
    #[error(
        "{}: is a symbolic link that leads out of the skill folder {}; keel reads a skill's files only from inside its folder (copy the file in instead of linking it)",
        path.display(), dir.display()
    )]
    Escapes { path: PathBuf, dir: PathBuf },
    /// Not a regular file.
    #[error(
        "{}: is {what}, not a regular file; skipped (keel reads skills only from regular files — remove it or replace it with the file)",
        path.display()
    )]
    NotRegular { path: PathBuf, what: &'static str },
    /// Larger than [`MAX_FILE_BYTES`].
    #[error(
        "{}: is larger than the {} KiB limit for skill files; skipped (split it into smaller files)",
        path.display(), MAX_FILE_BYTES / 1024
    )]
    TooLarge { path: PathBuf },
    /// Not UTF-8 text.
    #[error("{}: is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
    /// Any other I/O error (missing, permission, …).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SkillFileError {
    /// The file does not exist (callers treat optional files specially).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Flags for every open here: never block on a FIFO, never adopt a tty.
const NO_WAIT: i32 = libc::O_NONBLOCK | libc::O_NOCTTY;

/// A skill folder, opened once; files are read beneath it.
pub struct SkillDir {
    dir: Dir,
    path: PathBuf,
}

impl SkillDir {
    /// Opens the folder itself (a folder that is itself a link, placed on
    /// the search path by the operator, is followed).
    pub fn open(path: &Path) -> Result<Self, SkillFileError> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority()).map_err(|source| {
            SkillFileError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(Self {
            dir,
            path: path.to_path_buf(),
        })
    }

    /// Reads `rel` (relative to the folder) as text, beneath the folder.
    pub fn read(&self, rel: &Path) -> Result<String, SkillFileError> {
        let path = self.path.join(rel);
        let mut opts = OpenOptions::new();
        opts.read(true).custom_flags(NO_WAIT);
        let file = self.dir.open_with(rel, &opts).map_err(|source| {
            // cap-std's words for a walk that would leave the folder; EXDEV
            // is openat2's for RESOLVE_BENEATH.
            if source.to_string().contains("outside of the filesystem")
                || source.raw_os_error() == Some(libc::EXDEV)
            {
                SkillFileError::Escapes {
                    path: path.clone(),
                    dir: self.path.clone(),
                }
            } else {
                io_or_special(&path, source)
            }
        })?;
        read_regular(file.into_std(), &path)
    }
}

impl SkillDir {
    /// The names and types (links not followed) of the entries of the
    /// folder `rel` beneath the skill folder, sorted by name.
    pub fn read_dir(
        &self,
        rel: &Path,
    ) -> std::io::Result<Vec<(std::ffi::OsString, cap_std::fs::FileType)>> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let mut out = Vec::new();
        for e in self.dir.read_dir(rel)? {
            let e = e?;
            out.push((e.file_name(), e.file_type()?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// Reads a file given by path (a one-file skill on the search path). A link
/// there was put by the operator and is followed; what it reaches must
/// still be a regular file within the size limit.
pub fn read_file(path: &Path) -> Result<String, SkillFileError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(NO_WAIT)
        .open(path)
        .map_err(|source| io_or_special(path, source))?;
    read_regular(file, path)
}

fn io_or_special(path: &Path, source: std::io::Error) -> SkillFileError {
    // Opening a socket says ENXIO.
    if source.raw_os_error() == Some(libc::ENXIO) {
        return SkillFileError::NotRegular {
            path: path.to_path_buf(),
            what: "a socket or FIFO",
        };
    }
    SkillFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_regular(file: std::fs::File, path: &Path) -> Result<String, SkillFileError> {
    let io = |source| SkillFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(SkillFileError::NotRegular {
            path: path.to_path_buf(),
            what: describe(&meta.file_type()),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(SkillFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let mut buf = Vec::new();
    // The size may grow after the fstat: never read past the limit.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(SkillFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(buf).map_err(|_| SkillFileError::NotText {
        path: path.to_path_buf(),
    })
}

fn describe(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if ft.is_dir() {
        "a folder"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn fifos_devices_escapes_and_huge_files_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let skill = root.join("s");
        std::fs::create_dir(&skill).unwrap();
        std::fs::write(root.join("outside.md"), "OUTSIDE").unwrap();
        std::fs::write(skill.join("ok.md"), "fine").unwrap();
        std::os::unix::fs::symlink("ok.md", skill.join("inner.md")).unwrap();
        std::os::unix::fs::symlink(root.join("outside.md"), skill.join("abs.md")).unwrap();
        std::os::unix::fs::symlink("../outside.md", skill.join("rel.md")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", skill.join("zero.luau")).unwrap();
        mkfifo(&skill.join("fifo.luau"));
        let big = std::fs::File::create(skill.join("big.luau")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let dir = SkillDir::open(&skill).unwrap();
        assert_eq!(dir.read(Path::new("ok.md")).unwrap(), "fine");
        assert_eq!(dir.read(Path::new("inner.md")).unwrap(), "fine");
        for f in ["abs.md", "rel.md", "zero.luau"] {
            let e = dir.read(Path::new(f)).unwrap_err();
            assert!(matches!(e, SkillFileError::Escapes { .. }), "{f}: {e}");
            assert!(!e.to_string().contains("OUTSIDE"));
        }
        let e = dir.read(Path::new("fifo.luau")).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = dir.read(Path::new("big.luau")).unwrap_err();
        assert!(matches!(e, SkillFileError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("1024 KiB"), "{e}");
        // By path (one-file skills): links are followed, but only to
        // regular files.
        let e = read_file(&skill.join("zero.luau")).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = read_file(&skill.join("fifo.luau")).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        assert!(
            read_file(&skill.join("missing"))
                .unwrap_err()
                .is_not_found()
        );
    }
}
