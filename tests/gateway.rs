//! `keel serve` driven over real sockets on 127.0.0.1, with the fake model
//! servers: the API, its event streams, approvals, stopping, and every
//! refusal an attacker (a web page, a guesser, a slow client) should get.

mod common;

use std::time::Duration;

use common::Ws;
use common::agent::{NOTES, NOTES_SRC, model_table, notes_ws};
use common::gateway::{Serve, raw_request};
use common::model::{FakeModel, Reply, Wire};
use serde_json::json;

fn session(gw: &Serve) -> String {
    gw.post("/v1/sessions", &json!({"title": "t"})).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Posts a message and returns the run id.
fn message(gw: &Serve, session: &str, text: &str) -> String {
    let r = gw.post(
        &format!("/v1/sessions/{session}/messages"),
        &json!({"text": text}),
    );
    r.expect(202)["run_id"].as_str().unwrap().to_string()
}

#[test]
fn health_is_open_and_everything_else_needs_the_token() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = notes_ws(&model, "");
    let gw = Serve::start(&ws);
    let host = gw.addr.to_string();
    let h = raw_request(gw.addr, "GET", "/healthz", &[("Host", &host)], None);
    assert_eq!(h.expect(200)["status"], "ok");
    assert!(h.header("x-request-id").is_some_and(|v| !v.is_empty()));
    let r = raw_request(gw.addr, "GET", "/readyz", &[("Host", &host)], None);
    let v = r.expect(200);
    assert_eq!(v["ready"], true);
    assert_eq!(v["checks"]["model"]["ok"], true);

    // No token, a wrong one, one of another scheme: 401, the same words.
    let none = raw_request(gw.addr, "GET", "/v1/sessions", &[("Host", &host)], None);
    none.expect_error(401, "unauthorized", "Authorization: Bearer");
    let wrong = gw.send(
        "GET",
        "/v1/sessions",
        &[("Authorization", "Bearer nope")],
        None,
    );
    assert_eq!(wrong.body, none.body);
    let basic = gw.send(
        "GET",
        "/v1/sessions",
        &[("Authorization", &format!("Basic {}", gw.token))],
        None,
    );
    assert_eq!(basic.status, 401);
    assert!(wrong.header("x-request-id").is_some());
    // The right token works.
    gw.get("/v1/sessions").expect(200);
}

#[test]
fn readyz_says_which_check_fails_without_a_model() {
    let ws = Ws::new();
    let gw = Serve::start(&ws);
    let host = gw.addr.to_string();
    let v = raw_request(gw.addr, "GET", "/readyz", &[("Host", &host)], None).expect(503);
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"]["store"]["ok"], true);
    assert_eq!(v["checks"]["skills"]["ok"], true);
    assert_eq!(v["checks"]["model"]["ok"], false);
    assert!(
        v["checks"]["model"]["message"]
            .as_str()
            .unwrap()
            .contains("[models.main]")
    );
    // Messages are refused with the same advice.
    let s = session(&gw);
    gw.post(
        &format!("/v1/sessions/{s}/messages"),
        &json!({"text": "hi"}),
    )
    .expect_error(503, "no_model", "OPENAI_BASE_URL");
}

