//! `keel sessions` and `/sessions`: sessions, most recently active first,
//! with their runs' state; the console marks its current one.

use super::{CommandError, Ctx, Render};
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
    fn text(&self) -> String {
        if self.list.is_empty() {
            return "no sessions yet\n".into();
        }
        let mut s = String::new();
        for x in &self.list {
            let mark = if Some(&x.id) == self.current.as_ref() {
                "*"
            } else {
                " "
            };
            let state = match &x.last_state {
                Some(state) => format!(
                    "{} run{}, last {state}",
                    x.runs,
                    if x.runs == 1 { "" } else { "s" }
                ),
                None => "no runs".into(),
            };
            s.push_str(&format!(
                "{mark} {}  {}  {:<22}  {}\n",
                x.id,
                super::audit::format_time(x.last_active_ms),
                state,
                crate::text::escape_control(&crate::repl::chat::one_line(&x.title, 60))
            ));
        }
        s
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&self.list)
    }
}
