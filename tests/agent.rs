//! The agent against fake model servers that speak the real OpenAI Chat
//! Completions and Anthropic Messages streaming formats over real HTTP.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::agent::{Harness, NOTES, NOTES_SRC, model_table, notes_ws};
use common::model::{FakeModel, Reply, ToolCallSpec, Wire};
use common::{Ws, runtime};
use keel::agent::owner::Owner;
use keel::agent::{Agent, AgentError, RunEvent, RunOutcome, RunState};
use keel::store::{AnswerError, ApprovalAnswer, ApprovalRecord, INTERRUPTED};
use serde_json::{Value, json};

fn multi_round(wire: Wire) {
    let model = FakeModel::scripted(
        wire,
        vec![
            Reply::tool("notes__add", json!({"text": "buy milk"})),
            Reply::tool("notes__list", json!({})),
            Reply::text("You have one note: buy milk."),
        ],
    );
    let ws = notes_ws(&model, "");
    let rt = runtime();
    let kernel = ws.kernel(&rt);
    let agent = Agent::new(kernel.clone()).expect("agent");
    let session = agent.new_session("t").unwrap();
    let _g = rt.enter();
    let handle = agent.submit(&session.id, "remember to buy milk").unwrap();
    let mut texts = String::new();
    let mut tools = Vec::new();
    let outcome = rt.block_on(handle.wait_with(|e| match e {
        RunEvent::Text(t) => texts.push_str(t),
        RunEvent::ToolFinished { name, ok, .. } => tools.push((name.clone(), *ok)),
        _ => {}
    }));
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.answer, "You have one note: buy milk.");
    assert_eq!(texts, outcome.answer, "streamed text is the answer");
    assert_eq!(
        tools,
        [
            ("notes.add".to_string(), true),
            ("notes.list".to_string(), true)
        ]
    );
    assert_eq!(outcome.tool_calls.len(), 2);
    assert_eq!(
        outcome.tool_calls[1].result.as_deref(),
        Some("[\"buy milk\"]")
    );
    assert!(outcome.usage.input_tokens > 0 && outcome.usage.output_tokens > 0);
    let reqs = model.requests();
    assert_eq!(reqs.len(), 3);
    let body = reqs[2].body.to_string();
    assert!(body.contains("buy milk"), "{body}");
    // The prompt lists the skill by its SKILL.md description; the body
    // arrives only when the model activates the skill.
    let system = reqs[0].body.to_string();
    assert!(system.contains("- notes: Keeps notes."), "{system}");
    assert!(
        !body.contains("Add notes with notes.add."),
        "SKILL.md body stays out until activation: {body}"
    );
    assert!(body.contains("notes__add"), "tools offered by wire name");
}

#[test]
fn a_multi_round_tool_conversation_over_openai() {
    multi_round(Wire::OpenAi);
}

#[test]
fn a_multi_round_tool_conversation_over_anthropic() {
    multi_round(Wire::Anthropic);
}

// ---------------------------------------------------------------------------
// Helpers shared by the tests below.
// ---------------------------------------------------------------------------

/// A skill that writes files under `./out`.
const WRITER: &str = r#"
[skill]
name = "writer"
version = "1.0.0"
description = "Writes files"
entry = "main.luau"
[capabilities]
"fs.write" = ["./out"]
[[tools]]
name = "save"
description = "Save a file in ./out"
parameters = { type = "object", properties = { name = { type = "string" }, text = { type = "string" } }, required = ["name", "text"] }
"#;

const WRITER_SRC: &str = r#"
local M = {}
function M.save(args)
  keel.fs.write("./out/" .. args.name, args.text)
  return "saved " .. args.name
end
return M
"#;

/// A workspace with the writer skill, an empty `out` folder, `model` as
/// the only model, and `toml` (policy, agent settings) in keel.toml.
fn writer_ws(model: &FakeModel, toml: &str) -> Ws {
    Ws::new()
        .skill("writer", WRITER, &[("main.luau", WRITER_SRC)])
        .file("out/.keep", "")
        .policy(&format!("{toml}\n{}", model_table("main", model)))
}

fn save_call(name: &str) -> Reply {
    Reply::tool("writer__save", json!({"name": name, "text": "hello"}))
}

/// One entry of a request's conversation, the same for both wires.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    System(String),
    User(String),
    Assistant(String),
    Call(String),
    Result { id: String, content: String },
}

fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// The conversation a recorded request carried, in order.
fn items(body: &Value) -> Vec<Item> {
    let mut out = Vec::new();
    if let Some(s) = body["system"].as_str() {
        out.push(Item::System(s.to_string()));
    }
    for m in body["messages"].as_array().into_iter().flatten() {
        let role = m["role"].as_str().unwrap_or_default();
        let said = |text: String| match role {
            "system" => Item::System(text),
            "user" => Item::User(text),
            _ => Item::Assistant(text),
        };
        match &m["content"] {
            Value::Array(blocks) => {
                for b in blocks {
                    match b["type"].as_str() {
                        Some("text") => out.push(said(text_of(&b["text"]))),
                        Some("tool_use") => out.push(Item::Call(text_of(&b["id"]))),
                        Some("tool_result") => out.push(Item::Result {
                            id: text_of(&b["tool_use_id"]),
                            content: text_of(&b["content"]),
                        }),
                        _ => {}
                    }
                }
            }
            content if role == "tool" => out.push(Item::Result {
                id: text_of(&m["tool_call_id"]),
                content: text_of(content),
            }),
            Value::String(s) => out.push(said(s.clone())),
            _ => out.push(said(String::new())),
        }
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            out.push(Item::Call(text_of(&c["id"])));
        }
    }
    out
}

/// Asserts that every tool result in a request follows its call, and that
/// every call has its results before the conversation moves on.
fn assert_pairs(body: &Value) {
    let mut pending: Vec<String> = Vec::new();
    for item in items(body) {
        match item {
            Item::Call(id) => pending.push(id),
            Item::Result { id, .. } => {
                let at = pending.iter().position(|p| *p == id);
                assert!(
                    at.is_some(),
                    "result {id} without its call before it: {body}"
                );
                pending.retain(|p| *p != id);
            }
            other => assert!(
                pending.is_empty(),
                "{other:?} comes before the results of {pending:?}: {body}"
            ),
        }
    }
    assert!(
        pending.is_empty(),
        "calls {pending:?} have no result: {body}"
    );
}

fn is_summary_request(body: &Value) -> bool {
    matches!(items(body).first(), Some(Item::System(s)) if s.starts_with("You summarize the earlier part"))
}

/// The results of the tool calls a request carried.
fn results(body: &Value) -> Vec<String> {
    items(body)
        .into_iter()
        .filter_map(|i| match i {
            Item::Result { content, .. } => Some(content),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The capability gate inside a run.
// ---------------------------------------------------------------------------

/// A tool whose effect the policy denies fails as a tool call, not as the
/// run: the model gets an error result naming the denial, the run ends
/// `done`, and nothing is written.
#[test]
fn a_denied_effect_is_an_error_result_and_the_run_goes_on() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![save_call("a.txt"), Reply::text("I could not save it.")],
    );
    let h = Harness::new(writer_ws(&model, "[policy]\ndeny = [\"fs.write:./out\"]\n"));
    let outcome = h.ask(&h.session(), "save a file");
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.answer, "I could not save it.");
    assert!(outcome.tool_calls[0].is_error, "{outcome:?}");
    let reqs = model.requests();
    assert_eq!(reqs.len(), 2);
    let given = results(&reqs[1].body);
    assert_eq!(given.len(), 1);
    assert!(
        given[0].contains("denied for skill `writer`")
            && given[0].contains("policy deny `fs.write:./out`"),
        "{given:?}"
    );
    assert!(
        !h.ws.path("out/a.txt").exists(),
        "the denied write happened"
    );
}

