//! `keel grants` and `/grants`: persisted grants, grouped by workspace.

use std::fmt::Write;

use super::{Command, CommandError, Ctx, Render, Text};
use crate::store::GrantRecord;
use crate::text::escape_control as esc;

/// Every persisted grant, in every workspace.
pub struct Grants(pub Vec<GrantRecord>);

pub fn run(ctx: Ctx<'_>) -> Result<Grants, CommandError> {
    Ok(Grants(ctx.kernel.store().all_grants()?))
}

impl Render for Grants {
    /// Grants grouped by workspace (a grant applies only in its own); those
    /// from before grants were per workspace are listed last, with what to
    /// do.
    fn text(&self) -> Text {
        let grants = &self.0;
        if grants.is_empty() {
            return crate::text![
                "no grants (grant with `",
                Command::Grant.with("SKILL CAPABILITY"),
                "`)\n"
            ];
        }
        let mut s = Text::new();
        let mut current: Option<&str> = None;
        let (legacy, scoped): (Vec<_>, Vec<_>) = grants
            .iter()
            .partition(|g| g.workspace == crate::store::LEGACY_WORKSPACE);
        for g in &scoped {
            if current != Some(g.workspace.as_str()) {
                current = Some(&g.workspace);
                let _ = writeln!(s, "in workspace {}:", esc(&g.workspace));
            }
            let _ = writeln!(s, "  {:<20} {}", esc(&g.skill), esc(&g.capability));
        }
        if !legacy.is_empty() {
            s.append(crate::text![
                "from before grants were per workspace (they apply nowhere; grant again with `",
                Command::Grant.bare(),
                "` in the workspace where each is meant, then `",
                Command::Revoke.bare(),
                "` these):\n"
            ]);
            for g in &legacy {
                let _ = writeln!(s, "  {:<20} {}", esc(&g.skill), esc(&g.capability));
            }
        }
        s
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&self.0)
    }
}
