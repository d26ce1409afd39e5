//! Model providers: OpenAI-compatible Chat Completions and Anthropic
//! Messages, both streamed over SSE, both with native tool calling.
//!
//! This is the wire layer only: a [`Request`] in, [`StreamEvent`]s out as
//! they arrive, and a final [`Completion`]. Each provider module has a pure
//! part (request body building, a stream decoder fed with SSE events) tested
//! without a network, and a thin async part that sends the request through
//! `reqwest` and feeds the decoder. Fallback chains, sessions and the agent
//! loop build on top (issue 4, in progress).
//!
//! Invariants: API keys live in [`Secret`], which never prints; errors say
//! whether a retry can help ([`ProviderError::is_retryable`]).
//!
//! # Bounded and honest streams
//!
//! A model server is not trusted to behave. [`post_sse`] holds every stream
//! to [`StreamLimits`]: an answer over `max_answer_bytes` is cut there (the
//! decoders keep at most that much and the connection is dropped), a single
//! SSE line over the bound is an error, a stream that sends nothing but
//! keep-alive comments for `idle_timeout` fails, and a `200` that is not an
//! event stream (an HTML login page, a JSON body) is reported with its
//! content type and first bytes, escaped. A stream that breaks off is
//! [`ProviderError::Interrupted`], transient: the agent retries rather than
//! failing the run. Errors never stop at the HTTP library's own words
//! ("error decoding response body"): they say what happened and how much
//! had arrived.

/// How to configure a model, shown when none is: by the agent when a run
/// has no model and by the `llm` host API when a skill asks for one.
pub const NO_MODEL_HELP: &str = "no model is configured. Set one up either way:
  - environment: OPENAI_BASE_URL (and OPENAI_MODEL) for an OpenAI-compatible server such as
    Ollama (OPENAI_BASE_URL=http://127.0.0.1:11434/v1 OPENAI_MODEL=qwen2.5:7b), or
    OPENAI_API_KEY for OpenAI, or ANTHROPIC_API_KEY for Anthropic;
  - keel.toml:
      [models.main]
      provider = \"openai\"
      base_url = \"http://127.0.0.1:11434/v1\"
      model = \"qwen2.5:7b\"";

pub mod anthropic;
pub mod chain;
pub mod openai;
pub mod sse;

/// How much of one answer a stream decoder keeps: text and tool arguments
/// up to a bound, cut on a character boundary. Once a piece does not fit
/// whole the decoder is full and the caller stops reading.
#[derive(Debug, Clone)]
pub(crate) struct AnswerBudget {
    kept: usize,
    max: usize,
    full: bool,
}

impl AnswerBudget {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            kept: 0,
            max,
            full: false,
        }
    }

    /// How much of `piece` fits under the bound; marks the budget full when
    /// not all of it does.
    pub(crate) fn admit<'a>(&mut self, piece: &'a str) -> &'a str {
        let room = self.max.saturating_sub(self.kept);
        let mut end = piece.len().min(room);
        while !piece.is_char_boundary(end) {
            end -= 1;
        }
        if end < piece.len() {
            self.full = true;
        }
        self.kept += end;
        &piece[..end]
    }

    pub(crate) fn is_full(&self) -> bool {
        self.full
    }

    /// Bytes kept so far.
    pub(crate) fn kept(&self) -> usize {
        self.kept
    }

    /// The bound.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
pub(crate) mod testing;

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// Which wire format a model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI-compatible Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ProviderKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            _ => None,
        }
    }
}

/// An API key or other credential. Never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    System(String),
    User(String),
    /// What the model said: text and/or tool calls.
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, sent back to the model.
    ToolResult {
        call_id: String,
        /// The tool's name (Anthropic does not need it; OpenAI-compatible
        /// servers such as Ollama use it).
        name: String,
        content: String,
        is_error: bool,
    },
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model sent them: JSON text, not yet validated
    /// (a model may send malformed JSON; the caller reports that back).
    pub arguments: String,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// One request to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub model: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolDef>,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
}

/// Token counts a provider reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A final answer.
    EndTurn,
    /// It wants tool results.
    ToolUse,
    /// It hit `max_tokens`.
    MaxTokens,
    /// keel cut the answer at this many bytes (`[agent] max_answer_bytes`).
    AnswerLimit(usize),
    /// Anything else the provider reported, as it reported it.
    Other(String),
}