// ---------------------------------------------------------------------------
// Approvals.
// ---------------------------------------------------------------------------

const ASK_WRITES: &str = "[policy]\nask = [\"fs.write:./out\"]\n";

/// Runs `save a file` and answers the approval it asks for with `answer`
/// from another thread, as a front end would. Returns the outcome, the
/// approval records the run announced, and each answer's result.
fn answered_run(
    h: &Harness,
    session: &str,
    answers: Vec<ApprovalAnswer>,
) -> (
    RunOutcome,
    Vec<ApprovalRecord>,
    Vec<Result<ApprovalRecord, String>>,
) {
    let handle = h.submit(session, "save a file");
    let mut asked = Vec::new();
    let mut answering = Vec::new();
    let outcome = h.wait(handle, |e| {
        if let RunEvent::Approval(record) = e {
            asked.push(record.clone());
            let (agent, id, answers) = (h.agent.clone(), record.id.clone(), answers.clone());
            answering.push(std::thread::spawn(move || {
                answers
                    .into_iter()
                    .map(|a| agent.answer(&id, a).map_err(|e| e.to_string()))
                    .collect::<Vec<_>>()
            }));
        }
    });
    let answered = answering
        .into_iter()
        .flat_map(|t| t.join().expect("answering thread"))
        .collect();
    (outcome, asked, answered)
}

fn history(h: &Harness, run_id: &str) -> Vec<String> {
    h.store()
        .run_history(run_id)
        .unwrap()
        .into_iter()
        .map(|(state, _)| state.name().to_string())
        .collect()
}

/// A yes from another thread lets the effect happen; the run's stored
/// history shows it parked in `waiting_permission` and coming back.
#[test]
fn an_approved_effect_happens_and_the_run_waited_for_it() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![save_call("a.txt"), Reply::text("Saved.")],
    );
    let h = Harness::new(writer_ws(&model, ASK_WRITES));
    let (outcome, asked, answered) = answered_run(&h, &h.session(), vec![ApprovalAnswer::Yes]);
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(asked.len(), 1);
    // The prompt's rule is exactly the file the call writes, not the
    // manifest's `fs.write:./out`.
    let exact = format!(
        "fs.write:{}",
        std::fs::canonicalize(h.ws.path("out"))
            .unwrap()
            .join("a.txt")
            .display()
    );
    assert_eq!(
        (asked[0].skill.as_str(), asked[0].rule.as_str()),
        ("writer", exact.as_str())
    );
    assert!(answered[0].is_ok(), "{answered:?}");
    assert!(!outcome.tool_calls[0].is_error, "{outcome:?}");
    assert_eq!(outcome.tool_calls[0].result.as_deref(), Some("saved a.txt"));
    assert_eq!(
        std::fs::read_to_string(h.ws.path("out/a.txt")).unwrap(),
        "hello"
    );
    assert_eq!(
        history(&h, &outcome.id),
        ["queued", "running", "waiting_permission", "running", "done"]
    );
    assert_eq!(
        h.store().approval(&asked[0].id).unwrap().unwrap().state,
        "approved"
    );
    assert!(
        h.store().all_grants().unwrap().is_empty(),
        "yes is not always"
    );
}

/// A no is an error result for the call; the run still ends `done`.
#[test]
fn a_refused_effect_is_an_error_result() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![save_call("a.txt"), Reply::text("Not saved.")],
    );
    let h = Harness::new(writer_ws(&model, ASK_WRITES));
    let (outcome, asked, answered) = answered_run(&h, &h.session(), vec![ApprovalAnswer::No]);
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert!(answered[0].is_ok(), "{answered:?}");
    assert!(outcome.tool_calls[0].is_error, "{outcome:?}");
    let given = results(&model.requests()[1].body);
    assert!(given[0].contains("the request was denied"), "{given:?}");
    assert!(!h.ws.path("out/a.txt").exists());
    assert_eq!(
        h.store().approval(&asked[0].id).unwrap().unwrap().state,
        "denied"
    );
}

/// `always` stores the grant, so the next run does the same without asking.
#[test]
fn always_is_remembered_and_the_next_run_does_not_ask() {
    let model = FakeModel::scripted(
        Wire::Anthropic,
        vec![
            save_call("a.txt"),
            Reply::text("Saved."),
            save_call("a.txt"),
            Reply::text("Saved again."),
            save_call("b.txt"),
            Reply::text("Not saved."),
        ],
    );
    let h = Harness::new(writer_ws(&model, ASK_WRITES));
    let (first, asked, _) = answered_run(&h, &h.session(), vec![ApprovalAnswer::Always]);
    assert_eq!(first.state, "done", "{first:?}");
    assert_eq!(asked.len(), 1);
    // `always` stored exactly what the prompt showed: this one file, in
    // this workspace; never the manifest's wider `fs.write:./out`.
    let grants = h.store().all_grants().unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].capability, asked[0].rule);
    assert!(grants[0].capability.ends_with("/out/a.txt"), "{grants:?}");
    assert_eq!(
        std::path::Path::new(&grants[0].workspace),
        std::fs::canonicalize(h.ws.path(".")).unwrap()
    );
    // The same file again: not asked.
    let (second, asked_again, _) = answered_run(&h, &h.session(), vec![ApprovalAnswer::No]);
    assert_eq!(second.state, "done", "{second:?}");
    assert!(asked_again.is_empty(), "asked again: {asked_again:?}");
    assert!(!second.tool_calls[0].is_error, "{second:?}");
    // Another file in the same folder: asked, and a no refuses it.
    let (third, asked_third, _) = answered_run(&h, &h.session(), vec![ApprovalAnswer::No]);
    assert_eq!(third.state, "done", "{third:?}");
    assert_eq!(
        asked_third.len(),
        1,
        "b.txt was not covered by a.txt's grant"
    );
    assert!(third.tool_calls[0].is_error, "{third:?}");
    assert!(!h.ws.path("out/b.txt").exists());
    assert_eq!(h.store().approvals(false).unwrap().len(), 2);
}

/// Nobody answering within `approval_timeout_seconds` is a no: the request
/// ends `expired`, the call fails, the run ends `done`, and a late answer
/// is refused.
#[test]
fn an_unanswered_approval_expires_as_a_no() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![save_call("a.txt"), Reply::text("Timed out.")],
    );
    let h = Harness::new(writer_ws(
        &model,
        &format!("{ASK_WRITES}\n[agent]\napproval_timeout_seconds = 1\n"),
    ));
    let (outcome, asked, _) = answered_run(&h, &h.session(), vec![]);
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(asked.len(), 1);
    assert!(outcome.tool_calls[0].is_error, "{outcome:?}");
    assert!(!h.ws.path("out/a.txt").exists());
    let record = h.store().approval(&asked[0].id).unwrap().unwrap();
    assert_eq!(record.state, "expired");
    let late = h.agent.answer(&asked[0].id, ApprovalAnswer::Yes);
    assert!(
        matches!(late, Err(AgentError::Answer(AnswerError::Expired(_)))),
        "{late:?}"
    );
    assert!(h.agent.pending_approvals().unwrap().is_empty());
}

