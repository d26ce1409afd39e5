//! A skill's files cannot reach outside its folder or hang keel: FIFOs,
//! links to devices, huge files and symlinked `SKILL.md`/`skill.toml` on
//! the search path are each reported as a failed skill with the reason, and
//! `keel skills` still returns (and lists the good skills). Every command
//! discovers skills, so before this a FIFO in `scripts/` hung them all.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const GOOD_MANIFEST: &str = "[skill]\nname = \"good\"\nversion = \"1.0.0\"\ndescription = \"fine\"\nentry = \"main.luau\"\n\n[[tools]]\nname = \"hi\"\ndescription = \"hi\"\n";
const GOOD_SRC: &str = "local M = {}\nfunction M.hi() return 'hi' end\nreturn M\n";

fn manifest(name: &str) -> String {
    GOOD_MANIFEST.replace("\"good\"", &format!("\"{name}\""))
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn symlink(target: impl AsRef<Path>, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Runs `keel skills --json`, waiting at most two minutes (a hang is the
/// bug; the bound only keeps a regression from hanging the suite).
fn skills_json(ws: &Ws) -> (i32, Value) {
    let mut child = ws
        .keel()
        .args(["skills", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`keel skills` hung on a special file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// The failure whose origin path ends with `suffix`, as its error text.
fn failure(v: &Value, suffix: &str) -> String {
    v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["origin"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(suffix))
        })
        .unwrap_or_else(|| panic!("no failure for {suffix}: {v:#}"))["error"]
        .as_str()
        .unwrap()
        .to_string()
}

fn good_is_listed(v: &Value) {
    assert!(v["skills"].to_string().contains("good"), "{v:#}");
}

#[test]
fn special_files_and_device_links_in_scripts_are_skipped_with_a_reason() {
    let ws = Ws::new()
        .skill("good", GOOD_MANIFEST, &[("main.luau", GOOD_SRC)])
        .policy("");
    mkfifo(&ws.path("scripts/hang.luau"));
    symlink("/dev/zero", &ws.path("scripts/zero.rhai"));
    mkfifo(&ws.data_dir().join("skills/data-hang.luau"));
    // A FIFO that is not named like a script is not a skill: never opened.
    mkfifo(&ws.path("scripts/notes.txt"));
    let (status, v) = skills_json(&ws);
    assert_eq!(status, 1, "{v:#}");
    good_is_listed(&v);
    let e = failure(&v, "scripts/hang.luau");
    assert!(
        e.contains("FIFO") && e.contains("not a regular file"),
        "{e}"
    );
    let e = failure(&v, "scripts/zero.rhai");
    assert!(e.contains("character device"), "{e}");
    let e = failure(&v, "skills/data-hang.luau");
    assert!(e.contains("FIFO"), "{e}");
    assert!(!v.to_string().contains("notes.txt"), "{v:#}");
}

#[test]
fn special_files_and_escaping_links_in_a_skill_folder_fail_that_skill_only() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.md");
    std::fs::write(
        &secret,
        "---\ndescription: OUTSIDE-SECRET\n---\nOUTSIDE-SECRET body\n",
    )
    .unwrap();
    std::fs::write(outside.path().join("skill.toml"), manifest("stolen")).unwrap();
    let big = "-- x\n".repeat(300_000);
    let ws = Ws::new()
        .skill("good", GOOD_MANIFEST, &[("main.luau", GOOD_SRC)])
        .skill("fifo-main", &manifest("fifo-main"), &[])
        .skill("zero-main", &manifest("zero-main"), &[])
        .skill("md-link", &manifest("md-link"), &[("main.luau", GOOD_SRC)])
        .skill("md-fifo", &manifest("md-fifo"), &[("main.luau", GOOD_SRC)])
        .skill("big", &manifest("big"), &[("main.luau", &big)])
        .policy("");
    mkfifo(&ws.path("skills/fifo-main/main.luau"));
    symlink("/dev/zero", &ws.path("skills/zero-main/main.luau"));
    symlink(&secret, &ws.path("skills/md-link/SKILL.md"));
    mkfifo(&ws.path("skills/md-fifo/SKILL.md"));
    // A skill.toml that is a link out of its folder, and one that is a FIFO.
    symlink(
        outside.path().join("skill.toml"),
        &ws.path("skills/toml-link/skill.toml"),
    );
    std::fs::write(ws.path("skills/toml-link/main.luau"), GOOD_SRC).unwrap();
    mkfifo(&ws.path("skills/toml-fifo/skill.toml"));
    let (status, v) = skills_json(&ws);
    assert_eq!(status, 1, "{v:#}");
    good_is_listed(&v);
    let e = failure(&v, "skills/fifo-main");
    assert!(e.contains("main.luau") && e.contains("FIFO"), "{e}");
    let e = failure(&v, "skills/zero-main");
    assert!(e.contains("leads out of the skill folder"), "{e}");
    let e = failure(&v, "skills/md-link");
    assert!(
        e.contains("SKILL.md") && e.contains("leads out of the skill folder"),
        "{e}"
    );
    let e = failure(&v, "skills/md-fifo");
    assert!(e.contains("SKILL.md") && e.contains("FIFO"), "{e}");
    let e = failure(&v, "skills/big");
    assert!(e.contains("1024 KiB limit"), "{e}");
    let e = failure(&v, "skills/toml-link");
    assert!(
        e.contains("skill.toml") && e.contains("leads out of the skill folder"),
        "{e}"
    );
    let e = failure(&v, "skills/toml-fifo");
    assert!(e.contains("skill.toml") && e.contains("FIFO"), "{e}");
    // The outside file never became a skill or instructions.
    let all = v.to_string();
    assert!(
        !all.contains("OUTSIDE-SECRET") && !all.contains("stolen"),
        "{v:#}"
    );
    // A tool call still works (every command discovers skills).
    let c = ws.call("good.hi", serde_json::json!({}));
    assert_eq!(c.ok(), serde_json::json!("hi"));
}

/// Links that stay inside the skill folder are fine.
#[test]
fn a_link_inside_the_skill_folder_is_read() {
    let ws = Ws::new()
        .skill(
            "good",
            GOOD_MANIFEST,
            &[
                ("real.luau", GOOD_SRC),
                ("docs.md", "---\ndescription: Inside.\n---\nbody\n"),
            ],
        )
        .policy("");
    symlink("real.luau", &ws.path("skills/good/main.luau"));
    symlink("docs.md", &ws.path("skills/good/SKILL.md"));
    let (status, v) = skills_json(&ws);
    assert_eq!(status, 0, "{v:#}");
    good_is_listed(&v);
    assert_eq!(
        ws.call("good.hi", serde_json::json!({})).ok(),
        serde_json::json!("hi")
    );
}
