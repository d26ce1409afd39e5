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

pub mod anthropic;
pub mod chain;
pub mod openai;
pub mod sse;
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
    /// Anything else the provider reported, as it reported it.
    Other(String),
}

/// A finished model turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub stop: StopReason,
    pub usage: Usage,
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
    /// The answer did not follow the wire format (or the stream was cut).
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
}

impl ProviderError {
    /// Connection errors, timeouts, 429 and 5xx may succeed on a retry or
    /// with another provider; a 4xx that is the request's fault will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            // A stream cut mid-way is the connection's fault, not the request's.
            Self::Protocol { .. } => true,
        }
    }

    /// How long the server asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
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

/// Sends a streaming POST and feeds each SSE event to `on_event` as it
/// arrives. Shared by both providers: they differ only in headers, body and
/// how they decode events.
pub async fn post_sse(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    path: &str,
    headers: &[(&str, String)],
    body: &Value,
    mut on_event: impl FnMut(sse::SseEvent) -> Result<(), ProviderError>,
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
                reason: e.to_string(),
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
        // Providers put the reason in {"error": {"message": ...}}.
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        return Err(ProviderError::Status {
            url,
            status: status.as_u16(),
            retry_after,
            message,
        });
    }
    let mut parser = sse::SseParser::default();
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            if e.is_timeout() {
                timeout_err()
            } else {
                ProviderError::Protocol {
                    url: url.clone(),
                    reason: format!("the stream broke off: {e}"),
                }
            }
        })?;
        let Some(chunk) = chunk else { break };
        for event in parser.push(&chunk) {
            on_event(event)?;
        }
    }
    for event in parser.finish() {
        on_event(event)?;
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
}
