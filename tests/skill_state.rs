//! Disabling and enabling skills: a disabled skill keeps its files and
//! grants, offers no tools (not in the prompt, not offered to the model,
//! not found by `tools.search`, not activatable), and every route into one
//! of its tools — the CLI, the console, the agent, another skill's
//! `keel.tools.call` — is refused with how to enable it. The state is in
//! the database: it survives restarts and hot reloads, and a change made by
//! another process holds on the next call.

mod common;

use common::Ws;
use common::agent::{Harness, NOTES, NOTES_SRC, notes_ws};
use common::model::{FakeModel, Reply, Wire};
use common::pty::keel_on_a_terminal;
use keel::kernel::SkillStateError;
use keel::tool::ToolError;
use serde_json::{Value, json};

fn notes_only() -> Ws {
    Ws::new()
        .skill("notes", NOTES, &[("main.luau", NOTES_SRC)])
        .policy("[policy]\nallow = [\"kv\"]\n")
}

fn skills_json(ws: &Ws) -> Value {
    let out = ws.run(&["skills", "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn enabled_of(v: &Value, name: &str) -> Value {
    v["skills"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .map(|s| s["enabled"].clone())
        .unwrap_or(Value::Null)
}

/// Through the real binary, one process per command: the state is in the
/// database, so it holds in the next process (a restart), is listed, and
/// keeps the skill's grants and data.
#[test]
fn disable_refuses_calls_across_restarts_and_enable_restores_them_with_their_data() {
    let ws = notes_only();
    assert_eq!(ws.call("notes.add", json!({"text": "kept"})).ok()["id"], 1);
    assert_eq!(enabled_of(&skills_json(&ws), "notes"), true);

    let out = ws.run(&["skill", "disable", "notes"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("disabled notes in workspace")
            && out.stdout.contains("`keel skill enable notes`"),
        "{}",
        out.stdout
    );
    // Again: not an error, and says so.
    let again = ws.run(&["skill", "disable", "notes", "--json"]);
    let v: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        (v["enabled"].clone(), v["changed"].clone()),
        (json!(false), json!(false))
    );

    // A new process: refused, with the way back; nothing ran.
    ws.call("notes.add", json!({"text": "refused"}))
        .err_contains(&[
            "`notes.add` is not available",
            "skill `notes` is disabled",
            "keel skill enable notes",
        ]);
    // Even with arguments that would not validate: disabled is said first.
    ws.call("notes.add", json!({"nope": 1}))
        .err_contains(&["is disabled"]);
    assert_eq!(enabled_of(&skills_json(&ws), "notes"), false);
    let text = ws.run(&["skills"]).stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("notes@1.0.0") && l.contains("disabled")),
        "{text}"
    );

    let out = ws.run(&["skill", "enable", "notes"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("enabled notes"), "{}", out.stdout);
    // The data written before survives, and the refused call wrote nothing.
    assert_eq!(ws.call("notes.list", json!({})).ok(), json!(["kept"]));
    assert_eq!(enabled_of(&skills_json(&ws), "notes"), true);
}

#[test]
fn bad_names_are_refused_with_what_to_do_and_change_nothing() {
    let ws = notes_only();
    let out = ws.run(&["skill", "disable", "ntoes"]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr.contains("no skill `ntoes`") && out.stderr.contains("did you mean `notes`"),
        "{}",
        out.stderr
    );
    let out = ws.run(&["skill", "disable", "Not A Name"]);
    assert!(out.stderr.contains("is not a skill name"), "{}", out.stderr);
    let out = ws.run(&["skill", "disable", "tools"]);
    assert!(out.stderr.contains("keel's own tools"), "{}", out.stderr);
    // Nothing was disabled on the way.
    assert_eq!(ws.call("notes.add", json!({"text": "x"})).ok()["id"], 1);

    let rt = common::runtime();
    let k = ws.kernel(&rt);
    assert!(matches!(
        k.set_skill_enabled("ntoes", false),
        Err(SkillStateError::UnknownSkill { suggestion: Some(s), .. }) if s == "notes"
    ));
    assert!(k.disabled_skills().unwrap().is_empty());
}

/// Another process disables the skill while this kernel runs: the very
/// next call here is refused (the state is read from the database on each
/// call, as grants are), and so is every call racing with it once the
/// disable has returned.
#[test]
fn a_disable_from_another_process_holds_on_the_next_call() {
    let ws = notes_only();
    let rt = common::runtime();
    let k = ws.kernel(&rt);
    rt.block_on(k.call_tool("notes.add", json!({"text": "a"})))
        .unwrap();
    let out = ws.run(&["skill", "disable", "notes"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let e = rt
        .block_on(k.call_tool("notes.add", json!({"text": "b"})))
        .unwrap_err();
    assert!(matches!(e, ToolError::SkillDisabled { .. }), "{e}");

    // Enabled again here; then callers race a disable in this process.
    // Every call that started after the disable returned must be refused;
    // calls before it may run; nothing else may go wrong.
    k.set_skill_enabled("notes", true).unwrap();
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let stop = Arc::new(AtomicBool::new(false));
    let disabled_at = Arc::new(Mutex::new(None::<std::time::Instant>));
    let refused_after: u32 = std::thread::scope(|s| {
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let (k, stop, at) = (k.clone(), stop.clone(), disabled_at.clone());
                s.spawn(move || {
                    let mut refused_after = 0;
                    for _ in 0..100_000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let started = std::time::Instant::now();
                        let r = k.call_tool_blocking("notes.list", json!({}), None);
                        let after = at.lock().unwrap().is_some_and(|t| started > t);
                        match r {
                            Ok(_) => assert!(!after, "a call that started after the disable ran"),
                            Err(ToolError::SkillDisabled { .. }) => refused_after += after as u32,
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                    refused_after
                })
            })
            .collect();
        let done = |c: &[std::thread::ScopedJoinHandle<'_, u32>]| c.iter().all(|c| c.is_finished());
        // Let the callers get going, then disable.
        while k.skill_stats("notes").calls < 50 && !done(&callers) {
            std::thread::yield_now();
        }
        k.set_skill_enabled("notes", false).unwrap();
        *disabled_at.lock().unwrap() = Some(std::time::Instant::now());
        while k.skill_stats("notes").errors < 40 && !done(&callers) {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        callers.into_iter().map(|c| c.join().unwrap()).sum()
    });
    assert!(refused_after > 0, "no call was refused after the disable");
}

/// A hot reload of a disabled skill (a new version on disk, picked up by
/// the watcher while the console runs) leaves it disabled; `/enable`
/// brings the new version's tools back. On a real terminal.
#[test]
fn the_console_disables_a_skill_and_it_stays_disabled_across_a_hot_reload() {
    let ws = notes_only();
    let v2 = NOTES.replace("version = \"1.0.0\"", "version = \"1.0.1\"");
    let src2 = NOTES_SRC.replace("return { id = n }", "return { id = n, v = 2 }");
    let out = keel_on_a_terminal(
        &ws,
        &[],
        json!([
            ["expect", "banner", "watching"],
            ["send", "/disable notes\r"],
            [
                "expect",
                "disabled",
                "disabled notes in workspace .*/enable notes"
            ],
            ["write", "skills/notes/main.luau", src2],
            ["write", "skills/notes/skill.toml", v2],
            ["expect", "hot reload", r"\[reload\] reloaded notes@1\.0\.1"],
            ["send", "/call notes.add {\"text\": \"x\"}\r"],
            [
                "expect",
                "still disabled",
                "skill `notes` is disabled in this workspace; enable it with `/enable notes`"
            ],
            ["send", "/skills\r"],
            ["expect", "listed disabled", r"notes@1\.0\.1 .*disabled"],
            ["send", "/enable notes\r"],
            ["expect", "enabled", "enabled notes in workspace"],
            ["send", "/call notes.add {\"text\": \"y\"}\r"],
            ["expect", "new version serves", r#""v": 2"#],
            ["send", "/quit\r"],
            ["exit"]
        ]),
    );
    assert!(out.contains("EXIT 0"), "{out}");
    // And after the console is gone, in a new process: still enabled.
    assert_eq!(ws.call("notes.add", json!({"text": "z"})).ok()["v"], 2);
}

/// The model is not told about a disabled skill: no listing line, no tool
/// definition in the request; `tools.search` and `skills.activate` do not
/// find it; a call the model makes anyway is refused with the reason. A
/// skill that depends on it stays enabled, and its `keel.tools.call` into
/// the disabled skill is refused too.
#[test]
fn a_disabled_skill_is_not_offered_to_the_model_and_no_route_reaches_it() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tools(&[
                ("notes__add", json!({"text": "sneaky"})),
                // Not offered (few tools installed); a dotted name is taken
                // as is.
                ("tools.search", json!({"query": "notes keeps"})),
                ("skills__activate", json!({"name": "notes"})),
                ("relay__add", json!({"text": "via relay"})),
            ]),
            Reply::text("done"),
            Reply::text("after enable"),
        ],
    );
    // Both kept active: their tools are offered whenever they are enabled.
    let ws = notes_ws(
        &model,
        "[policy.skills.relay]\nallow = [\"tools.call:notes.add\"]\n\n[agent]\nactive_skills = [\"notes\", \"relay\"]\n",
    )
        .skill(
            "relay",
            r#"
[skill]
name = "relay"
version = "1.0.0"
description = "Relays notes"
entry = "main.luau"
[dependencies]
notes = "^1"
[capabilities]
"tools.call" = ["notes.add"]
[[tools]]
name = "add"
description = "Add a note through notes"
parameters = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
"#,
            &[(
                "main.luau",
                "return { add = function(a) return keel.tools.call(\"notes.add\", { text = a.text }) end }",
            )],
        );
    let h = Harness::new(ws);
    let change = h.kernel.set_skill_enabled("notes", false).unwrap();
    assert!(change.changed && !change.enabled);
    assert_eq!(change.dependents, ["relay"]);

    let session = h.session();
    let outcome = h.ask(&session, "add a note");
    assert_eq!(outcome.state.name(), "done", "{:?}", outcome.reason);
    let first = &model.requests()[0].body;
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(
        !offered.iter().any(|n| n.starts_with("notes")),
        "{offered:?}"
    );
    assert!(
        offered.iter().any(|n| n.starts_with("relay")),
        "{offered:?}"
    );
    let system = first["messages"][0]["content"].as_str().unwrap();
    assert!(!system.contains("Keeps notes"), "{system}");
    assert!(system.contains("Relays notes"), "{system}");

    // Every tool result the model got back.
    let results: Vec<String> = model.requests()[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(results.len(), 4, "{results:?}");
    assert!(
        results[0].contains("skill `notes` is disabled"),
        "{}",
        results[0]
    );
    assert!(
        !results[1].contains("notes.add"),
        "search found it: {}",
        results[1]
    );
    assert!(results[2].contains("is disabled"), "{}", results[2]);
    assert!(
        results[3].contains("tools.call") && results[3].contains("is disabled"),
        "{}",
        results[3]
    );
    // Nothing was written by any of them.
    let n = h
        .kernel
        .store()
        .kv_get(h.kernel.workspace(), "notes", "n")
        .unwrap();
    assert_eq!(n, None);

    // Enabled again: offered again on the next request.
    h.kernel.set_skill_enabled("notes", true).unwrap();
    let outcome = h.ask(&session, "again");
    assert_eq!(outcome.state.name(), "done", "{:?}", outcome.reason);
    let last = &model.requests()[2].body;
    assert!(
        last["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["function"]["name"].as_str() == Some("notes__add")),
        "{}",
        last["tools"]
    );
}
