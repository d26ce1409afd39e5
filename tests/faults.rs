//! Faults get true errors: a full disk (a real, small tmpfs filled up), a
//! `keel.toml` that is a directory, a damaged database page, a bad
//! `OPENAI_BASE_URL`, mistakes in `[models]` and `[policy]` (file, line,
//! "did you mean"), no cause printed twice, no colour codes in a pipe.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::agent::notes_ws;
use common::model::{FakeModel, Reply, Wire};
use common::{Called, Ws};

fn run(cmd: &mut Command) -> Called {
    let out = cmd.output().expect("run keel");
    Called {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// No ": X: X" — a cause repeated after itself — anywhere in `text`, and
/// no colour codes.
fn assert_said_once(text: &str) {
    assert!(!text.contains('\u{1b}'), "colour codes in a pipe: {text:?}");
    for line in text.lines() {
        let parts: Vec<&str> = line.split(": ").collect();
        for w in parts.windows(2) {
            assert_ne!(w[0].trim(), w[1].trim(), "a cause printed twice: {line}");
        }
    }
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (and why, on stderr) where mounting is not allowed.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here (needs root): {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: no mount command: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes zeros to `file` until the disk is full.
fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).expect("filler");
    let block = vec![0u8; 64 * 1024];
    loop {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_says_the_disk_is_full_and_changes_nothing() {
    let Some(disk) = Tmpfs::mount("4m") else {
        return;
    };
    let model = FakeModel::with_handler(Wire::OpenAi, |_| Reply::text("fine"));
    let ws = notes_ws(&model, "");
    let data: PathBuf = disk.path().join("data");
    let keel = |args: &[&str]| run(ws.keel().env("KEEL_DATA_DIR", &data).args(args));
    let first = keel(&["ask", "before the disk filled"]);
    assert_eq!(first.status, 0, "{}", first.stderr);
    let sessions_before = keel(&["sessions", "--json"]);
    assert_eq!(sessions_before.status, 0, "{}", sessions_before.stderr);

    fill(&disk.path().join("filler"));
    for args in [
        &["ask", "after the disk filled"][..],
        &["grant", "notes", "exec:git"][..],
    ] {
        let out = keel(args);
        assert_ne!(out.status, 0, "{args:?} succeeded on a full disk");
        assert!(
            out.stderr.contains("is full") && out.stderr.contains(&data.display().to_string()),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("no session"), "{}", out.stderr);
        assert_said_once(&out.stderr);
    }
    // Room again: nothing was half-written, and keel goes on.
    std::fs::remove_file(disk.path().join("filler")).expect("free the space");
    let sessions_after = keel(&["sessions", "--json"]);
    assert_eq!(sessions_after.stdout, sessions_before.stdout);
    let again = keel(&["ask", "after the space came back"]);
    assert_eq!(again.status, 0, "{}", again.stderr);
}