#[test]
fn a_message_streams_its_run_and_the_run_reads_back() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("notes__add", json!({"text": "milk"})),
            Reply::text("Noted: milk."),
        ],
    );
    let ws = notes_ws(&model, "[agent]\nactive_skills = [\"notes\"]\n");
    let gw = Serve::start(&ws);
    let s = session(&gw);
    let run = message(&gw, &s, "remember milk");
    let mut sse = gw.events(&format!("/v1/runs/{run}/events"), None);
    assert_eq!(sse.status, 200, "{}", sse.head);
    assert!(
        sse.head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream")
    );
    let events = sse.until("done");
    // Ids are 1, 2, 3, … in order.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.id.as_deref(),
            Some((i + 1).to_string().as_str()),
            "{events:#?}"
        );
    }
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"state"));
    let call = events
        .iter()
        .find(|e| e.event == "tool_call")
        .expect("tool_call");
    assert_eq!(call.data["name"], "notes.add");
    assert_eq!(call.data["args"], json!({"text": "milk"}));
    let result = events
        .iter()
        .find(|e| e.event == "tool_result")
        .expect("tool_result");
    assert_eq!(result.data["id"], call.data["id"]);
    assert_eq!(result.data["ok"], true);
    assert!(result.data["ms"].is_u64());
    let text: String = events
        .iter()
        .filter(|e| e.event == "text")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Noted: milk.");
    let done = events.last().unwrap();
    assert_eq!(done.data["state"], "done");
    assert_eq!(done.data["answer"], "Noted: milk.");
    assert!(done.data["usage"].is_object());
    // The stream ends after done.
    assert!(sse.next().is_none());

    let r = gw.get(&format!("/v1/runs/{run}")).expect(200);
    assert_eq!(r["state"], "done");
    assert_eq!(r["answer"], "Noted: milk.");
    assert_eq!(r["tool_calls"][0]["name"], "notes.add");
    assert_eq!(r["error"], serde_json::Value::Null);
    let m = gw.get(&format!("/v1/sessions/{s}/messages")).expect(200);
    let kinds: Vec<&str> = m["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["user", "assistant", "tool", "assistant"]);
    let one = gw.get(&format!("/v1/sessions/{s}")).expect(200);
    assert_eq!(one["runs"][0]["id"], run.as_str());
    let list = gw.get("/v1/sessions").expect(200);
    assert_eq!(list["sessions"][0]["id"], s.as_str());
    // The tool really ran, under the skill's grants.
    assert_eq!(ws.call("notes.list", json!({})).ok(), json!(["milk"]));
}

#[test]
fn a_stream_resumes_after_last_event_id_mid_run_after_the_end_and_after_a_restart() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::Stall {
            text: "Hello there, this is a slow answer.".into(),
            hold_ms: 1500,
        }],
    );
    let ws = notes_ws(&model, "");
    let gw = Serve::start(&ws);
    let s = session(&gw);
    let run = message(&gw, &s, "hi");
    let path = format!("/v1/runs/{run}/events");
    // Mid-run: read the first text delta, drop the connection, resume.
    let mut first = gw.events(&path, None);
    let head = first.until("text");
    let last_id = head.last().unwrap().id.clone().unwrap();
    drop(first);
    let mut resumed = gw.events(&path, Some(&last_id));
    let rest = resumed.until("done");
    assert_eq!(
        rest.first()
            .unwrap()
            .id
            .as_deref()
            .map(|i| i.parse::<u64>().unwrap()),
        Some(last_id.parse::<u64>().unwrap() + 1),
        "resumed right after the last id: {rest:#?}"
    );
    let mut all = head.clone();
    all.extend(rest.clone());
    let text: String = all
        .iter()
        .filter(|e| e.event == "text")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello there, this is a slow answer.");

    // After the end: the same events again, from any point.
    let whole = gw.events(&path, None).rest();
    assert_eq!(whole, all);
    let tail = gw.events(&path, Some("2")).rest();
    assert_eq!(tail, all[2..].to_vec());

    // After a restart: from the store, the same ids and data.
    let status = gw.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let gw = Serve::start(&ws);
    assert_eq!(gw.events(&path, None).rest(), all);
    assert_eq!(gw.events(&path, Some(&last_id)).rest(), rest);
    // Past the end: nothing more, and the stream ends.
    let end = all.last().unwrap().id.clone().unwrap();
    assert!(gw.events(&path, Some(&end)).rest().is_empty());
}

