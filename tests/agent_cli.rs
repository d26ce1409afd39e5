//! The agent from the command line and the console, driving the real
//! binary against a fake model server that speaks the real OpenAI wire
//! format: `keel ask`, `keel sessions`, `keel runs`, recovery after
//! `kill -9`, approvals nobody can answer, and the console over a pipe and
//! on a pseudo-terminal (Python's `pty` module types into it).

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::agent::{NOTES, NOTES_SRC, model_table, notes_ws};
use common::model::{FakeModel, Reply, Wire};
use common::pty::keel_on_a_terminal;
use common::{Called, Ws};
use serde_json::{Value, json};

/// One tool, one capability use: one approval per call.
const MEMO: &str = r#"
[skill]
name = "memo"
version = "1.0.0"
description = "Remembers one thing"
entry = "main.luau"
[capabilities]
kv = true
[[tools]]
name = "save"
description = "Remember a text"
parameters = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
"#;

const MEMO_SRC: &str = r#"
local M = {}
function M.save(args)
  keel.kv.set("memo", args.text)
  return "saved " .. args.text
end
return M
"#;

/// No capabilities at all: nothing to approve.
const GREET: &str = "[skill]\nname = \"greet\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n[[tools]]\nname = \"hi\"\ndescription = \"says hi\"\n";
const GREET_SRC: &str = "local M = {} function M.hi() return 'hi there' end return M\n";

/// A workspace where the memo skill's `kv` must be approved each time.
fn memo_ws(model: &FakeModel, extra_toml: &str) -> Ws {
    Ws::new()
        .skill("memo", MEMO, &[("main.luau", MEMO_SRC)])
        .policy(&format!(
            "[policy]\nask = [\"kv\"]\n\n{}\n{extra_toml}",
            model_table("main", model)
        ))
}

