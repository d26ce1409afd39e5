//! A fake model server for integration tests and benchmarks: real TCP on
//! 127.0.0.1 speaking the streaming wire formats of OpenAI Chat Completions
//! and Anthropic Messages, event for event as the hosted APIs send them.
//!
//! ```ignore
//! let model = FakeModel::scripted(Wire::Anthropic, vec![
//!     Reply::tool("notes.add", json!({"text": "hi"})),
//!     Reply::text("Noted."),
//! ]);
//! // put model.base_url() in keel's [models] config, run the agent, then:
//! assert_eq!(model.requests()[1].body["messages"][2]["role"], "user");
//! ```
//!
//! The server runs on its own thread with its own tokio runtime, so it works
//! from a plain `#[test]` and from inside any other runtime. It speaks
//! HTTP/1.1 with keep-alive (several requests per connection, streams sent
//! with `transfer-encoding: chunked`), the way reqwest expects.
//!
//! Streams follow the real formats so keel's decoders meet what production
//! sends: text in several deltas, tool-call arguments split across
//! fragments (OpenAI calls interleaved by `index`), an Anthropic `ping`,
//! usage in the last events, `data: [DONE]` for OpenAI.
//!
//! The server is STRICT, as llama-server's chat templates are: a request
//! whose roles do not alternate, whose tool results do not answer the
//! calls just made, whose call arguments are not JSON, or which ends on an
//! assistant turn is refused with the error body llama-server (OpenAI
//! wire) or Anthropic sends, without using a scripted reply, and counted in
//! [`FakeModel::refusals`]. Every agent test thus checks that keel's
//! context is well formed. [`FakeModel::lenient`] turns this off.
//!
//! Besides well-behaved answers it reproduces what real servers do when
//! things go wrong: llama-server's exact error bodies ([`Reply::Raw`],
//! [`Reply::ContextOverflow`]), a turn cut by the output limit in the
//! middle of a tool call ([`Reply::LengthInTool`]), a stream that sends only
//! keep-alive comments ([`Reply::KeepAliveOnly`]), an HTML page with status
//! 200 ([`Reply::Html`]), a huge answer ([`Reply::Huge`]), a single huge
//! line ([`Reply::HugeLine`]), a cut stream ([`Reply::Cut`]) and an answer
//! without usage ([`Reply::NoUsage`]).
//!
//! Everything is bounded: request heads and bodies, the number of recorded
//! requests, idle keep-alive connections, stalls, and the server's lifetime.
//! Dropping [`FakeModel`] stops the server and closes every connection.
//!
//! Self-contained (std, tokio, serde_json) so that a bench can include it
//! with `#[path = "../tests/common/model.rs"] mod model;`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Requests kept for [`FakeModel::requests`]; later ones are only counted.
const MAX_RECORDED: usize = 10_000;
/// Requests served on one connection before it is closed.
const MAX_REQUESTS_PER_CONNECTION: usize = 100_000;
/// How long a connection may sit without sending anything. Longer than
/// reqwest's 90 s pool idle timeout, so the client always closes first and
/// never reuses a connection the server is closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a client to take a write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest [`Reply::Stall`] hold.
const MAX_HOLD: Duration = Duration::from_secs(60);
/// A leaked server stops after this long.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Characters per text delta, at most (about four tokens).
const TEXT_PIECE: usize = 16;
/// Characters per tool-argument fragment, at most.
const ARGS_PIECE: usize = 12;
/// Listen backlog: a benchmark opens hundreds of connections at once.
const BACKLOG: u32 = 1024;

/// Which provider's wire format the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions: `POST {base}/v1/chat/completions`.
    OpenAi,
    /// Anthropic Messages: `POST {base}/v1/messages`.
    Anthropic,
}

/// One tool call the fake model makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallSpec {
    /// The call id; empty means "generate one" (`call_…` or `toolu_…`).
    pub id: String,
    pub name: String,
    /// The arguments as raw JSON text, sent as is (may be malformed on
    /// purpose).
    pub arguments: String,
}

impl ToolCallSpec {
    /// A call with a generated id and these raw argument text.
    pub fn new(name: &str, arguments: &str) -> Self {
        Self {
            id: String::new(),
            name: name.to_string(),
            arguments: arguments.to_string(),
        }
    }
}