#[test]
fn an_approval_is_answered_over_http_and_answers_are_idempotent() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("notes__add", json!({"text": "x"})),
            Reply::text("done"),
        ],
    );
    let ws = Ws::new()
        .skill("notes", NOTES, &[("main.luau", NOTES_SRC)])
        .policy(&format!(
            "[policy]\nask = [\"kv\"]\n\n{}\n[agent]\nactive_skills = [\"notes\"]\n",
            model_table("main", &model)
        ));
    let gw = Serve::start(&ws);
    let mut ops = gw.events("/v1/events", None);
    let s = session(&gw);
    let run = message(&gw, &s, "add x");
    let mut sse = gw.events(&format!("/v1/runs/{run}/events"), None);
    let asked = sse.until("approval");
    let a = &asked.last().unwrap().data;
    assert_eq!(a["skill"], "notes");
    assert_eq!(a["capability"], "kv");
    let id = a["id"].as_str().unwrap().to_string();
    let pending = gw.get("/v1/approvals").expect(200);
    assert_eq!(pending["approvals"][0]["id"], id.as_str());
    assert_eq!(
        gw.get(&format!("/v1/runs/{run}")).expect(200)["state"],
        "waiting_permission"
    );

    // A wrong answer changes nothing.
    gw.post(&format!("/v1/approvals/{id}"), &json!({"answer": "maybe"}))
        .expect_error(400, "bad_request", "yes");
    gw.post(&format!("/v1/approvals/{id}"), &json!({"answer": "yes"}))
        .expect(200);
    // The same answer again: fine; another one: a conflict.
    gw.post(&format!("/v1/approvals/{id}"), &json!({"answer": "yes"}))
        .expect(200);
    gw.post(&format!("/v1/approvals/{id}"), &json!({"answer": "no"}))
        .expect_error(409, "conflict", "already answered");
    gw.post("/v1/approvals/a_nope", &json!({"answer": "no"}))
        .expect_error(404, "not_found", "a_nope");

    let done = sse.until("done");
    assert_eq!(done.last().unwrap().data["state"], "done");
    assert!(
        gw.get("/v1/approvals").expect(200)["approvals"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The operator stream saw it all.
    let seen = ops.until("run.finished");
    let names: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    for n in [
        "run.started",
        "approval.requested",
        "approval.answered",
        "run.finished",
    ] {
        assert!(names.contains(&n), "{names:?}");
    }
}

#[test]
fn cancel_stops_a_run_and_a_second_cancel_is_a_conflict() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::Stall {
            text: "thinking".into(),
            hold_ms: 20_000,
        }],
    );
    let ws = notes_ws(&model, "");
    let gw = Serve::start(&ws);
    let s = session(&gw);
    let run = message(&gw, &s, "hi");
    let mut sse = gw.events(&format!("/v1/runs/{run}/events"), None);
    sse.until("text");
    gw.post(&format!("/v1/runs/{run}/cancel"), &json!({}))
        .expect(202);
    let end = sse.until("done");
    assert_eq!(end.last().unwrap().data["state"], "cancelled");
    gw.post(&format!("/v1/runs/{run}/cancel"), &json!({}))
        .expect_error(409, "conflict", "already cancelled");
    gw.post("/v1/runs/r_nope/cancel", &json!({}))
        .expect_error(404, "not_found", "r_nope");
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = notes_ws(&model, "[gateway]\nmax_body_bytes = 2048\n");
    let gw = Serve::start(&ws);
    let s = session(&gw);
    let path = format!("/v1/sessions/{s}/messages");
    gw.send("POST", &path, &[], Some("{\"text\": "))
        .expect_error(400, "bad_request", "not valid JSON");
    gw.post(&path, &json!({"text": 5}))
        .expect_error(400, "bad_request", "field `text`");
    gw.post(&path, &json!({}))
        .expect_error(400, "bad_request", "missing field `text`");
    gw.post(&path, &json!({"text": "  "}))
        .expect_error(400, "bad_request", "empty");
    gw.post(&path, &json!({"text": "x", "extra": 1}))
        .expect_error(400, "bad_request", "unknown field `extra`");
    gw.post("/v1/sessions/s_nope/messages", &json!({"text": "x"}))
        .expect_error(404, "not_found", "s_nope");
    gw.get("/v1/runs/r_nope")
        .expect_error(404, "not_found", "r_nope");
    gw.get("/v1/runs/r_nope/events")
        .expect_error(404, "not_found", "r_nope");
    gw.get("/v1/sessions/s_nope")
        .expect_error(404, "not_found", "s_nope");
    let big = json!({"text": "x".repeat(4096)});
    gw.post(&path, &big)
        .expect_error(413, "payload_too_large", "max_body_bytes");
    gw.send("DELETE", "/v1/sessions", &[], None)
        .expect_error(405, "method_not_allowed", "DELETE");
    gw.send("PUT", &path, &[], Some("{}"))
        .expect_error(405, "method_not_allowed", "PUT");
    gw.get("/v1/nothing")
        .expect_error(404, "not_found", "/v1/nothing");
    // Path tricks never reach anything else.
    for p in [
        "/v1/../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%2f..%2fkeel.db",
        "/v1/sessions/..%2f..%2f",
    ] {
        let r = gw.get(p);
        assert!(
            r.status == 404 || r.status == 400,
            "{p}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.body.contains("root:"), "{p}: {}", r.body);
    }
    gw.get("/v1/runs/r_x/events")
        .expect_error(404, "not_found", "r_x");
    gw.send(
        "GET",
        "/v1/runs/r_x/events",
        &[("Last-Event-ID", "abc")],
        None,
    )
    .expect_error(400, "bad_request", "Last-Event-ID");
    // Nothing was accepted: the session has no messages.
    let m = gw.get(&format!("/v1/sessions/{s}/messages")).expect(200);
    assert!(m["messages"].as_array().unwrap().is_empty());
    assert_eq!(model.request_count(), 0);
}

