//! `keel tools` and `/tools`: every tool with its parameters and
//! description, keel's own tools last.

use std::fmt::Write;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Ctx, Render, Text};
use crate::skill::SkillSet;
use crate::text::escape_control as esc;

/// The tools of the skill set as loaded.
pub struct Tools {
    set: Arc<SkillSet>,
}

pub fn run(ctx: Ctx<'_>) -> Tools {
    Tools {
        set: ctx.kernel.skills(),
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
            let _ = writeln!(
                s,
                "{}  {}",
                esc(&format!("{name}({})", param_signature(&spec.parameters))),
                esc(&spec.description)
            );
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
                    })
                })
                // keel's own tools (no skill behind them).
                .chain(crate::tool::native::specs().iter().map(|t| {
                    json!({
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                        "skill": "keel",
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