/// Answering twice with the same answer succeeds and changes nothing; a
/// different answer afterwards is refused.
#[test]
fn answering_again_is_idempotent_and_a_different_answer_is_refused() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![save_call("a.txt"), Reply::text("Saved.")],
    );
    let h = Harness::new(writer_ws(&model, ASK_WRITES));
    let (outcome, _, answered) = answered_run(
        &h,
        &h.session(),
        vec![ApprovalAnswer::Yes, ApprovalAnswer::Yes, ApprovalAnswer::No],
    );
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert!(!outcome.tool_calls[0].is_error, "{outcome:?}");
    let (first, again) = (answered[0].as_ref().unwrap(), answered[1].as_ref().unwrap());
    assert_eq!(first, again, "the second yes changed the record");
    assert_eq!(first.state, "approved");
    let refused = answered[2].as_ref().unwrap_err();
    assert!(refused.contains("already answered `yes`"), "{refused}");
    assert_eq!(h.store().approval(&first.id).unwrap().unwrap(), *first);
}

/// Cancelling a run that waits for an approval ends it `cancelled` and
/// expires the request (a late answer is refused); nothing is written.
#[test]
fn cancelling_while_waiting_for_approval_expires_the_request() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![save_call("a.txt")]);
    let h = Harness::new(writer_ws(&model, ASK_WRITES));
    let handle = h.submit(&h.session(), "save a file");
    let run_id = handle.run_id.clone();
    let mut asked = None;
    let outcome = h.wait(handle, |e| {
        if let RunEvent::Approval(record) = e {
            asked = Some(record.id.clone());
            assert!(h.agent.cancel(&run_id));
        }
    });
    assert_eq!(outcome.state, "cancelled", "{outcome:?}");
    let asked = asked.expect("no approval was asked for");
    // The waiting tool call notices the cancellation on its own thread.
    let until = Instant::now() + Duration::from_secs(30);
    let state = || h.store().approval(&asked).unwrap().unwrap().state;
    while state() == "pending" && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(state(), "expired");
    assert!(h.agent.answer(&asked, ApprovalAnswer::Yes).is_err());
    assert!(!h.ws.path("out/a.txt").exists());
    let states = history(&h, &outcome.id);
    assert_eq!(
        states[states.len() - 2..],
        ["waiting_permission", "cancelled"]
    );
}

// ---------------------------------------------------------------------------
// The model chain.
// ---------------------------------------------------------------------------

/// A workspace with the notes skill and a chain `main` → `backup`.
fn chain_ws(main: &FakeModel, backup: &FakeModel) -> Ws {
    Ws::new()
        .skill("notes", NOTES, &[("main.luau", NOTES_SRC)])
        .policy(&format!(
            "[policy]\nallow = [\"kv\"]\n\n[models]\nchain = [\"main\", \"backup\"]\n\n{}\n{}",
            model_table("main", main),
            model_table("backup", backup)
        ))
}

fn status(code: u16, retry_after: Option<u64>, message: &str) -> Reply {
    Reply::Status {
        code,
        retry_after,
        message: message.to_string(),
    }
}

/// A server error on every attempt at the first model moves the run to the
/// backup, which answers.
#[test]
fn a_failing_model_falls_back_to_the_next_in_the_chain() {
    let main = FakeModel::scripted(
        Wire::OpenAi,
        vec![status(500, None, "boom"), status(500, None, "boom")],
    );
    let backup = FakeModel::scripted(Wire::Anthropic, vec![Reply::text("From the backup.")]);
    let h = Harness::new(chain_ws(&main, &backup));
    let outcome = h.ask(&h.session(), "hi");
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.answer, "From the backup.");
    assert_eq!(outcome.model.as_deref(), Some("backup"));
    assert_eq!(main.request_count(), 2, "two attempts at main");
    assert_eq!(backup.request_count(), 1);
}

/// A 400 is the request's fault: it is not retried nor passed to the
/// backup, and the run fails naming the status.
#[test]
fn a_bad_request_is_not_passed_down_the_chain() {
    let main = FakeModel::scripted(Wire::OpenAi, vec![status(400, None, "messages: too long")]);
    let backup = FakeModel::scripted(Wire::OpenAi, vec![Reply::text("never")]);
    let h = Harness::new(chain_ws(&main, &backup));
    let outcome = h.ask(&h.session(), "hi");
    assert_eq!(outcome.state, "failed", "{outcome:?}");
    let reason = outcome.reason.unwrap_or_default();
    assert!(
        reason.contains("400") && reason.contains("messages: too long"),
        "{reason}"
    );
    assert_eq!(main.request_count(), 1);
    assert_eq!(backup.request_count(), 0);
}

/// A 429 with `Retry-After: 1` is retried on the same model after waiting
/// at least that long.
#[test]
fn a_rate_limit_is_retried_after_the_wait_it_asks_for() {
    let model = FakeModel::scripted(
        Wire::Anthropic,
        vec![
            status(429, Some(1), "slow down"),
            Reply::text("Here you go."),
        ],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let started = Instant::now();
    let outcome = h.ask(&h.session(), "hi");
    let elapsed = started.elapsed();
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.answer, "Here you go.");
    assert_eq!(model.request_count(), 2);
    assert!(
        elapsed >= Duration::from_secs(1),
        "retried after {elapsed:?}"
    );
}

/// A stream cut after some text is a transient failure: the shown text is
/// kept in the transcript marked as cut, the model is asked again and the
/// run finishes. Cut text superseded by a retry is not sent back; cut text
/// the user answered is (marked). Three cuts in a row fail the run, and the
/// session stays usable; every request passes the strict fake.
fn a_cut_stream(wire: Wire) {
    let model = FakeModel::scripted(
        wire,
        vec![
            Reply::Cut("The answer is forty-two, because".into()),
            Reply::text("Forty-two."),
            Reply::Cut("First cut answer".into()),
            Reply::Cut("Second cut answer".into()),
            Reply::Cut("Third cut answer".into()),
            Reply::text("Second try."),
        ],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let session = h.session();
    let mut shown = String::new();
    let mut cuts = Vec::new();
    let handle = h.submit(&session, "what is the answer?");
    let outcome = h.wait(handle, |e| match e {
        RunEvent::Text(t) => shown.push_str(t),
        RunEvent::StreamCut { reason } => cuts.push(reason.clone()),
        _ => {}
    });
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.answer, "Forty-two.");
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    assert!(cuts[0].contains("cut"), "{cuts:?}");
    assert!(shown.ends_with("Forty-two.") && shown.len() > "Forty-two.".len());
    assert_eq!(model.request_count(), 2);
    let stored = h.store().messages(&session).unwrap();
    let cut: Vec<_> = stored
        .iter()
        .filter(|m| m.kind == "assistant" && m.is_error)
        .collect();
    assert_eq!(cut.len(), 1, "{stored:?}");
    assert!(
        "The answer is forty-two, because".starts_with(cut[0].content.split('\n').next().unwrap())
            && cut[0].content.contains("[… cut: the stream was cut"),
        "{cut:?}"
    );
    // The retry did not carry the cut text.
    assert_eq!(
        items(&model.requests()[1].body)[1..],
        [Item::User("what is the answer?".into())]
    );

    let failed = h.ask(&session, "and again?");
    assert_eq!(failed.state, "failed", "{failed:?}");
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(reason.contains("the stream was cut"), "{reason}");
    assert!(
        !reason.contains("error decoding response body") || reason.contains("broke off"),
        "{reason}"
    );
    assert_eq!(model.request_count(), 5);

    let next = h.ask(&session, "try again");
    assert_eq!(next.state, "done", "{next:?}");
    assert_eq!(next.answer, "Second try.");
    let conversation = items(&model.requests()[5].body);
    assert_eq!(conversation.len(), 6, "{conversation:?}");
    assert_eq!(
        conversation[1..4],
        [
            Item::User("what is the answer?".into()),
            Item::Assistant("Forty-two.".into()),
            Item::User("and again?".into()),
        ]
    );
    // Only the last cut answer, the one the user answered, marked as cut.
    let Item::Assistant(last_cut) = &conversation[4] else {
        panic!("{conversation:?}")
    };
    assert!(
        last_cut.starts_with("Third") && last_cut.contains("[… cut:"),
        "{last_cut}"
    );
    assert_eq!(conversation[5], Item::User("try again".into()));
    assert!(model.refusals().is_empty(), "{:?}", model.refusals());
}