/// Polls `done` every 20 ms; panics with `what` after `limit`.
fn poll(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < until,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running keel whose output is collected as it comes; killed on drop,
/// so a failing test leaves no process behind.
struct Spawned {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl Spawned {
    /// Starts `cmd`; with `input`, stdin is a pipe that gets `input` and is
    /// then closed.
    fn start(cmd: &mut Command, input: Option<&str>) -> Self {
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keel");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = vec![
            collect(child.stdout.take().expect("stdout"), stdout.clone()),
            collect(child.stderr.take().expect("stderr"), stderr.clone()),
        ];
        if let Some(text) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            let text = text.to_string();
            readers.push(std::thread::spawn(move || {
                let _ = stdin.write_all(text.as_bytes());
            }));
        }
        Self {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the exit (at most `limit`, then kills it and panics).
    fn finish(mut self, limit: Duration) -> (ExitStatus, Called) {
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                panic!(
                    "keel did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let called = Called {
            status: status.code().unwrap_or(-1),
            stdout: self.stdout(),
            stderr: self.stderr(),
        };
        (status, called)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs keel to the end (bounded: 30 s).
fn run(cmd: &mut Command) -> Called {
    Spawned::start(cmd, None).finish(Duration::from_secs(30)).1
}

fn ask(ws: &Ws, args: &[&str]) -> Called {
    run(ws.keel().arg("ask").args(args))
}

/// A listing command's JSON (`keel sessions --json`, `keel runs S --json`).
fn json_of(ws: &Ws, args: &[&str]) -> Value {
    let out = run(ws.keel().args(args));
    assert_eq!(out.status, 0, "keel {args:?} failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout))
}

fn sessions(ws: &Ws) -> Vec<Value> {
    json_of(ws, &["sessions", "--json"])
        .as_array()
        .expect("a list of sessions")
        .clone()
}

fn runs(ws: &Ws, session: &str) -> Vec<Value> {
    json_of(ws, &["runs", session, "--json"])
        .as_array()
        .expect("a list of runs")
        .clone()
}

/// The id of the session titled `title`.
fn session_titled(ws: &Ws, title: &str) -> String {
    let list = sessions(ws);
    list.iter()
        .find(|s| s["title"] == title)
        .unwrap_or_else(|| panic!("no session titled {title:?} in {list:#?}"))["id"]
        .as_str()
        .expect("session id")
        .to_string()
}

/// The user messages of a request body, in order.
fn user_texts(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn ask_streams_the_answer_to_stdout_and_tool_calls_to_stderr() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("notes__add", json!({"text": "buy milk"})),
            Reply::text("Noted: buy milk."),
            Reply::text("And eggs, noted too."),
        ],
    );
    let ws = notes_ws(&model, "");
    let out = ask(&ws, &["remember to buy milk"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout, "Noted: buy milk.\n",
        "stdout is the answer alone"
    );
    assert!(
        out.stderr
            .contains("[tool] notes.add {\"text\":\"buy milk\"}\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("[tool] notes.add ok (") && out.stderr.contains("): {\"id\":1}\n"),
        "{}",
        out.stderr
    );
    assert_eq!(model.request_count(), 2);

    // --session continues the conversation: the model sees the first
    // exchange, tool call and result included.
    let session = session_titled(&ws, "remember to buy milk");
    let out = ask(&ws, &["--session", &session, "and eggs"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "And eggs, noted too.\n");
    let reqs = model.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        user_texts(&reqs[2].body),
        ["remember to buy milk", "and eggs"]
    );
    let body = reqs[2].body.to_string();
    assert!(
        body.contains("Noted: buy milk.") && body.contains("notes__add"),
        "{body}"
    );
    assert_eq!(sessions(&ws).len(), 1, "no new session was made");
}

#[test]
fn ask_json_prints_the_run_record() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("notes__add", json!({"text": "call mum"})),
            Reply::text("Added your note."),
        ],
    );
    let ws = notes_ws(&model, "");
    let out = ask(&ws, &["--json", "remember to call mum"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let run: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {}", out.stdout));
    assert!(
        run["id"].as_str().is_some_and(|s| s.starts_with("r_")),
        "{run}"
    );
    assert_eq!(
        run["session_id"],
        session_titled(&ws, "remember to call mum").as_str()
    );
    assert_eq!(run["state"], "done");
    assert_eq!(run["answer"], "Added your note.");
    assert_eq!(run["reason"], Value::Null);
    // The chain entry that answered, and the provider's id of its model.
    assert_eq!(run["model"], "main");
    assert_eq!(run["model_id"], "fake-main");
    let calls = run["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 1, "{run}");
    assert_eq!(calls[0]["name"], "notes.add");
    assert_eq!(calls[0]["arguments"], "{\"text\":\"call mum\"}");
    assert_eq!(calls[0]["result"], "{\"id\":1}");
    assert_eq!(calls[0]["is_error"], false);
    assert!(
        run["usage"]["input_tokens"].as_u64().unwrap_or(0) > 0,
        "{run}"
    );
    assert!(
        run["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0,
        "{run}"
    );
}

#[test]
fn ask_refuses_an_unknown_session_and_an_empty_message() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![Reply::text("unused")]);
    let ws = notes_ws(&model, "");
    ask(&ws, &["--session", "s_nope", "hello"]).err_contains(&["s_nope", "keel sessions"]);
    ask(&ws, &["   "]).err_contains(&["empty", "keel ask \""]);
    assert_eq!(model.request_count(), 0, "nothing reached the model");
    assert!(sessions(&ws).is_empty(), "no session was made");
}

#[test]
fn ask_exits_1_with_the_reason_when_the_model_fails() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::Status {
            code: 400,
            retry_after: None,
            message: "this model does not do tools".into(),
        }],
    );
    let ws = notes_ws(&model, "");
    let out = ask(&ws, &["hello"]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains("the run failed")
            && out.stderr.contains("this model does not do tools"),
        "{}",
        out.stderr
    );
    assert_eq!(model.request_count(), 1, "a 400 is not retried");
    let session = session_titled(&ws, "hello");
    let list = runs(&ws, &session);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "failed");
    assert!(
        list[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("this model does not do tools")),
        "{list:#?}"
    );
}

