//! `keel revoke SKILL CAPABILITY` and `/revoke`: removes a grant; a grant
//! that is not there is an error (a typo must not look like success).

use serde_json::json;

use super::{CommandError, Ctx, Render, Text};
use crate::capability::CapabilityRule;
use crate::text::escape_control as esc;

/// A grant removed.
pub struct Revoked {
    pub skill: String,
    pub rule: CapabilityRule,
    pub not_loaded: bool,
}

pub fn run(ctx: Ctx<'_>, skill: &str, capability: &str) -> Result<Revoked, CommandError> {
    let t = super::grant::parse(ctx, skill, capability)?;
    let kernel = ctx.kernel;
    if !revoke_here_or_legacy(kernel.store(), kernel.workspace(), &t.skill, &t.rule.text)? {
        return Err(CommandError::NoSuchGrant {
            skill: t.skill,
            capability: esc(&t.rule.text).into_owned(),
        });
    }
    Ok(Revoked {
        skill: t.skill,
        rule: t.rule,
        not_loaded: t.not_loaded,
    })
}

/// Revokes a grant in `workspace`, or else the same grant left from before
/// grants were per workspace (it applies nowhere; revoking clears it).
pub fn revoke_here_or_legacy(
    store: &crate::store::Store,
    workspace: &std::path::Path,
    skill: &str,
    capability: &str,
) -> Result<bool, crate::store::StoreError> {
    let ws = workspace.to_string_lossy();
    Ok(store.revoke(&ws, skill, capability)?
        || store.revoke(crate::store::LEGACY_WORKSPACE, skill, capability)?)
}

impl Render for Revoked {
    fn text(&self) -> Text {
        Text::plain(format!("revoked {} {}\n", self.skill, esc(&self.rule.text)))
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&json!({
            "skill": self.skill,
            "capability": self.rule.text,
            "revoked": true,
        }))
    }

    fn notes(&self) -> Vec<Text> {
        if self.not_loaded {
            vec![super::grant::not_loaded_note(&self.skill)]
        } else {
            Vec::new()
        }
    }
}
