//! OpenAI-compatible Chat Completions, streamed: OpenAI itself, OpenRouter,
//! Ollama, llama.cpp, vLLM, LM Studio.
//!
//! The stream is a series of `data:` events, each a `chat.completion.chunk`,
//! ended by `data: [DONE]`. Text arrives as `delta.content` pieces; tool
//! calls arrive as `delta.tool_calls` fragments keyed by `index` (the first
//! fragment carries id and name, later ones only argument text, and several
//! calls may interleave). With `stream_options.include_usage` a last chunk
//! with empty `choices` carries the token counts.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::sse::SseEvent;
use super::{
    AnswerBudget, Completion, Endpoint, Flow, Message, ProviderError, Request, StopReason,
    StreamEvent, ToolCall, Usage,
};

/// Longest piece of a bad event quoted in an error.
const MAX_QUOTE: usize = 200;

/// Whether the server is OpenAI's own API, which takes
/// `max_completion_tokens` instead of `max_tokens`.
pub fn wants_max_completion_tokens(base_url: &str) -> bool {
    url::Url::parse(base_url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.eq_ignore_ascii_case("api.openai.com"))
        })
        .unwrap_or(false)
}

/// The JSON body of a streaming Chat Completions request.
pub fn request_body(req: &Request) -> Value {
    let messages: Vec<Value> = req.messages.iter().map(message_json).collect();
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "max_tokens": req.max_tokens,
        "stream": true,
        // Without this the token counts never arrive on a stream.
        "stream_options": {"include_usage": true},
    });
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                })
            })
            .collect();
    }
    body
}

fn message_json(m: &Message) -> Value {
    match m {
        Message::System(text) => json!({"role": "system", "content": text}),
        Message::User(text) => json!({"role": "user", "content": text}),
        Message::Assistant { text, tool_calls } => {
            // OpenAI wants `null`, not "", for a turn that is only tool calls.
            let content = if text.is_empty() {
                Value::Null
            } else {
                json!(text)
            };
            let mut msg = json!({"role": "assistant", "content": content});
            if !tool_calls.is_empty() {
                msg["tool_calls"] = tool_calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        })
                    })
                    .collect();
            }
            msg
        }
        Message::ToolResult {
            call_id,
            name,
            content,
            is_error,
        } => {
            // The wire format has no error flag for tool results; the
            // prefix is how the model learns the call failed.
            let content = if *is_error {
                format!("error: {content}")
            } else {
                content.clone()
            };
            json!({"role": "tool", "tool_call_id": call_id, "name": name, "content": content})
        }
    }
}

/// A tool call still being assembled from its fragments.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
    started: bool,
}

/// Turns the chunks of one streamed answer into events and a [`Completion`].
#[derive(Debug)]
pub struct StreamDecoder {
    url: String,
    text: String,
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    done: bool,
    /// How much of the answer is kept, and whether the bound was reached.
    budget: AnswerBudget,
}

impl StreamDecoder {
    /// `url` is only for error messages.
    pub fn new(url: impl Into<String>) -> Self {
        Self::bounded(url, usize::MAX)
    }

    /// A decoder that keeps at most `max_answer` bytes of text and tool
    /// arguments and then reports itself [full](Self::is_full).
    pub fn bounded(url: impl Into<String>, max_answer: usize) -> Self {
        Self {
            url: url.into(),
            text: String::new(),
            calls: BTreeMap::new(),
            finish_reason: None,
            usage: None,
            done: false,
            budget: AnswerBudget::new(max_answer),
        }
    }

    /// Whether the answer bound was reached (the caller stops reading).
    pub fn is_full(&self) -> bool {
        self.budget.is_full()
    }