#[test]
fn a_web_page_cannot_drive_the_gateway() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = notes_ws(
        &model,
        "[gateway]\nallowed_origins = [\"https://ops.example.com\"]\nallowed_hosts = [\"keel.internal\"]\n",
    );
    let gw = Serve::start(&ws);
    let own = format!("http://{}", gw.addr);
    // Cross-site request from a page the user visits: refused even with
    // the token (a page could have it from a leak; the Origin is the page's).
    gw.send(
        "POST",
        "/v1/sessions",
        &[("Origin", "http://evil.example")],
        Some("{}"),
    )
    .expect_error(403, "forbidden", "allowed_origins");
    gw.send("GET", "/v1/events", &[("Origin", "null")], None)
        .expect_error(403, "forbidden", "origin");
    // Its own origin and a listed one are fine; the listed one gets CORS headers.
    let r = gw.send("GET", "/v1/sessions", &[("Origin", &own)], None);
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    let r = gw.send(
        "GET",
        "/v1/sessions",
        &[("Origin", "https://ops.example.com")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://ops.example.com")
    );
    // Its preflight needs no token; a stranger's preflight is refused.
    let host = gw.addr.to_string();
    let pre = raw_request(
        gw.addr,
        "OPTIONS",
        "/v1/sessions",
        &[
            ("Host", &host),
            ("Origin", "https://ops.example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    );
    assert_eq!(pre.status, 204, "{}", pre.body);
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    let pre = raw_request(
        gw.addr,
        "OPTIONS",
        "/v1/sessions",
        &[("Host", &host), ("Origin", "http://evil.example")],
        None,
    );
    assert_eq!(pre.status, 403);

    // DNS rebinding: the page's own name, resolving to 127.0.0.1.
    gw.send(
        "GET",
        "/v1/sessions",
        &[("Host", &format!("evil.example:{}", gw.addr.port()))],
        None,
    )
    .expect_error(403, "forbidden", "allowed_hosts");
    gw.send("GET", "/healthz", &[("Host", "evil.example")], None)
        .expect_error(403, "forbidden", "host");
    let r = raw_request(
        gw.addr,
        "GET",
        "/v1/sessions",
        &[("Authorization", &format!("Bearer {}", gw.token))],
        None,
    );
    assert_eq!(r.status, 403, "no Host at all: {}", r.body);
    // Names the operator listed, and localhost on a loopback listener.
    assert_eq!(
        gw.send("GET", "/v1/sessions", &[("Host", "keel.internal")], None)
            .status,
        200
    );
    assert_eq!(
        gw.send(
            "GET",
            "/v1/sessions",
            &[("Host", &format!("localhost:{}", gw.addr.port()))],
            None
        )
        .status,
        200
    );

    // The token never travels in a URL, not even beside the right header.
    gw.get(&format!("/v1/sessions?token={}", gw.token))
        .expect_error(401, "token_in_url", "URL");
    gw.get(&format!("/v1/sessions?x={}", gw.token))
        .expect_error(401, "token_in_url", "URL");
    gw.get("/v1/sessions?access_token=abc")
        .expect_error(401, "token_in_url", "URL");
}

#[test]
fn guessing_the_token_from_loopback_is_rate_limited() {
    let ws = Ws::new();
    let gw = Serve::start(&ws);
    for i in 0..10 {
        let r = gw.send(
            "GET",
            "/v1/sessions",
            &[("Authorization", &format!("Bearer guess{i}"))],
            None,
        );
        assert_eq!(r.status, 401, "attempt {i}");
    }
    // Locked out: even the right token waits now, and says for how long.
    let r = gw.get("/v1/sessions");
    r.expect_error(429, "rate_limited", "try again in");
    // Liveness is not locked.
    assert_eq!(gw.send("GET", "/healthz", &[], None).status, 200);
}

#[test]
fn streams_are_bounded_and_slow_clients_are_dropped() {
    use std::io::{Read, Write};
    let ws = Ws::new().file("keel.toml", "[gateway]\nmax_streams = 2\n");
    let gw = Serve::start(&ws);
    let a = gw.events("/v1/events", None);
    let b = gw.events("/v1/events", None);
    assert_eq!((a.status, b.status), (200, 200));
    let c = gw.events("/v1/events", None);
    assert_eq!(c.status, 429, "{}", c.head);
    let body = c.error_body();
    assert_eq!(body["error"]["code"], "too_many_streams");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_streams")
    );
    // Closing one frees its place.
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = gw.events("/v1/events", None);
        if d.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the closed stream's place was never freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(b);

    // Half a request, never finished: dropped after the header timeout.
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(29),
        "the slow client was never dropped"
    );
    // The gateway still serves.
    assert_eq!(gw.send("GET", "/healthz", &[], None).status, 200);
}

#[test]
fn a_rotated_token_stops_working_at_once() {
    let ws = Ws::new();
    let mut gw = Serve::start(&ws);
    gw.get("/v1/sessions").expect(200);
    let out = ws.run(&["token", "--rotate"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let new = out.stdout.trim().to_string();
    assert_ne!(new, gw.token);
    assert_eq!(gw.get("/v1/sessions").status, 401);
    gw.token = new;
    gw.get("/v1/sessions").expect(200);
    // `keel token` prints the current one.
    assert_eq!(ws.run(&["token"]).stdout.trim(), gw.token);
    // From the environment, it is that value, and rotating says to change it.
    let gw2 = Serve::start_with(
        &ws,
        &[("KEEL_TOKEN", "an-operator-chosen-token-of-some-length")],
    );
    gw2.get("/v1/sessions").expect(200);
    let r = ws
        .keel()
        .env("KEEL_TOKEN", "x")
        .args(["token", "--rotate"])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("$KEEL_TOKEN"));
}

#[test]
fn sigterm_lets_a_short_run_finish_and_fails_a_long_one_with_the_reason() {
    let model = FakeModel::with_handler(Wire::OpenAi, |body| {
        let text = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| m["content"].to_string())
            .unwrap_or_default();
        if text.contains("long") {
            Reply::Stall {
                text: "slow".into(),
                hold_ms: 30_000,
            }
        } else {
            Reply::Stall {
                text: "quick".into(),
                hold_ms: 300,
            }
        }
    });
    let ws = notes_ws(&model, "[gateway]\nshutdown_grace_seconds = 2\n");
    let gw = Serve::start(&ws);
    let s1 = session(&gw);
    let s2 = session(&gw);
    let short = message(&gw, &s1, "short one");
    let long = message(&gw, &s2, "long one");
    let mut a = gw.events(&format!("/v1/runs/{short}/events"), None);
    let mut b = gw.events(&format!("/v1/runs/{long}/events"), None);
    a.until("text");
    b.until("text");
    let addr = gw.addr;
    let status = gw.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let store = keel::store::Store::open(&ws.data_dir()).unwrap();
    let short_run = store.run(&short).unwrap().unwrap();
    assert_eq!(
        short_run.state,
        keel::agent::RunState::Done,
        "{short_run:?}"
    );
    let long_run = store.run(&long).unwrap().unwrap();
    assert_eq!(long_run.state, keel::agent::RunState::Failed);
    assert!(
        long_run
            .reason
            .as_deref()
            .unwrap()
            .contains("shutdown_grace_seconds"),
        "{long_run:?}"
    );
    // The streams were closed, not left hanging.
    let _ = a.rest();
    let _ = b.rest();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after exit"
    );
}

