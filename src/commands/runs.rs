//! `keel runs SESSION` and `/runs` (the console's current session): a
//! session's runs with their state, tokens, what the model was offered.

use super::{CommandError, Ctx, Render, Text};
use crate::store::RunRecord;

/// A session's runs, oldest first.
pub struct Runs(pub Vec<RunRecord>);

pub fn run(ctx: Ctx<'_>, session: &str) -> Result<Runs, CommandError> {
    let store = ctx.kernel.store();
    if store.session(session)?.is_none() {
        return Err(CommandError::NoSuchSession(
            crate::text::escape_control(session).into_owned(),
        ));
    }
    super::settle_dead_runs(ctx.kernel);
    Ok(Runs(store.runs(session)?))
}

impl Render for Runs {
    fn text(&self) -> Text {
        if self.0.is_empty() {
            return "no runs yet\n".into();
        }
        let mut s = Text::new();
        for r in &self.0 {
            s.push(format!("{}  ", r.id));
            // Unpadded, as before: `RunState`'s Display ignores widths.
            s.status(super::state_tone(r.state.name()), r.state.name());
            s.push(format!(
                "  {:>6} in / {:>5} out{}{}{}{}\n",
                r.input_tokens,
                r.output_tokens,
                // What the latest model call was offered.
                match r.offered_tools {
                    0 => String::new(),
                    n => format!("  offered {n} tools, {} B", r.offered_bytes),
                },
                match r.unreported_calls {
                    0 => String::new(),
                    n => format!(" (+{n} call(s) with no usage reported)"),
                },
                r.model
                    .as_deref()
                    .map(|m| format!("  {m}"))
                    .unwrap_or_default(),
                r.reason
                    .as_deref()
                    .map(|m| format!("  ({})", crate::text::escape_control(m)))
                    .unwrap_or_default()
            ));
        }
        s
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&self.0)
    }
}