    fn protocol(&self, reason: impl Into<String>) -> ProviderError {
        ProviderError::Protocol {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }

    /// One SSE event (OpenAI sends only `data:` lines; `data: [DONE]` ends
    /// the stream). Returns what to forward to the user as it arrives.
    pub fn feed(&mut self, event: &SseEvent) -> Result<Vec<StreamEvent>, ProviderError> {
        let data = event.data.trim();
        // Anything after [DONE] (or the bound) is not part of this answer.
        if self.done || self.budget.is_full() || data.is_empty() {
            return Ok(Vec::new());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            self.protocol(format!(
                "malformed JSON in a stream event ({e}): {}",
                quote(data)
            ))
        })?;
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = err["message"]
                .as_str()
                .or_else(|| err.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| quote(&err.to_string()));
            return Err(self.protocol(format!("the server reported an error: {message}")));
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            // A server that sends a usage object without the counts has not
            // reported them: unknown, not zero.
            if let (Some(input), Some(output)) =
                (u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64())
            {
                self.usage = Some(Usage {
                    input_tokens: input,
                    output_tokens: output,
                });
            }
        }
        let mut out = Vec::new();
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return Ok(out);
        };
        // Only one answer is ever requested (n = 1), so only choice 0 counts.
        for choice in choices
            .iter()
            .filter(|c| c["index"].as_u64().unwrap_or(0) == 0)
        {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str()
                && !text.is_empty()
            {
                let text = self.budget.admit(text);
                if !text.is_empty() {
                    self.text.push_str(text);
                    out.push(StreamEvent::Text(text.to_string()));
                }
            }
            if let Some(calls) = delta["tool_calls"].as_array() {
                for (pos, call) in calls.iter().enumerate() {
                    self.tool_call_delta(pos, call, &mut out);
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(reason.to_string());
            }
        }
        Ok(out)
    }

    fn tool_call_delta(&mut self, pos: usize, call: &Value, out: &mut Vec<StreamEvent>) {
        let id = call["id"].as_str().filter(|s| !s.is_empty());
        let index = match call["index"].as_u64() {
            Some(i) => i,
            // Some servers (older Ollama) send each call whole, without an
            // index: a new id means a new call.
            None => match id.and_then(|id| self.calls.iter().find(|(_, c)| c.id == id)) {
                Some((i, _)) => *i,
                None if id.is_some() => self.calls.keys().next_back().map_or(pos as u64, |k| k + 1),
                None => self.calls.keys().next_back().copied().unwrap_or(pos as u64),
            },
        };
        let partial = self.calls.entry(index).or_default();
        if let Some(id) = id
            && partial.id.is_empty()
        {
            partial.id = id.to_string();
        }
        let function = &call["function"];
        if let Some(name) = function["name"].as_str()
            && partial.name.is_empty()
        {
            partial.name = name.to_string();
        }
        let args = match &function["arguments"] {
            Value::String(s) => s.clone(),
            // A few servers send the arguments as a JSON object, not text.
            v @ Value::Object(_) => v.to_string(),
            _ => String::new(),
        };
        let args = self.budget.admit(&args).to_string();
        let partial = self.calls.entry(index).or_default();
        partial.arguments.push_str(&args);
        if !partial.started && !partial.name.is_empty() {
            partial.started = true;
            // Some local servers omit ids; the result must still be able to
            // refer back to its call.
            if partial.id.is_empty() {
                partial.id = format!("call_{index}");
            }
            out.push(StreamEvent::ToolCallStarted {
                id: partial.id.clone(),
                name: partial.name.clone(),
            });
        }
    }

    /// After the stream: the completion, or [`ProviderError::Interrupted`]
    /// when the stream was cut (no `[DONE]` seen). An answer cut at the
    /// bound is a completion with [`StopReason::AnswerLimit`].
    pub fn finish(self) -> Result<Completion, ProviderError> {
        if !self.done && !self.budget.is_full() {
            return Err(ProviderError::Interrupted {
                url: self.url,
                received: self.budget.kept() as u64,
                reason: "the stream ended before [DONE]".into(),
            });
        }
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (index, c) in self.calls {
            if c.name.is_empty() {
                return Err(ProviderError::Protocol {
                    url: self.url,
                    reason: format!("tool call {index} has no function name"),
                });
            }
            let id = if c.id.is_empty() {
                format!("call_{index}")
            } else {
                c.id
            };
            // A call without arguments arrives as "" from some servers; the
            // empty object is what it means.
            let arguments = if c.arguments.trim().is_empty() {
                "{}".to_string()
            } else {
                c.arguments
            };
            tool_calls.push(ToolCall {
                id,
                name: c.name,
                arguments,
            });
        }
        let stop = match self.finish_reason.as_deref() {
            _ if self.budget.is_full() => StopReason::AnswerLimit(self.budget.max()),
            Some("length") => StopReason::MaxTokens,
            // Some servers say "stop" (or nothing) even when the turn ends in
            // tool calls; the calls are what matters.
            _ if !tool_calls.is_empty() => StopReason::ToolUse,
            Some("stop") | None => StopReason::EndTurn,
            Some("tool_calls") | Some("function_call") => StopReason::ToolUse,
            Some(other) => StopReason::Other(other.to_string()),
        };
        let (tool_calls, cut_calls) = super::split_cut_calls(tool_calls, &stop);
        Ok(Completion {
            text: self.text,
            tool_calls,
            cut_calls,
            stop,
            usage: self.usage,
        })
    }
}