/// What the fake model answers to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A streamed text answer (at least 3 deltas when it has at least 3
    /// characters), stop reason `end_turn` / `stop`.
    Text(String),
    /// Optional text first, then tool calls (each call's arguments split
    /// across at least 2 fragments; OpenAI calls interleave), stop reason
    /// `tool_use` / `tool_calls`.
    Tools {
        text: String,
        calls: Vec<ToolCallSpec>,
    },
    /// An HTTP error status with the provider's error body and, if given, a
    /// `Retry-After` header (seconds).
    Status {
        code: u16,
        retry_after: Option<u64>,
        message: String,
    },
    /// The headers and the start of a text stream (through the first text
    /// delta), then the connection closes without the final events.
    Cut(String),
    /// The first text delta, then a wait of `hold_ms` (at most 60 s) before
    /// the rest. If the client disconnects during the wait the stream ends
    /// quietly and [`FakeModel::abandoned_streams`] counts it.
    Stall { text: String, hold_ms: u64 },
    /// Text, then a tool call whose arguments stop after `sent` (a prefix
    /// of the JSON), then finish_reason `length` / stop_reason
    /// `max_tokens`: the turn hit the output limit mid-call.
    LengthInTool {
        text: String,
        name: String,
        sent: String,
    },
    /// A text answer that hit the output limit: finish_reason `length` /
    /// stop_reason `max_tokens`.
    Length(String),
    /// The first text delta, then only `: keep-alive` comments every 100 ms
    /// until the client leaves (at most 60 s; counted in
    /// [`FakeModel::abandoned_streams`]).
    KeepAliveOnly(String),
    /// Status 200 with an HTML page, as a proxy's login page answers.
    Html,
    /// A text answer of `bytes` bytes (in 64 KiB deltas); stops when the
    /// client leaves.
    Huge { bytes: usize },
    /// One SSE data line of `bytes` bytes, then the end of the stream.
    HugeLine { bytes: usize },
    /// The provider's "too long for the context" error: llama-server's 400
    /// `exceed_context_size_error` or Anthropic's "prompt is too long".
    ContextOverflow,
    /// A text answer whose stream carries no token counts.
    NoUsage(String),
    /// Exactly this status and JSON body (e.g. llama-server's 500 for a
    /// request its template cannot render).
    Raw { code: u16, body: String },
    /// A text answer that reports exactly `input_tokens` prompt tokens (a
    /// model whose tokenizer counts fewer than keel estimates).
    Counted { text: String, input_tokens: u64 },
}

impl Reply {
    pub fn text(s: &str) -> Self {
        Self::Text(s.to_string())
    }

    /// One tool call with a generated id.
    pub fn tool(name: &str, args: Value) -> Self {
        Self::tools(&[(name, args)])
    }

