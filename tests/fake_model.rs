//! The fake model server (`tests/common/model.rs`) checked with a plain
//! HTTP/1.1 client over a raw socket: the streams it sends, its error
//! replies, keep-alive and what it records.

#[path = "common/model.rs"]
mod model;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use model::{FakeModel, Reply, ToolCallSpec, Wire};
use serde_json::{Value, json};

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The SSE events: (event name, data).
    fn events(&self) -> Vec<(Option<String>, String)> {
        self.body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut name = None;
                let mut data = String::new();
                for line in e.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                (name, data)
            })
            .collect()
    }

    fn json_events(&self) -> Vec<Value> {
        self.events()
            .iter()
            .filter(|(_, d)| d != "[DONE]")
            .map(|(_, d)| serde_json::from_str(d).expect("JSON event data"))
            .collect()
    }
}

/// A client connection that reads each response exactly, so it can send
/// the next request on the same connection.
struct Client(BufReader<TcpStream>);

impl Client {
    fn connect(model: &FakeModel) -> Self {
        let sock = TcpStream::connect(model.addr()).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self(BufReader::new(sock))
    }

    fn post(&mut self, path: &str, body: &Value) -> Response {
        let body = body.to_string();
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nx-api-key: k\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.0.get_mut().write_all(req.as_bytes()).unwrap();
        self.read_response()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line.trim_end_matches("\r\n").to_string()
    }

    fn read_response(&mut self) -> Response {
        let status_line = self.line();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v): &(String, String)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = find("content-length") {
            body.resize(len.parse().unwrap(), 0);
            self.0.read_exact(&mut body).unwrap();
        } else if find("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let size = usize::from_str_radix(&self.line(), 16).unwrap();
                let mut data = vec![0; size + 2];
                self.0.read_exact(&mut data).unwrap();
                body.extend_from_slice(&data[..size]);
                if size == 0 {
                    break;
                }
            }
        } else {
            self.0.read_to_end(&mut body).unwrap();
        }
        Response {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }
}

#[test]
fn openai_tool_call_arguments_split_over_chunks_reassemble() {
    let malformed = r#"{"path": "a.txt", "text": "unterminated"#;
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::Tools {
            text: "Writing both.".into(),
            calls: vec![
                ToolCallSpec::new(
                    "fs.write",
                    &json!({"path": "notes.md", "text": "héllo wörld"}).to_string(),
                ),
                ToolCallSpec::new("fs.write", malformed),
            ],
        }],
    );
    assert!(model.base_url().ends_with("/v1"), "{}", model.base_url());
    let resp = Client::connect(&model).post("/v1/chat/completions", &json!({"model": "gpt-x"}));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert_eq!(resp.events().last().unwrap().1, "[DONE]");

    let chunks = resp.json_events();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    let mut calls: Vec<(String, String, String, usize)> = Vec::new();
    let mut order = Vec::new();
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-x");
        let delta = &c["choices"][0]["delta"];
        text.push_str(delta["content"].as_str().unwrap_or(""));
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap() as usize;
            order.push(i);
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(i, calls.len(), "a call starts once, in order");
                calls.push((
                    id.into(),
                    tc["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                    0,
                ));
            } else {
                assert!(tc.get("id").is_none() && tc["function"].get("name").is_none());
                calls[i]
                    .2
                    .push_str(tc["function"]["arguments"].as_str().unwrap());
                calls[i].3 += 1;
            }
        }
    }
    assert_eq!(text, "Writing both.");
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].2,
        json!({"path": "notes.md", "text": "héllo wörld"}).to_string()
    );
    assert_eq!(calls[1].2, malformed);
    assert!(
        calls
            .iter()
            .all(|c| c.3 >= 2 && c.1 == "fs.write" && c.0.starts_with("call_"))
    );
    assert_ne!(calls[0].0, calls[1].0);
    assert!(
        order.windows(2).any(|w| w[0] > w[1]),
        "calls interleave: {order:?}"
    );

    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn anthropic_text_stream_sends_events_in_order() {
    let model = FakeModel::scripted(Wire::Anthropic, vec![Reply::text("The answer is 42.")]);
    let resp = Client::connect(&model).post("/v1/messages", &json!({"model": "claude-x"}));
    assert_eq!(resp.status, 200);
    let events = resp.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "content_block_delta")
        .count();
    assert!(deltas >= 3, "{names:?}");
    let mut want = vec!["message_start", "content_block_start", "ping"];
    want.extend(std::iter::repeat_n("content_block_delta", deltas));
    want.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, want);

    let data = resp.json_events();
    for ((name, _), d) in events.iter().zip(&data) {
        assert_eq!(
            d["type"].as_str(),
            name.as_deref(),
            "type repeats the event name"
        );
    }
    assert_eq!(data[0]["message"]["model"], "claude-x");
    assert!(
        data[0]["message"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let text: String = data
        .iter()
        .filter_map(|d| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "The answer is 42.");
    let end = &data[data.len() - 2];
    assert_eq!(end["delta"]["stop_reason"], "end_turn");
    assert_eq!(end["usage"]["output_tokens"], json!(deltas));
}

#[test]
fn status_replies_carry_retry_after_and_the_provider_error_body() {
    let model = FakeModel::scripted(
        Wire::Anthropic,
        vec![Reply::Status {
            code: 429,
            retry_after: Some(7),
            message: "slow down".into(),
        }],
    );
    let resp = Client::connect(&model).post("/v1/messages", &json!({}));
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("7"));
    let body: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );
}

