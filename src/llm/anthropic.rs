//! Anthropic Messages API, streamed.
//!
//! The request body and the stream decoder are pure (tested without a
//! network); [`complete`] only wires them to [`super::post_sse`].

use serde_json::{Map, Value, json};

use super::sse::SseEvent;
use super::{
    AnswerBudget, Completion, Endpoint, Message, ProviderError, Request, StopReason, StreamEvent,
    ToolCall, Usage, join_url, post_sse,
};

/// The `anthropic-version` header keel speaks.
pub const API_VERSION: &str = "2023-06-01";

const PATH: &str = "/v1/messages";

/// Longest piece of an offending event quoted in an error.
const MAX_QUOTE: usize = 200;

/// The JSON body of a streaming Messages request.
pub fn request_body(req: &Request) -> Value {
    let mut system: Vec<&str> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for message in &req.messages {
        let (role, content) = match message {
            Message::System(text) => {
                system.push(text);
                continue;
            }
            Message::User(text) => ("user", vec![json!({"type": "text", "text": text})]),
            Message::Assistant { text, tool_calls } => {
                let mut content = Vec::new();
                // Anthropic rejects empty text blocks.
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    content.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": tool_input(&call.arguments),
                    }));
                }
                ("assistant", content)
            }
            Message::ToolResult {
                call_id,
                content,
                is_error,
                ..
            } => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": call_id,
                    "content": content,
                    "is_error": is_error,
                })],
            ),
        };
        // An assistant turn with nothing in it would be rejected, and it
        // carries nothing the model needs.
        if content.is_empty() {
            continue;
        }
        // Anthropic requires alternating roles, while keel sends one
        // ToolResult per call (and maybe a user message after them).
        if let Some(last) = messages.last_mut()
            && last["role"] == role
            && let Some(blocks) = last["content"].as_array_mut()
        {
            blocks.extend(content);
            continue;
        }
        messages.push(json!({"role": role, "content": content}));
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert("max_tokens".into(), json!(req.max_tokens));
    body.insert("stream".into(), json!(true));
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = req.temperature {
        // Widening an f32 directly would send 0.7 as 0.699999988079071;
        // its shortest decimal form is what the caller meant.
        let t: f64 = t.to_string().parse().unwrap_or(f64::from(t));
        body.insert("temperature".into(), json!(t));
    }
    if !req.tools.is_empty() {
        let tools = req
            .tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.parameters,
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    Value::Object(body)
}

/// Anthropic wants `input` as an object. Malformed arguments were already
/// reported back to the model by the caller, so an empty object keeps the
/// conversation valid without repeating the mistake.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// A tool_use block whose input is still arriving.
#[derive(Debug)]
struct PendingTool {
    index: u64,
    id: String,
    name: String,
    /// The input sent with content_block_start, used only when no
    /// fragments follow.
    initial: Value,
    json: String,
}

/// Turns Anthropic's SSE events into [`StreamEvent`]s and a [`Completion`].
#[derive(Debug)]
pub struct StreamDecoder {
    url: String,
    text: String,
    tools: Vec<PendingTool>,
    /// `None` until the server reports counts.
    usage: Option<Usage>,
    stop: Option<StopReason>,
    stopped: bool,
    /// How much of the answer is kept, and whether the bound was reached.
    budget: AnswerBudget,
}

impl StreamDecoder {
    pub fn new(url: impl Into<String>) -> Self {
        Self::bounded(url, usize::MAX)
    }

    /// A decoder that keeps at most `max_answer` bytes of text and tool
    /// input and then reports itself [full](Self::is_full).
    pub fn bounded(url: impl Into<String>, max_answer: usize) -> Self {
        Self {
            url: url.into(),
            text: String::new(),
            tools: Vec::new(),
            usage: None,
            stop: None,
            stopped: false,
            budget: AnswerBudget::new(max_answer),
        }
    }

    /// Whether the answer bound was reached (the caller stops reading).
    pub fn is_full(&self) -> bool {
        self.budget.is_full()
    }

