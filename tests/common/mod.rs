//! A small DSL for integration tests: a workspace in a temp dir with skills,
//! a policy, and either the real `keel` binary or an in-process kernel.
//!
//! ```ignore
//! let ws = Ws::new().skill("notes", MANIFEST, &[("main.luau", SRC)]).policy(POLICY);
//! ws.call("notes.add", json!({"text": "hi"})).ok();
//! ```
#![allow(dead_code)]

pub mod agent;
pub mod gateway;
pub mod leaky;
pub mod model;
pub mod pty;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

pub struct Ws {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

/// What a `keel call` produced.
#[derive(Debug)]
pub struct Called {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Called {
    /// The JSON result; panics with stderr if the call failed.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 0, "call failed: {}", self.stderr);
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// The error text; panics if the call succeeded.
    pub fn err(&self) -> &str {
        assert_ne!(
            self.status, 0,
            "call succeeded but should have failed: {}",
            self.stdout
        );
        assert!(
            self.stdout.is_empty(),
            "a failed call printed to stdout: {}",
            self.stdout
        );
        &self.stderr
    }

    /// Asserts the call failed with every fragment in its message.
    pub fn err_contains(&self, fragments: &[&str]) -> &Self {
        let e = self.err();
        for f in fragments {
            assert!(e.contains(f), "error lacks {f:?}: {e}");
        }
        self
    }
}

impl Default for Ws {
    fn default() -> Self {
        Self::new()
    }
}

impl Ws {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        std::fs::create_dir_all(root.join("skills")).expect("skills dir");
        Self { dir, root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes a file (creating folders).
    pub fn file(self, rel: &str, content: &str) -> Self {
        self.write(rel, content);
        self
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }

    /// Adds a folder skill `skills/<folder>` with a manifest and files.
    pub fn skill(self, folder: &str, manifest: &str, files: &[(&str, &str)]) -> Self {
        self.write(&format!("skills/{folder}/skill.toml"), manifest);
        for (rel, src) in files {
            self.write(&format!("skills/{folder}/{rel}"), src);
        }
        self
    }

    /// Writes `keel.toml`. Built-in skills are left out unless the text
    /// mentions `[skills]`, to keep tests independent of them.
    pub fn policy(self, toml: &str) -> Self {
        let text = if toml.contains("[skills]") {
            toml.to_string()
        } else {
            format!("[skills]\nbuiltin = false\n\n{toml}")
        };
        self.write("keel.toml", &text);
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join(".data")
    }

    /// The real binary, in the workspace, with its own data dir, and no
    /// model coming from the environment of whoever runs the tests.
    pub fn keel(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_keel"));
        c.current_dir(&self.root)
            .env("KEEL_DATA_DIR", self.data_dir())
            .env_remove("KEEL_LOG")
            .stdin(std::process::Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("OPENAI_") || k.starts_with("ANTHROPIC_") {
                c.env_remove(k);
            }
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Called {
        let out = self.keel().args(args).output().expect("run keel");
        Called {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `keel call TOOL ARGS`.
    pub fn call(&self, tool: &str, args: Value) -> Called {
        self.run(&["call", tool, &args.to_string()])
    }

    /// An in-process kernel over this workspace (`rt` must outlive it).
    pub fn kernel(&self, rt: &tokio::runtime::Runtime) -> keel::Kernel {
        self.kernel_with_env(rt, BTreeMap::new())
    }

    pub fn kernel_with_env(
        &self,
        rt: &tokio::runtime::Runtime,
        env: BTreeMap<String, String>,
    ) -> keel::Kernel {
        let cfg_path = self.root.join("keel.toml");
        let config = if cfg_path.exists() {
            keel::config::Config::load(&cfg_path).expect("config")
        } else {
            keel::config::Config::default_for(&self.root)
        };
        keel::Kernel::builder(config)
            .data_dir(self.data_dir())
            .env(env)
            .runtime(rt.handle().clone())
            .build()
            .expect("kernel")
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A tiny real HTTP/1.1 server on 127.0.0.1 for tests. Routes:
/// - `/text` → 200 "hello"
/// - `/json` → 200 {"ok":true}
/// - `/page` → 200 a small HTML page
/// - `/redirect?to=URL` → 302 to URL
/// - `/echo` → 200 with the request line and headers as the body
/// - anything else → 404
///
/// It stops when dropped; each connection is served once.
pub struct TestServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            // Bounded: at most 10 minutes, or until dropped.
            let until = std::time::Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            stop,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut head = request_line.clone();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let (status, extra, payload) = if target == "/text" {
        ("200 OK", String::new(), "hello".to_string())
    } else if target == "/page" {
        (
            "200 OK",
            "content-type: text/html; charset=utf-8\r\n".into(),
            "<html><head><title>Test page</title><style>p { color: red }</style></head>\
             <body><h1>Hello</h1><p>Fish &amp; chips</p><script>steal()</script></body></html>"
                .to_string(),
        )
    } else if target == "/json" {
        (
            "200 OK",
            "content-type: application/json\r\n".into(),
            "{\"ok\":true}".into(),
        )
    } else if let Some(to) = target.strip_prefix("/redirect?to=") {
        ("302 Found", format!("location: {to}\r\n"), String::new())
    } else if target == "/echo" {
        (
            "200 OK",
            String::new(),
            format!("{head}\n{}", String::from_utf8_lossy(&body)),
        )
    } else {
        ("404 Not Found", String::new(), "not found".into())
    };
    let mut s = stream;
    write!(
        s,
        "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{payload}",
        payload.len()
    )?;
    s.flush()
}

/// `promtool check metrics` over `text`: its exit status and output. A
/// missing promtool fails the test with how to install it (never a skip).
pub fn promtool_check(text: &str) -> (i32, String) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool is not installed; install it: apt-get install prometheus")
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool exits");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
