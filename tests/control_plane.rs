//! The operator's files are not the skills' to touch: the attacks that
//! worked before, tried again through the real binary. A skill declaring
//! `fs.write:.`, under a policy that allows it, tries to rewrite
//! `keel.toml` to `default = "allow"`, plant skills in `./skills` and in the
//! data dir, truncate `keel.db`, and read all of these — directly, through
//! symlinks and through odd spellings. Every attempt must be refused with a
//! message saying why, and every file must be unchanged.

mod common;

use common::*;
use serde_json::json;

const LUAU: &str = r#"
local M = {}
function M.read(a) return keel.fs.read(a.path) end
function M.write(a) keel.fs.write(a.path, a.content or "x") return true end
function M.append(a) keel.fs.append(a.path, a.content or "x") return true end
function M.list(a) return keel.fs.list(a.path) end
function M.exists(a) return keel.fs.exists(a.path) end
function M.remove(a) return keel.fs.remove(a.path) end
function M.mkdir(a) keel.fs.mkdir(a.path) return true end
return M
"#;

const TOOLS: [&str; 7] = [
    "read", "write", "append", "list", "exists", "remove", "mkdir",
];

fn manifest() -> String {
    let mut s = "[skill]\nname = \"p\"\nversion = \"1.0.0\"\ndescription = \"control plane probe\"\nentry = \"main.luau\"\n\n\
                 [capabilities]\n\"fs.read\" = [\"*\"]\n\"fs.write\" = [\"*\"]\n\n"
        .to_string();
    for t in TOOLS {
        s += &format!("[[tools]]\nname = \"{t}\"\ndescription = \"{t}\"\n\n");
    }
    s
}

const POLICY: &str = "[skills]\nbuiltin = false\npaths = [\"skills\", \"scripts\", \"more-skills\"]\n\n\
                      [policy]\ndefault = \"deny\"\nallow = [\"fs.read:*\", \"fs.write:*\"]\n";

fn ws() -> Ws {
    let ws = Ws::new()
        .skill("p", &manifest(), &[("main.luau", LUAU)])
        .policy(POLICY)
        .file("notes/a.txt", "NOTE");
    // Create the data dir and keel.db with one call that works.
    assert_eq!(
        ws.call("p.read", json!({"path": "./notes/a.txt"})).ok(),
        json!("NOTE")
    );
    ws
}

/// keel's text files as they are, and the database's size. The database
/// legitimately grows (every refusal is audited); it must never shrink or
/// lose its header.
#[derive(Debug, PartialEq)]
struct Snapshot {
    texts: Vec<(String, String)>,
    db_len: u64,
}

fn snapshot(ws: &Ws) -> Snapshot {
    let texts = ["keel.toml", "skills/p/skill.toml", "skills/p/main.luau"]
        .iter()
        .map(|rel| {
            (
                rel.to_string(),
                std::fs::read_to_string(ws.path(rel)).unwrap(),
            )
        })
        .collect();
    let db = std::fs::read(ws.path(".data/keel.db")).unwrap();
    assert!(
        db.starts_with(b"SQLite format 3\0"),
        "keel.db lost its header"
    );
    Snapshot {
        texts,
        db_len: db.len() as u64,
    }
}

fn assert_kept(before: &Snapshot, after: &Snapshot) {
    assert_eq!(before.texts, after.texts, "a protected file changed");
    assert!(
        after.db_len >= before.db_len,
        "keel.db shrank from {} to {} bytes",
        before.db_len,
        after.db_len
    );
}

fn assert_refused(ws: &Ws, tool: &str, path: &str, why: &str) {
    let c = ws.call(
        &format!("p.{tool}"),
        json!({"path": path, "content": "default = \"allow\"\n"}),
    );
    let e = c.err();
    assert!(
        e.contains(why) && e.contains("no skill may read or write it"),
        "{tool} {path}: {e}"
    );
}

#[test]
fn a_skill_cannot_rewrite_keel_toml_even_with_fs_write_everywhere() {
    let ws = ws();
    let before = snapshot(&ws);
    let cfg = ws.path("keel.toml").display().to_string();
    std::os::unix::fs::symlink(ws.path("keel.toml"), ws.path("notes/cfg-link")).unwrap();
    for path in [
        "./keel.toml",
        "keel.toml",
        cfg.as_str(),
        ".//keel.toml",
        "./notes/../keel.toml",
        "./skills/../keel.toml",
        "./notes/cfg-link",
    ] {
        for tool in ["write", "append", "read", "exists"] {
            assert_refused(&ws, tool, path, "keel's own configuration");
        }
        // `remove` on the link removes the link (the skill's own file),
        // never the file it points to.
        if path != "./notes/cfg-link" {
            assert_refused(&ws, "remove", path, "keel's own configuration");
        }
    }
    assert_kept(&before, &snapshot(&ws));
    // The policy is still the operator's: exec stays denied by default.
    let cfg_text = std::fs::read_to_string(ws.path("keel.toml")).unwrap();
    assert!(!cfg_text.contains("default = \"allow\""));
}