    /// Several tool calls (generated ids), no text.
    pub fn tools(calls: &[(&str, Value)]) -> Self {
        Self::Tools {
            text: String::new(),
            calls: calls
                .iter()
                .map(|(name, args)| ToolCallSpec::new(name, &args.to_string()))
                .collect(),
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The request target, e.g. `/v1/messages`.
    pub path: String,
    /// Header names in lowercase, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The JSON body; a body that is not JSON is kept as a string.
    pub body: Value,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = Box<dyn Fn(&Value) -> Reply + Send + Sync>;

/// What the connections share.
struct Shared {
    wire: Wire,
    strict: std::sync::atomic::AtomicBool,
    refusals: Mutex<Vec<String>>,
    handler: Option<Handler>,
    state: Mutex<State>,
    abandoned: AtomicUsize,
    connections: AtomicUsize,
}

struct State {
    /// Script replies not yet served (unused with a handler).
    queue: VecDeque<Reply>,
    scripted: usize,
    recorded: Vec<Recorded>,
    /// Every request, recorded or not.
    received: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the requests from the next
        // assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a request and picks its reply; returns the request's number
    /// (1-based) too. A request on the wrong route (`routed` false) is
    /// recorded but takes no reply.
    fn take(&self, rec: Recorded, routed: bool) -> (usize, Option<Reply>) {
        let mut state = self.lock();
        state.received += 1;
        let n = state.received;
        let handler = self.handler.as_ref().filter(|_| routed);
        let body = handler.map(|_| rec.body.clone());
        if state.recorded.len() < MAX_RECORDED {
            state.recorded.push(rec);
        }
        if !routed {
            return (n, None);
        }
        let (Some(handler), Some(body)) = (handler, body) else {
            let reply = state.queue.pop_front().unwrap_or_else(|| Reply::Status {
                code: 500,
                retry_after: None,
                message: format!(
                    "fake model: the script ran out: request {n} came after all {} scripted replies were used",
                    state.scripted
                ),
            });
            return (n, Some(reply));
        };
        // The handler runs outside the lock, so concurrent requests do not
        // wait on each other.
        drop(state);
        let reply = catch_unwind(AssertUnwindSafe(|| handler(&body))).unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Reply::Status {
                code: 500,
                retry_after: None,
                message: format!("fake model: the handler panicked: {why}"),
            }
        });
        (n, Some(reply))
    }
}

/// A fake model server on 127.0.0.1; stops when dropped.
pub struct FakeModel {
    wire: Wire,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeModel {
    /// Serves `replies` in order, one per request; when they run out,
    /// answers 500 with a message saying the script ran out.
    pub fn scripted(wire: Wire, replies: Vec<Reply>) -> Self {
        let scripted = replies.len();
        Self::start(wire, None, replies.into(), scripted)
    }

    /// Answers every request with `f(&request_body)`, for any number of
    /// requests on any number of connections. A panic in `f` becomes a 500.
    pub fn with_handler(wire: Wire, f: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Self {
        Self::start(wire, Some(Box::new(f)), VecDeque::new(), 0)
    }

    fn start(
        wire: Wire,
        handler: Option<Handler>,
        queue: VecDeque<Reply>,
        scripted: usize,
    ) -> Self {
        let shared = Arc::new(Shared {
            wire,
            strict: std::sync::atomic::AtomicBool::new(true),
            refusals: Mutex::new(Vec::new()),
            handler,
            state: Mutex::new(State {
                queue,
                scripted,
                recorded: Vec::new(),
                received: 0,
            }),
            abandoned: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let server = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-model".into())
            .spawn(move || run_server(server, stop_rx, ready_tx))
            .expect("spawn the fake model's thread");
        let addr = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!("fake model: cannot listen on 127.0.0.1: {e}"),
            Err(_) => panic!("fake model: the server did not start within 10 s"),
        };
        Self {
            wire,
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The base URL for keel's config: `http://127.0.0.1:PORT/v1` for
    /// OpenAI, `http://127.0.0.1:PORT` for Anthropic.
    pub fn base_url(&self) -> String {
        match self.wire {
            Wire::OpenAi => format!("http://{}/v1", self.addr),
            Wire::Anthropic => format!("http://{}", self.addr),
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order (the first 10 000).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().recorded.clone()
    }

    /// How many requests arrived, including any past the recorded ones.
    pub fn request_count(&self) -> usize {
        self.shared.lock().received
    }

    /// Scripted replies not yet served (0 with a handler).
    pub fn remaining(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// How many [`Reply::Stall`] streams ended because the client went away
    /// during the hold.
    pub fn abandoned_streams(&self) -> usize {
        self.shared.abandoned.load(Ordering::SeqCst)
    }

    /// How many TCP connections the server accepted (keep-alive shows as
    /// fewer connections than requests).
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// Stops refusing malformed conversations (see the module doc).
    pub fn lenient(self) -> Self {
        self.shared.strict.store(false, Ordering::SeqCst);
        self
    }

    /// Why each refused request was refused, in order.
    pub fn refusals(&self) -> Vec<String> {
        self.shared
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What a strict server says about a request's conversation, if it refuses
/// it: (status, JSON body, short reason).
fn strict_check(wire: Wire, body: &Value) -> Option<(u16, String, String)> {
    let messages = body.get("messages")?.as_array()?;
    match wire {
        Wire::OpenAi => check_openai(messages),
        Wire::Anthropic => check_anthropic(messages),
    }
}

fn llama_error(code: u16, kind: &str, message: &str) -> String {
    json!({"error": {"code": code, "message": message, "type": kind}}).to_string()
}

fn check_openai(messages: &[Value]) -> Option<(u16, String, String)> {
    const ALTERNATE: &str = "Conversation roles must alternate user/assistant/user/assistant/...";
    let refuse = |why: String| {
        Some((
            400,
            llama_error(400, "invalid_request_error", ALTERNATE),
            why,
        ))
    };
    let mut last_role = "";
    let mut open: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        match role {
            "system" if last_role.is_empty() => continue,
            "tool" => {
                let id = m["tool_call_id"].as_str().unwrap_or("");
                let Some(pos) = open.iter().position(|c| c == id) else {
                    return refuse(format!(
                        "message {i}: tool result {id:?} answers no open call"
                    ));
                };
                open.remove(pos);
                // Tool results stand on the user's side of the turn: the
                // model (or, some templates allow, the user) speaks next.
                if open.is_empty() {
                    last_role = "tool";
                }
                continue;
            }
            "user" | "assistant" => {}
            other => return refuse(format!("message {i}: role {other:?}")),
        }
        if !open.is_empty() {
            return refuse(format!("message {i}: calls {open:?} have no result"));
        }
        let expected = match last_role {
            "user" => "assistant",
            "tool" => role,
            _ => "user",
        };
        if role != expected {
            return refuse(format!("message {i}: {role} after {last_role:?}"));
        }
        last_role = role;
        if role == "assistant" {
            for c in m["tool_calls"].as_array().into_iter().flatten() {
                let args = c["function"]["arguments"].as_str().unwrap_or("");
                // llama-server parses the arguments to render the template.
                if let Err(e) = serde_json::from_str::<Value>(args) {
                    let message = format!(
                        "[json.exception.parse_error.101] parse error at line {}, column {}: syntax error while parsing value - {e}",
                        e.line(),
                        e.column()
                    );
                    return Some((
                        500,
                        llama_error(500, "server_error", &message),
                        format!("message {i}: arguments {args:?} are not JSON"),
                    ));
                }
                open.push(c["id"].as_str().unwrap_or("").to_string());
            }
        }
    }
    if last_role == "assistant" && open.is_empty() {
        return refuse("the conversation ends on an assistant turn".into());
    }
    None
}

fn check_anthropic(messages: &[Value]) -> Option<(u16, String, String)> {
    let refuse = |message: String| {
        let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
        Some((400, body.to_string(), message))
    };
    let mut open: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return refuse(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            ));
        }
        let blocks = m["content"].as_array().cloned().unwrap_or_default();
        if role == "user" {
            for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
                let id = b["tool_use_id"].as_str().unwrap_or("");
                let Some(pos) = open.iter().position(|c| c == id) else {
                    return refuse(format!(
                        "messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    ));
                };
                open.remove(pos);
            }
            if !open.is_empty() {
                return refuse(format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}",
                    open.join(", ")
                ));
            }
        } else {
            open = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| b["id"].as_str().unwrap_or("").to_string())
                .collect();
        }
    }
    None
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_server(
    shared: Arc<Shared>,
    stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<io::Result<SocketAddr>>,
) {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("fake-model-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match listen() {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(listener.local_addr());
        accept_loop(listener, shared, stop).await;
    });
    // Cancels every connection task at its next await.
    rt.shutdown_timeout(Duration::from_secs(2));
}

fn listen() -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(BACKLOG)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let end = sleep_until(Instant::now() + MAX_LIFETIME);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = &mut end => return,
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        // Any I/O error ends only this connection.
                        let _ = serve_connection(sock, shared).await;
                    });
                }
                // Out of file descriptors, say: back off rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// One parsed HTTP request.
struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The client asked to close the connection after this request.
    close: bool,
}