#[test]
fn a_cut_stream_over_openai_keeps_the_shown_text() {
    a_cut_stream(Wire::OpenAi);
}

#[test]
fn a_cut_stream_over_anthropic_keeps_the_shown_text() {
    a_cut_stream(Wire::Anthropic);
}

// ---------------------------------------------------------------------------
// Tool arguments.
// ---------------------------------------------------------------------------

/// Arguments that are not JSON, or do not match the tool's schema, go back
/// to the model as error results it can correct; the run goes on.
fn malformed_arguments(wire: Wire) {
    let model = FakeModel::scripted(
        wire,
        vec![
            Reply::Tools {
                text: String::new(),
                calls: vec![
                    ToolCallSpec::new("notes__add", "{\"text\": "),
                    ToolCallSpec::new("notes__add", "{\"text\": 5}"),
                ],
            },
            Reply::text("Sorry, let me stop."),
        ],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let outcome = h.ask(&h.session(), "add a note");
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.answer, "Sorry, let me stop.");
    assert!(outcome.tool_calls.iter().all(|c| c.is_error), "{outcome:?}");
    let reqs = model.requests();
    assert_eq!(reqs.len(), 2);
    let given = results(&reqs[1].body);
    assert_eq!(given.len(), 2, "{given:?}");
    assert!(given[0].contains("not valid JSON"), "{given:?}");
    assert!(given[1].contains("invalid arguments"), "{given:?}");
    assert_pairs(&reqs[1].body);
    assert_eq!(
        h.store().kv_get(&h.ws.root, "notes", "n").unwrap(),
        None,
        "a note was added"
    );
}

#[test]
fn malformed_arguments_over_openai_are_results_the_model_can_correct() {
    malformed_arguments(Wire::OpenAi);
}

#[test]
fn malformed_arguments_over_anthropic_are_results_the_model_can_correct() {
    malformed_arguments(Wire::Anthropic);
}

// ---------------------------------------------------------------------------
// Cancellation.
// ---------------------------------------------------------------------------

/// Cancelling while the model streams ends the run `cancelled` at once,
/// drops the stream (the server sees the client go away), and keeps the
/// text already shown in the transcript.
#[test]
fn cancelling_mid_stream_drops_the_stream_and_keeps_the_shown_text() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::Stall {
            text: "Let me think about that for a while.".into(),
            hold_ms: 60_000,
        }],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let session = h.session();
    let handle = h.submit(&session, "think");
    let run_id = handle.run_id.clone();
    let mut cancelled = false;
    let mut shown = String::new();
    let outcome = h.wait(handle, |e| {
        if let RunEvent::Text(t) = e {
            shown.push_str(t);
            if !cancelled {
                cancelled = h.agent.cancel(&run_id);
            }
        }
    });
    assert!(cancelled, "no text arrived to cancel on");
    assert_eq!(outcome.state, "cancelled", "{outcome:?}");
    // The server holds the stream for 60 s: an abandoned stream means the
    // run ended while it was still held, without waiting for it.
    let until = Instant::now() + Duration::from_secs(30);
    while model.abandoned_streams() == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(model.abandoned_streams(), 1, "the stream was not dropped");
    assert!(
        !h.agent.cancel(&outcome.id),
        "a finished run is not cancellable"
    );
    let kept: Vec<_> = h
        .store()
        .messages(&session)
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == "assistant")
        .map(|m| m.content)
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        kept[0].starts_with(&shown) && kept[0].ends_with("[… cut: the run was cancelled]"),
        "what was shown is not in the transcript, marked as cut: {kept:?}"
    );
}

/// A skill whose `spin` never returns on its own.
const SPINNER: &str = r#"
[skill]
name = "spinner"
version = "1.0.0"
description = "Spins"
entry = "main.luau"
[capabilities]
kv = true
[[tools]]
name = "spin"
description = "Loops forever"
[[tools]]
name = "ping"
description = "Answers pong"
"#;

const SPINNER_SRC: &str = r#"
local M = {}
function M.spin()
  keel.kv.set("spinning", true)
  while true do end
end
function M.ping() return "pong" end
return M
"#;

/// Cancelling while a tool loops forever stops the script (not its
/// ten-minute timeout): with one engine allowed for the skill, the next
/// run's call to the same skill gets the engine — within that run's
/// one-minute limit, so a script left running fails the test. The unfinished call gets an error
/// result, so the next run's requests pair every call with a result.
#[test]
fn cancelling_mid_tool_stops_the_script_and_the_session_goes_on() {
    let model = FakeModel::scripted(
        Wire::Anthropic,
        vec![
            Reply::tool("spinner__spin", json!({})),
            Reply::tool("spinner__ping", json!({})),
            Reply::text("It answered pong."),
        ],
    );
    let ws = Ws::new()
        .skill("spinner", SPINNER, &[("main.luau", SPINNER_SRC)])
        .policy(&format!(
            "[policy]\nallow = [\"kv\"]\n\n[limits]\nmax_operations = 1000000000000000\n\
             timeout_ms = 600000\n\n[limits.skills.spinner]\nmax_instances = 1\n\n\
             [agent]\nmax_run_seconds = 60\n\n{}",
            model_table("main", &model)
        ));
    let h = Harness::new(ws);
    let session = h.session();
    let handle = h.submit(&session, "spin");
    let run_id = handle.run_id.clone();
    let mut canceller = None;
    let outcome = h.wait(handle, |e| {
        if matches!(e, RunEvent::ToolStarted { .. }) {
            // Cancel once the loop is surely running.
            let (agent, store, run_id) =
                (h.agent.clone(), h.kernel.store().clone(), run_id.clone());
            let root = h.ws.root.clone();
            canceller = Some(std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(5);
                while store
                    .kv_get(&root, "spinner", "spinning")
                    .unwrap()
                    .is_none()
                    && Instant::now() < until
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                agent.cancel(&run_id)
            }));
        }
    });
    assert!(
        canceller.expect("no tool started").join().unwrap(),
        "not cancelled"
    );
    assert_eq!(outcome.state, "cancelled", "{outcome:?}");
    assert_eq!(outcome.tool_calls.len(), 1);

    let next = h.ask(&session, "ping it");
    assert_eq!(next.state, "done", "{next:?}");
    assert_eq!(
        next.tool_calls[0].result.as_deref(),
        Some("pong"),
        "{next:?}"
    );
    let reqs = model.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_pairs(&r.body);
    }
    // The run waited for the stopped script to report back: its error is
    // stored, and the next request carries it.
    let given = results(&reqs[1].body);
    assert!(given[0].contains("the run was cancelled"), "{given:?}");
    let spin = &outcome.tool_calls[0];
    assert!(
        spin.is_error
            && spin
                .result
                .as_deref()
                .is_some_and(|r| r.contains("cancelled")),
        "{spin:?}"
    );
}

