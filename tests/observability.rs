//! What keel says about itself: per-skill telemetry, Prometheus metrics
//! checked by the real `promtool`, and JSON log lines carrying the ids in
//! scope, read from the real binary's standard error.

mod common;

use common::agent::{Harness, model_table, notes_ws};
use common::model::{FakeModel, Reply, Wire};
use common::{Ws, promtool_check};
use keel::telemetry::CallOutcome;
use serde_json::{Value, json};

/// The value of the sample `series` (name with labels, exactly as
/// rendered) in the text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

const SLOW: &str = r#"
[skill]
name = "slow"
version = "1.0.0"
description = "Takes its time"
entry = "main.luau"
[[tools]]
name = "wait"
description = "Busy-waits for ms milliseconds"
parameters = { type = "object", properties = { ms = { type = "number" } }, required = ["ms"] }
[[tools]]
name = "boom"
description = "Always fails"
"#;

const SLOW_SRC: &str = r#"
local M = {}
function M.wait(a)
  local t = os.clock()
  while (os.clock() - t) * 1000 < a.ms do end
  return a.ms
end
function M.boom() error("boom") end
return M
"#;

/// A real kernel, real skills and calls from every kind of caller (the
/// library's call_tool as the CLI and console use it, an agent run against
/// the fake model, a skill's keel.tools.call), then a reload: the per-skill
/// figures add up, and the rendered metrics say the same and pass
/// `promtool check metrics`.
#[test]
fn metrics_after_real_calls_a_run_and_a_reload_pass_promtool() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("notes__add", json!({"text": "from the model"})),
            Reply::text("noted"),
        ],
    );
    let ws = notes_ws(
        &model,
        "[agent]\nactive_skills = [\"notes\"]\n\n[policy.skills.relay]\nallow = [\"tools.call:notes.add\"]\n",
    )
    .skill("slow", SLOW, &[("main.luau", SLOW_SRC)])
    .skill(
        "relay",
        r#"
[skill]
name = "relay"
version = "1.0.0"
description = "Relays notes"
entry = "main.luau"
[capabilities]
"tools.call" = ["notes.add"]
[[tools]]
name = "add"
description = "Add a note through notes"
"#,
        &[(
            "main.luau",
            "return { add = function() return keel.tools.call(\"notes.add\", { text = \"relayed\" }) end }",
        )],
    );
    let h = Harness::new(ws);
    let k = &h.kernel;
    let call = |tool: &str, args: Value| h.rt.block_on(k.call_tool(tool, args));

    for ms in [1, 2, 3, 20] {
        call("slow.wait", json!({"ms": ms})).unwrap();
    }
    call("slow.boom", json!({})).unwrap_err();
    call("slow.wait", json!({"ms": "soon"})).unwrap_err();
    call("relay.add", json!({})).unwrap();
    // A name that resolves to nothing is not counted (unbounded labels).
    call("ghost.tool", json!({})).unwrap_err();
    let outcome = h.ask(&h.session(), "add a note");
    assert_eq!(outcome.state.name(), "done", "{:?}", outcome.reason);

    let slow = k.skill_stats("slow");
    assert_eq!((slow.calls, slow.errors), (6, 2), "{slow:?}");
    let wait = &slow.tools["slow.wait"];
    assert_eq!(wait.outcomes[&CallOutcome::Ok], 4);
    assert_eq!(wait.outcomes[&CallOutcome::InvalidArguments], 1);
    assert_eq!(slow.tools["slow.boom"].outcomes[&CallOutcome::Error], 1);
    // The 20 ms call is the slowest of six: p99 covers it, never under it.
    assert!(wait.p99_ms.unwrap() >= 20.0, "{wait:?}");
    assert!(wait.p50_ms.unwrap() <= wait.p95_ms.unwrap());
    // notes.add: once from relay's keel.tools.call, once from the agent.
    let notes = k.skill_stats("notes");
    assert_eq!(notes.tools["notes.add"].calls, 2, "{notes:?}");
    assert_eq!(k.skill_stats("relay").calls, 1);
    assert_eq!(k.skill_stats("ghost").calls, 0);
    // Serialisable as the gateway will send it.
    let v = serde_json::to_value(&slow).unwrap();
    assert_eq!(v["tools"]["slow.wait"]["outcomes"]["invalid_arguments"], 1);

    // A reload that changes one skill and breaks another.
    h.ws.write(
        "skills/slow/main.luau",
        &SLOW_SRC.replace("return a.ms", "return a.ms + 0"),
    );
    h.ws.write("skills/relay/main.luau", "return {");
    let report = k.reload();
    assert!(report.failed(), "{report:?}");

    let text = h.rt.block_on(k.metrics_text());
    let (status, out) = promtool_check(&text);
    assert_eq!(status, 0, "promtool check metrics: {out}\n{text}");

    let get = |series: &str| {
        sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    };
    assert_eq!(
        get(r#"keel_tool_calls_total{skill="slow",tool="slow.wait",outcome="ok"}"#),
        4.0
    );
    assert_eq!(
        get(r#"keel_tool_calls_total{skill="slow",tool="slow.wait",outcome="invalid_arguments"}"#),
        1.0
    );
    assert_eq!(
        get(r#"keel_tool_calls_total{skill="notes",tool="notes.add",outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        get(r#"keel_tool_call_duration_seconds_count{skill="slow",tool="slow.wait"}"#),
        5.0
    );
    // The 20 ms call is above the 10 ms bucket.
    assert!(
        get(r#"keel_tool_call_duration_seconds_bucket{skill="slow",tool="slow.wait",le="0.01"}"#)
            < 5.0
    );
    assert!(!text.contains("ghost"), "{text}");
    assert_eq!(get(r#"keel_runs_total{state="done"}"#), 1.0);
    assert_eq!(get(r#"keel_runs_total{state="failed"}"#), 0.0);
    assert_eq!(
        get(r#"keel_model_requests_total{model="main",outcome="ok"}"#),
        2.0
    );
    assert!(get(r#"keel_model_tokens_total{model="main",kind="input"}"#) > 0.0);
    assert!(get(r#"keel_model_tokens_total{model="main",kind="output"}"#) > 0.0);
    assert_eq!(get(r#"keel_reloads_total{outcome="reloaded"}"#), 1.0);
    assert_eq!(get(r#"keel_reloads_total{outcome="failed"}"#), 1.0);
    assert_eq!(get("keel_approvals_pending"), 0.0);
    // Engines of slow (the new version's, warmed by the reload), notes and
    // relay at least; other tests in this binary may add theirs.
    assert!(get("keel_engine_instances") >= 2.0, "{text}");
    assert!(get("process_resident_memory_bytes") > 1e6, "{text}");
}

/// A model that fails counts as an error, per model name, and a run that
/// fails counts as failed; still valid for promtool.
#[test]
fn failed_model_requests_and_runs_are_counted_by_outcome() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::Status {
            code: 400,
            retry_after: None,
            message: "bad request".into(),
        }],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let outcome = h.ask(&h.session(), "hi");
    assert_eq!(outcome.state.name(), "failed");
    let text = h.rt.block_on(h.kernel.metrics_text());
    assert_eq!(
        sample(
            &text,
            r#"keel_model_requests_total{model="main",outcome="error"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"keel_runs_total{state="failed"}"#),
        Some(1.0)
    );
    let (status, out) = promtool_check(&text);
    assert_eq!(status, 0, "{out}");
}

/// Every line of standard error, each parsed as JSON.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l:?}\n{stderr}"))
        })
        .collect()
}

/// A field of a JSON log line: from the event, else from the innermost
/// span in scope that has it.
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["fields"].get(name).or_else(|| {
        line["spans"]
            .as_array()?
            .iter()
            .rev()
            .find_map(|s| s.get(name))
    })
}

const LOGGER: &str = r#"
[skill]
name = "logger"
version = "1.0.0"
description = "Logs"
entry = "main.luau"
[[tools]]
name = "say"
description = "Logs what it is given"
parameters = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
"#;

const LOGGER_SRC: &str = r#"
return { say = function(a) keel.log.warn(a.text) return "said" end }
"#;

/// `keel --log-format json`: every line of standard error is one JSON
/// object with timestamp, level and message; a line logged inside a tool
/// call carries `skill` and `tool`, one inside an agent run `run_id` and
/// `session_id` too. A message with quotes, a line break and an escape
/// sequence stays inside its one line.
#[test]
fn json_logs_are_one_object_per_line_with_the_ids_in_scope() {
    let hostile = "two\nlines \"quoted\" \u{1b}[2J\u{202e}";
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("logger__say", json!({"text": hostile})),
            Reply::text("logged"),
        ],
    );
    let ws = Ws::new()
        .skill("logger", LOGGER, &[("main.luau", LOGGER_SRC)])
        .policy(&format!(
            "[agent]\nactive_skills = [\"logger\"]\n\n{}",
            model_table("main", &model)
        ));

    // A tool call from the CLI.
    let out = ws
        .keel()
        .env("KEEL_LOG", "debug")
        .args(["--log-format", "json", "call", "logger.say"])
        .arg(json!({"text": hostile}).to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines = json_lines(&stderr);
    let said = lines
        .iter()
        .find(|l| l["fields"]["message"] == hostile)
        .unwrap_or_else(|| panic!("the script's message is not logged whole:\n{stderr}"));
    assert_eq!(said["level"], "WARN");
    assert!(said["timestamp"].as_str().is_some_and(|t| t.len() > 10));
    let span = said["spans"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "tool_call"))
        .unwrap_or_else(|| panic!("no tool_call span: {said}"));
    assert_eq!(
        (&span["skill"], &span["tool"]),
        (&json!("logger"), &json!("logger.say"))
    );

    // An agent run: its lines carry the run's and session's ids, and the
    // tool call inside it all four.
    let out = ws
        .keel()
        .env("KEEL_LOG", "debug")
        .args(["--log-format", "json", "ask", "--json", "log it"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    // `keel ask` also notes its tool calls on standard error, as text for
    // the person; the log lines are the JSON ones.
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let in_run: Vec<&Value> = lines
        .iter()
        .filter(|l| field(l, "run_id") == Some(&run["id"]))
        .collect();
    assert!(
        in_run
            .iter()
            .any(|l| field(l, "session_id") == Some(&run["session_id"])),
        "{stderr}"
    );
    let said = in_run
        .iter()
        .find(|l| l["fields"]["message"] == hostile)
        .unwrap_or_else(|| panic!("the tool's line has no run_id:\n{stderr}"));
    assert_eq!(field(said, "tool"), Some(&json!("logger.say")));
    assert_eq!(field(said, "session_id"), Some(&run["session_id"]));
}

/// `[telemetry] log_format = "json"` in keel.toml turns JSON on; the flag
/// wins over it; a bad value is refused naming the choices.
#[test]
fn the_config_sets_the_log_format_and_the_flag_wins() {
    let ws = Ws::new()
        .skill("logger", LOGGER, &[("main.luau", LOGGER_SRC)])
        .policy("[telemetry]\nlog_format = \"json\"\n");
    let run = |args: &[&str]| {
        let out = ws
            .keel()
            .env("KEEL_LOG", "debug")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let json = run(&["call", "logger.say", r#"{"text": "a"}"#]);
    assert!(
        json_lines(&json)
            .iter()
            .any(|l| l["fields"]["message"] == "a"),
        "{json}"
    );
    let text = run(&[
        "--log-format",
        "text",
        "call",
        "logger.say",
        r#"{"text": "b"}"#,
    ]);
    // Text, with the span's ids too.
    assert!(
        text.lines()
            .any(|l| l.contains(" WARN tool_call{skill=logger tool=logger.say}: b ")),
        "{text}"
    );

    ws.write("keel.toml", "[telemetry]\nlog_format = \"yaml\"\n");
    let out = ws.run(&["skills"]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr.contains("keel.toml") && out.stderr.contains("`json`"),
        "{}",
        out.stderr
    );
}
