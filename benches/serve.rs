//! `keel serve` measured as a client sees it: the real binary against a
//! zero-latency fake model in a child process, over real sockets on
//! 127.0.0.1. Figures printed, not asserted (issue 11; BENCHMARKS.md).
//!
//! Run: `cargo bench --bench serve` (`KEEL_BENCH_BINS=a:b` for other
//! binaries). Figures:
//!
//! - S1 start → `/healthz` answers (20 skills installed), 21 starts;
//! - S2 resident memory 5 s after ready, idle;
//! - S3 message posted → its first SSE `text` event, 200 messages;
//! - S4 500 `/v1/events` subscribers and 100 runs at once: errors, the
//!   subscribers' view (every run's `run.finished` seen by all), peak RSS;
//! - S5 one authenticated JSON request (`GET /v1/approvals`) on a
//!   keep-alive connection, round trip, 2,000 requests.

#[path = "common/keel.rs"]
mod common;
#[path = "../tests/common/model.rs"]
mod model;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{fake_model_process, keel, load, mb, median, ms, proc_status_kb, quantile, workspace};
use model::{FakeModel, Reply, Wire};

const STARTS: usize = 21;
const SKILLS: usize = 20;
const MESSAGES: usize = 200;
const SUBSCRIBERS: usize = 500;
const RUNS: usize = 100;
const REQUESTS: usize = 2000;

struct Server {
    child: Child,
    addr: SocketAddr,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `keel serve` and waits for `/healthz`; returns it and the time
/// from spawn to the first 200.
fn start(bin: &Path, root: &Path) -> (Server, Duration) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let started = Instant::now();
    let child = keel(bin, root)
        .args(["serve", "--listen", &addr.to_string()])
        .env("KEEL_TOKEN", "bench-token-0123456789abcdef0123456789")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keel serve");
    let deadline = started + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = write!(
                s,
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "keel serve did not answer /healthz within 20 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let ready = started.elapsed();
    (
        Server {
            child,
            addr,
            token: "bench-token-0123456789abcdef0123456789".into(),
        },
        ready,
    )
}

/// One request on its own connection; returns (status, body).
fn request(srv: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(srv.addr).expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
        srv.addr, srv.token
    );
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn json_field(body: &str, field: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v[field].as_str().unwrap_or_default().to_string()
}

/// Opens an event stream and reads its head; the reader then yields the
/// body's lines (chunk sizes included, which never start with `event:`).
fn open_stream(srv: &Server, path: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(srv.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        srv.addr, srv.token
    )
    .expect("write");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status");
    assert!(line.starts_with("HTTP/1.1 200"), "stream refused: {line}");
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    r
}

/// Reads until an `event: NAME` line; false at the end of the stream.
fn read_until(r: &mut BufReader<TcpStream>, name: &str) -> bool {
    let want = format!("event: {name}");
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line.trim_end() == want => return true,
            Ok(_) => {}
        }
    }
}

