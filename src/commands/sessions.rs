//! `keel sessions` and `/sessions`: sessions, most recently active first,
//! with their runs' state; the console marks its current one.

use super::{CommandError, Ctx, Render, Text};
use crate::store::SessionSummary;

/// The sessions, and which one is current (the console's).
pub struct Sessions {
    pub list: Vec<SessionSummary>,
    pub current: Option<String>,
}

pub fn run(ctx: Ctx<'_>, current: Option<&str>) -> Result<Sessions, CommandError> {
    super::settle_dead_runs(ctx.kernel);
    Ok(Sessions {
        list: ctx.kernel.store().session_summaries()?,
        current: current.map(str::to_string),
    })
}

impl Render for Sessions {
    fn text(&self) -> Text {
        if self.list.is_empty() {
            return "no sessions yet\n".into();
        }
        let mut s = Text::new();
        for x in &self.list {
            let mark = if Some(&x.id) == self.current.as_ref() {
                "*"
            } else {
                " "
            };
            s.push(format!(
                "{mark} {}  {}  ",
                x.id,
                super::audit::format_time(x.last_active_ms),
            ));
            // `N runs, last STATE`, padded to 22 as one column.
            let shown = match &x.last_state {
                Some(state) => {
                    let lead = format!(
                        "{} run{}, last ",
                        x.runs,
                        if x.runs == 1 { "" } else { "s" }
                    );
                    s.push(lead.as_str());
                    let state = state.to_string();
                    s.status(super::state_tone(&state), state.as_str());
                    lead.chars().count() + state.chars().count()
                }
                None => {
                    s.push("no runs");
                    "no runs".len()
                }
            };
            s.push(" ".repeat(22usize.saturating_sub(shown)));
            s.push(format!(
                "  {}\n",
                crate::text::escape_control(&crate::repl::chat::one_line(&x.title, 60))
            ));
        }
        s
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&self.list)
    }
}