    /// One SSE event (Anthropic names every event: message_start,
    /// content_block_start, content_block_delta, content_block_stop,
    /// message_delta, message_stop, ping, error). Returns what to forward as
    /// it arrives.
    pub fn feed(&mut self, event: &SseEvent) -> Result<Vec<StreamEvent>, ProviderError> {
        let name = match &event.event {
            Some(name) => name.clone(),
            // The data repeats the name as "type"; use it should a proxy
            // drop the event: line.
            None => self.parse(event, "unnamed")?["type"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        let known = [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "error",
        ];
        // Anthropic may add event types; only the known ones are parsed.
        // Past the bound nothing more is kept.
        if !known.contains(&name.as_str()) || self.budget.is_full() {
            return Ok(Vec::new());
        }
        let data = self.parse(event, &name)?;
        let mut out = Vec::new();
        match name.as_str() {
            "message_start" => {
                let usage = &data["message"]["usage"];
                if let Some(input) = usage["input_tokens"].as_u64() {
                    self.usage = Some(Usage {
                        input_tokens: input,
                        output_tokens: usage["output_tokens"].as_u64().unwrap_or(0),
                    });
                }
            }
            "content_block_start" => {
                let index = self.index(&data, &name)?;
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("text") => {
                        // Normally "", but forwarding it costs nothing if not.
                        if let Some(text) = block["text"].as_str()
                            && !text.is_empty()
                        {
                            let text = self.budget.admit(text);
                            self.text.push_str(text);
                            out.push(StreamEvent::Text(text.to_string()));
                        }
                    }
                    Some("tool_use") => {
                        let (Some(id), Some(tool_name)) =
                            (block["id"].as_str(), block["name"].as_str())
                        else {
                            return Err(self.bad(
                                event,
                                &name,
                                "a tool_use block needs id and name",
                            ));
                        };
                        out.push(StreamEvent::ToolCallStarted {
                            id: id.to_string(),
                            name: tool_name.to_string(),
                        });
                        self.tools.push(PendingTool {
                            index,
                            id: id.to_string(),
                            name: tool_name.to_string(),
                            initial: block["input"].clone(),
                            json: String::new(),
                        });
                    }
                    // Thinking and server-tool blocks are not part of the
                    // answer keel acts on.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = self.index(&data, &name)?;
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        if let Some(text) = delta["text"].as_str() {
                            let text = self.budget.admit(text);
                            if !text.is_empty() {
                                self.text.push_str(text);
                                out.push(StreamEvent::Text(text.to_string()));
                            }
                        }
                    }
                    Some("input_json_delta") => {
                        let Some(part) = delta["partial_json"].as_str() else {
                            return Err(self.bad(
                                event,
                                &name,
                                "input_json_delta without partial_json",
                            ));
                        };
                        let part = self.budget.admit(part);
                        let Some(tool) = self.tools.iter_mut().find(|t| t.index == index) else {
                            return Err(self.bad(
                                event,
                                &name,
                                &format!("input_json_delta for block {index}, which is not a tool_use block"),
                            ));
                        };
                        tool.json.push_str(part);
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop = Some(match reason {
                        "end_turn" | "stop_sequence" => StopReason::EndTurn,
                        "tool_use" => StopReason::ToolUse,
                        "max_tokens" => StopReason::MaxTokens,
                        other => StopReason::Other(other.to_string()),
                    });
                }
                // Cumulative, so the last one is the total.
                if let Some(n) = data["usage"]["output_tokens"].as_u64() {
                    match &mut self.usage {
                        Some(u) => u.output_tokens = n,
                        None => {
                            // Output without input is still not a full count.
                            if let Some(input) = data["usage"]["input_tokens"].as_u64() {
                                self.usage = Some(Usage {
                                    input_tokens: input,
                                    output_tokens: n,
                                });
                            }
                        }
                    }
                }
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let kind = data["error"]["type"].as_str().unwrap_or("error");
                let message = data["error"]["message"].as_str().unwrap_or("(no message)");
                // Anthropic sends overload mid-stream as an event, not as the
                // HTTP 529 it would have been before the stream began.
                if kind == "overloaded_error" {
                    return Err(ProviderError::Status {
                        url: self.url.clone(),
                        status: 529,
                        retry_after: None,
                        message: message.to_string(),
                    });
                }
                return Err(ProviderError::Protocol {
                    url: self.url.clone(),
                    reason: format!("the server reported {kind}: {message}"),
                });
            }
            // content_block_stop: fragments are joined at the end, so a
            // block's end needs no action.
            _ => {}
        }
        Ok(out)
    }

    /// After the stream: the completion, or [`ProviderError::Interrupted`]
    /// when it was cut (no message_stop seen). An answer cut at the bound
    /// is a completion with [`StopReason::AnswerLimit`].
    pub fn finish(self) -> Result<Completion, ProviderError> {
        if !self.stopped && !self.budget.is_full() {
            return Err(ProviderError::Interrupted {
                url: self.url,
                received: self.budget.kept() as u64,
                reason: "the stream ended before message_stop".into(),
            });
        }
        let stop = if self.budget.is_full() {
            Some(StopReason::AnswerLimit(self.budget.max()))
        } else {
            self.stop
        };
        let Some(stop) = stop else {
            return Err(ProviderError::Protocol {
                url: self.url,
                reason: "message_stop came without a stop_reason".into(),
            });
        };
        let tool_calls: Vec<ToolCall> = self
            .tools
            .into_iter()
            .map(|t| ToolCall {
                arguments: if !t.json.is_empty() {
                    t.json
                } else if t.initial.as_object().is_some_and(|o| !o.is_empty()) {
                    t.initial.to_string()
                } else {
                    "{}".to_string()
                },
                id: t.id,
                name: t.name,
            })
            .collect();
        let (tool_calls, cut_calls) = super::split_cut_calls(tool_calls, &stop);
        Ok(Completion {
            text: self.text,
            tool_calls,
            cut_calls,
            stop,
            usage: self.usage,
        })
    }

    fn parse(&self, event: &SseEvent, name: &str) -> Result<Value, ProviderError> {
        serde_json::from_str(&event.data).map_err(|e| self.bad(event, name, &e.to_string()))
    }

    fn index(&self, data: &Value, name: &str) -> Result<u64, ProviderError> {
        data["index"]
            .as_u64()
            .ok_or_else(|| ProviderError::Protocol {
                url: self.url.clone(),
                reason: format!("{name} event without an index"),
            })
    }

    fn bad(&self, event: &SseEvent, name: &str, why: &str) -> ProviderError {
        let mut quote: String = event.data.chars().take(MAX_QUOTE).collect();
        if quote.len() < event.data.len() {
            quote.push('…');
        }
        ProviderError::Protocol {
            url: self.url.clone(),
            reason: format!("malformed {name} event ({why}): {quote}"),
        }
    }
}

/// Sends `req` to `{base_url}/v1/messages`, forwarding text and tool-call
/// starts to `on_event` as they arrive.
pub async fn complete(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    req: &Request,
    on_event: &mut (dyn FnMut(StreamEvent) + Send),
) -> Result<Completion, ProviderError> {
    let mut headers = vec![("anthropic-version", API_VERSION.to_string())];
    if let Some(key) = &endpoint.api_key {
        headers.push(("x-api-key", key.expose().to_string()));
    }
    let body = request_body(req);
    let mut decoder = StreamDecoder::bounded(
        join_url(&endpoint.base_url, PATH),
        endpoint.limits.max_answer_bytes,
    );
    post_sse(http, endpoint, PATH, &headers, &body, |event| {
        for e in decoder.feed(&event)? {
            on_event(e);
        }
        Ok(if decoder.is_full() {
            super::Flow::Stop
        } else {
            super::Flow::Continue
        })
    })
    .await?;
    decoder.finish()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::super::{Secret, ToolDef};
    use super::*;

    fn ev(name: &str, data: Value) -> SseEvent {
        SseEvent {
            event: Some(name.into()),
            data: data.to_string(),
        }
    }

    /// A realistic stream: text in 3 deltas, then a tool_use block whose
    /// input arrives in 4 fragments.
    fn tool_use_stream() -> Vec<SseEvent> {
        vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": "msg_1", "type": "message", "role": "assistant",
                    "content": [], "model": "claude-x", "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": 42, "output_tokens": 1}}}),
            ),
            ev("ping", json!({"type": "ping"})),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": "Let me "}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": "check the "}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": "weather."}}),
            ),
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1,
                       "content_block": {"type": "tool_use", "id": "toolu_1",
                                         "name": "get_weather", "input": {}}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": "{\"loc"}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": "ation\": \"Par"}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": "is\"}"}}),
            ),
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            ev(
                "message_delta",
                json!({"type": "message_delta",
                       "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                       "usage": {"output_tokens": 89}}),
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ]
    }

    fn expected_completion() -> Completion {
        Completion {
            text: "Let me check the weather.".into(),
            tool_calls: vec![ToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: "{\"location\": \"Paris\"}".into(),
            }],
            stop: StopReason::ToolUse,
            usage: Some(Usage {
                input_tokens: 42,
                output_tokens: 89,
            }),
            cut_calls: vec![],
        }
    }

    fn expected_events() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Text("Let me ".into()),
            StreamEvent::Text("check the ".into()),
            StreamEvent::Text("weather.".into()),
            StreamEvent::ToolCallStarted {
                id: "toolu_1".into(),
                name: "get_weather".into(),
            },
        ]
    }

    #[test]
    fn request_body_follows_the_messages_format() {
        let req = Request {
            model: "claude-x".into(),
            messages: vec![
                Message::System("Be brief.".into()),
                Message::System("Use tools.".into()),
                Message::User("Weather in Paris and Rome?".into()),
                Message::Assistant {
                    text: "Checking.".into(),
                    tool_calls: vec![
                        ToolCall {
                            id: "t1".into(),
                            name: "weather".into(),
                            arguments: "{\"city\":\"Paris\"}".into(),
                        },
                        ToolCall {
                            id: "t2".into(),
                            name: "weather".into(),
                            arguments: "{not json".into(),
                        },
                    ],
                },
                Message::ToolResult {
                    call_id: "t1".into(),
                    name: "weather".into(),
                    content: "sunny".into(),
                    is_error: false,
                },
                Message::ToolResult {
                    call_id: "t2".into(),
                    name: "weather".into(),
                    content: "bad arguments".into(),
                    is_error: true,
                },
                Message::User("Thanks, and tomorrow?".into()),
            ],
            tools: vec![ToolDef {
                name: "weather".into(),
                description: "Current weather".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }],
            max_tokens: 1024,
            temperature: Some(0.7),
        };
        let want = json!({
            "model": "claude-x",
            "max_tokens": 1024,
            "stream": true,
            "temperature": 0.7,
            "system": "Be brief.\n\nUse tools.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "t2", "name": "weather", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sunny", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "bad arguments", "is_error": true},
                    {"type": "text", "text": "Thanks, and tomorrow?"},
                ]},
            ],
            "tools": [{
                "name": "weather",
                "description": "Current weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }],
        });
        assert_eq!(request_body(&req), want);

        // Optional fields stay out, and an assistant turn with only tool
        // calls has no empty text block.
        let bare = Request {
            model: "m".into(),
            messages: vec![
                Message::User("hi".into()),
                Message::Assistant {
                    text: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "t".into(),
                        name: "n".into(),
                        arguments: "{}".into(),
                    }],
                },
            ],
            tools: vec![],
            max_tokens: 5,
            temperature: None,
        };
        let body = request_body(&bare);
        for key in ["system", "tools", "temperature"] {
            assert!(body.get(key).is_none(), "{key} should be omitted: {body}");
        }
        assert_eq!(
            body["messages"][1]["content"],
            json!([{"type": "tool_use", "id": "t", "name": "n", "input": {}}])
        );
    }

    #[test]
    fn decoder_assembles_text_and_fragmented_tool_input() {
        let mut d = StreamDecoder::new("http://x/v1/messages");
        let mut forwarded = Vec::new();
        for e in tool_use_stream() {
            forwarded.extend(d.feed(&e).unwrap());
        }
        assert_eq!(forwarded, expected_events());
        assert_eq!(d.finish().unwrap(), expected_completion());
    }

    #[test]
    fn decoder_handles_stop_reasons_unknown_events_and_empty_input() {
        let mut d = StreamDecoder::new("u");
        let events = [
            ev(
                "message_start",
                json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3, "output_tokens": 0}}}),
            ),
            ev("some_future_event", json!({"type": "some_future_event"})),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "a", "name": "noargs", "input": {}}}),
            ),
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null}, "usage": {"output_tokens": 7}}),
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ];
        for e in &events {
            d.feed(e).unwrap();
        }
        let c = d.finish().unwrap();
        assert_eq!(c.stop, StopReason::MaxTokens);
        assert_eq!(c.tool_calls[0].arguments, "{}");
        assert_eq!(
            c.usage,
            Some(Usage {
                input_tokens: 3,
                output_tokens: 7
            })
        );
    }

    #[test]
    fn a_cut_stream_is_an_interruption() {
        let mut d = StreamDecoder::new("http://x/v1/messages");
        let events = tool_use_stream();
        // Everything up to (not including) message_delta and message_stop.
        for e in &events[..events.len() - 2] {
            d.feed(e).unwrap();
        }
        match d.finish() {
            Err(e @ ProviderError::Interrupted { .. }) => {
                assert!(
                    e.to_string()
                        .contains("the stream ended before message_stop"),
                    "{e}"
                );
                assert!(e.is_retryable());
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_names_the_event_and_is_truncated() {
        let mut d = StreamDecoder::new("u");
        let data = format!("{{\"type\": \"content_block_delta\", {}", "x".repeat(500));
        let err = d
            .feed(&SseEvent {
                event: Some("content_block_delta".into()),
                data,
            })
            .unwrap_err();
        let ProviderError::Protocol { reason, .. } = &err else {
            panic!("expected a protocol error, got {err:?}");
        };
        assert!(reason.contains("content_block_delta"), "{reason}");
        assert!(reason.len() < 400, "not truncated: {} chars", reason.len());
    }

    #[test]
    fn overload_is_retryable_other_errors_are_protocol_errors() {
        let mut d = StreamDecoder::new("u");
        let err = d
            .feed(&ev(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ))
            .unwrap_err();
        assert!(
            matches!(&err, ProviderError::Status { status: 529, message, .. } if message == "Overloaded"),
            "{err:?}"
        );
        assert!(err.is_retryable());

        let err = StreamDecoder::new("u")
            .feed(&ev(
                "error",
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": "nope"}}),
            ))
            .unwrap_err();
        assert!(
            matches!(&err, ProviderError::Protocol { reason, .. } if reason.contains("nope")),
            "{err:?}"
        );
    }

    /// Reads one HTTP request (head and content-length body), bounded in
    /// size and time.
    async fn read_request(sock: &mut TcpStream) -> (String, Value) {
        let (head, body) = crate::llm::testing::read_request(sock).await;
        (head, serde_json::from_slice(&body).expect("a JSON body"))
    }

    fn endpoint(addr: std::net::SocketAddr) -> Endpoint {
        Endpoint {
            base_url: format!("http://{addr}"),
            api_key: Some(Secret::new("sk-ant-test")),
            timeout: Duration::from_secs(10),
            limits: crate::llm::StreamLimits::default(),
        }
    }

    fn simple_request() -> Request {
        Request {
            model: "claude-x".into(),
            messages: vec![Message::User("weather?".into())],
            tools: vec![],
            max_tokens: 100,
            temperature: None,
        }
    }

    #[tokio::test]
    async fn complete_streams_from_a_server() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .expect("a connection within 5s")
                .unwrap();
            let (head, body) = read_request(&mut sock).await;
            let mut wire = String::new();
            for e in tool_use_stream() {
                wire.push_str(&format!(
                    "event: {}\ndata: {}\n\n",
                    e.event.unwrap(),
                    e.data
                ));
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
                .await
                .unwrap();
            // Small writes that split events (and lines) anywhere.
            for piece in wire.as_bytes().chunks(97) {
                sock.write_all(piece).await.unwrap();
                sock.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sock.shutdown().await.unwrap();
            (head, body)
        });

        let http = reqwest::Client::new();
        let mut forwarded = Vec::new();
        let mut on_event = |e: StreamEvent| forwarded.push(e);
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            complete(&http, &endpoint(addr), &simple_request(), &mut on_event),
        )
        .await
        .expect("an answer within 10s")
        .unwrap();
        assert_eq!(got, expected_completion());
        assert_eq!(forwarded, expected_events());

        let (head, body) = server.await.unwrap();
        let head_lower = head.to_ascii_lowercase();
        assert!(head.starts_with("POST /v1/messages HTTP/1.1\r\n"), "{head}");
        assert!(head_lower.contains("\r\nx-api-key: sk-ant-test"), "{head}");
        assert!(
            head_lower.contains("\r\nanthropic-version: 2023-06-01"),
            "{head}"
        );
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body, request_body(&simple_request()));
    }

    #[tokio::test]
    async fn complete_reports_an_error_status() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .expect("a connection within 5s")
                .unwrap();
            read_request(&mut sock).await;
            let body = r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#;
            let resp = format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            sock.shutdown().await.unwrap();
        });

        let http = reqwest::Client::new();
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            complete(&http, &endpoint(addr), &simple_request(), &mut |_| {}),
        )
        .await
        .expect("an answer within 10s")
        .unwrap_err();
        server.await.unwrap();
        assert!(
            matches!(&err, ProviderError::Status { status: 500, message, .. } if message == "boom"),
            "{err:?}"
        );
        assert!(err.is_retryable());
        assert!(!format!("{err:?} {err}").contains("sk-ant-test"));
    }
}
