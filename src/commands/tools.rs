//! `keel tools` and `/tools`: every tool with its parameters and
//! description, keel's own tools last. The tools of a disabled skill are
//! listed marked `disabled` (`"enabled": false` in JSON): they are there,
//! and refused until the skill is enabled.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Command, Ctx, Render, Text};
use crate::skill::SkillSet;
use crate::text::Tone;
use crate::text::escape_control as esc;

/// The tools of the skill set as loaded.
pub struct Tools {
    set: Arc<SkillSet>,
    /// Skills disabled in this workspace.
    disabled: BTreeSet<String>,
}

pub fn run(ctx: Ctx<'_>) -> Tools {
    let disabled = ctx.kernel.disabled_skills().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read which skills are disabled");
        BTreeSet::new()
    });
    Tools {
        set: ctx.kernel.skills(),
        disabled,
    }
}

impl Render for Tools {
    fn text(&self) -> Text {
        let mut s = Text::new();
        if self.set.tools.is_empty() {
            s.push("no tools\n");
        }
        for (name, e) in &self.set.tools {
            let spec = e.spec();
            let _ = write!(
                s,
                "{}  {}",
                esc(&format!("{name}({})", param_signature(&spec.parameters))),
                esc(&spec.description)
            );
            let skill = &e.skill.manifest.name;
            if self.disabled.contains(skill) {
                s.push("  (");
                s.status(Tone::Warn, "disabled");
                s.push(": `");
                s.command(Command::Enable.with(esc(skill).into_owned()));
                s.push("`)");
            }
            s.push("\n");
        }
        // keel's own tools, offered to the model with every request.
        for t in crate::tool::native::specs() {
            let _ = writeln!(s, "{:<28} {} (built in)", t.name, t.description);
        }
        s
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&Value::Array(
            self.set
                .tools
                .iter()
                .map(|(name, e)| {
                    let spec = e.spec();
                    json!({
                        "name": name,
                        "description": spec.description,
                        "parameters": spec.parameters,
                        "skill": e.skill.id.to_string(),
                        "enabled": !self.disabled.contains(&e.skill.manifest.name),
                    })
                })
                // keel's own tools (no skill behind them).
                .chain(crate::tool::native::specs().iter().map(|t| {
                    json!({
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                        "skill": "keel",
                        "enabled": true,
                    })
                }))
                .collect(),
        ))
    }
}

/// A tool's parameters as `text: string, limit?: integer`, from its JSON
/// Schema (`?` marks the ones not required).
pub fn param_signature(schema: &Value) -> String {
    let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
        return String::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    props
        .iter()
        .map(|(name, p)| {
            let ty = match p.get("type") {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(ts)) => ts
                    .iter()
                    .filter_map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join("|"),
                _ => "any".into(),
            };
            let opt = if required.contains(&name.as_str()) {
                ""
            } else {
                "?"
            };
            format!("{name}{opt}: {ty}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