/// A connection and the bytes read from it but not yet used.
struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads more bytes; 0 means the client closed.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(16 * 1024);
        match timeout(IDLE_TIMEOUT, self.sock.read_buf(&mut self.buf)).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Writes all of `bytes`, within [`WRITE_TIMEOUT`] (a client that
    /// stops reading must not hold the task forever). TCP_NODELAY is set,
    /// so each call goes out at once, as a real server flushes each event.
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match timeout(WRITE_TIMEOUT, self.sock.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Takes bytes up to `delim` (excluded, and consumed), reading at most
    /// `limit` bytes; `None` if the client closed first.
    async fn take_until(&mut self, delim: &[u8], limit: usize) -> io::Result<Option<Vec<u8>>> {
        let mut searched = 0;
        loop {
            if let Some(pos) = find(&self.buf[searched..], delim) {
                let end = searched + pos;
                let rest = self.buf.split_off(end + delim.len());
                let mut taken = std::mem::replace(&mut self.buf, rest);
                taken.truncate(end);
                return Ok(Some(taken));
            }
            if self.buf.len() > limit {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "too long"));
            }
            searched = self.buf.len().saturating_sub(delim.len() - 1);
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Takes exactly `n` bytes.
    async fn take_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// The next request; `None` when the client closed between requests.
    /// A head or body over the limits is answered (431 or 413) and ends the
    /// connection.
    async fn read_request(&mut self, wire: Wire) -> io::Result<Option<HttpRequest>> {
        let head = match self.take_until(b"\r\n\r\n", MAX_HEAD).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                self.refuse(wire, 431, "request head over 64 KiB").await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let head = String::from_utf8_lossy(&head);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split_whitespace();
        let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
        else {
            self.refuse(
                wire,
                400,
                &format!("malformed request line {request_line:?}"),
            )
            .await;
            return Ok(None);
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let close = match header("connection") {
            Some(c) if c.contains("close") => true,
            Some(c) if c.contains("keep-alive") => false,
            _ => version == "HTTP/1.0",
        };
        let body = if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            match self.read_chunked().await? {
                Some(body) => body,
                None => {
                    self.refuse(wire, 413, "request body over 32 MiB").await;
                    return Ok(None);
                }
            }
        } else {
            let len = header("content-length").map_or(Ok(0), |v| v.trim().parse::<usize>());
            match len {
                Ok(len) if len <= MAX_BODY => self.take_exact(len).await?,
                Ok(_) => {
                    self.refuse(wire, 413, "request body over 32 MiB").await;
                    return Ok(None);
                }
                Err(_) => {
                    self.refuse(wire, 400, "malformed content-length").await;
                    return Ok(None);
                }
            }
        };
        Ok(Some(HttpRequest {
            method: method.to_string(),
            path: path.to_string(),
            headers,
            body,
            close,
        }))
    }

    /// A chunked request body; `None` if it is over [`MAX_BODY`].
    async fn read_chunked(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut body = Vec::new();
        // Bounded: every round but the last adds at least one byte.
        loop {
            let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed chunk");
            let line = self.take_until(b"\r\n", 1024).await?.ok_or_else(bad)?;
            let line = String::from_utf8_lossy(&line);
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| bad())?;
            if size == 0 {
                // Trailers, up to the blank line.
                let mut trailer_bytes = 0;
                while let Some(t) = self.take_until(b"\r\n", MAX_HEAD).await? {
                    if t.is_empty() {
                        return Ok(Some(body));
                    }
                    trailer_bytes += t.len();
                    if trailer_bytes > MAX_HEAD {
                        return Err(bad());
                    }
                }
                return Err(bad());
            }
            if body.len() + size > MAX_BODY {
                return Ok(None);
            }
            let data = self.take_exact(size + 2).await?;
            body.extend_from_slice(&data[..size]);
        }
    }

    /// Answers a request that cannot be served and closes.
    async fn refuse(&mut self, wire: Wire, code: u16, message: &str) {
        let _ = write_status(self, wire, 0, code, None, message, true).await;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn serve_connection(sock: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut conn = Conn {
        sock,
        buf: Vec::new(),
    };
    for served in 1..=MAX_REQUESTS_PER_CONNECTION {
        let Some(req) = conn.read_request(shared.wire).await? else {
            break;
        };
        let last = req.close || served == MAX_REQUESTS_PER_CONNECTION;
        if !respond(&mut conn, &shared, req, last).await? || last {
            break;
        }
    }
    let _ = conn.sock.shutdown().await;
    Ok(())
}

/// Answers one request; returns whether the connection stays open.
async fn respond(
    conn: &mut Conn,
    shared: &Shared,
    req: HttpRequest,
    last: bool,
) -> io::Result<bool> {
    let wire = shared.wire;
    let body: Value = serde_json::from_slice(&req.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&req.body).into_owned()));
    let route = match wire {
        Wire::OpenAi => "/chat/completions",
        Wire::Anthropic => "/v1/messages",
    };
    let routed = req.method == "POST" && req.path.ends_with(route);
    let model = body["model"].as_str().unwrap_or("fake-model").to_string();
    // About what a real tokenizer gives for JSON: 4 bytes a token.
    let input_tokens = 10 + req.body.len() as u64 / 4;
    let recorded = Recorded {
        path: req.path.clone(),
        headers: req.headers,
        body,
    };
    if routed
        && shared.strict.load(Ordering::SeqCst)
        && let Some((code, err_body, why)) = strict_check(wire, &recorded.body)
    {
        let n = {
            let mut state = shared.lock();
            state.received += 1;
            if state.recorded.len() < MAX_RECORDED {
                state.recorded.push(recorded);
            }
            state.received
        };
        shared
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(why);
        return write_raw(conn, wire, n, code, "application/json", &err_body, last).await;
    }
    let (n, reply) = shared.take(recorded, routed);
    let Some(reply) = reply else {
        let message = format!(
            "fake model: no route for {} {}; the {wire:?} wire serves POST …{route}",
            req.method, req.path
        );
        return write_status(conn, wire, n, 404, None, &message, last).await;
    };
    let input_tokens = match &reply {
        Reply::Counted { input_tokens, .. } => *input_tokens,
        _ => input_tokens,
    };
    let ctx = StreamContext {
        n,
        model,
        input_tokens,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    match reply {
        Reply::Status {
            code,
            retry_after,
            message,
        } => write_status(conn, wire, n, code, retry_after, &message, last).await,
        Reply::Text(text) => {
            let events = stream_events(wire, &ctx, &text, &[]);
            write_stream(conn, wire, n, &events.list, last).await
        }
        Reply::Tools { text, calls } => {
            let events = stream_events(wire, &ctx, &text, &calls);
            write_stream(conn, wire, n, &events.list, last).await
        }
        Reply::Cut(text) => {
            let events = stream_events(wire, &ctx, &text, &[]);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n{}connection: close\r\n\r\n",
                request_id_header(wire, n)
            );
            let mut out = head.into_bytes();
            for e in &events.list[..events.pause] {
                out.extend_from_slice(e.as_bytes());
            }
            conn.send(&out).await?;
            Ok(false)
        }
        Reply::Counted { text, .. } => {
            let events = stream_events(wire, &ctx, &text, &[]);
            write_stream(conn, wire, n, &events.list, last).await
        }
        Reply::Raw { code, body } => {
            write_raw(conn, wire, n, code, "application/json", &body, last).await
        }
        Reply::ContextOverflow => {
            let (code, body) = match wire {
                Wire::OpenAi => (
                    400,
                    json!({"error": {"code": 400, "message": format!("request ({} tokens) exceeds the available context size (4096 tokens), try increasing it", ctx.input_tokens), "type": "exceed_context_size_error", "n_prompt_tokens": ctx.input_tokens, "n_ctx": 4096}}).to_string(),
                ),
                Wire::Anthropic => (
                    400,
                    error_body(wire, 400, &format!("prompt is too long: {} tokens > 200000 maximum", ctx.input_tokens)),
                ),
            };
            write_raw(conn, wire, n, code, "application/json", &body, last).await
        }
        Reply::Html => {
            let page = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in.</body></html>\n";
            write_raw(conn, wire, n, 200, "text/html; charset=utf-8", page, last).await
        }
        Reply::NoUsage(text) => {
            let mut events = stream_events(wire, &ctx, &text, &[]);
            events
                .list
                .retain(|e| !e.contains("\"prompt_tokens\"") && !e.contains("\"input_tokens\""));
            if wire == Wire::Anthropic {
                // message_start without usage.
                let start = json!({"type": "message_start", "message": {"id": "msg_nousage", "type": "message", "role": "assistant", "content": [], "model": ctx.model, "stop_reason": null}});
                events
                    .list
                    .insert(0, format!("event: message_start\ndata: {start}\n\n"));
            }
            write_stream(conn, wire, n, &events.list, last).await
        }
        Reply::LengthInTool { text, name, sent } => {
            let spec = ToolCallSpec::new(&name, &sent);
            let mut events = stream_events(wire, &ctx, &text, std::slice::from_ref(&spec));
            for e in &mut events.list {
                *e = e
                    .replace(
                        "\"finish_reason\":\"tool_calls\"",
                        "\"finish_reason\":\"length\"",
                    )
                    .replace(
                        "\"stop_reason\":\"tool_use\"",
                        "\"stop_reason\":\"max_tokens\"",
                    );
            }
            write_stream(conn, wire, n, &events.list, last).await
        }
        Reply::Length(text) => {
            let mut events = stream_events(wire, &ctx, &text, &[]);
            for e in &mut events.list {
                *e = e
                    .replace("\"finish_reason\":\"stop\"", "\"finish_reason\":\"length\"")
                    .replace(
                        "\"stop_reason\":\"end_turn\"",
                        "\"stop_reason\":\"max_tokens\"",
                    );
            }
            write_stream(conn, wire, n, &events.list, last).await
        }
        Reply::KeepAliveOnly(text) => {
            let events = stream_events(wire, &ctx, &text, &[]);
            conn.send(stream_head(wire, n, true).as_bytes()).await?;
            for e in &events.list[..events.pause] {
                conn.send(&chunk(e)).await?;
            }
            let until = Instant::now() + MAX_HOLD;
            while Instant::now() < until {
                if !hold(conn, Duration::from_millis(100)).await
                    || conn.send(&chunk(": keep-alive\n\n")).await.is_err()
                {
                    shared.abandoned.fetch_add(1, Ordering::SeqCst);
                    return Ok(false);
                }
            }
            Ok(false)
        }
        Reply::Huge { bytes } => {
            let piece = "x".repeat(64 * 1024);
            let mut events = stream_events(wire, &ctx, "", &[]);
            let tail = events.list.split_off(events.pause);
            conn.send(stream_head(wire, n, true).as_bytes()).await?;
            for e in &events.list {
                conn.send(&chunk(e)).await?;
            }
            let mut sent = 0;
            while sent < bytes {
                let part = &piece[..piece.len().min(bytes - sent)];
                let e = match wire {
                    Wire::OpenAi => format!(
                        "data: {}\n\n",
                        json!({"choices": [{"index": 0, "delta": {"content": part}, "finish_reason": null}]})
                    ),
                    Wire::Anthropic => format!(
                        "event: content_block_delta\ndata: {}\n\n",
                        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}})
                    ),
                };
                if conn.send(&chunk(&e)).await.is_err() {
                    shared.abandoned.fetch_add(1, Ordering::SeqCst);
                    return Ok(false);
                }
                sent += part.len();
            }
            for e in &tail {
                conn.send(&chunk(e)).await?;
            }
            conn.send(b"0\r\n\r\n").await?;
            Ok(false)
        }
        Reply::HugeLine { bytes } => {
            let events = stream_events(wire, &ctx, "", &[]);
            conn.send(stream_head(wire, n, true).as_bytes()).await?;
            for e in &events.list[..events.pause] {
                conn.send(&chunk(e)).await?;
            }
            let line = format!("data: {}", "y".repeat(bytes));
            let _ = conn.send(&chunk(&line)).await;
            let _ = conn.send(b"0\r\n\r\n").await;
            Ok(false)
        }
        Reply::Stall { text, hold_ms } => {
            let events = stream_events(wire, &ctx, &text, &[]);
            let (first, rest) = events.list.split_at(events.pause);
            conn.send(stream_head(wire, n, last).as_bytes()).await?;
            for e in first {
                conn.send(&chunk(e)).await?;
            }
            if !hold(conn, Duration::from_millis(hold_ms).min(MAX_HOLD)).await {
                shared.abandoned.fetch_add(1, Ordering::SeqCst);
                return Ok(false);
            }
            for e in rest {
                conn.send(&chunk(e)).await?;
            }
            conn.send(b"0\r\n\r\n").await?;
            Ok(!last)
        }
    }
}

