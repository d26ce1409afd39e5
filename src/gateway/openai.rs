//! `POST /v1/chat/completions`: the keel agent as an OpenAI-compatible
//! model, so existing tools and SDKs can talk to it.
//!
//! The last user message is the input; the run goes through the same
//! lane, limits, gate and approvals as any other (tool calls happen inside
//! keel and are not returned as `tool_calls`). The answer comes back as a
//! `chat.completion`, or streamed as `chat.completion.chunk`s ending with
//! `data: [DONE]`. A session is continued by `X-Keel-Session: ID` (an
//! existing session), or by the request's `user` field (one session per
//! user value, made on first use); otherwise each request starts a new
//! session. The session used is returned in `X-Keel-Session`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{ApiError, json_body};
use super::{Gw, StreamGuard, runs};

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    user: Option<String>,
    // Sampling settings are the operator's (keel.toml), not the caller's:
    // accepted and ignored, as a model behind a proxy would.
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

/// The text of a message's content: a string, or the text parts of an
/// array of parts.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let text: Vec<&str> = parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect();
            (!text.is_empty()).then(|| text.join("\n"))
        }
        _ => None,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn chat_completions(
    State(gw): State<Gw>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: ChatRequest = json_body(body, gw.cfg().gateway.max_body_bytes).await?;
    let Some(last_user) = req.messages.iter().rev().find(|m| m.role == "user") else {
        return Err(ApiError::bad_request(
            "field `messages`: there is no message with role \"user\"; the last user message is what keel answers",
        ));
    };
    let text = last_user
        .content
        .as_ref()
        .and_then(content_text)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "field `messages`: the last user message has no text (a string, or parts of type \"text\")",
            )
        })?;
    let agent = gw.agent.clone().ok_or_else(super::routes::no_model)?;
    let wanted = headers
        .get("x-keel-session")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::bad_request("X-Keel-Session is not text"))?;
    let user = req.user.clone();
    // Titled as `keel ask` titles its sessions.
    let title = crate::repl::chat::one_line(&text, 60);
    let g = gw.clone();
    let (run_id, session_id) = super::routes::blocking(move || {
        let store = g.kernel.store();
        let session = match (wanted, user) {
            (Some(id), _) => {
                if store.session(&id)?.is_none() {
                    return Err(ApiError::not_found(format!(
                        "no session `{}` (X-Keel-Session must name one: GET /v1/sessions lists them)",
                        crate::text::escape_control(&id)
                    )));
                }
                id
            }
            (None, Some(user)) => {
                let key = format!("user:{user}");
                match store.latest_session_titled(&key)? {
                    Some(id) => id,
                    None => store.create_session(&key)?.id,
                }
            }
            (None, None) => store.create_session(&title)?.id,
        };
        let handle = agent.submit(&session, &text).map_err(super::routes::agent_error)?;
        let ids = (handle.run_id.clone(), handle.session_id.clone());
        runs::track(&g, handle);
        Ok(ids)
    })
    .await?;
    let model = req.model.unwrap_or_else(|| "keel".into());
    let id = format!("chatcmpl-{run_id}");
    let created = now_secs();
    let guard = StreamGuard::open(&gw)?;
    let events = runs::follow(gw.clone(), run_id.clone(), 0, guard);
    let session_header = HeaderValue::from_str(&session_id).ok();
    let mut response = if req.stream {
        let (id2, model2) = (id.clone(), model.clone());
        let chunk = move |delta: Value, finish: Value| {
            json!({
                "id": id2, "object": "chat.completion.chunk", "created": created, "model": model2,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })
        };
        let mut first = true;
        let body = events
            .filter_map(move |(_, name, data)| {
                let out: Option<Vec<Event>> = match name.as_str() {
                    "text" => {
                        let d: Value = serde_json::from_str(&data).unwrap_or_default();
                        let mut delta = json!({"content": d["delta"]});
                        if first {
                            delta["role"] = json!("assistant");
                            first = false;
                        }
                        Some(vec![Event::default().data(chunk(delta, Value::Null).to_string())])
                    }
                    "done" => {
                        let d: Value = serde_json::from_str(&data).unwrap_or_default();
                        let end = if d["state"] == "done" {
                            Event::default().data(chunk(json!({}), json!("stop")).to_string())
                        } else {
                            Event::default().data(
                                json!({"error": {"code": "run_failed", "type": "server_error", "message": run_failure(&d)}})
                                    .to_string(),
                            )
                        };
                        Some(vec![end, Event::default().data("[DONE]")])
                    }
                    _ => None,
                };
                std::future::ready(out)
            })
            .flat_map(|evs| futures_util::stream::iter(evs.into_iter().map(Ok::<_, std::convert::Infallible>)));
        Sse::new(body)
            .keep_alive(KeepAlive::new().interval(super::KEEP_ALIVE))
            .into_response()
    } else {
        let mut events = std::pin::pin!(events);
        let mut done = None;
        while let Some((_, name, data)) = events.next().await {
            if name == "done" {
                done = serde_json::from_str::<Value>(&data).ok();
            }
        }
        let Some(d) = done else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                format!(
                    "keel is stopping; the run `{run_id}` goes on being recorded (GET /v1/runs/{run_id})"
                ),
            ));
        };
        if d["state"] != "done" {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "run_failed",
                run_failure(&d),
            ));
        }
        let (input, output) = (
            d["usage"]["input_tokens"].as_u64().unwrap_or(0),
            d["usage"]["output_tokens"].as_u64().unwrap_or(0),
        );
        axum::Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": d["answer"]}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
        }))
        .into_response()
    };
    if let Some(v) = session_header {
        response.headers_mut().insert("x-keel-session", v);
    }
    Ok(response)
}

fn run_failure(done: &Value) -> String {
    format!(
        "the run ended {}: {}",
        done["state"].as_str().unwrap_or("?"),
        done["error"].as_str().unwrap_or("no reason recorded")
    )
}
