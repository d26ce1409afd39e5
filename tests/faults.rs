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
    /// `None` (and why, on stderr) where mounting is not allowed — except
    /// under CI, which runs as root and must run this test, and except when
    /// the `mount` program is missing: those fail, saying what to do.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                let why = format!(
                    "cannot mount a tmpfs here (needs root): {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                assert!(std::env::var_os("CI").is_none(), "{why}");
                eprintln!("skipped: {why}");
                None
            }
            Err(e) => {
                panic!("no `mount` program ({e}): install util-linux (apt-get install mount)")
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

#[test]
fn a_keel_toml_that_is_a_directory_is_an_error() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.path("keel.toml")).expect("mkdir");
    let out = ws.run(&["skills"]);
    out.err_contains(&["keel.toml", "is a directory"]);
    assert_said_once(&out.stderr);
    // The same through --config.
    ws.run(&["--config", "keel.toml", "tools"])
        .err_contains(&["is a directory"]);
    // Nothing was created: the error came before the data dir.
    assert!(!ws.data_dir().exists());
}

#[test]
fn a_damaged_database_is_found_at_start_with_what_to_do() {
    let ws = Ws::new().policy("");
    // A database with some pages, checkpointed into the main file.
    let out = ws.run(&["grant", "notes", "kv"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    {
        let db = rusqlite::Connection::open(ws.data_dir().join("keel.db")).expect("open");
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS filler (x TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO filler SELECT printf('%0200d', i) FROM n;
             CREATE INDEX filler_x ON filler (x);
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .expect("fill");
    }
    let path = ws.data_dir().join("keel.db");
    let mut bytes = std::fs::read(&path).expect("read");
    let page = 4096;
    let mid = (bytes.len() / page / 2) * page;
    bytes[mid..mid + page].fill(0x5a);
    std::fs::write(&path, &bytes).expect("write");
    let out = ws.run(&["grants"]);
    out.err_contains(&["damaged", "keel.db", ".recover", "mv "]);
    assert_said_once(&out.stderr);
}

#[test]
fn a_bad_openai_base_url_is_refused_before_any_session_or_run_exists() {
    let ws = Ws::new().policy("");
    for bad in ["127.0.0.1:11434/v1", "ftp://example.com/v1", "http//oops"] {
        let out = run(ws.keel().env("OPENAI_BASE_URL", bad).args(["ask", "hello"]));
        out.err_contains(&["OPENAI_BASE_URL", bad, "http"]);
        assert_said_once(&out.stderr);
    }
    let list = ws.run(&["sessions", "--json"]);
    assert_eq!(list.status, 0, "{}", list.stderr);
    assert_eq!(list.stdout.trim(), "[]", "a session was created");
}

#[test]
fn mistakes_in_models_and_policy_give_file_line_and_did_you_mean() {
    let cases = [
        (
            "[models.main]\nprovider = \"openai\"\nmodel = \"m\"\nbase_ulr = \"http://x\"\n",
            "keel.toml:4:",
            "did you mean `base_url`",
        ),
        (
            "[models.main]\nprovider = \"opanai\"\nmodel = \"m\"\n",
            "keel.toml:2:",
            "did you mean \"openai\"",
        ),
        (
            "[models]\nchain = [\"mian\"]\n\n[models.main]\nprovider = \"openai\"\nmodel = \"m\"\n",
            "keel.toml:2:",
            "did you mean `main`",
        ),
        (
            "[models.main]\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"localhost\"\n",
            "keel.toml:4:",
            "not an http(s) URL",
        ),
        (
            "[policy]\nallow = [\"kv\",\n  \"fs.raed:./notes\"]\n",
            "keel.toml:3:",
            "did you mean `fs.read`",
        ),
        (
            "[policy]\ndefault = \"alow\"\n",
            "keel.toml:2:",
            "did you mean \"allow\"",
        ),
        (
            "[policy]\nalow = [\"kv\"]\n",
            "keel.toml:2:",
            "did you mean `allow`",
        ),
        (
            "\n[policy.skills.notes]\nask = [\"kv\"]\ndenny = [\"exec:*\"]\n",
            "keel.toml:4:",
            "did you mean `deny`",
        ),
    ];
    for (toml, at, hint) in cases {
        let ws = Ws::new().file("keel.toml", toml);
        let out = ws.run(&["skills"]);
        out.err_contains(&[at, hint]);
        assert_said_once(&out.stderr);
    }
}

#[test]
fn logs_in_a_pipe_carry_no_colour_codes() {
    // keel logs a retry at info level (a 503, then a 400 ends the run), and
    // stderr is a pipe here.
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::Status {
                code: 503,
                retry_after: None,
                message: "overloaded".into(),
            },
            Reply::Status {
                code: 400,
                retry_after: None,
                message: "bad request".into(),
            },
        ],
    );
    let ws = notes_ws(&model, "");
    let out = run(ws.keel().env("KEEL_LOG", "debug").args(["ask", "hello"]));
    assert!(
        out.stderr.contains("INFO") && out.stderr.contains("retrying"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains('\u{1b}'), "{:?}", out.stderr);
}