/// At most [`MAX_QUOTE`] bytes of `s`, cut on a character boundary.
fn quote(s: &str) -> String {
    if s.len() <= MAX_QUOTE {
        return s.to_string();
    }
    let mut end = MAX_QUOTE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Sends `req` to `{base_url}/chat/completions`, forwarding text and tool
/// call starts to `on_event` as they arrive.
pub async fn complete(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    req: &Request,
    on_event: &mut (dyn FnMut(StreamEvent) + Send),
) -> Result<Completion, ProviderError> {
    const PATH: &str = "chat/completions";
    let mut headers = Vec::new();
    if let Some(key) = &endpoint.api_key {
        headers.push(("authorization", format!("Bearer {}", key.expose())));
    }
    let mut decoder = StreamDecoder::bounded(
        super::join_url(&endpoint.base_url, PATH),
        endpoint.limits.max_answer_bytes,
    );
    let mut body = request_body(req);
    if wants_max_completion_tokens(&endpoint.base_url) {
        // OpenAI's own API deprecated `max_tokens`, and its reasoning models
        // refuse it; the compatible servers (Ollama, llama.cpp, vLLM, LM
        // Studio) know only `max_tokens`.
        if let Some(map) = body.as_object_mut()
            && let Some(n) = map.remove("max_tokens")
        {
            map.insert("max_completion_tokens".into(), n);
        }
    }
    super::post_sse(http, endpoint, PATH, &headers, &body, |event| {
        for e in decoder.feed(&event)? {
            on_event(e);
        }
        Ok(if decoder.is_full() {
            Flow::Stop
        } else {
            Flow::Continue
        })
    })
    .await?;
    decoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Secret, ToolDef};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn data(s: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: s.to_string(),
        }
    }

    #[test]
    fn only_openai_itself_gets_max_completion_tokens() {
        assert!(wants_max_completion_tokens("https://api.openai.com/v1"));
        assert!(!wants_max_completion_tokens("http://127.0.0.1:11434/v1"));
        assert!(!wants_max_completion_tokens("https://openrouter.ai/api/v1"));
        assert!(!wants_max_completion_tokens("not a url"));
    }

    #[test]
    fn request_body_follows_the_wire_format() {
        let req = Request {
            model: "gpt-4o-mini".into(),
            messages: vec![
                Message::System("be brief".into()),
                Message::User("weather in Paris?".into()),
                Message::Assistant {
                    text: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        name: "weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    }],
                },
                Message::ToolResult {
                    call_id: "call_1".into(),
                    name: "weather".into(),
                    content: "no network".into(),
                    is_error: true,
                },
                Message::Assistant {
                    text: "Sorry.".into(),
                    tool_calls: vec![],
                },
            ],
            tools: vec![ToolDef {
                name: "weather".into(),
                description: "Current weather".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }],
            max_tokens: 256,
            temperature: Some(0.5),
        };
        let want = json!({
            "model": "gpt-4o-mini",
            "max_tokens": 256,
            "temperature": 0.5,
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "name": "weather",
                 "content": "error: no network"},
                {"role": "assistant", "content": "Sorry."},
            ],
            "tools": [{"type": "function", "function": {
                "name": "weather",
                "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            }}],
        });
        assert_eq!(request_body(&req), want);

        let bare = Request {
            tools: vec![],
            temperature: None,
            ..req
        };
        let body = request_body(&bare);
        assert!(body.get("tools").is_none(), "{body}");
        assert!(body.get("temperature").is_none(), "{body}");
    }

    /// A realistic stream: text in pieces, then two tool calls whose
    /// arguments interleave, then the usage chunk and [DONE].
    fn sample_chunks() -> Vec<String> {
        let c = |delta: Value, finish: Value| {
            json!({
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "usage": null,
            })
            .to_string()
        };
        let tc = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
            let mut f = json!({"arguments": args});
            if let Some(n) = name {
                f["name"] = json!(n);
            }
            let mut call = json!({"index": index, "function": f});
            if let Some(id) = id {
                call["id"] = json!(id);
                call["type"] = json!("function");
            }
            c(json!({"tool_calls": [call]}), Value::Null)
        };
        vec![
            c(json!({"role": "assistant", "content": ""}), Value::Null),
            c(json!({"content": "Let me "}), Value::Null),
            c(json!({"content": "check "}), Value::Null),
            c(json!({"content": "both."}), Value::Null),
            tc(0, Some("call_a"), Some("weather"), ""),
            tc(0, None, None, "{\"ci"),
            tc(1, Some("call_b"), Some("time"), ""),
            tc(1, None, None, "{\"zo"),
            tc(0, None, None, "ty\":\"Pa"),
            tc(1, None, None, "ne\":\"CET"),
            tc(0, None, None, "ris\"}"),
            tc(1, None, None, "\"}"),
            c(json!({}), json!("tool_calls")),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
                   "usage": {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59}})
            .to_string(),
            "[DONE]".to_string(),
        ]
    }

    fn expected_completion() -> Completion {
        Completion {
            text: "Let me check both.".into(),
            tool_calls: vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "time".into(),
                    arguments: r#"{"zone":"CET"}"#.into(),
                },
            ],
            stop: StopReason::ToolUse,
            usage: Some(Usage {
                input_tokens: 42,
                output_tokens: 17,
            }),
            cut_calls: vec![],
        }
    }

    fn expected_events() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Text("Let me ".into()),
            StreamEvent::Text("check ".into()),
            StreamEvent::Text("both.".into()),
            StreamEvent::ToolCallStarted {
                id: "call_a".into(),
                name: "weather".into(),
            },
            StreamEvent::ToolCallStarted {
                id: "call_b".into(),
                name: "time".into(),
            },
        ]
    }

    #[test]
    fn decoder_assembles_text_and_interleaved_tool_calls() {
        let mut d = StreamDecoder::new("http://x/v1/chat/completions");
        let mut events = Vec::new();
        for chunk in sample_chunks() {
            events.extend(d.feed(&data(&chunk)).unwrap());
        }
        assert_eq!(events, expected_events());
        assert_eq!(d.finish().unwrap(), expected_completion());
    }

    #[test]
    fn stop_reasons_map_and_tool_calls_win_over_stop() {
        let run = |finish: &str, with_call: bool| {
            let mut d = StreamDecoder::new("u");
            let mut delta = json!({"content": "hi"});
            if with_call {
                delta["tool_calls"] = json!([{"index": 0, "id": "c", "type": "function",
                    "function": {"name": "f", "arguments": ""}}]);
            }
            let chunk = json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            d.feed(&data(&chunk.to_string())).unwrap();
            d.feed(&data("[DONE]")).unwrap();
            d.finish().unwrap()
        };
        assert_eq!(run("stop", false).stop, StopReason::EndTurn);
        assert_eq!(run("length", false).stop, StopReason::MaxTokens);
        assert_eq!(
            run("content_filter", false).stop,
            StopReason::Other("content_filter".into())
        );
        let c = run("stop", true);
        assert_eq!(c.stop, StopReason::ToolUse);
        assert_eq!(c.tool_calls[0].arguments, "{}");
        assert_eq!(c.usage, None);
    }

    #[test]
    fn a_cut_stream_is_an_interruption() {
        let mut d = StreamDecoder::new("http://x");
        let chunks = sample_chunks();
        for chunk in &chunks[..chunks.len() - 1] {
            d.feed(&data(chunk)).unwrap();
        }
        match d.finish() {
            Err(ProviderError::Interrupted { reason, .. }) => {
                assert!(reason.contains("before [DONE]"), "{reason}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_and_in_stream_errors_are_protocol_errors() {
        let mut d = StreamDecoder::new("http://x");
        let long = format!("{{\"choices\": [{}", "x".repeat(1000));
        match d.feed(&data(&long)) {
            Err(ProviderError::Protocol { reason, .. }) => {
                assert!(reason.contains("malformed JSON"), "{reason}");
                assert!(reason.len() < 400, "the whole line was quoted: {reason}");
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        let mut d = StreamDecoder::new("http://x");
        match d.feed(&data(
            r#"{"error": {"message": "model overloaded", "code": 503}}"#,
        )) {
            Err(ProviderError::Protocol { reason, .. }) => {
                assert!(reason.contains("model overloaded"), "{reason}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    /// Reads one HTTP request (headers and a `content-length` body).
    async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
        let (head, body) = crate::llm::testing::read_request(sock).await;
        format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body))
    }

    fn endpoint(addr: std::net::SocketAddr) -> Endpoint {
        Endpoint {
            base_url: format!("http://{addr}/v1/"),
            api_key: Some(Secret::new("sk-test-key")),
            timeout: Duration::from_secs(5),
            limits: crate::llm::StreamLimits::default(),
        }
    }

    fn simple_request() -> Request {
        Request {
            model: "m".into(),
            messages: vec![Message::User("hi".into())],
            tools: vec![],
            max_tokens: 100,
            temperature: None,
        }
    }

    #[tokio::test]
    async fn complete_streams_from_a_real_server() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let request = read_request(&mut sock).await;
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
                .await
                .unwrap();
            let mut stream = String::new();
            for chunk in sample_chunks() {
                stream.push_str(&format!("data: {chunk}\n\n"));
            }
            // Small writes that split lines and events, as a real network does.
            for piece in stream.as_bytes().chunks(97) {
                sock.write_all(piece).await.unwrap();
                sock.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sock.shutdown().await.ok();
            request
        });
        let http = reqwest::Client::new();
        let mut events = Vec::new();
        let mut on_event = |e: StreamEvent| events.push(e);
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            complete(&http, &endpoint(addr), &simple_request(), &mut on_event),
        )
        .await
        .expect("complete timed out");
        assert_eq!(result.unwrap(), expected_completion());
        assert_eq!(events, expected_events());

        let request = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nauthorization: bearer sk-test-key"),
            "{head}"
        );
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["model"], json!("m"));
    }

    #[tokio::test]
    async fn complete_reports_rate_limits_with_retry_after() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            read_request(&mut sock).await;
            let body = r#"{"error":{"message":"rate limited","type":"rate_limit"}}"#;
            let resp = format!(
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
        });
        let http = reqwest::Client::new();
        let mut on_event = |_: StreamEvent| panic!("no events on an error");
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            complete(&http, &endpoint(addr), &simple_request(), &mut on_event),
        )
        .await
        .expect("complete timed out")
        .unwrap_err();
        match &err {
            ProviderError::Status {
                status,
                retry_after,
                message,
                ..
            } => {
                assert_eq!(*status, 429);
                assert_eq!(*retry_after, Some(Duration::from_secs(2)));
                assert_eq!(message, "rate limited");
            }
            other => panic!("expected a status error, got {other:?}"),
        }
        assert!(err.is_retryable());
        assert!(!format!("{err} {err:?}").contains("sk-test-key"));
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