// ---------------------------------------------------------------------------
// Lanes.
// ---------------------------------------------------------------------------

/// Two messages sent back to back in one session run one after the other:
/// the first run sees only its own message, the second sees the first's
/// answer before its own message.
#[test]
fn a_message_sent_while_a_run_works_is_answered_after_it() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::text("First answer."), Reply::text("Second answer.")],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let session = h.session();
    let first = h.submit(&session, "message one");
    let second = h.submit(&session, "message two");
    let first = h.wait(first, |_| {});
    let second = h.wait(second, |_| {});
    assert_eq!(
        (first.state.as_str(), second.state.as_str()),
        ("done", "done")
    );
    assert_eq!(first.answer, "First answer.");
    assert_eq!(second.answer, "Second answer.");
    let reqs = model.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        items(&reqs[0].body)[1..],
        [Item::User("message one".into())]
    );
    assert_eq!(
        items(&reqs[1].body)[1..],
        [
            Item::User("message one".into()),
            Item::Assistant("First answer.".into()),
            Item::User("message two".into()),
        ]
    );
}

/// Runs of different sessions overlap: both stream their first text while
/// the other's model call is still open.
#[test]
fn runs_of_different_sessions_run_at_once() {
    let model = FakeModel::with_handler(Wire::OpenAi, |_| Reply::Stall {
        text: "Thinking hard about it.".into(),
        hold_ms: 10_000,
    });
    let h = Harness::new(notes_ws(&model, ""));
    let (s1, s2) = (h.session(), h.session());
    let mut a = h.submit(&s1, "one");
    let mut b = h.submit(&s2, "two");
    let wait_for_both = async {
        let (mut a_text, mut b_text) = (false, false);
        while !(a_text && b_text) {
            let (from_a, e) = tokio::select! {
                Some(e) = a.events.recv() => (true, e),
                Some(e) = b.events.recv() => (false, e),
                else => break,
            };
            assert!(
                !matches!(e, RunEvent::Finished(_)),
                "a run finished first: {e:?}"
            );
            if matches!(e, RunEvent::Text(_)) {
                *(if from_a { &mut a_text } else { &mut b_text }) = true;
            }
        }
        a_text && b_text
    };
    let overlapped =
        h.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), wait_for_both).await });
    assert_eq!(
        overlapped,
        Ok(true),
        "the two sessions' runs did not overlap"
    );
    assert!(h.agent.cancel(&a.run_id) && h.agent.cancel(&b.run_id));
    assert_eq!(h.wait(a, |_| {}).state, "cancelled");
    assert_eq!(h.wait(b, |_| {}).state, "cancelled");
}

// ---------------------------------------------------------------------------
// Compaction.
// ---------------------------------------------------------------------------

/// A fake model for the compaction test: summarises when asked to, calls
/// `notes.add` when the user's turn says `ADD-NOTE`, answers otherwise.
fn compacting_model() -> FakeModel {
    let summaries = AtomicUsize::new(0);
    FakeModel::with_handler(Wire::OpenAi, move |body| {
        if is_summary_request(body) {
            let n = summaries.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::text(&format!("SUMMARY-{n}: the user added notes."));
        }
        match items(body).last() {
            Some(Item::User(t)) if t.contains("ADD-NOTE") => {
                Reply::tool("notes__add", json!({"text": "a note"}))
            }
            Some(Item::Result { .. }) => Reply::text("Noted."),
            _ => Reply::text("Fine."),
        }
    })
}

/// With a small context window, older turns are summarised: a summary
/// request is made, a `summary` row covering them is stored, later requests
/// carry the summary instead of the oldest text, the transcript keeps
/// everything, and no request separates a tool call from its result. The
/// last two turns are sent back to back, so the third is stored before the
/// second run writes its answer and summary; compaction in the third run
/// must still keep the third turn.
#[test]
fn old_turns_are_compacted_into_a_summary() {
    let model = compacting_model();
    let h = Harness::new(notes_ws(
        &model,
        "\n[agent]\ncontext_window = 400\nkeep_turns = 1\n",
    ));
    let session = h.session();
    let filler = "lorem ipsum dolor sit amet ".repeat(30);
    let third = format!("third {filler}");
    let mut compacted = 0;
    let mut count = |e: &RunEvent| {
        if let RunEvent::Compacted { .. } = e {
            compacted += 1;
        }
    };
    let first = h.submit(&session, &format!("OLDEST-MARKER ADD-NOTE {filler}"));
    let first = h.wait(first, &mut count);
    let second = h.submit(&session, &format!("second ADD-NOTE {filler}"));
    let last = h.submit(&session, &third);
    let second = h.wait(second, &mut count);
    let last = h.wait(last, &mut count);
    for outcome in [&first, &second, &last] {
        assert_eq!(outcome.state, "done", "{outcome:?}");
    }
    assert_eq!(compacted, 2, "one compaction in each later run");

    let reqs = model.requests();
    for r in &reqs {
        assert_pairs(&r.body);
    }
    let summary_requests: Vec<_> = reqs
        .iter()
        .filter(|r| is_summary_request(&r.body))
        .collect();
    assert_eq!(summary_requests.len(), 2);
    let refolded = summary_requests[1].body.to_string();
    assert!(
        refolded.contains("earlier summary: SUMMARY-1"),
        "{refolded}"
    );
    // The summary and the turn after it go as one user message (two user
    // messages in a row would break strict templates).
    let final_request = items(&reqs.last().unwrap().body);
    assert_eq!(final_request.len(), 2, "{final_request:?}");
    assert!(
        matches!(&final_request[1], Item::User(t)
            if t.starts_with(keel::agent::context::SUMMARY_PREFIX) && t.contains("SUMMARY-2")
                && t.ends_with(&format!("\n\n{third}"))),
        "{final_request:?}"
    );
    assert!(model.refusals().is_empty(), "{:?}", model.refusals());
    let after_first = reqs.iter().skip(2).filter(|r| !is_summary_request(&r.body));
    for r in after_first {
        let body = r.body.to_string();
        assert!(
            !body.contains("OLDEST-MARKER"),
            "the oldest turn is still sent: {body}"
        );
    }

    let stored = h.store().messages(&session).unwrap();
    let summaries: Vec<_> = stored.iter().filter(|m| m.kind == "summary").collect();
    assert_eq!(summaries.len(), 2);
    // Each summary covers up to the answer of the run before the one that
    // compacted.
    let last_answer = |run: &str| {
        stored
            .iter()
            .rfind(|m| m.run_id.as_deref() == Some(run) && m.kind == "assistant")
            .map(|m| m.id)
    };
    assert_eq!(summaries[0].covers_to, last_answer(&first.id));
    assert_eq!(summaries[1].covers_to, last_answer(&second.id));
    assert!(
        stored
            .iter()
            .any(|m| m.kind == "user" && m.content.contains("OLDEST-MARKER")),
        "the transcript lost the oldest turn"
    );
    let shown = keel::repl::chat::format_history(&stored);
    assert!(shown.contains("compacted"), "{shown}");
}

// ---------------------------------------------------------------------------
// Usage and recovery.
// ---------------------------------------------------------------------------