fn main() {
    if common::serve_fake_model_if_child(|| {
        let model =
            FakeModel::with_handler(Wire::OpenAi, |_| Reply::text("Hello! How can I help?"));
        let url = model.base_url();
        (model, url)
    }) {
        return;
    }
    let bins = common::bins(env!("CARGO_BIN_EXE_keel"));
    let (mut model, base_url) = fake_model_process();
    let (_d, root) = workspace(&base_url, SKILLS, "\n[gateway]\nmax_streams = 1000\n");
    println!("load average before: {}", load());
    for bin in &bins {
        println!("== {}", bin.display());
        // S1: start → /healthz.
        let mut ready = Vec::new();
        for _ in 0..STARTS {
            let (srv, t) = start(bin, &root);
            ready.push(t);
            drop(srv);
        }
        println!(
            "S1 start → /healthz, {SKILLS} skills: p50 {:.1} ms (min {:.1}, max {:.1})",
            ms(median(ready.clone())),
            ms(*ready.iter().min().unwrap()),
            ms(*ready.iter().max().unwrap())
        );
        let (srv, _) = start(bin, &root);
        // S2: idle RSS 5 s after ready.
        std::thread::sleep(Duration::from_secs(5));
        let pid = srv.child.id();
        println!(
            "S2 idle RSS 5 s after ready: {:.1} MB (anonymous {:.1} MB, file {:.1} MB)",
            mb(proc_status_kb(pid, "VmRSS:")),
            mb(proc_status_kb(pid, "RssAnon:")),
            mb(proc_status_kb(pid, "RssFile:"))
        );
        // S5: an authenticated JSON request on a keep-alive connection.
        {
            let mut s = TcpStream::connect(srv.addr).expect("connect");
            s.set_nodelay(true).unwrap();
            let req = format!(
                "GET /v1/approvals HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
                srv.addr, srv.token
            );
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut times = Vec::new();
            for _ in 0..REQUESTS {
                let t = Instant::now();
                s.write_all(req.as_bytes()).unwrap();
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                times.push(t.elapsed());
            }
            println!(
                "S5 GET /v1/approvals, keep-alive round trip: p50 {:.0} µs, p99 {:.0} µs",
                median(times.clone()).as_secs_f64() * 1e6,
                quantile(times, 0.99).as_secs_f64() * 1e6
            );
        }
        // S4: 500 subscribers and 100 runs at once — first, while the
        // server has had no run: a new subscriber replays the events kept,
        // so the count below is of these runs only.
        let srv = std::sync::Arc::new(srv);
        let subscribers: Vec<_> = (0..SUBSCRIBERS)
            .map(|_| {
                let srv = srv.clone();
                std::thread::spawn(move || {
                    let mut r = open_stream(&srv, "/v1/events");
                    (0..RUNS)
                        .filter(|_| read_until(&mut r, "run.finished"))
                        .count()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        let runs: Vec<_> = (0..RUNS)
            .map(|_| {
                let srv = srv.clone();
                std::thread::spawn(move || -> Result<(), String> {
                    let (st, body) = request(&srv, "POST", "/v1/sessions", Some("{}"));
                    if st != 201 {
                        return Err(format!("session: {st} {body}"));
                    }
                    let s = json_field(&body, "id");
                    let (st, body) = request(
                        &srv,
                        "POST",
                        &format!("/v1/sessions/{s}/messages"),
                        Some(r#"{"text": "hi"}"#),
                    );
                    if st != 202 {
                        return Err(format!("message: {st} {body}"));
                    }
                    let run = json_field(&body, "run_id");
                    let mut r = open_stream(&srv, &format!("/v1/runs/{run}/events"));
                    if !read_until(&mut r, "done") {
                        return Err("no done".into());
                    }
                    Ok(())
                })
            })
            .collect();
        let errors: Vec<String> = runs
            .into_iter()
            .filter_map(|h| h.join().ok().and_then(|r| r.err()))
            .collect();
        let took = started.elapsed();
        let seen: Vec<usize> = subscribers
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .collect();
        let complete = seen.iter().filter(|&&n| n == RUNS).count();
        println!(
            "S4 {SUBSCRIBERS} subscribers + {RUNS} runs: {} errors, all {RUNS} runs in {:.0} ms, {complete}/{SUBSCRIBERS} subscribers saw every run.finished, peak RSS {:.1} MB",
            errors.len(),
            ms(took),
            mb(proc_status_kb(srv.child.id(), "VmHWM:"))
        );
        for e in errors.iter().take(3) {
            println!("   error: {e}");
        }
        // S3: message posted → first text event.
        let (_, body) = request(&srv, "POST", "/v1/sessions", Some("{}"));
        let session = json_field(&body, "id");
        let mut first = Vec::new();
        for _ in 0..MESSAGES {
            let t = Instant::now();
            let (status, body) = request(
                &srv,
                "POST",
                &format!("/v1/sessions/{session}/messages"),
                Some(r#"{"text": "hello"}"#),
            );
            assert_eq!(status, 202, "{body}");
            let run = json_field(&body, "run_id");
            let mut r = open_stream(&srv, &format!("/v1/runs/{run}/events"));
            assert!(read_until(&mut r, "text"), "no text event");
            first.push(t.elapsed());
            read_until(&mut r, "done");
        }
        println!(
            "S3 message posted → first SSE text: p50 {:.2} ms, p99 {:.2} ms",
            ms(median(first.clone())),
            ms(quantile(first, 0.99))
        );
    }
    println!("load average after: {}", load());
    drop(model.stdin.take());
    let _ = model.wait();
}
