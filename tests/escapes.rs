mod common;

use common::*;
use serde_json::json;

const LUAU_PROBE: &str = r#"
local M = {}
function M.fs_read(a) return keel.fs.read(a.path) end
function M.fs_write(a) keel.fs.write(a.path, a.content) return "written" end
function M.fs_remove(a) return keel.fs.remove(a.path) end
function M.fs_mkdir(a) keel.fs.mkdir(a.path) return "made" end
function M.fs_list(a) return keel.fs.list(a.path) end
function M.http_get(a) return keel.http.get(a.url) end
function M.run(a) return keel.exec.run(a.argv) end
function M.env_get(a) return keel.env.get(a.name) end
return M
"#;

const RHAI_PROBE: &str = r#"
fn fs_read(a) { keel::fs::read(a.path) }
fn fs_write(a) { keel::fs::write(a.path, a.content); "written" }
fn fs_remove(a) { keel::fs::remove(a.path) }
fn fs_mkdir(a) { keel::fs::mkdir(a.path); "made" }
fn fs_list(a) { keel::fs::list(a.path) }
fn http_get(a) { keel::http::get(a.url) }
fn run(a) { keel::exec::run(a.argv) }
fn env_get(a) { keel::env::get(a.name) }
"#;

const PROBE_TOOLS: &[&str] = &[
    "fs_read", "fs_write", "fs_remove", "fs_mkdir", "fs_list", "http_get", "run", "env_get",
];

#[derive(Clone, Copy, Debug)]
enum Lang {
    Luau,
    Rhai,
}
const BOTH: [Lang; 2] = [Lang::Luau, Lang::Rhai];

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

/// A workspace with the probe skill `p` in `lang`, declaring `caps`.
fn probe(lang: Lang, caps: &str, policy: &str) -> Ws {
    let (entry, src) = match lang {
        Lang::Luau => ("main.luau", LUAU_PROBE),
        Lang::Rhai => ("main.rhai", RHAI_PROBE),
    };
    Ws::new()
        .skill("p", &manifest("p", entry, "", caps, PROBE_TOOLS), &[(entry, src)])
        .policy(policy)
}

#[test]
fn scratch() {
    for lang in BOTH {
        let ws = probe(
            lang,
            "\"fs.read\" = [\"./notes\"]\n\"fs.write\" = [\"./notes\"]",
            "[policy]\nallow = [\"fs.read:./notes\", \"fs.write:./notes\"]\n",
        )
        .file("notes/a.txt", "hi")
        .file("secret.txt", "TOPSECRET");
        println!("{:?}", ws.call("p.fs_read", json!({"path": "./notes/a.txt"})));
        println!("{:?}", ws.call("p.fs_read", json!({"path": "./notes/../secret.txt"})));
        println!("{:?}", ws.call("p.fs_read", json!({"path": "~/.ssh/id_rsa"})));
        println!("{:?}", ws.call("p.run", json!({"argv": ["echo", "hi"]})));
        println!("{:?}", ws.call("p.env_get", json!({"name": "HOME"})));
    }
    panic!();
}
