//! Issue 9, "one gate": every host function that declares a capability is
//! checked by the gate, from Luau and from Rhai.
//!
//! The test walks [`keel::host::namespaces`] itself, so a new host function
//! is covered the day it is added: it must get sample arguments here (the
//! test fails and says so until it does), and then it must be refused, with
//! an audit row naming its capability, when called with valid-looking
//! arguments by
//! - a skill that declares nothing (the policy would allow anything), and
//! - a skill that declares everything, under a policy that denies.
//!
//! A host function that forgets to ask the gate fails here: its call either
//! succeeds or fails with some other error, and no audit row for its
//! capability appears. Where the effect is observable (a file, a process, a
//! TCP connection, a kv row) the test also checks it did not happen.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;

use common::{Ws, runtime};
use serde_json::{Value, json};

/// Valid-looking arguments for each host function that declares a
/// capability. `port` is a live listener on 127.0.0.1 that must never be
/// connected to; `ws` is the workspace.
fn sample_args(ns: &str, name: &str, port: u16, ws: &str) -> Option<Vec<Value>> {
    let url = format!("http://127.0.0.1:{port}/x");
    Some(match (ns, name) {
        ("fs", "read") => vec![json!("present.txt")],
        ("fs", "write") => vec![json!("written.txt"), json!("x")],
        ("fs", "append") => vec![json!("appended.txt"), json!("x")],
        ("fs", "list") => vec![json!(".")],
        ("fs", "exists") => vec![json!("present.txt")],
        ("fs", "remove") => vec![json!("present.txt")],
        ("fs", "mkdir") => vec![json!("made")],
        ("http", "request") => vec![json!({ "method": "GET", "url": url })],
        ("http", "get") => vec![json!(url)],
        ("http", "get_json") => vec![json!(url)],
        ("http", "post_json") => vec![json!(url), json!({ "a": 1 })],
        ("exec", "run") => vec![json!(["touch", format!("{ws}/exec-ran")])],
        ("env", "get") => vec![json!("KEEL_COVERAGE_VAR")],
        ("kv", "get") => vec![json!("k")],
        ("kv", "set") => vec![json!("k"), json!("v")],
        ("kv", "delete") => vec![json!("k")],
        ("kv", "list") => vec![],
        ("llm", "complete") => vec![json!([{ "role": "user", "content": "hi" }])],
        ("tools", "call") => vec![json!("probe.noop"), json!({})],
        _ => return None,
    })
}

fn manifest(entry: &str, caps: &str) -> String {
    format!(
        r#"
[skill]
name = "probe"
version = "1.0.0"
description = "calls one host function by name"
entry = "{entry}"
[capabilities]
{caps}
[[tools]]
name = "hit"
description = "calls keel.<ns>.<name>(args...)"
parameters = {{ type = "object", properties = {{ ns = {{ type = "string" }}, name = {{ type = "string" }}, args = {{ type = "array" }} }}, required = ["ns", "name", "args"] }}
[[tools]]
name = "noop"
description = "does nothing"
"#
    )
}

const LUAU: &str = r#"
local M = {}
function M.hit(a)
  return keel[a.ns][a.name](table.unpack(a.args))
end
function M.noop() return nil end
return M
"#;

/// A Rhai dispatcher generated from the host list: Rhai cannot call a
/// function by a computed name, so each one gets a branch, with its arity.
fn rhai_source(port: u16, ws: &str) -> String {
    let mut src = String::from("fn hit(a) {\n");
    for (ns, fns) in keel::host::namespaces() {
        for f in fns.iter().filter(|f| f.capability.is_some()) {
            let n = sample_args(ns, f.name, port, ws).map_or(0, |a| a.len());
            let args: Vec<String> = (0..n).map(|i| format!("a.args[{i}]")).collect();
            src.push_str(&format!(
                "  if a.ns == \"{ns}\" && a.name == \"{}\" {{ return keel::{ns}::{}({}); }}\n",
                f.name,
                f.name,
                args.join(", ")
            ));
        }
    }
    src.push_str("  throw \"unknown function\";\n}\nfn noop(a) { () }\n");
    src
}

/// Everything every host function could need, declared.
const ALL_CAPS: &str = r#"
"fs.read" = ["."]
"fs.write" = ["."]
"net.http" = ["*", "127.0.0.1"]
"exec" = ["*"]
"env" = ["*"]
"kv" = true
"llm" = true
"tools.call" = ["*"]
"#;

struct Probe {
    ws: Ws,
    port: u16,
    listener: TcpListener,
}

