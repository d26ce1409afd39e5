//! `keel approvals` and `/approvals`: approval requests waiting for an
//! answer (`--all`: answered ones too), oldest first.

use super::{CommandError, Ctx, Render, Text};
use crate::store::ApprovalRecord;

/// The approval requests.
pub struct Approvals(pub Vec<ApprovalRecord>);

pub fn run(ctx: Ctx<'_>, all: bool) -> Result<Approvals, CommandError> {
    super::settle_dead_runs(ctx.kernel);
    Ok(Approvals(ctx.kernel.store().approvals(!all)?))
}

impl Render for Approvals {
    fn text(&self) -> Text {
        if self.0.is_empty() {
            return "no approval requests waiting\n".into();
        }
        let esc = crate::text::escape_control;
        let mut s = Text::new();
        for a in &self.0 {
            s.push(format!("{}  ", esc(&a.id)));
            s.status_padded(super::state_tone(a.state.name()), a.state.name(), 8);
            s.push(format!(
                "  {} wants `{}`{} (tool {}, run {}){}; {}\n",
                esc(&a.skill),
                esc(&a.capability),
                if a.target.is_empty() {
                    String::new()
                } else {
                    format!(" on `{}`", esc(&a.target))
                },
                esc(&a.tool),
                esc(&a.run_id),
                a.answer
                    .map(|x| format!(": {}", x.name()))
                    .unwrap_or_default(),
                crate::repl::chat::always_grants(a)
            ));
        }
        s
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&self.0)
    }
}