#[test]
fn kill_9_mid_run_loses_no_message_and_the_stream_ends_after_restart() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::Stall {
            text: "partial".into(),
            hold_ms: 30_000,
        }],
    );
    let ws = notes_ws(&model, "");
    let mut gw = Serve::start(&ws);
    let s = session(&gw);
    let run = message(&gw, &s, "an important message");
    let mut sse = gw.events(&format!("/v1/runs/{run}/events"), None);
    let seen = sse.until("text");
    gw.child.kill().unwrap();
    gw.wait_exit(Duration::from_secs(10));
    drop(gw);
    let gw = Serve::start(&ws);
    // The message is there, the run is failed as interrupted.
    let m = gw.get(&format!("/v1/sessions/{s}/messages")).expect(200);
    assert_eq!(m["messages"][0]["content"], "an important message");
    let r = gw.get(&format!("/v1/runs/{run}")).expect(200);
    assert_eq!(r["state"], "failed");
    assert!(r["error"].as_str().unwrap().contains("interrupted"), "{r}");
    // The stream resumes and ends with a done made from the record, and
    // that done is the same for every later reader.
    let last = seen.last().unwrap().id.clone().unwrap();
    let rest = gw
        .events(&format!("/v1/runs/{run}/events"), Some(&last))
        .rest();
    let done = rest.last().expect("a done event");
    assert_eq!(done.event, "done");
    assert_eq!(done.data["state"], "failed");
    let again = gw
        .events(&format!("/v1/runs/{run}/events"), Some(&last))
        .rest();
    assert_eq!(again, rest);
    // The session goes on.
    assert_eq!(
        gw.post(
            &format!("/v1/sessions/{s}/messages"),
            &json!({"text": "again"})
        )
        .status,
        202
    );
}