#[test]
fn ask_without_a_model_exits_2_and_says_how_to_configure_one() {
    let ws = Ws::new()
        .skill("notes", NOTES, &[("main.luau", NOTES_SRC)])
        .policy("");
    let out = ask(&ws, &["hello"]);
    assert_eq!(out.status, 2, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    for fragment in [
        "no model is configured",
        "OPENAI_BASE_URL",
        "keel.toml",
        "[models.main]",
    ] {
        assert!(
            out.stderr.contains(fragment),
            "lacks {fragment:?}: {}",
            out.stderr
        );
    }
    assert!(sessions(&ws).is_empty(), "no session was made");
}

#[test]
fn sessions_and_runs_list_what_asks_made() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::text("First answer."),
            Reply::text("Second answer."),
            Reply::text("Other answer."),
        ],
    );
    let ws = notes_ws(&model, "");
    assert!(sessions(&ws).is_empty());
    assert_eq!(ask(&ws, &["first question"]).status, 0);
    let first = session_titled(&ws, "first question");
    assert_eq!(
        ask(&ws, &["--session", &first, "second question"]).status,
        0
    );
    assert_eq!(ask(&ws, &["other question"]).status, 0);

    let list = sessions(&ws);
    let titles: Vec<&str> = list.iter().map(|s| s["title"].as_str().unwrap()).collect();
    // Most recently active first.
    assert_eq!(titles, ["other question", "first question"]);
    assert_eq!(list[1]["runs"], 2, "{list:?}");
    assert_eq!(list[1]["last_state"], "done", "{list:?}");
    let other = list[0]["id"].as_str().unwrap().to_string();

    let first_runs = runs(&ws, &first);
    assert_eq!(first_runs.len(), 2, "{first_runs:#?}");
    for r in &first_runs {
        assert_eq!(r["state"], "done", "{r}");
        assert_eq!(r["session_id"], first.as_str());
        assert!(r["input_tokens"].as_u64().unwrap_or(0) > 0, "{r}");
        assert!(r["output_tokens"].as_u64().unwrap_or(0) > 0, "{r}");
        assert_eq!(r["model"], "main", "{r}");
    }
    assert_ne!(first_runs[0]["id"], first_runs[1]["id"]);
    assert_eq!(runs(&ws, &other).len(), 1);

    // The plain listings show the same.
    let text = run(ws.keel().args(["runs", &first]));
    assert_eq!(text.status, 0);
    assert_eq!(text.stdout.matches("  done").count(), 2, "{}", text.stdout);
    let text = run(ws.keel().arg("sessions"));
    assert!(
        text.stdout.contains(&first) && text.stdout.contains("other question"),
        "{}",
        text.stdout
    );

    run(ws.keel().args(["runs", "s_nope"])).err_contains(&["s_nope", "keel sessions"]);
}