/// The run's token totals are the sum of what the provider reported for
/// each of its model calls. The fake reports `10 + body bytes / 4` input
/// tokens and one output token per text delta or argument fragment (see
/// `openai_events` / `anthropic_events` in tests/common/model.rs).
fn usage_is_summed(wire: Wire) {
    let model = FakeModel::scripted(
        wire,
        vec![Reply::tool("notes__list", json!({})), Reply::text("ok!")],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let mut deltas = 0;
    let handle = h.submit(&h.session(), "list my notes");
    let outcome = h.wait(handle, |e| {
        if let RunEvent::Text(_) = e {
            deltas += 1;
        }
    });
    assert_eq!(outcome.state, "done", "{outcome:?}");
    // "ok!" streams one character a delta.
    assert_eq!(deltas, 3);
    let input: u64 = model
        .requests()
        .iter()
        .map(|r| 10 + r.body.to_string().len() as u64 / 4)
        .sum();
    // `{}` goes in two fragments; Anthropic opens with an empty one.
    let call_fragments = match wire {
        Wire::OpenAi => 2,
        Wire::Anthropic => 3,
    };
    let run = h.store().run(&outcome.id).unwrap().unwrap();
    assert_eq!(
        (run.input_tokens, run.output_tokens),
        (input, call_fragments + deltas)
    );
    assert_eq!(outcome.usage.input_tokens, input);
}

#[test]
fn token_usage_over_openai_is_the_sum_of_the_calls() {
    usage_is_summed(Wire::OpenAi);
}

#[test]
fn token_usage_over_anthropic_is_the_sum_of_the_calls() {
    usage_is_summed(Wire::Anthropic);
}

/// A server that reports no usage (some local servers don't) leaves the
/// run's tokens unknown, not 0: the call is counted as unreported, and the
/// calls that did report are still summed.
fn usage_nobody_reported(wire: Wire) {
    let model = FakeModel::scripted(
        wire,
        vec![
            Reply::tool("notes__list", json!({})),
            Reply::NoUsage("ok".into()),
        ],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let outcome = h.ask(&h.session(), "list my notes");
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.unreported_calls, 1, "{outcome:?}");
    let first = 10 + model.requests()[0].body.to_string().len() as u64 / 4;
    assert_eq!(outcome.usage.input_tokens, first, "{outcome:?}");
    let run = h.store().run(&outcome.id).unwrap().unwrap();
    assert_eq!(run.unreported_calls, 1);
}

#[test]
fn usage_nobody_reported_over_openai_is_unknown_not_zero() {
    usage_nobody_reported(Wire::OpenAi);
}

#[test]
fn usage_nobody_reported_over_anthropic_is_unknown_not_zero() {
    usage_nobody_reported(Wire::Anthropic);
}

/// Starting the agent fails runs whose owner process is dead as
/// interrupted, and leaves a live owner's run alone.
#[test]
fn starting_fails_runs_of_dead_owners_only() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = notes_ws(&model, "");
    let rt = runtime();
    let kernel = ws.kernel(&rt);
    let store = kernel.store();
    let session = store.create_session("t").unwrap();
    let running = |owner: &str| {
        let run = store
            .accept_message(&session.id, Some(owner), Some("hi"))
            .unwrap()
            .unwrap();
        store
            .transition_run(&run.id, RunState::Running, None)
            .unwrap()
            .unwrap();
        run.id
    };
    let dead = running("123-abc");
    let live_owner = Owner::acquire(Some(&ws.data_dir())).unwrap();
    let live = running(live_owner.id());
    let _agent = Agent::new(kernel.clone()).expect("agent");
    let dead = store.run(&dead).unwrap().unwrap();
    assert_eq!(
        (dead.state.as_str(), dead.reason.as_deref()),
        ("failed", Some(INTERRUPTED))
    );
    assert_eq!(store.run(&live).unwrap().unwrap().state, "running");
    assert_eq!(model.request_count(), 0);
}

// ---------------------------------------------------------------------------
// Against a real model server's failures (issue 9): every request below
// goes to the STRICT fake, which refuses what llama-server's templates
// refuse, so each test also checks the context keel sends is well formed.
// ---------------------------------------------------------------------------

fn no_refusals(model: &FakeModel) {
    assert!(
        model.refusals().is_empty(),
        "the strict server refused a request: {:?}",
        model.refusals()
    );
}

/// A run that fails leaves the user's message without a reply; the next
/// request must still alternate roles (llama-server: 400 "Conversation
/// roles must alternate"), or one failure breaks the session for good.
fn a_failed_run_does_not_break_the_session(wire: Wire) {
    let model = FakeModel::scripted(
        wire,
        vec![
            Reply::Status {
                code: 400,
                retry_after: None,
                message: "bad request".into(),
            },
            Reply::text("Here now."),
        ],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let session = h.session();
    let failed = h.ask(&session, "first");
    assert_eq!(failed.state, "failed", "{failed:?}");
    let next = h.ask(&session, "second");
    assert_eq!(next.state, "done", "{next:?}");
    assert_eq!(next.answer, "Here now.");
    let conversation = items(&model.requests()[1].body);
    assert_eq!(
        conversation[1..],
        [
            Item::User("first".into()),
            Item::Assistant(keel::agent::context::NO_REPLY.into()),
            Item::User("second".into()),
        ]
    );
    no_refusals(&model);
}

#[test]
fn a_failed_run_does_not_break_the_session_over_openai() {
    a_failed_run_does_not_break_the_session(Wire::OpenAi);
}

#[test]
fn a_failed_run_does_not_break_the_session_over_anthropic() {
    a_failed_run_does_not_break_the_session(Wire::Anthropic);
}

/// A turn cut by the output limit in the middle of a tool call: the call
/// is not run, its partial arguments are never sent back (llama-server
/// answers such a request with a 500), and the model is told, through the
/// call's result, that it was cut; the run goes on.
fn a_call_cut_by_the_output_limit(wire: Wire) {
    let model = FakeModel::scripted(
        wire,
        vec![
            Reply::LengthInTool {
                text: "Adding it.".into(),
                name: "notes__add".into(),
                sent: r#"{"text": "buy mi"#.into(),
            },
            Reply::tool("notes__add", json!({"text": "buy milk"})),
            Reply::text("Done."),
        ],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let session = h.session();
    let outcome = h.ask(&session, "note: buy milk");
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.answer, "Done.");
    // The cut call is recorded with an error result; only the whole one ran.
    assert_eq!(outcome.tool_calls.len(), 2, "{outcome:?}");
    assert!(outcome.tool_calls[0].is_error);
    let told = outcome.tool_calls[0].result.clone().unwrap_or_default();
    assert!(told.contains("cut by the output limit"), "{told}");
    assert_eq!(outcome.tool_calls[1].result.as_deref(), Some("{\"id\":1}"));
    let listed = h.kernel.call_tool("notes.list", json!({}));
    let listed = h.rt.block_on(listed).unwrap();
    assert_eq!(listed, json!(["buy milk"]), "the cut call must not run");
    // What went back: no partial arguments anywhere, the cut explained.
    let second = model.requests()[1].body.to_string();
    assert!(!second.contains("buy mi\""), "{second}");
    assert!(!second.contains("buy mi\\\""), "{second}");
    assert!(second.contains("cut by the output limit"), "{second}");
    no_refusals(&model);
}

#[test]
fn a_call_cut_by_the_output_limit_is_never_run_over_openai() {
    a_call_cut_by_the_output_limit(Wire::OpenAi);
}

#[test]
fn a_call_cut_by_the_output_limit_is_never_run_over_anthropic() {
    a_call_cut_by_the_output_limit(Wire::Anthropic);
}

/// llama-server's 500 for a request it cannot parse is the request's
/// fault: reported at once, not retried.
#[test]
fn llama_server_s_500_for_a_bad_request_is_not_retried() {
    let body = r#"{"error":{"code":500,"message":"[json.exception.parse_error.101] parse error at line 1, column 2: syntax error while parsing object key - unexpected end of input; expected string literal","type":"server_error"}}"#;
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::Raw {
                code: 500,
                body: body.into(),
            },
            Reply::text("must not be used"),
        ],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let outcome = h.ask(&h.session(), "hi");
    assert_eq!(outcome.state, "failed", "{outcome:?}");
    let reason = outcome.reason.unwrap_or_default();
    assert!(
        reason.contains("HTTP 500") && reason.contains("parse error"),
        "{reason}"
    );
    assert_eq!(
        model.request_count(),
        1,
        "retried a request the server refused"
    );
}