#[test]
fn skill_edits_and_config_changes_show_on_the_operator_stream() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = notes_ws(&model, "");
    let gw = Serve::start(&ws);
    let mut ops = gw.events("/v1/events", None);
    ws.write(
        "skills/notes/main.luau",
        "local M = {\nfunction M.add( return M\n",
    );
    let failed = ops.until("skill.failed");
    let f = &failed.last().unwrap().data;
    assert!(f["file"].as_str().unwrap().ends_with("main.luau"), "{f}");
    assert_eq!(f["line"], 2);
    assert!(!f["message"].as_str().unwrap().is_empty());
    assert_eq!(f["kept"], "notes@1.0.0");
    ws.write("skills/notes/main.luau", NOTES_SRC);
    let loaded = ops.until("skill.loaded");
    assert_eq!(loaded.last().unwrap().data["skill"], "notes@1.0.0");
    // keel.toml: a broken edit, then a good one.
    let toml = std::fs::read_to_string(ws.path("keel.toml")).unwrap();
    ws.write("keel.toml", &format!("{toml}\n[policy.oops\n"));
    let bad = ops.until("config.failed");
    let b = &bad.last().unwrap().data;
    assert!(b["file"].as_str().unwrap().ends_with("keel.toml"), "{b}");
    assert!(b["line"].as_u64().unwrap() > 1);
    ws.write("keel.toml", &toml);
    let reloaded = ops.until("config.reloaded");
    // A client that reconnects with the last id it saw gets only what came
    // after it.
    let failed_id = bad.last().unwrap().id.clone().unwrap();
    let mut again = gw.events("/v1/events", Some(&failed_id));
    let next = again.until("config.reloaded");
    assert_eq!(next, reloaded);
    // An id of another start (or garbage) gets everything kept.
    let mut all = gw.events("/v1/events", Some("0000-1"));
    assert_eq!(all.next().unwrap().event, "skill.failed");
}

/// The Python with the `openai` package (scripts/python-deps makes it;
/// scripts/test sets KEEL_PYTHON). Fails, never skips, when there is none.
fn python_with_openai() -> String {
    let python = std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{python} cannot import the `openai` package: run the tests with scripts/test, or set KEEL_PYTHON=$(scripts/python-deps)"
    );
    python
}

const OPENAI_CLIENT: &str = r#"
import json, sys, openai
base, token = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)
out = {}
r = client.chat.completions.with_raw_response.create(
    model="keel", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"}], user="alice")
c = r.parse()
out["plain"] = c.choices[0].message.content
out["finish"] = c.choices[0].finish_reason
out["usage"] = c.usage.total_tokens
out["session"] = r.headers.get("x-keel-session")
stream = client.chat.completions.create(
    model="keel", messages=[{"role": "user", "content": [{"type": "text", "text": "second"}]}], user="alice", stream=True)
parts, finish = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
out["streamed"] = "".join(parts)
out["stream_finish"] = finish
try:
    client.chat.completions.create(model="keel", messages=[{"role": "system", "content": "no user"}])
    out["bad"] = "accepted"
except openai.BadRequestError as e:
    out["bad"] = e.status_code
bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
try:
    bad.chat.completions.create(model="keel", messages=[{"role": "user", "content": "x"}])
    out["auth"] = "accepted"
except openai.AuthenticationError as e:
    out["auth"] = e.status_code
print(json.dumps(out))
"#;

#[test]
fn the_openai_python_package_talks_to_keel_as_a_model() {
    let python = python_with_openai();
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::text("One answer."),
            Reply::text("Streamed answer, in parts."),
        ],
    );
    let ws = notes_ws(&model, "");
    let gw = Serve::start(&ws);
    let out = std::process::Command::new(python)
        .args([
            "-c",
            OPENAI_CLIENT,
            &format!("http://{}", gw.addr),
            &gw.token,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plain"], "One answer.");
    assert_eq!(v["finish"], "stop");
    assert_eq!(v["streamed"], "Streamed answer, in parts.");
    assert_eq!(v["stream_finish"], "stop");
    assert_eq!(v["bad"], 400);
    assert_eq!(v["auth"], 401);
    // The same `user` continued one session: the second request carried
    // the first turn.
    let session = v["session"].as_str().unwrap();
    let m = gw
        .get(&format!("/v1/sessions/{session}/messages"))
        .expect(200);
    let texts: Vec<&str> = m["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "first",
            "One answer.",
            "second",
            "Streamed answer, in parts."
        ]
    );
    let second = &model.requests()[1].body;
    assert!(second.to_string().contains("One answer."), "{second}");
}