/// A finished model turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// Calls whose arguments arrived whole.
    pub tool_calls: Vec<ToolCall>,
    /// Calls cut by the output limit (`finish_reason: "length"`,
    /// `stop_reason: "max_tokens"`) or the answer bound before their
    /// arguments were complete. They must never be run, nor sent back as
    /// they are (a server that parses them answers 500); `arguments` holds
    /// the partial text only for the record.
    pub cut_calls: Vec<ToolCall>,
    pub stop: StopReason,
    /// Token counts, when the server reported them (`None` = unknown, not 0).
    pub usage: Option<Usage>,
}

/// Splits calls into whole ones and ones cut by the output limit: under
/// [`StopReason::MaxTokens`] or [`StopReason::AnswerLimit`], a call whose
/// arguments are not a complete JSON object was cut mid-way. (Empty
/// arguments mean "no arguments" and are whole.)
pub fn split_cut_calls(calls: Vec<ToolCall>, stop: &StopReason) -> (Vec<ToolCall>, Vec<ToolCall>) {
    if !matches!(stop, StopReason::MaxTokens | StopReason::AnswerLimit(_)) {
        return (calls, Vec::new());
    }
    calls.into_iter().partition(|c| {
        c.arguments.trim().is_empty()
            || matches!(
                serde_json::from_str::<Value>(&c.arguments),
                Ok(Value::Object(_))
            )
    })
}

/// Something that arrived on the stream, forwarded as it arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A piece of the answer's text.
    Text(String),
    /// The model started a tool call.
    ToolCallStarted { id: String, name: String },
}

/// Where a provider is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// e.g. `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`,
    /// `https://api.anthropic.com`.
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Whole-request timeout.
    pub timeout: Duration,
    pub limits: StreamLimits,
}

/// How much a model may send, and how long it may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Longest answer kept (text plus tool-call arguments); the stream is
    /// cut there.
    pub max_answer_bytes: usize,
    /// Longest wait for the next byte of the answer once it has begun.
    /// Keep-alive comments do not count as an answer.
    pub idle_timeout: Duration,
    /// Longest wait for the answer's first byte after the response headers:
    /// a local server on a CPU reads a long prompt for tens of seconds
    /// before its first token, and must not be taken for a silent one.
    pub first_token_timeout: Duration,
}

impl StreamLimits {
    /// Longest single SSE line: a whole answer in one event is legitimate
    /// (some servers do not stream), plus room for its JSON framing.
    pub fn max_line(&self) -> usize {
        self.max_answer_bytes.saturating_add(64 * 1024)
    }

    /// Most bytes read from one stream, framing included: an endless run
    /// of empty deltas must end too.
    pub fn max_stream_bytes(&self) -> u64 {
        (self.max_answer_bytes as u64)
            .saturating_mul(8)
            .saturating_add(1 << 20)
    }
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_answer_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(30),
            first_token_timeout: Duration::from_secs(120),
        }
    }
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// No connection could be made.
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The request or the stream took too long.
    #[error("{url}: no complete answer within {}s", timeout.as_secs())]
    Timeout { url: String, timeout: Duration },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        /// From `Retry-After`, when the server sent one.
        retry_after: Option<Duration>,
        message: String,
    },
    /// The answer did not follow the wire format.
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
    /// The stream broke off before the answer was complete (connection
    /// reset, the server closed early, nothing for `idle_timeout`).
    #[error("{url}: the stream was cut after {received} bytes: {reason}")]
    Interrupted {
        url: String,
        received: u64,
        reason: String,
    },
    /// A `200` that is not an event stream: a proxy's login page, a web
    /// server at the wrong path, a server that ignored `stream: true`.
    #[error(
        "{url}: expected an event stream (text/event-stream) but got {content_type:?} starting with \"{start}\"; is base_url the model server's API (e.g. http://127.0.0.1:8080/v1)?"
    )]
    NotAStream {
        url: String,
        content_type: String,
        /// The first bytes, with control characters and non-ASCII escaped.
        start: String,
    },
}

