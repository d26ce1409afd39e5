//! Many real keel processes on one data directory: twenty workers asking
//! ten questions each (half of them in one shared session) and fifty
//! processes starting at once on an empty data directory. Every process
//! must succeed, every answer must be the one asked for, and the runs of
//! one session must never overlap — checked against the order in which
//! their transitions were written, not against clocks.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::Ws;
use common::agent::notes_ws;
use common::model::{FakeModel, Reply, Wire};
use serde_json::{Value, json};

/// What one process did.
#[derive(Debug)]
struct Exit {
    status: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to its end, killing it after `limit` (then `status` is -1).
fn run_bounded(cmd: &mut Command, limit: Duration) -> Exit {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keel");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code().unwrap_or(-1);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Exit {
        status,
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// The last user message of a request body.
fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A model that answers each question with one `notes.add` call (so each
/// run also writes through a skill's kv from an engine thread) and then
/// with `answer to: QUESTION`.
fn echo_model() -> FakeModel {
    FakeModel::with_handler(Wire::OpenAi, |body| {
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        let question = last_user_text(body);
        if last["role"] == "tool" {
            Reply::text(&format!("answer to: {question}"))
        } else {
            Reply::tool("notes__add", json!({ "text": question }))
        }
    })
}

/// Every run of `session` with its transitions in the order they were
/// written (the table's rowid: one sequence for all processes).
fn transitions(ws: &Ws, session: &str) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(ws.data_dir().join("keel.db")).expect("open keel.db");
    let mut st = db
        .prepare(
            "SELECT t.run_id, t.to_state FROM run_transitions t JOIN runs r ON r.id = t.run_id
             WHERE r.session_id = ?1 ORDER BY t.rowid",
        )
        .expect("query");
    st.query_map([session], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("transitions")
}

/// Asserts that no run of the session starts while another is between
/// `running` and its final state, and that every run ended `done`.
fn assert_runs_never_overlap(list: &[(String, String)], expected_runs: usize) {
    let mut active: Option<&str> = None;
    let mut finished: HashMap<&str, &str> = HashMap::new();
    for (run, state) in list {
        match state.as_str() {
            "queued" => {}
            "running" => {
                assert!(
                    active.is_none(),
                    "run {run} started while {active:?} was running: {list:#?}"
                );
                active = Some(run);
            }
            "waiting_permission" => {}
            end => {
                if active == Some(run.as_str()) {
                    active = None;
                }
                finished.insert(run, end);
            }
        }
    }
    assert_eq!(finished.len(), expected_runs, "{list:#?}");
    let failed: Vec<_> = finished.iter().filter(|(_, s)| **s != "done").collect();
    assert!(failed.is_empty(), "runs that did not end done: {failed:?}");
}

#[test]
fn twenty_processes_asking_ten_times_each_on_one_data_dir_all_succeed() {
    const WORKERS: usize = 20;
    const ASKS: usize = 10;
    let model = echo_model();
    let ws = notes_ws(&model, "");
    // The shared session, made by a first ask.
    let first = run_bounded(
        ws.keel().args(["ask", "--json", "open the shared session"]),
        Duration::from_secs(60),
    );
    assert_eq!(first.status, 0, "{}", first.stderr);
    let shared: Value = serde_json::from_str(&first.stdout).expect("ask --json");
    let shared = shared["session_id"]
        .as_str()
        .expect("session id")
        .to_string();

    let ws = Arc::new(ws);
    let start = Arc::new(Barrier::new(WORKERS));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let ws = ws.clone();
            let start = start.clone();
            let shared = shared.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut failures = Vec::new();
                for i in 0..ASKS {
                    let question = format!("question {i} of worker {w}");
                    let mut cmd = ws.keel();
                    cmd.arg("ask");
                    if w % 2 == 0 {
                        cmd.args(["--session", &shared]);
                    }
                    cmd.arg(&question);
                    let exit = run_bounded(&mut cmd, Duration::from_secs(300));
                    let expected = format!("answer to: {question}\n");
                    if exit.status != 0 || exit.stdout != expected {
                        failures.push(format!(
                            "worker {w} ask {i}: exit {}, stdout {:?}, stderr {:?}",
                            exit.status, exit.stdout, exit.stderr
                        ));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|h| h.join().expect("worker"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} asks failed:\n{}",
        failures.len(),
        WORKERS * ASKS,
        failures.join("\n")
    );
    let list = transitions(&ws, &shared);
    assert_runs_never_overlap(&list, 1 + WORKERS / 2 * ASKS);
    // Every tool call (a kv write from an engine thread) succeeded.
    let db = rusqlite::Connection::open(ws.data_dir().join("keel.db")).expect("open keel.db");
    let (ok, failed): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*) FILTER (WHERE is_error = 0), COUNT(*) FILTER (WHERE is_error = 1)
             FROM messages WHERE kind = 'tool'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("count");
    assert_eq!((ok, failed), (1 + (WORKERS * ASKS) as i64, 0));
}

#[test]
fn fifty_processes_starting_at_once_on_an_empty_data_dir_all_succeed() {
    const PROCESSES: usize = 50;
    let model = echo_model();
    let ws = Arc::new(notes_ws(&model, ""));
    assert!(!ws.data_dir().exists());
    let start = Arc::new(Barrier::new(PROCESSES));
    let procs: Vec<_> = (0..PROCESSES)
        .map(|i| {
            let ws = ws.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                let mut cmd = ws.keel();
                // A mix of what people start: listings, grants, and asks.
                match i % 3 {
                    0 => cmd.args(["sessions", "--json"]),
                    1 => cmd.args(["grant", "notes", "exec:git"]),
                    _ => cmd.args(["ask", &format!("hello {i}")]),
                };
                start.wait();
                (i, run_bounded(&mut cmd, Duration::from_secs(300)))
            })
        })
        .collect();
    let mut failures = Vec::new();
    for p in procs {
        let (i, exit) = p.join().expect("process thread");
        if exit.status != 0 {
            failures.push(format!(
                "process {i}: exit {}: {}",
                exit.status, exit.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {PROCESSES} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Migrated exactly once, to the current version, in WAL mode.
    let db = rusqlite::Connection::open(ws.data_dir().join("keel.db")).expect("open keel.db");
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let sessions: i64 = db
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
        .expect("sessions");
    assert_eq!(
        sessions as usize,
        (0..PROCESSES).filter(|i| i % 3 == 2).count()
    );
}

/// Polls `done` every 20 ms; panics with `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runs_json(ws: &Ws, session: &str) -> Vec<Value> {
    let out = run_bounded(
        ws.keel().args(["runs", session, "--json"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    serde_json::from_str::<Value>(&out.stdout)
        .expect("runs --json")
        .as_array()
        .expect("a list")
        .clone()
}

/// The console (`keel` with no command) fed `input` on a pipe.
fn console_over_a_pipe(ws: &Ws, args: &[&str], input: &str) -> Exit {
    use std::io::Write;
    let mut child = ws
        .keel()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the console");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("type");
    drop(stdin);
    // The console ends at /quit or at the end of its input.
    let out = child.wait_with_output().expect("console output");
    Exit {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn owner_files(ws: &Ws) -> Vec<String> {
    std::fs::read_dir(ws.data_dir().join("owners"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_killed_owner_s_run_is_listed_failed_without_another_ask_and_its_lock_file_is_cleaned() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        // The longest hold the fake allows: the run must still be running
        // while the listings below look at it, however slow this machine.
        vec![Reply::Stall {
            text: "Thinking hard".into(),
            hold_ms: 60_000,
        }],
    );
    let ws = notes_ws(&model, "");
    let mut child = ws
        .keel()
        .args(["ask", "think about it"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keel ask");
    wait_for("the model got the request", Duration::from_secs(30), || {
        model.request_count() >= 1
    });
    let session = || -> Option<String> {
        let out = run_bounded(
            ws.keel().args(["sessions", "--json"]),
            Duration::from_secs(60),
        );
        let list: Value = serde_json::from_str(&out.stdout).ok()?;
        list[0]["id"].as_str().map(str::to_string)
    };
    let id = session().expect("the ask's session");
    // While its process lives, listings leave the run alone: a listing
    // must not fail a live run.
    for _ in 0..3 {
        assert_eq!(runs_json(&ws, &id)[0]["state"], "running");
    }
    assert_eq!(owner_files(&ws).len(), 1, "{:?}", owner_files(&ws));
    let run_id = runs_json(&ws, &id)[0]["id"]
        .as_str()
        .expect("run id")
        .to_string();

    child.kill().expect("kill -9");
    child.wait().expect("reap");
    // No ask in between, and no agent starting (a console with no model
    // makes none): the console's listing itself tells the truth.
    ws.write("nomodel.toml", "[skills]\nbuiltin = false\n");
    let console = console_over_a_pipe(
        &ws,
        &["--config", "nomodel.toml"],
        &format!("/session switch {id}\n/runs\n/quit\n"),
    );
    assert!(
        console.stdout.contains(&format!("{run_id}  failed")),
        "{}\n{}",
        console.stdout,
        console.stderr
    );
    let list = runs_json(&ws, &id);
    assert_eq!(list[0]["state"], "failed", "{list:#?}");
    assert!(
        list[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("interrupted")),
        "{list:#?}"
    );
    assert!(owner_files(&ws).is_empty(), "{:?}", owner_files(&ws));
}

#[test]
fn the_overlap_check_catches_runs_that_overlap() {
    let t = |r: &str, s: &str| (r.to_string(), s.to_string());
    let overlapping = vec![
        t("a", "queued"),
        t("b", "queued"),
        t("a", "running"),
        t("b", "running"),
        t("a", "done"),
        t("b", "done"),
    ];
    assert!(std::panic::catch_unwind(|| assert_runs_never_overlap(&overlapping, 2)).is_err());
    let failed = vec![t("a", "queued"), t("a", "running"), t("a", "failed")];
    assert!(std::panic::catch_unwind(|| assert_runs_never_overlap(&failed, 1)).is_err());
    let fine = vec![
        t("a", "queued"),
        t("b", "queued"),
        t("a", "running"),
        t("a", "done"),
        t("b", "running"),
        t("b", "done"),
    ];
    assert_runs_never_overlap(&fine, 2);
}
