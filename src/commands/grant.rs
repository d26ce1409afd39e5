//! `keel grant SKILL CAPABILITY` and `/grant`: a persisted grant, in this
//! workspace only.

use serde_json::json;

use super::{CommandError, Ctx, Render, Text};
use crate::capability::CapabilityRule;
use crate::skill::manifest::valid_skill_name;
use crate::text::escape_control as esc;

/// A grant stored (or found already there).
pub struct Granted {
    pub skill: String,
    /// The rule as the gate reads it back (normalised).
    pub rule: CapabilityRule,
    pub workspace: String,
    /// False: the grant was already there.
    pub new: bool,
    /// No skill of that name is loaded right now.
    pub not_loaded: bool,
}

/// The parsed arguments of `grant` and `revoke`.
pub(super) struct Target {
    pub skill: String,
    pub rule: CapabilityRule,
    pub not_loaded: bool,
}

/// Parses a grant, normalising it the way the gate will read it back.
pub(super) fn parse(ctx: Ctx<'_>, skill: &str, capability: &str) -> Result<Target, CommandError> {
    if !valid_skill_name(skill) {
        return Err(CommandError::NotASkillName(esc(skill).into_owned()));
    }
    let kernel = ctx.kernel;
    let rule = CapabilityRule::parse(capability, &crate::paths::scope_base(kernel.workspace()))?;
    Ok(Target {
        skill: skill.to_string(),
        rule,
        not_loaded: kernel.skills().latest(skill).is_none(),
    })
}

/// The note for a grant or revoke of a skill that is not loaded.
pub(super) fn not_loaded_note(skill: &str) -> Text {
    Text::plain(format!(
        "no skill named `{skill}` is loaded right now; the grant applies when it is"
    ))
}

pub fn run(ctx: Ctx<'_>, skill: &str, capability: &str) -> Result<Granted, CommandError> {
    let t = parse(ctx, skill, capability)?;
    let kernel = ctx.kernel;
    let new = kernel
        .store()
        .grant(kernel.workspace(), &t.skill, &t.rule.text)?;
    Ok(Granted {
        skill: t.skill,
        rule: t.rule,
        workspace: kernel.workspace().display().to_string(),
        new,
        not_loaded: t.not_loaded,
    })
}

impl Render for Granted {
    fn text(&self) -> Text {
        Text::plain(format!(
            "{} {} {} in workspace {}\n",
            if self.new {
                "granted"
            } else {
                "already granted:"
            },
            self.skill,
            esc(&self.rule.text),
            esc(&self.workspace)
        ))
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&json!({
            "skill": self.skill,
            "capability": self.rule.text,
            "workspace": self.workspace,
            "new": self.new,
        }))
    }

    fn notes(&self) -> Vec<Text> {
        if self.not_loaded {
            vec![not_loaded_note(&self.skill)]
        } else {
            Vec::new()
        }
    }
}