impl ProviderError {
    /// Connection errors, timeouts, 429 and 5xx may succeed on a retry or
    /// with another provider; a 4xx that is the request's fault will not.
    ///
    /// A 500 is retried unless its body shows the request was at fault:
    /// llama-server answers a request its chat template or JSON parser
    /// refuses with `{"error":{"code":500,"message":"[json.exception…",
    /// "type":"server_error"}}` or a template error, and the same request
    /// would fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Status {
                status, message, ..
            } => {
                (*status == 429 || *status >= 500)
                    && !is_request_fault(message)
                    && !self.is_context_overflow()
            }
            // A stream cut mid-way is the connection's fault, not the request's.
            Self::Protocol { .. } | Self::Interrupted { .. } => true,
            // The URL points at something that is not a model server.
            Self::NotAStream { .. } => false,
        }
    }

    /// Whether the provider said the request is larger than the model's
    /// context: OpenAI's `context_length_exceeded` ("This model's maximum
    /// context length is …"), llama-server's "the request exceeds the
    /// available context size", Anthropic's "prompt is too long". The agent
    /// compacts and tries once more.
    pub fn is_context_overflow(&self) -> bool {
        let message = match self {
            Self::Status {
                status: 400 | 413 | 500,
                message,
                ..
            } => message,
            Self::Protocol { reason, .. } => reason,
            _ => return false,
        };
        let m = message.to_ascii_lowercase();
        [
            "context_length_exceeded",
            "maximum context length",
            "exceeds the available context size",
            "exceed_context_size",
            "prompt is too long",
            "context window",
        ]
        .iter()
        .any(|p| m.contains(p))
    }

    /// How long the server asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A 5xx message that shows the request itself was refused (see
