//! The agent's figures with a zero-latency local fake model, printed (not
//! asserted).
//!
//! Run: `cargo bench --bench agent` (BENCHMARKS.md records the results).
//! The fake model (the same one the tests use, speaking the real OpenAI
//! streaming format over HTTP on 127.0.0.1) runs in a child process — this
//! benchmark re-executed with `--fake-model` — so that the memory figures
//! are keel's alone.

#[path = "common/console.rs"]
mod console;
#[path = "../tests/common/model.rs"]
mod model;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use model::{FakeModel, Reply, Wire};
use serde_json::{Value, json};

const NOOP: &str = r#"
[skill]
name = "bench"
version = "1.0.0"
entry = "main.luau"
[[tools]]
name = "noop"
description = "returns its argument"
parameters = { type = "object", properties = { x = { type = "number" } } }
"#;

const NOOP_SRC: &str = "local M = {}\nfunction M.noop(a) return a.x end\nreturn M\n";

/// One tool round, then an answer: a tool call when the last message is
/// the user's, the answer once a tool result came back.
fn one_tool_round(body: &Value) -> Reply {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["role"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    if last == "tool" {
        Reply::text("done")
    } else {
        Reply::tool("bench__noop", json!({"x": 1}))
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// `VmHWM` (peak) and `VmRSS` of this process, in MB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Starts the fake model in a child process; returns it and its base URL.
fn fake_model_process() -> (std::process::Child, String) {
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--fake-model")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("fake model process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("base url");
    (child, line.trim().to_string())
}

fn setup(root: &Path, base_url: &str) {
    write(
        root,
        "keel.toml",
        &format!(
            "[skills]\nbuiltin = false\n\n[models.main]\nprovider = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"fake\"\n"
        ),
    );
    write(root, "skills/bench/skill.toml", NOOP);
    write(root, "skills/bench/main.luau", NOOP_SRC);
}

fn main() {
    if std::env::args().any(|a| a == "--fake-model") {
        let model = FakeModel::with_handler(Wire::OpenAi, one_tool_round);
        println!("{}", model.base_url());
        let _ = std::io::stdout().flush();
        // Serve until the parent closes stdin.
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (mut server, base_url) = fake_model_process();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical");
    setup(&root, &base_url);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = keel::config::Config::load(&root.join("keel.toml")).expect("config");
    let kernel = keel::Kernel::builder(config)
        .data_dir(root.join(".data"))
        .env(BTreeMap::new())
        .runtime(rt.handle().clone())
        .build()
        .expect("kernel");
    let agent = keel::agent::Agent::new(kernel.clone()).expect("agent");
    let _enter = rt.enter();

    // 1. One run, message in → final answer out, one tool round (two model
    //    requests over HTTP, one tool call, every step written to SQLite).
    {
        let run_once = || {
            let s = agent.new_session("bench").expect("session");
            let t = Instant::now();
            let outcome = rt.block_on(agent.submit(&s.id, "go").expect("submit").wait());
            assert_eq!(outcome.state, "done", "{outcome:?}");
            t.elapsed()
        };
        for _ in 0..20 {
            run_once();
        }
        let mut times: Vec<Duration> = (0..300).map(|_| run_once()).collect();
        times.sort();
        println!(
            "run with one tool round (2 model requests, 1 tool call): p50 {:.2} ms, p99 {:.2} ms (target p50 <= 2 ms)",
            ms(pct(&times, 0.5)),
            ms(pct(&times, 0.99))
        );
    }

    // 2. 200 sessions at once, 10 turns each.
    {
        let sessions: Vec<String> = (0..200)
            .map(|i| agent.new_session(&format!("c{i}")).expect("session").id)
            .collect();
        let t = Instant::now();
        let results = rt.block_on(async {
            let mut tasks = Vec::new();
            for s in sessions {
                let agent = agent.clone();
                tasks.push(tokio::spawn(async move {
                    let mut failed = 0;
                    for turn in 0..10 {
                        let h = agent.submit(&s, &format!("turn {turn}")).expect("submit");
                        if h.wait().await.state != "done" {
                            failed += 1;
                        }
                    }
                    failed
                }));
            }
            let mut failed = 0;
            for t in tasks {
                failed += t.await.expect("task");
            }
            failed
        });
        let (peak, now) = memory();
        println!(
            "200 concurrent sessions x 10 turns (one tool round each): {:.1} s, {results} failed runs, keel peak RSS {peak:.1} MB (now {now:.1} MB) (target: no errors, < 100 MB)",
            t.elapsed().as_secs_f64()
        );
    }

    // 3. Process start to console prompt, with a model configured.
    {
        let bin = env!("CARGO_BIN_EXE_keel");
        let start = || {
            let t = Instant::now();
            let mut child = std::process::Command::new(bin)
                .current_dir(&root)
                .env("KEEL_DATA_DIR", root.join(".data"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("keel");
            let mut out = BufReader::new(child.stdout.take().expect("stdout"));
            let elapsed = console::time_to_prompt(&mut out, t);
            drop(child.stdin.take());
            let _ = child.wait();
            elapsed.expect("the console printed its prompt line")
        };
        start();
        let mut times: Vec<Duration> = (0..20).map(|_| start()).collect();
        times.sort();
        println!(
            "process start to console prompt (model configured, bench-profile binary): p50 {:.1} ms, p99 {:.1} ms (target <= 100 ms)",
            ms(pct(&times, 0.5)),
            ms(pct(&times, 0.99))
        );
    }

    // 4. First streamed token: from the moment the model's first chunk is
    //    written to the socket to the moment the console's event arrives.
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (sent_tx, sent_rx) = std::sync::mpsc::channel::<Instant>();
        let rounds = 50;
        std::thread::spawn(move || {
            for _ in 0..rounds {
                let Ok((mut sock, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(sock.try_clone().expect("clone"));
                let mut len = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                let chunk = |s: &str| format!("data: {s}\n\n");
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                let first = chunk(
                    r#"{"id":"c","object":"chat.completion.chunk","created":0,"model":"fake","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
                );
                let _ = sock.write_all(head.as_bytes());
                let _ = sock.write_all(first.as_bytes());
                let _ = sock.flush();
                let _ = sent_tx.send(Instant::now());
                std::thread::sleep(Duration::from_millis(20));
                let rest = chunk(
                    r#"{"id":"c","object":"chat.completion.chunk","created":0,"model":"fake","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
                ) + chunk("[DONE]").as_str();
                let _ = sock.write_all(rest.as_bytes());
            }
        });
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path().canonicalize().expect("canonical");
        setup(&r, &format!("http://127.0.0.1:{port}/v1"));
        let config = keel::config::Config::load(&r.join("keel.toml")).expect("config");
        let k = keel::Kernel::builder(config)
            .data_dir(r.join(".data"))
            .env(BTreeMap::new())
            .runtime(rt.handle().clone())
            .build()
            .expect("kernel");
        let a = keel::agent::Agent::new(k).expect("agent");
        let mut gaps = Vec::new();
        for _ in 0..rounds {
            let s = a.new_session("t").expect("session");
            let mut h = a.submit(&s.id, "hi").expect("submit");
            let received = rt.block_on(async {
                loop {
                    match h.events.recv().await {
                        Some(keel::agent::RunEvent::Text(_)) => break Instant::now(),
                        Some(_) => {}
                        None => panic!("the run ended without text"),
                    }
                }
            });
            let sent = sent_rx.recv().expect("sent");
            gaps.push(received.saturating_duration_since(sent));
            rt.block_on(h.wait());
        }
        gaps.sort();
        println!(
            "first streamed token, written by the model -> event in the console: p50 {:.3} ms, p99 {:.3} ms (target <= 5 ms)",
            ms(pct(&gaps, 0.5)),
            ms(pct(&gaps, 0.99))
        );
    }

    // 5. What each model request carries with the built-in skills: the
    //    system prompt and the tool schemas.
    {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path().canonicalize().expect("canonical");
        let k = keel::Kernel::builder(keel::config::Config::default_for(&r))
            .data_dir(r.join(".data"))
            .runtime(rt.handle().clone())
            .build()
            .expect("kernel");
        let set = k.skills();
        let prompt = keel::agent::prompt::system_prompt(None, &r.display().to_string(), &set);
        let tools = keel::agent::prompt::ToolMap::new(&set);
        let schemas: usize = tools
            .defs
            .iter()
            .map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len())
            .sum();
        println!(
            "per-request overhead with the built-in skills: system prompt {:.1} KB + {} tool schemas {:.1} KB = {:.1} KB (peers: 32-61 KB)",
            prompt.len() as f64 / 1024.0,
            tools.defs.len(),
            schemas as f64 / 1024.0,
            (prompt.len() + schemas) as f64 / 1024.0
        );
    }

    // 6. Twenty real keel processes asking ten times each on one data
    //    directory, half of them in one shared session (its runs take turns
    //    across processes): failed asks and wall time.
    {
        let bin = env!("CARGO_BIN_EXE_keel");
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path().canonicalize().expect("canonical");
        setup(&r, &base_url);
        let ask = |session: Option<&str>| {
            let mut cmd = std::process::Command::new(bin);
            cmd.current_dir(&r)
                .env("KEEL_DATA_DIR", r.join(".data"))
                .arg("ask")
                .arg("--json")
                .arg("go");
            if let Some(s) = session {
                cmd.arg("--session").arg(s);
            }
            cmd.output().expect("keel ask")
        };
        let first = ask(None);
        let shared: Value = serde_json::from_slice(&first.stdout).expect("run json");
        let shared = shared["session_id"]
            .as_str()
            .expect("session id")
            .to_string();
        let t = Instant::now();
        let failed: usize = std::thread::scope(|sc| {
            let workers: Vec<_> = (0..20)
                .map(|w| {
                    let shared = shared.clone();
                    let ask = &ask;
                    sc.spawn(move || {
                        (0..10)
                            .filter(|_| {
                                let out = ask((w % 2 == 0).then_some(shared.as_str()));
                                let done = serde_json::from_slice::<Value>(&out.stdout)
                                    .is_ok_and(|v| v["state"] == "done");
                                !(out.status.success() && done)
                            })
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|h| h.join().expect("worker")).sum()
        });
        println!(
            "20 processes x 10 keel ask on one data dir, half in one session: {failed} of 200 failed, {:.1} s wall (target: 0 failed)",
            t.elapsed().as_secs_f64()
        );
    }

    drop(server.stdin.take());
    let _ = server.wait();
}