/// The provider says the request is over the context: keel compacts and
/// tries once more; a second overflow fails the run with the provider's
/// words.
fn overflow_compacts_and_retries(wire: Wire) {
    let model = FakeModel::scripted(
        wire,
        vec![
            Reply::text("a1"),
            Reply::text("a2"),
            Reply::ContextOverflow,
            Reply::text("SUMMARY of the first turn"),
            Reply::text("a3"),
            Reply::ContextOverflow,
            Reply::text("SUMMARY again"),
            Reply::ContextOverflow,
        ],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let session = h.session();
    for q in ["q1", "q2"] {
        assert_eq!(h.ask(&session, q).state, "done");
    }
    let mut compacted = 0;
    let third = h.submit(&session, "q3");
    let third = h.wait(third, |e| {
        if let RunEvent::Compacted { .. } = e {
            compacted += 1;
        }
    });
    assert_eq!(third.state, "done", "{third:?}");
    assert_eq!(third.answer, "a3");
    assert_eq!(compacted, 1);
    let reqs = model.requests();
    assert!(is_summary_request(&reqs[3].body));
    assert!(
        reqs[4]
            .body
            .to_string()
            .contains("SUMMARY of the first turn")
    );
    assert!(!reqs[4].body.to_string().contains("q1"));
    let fourth = h.ask(&session, "q4");
    assert_eq!(fourth.state, "failed", "{fourth:?}");
    let reason = fourth.reason.unwrap_or_default();
    assert!(
        reason.contains("exceeds the available context size")
            || reason.contains("prompt is too long"),
        "{reason}"
    );
    assert_eq!(
        model.request_count(),
        8,
        "one compaction and one retry, no more"
    );
    no_refusals(&model);
}

#[test]
fn a_context_overflow_compacts_and_retries_once_over_openai() {
    overflow_compacts_and_retries(Wire::OpenAi);
}

#[test]
fn a_context_overflow_compacts_and_retries_once_over_anthropic() {
    overflow_compacts_and_retries(Wire::Anthropic);
}

/// A server that goes silent (only keep-alive comments) fails after the
/// idle timeout, not after the whole-request timeout, and the run goes on
/// with a new request.
#[test]
fn a_silent_stream_times_out_and_the_run_goes_on() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::KeepAliveOnly("Thinking".into()),
            Reply::text("Hello."),
        ],
    );
    let h = Harness::new(notes_ws(&model, "\n[agent]\nmodel_idle_seconds = 1\n"));
    let mut cuts = Vec::new();
    let handle = h.submit(&h.session(), "hi");
    let outcome = h.wait(handle, |e| {
        if let RunEvent::StreamCut { reason } = e {
            cuts.push(reason.clone());
        }
    });
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.answer, "Hello.");
    assert_eq!(cuts.len(), 1);
    assert!(cuts[0].contains("no answer for 1 s"), "{cuts:?}");
    no_refusals(&model);
}

/// A 200 that is an HTML page says what came back.
#[test]
fn an_html_page_instead_of_a_stream_says_what_came_back() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![Reply::Html]);
    let h = Harness::new(notes_ws(&model, ""));
    let outcome = h.ask(&h.session(), "hi");
    assert_eq!(outcome.state, "failed", "{outcome:?}");
    let reason = outcome.reason.unwrap_or_default();
    assert!(reason.contains("\"text/html; charset=utf-8\""), "{reason}");
    assert!(reason.contains("<!DOCTYPE html>\\n<html>"), "{reason}");
    assert_eq!(model.request_count(), 1);
}

/// A 50 MB answer is cut at the bound: the run fails saying so, the
/// transcript holds at most the bound, and the next request does not carry
/// 50 MB.
#[test]
fn a_huge_answer_is_cut_at_the_bound() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::Huge { bytes: 50 << 20 }, Reply::text("Short.")],
    );
    let h = Harness::new(notes_ws(&model, "\n[agent]\nmax_answer_bytes = 65536\n"));
    let session = h.session();
    let outcome = h.ask(&session, "say a lot");
    assert_eq!(outcome.state, "failed", "{outcome:?}");
    let reason = outcome.reason.clone().unwrap_or_default();
    assert!(reason.contains("cut at 65536 bytes"), "{reason}");
    assert!(
        outcome.answer.len() < 65536 + 200,
        "{}",
        outcome.answer.len()
    );
    assert!(
        outcome
            .answer
            .ends_with("agent.max_answer_bytes in keel.toml]")
    );
    let until = Instant::now() + Duration::from_secs(10);
    while model.abandoned_streams() == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        model.abandoned_streams(),
        1,
        "keel kept reading past the bound"
    );
    let next = h.ask(&session, "shorter");
    assert_eq!(next.state, "done", "{next:?}");
    let sent = model.requests()[1].body.to_string().len();
    assert!(sent < 200_000, "the next request carried {sent} bytes");
    no_refusals(&model);
}

/// One SSE line over the bound is an error that says so, not dropped.
#[test]
fn a_huge_single_line_is_an_error() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::HugeLine { bytes: 1 << 20 },
            Reply::HugeLine { bytes: 1 << 20 },
        ],
    );
    let h = Harness::new(notes_ws(&model, "\n[agent]\nmax_answer_bytes = 65536\n"));
    let outcome = h.ask(&h.session(), "hi");
    assert_eq!(outcome.state, "failed", "{outcome:?}");
    let reason = outcome.reason.unwrap_or_default();
    assert!(reason.contains("a single stream line is over"), "{reason}");
}

/// A model whose server counts fewer tokens than keel estimates: once its
/// usage is known, the guard uses it and does not compact a conversation
/// that fits (with the raw estimate, the second run would compact).
#[test]
fn token_estimates_calibrate_from_reported_usage() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::Counted {
                text: "ok".into(),
                input_tokens: 300,
            },
            Reply::Counted {
                text: "ok again".into(),
                input_tokens: 320,
            },
        ],
    );
    let h = Harness::new(notes_ws(
        &model,
        "\n[agent]\ncontext_window = 1200\ncompact_at = 0.8\nkeep_turns = 1\n",
    ));
    let session = h.session();
    // About 1,000 estimated tokens: over the 960-token budget raw.
    let long = "word ".repeat(800);
    assert_eq!(h.ask(&session, &long).state, "done");
    let mut compacted = 0;
    let second = h.submit(&session, "short");
    let second = h.wait(second, |e| {
        if let RunEvent::Compacted { .. } | RunEvent::CompactionFailed { .. } = e {
            compacted += 1;
        }
    });
    assert_eq!(second.state, "done", "{second:?}");
    assert_eq!(
        compacted, 0,
        "compacted although the model's own count fits"
    );
    assert_eq!(model.request_count(), 2, "a summary request was made");
}

