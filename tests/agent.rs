//! The agent against fake model servers that speak the real OpenAI Chat
//! Completions and Anthropic Messages streaming formats over real HTTP.

mod common;

use common::model::{FakeModel, Reply, Wire};
use common::{Ws, runtime};
use keel::agent::{Agent, RunEvent};
use serde_json::json;

const NOTES: &str = r#"
[skill]
name = "notes"
version = "1.0.0"
description = "Keeps notes"
entry = "main.luau"
[capabilities]
kv = true
[[tools]]
name = "add"
description = "Add a note"
parameters = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
[[tools]]
name = "list"
description = "List notes"
"#;

const NOTES_SRC: &str = r#"
local M = {}
function M.add(args)
  local n = (keel.kv.get("n") or 0) + 1
  keel.kv.set("n", n)
  keel.kv.set("note" .. n, args.text)
  return { id = n }
end
function M.list()
  local out = {}
  for i = 1, (keel.kv.get("n") or 0) do out[i] = keel.kv.get("note" .. i) end
  return out
end
return M
"#;

fn models_toml(model: &FakeModel, extra: &str) -> String {
    let provider = match model.wire() {
        Wire::OpenAi => "openai",
        Wire::Anthropic => "anthropic",
    };
    format!(
        "[models.main]\nprovider = \"{provider}\"\nbase_url = \"{}\"\nmodel = \"fake\"\n{extra}\n",
        model.base_url()
    )
}

/// A workspace with the notes skill, `kv` allowed, and `model` as the
/// only model; `extra_toml` is appended to keel.toml.
fn notes_ws(model: &FakeModel, extra_toml: &str) -> Ws {
    Ws::new()
        .skill("notes", NOTES, &[("main.luau", NOTES_SRC)])
        .file(
            "skills/notes/SKILL.md",
            "---\nname: notes\ndescription: Keeps notes.\n---\nAdd notes with notes.add.\n",
        )
        .policy(&format!(
            "[policy]\nallow = [\"kv\"]\n\n{}\n{extra_toml}",
            models_toml(model, "")
        ))
}

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
    assert!(
        body.contains("Add notes with notes.add."),
        "SKILL.md in the prompt"
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