#[test]
fn a_run_killed_mid_stream_is_failed_as_interrupted_and_the_session_goes_on() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::Stall {
                text: "Thinking hard about milk".into(),
                hold_ms: 20_000,
            },
            Reply::text("Meanwhile, elsewhere."),
            Reply::text("Back again."),
        ],
    );
    let ws = notes_ws(&model, "");
    let mut first = Spawned::start(ws.keel().args(["ask", "remember to buy milk"]), None);
    poll(
        "the model received the request",
        Duration::from_secs(15),
        || model.request_count() >= 1,
    );
    // The first piece is on stdout while the model still holds the rest:
    // the answer streams.
    poll("the first piece on stdout", Duration::from_secs(15), || {
        !first.stdout().is_empty()
    });
    assert!(first.running(), "keel ask ended during the stall");
    assert_eq!(first.stdout(), "Thinking");
    let session = session_titled(&ws, "remember to buy milk");
    assert_eq!(runs(&ws, &session)[0]["state"], "running");

    // Another keel starting up while this one is alive must leave its run
    // alone.
    let other = ask(&ws, &["hello from elsewhere"]);
    assert_eq!(other.status, 0, "{}", other.stderr);
    assert_eq!(other.stdout, "Meanwhile, elsewhere.\n");
    let list = runs(&ws, &session);
    assert_eq!(
        list[0]["state"], "running",
        "a live process's run was touched: {list:#?}"
    );
    assert!(first.running());

    first.child.kill().expect("kill -9");
    let (status, _) = first.finish(Duration::from_secs(10));
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    let again = ask(&ws, &["--session", &session, "again"]);
    assert_eq!(again.status, 0, "{}", again.stderr);
    assert_eq!(again.stdout, "Back again.\n");
    let list = runs(&ws, &session);
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_eq!(list[0]["state"], "failed");
    assert!(
        list[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("interrupted")),
        "{list:#?}"
    );
    assert_eq!(list[1]["state"], "done");
    let reqs = model.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        user_texts(&reqs[2].body),
        ["remember to buy milk", "again"],
        "the first message survived the kill"
    );
}

#[test]
fn ask_without_a_terminal_declines_approvals_at_once_and_says_how_to_grant() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("memo__save", json!({"text": "milk"})),
            Reply::text("I could not save it."),
        ],
    );
    // Were the request left to time out, the run would take 30 s, and
    // `finish` gives up after 20.
    let ws = memo_ws(&model, "[agent]\napproval_timeout_seconds = 30\n");
    let (_, out) = Spawned::start(ws.keel().args(["ask", "remember milk"]), None)
        .finish(Duration::from_secs(20));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "I could not save it.\n");
    for fragment in [
        "[tool] memo.save {\"text\":\"milk\"}",
        "memo wants `kv`",
        "nobody can answer here",
        "keel grant memo kv",
        "[tool] memo.save failed (",
    ] {
        assert!(
            out.stderr.contains(fragment),
            "lacks {fragment:?}: {}",
            out.stderr
        );
    }
    // No prompt that nobody answers: only the refusal, once.
    assert!(!out.stderr.contains("allow?"), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("nobody can answer here").count(),
        1,
        "{}",
        out.stderr
    );
    // The model was told, and the approval is answered (not pending).
    let reqs = model.requests();
    assert_eq!(reqs.len(), 2);
    let body = reqs[1].body.to_string();
    assert!(body.contains("the request was denied"), "{body}");
    let session = session_titled(&ws, "remember milk");
    assert_eq!(runs(&ws, &session)[0]["state"], "done");
    assert!(
        !run(ws.keel().args(["call", "memo.save", "{\"text\":\"x\"}"]))
            .stdout
            .contains("saved"),
        "the decline did not turn into a grant"
    );
}

#[test]
fn the_console_talks_to_the_agent_over_a_pipe() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("memo__save", json!({"text": "milk"})),
            Reply::text("Saved it for you."),
        ],
    );
    let ws = memo_ws(&model, "");
    let input =
        "remember milk\ny\n/history\n/runs\n/sessions\n/session new\n/history\n/runs\n/quit\n";
    let (_, out) = Spawned::start(&mut ws.keel(), Some(input)).finish(Duration::from_secs(30));
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let text = out.stdout;
    let session = session_titled(&ws, "remember milk");
    let run_id = runs(&ws, &session)[0]["id"].as_str().unwrap().to_string();
    // In the order they were asked for.
    let expected = [
        "model: main (fake-main)".to_string(),
        "[tool] memo.save {\"text\":\"milk\"}\n".into(),
        "memo wants `kv` (tool memo.save with {\"text\":\"milk\"}); always grants `kv`\n".into(),
        "allow? [y]es / [n]o / [a]lways: y\n".into(),
        "[tool] memo.save ok (".into(),
        "): saved milk\n".into(),
        "Saved it for you.\n".into(),
        // /history
        "you: remember milk\n".into(),
        "[tool call] memo.save {\"text\":\"milk\"}\n".into(),
        "[tool result] memo.save: saved milk\n".into(),
        "keel: Saved it for you.\n".into(),
        // /runs
        format!("{run_id}  done"),
        // /sessions
        // The current session, with when it was last active and its runs.
        format!("* {session}  20"),
        "1 run, last done".into(),
        "  remember milk\n".into(),
        // /session new, then its empty history and runs
        "new session s_".into(),
        "no messages yet\n".into(),
        "no runs yet\n".into(),
    ];
    let mut at = 0;
    for e in &expected {
        match text[at..].find(e.as_str()) {
            Some(i) => at += i + e.len(),
            None => panic!("missing {e:?} after byte {at} in:\n{text}\n{}", out.stderr),
        }
    }
    assert!(
        !text.contains("nobody can answer"),
        "the approval was read from the next line:\n{text}"
    );
    assert_eq!(
        run(ws.keel().args(["call", "memo.save", "{\"text\":\"x\"}"])).status,
        1,
        "`y` allows once, it grants nothing"
    );
    assert_eq!(sessions(&ws).len(), 2);
}