fn probe(caps: &str, policy: &str) -> Probe {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let ws = Ws::new();
    let root = ws.path("").display().to_string();
    let root = root.trim_end_matches('/').to_string();
    let ws = ws
        .skill(
            "probe-lua",
            &manifest("main.luau", caps),
            &[("main.luau", LUAU)],
        )
        .skill(
            "probe-rhai",
            &manifest("main.rhai", caps).replace("name = \"probe\"", "name = \"proberhai\""),
            &[("main.rhai", &rhai_source(port, &root))],
        )
        .file("present.txt", "secret")
        .policy(policy);
    Probe { ws, port, listener }
}

/// Calls every capability-declaring host function from both languages and
/// checks each was refused by the gate and audited under its capability.
fn assert_every_function_is_gated(p: &Probe, expect_in_error: &str) {
    let rt = runtime();
    let env: BTreeMap<String, String> = [("KEEL_COVERAGE_VAR", "v"), ("PATH", "/usr/bin:/bin")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let k = p.ws.kernel_with_env(&rt, env);
    let root = p.ws.path("").display().to_string();
    let root = root.trim_end_matches('/').to_string();
    let mut checked = 0;
    for (ns, fns) in keel::host::namespaces() {
        for f in fns {
            let Some(cap) = f.capability else { continue };
            let args = sample_args(ns, f.name, p.port, &root).unwrap_or_else(|| {
                panic!(
                    "keel.{ns}.{} declares `{cap}` but tests/gate_coverage.rs has no sample \
                     arguments for it: add them to `sample_args`",
                    f.name
                )
            });
            for skill in ["probe", "proberhai"] {
                let tool = format!("{skill}.hit");
                let last = k
                    .store()
                    .audit_log(1)
                    .expect("audit")
                    .first()
                    .map_or(0, |r| r.id);
                let r = rt.block_on(
                    k.call_tool(&tool, json!({ "ns": ns, "name": f.name, "args": args })),
                );
                let e = match r {
                    Ok(v) => panic!("{skill}: keel.{ns}.{} was not refused: {v}", f.name),
                    Err(e) => e.to_string(),
                };
                assert!(
                    e.contains(expect_in_error),
                    "{skill}: keel.{ns}.{} failed, but not at the gate (expected {expect_in_error:?}): {e}",
                    f.name
                );
                let rows: Vec<_> = k
                    .store()
                    .audit_log(100)
                    .expect("audit")
                    .into_iter()
                    .filter(|r| r.id > last)
                    .collect();
                assert!(
                    rows.iter().any(|r| r.capability == cap.name()
                        && r.decision == "deny"
                        && r.skill == skill
                        && r.tool == tool),
                    "{skill}: keel.{ns}.{} left no `deny` audit row for `{cap}`: {rows:?}",
                    f.name
                );
                assert!(
                    rows.iter().all(|r| r.decision != "allow"),
                    "{skill}: keel.{ns}.{}: something was allowed: {rows:?}",
                    f.name
                );
                checked += 1;
            }
        }
    }
    // Every namespace with a capability was walked (fs, http, exec, env,
    // kv, llm, tools), in both languages.
    assert!(checked >= 2 * 19, "only {checked} calls were checked");

    // And nothing happened.
    for f in ["written.txt", "appended.txt", "made", "exec-ran"] {
        assert!(!p.ws.path(f).exists(), "{f} was created");
    }
    assert_eq!(
        std::fs::read_to_string(p.ws.path("present.txt")).expect("present.txt"),
        "secret",
        "present.txt was changed or removed"
    );
    match p.listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("a refused http call connected to the listener from {from}"),
        Err(e) => panic!("accept: {e}"),
    }
    let ws_path = p.ws.path("");
    for skill in ["probe", "proberhai"] {
        assert!(
            k.store()
                .kv_list(&ws_path, skill, "")
                .expect("kv list")
                .is_empty(),
            "{skill} wrote kv"
        );
    }
}

#[test]
fn every_capability_host_function_is_refused_for_a_skill_that_declares_nothing() {
    // The policy would allow everything: only the missing declaration stops it.
    let p = probe(
        "",
        "[policy]\ndefault = \"allow\"\nallow = [\"fs.read:.\", \"fs.write:.\", \"net.http:127.0.0.1\", \"exec:*\", \"env:*\", \"kv\", \"llm\", \"tools.call:*\"]\n",
    );
    assert_every_function_is_gated(&p, "did not declare");
}

#[test]
fn every_capability_host_function_is_refused_when_the_policy_denies() {
    let p = probe(
        ALL_CAPS,
        "[policy]\ndefault = \"deny\"\ndeny = [\"fs.read:.\", \"fs.write:.\", \"net.http:*\", \"net.http:127.0.0.1\", \"exec:*\", \"env:*\", \"kv\", \"llm\", \"tools.call:*\"]\n",
    );
    assert_every_function_is_gated(&p, "is denied");
}