#[test]
fn keel_toml_edits_apply_live_and_say_what_needs_a_restart() {
    let a = FakeModel::scripted(Wire::OpenAi, vec![Reply::text("from A")]);
    let b = FakeModel::scripted(Wire::OpenAi, vec![Reply::text("from B")]);
    let ws = notes_ws(&a, "");
    let gw = Serve::start(&ws);
    let mut ops = gw.events("/v1/events", None);
    let s = session(&gw);
    let run = message(&gw, &s, "one");
    let done = gw
        .events(&format!("/v1/runs/{run}/events"), None)
        .until("done");
    assert_eq!(done.last().unwrap().data["answer"], "from A");
    gw.send(
        "GET",
        "/v1/sessions",
        &[("Origin", "https://ops.example.com")],
        None,
    )
    .expect_error(403, "forbidden", "allowed_origins");

    // Another model, another origin, another skill folder, another port.
    ws.write(
        "more/echo/skill.toml",
        "[skill]\nname = \"echo\"\nversion = \"1.0.0\"\ndescription = \"Echo\"\nentry = \"main.luau\"\n[[tools]]\nname = \"say\"\ndescription = \"Say\"\n",
    );
    ws.write(
        "more/echo/main.luau",
        "return { say = function() return 'hi' end }\n",
    );
    ws.write(
        "keel.toml",
        &format!(
            "[skills]\npaths = [\"skills\", \"more\"]\n\n[policy]\nallow = [\"kv\"]\n\n{}\n[gateway]\nlisten = \"127.0.0.1:1\"\nallowed_origins = [\"https://ops.example.com\"]\n",
            model_table("main", &b)
        ),
    );
    let reloaded = ops.until("config.reloaded");
    let summary = reloaded.last().unwrap().data["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.contains("[models] and [agent]"), "{summary}");
    assert!(summary.contains("[gateway] listen keep"), "{summary}");
    gw.expect_log("keep their old value until a restart");
    // The next run asks the new model; the listed origin is let in; the
    // new folder's skill is there; the old address still serves.
    let run = message(&gw, &s, "two");
    let done = gw
        .events(&format!("/v1/runs/{run}/events"), None)
        .until("done");
    assert_eq!(done.last().unwrap().data["answer"], "from B");
    assert_eq!(a.request_count(), 1);
    let r = gw.send(
        "GET",
        "/v1/sessions",
        &[("Origin", "https://ops.example.com")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tools = gw.get("/v1/tools").expect(200).to_string();
        if tools.contains("echo.say") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new folder's skill never loaded: {tools}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A broken edit keeps all of it and says where.
    ws.write("keel.toml", "[gateway\n");
    let failed = ops.until("config.failed");
    assert_eq!(failed.last().unwrap().data["line"], 1);
    let r = gw.send(
        "GET",
        "/v1/sessions",
        &[("Origin", "https://ops.example.com")],
        None,
    );
    assert_eq!(r.status, 200);
}

#[test]
fn skills_are_disabled_over_http_across_a_restart_and_metrics_pass_promtool() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = notes_ws(&model, "");
    let gw = Serve::start(&ws);
    let mut ops = gw.events("/v1/events", None);
    let r = gw.post("/v1/tools/notes.add/call", &json!({"args": {"text": "a"}}));
    assert_eq!(r.expect(200)["ok"], true);
    gw.post("/v1/tools/notes.nope/call", &json!({"args": {}}))
        .expect_error(404, "not_found", "notes.nope");
    let one = gw.get("/v1/skills/notes").expect(200);
    assert_eq!(one["state"], "loaded");
    assert_eq!(one["telemetry"]["calls"], 1);
    assert!(one["telemetry"]["p50_ms"].is_number(), "{one}");
    gw.post("/v1/skills/notse/disable", &json!({}))
        .expect_error(404, "not_found", "did you mean `notes`");
    let d = gw.post("/v1/skills/notes/disable", &json!({})).expect(200);
    assert_eq!(
        (d["enabled"].as_bool(), d["changed"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(
        ops.until("skill.disabled").last().unwrap().data["skill"],
        "notes"
    );
    let r = gw.post("/v1/tools/notes.add/call", &json!({"args": {"text": "b"}}));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("disabled"), "{}", r.body);
    // Listed, marked: there, and refused until enabled.
    let tools = gw.get("/v1/tools").expect(200);
    let add = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "notes.add")
        .unwrap();
    assert_eq!(add["enabled"], false);
    let listing = ws.run(&["tools"]);
    let line = listing
        .stdout
        .lines()
        .find(|l| l.starts_with("notes.add"))
        .unwrap();
    assert!(
        line.contains("(disabled: `keel skill enable notes`)"),
        "{line}"
    );

    // The state survives a restart, and shows in `keel skills`.
    assert!(gw.terminate(Duration::from_secs(20)).success());
    let listing = ws.run(&["skills"]);
    assert!(listing.stdout.contains("disabled"), "{}", listing.stdout);
    let gw = Serve::start(&ws);
    assert_eq!(gw.get("/v1/skills/notes").expect(200)["state"], "disabled");
    gw.post("/v1/skills/notes/enable", &json!({})).expect(200);
    assert_eq!(
        gw.post("/v1/tools/notes.add/call", &json!({"args": {"text": "c"}}))
            .status,
        200
    );

    // Metrics: the real promtool accepts them.
    let m = gw.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    assert!(m.body.contains("keel_tool_calls_total{"), "{}", m.body);
    assert!(
        m.body.contains("process_resident_memory_bytes"),
        "{}",
        m.body
    );
    let (status, out) = common::promtool_check(&m.body);
    assert_eq!(status, 0, "promtool check metrics: {out}");
}

#[test]
fn a_direct_tool_call_that_asks_parks_as_an_approval() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = Ws::new()
        .skill("notes", NOTES, &[("main.luau", NOTES_SRC)])
        .policy(&format!(
            "[policy]\nask = [\"kv\"]\n\n{}",
            model_table("main", &model)
        ));
    let gw = Serve::start(&ws);
    let mut ops = gw.events("/v1/events", None);
    // The call waits in a thread of its own, as a client would.
    let call_in_background = |text: &str| {
        let (addr, auth) = (gw.addr, format!("Bearer {}", gw.token));
        let body = json!({"args": {"text": text}}).to_string();
        std::thread::spawn(move || {
            let host = addr.to_string();
            raw_request(
                addr,
                "POST",
                "/v1/tools/notes.add/call",
                &[("Host", &host), ("Authorization", &auth)],
                Some(&body),
            )
        })
    };
    // Yes, from the API: the waiting call goes on and succeeds.
    let call = call_in_background("a");
    let asked = ops.until("approval.requested");
    let id = asked.last().unwrap().data["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        asked.last().unwrap().data["run_id"],
        serde_json::Value::Null
    );
    let pending = gw.get("/v1/approvals").expect(200);
    assert_eq!(pending["approvals"][0]["id"], id.as_str());
    assert_eq!(pending["approvals"][0]["run_id"], "");
    gw.post(&format!("/v1/approvals/{id}"), &json!({"answer": "yes"}))
        .expect(200);
    let r = call.join().unwrap();
    assert_eq!(r.expect(200)["ok"], true);
    // No, from another process (`keel approve`): refused, nothing written.
    let call = call_in_background("b");
    let asked = ops.until("approval.requested");
    let id = asked.last().unwrap().data["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ws.run(&["approve", &id, "no"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let r = call.join().unwrap();
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("denied"), "{}", r.body);
    assert_eq!(
        ws.call("notes.list", json!({})).stdout.trim(),
        "",
        "a denied call must not run its kv write"
    );
}
