//! Escape attempts against the capability gate, tried for real: real files
//! and symlinks in a temp workspace, real HTTP servers on 127.0.0.1, real
//! subprocesses. Each refusal is checked for a message that names the
//! capability and the target and says how to grant it, and for what it must
//! never contain (secrets, file contents). Each test also shows that the
//! allowed route works, so a gate that refuses everything fails here too.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Fixtures

const LUAU_PROBE: &str = r#"
local M = {}
function M.fs_read(a) return keel.fs.read(a.path) end
function M.fs_write(a) keel.fs.write(a.path, a.content) return "written" end
function M.fs_append(a) keel.fs.append(a.path, a.content) return "appended" end
function M.fs_remove(a) return keel.fs.remove(a.path) end
function M.fs_mkdir(a) keel.fs.mkdir(a.path) return "made" end
function M.fs_list(a) return keel.fs.list(a.path) end
function M.http_get(a) return keel.http.get(a.url) end
function M.run(a) return keel.exec.run(a.argv) end
function M.run_in(a) return keel.exec.run(a.argv, { cwd = a.cwd }) end
function M.env_get(a) return keel.env.get(a.name) end
return M
"#;

const RHAI_PROBE: &str = r#"
fn fs_read(a) { keel::fs::read(a.path) }
fn fs_write(a) { keel::fs::write(a.path, a.content); "written" }
fn fs_append(a) { keel::fs::append(a.path, a.content); "appended" }
fn fs_remove(a) { keel::fs::remove(a.path) }
fn fs_mkdir(a) { keel::fs::mkdir(a.path); "made" }
fn fs_list(a) { keel::fs::list(a.path) }
fn http_get(a) { keel::http::get(a.url) }
fn run(a) { keel::exec::run(a.argv) }
fn run_in(a) { keel::exec::run(a.argv, #{ cwd: a.cwd }) }
fn env_get(a) { keel::env::get(a.name) }
"#;

const PROBE_TOOLS: &[&str] = &[
    "fs_read",
    "fs_write",
    "fs_append",
    "fs_remove",
    "fs_mkdir",
    "fs_list",
    "http_get",
    "run",
    "run_in",
    "env_get",
];

#[derive(Clone, Copy, Debug)]
enum Lang {
    Luau,
    Rhai,
}

const BOTH: [Lang; 2] = [Lang::Luau, Lang::Rhai];

impl Lang {
    fn entry(self) -> &'static str {
        match self {
            Lang::Luau => "main.luau",
            Lang::Rhai => "main.rhai",
        }
    }
}

fn manifest(name: &str, entry: &str, deps: &str, caps: &str, tools: &[&str]) -> String {
    let mut s = format!(
        "[skill]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"escape probe\"\nentry = \"{entry}\"\n\n"
    );
    if !deps.is_empty() {
        s += &format!("[dependencies]\n{deps}\n\n");
    }
    s += &format!("[capabilities]\n{caps}\n\n");
    for t in tools {
        s += &format!("[[tools]]\nname = \"{t}\"\ndescription = \"probe {t}\"\n\n");
    }
    s
}

/// A workspace with the probe skill `p` written in `lang`, declaring `caps`.
fn probe(lang: Lang, caps: &str, policy: &str) -> Ws {
    let src = match lang {
        Lang::Luau => LUAU_PROBE,
        Lang::Rhai => RHAI_PROBE,
    };
    Ws::new()
        .skill(
            "p",
            &manifest("p", lang.entry(), "", caps, PROBE_TOOLS),
            &[(lang.entry(), src)],
        )
        .policy(policy)
}

/// Asserts the call was refused with every fragment and none of `never`;
/// returns the message. `lang` is in the panic message.
fn refused(lang: Lang, c: &Called, must: &[&str], never: &[&str]) -> String {
    assert_ne!(
        c.status, 0,
        "[{lang:?}] call should have been refused but returned {}",
        c.stdout
    );
    let e = c.err();
    for f in must {
        assert!(e.contains(f), "[{lang:?}] error lacks {f:?}: {e}");
    }
    for f in never {
        assert!(
            !e.contains(f),
            "[{lang:?}] error must not contain {f:?}: {e}"
        );
    }
    e.to_string()
}

fn ok(lang: Lang, c: &Called) -> Value {
    assert_eq!(c.status, 0, "[{lang:?}] call failed: {}", c.stderr);
    c.ok()
}

/// A second temp dir: "somewhere outside the workspace".
fn outside() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().canonicalize().expect("canonical");
    std::fs::write(p.join("secret.txt"), "OUTSIDE-SECRET").expect("write");
    (d, p)
}

fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `keel call` with extra environment variables in keel's own process.
fn call_env(ws: &Ws, tool: &str, args: Value, env: &[(&str, &str)]) -> Called {
    let mut cmd = ws.keel();
    cmd.args(["call", tool, &args.to_string()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run keel");
    Called {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The audit log as JSON text (`keel audit --json`).
fn audit(ws: &Ws) -> String {
    let c = ws.run(&["audit", "--json"]);
    assert_eq!(c.status, 0, "keel audit failed: {}", c.stderr);
    c.stdout
}

// ---------------------------------------------------------------------------
// Paths

const FS_CAPS: &str = "\"fs.read\" = [\"./notes\"]\n\"fs.write\" = [\"./notes\"]";
const FS_POLICY: &str = "[policy]\nallow = [\"fs.read:./notes\", \"fs.write:./notes\"]\n";

fn fs_ws(lang: Lang) -> Ws {
    probe(lang, FS_CAPS, FS_POLICY)
        .file("notes/a.txt", "NOTE-A")
        .file("secret.txt", "WS-SECRET")
}

#[test]
fn fs_allowed_paths_work() {
    for lang in BOTH {
        let ws = fs_ws(lang);
        assert_eq!(
            ok(
                lang,
                &ws.call("p.fs_read", json!({"path": "./notes/a.txt"}))
            ),
            json!("NOTE-A")
        );
        assert_eq!(
            ok(lang, &ws.call("p.fs_read", json!({"path": "notes/a.txt"}))),
            json!("NOTE-A")
        );
        // An absolute path inside the declared folder is fine too.
        let abs = s(&ws.path("notes/a.txt"));
        assert_eq!(
            ok(lang, &ws.call("p.fs_read", json!({"path": abs}))),
            json!("NOTE-A")
        );
        ok(
            lang,
            &ws.call("p.fs_mkdir", json!({"path": "./notes/sub/deeper"})),
        );
        assert!(ws.path("notes/sub/deeper").is_dir());
        ok(
            lang,
            &ws.call(
                "p.fs_write",
                json!({"path": "./notes/sub/new.txt", "content": "NEW"}),
            ),
        );
        assert_eq!(
            std::fs::read_to_string(ws.path("notes/sub/new.txt")).unwrap(),
            "NEW"
        );
        ok(
            lang,
            &ws.call(
                "p.fs_append",
                json!({"path": "./notes/sub/new.txt", "content": "+"}),
            ),
        );
        assert_eq!(
            std::fs::read_to_string(ws.path("notes/sub/new.txt")).unwrap(),
            "NEW+"
        );
        let listed = ok(lang, &ws.call("p.fs_list", json!({"path": "./notes"})));
        assert!(listed.to_string().contains("a.txt"), "{listed}");
        assert_eq!(
            ok(
                lang,
                &ws.call("p.fs_remove", json!({"path": "./notes/sub/new.txt"}))
            ),
            json!(true)
        );
        assert!(!ws.path("notes/sub/new.txt").exists());
        // A symlink that stays inside the folder is judged by where it points: fine.
        symlink("a.txt", ws.path("notes/inner-link.txt"));
        assert_eq!(
            ok(
                lang,
                &ws.call("p.fs_read", json!({"path": "./notes/inner-link.txt"}))
            ),
            json!("NOTE-A")
        );
    }
}

#[test]
fn fs_dotdot_paths_are_refused() {
    for lang in BOTH {
        let ws = fs_ws(lang);
        let (_keep, out) = outside();
        let root = s(&ws.root);
        let secret = format!("{root}/secret.txt");
        for path in [
            "./notes/../secret.txt",
            "notes/../secret.txt",
            "./notes/./../secret.txt",
        ] {
            let c = ws.call("p.fs_read", json!({"path": path}));
            refused(
                lang,
                &c,
                &[
                    "`fs.read`",
                    &secret,
                    "[capabilities]",
                    "skill.toml",
                    "skill `p`",
                ],
                &["WS-SECRET"],
            );
        }
        // `../secret.txt` relative to the workspace: whatever is there, not ours to read.
        let parent = ws.root.parent().unwrap().join("secret.txt");
        let c = ws.call("p.fs_read", json!({"path": "../secret.txt"}));
        refused(lang, &c, &["`fs.read`", &s(&parent)], &[]);
        // A real file in a sibling folder, reached by climbing out of the workspace.
        if out.parent() == ws.root.parent() {
            let name = out.file_name().unwrap().to_string_lossy().to_string();
            for path in [
                format!("../{name}/secret.txt"),
                format!("./notes/../../{name}/secret.txt"),
            ] {
                let c = ws.call("p.fs_read", json!({"path": path}));
                refused(
                    lang,
                    &c,
                    &["`fs.read`", &s(&out.join("secret.txt"))],
                    &["OUTSIDE-SECRET"],
                );
            }
        }
        // Writing through `..` creates nothing outside the folder.
        let c = ws.call(
            "p.fs_write",
            json!({"path": "./notes/../pwned.txt", "content": "x"}),
        );
        refused(lang, &c, &["`fs.write`", &format!("{root}/pwned.txt")], &[]);
        assert!(!ws.path("pwned.txt").exists());
        let c = ws.call(
            "p.fs_write",
            json!({"path": "./notes/../secret.txt", "content": "clobbered"}),
        );
        refused(lang, &c, &["`fs.write`"], &[]);
        assert_eq!(
            std::fs::read_to_string(ws.path("secret.txt")).unwrap(),
            "WS-SECRET"
        );
    }
}

#[test]
fn fs_absolute_paths_outside_are_refused() {
    for lang in BOTH {
        let ws = fs_ws(lang);
        let (_keep, out) = outside();
        let target = s(&out.join("secret.txt"));
        let c = ws.call("p.fs_read", json!({"path": target}));
        let e = refused(
            lang,
            &c,
            &["`fs.read`", &target, "\"fs.read\" = ["],
            &["OUTSIDE-SECRET"],
        );
        assert!(
            e.contains(&format!("[\"{target}\"]")),
            "[{lang:?}] the hint should name the path: {e}"
        );
        let c = ws.call("p.fs_read", json!({"path": "/etc/passwd"}));
        refused(lang, &c, &["`fs.read`", "/etc/passwd"], &["root:"]);
        let c = ws.call("p.fs_list", json!({"path": "/"}));
        refused(lang, &c, &["`fs.read`", "`/`"], &[]);
        let c = ws.call(
            "p.fs_write",
            json!({"path": s(&out.join("new.txt")), "content": "x"}),
        );
        refused(lang, &c, &["`fs.write`", &s(&out.join("new.txt"))], &[]);
        assert!(!out.join("new.txt").exists());
    }
}

#[test]
fn fs_symlinked_file_pointing_outside_is_refused() {
    for lang in BOTH {
        let ws = fs_ws(lang);
        let (_keep, out) = outside();
        symlink(out.join("secret.txt"), ws.path("notes/abs-link.txt"));
        symlink("../secret.txt", ws.path("notes/rel-link.txt"));
        let c = ws.call("p.fs_read", json!({"path": "./notes/abs-link.txt"}));
        refused(
            lang,
            &c,
            &["`fs.read`", &s(&out.join("secret.txt"))],
            &["OUTSIDE-SECRET"],
        );
        let c = ws.call("p.fs_read", json!({"path": "./notes/rel-link.txt"}));
        refused(
            lang,
            &c,
            &["`fs.read`", &s(&ws.path("secret.txt"))],
            &["WS-SECRET"],
        );
        // Writing or appending through the link must not touch the target.
        let c = ws.call(
            "p.fs_write",
            json!({"path": "./notes/abs-link.txt", "content": "clobbered"}),
        );
        refused(lang, &c, &["`fs.write`", &s(&out.join("secret.txt"))], &[]);
        let c = ws.call(
            "p.fs_append",
            json!({"path": "./notes/rel-link.txt", "content": "clobbered"}),
        );
        refused(lang, &c, &["`fs.write`"], &[]);
        // Removing the link removes the link (it lies in the granted
        // folder), never what it points to.
        let c = ws.call("p.fs_remove", json!({"path": "./notes/abs-link.txt"}));
        assert_eq!(ok(lang, &c), json!(true));
        assert!(
            std::fs::symlink_metadata(ws.path("notes/abs-link.txt")).is_err(),
            "[{lang:?}] the link is still there"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("secret.txt")).unwrap(),
            "OUTSIDE-SECRET"
        );
        assert_eq!(
            std::fs::read_to_string(ws.path("secret.txt")).unwrap(),
            "WS-SECRET"
        );
    }
}

#[test]
fn fs_symlinked_folder_pointing_outside_is_refused() {
    for lang in BOTH {
        let ws = fs_ws(lang);
        let (_keep, out) = outside();
        symlink(&out, ws.path("notes/out"));
        let c = ws.call("p.fs_read", json!({"path": "./notes/out/secret.txt"}));
        refused(
            lang,
            &c,
            &["`fs.read`", &s(&out.join("secret.txt"))],
            &["OUTSIDE-SECRET"],
        );
        let c = ws.call("p.fs_list", json!({"path": "./notes/out"}));
        refused(lang, &c, &["`fs.read`", &s(&out)], &["secret.txt"]);
        let c = ws.call(
            "p.fs_write",
            json!({"path": "./notes/out/new.txt", "content": "x"}),
        );
        refused(lang, &c, &["`fs.write`", &s(&out.join("new.txt"))], &[]);
        assert!(!out.join("new.txt").exists());
        let c = ws.call("p.fs_mkdir", json!({"path": "./notes/out/newdir"}));
        refused(lang, &c, &["`fs.write`"], &[]);
        assert!(!out.join("newdir").exists());
        let c = ws.call("p.fs_remove", json!({"path": "./notes/out/secret.txt"}));
        refused(lang, &c, &["`fs.write`"], &[]);
        assert!(out.join("secret.txt").exists());
    }
}

#[test]
fn fs_shared_prefix_folder_is_not_inside() {
    for lang in BOTH {
        let ws = fs_ws(lang).file("notes-evil/x", "EVIL-X");
        let c = ws.call("p.fs_read", json!({"path": "./notes-evil/x"}));
        refused(
            lang,
            &c,
            &["`fs.read`", &s(&ws.path("notes-evil/x"))],
            &["EVIL-X"],
        );
        let c = ws.call(
            "p.fs_write",
            json!({"path": "./notes-evil/y", "content": "x"}),
        );
        refused(lang, &c, &["`fs.write`", &s(&ws.path("notes-evil/y"))], &[]);
        assert!(!ws.path("notes-evil/y").exists());
        let c = ws.call("p.fs_list", json!({"path": "./notes-evil"}));
        refused(lang, &c, &["`fs.read`"], &[]);
    }
}

#[test]
fn fs_tilde_is_not_expanded_and_is_undeclared() {
    for lang in BOTH {
        let ws = fs_ws(lang);
        let c = ws.call("p.fs_read", json!({"path": "~/.ssh/id_rsa"}));
        // Never expanded: refused outright, saying so.
        let e = refused(
            lang,
            &c,
            &["invalid path \"~/.ssh/id_rsa\"", "`~` is not expanded"],
            &[],
        );
        if let Ok(home) = std::env::var("HOME")
            && !home.is_empty()
            && home != "/"
            && !ws.root.starts_with(&home)
        {
            assert!(
                !e.contains(&format!("{home}/.ssh")),
                "[{lang:?}] `~` was expanded: {e}"
            );
        }
        let c = ws.call("p.fs_write", json!({"path": "~/.bashrc", "content": "x"}));
        refused(
            lang,
            &c,
            &["invalid path \"~/.bashrc\"", "`~` is not expanded"],
            &[],
        );
        assert!(!ws.path("~").exists());
    }
}

#[test]
fn fs_write_through_dangling_symlink_creates_nothing_outside() {
    for lang in BOTH {
        let ws = fs_ws(lang);
        let (_keep, out) = outside();
        symlink(out.join("created.txt"), ws.path("notes/dangle-abs"));
        let name = out.file_name().unwrap().to_string_lossy().to_string();
        // notes/ -> workspace -> its parent -> the outside folder.
        symlink(
            format!("../../{name}/created-rel.txt"),
            ws.path("notes/dangle-rel"),
        );
        symlink("../created-ws.txt", ws.path("notes/dangle-ws"));
        for (link, target) in [
            ("./notes/dangle-abs", out.join("created.txt")),
            ("./notes/dangle-rel", out.join("created-rel.txt")),
            ("./notes/dangle-ws", ws.path("created-ws.txt")),
        ] {
            let c = ws.call("p.fs_write", json!({"path": link, "content": "ESCAPED"}));
            assert_ne!(
                c.status, 0,
                "[{lang:?}] write through {link} succeeded: {}",
                c.stdout
            );
            assert!(
                !target.exists(),
                "[{lang:?}] write through {link} created {}",
                target.display()
            );
            let c = ws.call("p.fs_append", json!({"path": link, "content": "ESCAPED"}));
            assert_ne!(
                c.status, 0,
                "[{lang:?}] append through {link} succeeded: {}",
                c.stdout
            );
            assert!(
                !target.exists(),
                "[{lang:?}] append through {link} created {}",
                target.display()
            );
            let c = ws.call("p.fs_mkdir", json!({"path": format!("{link}/sub")}));
            assert_ne!(
                c.status, 0,
                "[{lang:?}] mkdir through {link} succeeded: {}",
                c.stdout
            );
            assert!(
                !target.exists(),
                "[{lang:?}] mkdir through {link} created {}",
                target.display()
            );
        }
    }
}

#[test]
fn fs_policy_deny_on_a_subfolder_beats_the_allow_even_through_a_symlink() {
    for lang in BOTH {
        let policy = "[policy]\nallow = [\"fs.read:./notes\", \"fs.write:./notes\"]\ndeny = [\"fs.read:./notes/locked\"]\n";
        let ws = probe(lang, FS_CAPS, policy)
            .file("notes/open.txt", "OPEN")
            .file("notes/locked/x", "LOCKED-X");
        symlink("locked", ws.path("notes/alias"));
        symlink("locked/x", ws.path("notes/alias-x"));
        assert_eq!(
            ok(
                lang,
                &ws.call("p.fs_read", json!({"path": "./notes/open.txt"}))
            ),
            json!("OPEN")
        );
        let locked = s(&ws.path("notes/locked/x"));
        for path in [
            "./notes/locked/x",
            "./notes/alias/x",
            "./notes/alias-x",
            "./notes/open.txt/../locked/x",
        ] {
            let c = ws.call("p.fs_read", json!({"path": path}));
            refused(
                lang,
                &c,
                &[
                    "`fs.read`",
                    &locked,
                    "denied",
                    "skill `p`",
                    "policy deny `fs.read:./notes/locked`",
                ],
                &["LOCKED-X"],
            );
        }
        let c = ws.call("p.fs_list", json!({"path": "./notes/alias"}));
        refused(lang, &c, &["`fs.read`", "policy deny"], &["\"x\""]);
    }
}

#[test]
fn fs_remove_and_mkdir_outside_are_refused() {
    for lang in BOTH {
        let ws = fs_ws(lang).file("elsewhere/keep.txt", "KEEP");
        let (_keep, out) = outside();
        for path in [
            "./secret.txt".to_string(),
            "./notes/../secret.txt".to_string(),
            "./elsewhere/keep.txt".to_string(),
            s(&out.join("secret.txt")),
        ] {
            let c = ws.call("p.fs_remove", json!({"path": path}));
            refused(
                lang,
                &c,
                &["`fs.write`", "did not declare", "[capabilities]"],
                &[],
            );
        }
        assert!(ws.path("secret.txt").exists());
        assert!(ws.path("elsewhere/keep.txt").exists());
        assert!(out.join("secret.txt").exists());
        // The declared root itself cannot be removed either.
        let c = ws.call("p.fs_remove", json!({"path": "./notes"}));
        assert_ne!(
            c.status, 0,
            "[{lang:?}] removing the declared root succeeded"
        );
        assert!(ws.path("notes/a.txt").exists());
        for (path, made) in [
            ("./newdir".to_string(), ws.path("newdir")),
            ("./notes/../newdir2".to_string(), ws.path("newdir2")),
            ("./notes-x/y".to_string(), ws.path("notes-x")),
            (s(&out.join("newdir")), out.join("newdir")),
        ] {
            let c = ws.call("p.fs_mkdir", json!({"path": path}));
            refused(lang, &c, &["`fs.write`", &s(&made)], &[]);
            assert!(!made.exists(), "[{lang:?}] mkdir {path} created it");
        }
    }
}

/// A refusal names the capability and the path as written, never where a
/// link points (that would let a skill probe outside its scope).
#[test]
fn fs_dangling_symlink_refusal_names_the_capability_but_not_the_link_target() {
    for lang in BOTH {
        let ws = fs_ws(lang);
        let (_keep, out) = outside();
        symlink(out.join("created.txt"), ws.path("notes/dangle"));
        let c = ws.call(
            "p.fs_write",
            json!({"path": "./notes/dangle", "content": "x"}),
        );
        refused(
            lang,
            &c,
            &["`fs.write`", "notes/dangle", "symbolic link"],
            &[&s(&out), "created.txt"],
        );
        assert!(!out.join("created.txt").exists());
    }
}

// ---------------------------------------------------------------------------
// HTTP

fn http_ws(lang: Lang, server: &TestServer) -> Ws {
    let host = format!("127.0.0.1:{}", server.port);
    probe(
        lang,
        &format!("\"net.http\" = [\"{host}\"]"),
        &format!("[policy]\nallow = [\"net.http:{host}\"]\n"),
    )
}

#[test]
fn http_allowed_server_works() {
    let server = TestServer::start();
    for lang in BOTH {
        let ws = http_ws(lang, &server);
        let r = ok(
            lang,
            &ws.call("p.http_get", json!({"url": server.url("/text")})),
        );
        assert_eq!(r["status"], json!(200), "[{lang:?}] {r}");
        assert_eq!(r["body"], json!("hello"), "[{lang:?}] {r}");
        // A redirect that stays on the allowed server is followed.
        let url = server.url(&format!("/redirect?to={}", server.url("/json")));
        let r = ok(lang, &ws.call("p.http_get", json!({"url": url})));
        assert_eq!(r["body"], json!("{\"ok\":true}"), "[{lang:?}] {r}");
    }
}

#[test]
fn http_redirect_to_an_undeclared_port_is_refused() {
    let allowed = TestServer::start();
    let other = TestServer::start();
    for lang in BOTH {
        let ws = http_ws(lang, &allowed);
        // The second server is reachable when asked directly by a skill that may.
        let direct = http_ws(lang, &other);
        assert_eq!(
            ok(
                lang,
                &direct.call("p.http_get", json!({"url": other.url("/text")}))
            )["body"],
            json!("hello")
        );
        let url = allowed.url(&format!("/redirect?to={}", other.url("/text")));
        let c = ws.call("p.http_get", json!({"url": url}));
        refused(
            lang,
            &c,
            &[
                "`net.http`",
                &format!("127.0.0.1:{}", other.port),
                "skill `p`",
                "[capabilities]",
            ],
            &["hello"],
        );
    }
}

#[test]
fn http_redirect_to_cloud_metadata_is_refused() {
    let server = TestServer::start();
    for lang in BOTH {
        let ws = http_ws(lang, &server);
        for to in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/latest/meta-data/",
            "http://2852039166/latest/meta-data/",
        ] {
            let url = server.url(&format!("/redirect?to={to}"));
            let c = ws.call("p.http_get", json!({"url": url}));
            refused(lang, &c, &["`net.http`", "169.254.169.254"], &[]);
        }
    }
}

#[test]
fn http_non_http_schemes_are_refused() {
    let server = TestServer::start();
    for lang in BOTH {
        let ws = http_ws(lang, &server);
        for (url, scheme) in [
            ("file:///etc/passwd".to_string(), "\"file\""),
            (format!("ftp://127.0.0.1:{}/x", server.port), "\"ftp\""),
            ("gopher://127.0.0.1:70/_x".to_string(), "\"gopher\""),
        ] {
            let c = ws.call("p.http_get", json!({"url": url}));
            refused(lang, &c, &[scheme, "http:// and https://"], &["root:"]);
        }
        // A redirect to file:// is refused the same way.
        let url = server.url("/redirect?to=file:///etc/passwd");
        let c = ws.call("p.http_get", json!({"url": url}));
        refused(
            lang,
            &c,
            &["redirect", "\"file\"", "http:// and https://"],
            &["root:"],
        );
    }
}

#[test]
fn http_credentials_in_the_url_are_refused_without_echoing_the_password() {
    let server = TestServer::start();
    for lang in BOTH {
        let ws = http_ws(lang, &server);
        let url = format!("http://user:hunter2pass@127.0.0.1:{}/text", server.port);
        let c = ws.call("p.http_get", json!({"url": url}));
        refused(lang, &c, &["credentials", "header"], &["hunter2pass"]);
        // Through a redirect, too.
        let to = format!("http://admin:hunter2pass@127.0.0.1:{}/text", server.port);
        let c = ws.call(
            "p.http_get",
            json!({"url": server.url(&format!("/redirect?to={to}"))}),
        );
        refused(lang, &c, &["credentials"], &["hunter2pass"]);
        assert!(
            !audit(&ws).contains("hunter2pass"),
            "[{lang:?}] the audit log holds the password"
        );
    }
}

#[test]
fn http_a_name_that_resolves_to_loopback_needs_a_rule_naming_the_address() {
    let server = TestServer::start();
    for lang in BOTH {
        let port = server.port;
        let ws = probe(
            lang,
            &format!("\"net.http\" = [\"localhost:{port}\"]"),
            &format!("[policy]\nallow = [\"net.http:localhost:{port}\"]\n"),
        );
        let c = ws.call(
            "p.http_get",
            json!({"url": format!("http://localhost:{port}/text")}),
        );
        let e = refused(
            lang,
            &c,
            &["localhost", "non-public", "net.http:"],
            &["hello"],
        );
        // The refusal names every address `localhost` resolves to here
        // (the test asks the same system resolver keel does).
        let resolved: Vec<std::net::IpAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(&("localhost", port))
                .expect("resolve localhost")
                .map(|a| a.ip())
                .collect();
        assert!(!resolved.is_empty());
        for ip in &resolved {
            assert!(
                e.contains(&ip.to_string()),
                "[{lang:?}] does not name {ip} (localhost resolves to {resolved:?}): {e}"
            );
        }
        // With the address named in the manifest and the policy, it works.
        let ws = probe(
            lang,
            &format!("\"net.http\" = [\"localhost:{port}\", \"127.0.0.1:{port}\"]"),
            &format!(
                "[policy]\nallow = [\"net.http:localhost:{port}\", \"net.http:127.0.0.1:{port}\"]\n"
            ),
        );
        let r = ok(
            lang,
            &ws.call(
                "p.http_get",
                json!({"url": format!("http://localhost:{port}/text")}),
            ),
        );
        assert_eq!(r["body"], json!("hello"), "[{lang:?}] {r}");
        // Named in the manifest but not in the policy: the address is still refused.
        let ws = probe(
            lang,
            &format!("\"net.http\" = [\"localhost:{port}\", \"127.0.0.1:{port}\"]"),
            &format!("[policy]\nallow = [\"net.http:localhost:{port}\"]\n"),
        );
        let c = ws.call(
            "p.http_get",
            json!({"url": format!("http://localhost:{port}/text")}),
        );
        refused(
            lang,
            &c,
            &["`net.http`", &format!("127.0.0.1:{port}"), "keel grant"],
            &["hello"],
        );
    }
}

#[test]
fn http_alternative_loopback_spellings_are_refused() {
    let server = TestServer::start();
    let port = server.port;
    for lang in BOTH {
        let ws = probe(
            lang,
            "\"net.http\" = [\"example.com\"]",
            "[policy]\nallow = [\"net.http:example.com\"]\n",
        );
        for url in [
            format!("http://2130706433:{port}/text"),
            format!("http://0x7f.1:{port}/text"),
            format!("http://0177.0.0.1:{port}/text"),
            format!("http://127.1:{port}/text"),
            format!("http://[::ffff:127.0.0.1]:{port}/text"),
            format!("http://[::ffff:7f00:1]:{port}/text"),
        ] {
            let c = ws.call("p.http_get", json!({"url": url}));
            refused(
                lang,
                &c,
                &["`net.http`", &format!("`127.0.0.1:{port}`"), "skill `p`"],
                &["hello"],
            );
        }
        // `example.com@127.0.0.1` is credentials, not the host example.com.
        let c = ws.call(
            "p.http_get",
            json!({"url": format!("http://example.com@127.0.0.1:{port}/text")}),
        );
        refused(lang, &c, &["credentials"], &["hello"]);
    }
}

#[test]
fn http_star_never_reaches_loopback_or_metadata() {
    let server = TestServer::start();
    let port = server.port;
    for lang in BOTH {
        let ws = probe(
            lang,
            "\"net.http\" = [\"*\"]",
            "[policy]\nallow = [\"net.http:*\"]\n",
        );
        for url in [
            server.url("/text"),
            format!("http://localhost:{port}/text"),
            format!("http://[::1]:{port}/text"),
            format!("http://0x7f000001:{port}/text"),
            "http://169.254.169.254/latest/meta-data/".to_string(),
            format!("http://0.0.0.0:{port}/text"),
        ] {
            let c = ws.call("p.http_get", json!({"url": url}));
            refused(lang, &c, &["non-public", "net.http:"], &["hello"]);
        }
    }
}

#[test]
fn http_query_string_secrets_stay_out_of_errors_and_the_audit_log() {
    let allowed = TestServer::start();
    let other = TestServer::start();
    for lang in BOTH {
        let ws = http_ws(lang, &allowed);
        // Undeclared host.
        let c = ws.call(
            "p.http_get",
            json!({"url": other.url("/text?token=s3cr3t")}),
        );
        refused(
            lang,
            &c,
            &["`net.http`", &format!("127.0.0.1:{}", other.port)],
            &["s3cr3t"],
        );
        // Redirect to an undeclared host with a secret in the query.
        let to = other.url("/x?token=s3cr3t");
        let c = ws.call(
            "p.http_get",
            json!({"url": allowed.url(&format!("/redirect?to={to}"))}),
        );
        refused(lang, &c, &["`net.http`"], &["s3cr3t"]);
        // Redirect to a non-http scheme.
        let c = ws.call(
            "p.http_get",
            json!({"url": allowed.url("/redirect?to=ftp://h/x?token=s3cr3t")}),
        );
        refused(lang, &c, &["\"ftp\""], &["s3cr3t"]);
        // Allowed host, refused connection (nothing listens on the closed port).
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let ws2 = probe(
            lang,
            &format!("\"net.http\" = [\"127.0.0.1:{closed}\"]"),
            &format!("[policy]\nallow = [\"net.http:127.0.0.1:{closed}\"]\n"),
        );
        let c = ws2.call(
            "p.http_get",
            json!({"url": format!("http://127.0.0.1:{closed}/x?token=s3cr3t")}),
        );
        refused(lang, &c, &[], &["s3cr3t"]);
        assert!(
            !audit(&ws2).contains("s3cr3t"),
            "[{lang:?}] audit holds the query"
        );
        // An allowed request with a secret in the query succeeds (404 here).
        let r = ok(
            lang,
            &ws.call(
                "p.http_get",
                json!({"url": allowed.url("/text?token=s3cr3t")}),
            ),
        );
        assert_eq!(r["status"], json!(404), "[{lang:?}] {r}");
        let log = audit(&ws);
        assert!(
            log.contains("net.http"),
            "[{lang:?}] audit has no net.http entry: {log}"
        );
        assert!(
            !log.contains("s3cr3t"),
            "[{lang:?}] audit holds the query: {log}"
        );
    }
}

// ---------------------------------------------------------------------------
// exec

/// Writes an executable fixture into the workspace that prints each argument
/// on its own line between angle brackets; returns its canonical path.
fn argv_fixture(ws: &Ws) -> String {
    ws.write(
        "bin/argv.sh",
        "#!/bin/sh\nfor a in \"$@\"; do printf '<%s>\\n' \"$a\"; done\n",
    );
    let p = ws.path("bin/argv.sh");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    s(&p.canonicalize().expect("canonical"))
}

/// The canonical path of `env`, as exec rules must name it.
fn env_program() -> String {
    s(&Path::new("/usr/bin/env")
        .canonicalize()
        .expect("/usr/bin/env"))
}

#[test]
fn exec_an_undeclared_program_is_refused() {
    for lang in BOTH {
        let ws = probe(
            lang,
            "\"exec\" = [\"echo\"]",
            "[policy]\nallow = [\"exec:echo\"]\n",
        );
        let r = ok(lang, &ws.call("p.run", json!({"argv": ["echo", "hi"]})));
        assert_eq!(r["stdout"], json!("hi\n"), "[{lang:?}] {r}");
        for argv in [
            json!(["sh", "-c", "touch pwned"]),
            json!(["/bin/sh", "-c", "touch pwned"]),
        ] {
            let prog = argv[0].as_str().unwrap().to_string();
            let shown = if prog.starts_with('/') {
                s(&Path::new(&prog).canonicalize().unwrap())
            } else {
                prog
            };
            let c = ws.call("p.run", json!({"argv": argv}));
            refused(
                lang,
                &c,
                &[
                    "`exec`",
                    &format!("`{shown}`"),
                    "did not declare",
                    "[capabilities]",
                    "skill.toml",
                ],
                &[],
            );
        }
        assert!(!ws.path("pwned").exists());
        // A relative program path is not a way around the PATH lookup.
        ws.write("echo", "#!/bin/sh\ntouch pwned\n");
        let c = ws.call("p.run", json!({"argv": ["./echo"]}));
        refused(lang, &c, &["absolute path"], &[]);
        assert!(!ws.path("pwned").exists());
    }
}

#[test]
fn exec_declared_but_not_allowed_is_refused_with_a_grant_hint() {
    for lang in BOTH {
        // Default policy: ask, and nobody can answer a `keel call`.
        let ws = probe(lang, "\"exec\" = [\"echo\"]", "");
        let c = ws.call("p.run", json!({"argv": ["echo", "hi"]}));
        refused(
            lang,
            &c,
            &["`exec`", "`echo`", "skill `p`", "keel grant p exec:echo"],
            &[],
        );
        // Default deny: refused; an operator grant then lets it through.
        let ws = probe(
            lang,
            "\"exec\" = [\"echo\"]",
            "[policy]\ndefault = \"deny\"\n",
        );
        let c = ws.call("p.run", json!({"argv": ["echo", "hi"]}));
        refused(lang, &c, &["`exec`", "`echo`", "skill `p`", "denied"], &[]);
        let g = ws.run(&["grant", "p", "exec:echo"]);
        assert_eq!(g.status, 0, "{}", g.stderr);
        let r = ok(lang, &ws.call("p.run", json!({"argv": ["echo", "hi"]})));
        assert_eq!(r["stdout"], json!("hi\n"), "[{lang:?}] {r}");
    }
}

#[test]
fn exec_refused_by_the_default_deny_says_how_to_grant() {
    for lang in BOTH {
        let ws = probe(
            lang,
            "\"exec\" = [\"echo\"]",
            "[policy]\ndefault = \"deny\"\n",
        );
        let c = ws.call("p.run", json!({"argv": ["echo", "hi"]}));
        refused(
            lang,
            &c,
            &["`exec`", "`echo`", "keel grant p exec:echo"],
            &[],
        );
    }
}

#[test]
fn exec_shell_metacharacters_reach_the_program_literally() {
    let nasty = [
        "; rm -rf victim",
        "$(touch pwned1)",
        "`touch pwned2`",
        "| cat /etc/passwd",
        "&& echo hi",
        "> clobber.txt",
        "$HOME",
        "*",
        "a b\tc",
    ];
    for lang in BOTH {
        let ws = probe(lang, "", "");
        let fixture = argv_fixture(&ws);
        let ws = probe_rewrite(
            ws,
            lang,
            &format!("\"exec\" = [\"printf\", \"{fixture}\"]"),
            &format!("[policy]\nallow = [\"exec:printf\", \"exec:{fixture}\"]\n"),
        );
        std::fs::create_dir_all(ws.path("victim")).unwrap();
        ws.write("victim/keep.txt", "KEEP");

        let mut argv = vec![json!("printf"), json!("%s\\n")];
        argv.extend(nasty.iter().map(|a| json!(a)));
        let r = ok(lang, &ws.call("p.run", json!({"argv": argv})));
        let want: String = nasty.iter().map(|a| format!("{a}\n")).collect();
        assert_eq!(r["stdout"], json!(want), "[{lang:?}] {r}");

        let mut argv = vec![json!(fixture)];
        argv.extend(nasty.iter().map(|a| json!(a)));
        let r = ok(lang, &ws.call("p.run", json!({"argv": argv})));
        let want: String = nasty.iter().map(|a| format!("<{a}>\n")).collect();
        assert_eq!(r["stdout"], json!(want), "[{lang:?}] {r}");

        assert!(ws.path("victim/keep.txt").exists(), "[{lang:?}] rm ran");
        for f in ["pwned1", "pwned2", "clobber.txt"] {
            assert!(!ws.path(f).exists(), "[{lang:?}] a shell ran: {f} exists");
        }
    }
}

#[test]
fn exec_the_child_environment_is_cleared() {
    const SECRET: (&str, &str) = ("SECRET_TOKEN", "xyz-child-secret");
    let env = env_program();
    for lang in BOTH {
        let caps = format!("\"exec\" = [\"env\", \"{env}\"]");
        let allow_exec = format!("\"exec:env\", \"exec:{env}\"");
        // Nothing declared: the child sees nothing at all.
        let ws = probe(lang, &caps, &format!("[policy]\nallow = [{allow_exec}]\n"));
        for prog in ["env", env.as_str()] {
            let r = ok(
                lang,
                &call_env(&ws, "p.run", json!({"argv": [prog]}), &[SECRET]),
            );
            assert_eq!(
                r["stdout"],
                json!(""),
                "[{lang:?}] {prog} saw an environment: {r}"
            );
        }
        // Declared, but the policy does not allow it outright.
        let ws = probe(
            lang,
            &format!("{caps}\n\"env\" = [\"SECRET_TOKEN\"]"),
            &format!("[policy]\nallow = [{allow_exec}]\n"),
        );
        let r = ok(
            lang,
            &call_env(&ws, "p.run", json!({"argv": [env]}), &[SECRET]),
        );
        assert!(
            !r.to_string().contains("xyz-child-secret"),
            "[{lang:?}] {r}"
        );
        // Allowed by policy but not declared by the skill.
        let ws = probe(
            lang,
            &caps,
            &format!("[policy]\nallow = [{allow_exec}, \"env:SECRET_TOKEN\"]\n"),
        );
        let r = ok(
            lang,
            &call_env(&ws, "p.run", json!({"argv": [env]}), &[SECRET]),
        );
        assert!(
            !r.to_string().contains("xyz-child-secret"),
            "[{lang:?}] {r}"
        );
        // Declared, allowed for the skill, but a global deny wins.
        let ws = probe(
            lang,
            &format!("{caps}\n\"env\" = [\"SECRET_TOKEN\"]"),
            &format!(
                "[policy]\nallow = [{allow_exec}]\ndeny = [\"env:*TOKEN*\"]\n\n[policy.skills.p]\nallow = [\"env:SECRET_TOKEN\"]\n"
            ),
        );
        let r = ok(
            lang,
            &call_env(&ws, "p.run", json!({"argv": [env]}), &[SECRET]),
        );
        assert!(
            !r.to_string().contains("xyz-child-secret"),
            "[{lang:?}] {r}"
        );
        // Declared and allowed: passed on, and only that.
        let ws = probe(
            lang,
            &format!("{caps}\n\"env\" = [\"SECRET_TOKEN\"]"),
            &format!("[policy]\nallow = [{allow_exec}, \"env:SECRET_TOKEN\"]\n"),
        );
        let r = ok(
            lang,
            &call_env(
                &ws,
                "p.run",
                json!({"argv": [env]}),
                &[SECRET, ("OTHER_VAR", "other")],
            ),
        );
        assert_eq!(
            r["stdout"],
            json!("SECRET_TOKEN=xyz-child-secret\n"),
            "[{lang:?}] {r}"
        );
    }
}

#[test]
fn exec_an_absolute_path_must_be_declared_by_that_exact_path() {
    let env = env_program();
    for lang in BOTH {
        // Declared by name: the absolute path is another program.
        let ws = probe(
            lang,
            "\"exec\" = [\"env\"]",
            "[policy]\nallow = [\"exec:*\"]\n",
        );
        let c = ws.call("p.run", json!({"argv": [env]}));
        refused(
            lang,
            &c,
            &["`exec`", &format!("`{env}`"), "did not declare"],
            &[],
        );
        // Declared by path: the bare name is another program.
        let ws = probe(
            lang,
            &format!("\"exec\" = [\"{env}\"]"),
            "[policy]\nallow = [\"exec:*\"]\n",
        );
        assert_eq!(
            ok(lang, &ws.call("p.run", json!({"argv": [env]})))["success"],
            json!(true)
        );
        let c = ws.call("p.run", json!({"argv": ["env"]}));
        refused(lang, &c, &["`exec`", "`env`", "did not declare"], &[]);
        // `..` spellings resolve to the file they name.
        let dotted = format!(
            "/usr/bin/../bin/{}",
            Path::new(&env).file_name().unwrap().to_string_lossy()
        );
        if Path::new(&dotted).canonicalize().ok().map(|p| s(&p)) == Some(env.clone()) {
            assert_eq!(
                ok(lang, &ws.call("p.run", json!({"argv": [dotted]})))["success"],
                json!(true)
            );
        }
        // A symlink declared by its own path does not smuggle in its target.
        let ws = probe(lang, "", "");
        let link = ws.path("bin/myenv");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(&env, &link);
        let ws = probe_rewrite(
            ws,
            lang,
            &format!("\"exec\" = [\"{}\"]", link.display()),
            "[policy]\nallow = [\"exec:*\"]\n",
        );
        let c = ws.call("p.run", json!({"argv": [s(&link)]}));
        refused(
            lang,
            &c,
            &["`exec`", &format!("`{env}`"), "did not declare"],
            &[],
        );
    }
}

/// Rewrites the probe skill's manifest and the policy in an existing workspace.
fn probe_rewrite(ws: Ws, lang: Lang, caps: &str, policy: &str) -> Ws {
    ws.write(
        "skills/p/skill.toml",
        &manifest("p", lang.entry(), "", caps, PROBE_TOOLS),
    );
    ws.policy(policy)
}

#[test]
fn exec_cwd_must_be_readable_by_the_skill() {
    for lang in BOTH {
        let ws = probe(
            lang,
            "\"exec\" = [\"pwd\"]\n\"fs.read\" = [\"./notes\"]",
            "[policy]\nallow = [\"exec:pwd\", \"fs.read:./notes\"]\n",
        )
        .file("notes/a.txt", "x");
        let r = ok(
            lang,
            &ws.call("p.run_in", json!({"argv": ["pwd"], "cwd": "./notes"})),
        );
        assert_eq!(
            r["stdout"],
            json!(format!("{}\n", ws.path("notes").display())),
            "[{lang:?}] {r}"
        );
        for cwd in ["/", "./notes/..", "/etc"] {
            let c = ws.call("p.run_in", json!({"argv": ["pwd"], "cwd": cwd}));
            refused(lang, &c, &["`fs.read`", "did not declare"], &[]);
        }
    }
}

// ---------------------------------------------------------------------------
// env

const ENV_SECRET: (&str, &str) = ("SECRET_TOKEN", "xyz-env-secret-value");

#[test]
fn env_an_undeclared_variable_is_refused() {
    for lang in BOTH {
        let ws = probe(
            lang,
            "\"env\" = [\"HOME_ISH\"]",
            "[policy]\nallow = [\"env:*\"]\n",
        );
        let c = call_env(
            &ws,
            "p.env_get",
            json!({"name": "SECRET_TOKEN"}),
            &[ENV_SECRET],
        );
        refused(
            lang,
            &c,
            &[
                "`env`",
                "`SECRET_TOKEN`",
                "did not declare",
                "\"env\" = [\"SECRET_TOKEN\"]",
            ],
            &[ENV_SECRET.1],
        );
        // A pattern that looks like a wildcard is just a name to the script.
        let c = call_env(&ws, "p.env_get", json!({"name": "*"}), &[ENV_SECRET]);
        refused(lang, &c, &["`env`"], &[ENV_SECRET.1]);
        assert!(
            !audit(&ws).contains(ENV_SECRET.1),
            "[{lang:?}] audit holds the value"
        );
    }
}

#[test]
fn env_declared_and_allowed_is_readable() {
    for lang in BOTH {
        let ws = probe(
            lang,
            "\"env\" = [\"SECRET_TOKEN\"]",
            "[policy]\nallow = [\"env:SECRET_TOKEN\"]\n",
        );
        let r = ok(
            lang,
            &call_env(
                &ws,
                "p.env_get",
                json!({"name": "SECRET_TOKEN"}),
                &[ENV_SECRET],
            ),
        );
        assert_eq!(r, json!(ENV_SECRET.1), "[{lang:?}]");
        let log = audit(&ws);
        assert!(
            log.contains("SECRET_TOKEN"),
            "[{lang:?}] the audit names the variable: {log}"
        );
        assert!(
            !log.contains(ENV_SECRET.1),
            "[{lang:?}] the audit holds the value: {log}"
        );
    }
}

#[test]
fn env_a_policy_deny_beats_a_skill_level_allow_and_a_grant() {
    for lang in BOTH {
        let ws = probe(
            lang,
            "\"env\" = [\"SECRET_TOKEN\"]",
            "[policy]\ndeny = [\"env:*TOKEN*\"]\n\n[policy.skills.p]\nallow = [\"env:SECRET_TOKEN\"]\n",
        );
        let c = call_env(
            &ws,
            "p.env_get",
            json!({"name": "SECRET_TOKEN"}),
            &[ENV_SECRET],
        );
        refused(
            lang,
            &c,
            &[
                "`env`",
                "`SECRET_TOKEN`",
                "denied",
                "skill `p`",
                "policy deny `env:*TOKEN*`",
            ],
            &[ENV_SECRET.1],
        );
        let g = ws.run(&["grant", "p", "env:SECRET_TOKEN"]);
        assert_eq!(g.status, 0, "{}", g.stderr);
        let c = call_env(
            &ws,
            "p.env_get",
            json!({"name": "SECRET_TOKEN"}),
            &[ENV_SECRET],
        );
        refused(lang, &c, &["policy deny `env:*TOKEN*`"], &[ENV_SECRET.1]);
        // Ask, with nobody to answer: refused, value absent.
        let ws = probe(lang, "\"env\" = [\"SECRET_TOKEN\"]", "");
        let c = call_env(
            &ws,
            "p.env_get",
            json!({"name": "SECRET_TOKEN"}),
            &[ENV_SECRET],
        );
        refused(
            lang,
            &c,
            &["`env`", "`SECRET_TOKEN`", "keel grant p env:SECRET_TOKEN"],
            &[ENV_SECRET.1],
        );
        assert!(
            !audit(&ws).contains(ENV_SECRET.1),
            "[{lang:?}] audit holds the value"
        );
    }
}

// ---------------------------------------------------------------------------
// Load phase

#[test]
fn host_functions_are_unavailable_while_a_skill_loads() {
    let cases = [
        (
            Lang::Luau,
            "local text = keel.fs.read(\"./notes/a.txt\")\nlocal M = {}\nfunction M.t(a) return text end\nreturn M\n",
        ),
        (
            Lang::Luau,
            "keel.fs.write(\"./notes/loaded.txt\", \"x\")\nlocal M = {}\nfunction M.t(a) return 1 end\nreturn M\n",
        ),
        (
            Lang::Rhai,
            "let text = keel::fs::read(\"./notes/a.txt\");\nfn t(a) { 1 }\n",
        ),
        (
            Lang::Rhai,
            "keel::fs::write(\"./notes/loaded.txt\", \"x\");\nfn t(a) { 1 }\n",
        ),
    ];
    for (lang, src) in cases {
        let ws = Ws::new()
            .skill(
                "p",
                &manifest("p", lang.entry(), "", FS_CAPS, &["t"]),
                &[(lang.entry(), src)],
            )
            .policy(FS_POLICY)
            .file("notes/a.txt", "NOTE-A");
        let c = ws.call("p.t", json!({}));
        refused(
            lang,
            &c,
            &["not available while the skill loads", "fs"],
            &["NOTE-A"],
        );
        assert!(
            !ws.path("notes/loaded.txt").exists(),
            "[{lang:?}] the load phase wrote a file"
        );
    }
}

// ---------------------------------------------------------------------------
// Library authority: `require`/`import` runs with the caller's grants,
// `keel.tools.call` with the callee's, and needs `tools.call`.

const LIB_LUAU: &str = r#"
local M = {}
function M.read_secret(a) return keel.fs.read("./secret/s.txt") end
return M
"#;
const APP_LUAU: &str = r#"
local lib = require("lib")
local M = {}
function M.via_require(a) return lib.read_secret({}) end
function M.via_tool(a) return keel.tools.call("lib.read_secret", {}) end
return M
"#;
const LIB_RHAI: &str = "fn read_secret(a) { keel::fs::read(\"./secret/s.txt\") }\n";
const APP_RHAI: &str = r#"
import "lib" as lib;
fn via_require(a) { lib::read_secret(#{}) }
fn via_tool(a) { keel::tools::call("lib.read_secret", #{}) }
"#;

fn lib_app(lang: Lang, app_caps: &str, policy_extra: &str) -> Ws {
    let (lib_src, app_src) = match lang {
        Lang::Luau => (LIB_LUAU, APP_LUAU),
        Lang::Rhai => (LIB_RHAI, APP_RHAI),
    };
    Ws::new()
        .skill(
            "lib",
            &manifest(
                "lib",
                lang.entry(),
                "",
                "\"fs.read\" = [\"./secret\"]",
                &["read_secret"],
            ),
            &[(lang.entry(), lib_src)],
        )
        .skill(
            "app",
            &manifest(
                "app",
                lang.entry(),
                "lib = \"^1\"",
                app_caps,
                &["via_require", "via_tool"],
            ),
            &[(lang.entry(), app_src)],
        )
        .policy(&format!(
            "[policy.skills.lib]\nallow = [\"fs.read:./secret\"]\n\n{policy_extra}"
        ))
        .file("secret/s.txt", "LIB-SECRET")
}

#[test]
fn a_required_library_runs_with_its_callers_authority() {
    for lang in BOTH {
        let ws = lib_app(lang, "", "");
        assert_eq!(
            ok(lang, &ws.call("lib.read_secret", json!({}))),
            json!("LIB-SECRET")
        );
        let c = ws.call("app.via_require", json!({}));
        refused(
            lang,
            &c,
            &[
                "skill `app`",
                "`fs.read`",
                &s(&ws.path("secret/s.txt")),
                "did not declare",
            ],
            &["LIB-SECRET"],
        );
        // Declaring it is not enough: the policy allows it for `lib` only.
        let ws = lib_app(lang, "\"fs.read\" = [\"./secret\"]", "");
        let c = ws.call("app.via_require", json!({}));
        refused(
            lang,
            &c,
            &[
                "skill `app`",
                "`fs.read`",
                "keel grant app fs.read:./secret",
            ],
            &["LIB-SECRET"],
        );
    }
}

#[test]
fn tools_call_runs_the_callee_with_its_own_authority_and_needs_tools_call() {
    for lang in BOTH {
        // Not declared.
        let ws = lib_app(
            lang,
            "",
            "[policy.skills.app]\nallow = [\"tools.call:lib.read_secret\"]\n",
        );
        let c = ws.call("app.via_tool", json!({}));
        refused(
            lang,
            &c,
            &[
                "skill `app`",
                "`tools.call`",
                "`lib.read_secret`",
                "\"tools.call\" = [\"lib.read_secret\"]",
            ],
            &["LIB-SECRET"],
        );
        // Declared but not allowed.
        let ws = lib_app(lang, "\"tools.call\" = [\"lib.read_secret\"]", "");
        let c = ws.call("app.via_tool", json!({}));
        refused(
            lang,
            &c,
            &[
                "skill `app`",
                "`tools.call`",
                "keel grant app tools.call:lib.read_secret",
            ],
            &["LIB-SECRET"],
        );
        // Declared for another tool only.
        let ws = lib_app(
            lang,
            "\"tools.call\" = [\"lib.other\"]",
            "[policy.skills.app]\nallow = [\"tools.call:*\"]\n",
        );
        let c = ws.call("app.via_tool", json!({}));
        refused(
            lang,
            &c,
            &["`tools.call`", "`lib.read_secret`"],
            &["LIB-SECRET"],
        );
        // Declared and allowed: the callee reads with its own grants.
        let ws = lib_app(
            lang,
            "\"tools.call\" = [\"lib.read_secret\"]",
            "[policy.skills.app]\nallow = [\"tools.call:lib.read_secret\"]\n",
        );
        assert_eq!(
            ok(lang, &ws.call("app.via_tool", json!({}))),
            json!("LIB-SECRET")
        );
        // ...which still lends nothing to `require`.
        let c = ws.call("app.via_require", json!({}));
        refused(lang, &c, &["skill `app`", "`fs.read`"], &["LIB-SECRET"]);
    }
}

// ---------------------------------------------------------------------------
// The script sandbox: no way to compile text, reach another environment or
// load a file other than the skill's own scripts and its dependencies.

const LUAU_SANDBOX: &str = r#"
local M = {}
function M.globals(a)
    local out = {}
    for _, name in { "getfenv", "setfenv", "loadstring", "load", "dofile", "loadfile", "io", "package", "module" } do
        out[name] = rawget(_G, name) ~= nil
    end
    out.os_execute = os.execute ~= nil
    out.os_getenv = os.getenv ~= nil
    out.os_remove = os.remove ~= nil
    out.string_dump = string.dump ~= nil
    out.call_getfenv = (pcall(function() return getfenv(2) end))
    out.call_setfenv = (pcall(function() setfenv(1, {}) end))
    out.call_loadstring = (pcall(function() return loadstring("return 1")() end))
    out.call_load = (pcall(function() return load("return 1")() end))
    out.call_dofile = (pcall(function() return dofile("/etc/passwd") end))
    out.tamper_keel = (pcall(function() keel.fs = nil end))
    return out
end
function M.req(a) return require(a.name) end
return M
"#;

#[test]
fn luau_has_no_getfenv_setfenv_loadstring_load_or_file_loaders() {
    let ws = Ws::new()
        .skill(
            "p",
            &manifest("p", "main.luau", "", "", &["globals", "req"]),
            &[("main.luau", LUAU_SANDBOX)],
        )
        .policy("");
    let r = ok(Lang::Luau, &ws.call("p.globals", json!({})));
    let obj = r.as_object().expect("a table");
    assert!(obj.len() >= 16, "{r}");
    for (k, v) in obj {
        assert_eq!(
            v,
            &json!(false),
            "`{k}` is available in the Luau sandbox: {r}"
        );
    }
}

#[test]
fn luau_require_reaches_only_the_skills_own_files_and_dependencies() {
    let (_keep, out) = outside();
    std::fs::write(out.join("evil.luau"), "return { pwned = true }").unwrap();
    let ws = Ws::new()
        .skill(
            "p",
            &manifest("p", "main.luau", "", "", &["globals", "req"]),
            &[
                ("main.luau", LUAU_SANDBOX),
                ("util.luau", "return { ok = true }"),
            ],
        )
        .skill(
            "other",
            &manifest("other", "main.luau", "", "", &["t"]),
            &[(
                "main.luau",
                "local M = {}\nfunction M.t(a) return 1 end\nreturn M\n",
            )],
        )
        .file("skills/x.luau", "return { pwned = true }")
        .file("x.luau", "return { pwned = true }")
        .policy("");
    symlink(out.join("evil.luau"), ws.path("skills/p/evil.luau"));
    // The skill's own file works.
    assert_eq!(
        ok(Lang::Luau, &ws.call("p.req", json!({"name": "./util"}))),
        json!({"ok": true})
    );
    for name in [
        "/etc/passwd",
        "../x",
        "x",
        "other",
        "../other/main",
        "keel.toml",
    ] {
        let c = ws.call("p.req", json!({"name": name}));
        refused(
            Lang::Luau,
            &c,
            &[
                &format!("require(\"{name}\")"),
                "not found",
                "declared dependencies",
            ],
            &["pwned", "root:"],
        );
    }
    for name in [
        "./../x",
        "./../other/main",
        "./../../x",
        "./sub/../../x",
        "./../../keel",
    ] {
        let c = ws.call("p.req", json!({"name": name}));
        refused(
            Lang::Luau,
            &c,
            &[&format!("require(\"{name}\")"), "inside the skill's folder"],
            &["pwned"],
        );
    }
    // A symlink in the skill's folder is not followed out of it.
    let c = ws.call("p.req", json!({"name": "./evil"}));
    refused(Lang::Luau, &c, &["require(\"./evil\")"], &["pwned"]);
}

/// One Rhai skill per escape: `compile_into_self_contained` resolves every
/// static `import` when the skill loads, so one bad import fails its whole
/// skill (which is itself a refusal).
const RHAI_ESCAPES: [(&str, &[&str]); 10] = [
    (
        "import \"/etc/passwd\" as p; 1",
        &[
            "import \"/etc/passwd\"",
            "not found",
            "declared dependencies",
        ],
    ),
    ("import \"../x\" as x; 1", &["import \"../x\"", "not found"]),
    (
        "import \"./../x\" as x; 1",
        &["import \"./../x\"", "inside the skill's folder"],
    ),
    (
        "import \"./../other/main\" as x; 1",
        &["import \"./../other/main\"", "inside the skill's folder"],
    ),
    (
        "import \"other\" as x; 1",
        &["import \"other\"", "not found"],
    ),
    ("import \"./evil\" as x; x::pwned()", &["import \"./evil\""]),
    (
        "eval(\"import \\\"/etc/passwd\\\" as p; 1\")",
        &["keyword 'eval' is disabled"],
    ),
    (
        "eval(\"import \\\"./../x\\\" as x; x::pwned()\")",
        &["keyword 'eval' is disabled"],
    ),
    (
        "eval(\"import \\\"./evil\\\" as x; x::pwned()\")",
        &["keyword 'eval' is disabled"],
    ),
    (
        "eval(\"keel::fs::read(\\\"/etc/passwd\\\")\")",
        &["keyword 'eval' is disabled"],
    ),
];

#[test]
fn rhai_import_and_eval_reach_only_the_skills_own_files_and_dependencies() {
    let (_keep, out) = outside();
    std::fs::write(out.join("evil.rhai"), "fn pwned() { \"pwned\" }").unwrap();
    let mut ws = Ws::new()
        .skill(
            "own",
            &manifest("own", "main.rhai", "", "", &["t"]),
            &[
                (
                    "main.rhai",
                    "import \"./util\" as u;\nfn t(a) { u::value() }\n",
                ),
                ("util.rhai", "fn value() { 42 }"),
            ],
        )
        .skill(
            "other",
            &manifest("other", "main.rhai", "", "", &["t"]),
            &[("main.rhai", "fn t(a) { 1 }\nfn pwned() { \"pwned\" }")],
        )
        .file("skills/x.rhai", "fn pwned() { \"pwned\" }")
        .file("x.rhai", "fn pwned() { \"pwned\" }")
        .policy("");
    for (i, (body, _)) in RHAI_ESCAPES.iter().enumerate() {
        let name = format!("r{i}");
        ws = ws.skill(
            &name,
            &manifest(&name, "main.rhai", "", "", &["t"]),
            &[("main.rhai", &format!("fn t(a) {{ {body} }}\n"))],
        );
        symlink(
            out.join("evil.rhai"),
            ws.path(&format!("skills/{name}/evil.rhai")),
        );
    }
    assert_eq!(ok(Lang::Rhai, &ws.call("own.t", json!({}))), json!(42));
    for (i, (body, must)) in RHAI_ESCAPES.iter().enumerate() {
        let c = ws.call(&format!("r{i}.t"), json!({}));
        assert_ne!(c.status, 0, "`{body}` succeeded: {}", c.stdout);
        refused(Lang::Rhai, &c, must, &["pwned", "root:"]);
    }
}

#[test]
fn fs_dangling_symlink_into_a_write_denied_subfolder_creates_nothing_there() {
    for lang in BOTH {
        let policy = "[policy]\nallow = [\"fs.read:./notes\", \"fs.write:./notes\"]\ndeny = [\"fs.write:./notes/locked\"]\n";
        let ws = probe(lang, FS_CAPS, policy).file("notes/locked/keep.txt", "KEEP");
        // Direct writes into the denied folder are refused.
        let c = ws.call(
            "p.fs_write",
            json!({"path": "./notes/locked/direct.txt", "content": "x"}),
        );
        refused(
            lang,
            &c,
            &["`fs.write`", "policy deny `fs.write:./notes/locked`"],
            &[],
        );
        assert!(!ws.path("notes/locked/direct.txt").exists());
        // A dangling link that stays beneath ./notes but lands in ./notes/locked.
        symlink("locked/created.txt", ws.path("notes/d-file"));
        let c = ws.call(
            "p.fs_write",
            json!({"path": "./notes/d-file", "content": "ESCAPED"}),
        );
        assert_ne!(
            c.status, 0,
            "[{lang:?}] write through notes/d-file succeeded"
        );
        assert!(
            !ws.path("notes/locked/created.txt").exists(),
            "[{lang:?}] a write through a dangling link created a file in a write-denied folder ({})",
            c.stderr.trim()
        );
        let c = ws.call(
            "p.fs_append",
            json!({"path": "./notes/d-file", "content": "ESCAPED"}),
        );
        assert_ne!(
            c.status, 0,
            "[{lang:?}] append through notes/d-file succeeded"
        );
        assert!(
            !ws.path("notes/locked/created.txt").exists(),
            "[{lang:?}] append created the file"
        );
    }
}

#[test]
fn fs_mkdir_through_a_dangling_symlink_into_a_write_denied_subfolder_creates_nothing_there() {
    for lang in BOTH {
        let policy = "[policy]\nallow = [\"fs.read:./notes\", \"fs.write:./notes\"]\ndeny = [\"fs.write:./notes/locked\"]\n";
        let ws = probe(lang, FS_CAPS, policy).file("notes/locked/keep.txt", "KEEP");
        let c = ws.call("p.fs_mkdir", json!({"path": "./notes/locked/direct"}));
        refused(
            lang,
            &c,
            &["`fs.write`", "policy deny `fs.write:./notes/locked`"],
            &[],
        );
        symlink("locked/newdir", ws.path("notes/d-dir"));
        let c = ws.call("p.fs_mkdir", json!({"path": "./notes/d-dir/sub"}));
        assert!(
            !ws.path("notes/locked/newdir").exists(),
            "[{lang:?}] mkdir through a dangling link created a folder in a write-denied folder (status {}, {})",
            c.status,
            c.stderr.trim()
        );
        let c = ws.call("p.fs_mkdir", json!({"path": "./notes/d-dir"}));
        assert!(
            !ws.path("notes/locked/newdir").exists(),
            "[{lang:?}] mkdir of a dangling link created a folder in a write-denied folder (status {}, {})",
            c.status,
            c.stderr.trim()
        );
    }
}
