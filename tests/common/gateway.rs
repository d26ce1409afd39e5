//! Drives a real `keel serve` over real sockets on 127.0.0.1: starting it,
//! plain HTTP/1.1 requests written by hand (so a test controls every
//! header, and can send half a request), and reading event streams.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Ws;

/// A running `keel serve`; killed when dropped.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    pub token: String,
    /// Lines of its standard error, as they come.
    pub stderr: mpsc::Receiver<String>,
}

impl Serve {
    /// Starts `keel serve --listen 127.0.0.1:0` in the workspace and waits
    /// (at most 20 s) for its start-up line.
    pub fn start(ws: &Ws) -> Self {
        Self::start_with(ws, &[])
    }

    pub fn start_with(ws: &Ws, env: &[(&str, &str)]) -> Self {
        Self::start_at(ws, "127.0.0.1:0", env)
    }

    /// Starts it on `listen` (a restart on the address it had before).
    pub fn start_at(ws: &Ws, listen: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = ws.keel();
        cmd.args(["serve", "--listen", listen])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Killed with the test, even when the test process is killed
        // before its drops run.
        // SAFETY: prctl is async-signal-safe; nothing else runs here.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start keel serve");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("web console at http://").nth(1) {
                        let addr = rest.split('/').next().unwrap_or_default();
                        break addr.parse().expect("address in the start-up line");
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("keel serve did not start within 20 s; it said: {seen:#?}");
                }
            }
        };
        let token = env
            .iter()
            .find(|(k, _)| *k == "KEEL_TOKEN")
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| {
                std::fs::read_to_string(ws.data_dir().join("gateway.token"))
                    .expect("the token file")
                    .trim()
                    .to_string()
            });
        Self {
            child,
            addr,
            token,
            stderr: rx,
        }
    }

    /// A request with the token.
    pub fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.send("POST", path, &[], Some(&body.to_string()))
    }

    /// A request with the token, the right Host and `extra` headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        let auth = format!("Bearer {}", self.token);
        let host = self.addr.to_string();
        let mut headers: Vec<(&str, &str)> = vec![("Host", &host), ("Authorization", &auth)];
        for (k, v) in extra {
            headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
            headers.push((k, v));
        }
        raw_request(self.addr, method, path, &headers, body)
    }

    /// Opens an event stream (with the token) and reads its head.
    pub fn events(&self, path: &str, last_event_id: Option<&str>) -> Sse {
        let auth = format!("Bearer {}", self.token);
        let host = self.addr.to_string();
        let mut headers = vec![("Host", host.as_str()), ("Authorization", auth.as_str())];
        if let Some(id) = last_event_id {
            headers.push(("Last-Event-ID", id));
        }
        Sse::open(self.addr, path, &headers)
    }

    /// Sends SIGTERM and waits (at most `guard`) for the exit status.
    pub fn terminate(mut self, guard: Duration) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit(guard)
    }

    pub fn wait_exit(&mut self, guard: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + guard;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "keel serve did not exit within {guard:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most 10 s) for a line of standard error containing `text`.
    pub fn expect_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("keel serve never logged {text:?}"),
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        self.json()
    }

    /// Asserts an error answer: the status, the code, and that the message
    /// contains `fragment`.
    pub fn expect_error(&self, status: u16, code: &str, fragment: &str) {
        let v = self.expect(status);
        assert_eq!(v["error"]["code"], code, "{}", self.body);
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(fragment), "{msg:?} lacks {fragment:?}");
    }
}

/// Writes one request exactly as given (`Connection: close`) and reads
/// the whole response (at most 30 s).
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).expect("write the request");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// An open event stream.
pub struct Sse {
    pub status: u16,
    pub head: String,
    reader: BufReader<TcpStream>,
    chunked: bool,
    pending: String,
    /// Reading gives up here (keep-alive comments would otherwise keep a
    /// stream that never sends the awaited event open for ever).
    deadline: Instant,
}

impl Sse {
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).expect("write");
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Self {
            status,
            head,
            reader,
            chunked,
            pending: String::new(),
            deadline: Instant::now() + Duration::from_secs(30),
        }
    }

    /// The body of a non-stream answer (an error), read whole.
    pub fn error_body(mut self) -> Value {
        let mut rest = String::new();
        let _ = self.reader.read_to_string(&mut rest);
        let body = if self.chunked { dechunk(&rest) } else { rest };
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    }

    /// Reads more of the body into `pending`; false at the end.
    fn fill(&mut self) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = self.reader.get_ref().set_read_timeout(Some(left));
        if self.chunked {
            let mut size = String::new();
            if self.reader.read_line(&mut size).unwrap_or(0) == 0 {
                return false;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                return false;
            }
            let mut buf = vec![0; n + 2];
            if self.reader.read_exact(&mut buf).is_err() {
                return false;
            }
            self.pending.push_str(&String::from_utf8_lossy(&buf[..n]));
            true
        } else {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return false;
            }
            self.pending.push_str(&line);
            true
        }
    }

    /// The next event (comments skipped); `None` when the stream ends.
    pub fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut id = None;
                let mut event = "message".to_string();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() && id.is_none() {
                    continue; // a comment (keep-alive)
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(Event { id, event, data });
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Events up to and including the first named `name`.
    pub fn until(&mut self, name: &str) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = self.next() {
            let last = e.event == name;
            out.push(e);
            if last {
                return out;
            }
        }
        panic!("the stream ended before a `{name}` event; got {out:#?}");
    }

    /// Every event until the stream ends.
    pub fn rest(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = self.next() {
            out.push(e);
        }
        out
    }
}