#[test]
fn one_connection_serves_several_requests_and_all_are_recorded() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![Reply::text("one"), Reply::text("two")]);
    let mut client = Client::connect(&model);
    for (i, want) in ["one", "two"].into_iter().enumerate() {
        let resp = client.post("/v1/chat/completions", &json!({"model": "m", "turn": i}));
        assert_eq!(resp.status, 200);
        let text: String = resp
            .json_events()
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(text, want);
    }
    // A request past the script fails clearly, on the same connection.
    let resp = client.post("/v1/chat/completions", &json!({"turn": 2}));
    assert_eq!(resp.status, 500);
    assert!(resp.body.contains("script ran out"), "{}", resp.body);

    let recorded = model.requests();
    assert_eq!(recorded.len(), 3);
    for (i, r) in recorded.iter().enumerate() {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.body["turn"], json!(i));
        assert_eq!(r.header("x-api-key"), Some("k"));
    }
    assert_eq!(model.remaining(), 0);
}

#[test]
fn cut_streams_end_early_and_stalls_notice_a_client_leaving() {
    let model = FakeModel::scripted(
        Wire::Anthropic,
        vec![
            Reply::Cut("never finished".into()),
            Reply::Stall {
                text: "wait for it".into(),
                hold_ms: 20_000,
            },
        ],
    );
    let resp = Client::connect(&model).post("/v1/messages", &json!({}));
    assert_eq!(resp.header("connection"), Some("close"));
    let names: Vec<_> = resp.events().into_iter().map(|(n, _)| n.unwrap()).collect();
    assert_eq!(
        names.last().map(String::as_str),
        Some("content_block_delta")
    );
    assert!(!names.contains(&"message_stop".to_string()), "{names:?}");

    let mut client = Client::connect(&model);
    let body = r#"{"model":"m"}"#;
    let req = format!(
        "POST /v1/messages HTTP/1.1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    client.0.get_mut().write_all(req.as_bytes()).unwrap();
    // Read until the first text delta arrives, then hang up.
    let mut seen = String::new();
    while !seen.contains("text_delta") {
        let mut line = String::new();
        assert!(client.0.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    while model.abandoned_streams() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(model.abandoned_streams(), 1);
}

#[test]
fn handlers_answer_concurrent_connections() {
    let model = FakeModel::with_handler(Wire::OpenAi, |body| {
        Reply::tool("echo", json!({"n": body["n"]}))
    });
    let threads: Vec<_> = (0..50)
        .map(|n| {
            let addr = model.addr();
            std::thread::spawn(move || {
                let sock = TcpStream::connect(addr).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut client = Client(BufReader::new(sock));
                let resp = client.post("/v1/chat/completions", &json!({"n": n}));
                let args: String = resp
                    .json_events()
                    .iter()
                    .filter_map(|c| {
                        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                            .as_str()
                            .map(str::to_string)
                    })
                    .collect();
                assert_eq!(args, json!({"n": n}).to_string());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(model.request_count(), 50);
}

/// The fake is as strict as llama-server's templates: adjacent user turns
/// get 400 "Conversation roles must alternate", arguments that are not JSON
/// get llama-server's 500 parse error, and neither uses a scripted reply.
#[test]
fn the_fake_refuses_what_strict_templates_refuse() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![Reply::text("fine")]);
    let mut client = Client::connect(&model);
    let two_users = json!({"model": "m", "messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ]});
    let resp = client.post("/v1/chat/completions", &two_users);
    assert_eq!(resp.status, 400);
    let body: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body["error"]["code"], 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Conversation roles must alternate")
    );
    let cut_args = json!({"model": "m", "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
    ]});
    let resp = client.post("/v1/chat/completions", &cut_args);
    assert_eq!(resp.status, 500);
    let body: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("[json.exception.parse_error.101]")
    );
    assert_eq!(model.refusals().len(), 2, "{:?}", model.refusals());
    assert_eq!(model.remaining(), 1, "a refusal used a scripted reply");
    let ok = json!({"model": "m", "messages": [{"role": "user", "content": "a"}]});
    assert_eq!(client.post("/v1/chat/completions", &ok).status, 200);
}
