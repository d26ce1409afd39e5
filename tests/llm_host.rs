//! `keel.llm.complete`: a skill asking the configured model, through the
//! fallback chain, with its usage recorded — inside an agent run and from
//! `keel call`.

mod common;

use common::model::{FakeModel, Reply, Wire};
use common::{Ws, runtime};
use keel::agent::Agent;
use serde_json::json;

const ASKER: &str = r#"
[skill]
name = "asker"
version = "1.0.0"
description = "asks the model"
entry = "main.luau"
[capabilities]
llm = true
[[tools]]
name = "ask"
description = "asks the model a question"
parameters = { type = "object", properties = { q = { type = "string" } }, required = ["q"] }
"#;

const ASKER_SRC: &str = r#"
local M = {}
function M.ask(a)
  local r = keel.llm.complete(a.q, { system = "Answer in one word.", max_tokens = 50 })
  return r.model .. ": " .. r.text
end
return M
"#;

const RHAI_ASKER: &str = r#"
[skill]
name = "rasker"
version = "1.0.0"
description = "asks the model, in Rhai"
entry = "main.rhai"
[capabilities]
llm = true
[[tools]]
name = "ask"
description = "asks"
"#;

const RHAI_SRC: &str = r#"
fn ask(args) {
    let r = keel::llm::complete([#{ role: "user", content: "one" }, #{ role: "assistant", content: "two" }, #{ role: "user", content: "three?" }]);
    r.text
}
"#;

fn ws(model: &FakeModel, allow: bool) -> Ws {
    Ws::new()
        .skill("asker", ASKER, &[("main.luau", ASKER_SRC)])
        .skill("rasker", RHAI_ASKER, &[("main.rhai", RHAI_SRC)])
        .policy(&format!(
            "[policy]\n{}\n\n[models.main]\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"fake\"\n",
            if allow { "allow = [\"llm\"]" } else { "" },
            model.base_url()
        ))
}

/// Inside a run: the tool's question goes through the chain, its usage is
/// recorded for the skill and counted in the run's totals.
#[test]
fn a_skill_asks_the_model_during_a_run() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("asker__ask", json!({"q": "colour of the sky?"})),
            Reply::text("Blue"),
            Reply::text("The sky is blue."),
        ],
    );
    let ws = ws(&model, true);
    let rt = runtime();
    let kernel = ws.kernel(&rt);
    let agent = Agent::new(kernel.clone()).unwrap();
    let session = agent.new_session("t").unwrap();
    let _g = rt.enter();
    let outcome = rt.block_on(agent.submit(&session.id, "what colour?").unwrap().wait());
    assert_eq!(outcome.state, "done", "{outcome:?}");
    assert_eq!(outcome.tool_calls[0].result.as_deref(), Some("main: Blue"));
    let reqs = model.requests();
    let inner = &reqs[1].body;
    assert_eq!(inner["messages"][0]["role"], "system");
    assert_eq!(inner["messages"][0]["content"], "Answer in one word.");
    assert_eq!(inner["messages"][1]["content"], "colour of the sky?");
    assert_eq!(inner["max_tokens"], 50);
    assert!(
        inner.get("tools").is_none(),
        "a skill's question offers no tools"
    );
    let usage = kernel.store().skill_usage("asker").unwrap();
    assert_eq!(usage.calls, 1);
    assert!(usage.input_tokens > 0);
    assert_eq!(
        outcome.usage.input_tokens,
        reqs.iter()
            .map(|r| 10 + r.body.to_string().len() as u64 / 4)
            .sum::<u64>(),
        "all three calls, the skill's included, counted in the run as the fake reported them"
    );
}

/// From `keel call`, in Rhai, with a conversation as the prompt.
#[test]
fn keel_call_reaches_the_model_from_rhai() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![Reply::text("four")]);
    let ws = ws(&model, true);
    let out = ws.call("rasker.ask", json!({})).ok();
    assert_eq!(out, json!("four"));
    let body = &model.requests()[0].body;
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
}

/// The capability is gated like any other, and a missing model says how to
/// configure one.
#[test]
fn llm_needs_the_capability_and_a_model() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let denied = ws(&model, false);
    let toml = std::fs::read_to_string(denied.path("keel.toml")).unwrap();
    denied.write(
        "keel.toml",
        &toml.replace("[policy]\n", "[policy]\ndefault = \"deny\"\n"),
    );
    denied
        .call("asker.ask", json!({"q": "hi"}))
        .err_contains(&["`llm`", "denied"]);
    assert_eq!(
        model.request_count(),
        0,
        "a denied call never reaches the model"
    );

    let none = Ws::new()
        .skill("asker", ASKER, &[("main.luau", ASKER_SRC)])
        .policy("[policy]\nallow = [\"llm\"]\n");
    let out = none
        .keel()
        .args(["call", "asker.ask", r#"{"q":"hi"}"#])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no model is configured") && err.contains("OPENAI_BASE_URL"),
        "{err}"
    );
}

/// Bad arguments are the script's error, caught before any request.
#[test]
fn bad_arguments_are_reported_without_a_request() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = ws(&model, true).skill(
        "bad",
        &ASKER.replace("asker", "bad"),
        &[(
            "main.luau",
            r#"local M = {}
function M.ask(a)
  local ok, e = pcall(keel.llm.complete, {{ role = "system", content = "x" }})
  local ok2, e2 = pcall(keel.llm.complete, "q", { max_tokens = 0 })
  return tostring(e) .. " | " .. tostring(e2)
end
return M"#,
        )],
    );
    let out = ws.call("bad.ask", json!({"q": "x"})).ok();
    let text = out.as_str().unwrap();
    assert!(
        text.contains("role must be \"user\" or \"assistant\""),
        "{text}"
    );
    assert!(text.contains("max_tokens must be a whole number"), "{text}");
    assert_eq!(model.request_count(), 0);
}