/// N identical parallel calls raise one approval request, and its one
/// answer serves them all; a call asking about another target is asked
/// separately. The calls race each other to the gate.
#[test]
fn identical_parallel_approvals_are_asked_once() {
    let same = json!({"name": "a.txt", "text": "hello"});
    let other = json!({"name": "b.txt", "text": "hello"});
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tools(&[
                ("writer__save", same.clone()),
                ("writer__save", same.clone()),
                ("writer__save", other),
                ("writer__save", same.clone()),
                ("writer__save", same),
            ]),
            Reply::text("Saved."),
        ],
    );
    let h = Harness::new(writer_ws(&model, ASK_WRITES));
    let (outcome, asked, answered) = answered_run(&h, &h.session(), vec![ApprovalAnswer::Yes]);
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(asked.len(), 2, "{asked:?}");
    let mut targets: Vec<&str> = asked.iter().map(|a| a.target.as_str()).collect();
    targets.sort();
    assert!(
        targets[0].ends_with("a.txt") && targets[1].ends_with("b.txt"),
        "{targets:?}"
    );
    assert!(answered.iter().all(Result::is_ok), "{answered:?}");
    assert_eq!(h.store().approvals(false).unwrap().len(), 2);
    assert_eq!(outcome.tool_calls.len(), 5);
    assert!(
        outcome.tool_calls.iter().all(|c| !c.is_error),
        "{:?}",
        outcome.tool_calls
    );
    assert_eq!(
        std::fs::read_to_string(h.ws.path("out/b.txt")).unwrap(),
        "hello"
    );
}

/// A compaction that fails (its model call refused or timed out) loses
/// nothing: the console is told, and the run goes on with the whole
/// conversation.
#[test]
fn a_failed_compaction_does_not_lose_the_message() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::text("a1"),
            Reply::Status {
                code: 504,
                retry_after: None,
                message: "timed out".into(),
            },
            Reply::Status {
                code: 504,
                retry_after: None,
                message: "timed out".into(),
            },
            Reply::text("a2"),
        ],
    );
    let h = Harness::new(notes_ws(
        &model,
        "\n[agent]\ncontext_window = 400\nkeep_turns = 1\n",
    ));
    let session = h.session();
    let filler = "lorem ipsum dolor sit amet ".repeat(30);
    assert_eq!(h.ask(&session, &format!("FIRST {filler}")).state, "done");
    let mut failures = Vec::new();
    let second = h.submit(&session, &format!("SECOND {filler}"));
    let second = h.wait(second, |e| {
        if let RunEvent::CompactionFailed { reason } = e {
            failures.push(reason.clone());
        }
    });
    assert_eq!(second.state, "done", "{second:?}");
    assert_eq!(second.answer, "a2");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("timed out"), "{failures:?}");
    let reqs = model.requests();
    assert!(is_summary_request(&reqs[1].body) && is_summary_request(&reqs[2].body));
    let last = reqs[3].body.to_string();
    assert!(last.contains("FIRST") && last.contains("SECOND"), "{last}");
    no_refusals(&model);
}

/// Found against a real llama-server (4,096-token context): a message too
/// large for the context fails its run, and was then kept verbatim as one
/// of the last turns, so every later request overflowed too. Now: the
/// overflow compacts the older turns, the retry still overflows, and with
/// nothing older left the message itself is flagged; it stays in the
/// transcript, later requests carry a stand-in, and the next turn needs no
/// compaction at all.
fn a_turn_too_large_for_the_context(wire: Wire) {
    let model = FakeModel::scripted(
        wire,
        vec![
            Reply::text("a1"),
            Reply::ContextOverflow,
            Reply::text("SUMMARY-1"),
            Reply::ContextOverflow,
            Reply::text("a3"),
        ],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let session = h.session();
    assert_eq!(h.ask(&session, "q1").state, "done");
    let huge = format!("HUGE {}", "word ".repeat(20_000));
    let failed = h.ask(&session, &huge);
    assert_eq!(failed.state, "failed", "{failed:?}");
    let reason = failed.reason.unwrap_or_default();
    assert!(
        (reason.contains("exceeds the available context size")
            || reason.contains("prompt is too long"))
            && reason.contains("left out"),
        "{reason}"
    );
    let third = h.ask(&session, "q3");
    assert_eq!(third.state, "done", "{third:?}");
    assert_eq!(third.answer, "a3");
    let reqs = model.requests();
    assert_eq!(reqs.len(), 5);
    let summary = reqs[2].body.to_string();
    assert!(is_summary_request(&reqs[2].body));
    assert!(
        summary.len() < 20_000,
        "the summary request quoted the whole turn: {} bytes",
        summary.len()
    );
    let last = reqs[4].body.to_string();
    assert!(
        !last.contains("HUGE")
            && last.contains("SUMMARY-1")
            && last.contains(&keel::agent::context::left_out(huge.chars().count())),
        "{}",
        &last[..last.len().min(2000)]
    );
    // The transcript keeps the message whole.
    let stored = h.store().messages(&session).unwrap();
    assert!(
        stored.iter().any(|m| m.content == huge),
        "the message was lost"
    );
    no_refusals(&model);
}

#[test]
fn a_turn_too_large_for_the_context_does_not_break_the_session_over_openai() {
    a_turn_too_large_for_the_context(Wire::OpenAi);
}

#[test]
fn a_turn_too_large_for_the_context_does_not_break_the_session_over_anthropic() {
    a_turn_too_large_for_the_context(Wire::Anthropic);
}

/// The first message of a session is alone too large: nothing to compact,
/// so it is left out at once, and the next turn is answered.
#[test]
fn a_first_message_too_large_is_left_out_at_once() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![Reply::ContextOverflow, Reply::text("hello")],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let session = h.session();
    let failed = h.ask(&session, "TOO-BIG");
    assert_eq!(failed.state, "failed", "{failed:?}");
    assert!(failed.reason.unwrap_or_default().contains("left out"));
    let next = h.ask(&session, "hi");
    assert_eq!(next.state, "done", "{next:?}");
    assert_eq!(model.request_count(), 2, "no compaction was tried");
    let body = model.requests()[1].body.to_string();
    assert!(
        !body.contains("TOO-BIG") && body.contains("left out"),
        "{body}"
    );
    no_refusals(&model);
}

/// A summary cut by the output limit still stands for the turns it covers
/// (marked as cut): a small server's context filling up mid-summary must
/// not fail the run.
#[test]
fn a_summary_cut_by_the_output_limit_is_kept_marked() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::text("a1"),
            Reply::ContextOverflow,
            Reply::Length("PARTIAL-SUMMARY".into()),
            Reply::text("a2"),
        ],
    );
    let h = Harness::new(notes_ws(&model, ""));
    let session = h.session();
    assert_eq!(h.ask(&session, "q1").state, "done");
    let second = h.ask(&session, "q2");
    assert_eq!(second.state, "done", "{second:?}");
    let last = model.requests()[3].body.to_string();
    assert!(
        last.contains("PARTIAL-SUMMARY") && last.contains("summary cut short"),
        "{last}"
    );
    no_refusals(&model);
}