/// [`ProviderError::is_retryable`]).
fn is_request_fault(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "[json.exception.",
        "roles must alternate",
        "chat template",
        "jinja",
        "failed to parse",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// `bytes` (a server's own words, maybe not UTF-8) as text safe for a
/// terminal or a log line: keel's one escape ([`crate::text::escape_control`])
/// over the lossily decoded text.
pub fn escape_bytes(bytes: &[u8]) -> String {
    crate::text::escape_control(&String::from_utf8_lossy(bytes)).into_owned()
}

/// Parses a `Retry-After` header: seconds (`"30"`) or an HTTP date is not
/// supported by every provider, so only the seconds form is read; anything
/// else means "not said".
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && (0.0..=3600.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// The URL of an endpoint path, without a doubled slash.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Largest error body keel reads into a message.
pub const MAX_ERROR_BODY: usize = 4096;

/// Whether to keep reading a stream after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The decoder has all it will keep (the answer bound was reached):
    /// stop reading and drop the connection.
    Stop,
}

/// Bytes of a non-stream body quoted in [`ProviderError::NotAStream`].
const NOT_A_STREAM_QUOTE: usize = 160;

/// The error's own words and every cause under it, so "error decoding
/// response body" comes with what actually broke.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Sends a streaming POST and feeds each SSE event to `on_event` as it
/// arrives, within the endpoint's [`StreamLimits`]. Shared by both
/// providers: they differ only in headers, body and how they decode events.
pub async fn post_sse(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    path: &str,
    headers: &[(&str, String)],
    body: &Value,
    mut on_event: impl FnMut(sse::SseEvent) -> Result<Flow, ProviderError>,
) -> Result<(), ProviderError> {
    let url = join_url(&endpoint.base_url, path);
    let mut req = http
        .post(&url)
        .timeout(endpoint.timeout)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let timeout_err = || ProviderError::Timeout {
        url: url.clone(),
        timeout: endpoint.timeout,
    };
    let mut resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            timeout_err()
        } else {
            ProviderError::Connect {
                url: url.clone(),
                reason: error_chain(&e),
            }
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut text = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            text.extend_from_slice(&chunk);
            if text.len() > MAX_ERROR_BODY {
                text.truncate(MAX_ERROR_BODY);
                break;
            }
        }
        let text = String::from_utf8_lossy(&text);
        // Providers put the reason in {"error": {"message": ...}}; a string
        // code says more for some (OpenAI's `context_length_exceeded`).
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let message = v["error"]["message"].as_str()?.to_string();
                Some(match v["error"]["code"].as_str() {
                    Some(code) if !code.is_empty() && !message.contains(code) => {
                        format!("{message} ({code})")
                    }
                    _ => message,
                })
            })
            .unwrap_or_else(|| escape_bytes(text.trim().as_bytes()));
        return Err(ProviderError::Status {
            url,
            status: status.as_u16(),
            retry_after,
            message,
        });
    }
    // A 200 that is not an event stream: say what came back. A missing
    // content type is let through (the parser then finds no events).
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(ct) = content_type
        .as_deref()
        .filter(|ct| !ct.to_ascii_lowercase().contains("text/event-stream"))
    {
        let mut start = Vec::new();
        while start.len() < NOT_A_STREAM_QUOTE {
            match tokio::time::timeout(endpoint.limits.idle_timeout, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => start.extend_from_slice(&chunk),
                _ => break,
            }
        }
        start.truncate(NOT_A_STREAM_QUOTE);
        return Err(ProviderError::NotAStream {
            url,
            content_type: escape_bytes(ct.as_bytes()),
            start: escape_bytes(&start),
        });
    }
    let limits = endpoint.limits;
    let mut parser = sse::SseParser::with_max_line(limits.max_line());
    let mut received: u64 = 0;
    let mut last_progress = (tokio::time::Instant::now(), 0u64);
    loop {
        let (wait, knob) = if last_progress.1 == 0 {
            (limits.first_token_timeout, "model_first_token_seconds")
        } else {
            (limits.idle_timeout, "model_idle_seconds")
        };
        let deadline = last_progress.0 + wait;
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => {
                return Err(ProviderError::Interrupted {
                    url,
                    received,
                    reason: format!(
                        "no answer for {} s (keep-alive comments do not count; [agent] {knob} in keel.toml)",
                        wait.as_secs()
                    ),
                });
            }
            Ok(Err(e)) if e.is_timeout() => return Err(timeout_err()),
            Ok(Err(e)) => {
                return Err(ProviderError::Interrupted {
                    url,
                    received,
                    reason: format!("the connection broke off ({})", error_chain(&e)),
                });
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        received += chunk.len() as u64;
        if received > limits.max_stream_bytes() {
            return Err(ProviderError::Protocol {
                url,
                reason: format!(
                    "the stream sent over {} bytes without finishing the answer",
                    limits.max_stream_bytes()
                ),
            });
        }
        let events = parser.push(&chunk).map_err(|e| ProviderError::Protocol {
            url: url.clone(),
            reason: format!("{e} (the answer bound is [agent] max_answer_bytes in keel.toml)"),
        })?;
        if parser.progress() != last_progress.1 {
            last_progress = (tokio::time::Instant::now(), parser.progress());
        }
        for event in events {
            if on_event(event)? == Flow::Stop {
                return Ok(());
            }
        }
    }
    for event in parser.finish() {
        if on_event(event)? == Flow::Stop {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "sk-very-secret");
    }

    #[test]
    fn retryable_errors_are_the_ones_a_retry_can_fix() {
        let status = |status| ProviderError::Status {
            url: "u".into(),
            status,
            retry_after: None,
            message: String::new(),
        };
        assert!(status(429).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            join_url("http://x/v1/", "/chat/completions"),
            "http://x/v1/chat/completions"
        );
    }

    /// A real server on 127.0.0.1 that answers one request with the given
    /// steps: bytes to send, pauses, and then closes.
    enum Step {
        Send(Vec<u8>),
        /// Send this, `n` times, with a pause of `ms` before each.
        Repeat(Vec<u8>, usize, u64),
    }

    async fn serve_raw(steps: Vec<Step>) -> (Endpoint, tokio::task::JoinHandle<()>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            crate::llm::testing::read_request(&mut sock).await;
            for step in steps {
                let ok = match step {
                    Step::Send(b) => sock.write_all(&b).await.is_ok(),
                    Step::Repeat(b, n, ms) => {
                        let mut ok = true;
                        for _ in 0..n {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            if sock.write_all(&b).await.is_err() {
                                ok = false;
                                break;
                            }
                        }
                        ok
                    }
                };
                if !ok {
                    return;
                }
            }
            let _ = sock.shutdown().await;
        });
        let endpoint = Endpoint {
            base_url: format!("http://{addr}/v1"),
            api_key: None,
            timeout: Duration::from_secs(60),
            limits: StreamLimits {
                max_answer_bytes: 1000,
                idle_timeout: Duration::from_millis(400),
                first_token_timeout: Duration::from_millis(400),
            },
        };
        (endpoint, task)
    }

    fn chunked(data: &str) -> Vec<u8> {
        format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
    }

    const SSE_HEAD: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

    fn delta(text: &str) -> String {
        let chunk = serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        format!("data: {chunk}\n\n")
    }

    async fn ask(endpoint: &Endpoint) -> Result<Completion, ProviderError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let req = Request {
            model: "m".into(),
            messages: vec![Message::User("hi".into())],
            tools: vec![],
            max_tokens: 10,
            temperature: None,
        };
        tokio::time::timeout(
            Duration::from_secs(30),
            openai::complete(&reqwest::Client::new(), endpoint, &req, &mut |_| {}),
        )
        .await
        .expect("an outcome within 30 s")
    }

    #[tokio::test]
    async fn keep_alive_comments_do_not_keep_a_silent_stream_alive() {
        // One delta, then only pings, well inside the idle timeout each, for
        // far longer than it: the stream must fail as idle.
        let (endpoint, server) = serve_raw(vec![
            Step::Send(SSE_HEAD.into()),
            Step::Send(chunked(&delta("Hel"))),
            Step::Repeat(chunked(": ping\n\n"), 200, 50),
        ])
        .await;
        let err = ask(&endpoint).await.unwrap_err();
        match &err {
            ProviderError::Interrupted { reason, .. } => {
                assert!(reason.contains("no answer for"), "{err}");
                assert!(reason.contains("keep-alive"), "{err}");
            }
            other => panic!("expected an idle interruption, got {other:?}"),
        }
        assert!(err.is_retryable());
        server.abort();
    }

    #[tokio::test]
    async fn data_arriving_within_the_idle_timeout_keeps_the_stream() {
        let mut steps = vec![Step::Send(SSE_HEAD.into())];
        // Each delta comes 100 ms after the last: 3 s in all, more than the
        // idle timeout, but never that long a silence.
        steps.push(Step::Repeat(chunked(&delta("x")), 30, 100));
        let done =
            serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        steps.push(Step::Send(chunked(&format!(
            "data: {done}\n\ndata: [DONE]\n\n"
        ))));
        steps.push(Step::Send(b"0\r\n\r\n".to_vec()));
        let (mut endpoint, server) = serve_raw(steps).await;
        // Room for a loaded machine: 2 s of idle allowed, 3 s in all.
        endpoint.limits.idle_timeout = Duration::from_secs(2);
        endpoint.limits.first_token_timeout = Duration::from_secs(2);
        let c = ask(&endpoint).await.unwrap();
        assert_eq!(c.text, "x".repeat(30));
        assert_eq!(c.usage, None, "no usage reported is unknown, not 0");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_slow_first_token_is_not_a_silent_stream() {
        // Headers, then pings only for longer than the idle timeout (a
        // server reading a long prompt), then the answer.
        let done =
            serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        let (mut endpoint, server) = serve_raw(vec![
            Step::Send(SSE_HEAD.into()),
            Step::Repeat(chunked(": ping\n\n"), 12, 100),
            Step::Send(chunked(&delta("Hi"))),
            Step::Send(chunked(&format!("data: {done}\n\ndata: [DONE]\n\n"))),
            Step::Send(b"0\r\n\r\n".to_vec()),
        ])
        .await;
        endpoint.limits.first_token_timeout = Duration::from_secs(20);
        assert_eq!(ask(&endpoint).await.unwrap().text, "Hi");
        server.await.unwrap();

        // The same silence past the first-token limit fails, naming it.
        let (endpoint, server) = serve_raw(vec![
            Step::Send(SSE_HEAD.into()),
            Step::Repeat(chunked(": ping\n\n"), 200, 50),
        ])
        .await;
        let err = ask(&endpoint).await.unwrap_err();
        assert!(
            err.to_string().contains("model_first_token_seconds"),
            "{err}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn an_html_200_says_what_came_back() {
        let page = "<html>\n<title>Login</title>\x1b[31m</html>";
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\r\n{page}",
            page.len()
        );
        let (endpoint, server) = serve_raw(vec![Step::Send(resp.into())]).await;
        let err = ask(&endpoint).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, ProviderError::NotAStream { content_type, .. } if content_type.starts_with("text/html")),
            "{err:?}"
        );
        assert!(text.contains("<html>\\n<title>Login"), "{text}");
        assert!(
            !text.contains('\x1b') && text.contains("\\x1b[31m"),
            "{text}"
        );
        assert!(!err.is_retryable());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_single_line_over_the_bound_is_an_error() {
        let limits = StreamLimits {
            max_answer_bytes: 1000,
            ..StreamLimits::default()
        };
        let line = format!("data: {}", "x".repeat(limits.max_line() + 10));
        let (endpoint, server) = serve_raw(vec![
            Step::Send(SSE_HEAD.into()),
            Step::Send(chunked(&delta("ok"))),
            Step::Send(chunked(&line)),
        ])
        .await;
        let err = ask(&endpoint).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::Protocol { reason, .. } if reason.contains("single stream line is over")),
            "{err:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn an_answer_over_the_bound_is_cut_there() {
        // 100 deltas of 100 bytes, no end: keel keeps 1000 bytes and stops
        // reading instead of buffering the rest.
        let (endpoint, server) = serve_raw(vec![
            Step::Send(SSE_HEAD.into()),
            Step::Repeat(chunked(&delta(&"é".repeat(50))), 100, 0),
            Step::Repeat(chunked(": still here\n\n"), 600, 100),
        ])
        .await;
        let c = ask(&endpoint).await.unwrap();
        assert_eq!(c.stop, StopReason::AnswerLimit(1000));
        assert_eq!(c.text.len(), 1000);
        assert!(c.text.chars().all(|ch| ch == 'é'));
        server.abort();
    }

    #[tokio::test]
    async fn a_stream_cut_mid_way_says_so_in_its_own_words() {
        // Chunked framing broken off mid-stream: reqwest's own error is only
        // "error decoding response body".
        let (endpoint, server) = serve_raw(vec![
            Step::Send(SSE_HEAD.into()),
            Step::Send(chunked(&delta("Hello"))),
            Step::Send(b"40\r\ndata: {\"choi".to_vec()),
        ])
        .await;
        let err = ask(&endpoint).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProviderError::Interrupted { .. }), "{err:?}");
        assert!(text.contains("the stream was cut after"), "{text}");
        assert!(text.contains("broke off"), "{text}");
        assert!(err.is_retryable());
        server.await.unwrap();
    }

    #[test]
    fn llama_server_request_faults_and_overflows_are_not_retried() {
        let status = |code, message: &str| ProviderError::Status {
            url: "u".into(),
            status: code,
            retry_after: None,
            message: message.into(),
        };
        // llama-server's 500 for arguments it cannot parse.
        let parse = status(
            500,
            "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error while parsing object key - unexpected end of input; expected string literal",
        );
        assert!(!parse.is_retryable());
        assert!(status(500, "model crashed").is_retryable());
        for overflow in [
            status(
                400,
                "the request exceeds the available context size, try increasing it (exceed_context_size_error)",
            ),
            status(
                400,
                "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. (context_length_exceeded)",
            ),
            status(400, "prompt is too long: 210000 tokens > 200000 maximum"),
        ] {
            assert!(overflow.is_context_overflow(), "{overflow}");
            assert!(!overflow.is_retryable(), "{overflow}");
        }
        assert!(!status(400, "bad tool schema").is_context_overflow());
        assert!(!status(429, "slow down").is_context_overflow());
    }

    #[test]
    fn cut_calls_are_the_incomplete_ones_under_a_length_stop() {
        let call = |id: &str, args: &str| ToolCall {
            id: id.into(),
            name: "f".into(),
            arguments: args.into(),
        };
        let calls = vec![call("a", r#"{"x":1}"#), call("b", "{"), call("c", "")];
        let (whole, cut) = split_cut_calls(calls.clone(), &StopReason::MaxTokens);
        assert_eq!(
            whole.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(cut.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["b"]);
        // Only a length stop cuts: malformed JSON otherwise is the model's
        // mistake, reported as such by the agent.
        let (whole, cut) = split_cut_calls(calls, &StopReason::ToolUse);
        assert_eq!((whole.len(), cut.len()), (3, 0));
    }
}