/// Waits `hold` while watching the socket; false if the client went away.
async fn hold(conn: &mut Conn, hold: Duration) -> bool {
    let until = Instant::now() + hold;
    // Bounded by the deadline: the sleep is polled first on every round.
    loop {
        conn.buf.reserve(1024);
        tokio::select! {
            biased;
            _ = sleep_until(until) => return true,
            read = conn.sock.read_buf(&mut conn.buf) => match read {
                Ok(0) | Err(_) => return false,
                // A client sending during a response is not reqwest; keep
                // what it sent, within bounds.
                Ok(_) if conn.buf.len() > MAX_BODY => return false,
                Ok(_) => {}
            },
        }
    }
}

fn stream_head(wire: Wire, n: usize, last: bool) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n{}transfer-encoding: chunked\r\nconnection: {}\r\n\r\n",
        request_id_header(wire, n),
        if last { "close" } else { "keep-alive" }
    )
}

fn request_id_header(wire: Wire, n: usize) -> String {
    match wire {
        Wire::OpenAi => format!("x-request-id: req_fake{n:06}\r\n"),
        Wire::Anthropic => format!("request-id: req_fake{n:06}\r\n"),
    }
}

/// One chunk of a chunked body.
fn chunk(data: &str) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends a whole event stream, one chunk (and one write) per event, as a
/// real server flushes each event when the model produces it.
async fn write_stream(
    conn: &mut Conn,
    wire: Wire,
    n: usize,
    events: &[String],
    last: bool,
) -> io::Result<bool> {
    conn.send(stream_head(wire, n, last).as_bytes()).await?;
    for e in events {
        conn.send(&chunk(e)).await?;
    }
    conn.send(b"0\r\n\r\n").await?;
    Ok(!last)
}

