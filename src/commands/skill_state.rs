//! `keel skill disable|enable NAME` and the console's `/disable` and
//! `/enable`: turn a skill's tools off and on in this workspace, keeping
//! its files, grants and data (see `kernel::skill_state`).

use super::{Command, CommandError, Ctx, Render, Text};
use crate::kernel::SkillStateChange;
use crate::text::escape_control as esc;

/// A skill's state, as changed (or found already so).
pub struct SkillStateSet(pub SkillStateChange);

pub fn run(ctx: Ctx<'_>, skill: &str, enabled: bool) -> Result<SkillStateSet, CommandError> {
    Ok(SkillStateSet(ctx.kernel.set_skill_enabled(skill, enabled)?))
}

impl Render for SkillStateSet {
    fn text(&self) -> Text {
        let c = &self.0;
        let ws = esc(&c.workspace);
        match (c.enabled, c.changed) {
            (false, true) => crate::text![
                format!(
                    "disabled {} in workspace {ws}: its tools are no longer offered or callable; its files, grants and data are kept (`",
                    c.skill
                ),
                Command::Enable.with(c.skill.clone()),
                "` undoes it)\n"
            ],
            (false, false) => Text::plain(format!(
                "{} is already disabled in workspace {ws}\n",
                c.skill
            )),
            (true, true) => Text::plain(format!(
                "enabled {} in workspace {ws}: its tools are offered again\n",
                c.skill
            )),
            (true, false) => Text::plain(format!(
                "{} is already enabled in workspace {ws}\n",
                c.skill
            )),
        }
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&self.0)
    }

    fn notes(&self) -> Vec<Text> {
        let c = &self.0;
        let mut notes = Vec::new();
        if !c.loaded {
            notes.push(Text::plain(format!(
                "no skill named `{}` is loaded right now; the state applies when it is",
                c.skill
            )));
        }
        if !c.enabled && !c.dependents.is_empty() {
            notes.push(Text::plain(format!(
                "{} depend{} on {} and stay{} enabled: their keel.tools.call into it fail while it is disabled (code they require from it still runs, under their own grants)",
                c.dependents.join(", "),
                if c.dependents.len() == 1 { "s" } else { "" },
                c.skill,
                if c.dependents.len() == 1 { "s" } else { "" },
            )));
        }
        notes
    }
}
