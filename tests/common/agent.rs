//! Fixtures shared by the agent tests: a skill with two tools and a
//! workspace whose only model is a fake one.

use super::Ws;
use super::model::{FakeModel, Wire};

pub const NOTES: &str = r#"
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

pub const NOTES_SRC: &str = r#"
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

/// `[models.NAME]` for a fake model.
pub fn model_table(name: &str, model: &FakeModel) -> String {
    let provider = match model.wire() {
        Wire::OpenAi => "openai",
        Wire::Anthropic => "anthropic",
    };
    format!(
        "[models.{name}]\nprovider = \"{provider}\"\nbase_url = \"{}\"\nmodel = \"fake-{name}\"\n",
        model.base_url()
    )
}

/// A workspace with the notes skill, `kv` allowed, and `model` as the
/// only model; `extra_toml` is appended to keel.toml.
pub fn notes_ws(model: &FakeModel, extra_toml: &str) -> Ws {
    Ws::new()
        .skill("notes", NOTES, &[("main.luau", NOTES_SRC)])
        .file(
            "skills/notes/SKILL.md",
            "---\nname: notes\ndescription: Keeps notes.\n---\nAdd notes with notes.add.\n",
        )
        .policy(&format!(
            "[policy]\nallow = [\"kv\"]\n\n{}\n{extra_toml}",
            model_table("main", model)
        ))
}

/// Waits for the run's first approval request (other events are skipped);
/// fails if the run ends without one or none comes within `guard`.
pub fn next_approval(
    rt: &tokio::runtime::Runtime,
    handle: &mut keel::agent::RunHandle,
    guard: std::time::Duration,
) -> keel::store::ApprovalRecord {
    rt.block_on(async {
        tokio::time::timeout(guard, async {
            loop {
                match handle.events.recv().await {
                    Some(keel::agent::RunEvent::Approval(a)) => return a,
                    Some(_) => {}
                    None => panic!("the run ended without asking"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no approval request within {guard:?}"))
    })
}

/// A kernel and an agent over a workspace, with the runtime they run on.
/// Fields drop in order: the agent and kernel before their runtime, the
/// workspace (the temp dir) last.
pub struct Harness {
    pub agent: keel::agent::Agent,
    pub kernel: keel::Kernel,
    pub rt: tokio::runtime::Runtime,
    pub ws: Ws,
    /// The longest any run may take before the test fails.
    pub wait: std::time::Duration,
}

impl Harness {
    /// Runs must end within 10 seconds (fake models answer at once).
    pub fn new(ws: Ws) -> Self {
        Self::with_wait(ws, std::time::Duration::from_secs(10))
    }

    pub fn with_wait(ws: Ws, wait: std::time::Duration) -> Self {
        let rt = super::runtime();
        let kernel = ws.kernel(&rt);
        let agent = keel::agent::Agent::new(kernel.clone()).expect("agent");
        Self {
            agent,
            kernel,
            rt,
            ws,
            wait,
        }
    }

    pub fn store(&self) -> &keel::store::Store {
        self.kernel.store()
    }

    pub fn session(&self) -> String {
        self.agent.new_session("t").unwrap().id
    }

    pub fn submit(&self, session: &str, text: &str) -> keel::agent::RunHandle {
        let _g = self.rt.enter();
        self.agent.submit(session, text).unwrap()
    }

    /// Waits (at most `self.wait`) for a run's end, passing every event on.
    pub fn wait(
        &self,
        handle: keel::agent::RunHandle,
        on_event: impl FnMut(&keel::agent::RunEvent),
    ) -> keel::agent::RunOutcome {
        self.rt
            .block_on(async { tokio::time::timeout(self.wait, handle.wait_with(on_event)).await })
            .expect("the run did not finish in time")
    }

    pub fn ask(&self, session: &str, text: &str) -> keel::agent::RunOutcome {
        self.wait(self.submit(session, text), |_| {})
    }
}