/// A complete response with this status, content type and body.
async fn write_raw(
    conn: &mut Conn,
    wire: Wire,
    n: usize,
    code: u16,
    content_type: &str,
    body: &str,
    last: bool,
) -> io::Result<bool> {
    let head = format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{}connection: {}\r\n\r\n",
        reason_phrase(code),
        body.len(),
        request_id_header(wire, n),
        if last { "close" } else { "keep-alive" }
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    conn.send(&out).await?;
    Ok(!last)
}

async fn write_status(
    conn: &mut Conn,
    wire: Wire,
    n: usize,
    code: u16,
    retry_after: Option<u64>,
    message: &str,
    last: bool,
) -> io::Result<bool> {
    let body = error_body(wire, code, message);
    let mut head = format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}",
        reason_phrase(code),
        body.len(),
        request_id_header(wire, n)
    );
    if let Some(secs) = retry_after {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str(if last {
        "connection: close\r\n\r\n"
    } else {
        "connection: keep-alive\r\n\r\n"
    });
    head.push_str(&body);
    conn.send(head.as_bytes()).await?;
    Ok(!last)
}

/// The provider's error body for `code`.
fn error_body(wire: Wire, code: u16, message: &str) -> String {
    match wire {
        Wire::Anthropic => {
            let kind = match code {
                400 => "invalid_request_error",
                401 => "authentication_error",
                402 => "billing_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                504 => "timeout_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
        }
        Wire::OpenAi => {
            let (kind, err_code) = match code {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                404 => ("invalid_request_error", json!("model_not_found")),
                429 => ("requests", json!("rate_limit_exceeded")),
                400..=499 => ("invalid_request_error", Value::Null),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": err_code}})
                .to_string()
        }
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Status",
    }
}

/// What a stream needs to know about its request.
struct StreamContext {
    /// The request's number on this server (for ids).
    n: usize,
    model: String,
    input_tokens: u64,
    created: u64,
}

/// A reply's SSE events, each complete with its blank line.
struct Events {
    list: Vec<String>,
    /// Where [`Reply::Cut`] cuts and [`Reply::Stall`] waits: just after the
    /// first text delta (or after the preamble when there is no text).
    pause: usize,
}

fn stream_events(wire: Wire, ctx: &StreamContext, text: &str, calls: &[ToolCallSpec]) -> Events {
    match wire {
        Wire::OpenAi => openai_events(ctx, text, calls),
        Wire::Anthropic => anthropic_events(ctx, text, calls),
    }
}

/// `s` in about `min` pieces of at most `max` characters each (at least
/// `min` pieces when it has at least `min` characters), cut on character
/// boundaries.
fn split_pieces(s: &str, min: usize, max: usize) -> Vec<&str> {
    let chars = s.chars().count();
    if chars == 0 {
        return Vec::new();
    }
    let per = (chars / min).clamp(1, max);
    let mut out = Vec::with_capacity(chars / per + 1);
    let mut start = 0;
    for (count, (i, _)) in s.char_indices().enumerate() {
        if count > 0 && count % per == 0 {
            out.push(&s[start..i]);
            start = i;
        }
    }
    out.push(&s[start..]);
    out
}

fn call_id(spec: &ToolCallSpec, prefix: &str, n: usize, i: usize) -> String {
    if spec.id.is_empty() {
        format!("{prefix}fake{n:04}x{i}")
    } else {
        spec.id.clone()
    }
}

fn openai_events(ctx: &StreamContext, text: &str, calls: &[ToolCallSpec]) -> Events {
    let id = format!("chatcmpl-fake{:06}", ctx.n);
    let event = |delta: Value, finish: Value| {
        let chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            "usage": null,
        });
        format!("data: {chunk}\n\n")
    };
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!("")
    };
    let mut list = vec![event(
        json!({"role": "assistant", "content": content, "refusal": null}),
        Value::Null,
    )];
    let mut pause = list.len();
    let mut deltas = 0u64;
    for piece in split_pieces(text, 3, TEXT_PIECE) {
        list.push(event(json!({"content": piece}), Value::Null));
        deltas += 1;
        if deltas == 1 {
            pause = list.len();
        }
    }
    // Calls interleave: call 0 starts, sends a fragment, call 1 starts, …,
    // then the remaining fragments of every call in turn.
    let fragments: Vec<Vec<&str>> = calls
        .iter()
        .map(|c| split_pieces(&c.arguments, 2, ARGS_PIECE))
        .collect();
    let rounds = fragments.iter().map(Vec::len).max().unwrap_or(0).max(1);
    for round in 0..rounds {
        for (i, call) in calls.iter().enumerate() {
            if round == 0 {
                let start = json!({
                    "index": i,
                    "id": call_id(call, "call_", ctx.n, i),
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                });
                list.push(event(json!({"tool_calls": [start]}), Value::Null));
            }
            if let Some(part) = fragments[i].get(round) {
                let fragment = json!({"index": i, "function": {"arguments": part}});
                list.push(event(json!({"tool_calls": [fragment]}), Value::Null));
                deltas += 1;
            }
        }
    }
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    list.push(event(json!({}), json!(finish)));
    let output_tokens = deltas.max(1);
    let usage = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
        "system_fingerprint": "fp_fake",
        "choices": [],
        "usage": {
            "prompt_tokens": ctx.input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": ctx.input_tokens + output_tokens,
        },
    });
    list.push(format!("data: {usage}\n\n"));
    list.push("data: [DONE]\n\n".to_string());
    Events { list, pause }
}