/// Runs the console on a terminal over `ws`; returns what the driver
/// printed.
fn console_on_a_terminal(ws: &Ws, steps: Value) -> String {
    keel_on_a_terminal(ws, &[], steps)
}

#[test]
fn the_console_on_a_terminal_streams_and_ctrl_c_cancels_the_run() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("greet__hi", json!({})),
            Reply::text("The tool says hi there."),
            Reply::Stall {
                text: "Pondering deeply on this".into(),
                hold_ms: 30_000,
            },
        ],
    );
    let ws = Ws::new()
        .skill("greet", GREET, &[("main.luau", GREET_SRC)])
        .policy(&model_table("main", &model));
    let out = console_on_a_terminal(
        &ws,
        json!([
            ["expect", "banner", r"model: main \(fake-main\)"],
            ["send", "say hello\r"],
            ["expect", "tool started", r"\[tool\] greet\.hi \{\}"],
            [
                "expect",
                "tool finished",
                r"\[tool\] greet\.hi ok \(\d+ ms\): hi there"
            ],
            ["expect", "answer", r"The tool says hi there\."],
            ["send", "think about it\r"],
            // Shown while the model still holds the rest: streaming.
            ["expect", "first piece", r"Ponderin"],
            ["send", "\u{3}"],
            // Well before the 30 s hold ends.
            ["expect", "cancelled", r"\[cancelled\]"],
            ["send", "/runs\r"],
            [
                "expect",
                "runs",
                r"r_\S+\s+(\x1b\[\d+m)?done[^\n]*\n[^\n]*r_\S+\s+(\x1b\[\d+m)?cancelled"
            ],
            ["send", "/quit\r"],
            ["exit"],
        ]),
    );
    assert!(out.contains("EXIT 0"), "{out}");
    assert_eq!(model.request_count(), 3);
}