#[test]
fn a_skill_cannot_plant_or_rewrite_skills_anywhere_on_the_search_path() {
    let ws = ws();
    let before = snapshot(&ws);
    std::fs::create_dir_all(ws.path("more-skills")).unwrap();
    std::os::unix::fs::symlink(ws.path("skills"), ws.path("notes/sk")).unwrap();
    let why = "a folder keel loads skills from";
    for (tool, path) in [
        ("mkdir", "./skills/evil"),
        ("write", "./skills/evil/skill.toml"),
        ("write", "./skills/p/main.luau"),
        ("append", "./skills/p/main.luau"),
        ("remove", "./skills/p/skill.toml"),
        ("write", "./scripts/evil.luau"),
        ("mkdir", "./scripts"),
        ("write", "./more-skills/evil.luau"),
        ("write", "./notes/sk/evil/skill.toml"),
        ("read", "./skills/p/main.luau"),
        ("list", "./skills"),
        ("list", "./notes/sk"),
        ("remove", "./skills"),
    ] {
        assert_refused(&ws, tool, path, why);
    }
    for (tool, path) in [
        ("mkdir", "./.data/skills/evil"),
        ("write", "./.data/skills/evil.luau"),
    ] {
        assert_refused(&ws, tool, path, "keel's own data");
    }
    assert!(!ws.path("skills/evil").exists());
    assert!(!ws.path("scripts").exists());
    assert!(!ws.path("more-skills/evil.luau").exists());
    assert!(!ws.path(".data/skills/evil").exists());
    assert!(!ws.path(".data/skills/evil.luau").exists());
    assert_kept(&before, &snapshot(&ws));
    // Listing the workspace shows the names, which is all it ever shows.
    let listed = ws.call("p.list", json!({"path": "."})).ok().to_string();
    assert!(
        listed.contains("\"skills\"") && listed.contains("keel.toml"),
        "{listed}"
    );
}

#[test]
fn a_skill_cannot_truncate_or_read_keel_db_and_the_audit_log_survives() {
    let ws = ws();
    let before = snapshot(&ws);
    let db = ws.path(".data/keel.db").display().to_string();
    std::os::unix::fs::symlink(ws.path(".data"), ws.path("notes/d")).unwrap();
    for (tool, path) in [
        ("write", "./.data/keel.db"),
        ("write", db.as_str()),
        ("append", "./.data/keel.db"),
        ("remove", "./.data/keel.db"),
        ("remove", "./.data/keel.db-wal"),
        ("read", "./.data/keel.db"),
        ("write", "./notes/d/keel.db"),
        ("list", "./.data"),
        ("list", "./notes/d"),
        ("mkdir", "./.data/owners/x"),
    ] {
        assert_refused(&ws, tool, path, "keel's own data");
    }
    assert_kept(&before, &snapshot(&ws));
    // The refusals are in the audit log, which is still there.
    let audit = ws.run(&["audit"]);
    assert_eq!(audit.status, 0, "{}", audit.stderr);
    assert!(audit.stdout.contains("keel.db"), "{}", audit.stdout);
}

/// With `--config` the file in use is protected, wherever it is, as is
/// the `keel.toml` a start without `--config` would read.
#[test]
fn the_config_given_with_dash_dash_config_is_protected_too() {
    let ws = ws();
    ws.write(
        "conf/other.toml",
        &format!("workspace = \"..\"\n\n{POLICY}"),
    );
    let run = |tool: &str, path: &str| {
        ws.keel()
            .args([
                "--config",
                "conf/other.toml",
                "call",
                &format!("p.{tool}"),
                &json!({"path": path, "content": "x"}).to_string(),
            ])
            .output()
            .unwrap()
    };
    for (tool, path) in [
        ("write", "./conf/other.toml"),
        ("read", "./conf/other.toml"),
        ("write", "./keel.toml"),
    ] {
        let out = run(tool, path);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tool} {path} went through");
        assert!(e.contains("keel's own configuration"), "{tool} {path}: {e}");
    }
    assert!(
        std::fs::read_to_string(ws.path("conf/other.toml"))
            .unwrap()
            .contains("workspace")
    );
    // Other files are still the skill's to use.
    let out = run("write", "./notes/b.txt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(ws.path("notes/b.txt")).unwrap(),
        "x"
    );
}

/// keel's own environment holds the secrets the `env` rules deny; a policy
/// that allows reading everywhere still does not reach it through `/proc`.
#[cfg(target_os = "linux")]
#[test]
fn keel_s_own_proc_entry_is_not_readable_even_under_fs_read_everywhere() {
    let ws = ws();
    for path in [
        "/proc/self/environ",
        "/proc/self/cmdline",
        "/proc/thread-self/environ",
        "/proc/self/fd",
    ] {
        let c = ws.call("p.read", json!({"path": path}));
        let e = c.err();
        assert!(e.contains("keel's own process"), "{path}: {e}");
    }
    // Other files in /proc are the policy's to allow.
    let c = ws.call("p.exists", json!({"path": "/proc/cpuinfo"}));
    assert_eq!(c.ok(), json!(true));
}