fn anthropic_events(ctx: &StreamContext, text: &str, calls: &[ToolCallSpec]) -> Events {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut list = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": format!("msg_fake{:06}", ctx.n),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": ctx.model,
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": ctx.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        }}),
    )];
    let ping = || event("ping", json!({"type": "ping"}));
    let mut pause = list.len();
    let mut deltas = 0u64;
    let mut index = 0;
    // Anthropic sends its ping after the first block starts.
    if !text.is_empty() || calls.is_empty() {
        list.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}),
        ));
        list.push(ping());
        pause = list.len();
        for piece in split_pieces(text, 3, TEXT_PIECE) {
            list.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": piece}}),
            ));
            deltas += 1;
            if deltas == 1 {
                pause = list.len();
            }
        }
        list.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for (i, call) in calls.iter().enumerate() {
        list.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use",
                "id": call_id(call, "toolu_", ctx.n, i),
                "name": call.name,
                "input": {},
            }}),
        ));
        if index == 0 {
            list.push(ping());
            pause = list.len();
        }
        // The real API opens every tool input with an empty fragment.
        let parts = std::iter::once("").chain(split_pieces(&call.arguments, 2, ARGS_PIECE));
        for part in parts {
            list.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
            deltas += 1;
        }
        list.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    let stop = if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    list.push(event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": deltas.max(1)}}),
    ));
    list.push(event("message_stop", json!({"type": "message_stop"})));
    Events { list, pause }
}