#[test]
fn the_console_on_a_terminal_starts_without_a_model_and_says_how_to_get_one() {
    let ws = Ws::new()
        .skill("greet", GREET, &[("main.luau", GREET_SRC)])
        .policy("");
    let out = console_on_a_terminal(
        &ws,
        json!([
            ["expect", "banner", r"1 skill, 1 tool"],
            ["expect", "no model", r"no model is configured"],
            ["expect", "how", r"OPENAI_BASE_URL"],
            ["expect", "keel.toml", r"keel\.toml"],
            ["send", "hello\r"],
            [
                "expect",
                "message without a model",
                r"meanwhile, /call TOOL"
            ],
            ["send", "/call greet.hi\r"],
            ["expect", "tools still work", r#""hi there""#],
            ["send", "/quit\r"],
            ["exit"],
        ]),
    );
    assert!(out.contains("EXIT 0"), "{out}");
}

#[test]
fn ctrl_c_at_an_approval_prompt_cancels_the_run_without_waiting_for_enter() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("memo__save", json!({"text": "milk"})),
            Reply::tool("memo__save", json!({"text": "eggs"})),
            Reply::text("Saved eggs."),
        ],
    );
    let ws = memo_ws(&model, "");
    let out = console_on_a_terminal(
        &ws,
        json!([
            ["expect", "banner", r"model: main \(fake-main\)"],
            ["send", "remember milk\r"],
            [
                "expect",
                "approval",
                r#"memo wants `kv` \(tool memo\.save with \{"text":"milk"\}\)"#
            ],
            [
                "expect",
                "prompt",
                r"allow\? \[y\]es / \[n\]o / \[a\]lways: "
            ],
            ["send", "\u{3}"],
            [
                "expect",
                "the request expired",
                r"\[approval a_\w+\] expired"
            ],
            ["expect", "cancelled", r"\[cancelled\]"],
            // The prompt works again, and the terminal answers approvals.
            ["send", "remember eggs\r"],
            [
                "expect",
                "second prompt",
                r"allow\? \[y\]es / \[n\]o / \[a\]lways: "
            ],
            ["send", "a\r"],
            ["expect", "granted", r"granted memo kv for good"],
            [
                "expect",
                "tool ran",
                r"\[tool\] memo\.save ok \(\d+ ms\): saved eggs"
            ],
            ["expect", "answer", r"Saved eggs\."],
            ["send", "/runs\r"],
            [
                "expect",
                "runs",
                r"r_\S+\s+(\x1b\[\d+m)?cancelled[^\n]*\n[^\n]*r_\S+\s+(\x1b\[\d+m)?done"
            ],
            ["send", "/quit\r"],
            ["exit"],
        ]),
    );
    assert!(out.contains("EXIT 0"), "{out}");
    assert_eq!(model.request_count(), 3);
    let grants = json_of(&ws, &["grants", "--json"]);
    assert!(grants.to_string().contains("\"memo\""), "{grants}");
}

#[test]
fn ask_on_a_terminal_reads_the_approval_and_ctrl_c_there_cancels() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("memo__save", json!({"text": "milk"})),
            Reply::text("Saved milk."),
            Reply::tool("memo__save", json!({"text": "eggs"})),
        ],
    );
    let ws = memo_ws(&model, "");
    let out = keel_on_a_terminal(
        &ws,
        &["ask", "remember milk"],
        json!([
            [
                "expect",
                "prompt",
                r"allow\? \[y\]es / \[n\]o / \[a\]lways: "
            ],
            ["send", "y\r"],
            [
                "expect",
                "tool ran",
                r"\[tool\] memo\.save ok \(\d+ ms\): saved milk"
            ],
            ["expect", "answer", r"Saved milk\."],
            ["exit"],
        ]),
    );
    assert!(out.contains("EXIT 0"), "{out}");
    let session = session_titled(&ws, "remember milk");
    let out = keel_on_a_terminal(
        &ws,
        &["ask", "--session", &session, "remember eggs"],
        json!([
            [
                "expect",
                "prompt",
                r"allow\? \[y\]es / \[n\]o / \[a\]lways: "
            ],
            ["send", "\u{3}"],
            ["expect", "cancelled", r"the run was cancelled"],
            ["exit"],
        ]),
    );
    assert!(out.contains("EXIT 130"), "{out}");
    let list = runs(&ws, &session);
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_eq!(list[0]["state"], "done");
    assert_eq!(list[1]["state"], "cancelled");
}

#[test]
fn sigint_cancels_a_streaming_ask_with_exit_130() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::Stall {
            text: "Pondering deeply on this".into(),
            hold_ms: 30_000,
        }],
    );
    let ws = notes_ws(&model, "");
    let mut asking = Spawned::start(ws.keel().args(["ask", "think"]), None);
    poll("the first piece on stdout", Duration::from_secs(15), || {
        asking.stdout() == "Ponderin"
    });
    assert!(asking.running());
    let sent = Command::new("kill")
        .args(["-INT", &asking.child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    // Well before the 30 s hold ends.
    let (_, out) = asking.finish(Duration::from_secs(15));
    assert_eq!(out.status, 130, "{out:?}");
    assert_eq!(out.stdout, "Ponderin\n", "the partial answer, ended");
    assert!(
        out.stderr.contains("the run was cancelled"),
        "{}",
        out.stderr
    );
    let session = session_titled(&ws, "think");
    assert_eq!(runs(&ws, &session)[0]["state"], "cancelled");
}

#[test]
fn the_console_switches_to_a_session_and_continues_it() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::text("First answer."), Reply::text("Continued.")],
    );
    let ws = notes_ws(&model, "");
    assert_eq!(ask(&ws, &["first question"]).status, 0);
    let session = session_titled(&ws, "first question");
    let input = format!(
        "/history\n/session switch s_nope\n/session switch {session}\n/history\nfollow up\n/runs\n/sessions\n/cancel\n/session bogus\n/quit\n"
    );
    let (_, out) = Spawned::start(&mut ws.keel(), Some(&input)).finish(Duration::from_secs(30));
    // `/session bogus` failed: its usage went to standard error, and the
    // console's exit status says a command failed.
    assert_eq!(out.status, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("usage: /session new | /session switch ID"),
        "{}",
        out.stderr
    );
    let text = out.stdout;
    let expected = [
        "no session yet: send a message, or /session switch ID\n".to_string(),
        "no session `s_nope` (see /sessions)\n".into(),
        format!("switched to session {session} (first question)\n"),
        "you: first question\nkeel: First answer.\n".into(),
        "Continued.\n".into(),
        // /runs: both runs of the session.
        "  done".into(),
        "  done".into(),
        format!("* {session}  20"),
        "runs, last done".into(),
        "  first question\n".into(),
        "no run in flight in this session\n".into(),
    ];
    let mut at = 0;
    for e in &expected {
        match text[at..].find(e.as_str()) {
            Some(i) => at += i + e.len(),
            None => panic!("missing {e:?} after byte {at} in:\n{text}\n{}", out.stderr),
        }
    }
    assert_eq!(
        sessions(&ws).len(),
        1,
        "the message went to the switched-to session"
    );
    let reqs = model.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(user_texts(&reqs[1].body), ["first question", "follow up"]);
}

/// Two keel processes sharing a session take turns: a message sent from a
/// second process while the first one's run streams is answered after that
/// run, with its answer in the context.
#[test]
fn two_processes_in_one_session_take_turns() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::Stall {
                text: "First answer, slowly.".into(),
                hold_ms: 1500,
            },
            Reply::text("Second answer."),
        ],
    );
    let ws = notes_ws(&model, "");
    let first = Spawned::start(ws.keel().args(["ask", "one"]), None);
    poll("the first request", Duration::from_secs(15), || {
        model.request_count() >= 1
    });
    let session = session_titled(&ws, "one");
    let second = ask(&ws, &["--session", &session, "two"]);
    assert_eq!(second.status, 0, "{}", second.stderr);
    assert_eq!(second.stdout, "Second answer.\n");
    let (status, out) = first.finish(Duration::from_secs(15));
    assert!(status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "First answer, slowly.\n");
    let reqs = model.requests();
    assert_eq!(reqs.len(), 2);
    let body = reqs[1].body.to_string();
    assert!(
        body.contains("First answer, slowly."),
        "the second run saw the first one's answer: {body}"
    );
    assert_eq!(user_texts(&reqs[1].body), ["one", "two"]);
    let list = runs(&ws, &session);
    assert_eq!(
        (list[0]["state"].as_str(), list[1]["state"].as_str()),
        (Some("done"), Some("done"))
    );
}

/// A run waiting for approval in one process is answered from another with
/// `keel approve`; `keel approvals` lists it first.
#[test]
fn an_approval_is_answered_from_another_process() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("memo__save", json!({"text": "milk"})),
            Reply::text("Saved."),
        ],
    );
    let ws = memo_ws(&model, "");
    let rt = common::runtime();
    let kernel = ws.kernel(&rt);
    let agent = keel::agent::Agent::new(kernel.clone()).expect("agent");
    let session = agent.new_session("t").expect("session");
    let _g = rt.enter();
    let mut handle = agent.submit(&session.id, "remember milk").expect("submit");
    let approval = common::agent::next_approval(&rt, &mut handle, Duration::from_secs(10));
    let listed = run(ws.keel().args(["approvals"]));
    assert!(
        listed.stdout.contains(&approval.id) && listed.stdout.contains("memo wants `kv`"),
        "{listed:?}"
    );
    let answered = run(ws.keel().args(["approve", &approval.id, "yes"]));
    assert_eq!(answered.status, 0, "{}", answered.stderr);
    assert!(answered.stdout.contains("answered"), "{}", answered.stdout);
    let outcome = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), handle.wait())
            .await
            .expect("the run goes on within 10 s of the answer")
    });
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.tool_calls[0].result.as_deref(), Some("saved milk"));
    assert!(!outcome.tool_calls[0].is_error);
    // Answering again: the same answer is fine, another is refused.
    assert_eq!(
        run(ws.keel().args(["approve", &approval.id, "y"])).status,
        0
    );
    let refused = run(ws.keel().args(["approve", &approval.id, "no"]));
    assert_ne!(refused.status, 0);
    assert!(
        refused.stderr.contains("already answered"),
        "{}",
        refused.stderr
    );
    let bad = run(ws.keel().args(["approve", &approval.id, "maybe"]));
    assert!(bad.stderr.contains("yes, no or always"), "{}", bad.stderr);
    let unknown = run(ws.keel().args(["approve", "a_nope", "yes"]));
    assert_ne!(unknown.status, 0);
    assert!(
        unknown.stderr.contains("no approval request `a_nope`"),
        "{}",
        unknown.stderr
    );
    assert!(
        kernel.store().all_grants().unwrap().is_empty(),
        "answering yes (once) and the refused answers granted nothing"
    );
}

/// `keel ask --json` is JSON whatever happens: with no model configured
/// (exit 2) and with a bad session (exit 1) stdout is one JSON object with
/// the error; the how-to stays on standard error.
#[test]
fn ask_json_is_json_in_every_outcome() {
    let bare = Ws::new().policy("");
    let out = ask(&bare, &["--json", "hello"]);
    assert_eq!(out.status, 2, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(v["state"], "error");
    assert!(
        out.stderr.contains("no model is configured"),
        "{}",
        out.stderr
    );

    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = notes_ws(&model, "");
    let out = ask(&ws, &["--json", "--session", "s_nope", "hello"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(v["state"], "error");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("no session `s_nope`")),
        "{v}"
    );
}

/// On a terminal, a model slow to send its first token gets a "waiting for
/// the model…" line on stderr, erased when the answer starts; in a pipe
/// (and with `--json`) there is none.
#[test]
fn a_slow_model_shows_a_waiting_hint_on_a_terminal_only() {
    let model = FakeModel::with_handler(Wire::OpenAi, |_| {
        // The handler runs before the reply's first byte.
        std::thread::sleep(Duration::from_millis(1500));
        Reply::text("Late but here.")
    });
    let ws = notes_ws(&model, "");
    let out = keel_on_a_terminal(
        &ws,
        &["ask", "hello"],
        json!([
            ["expect", "the hint", "waiting for the model"],
            [
                "expect",
                "erased, then the answer",
                "\u{1b}\\[KLate but here\\."
            ],
            ["exit"],
        ]),
    );
    assert!(out.contains("EXIT 0"), "{out}");
    let piped = ask(&ws, &["hello again"]);
    assert_eq!(piped.status, 0, "{}", piped.stderr);
    assert!(
        !piped.stderr.contains("waiting for the model"),
        "{}",
        piped.stderr
    );
    assert_eq!(piped.stdout, "Late but here.\n");
}
