//! Tools: names, argument validation, and the errors a call can end with.
//!
//! The tool table itself lives in the skill set (`skill::SkillSet::tools`);
//! this module holds what every caller of a tool shares: parsing a tool name
//! once into a [`ToolName`], checking arguments against the tool's JSON Schema
//! before any engine is entered, and [`ToolError`]. keel's own tools (no
//! skill behind them) are in [`native`].

pub mod native;

use std::fmt;

use serde_json::Value;

use crate::script::ScriptError;
use crate::skill::ToolSpec;

/// `skill.tool`, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ToolName {
    pub skill: String,
    pub tool: String,
}

impl ToolName {
    pub fn parse(s: &str) -> Result<Self, ToolError> {
        match s.split_once('.') {
            Some((skill, tool))
                if crate::skill::manifest::valid_skill_name(skill)
                    && crate::skill::manifest::valid_tool_name(tool) =>
            {
                Ok(Self {
                    skill: skill.to_string(),
                    tool: tool.to_string(),
                })
            }
            _ => Err(ToolError::BadName {
                name: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.skill, self.tool)
    }
}

/// Why a tool call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The name is not `skill.tool`.
    #[error("`{name}` is not a tool name; write SKILL.TOOL, e.g. `notes.add` (see `keel tools`)")]
    BadName { name: String },
    /// No loaded skill offers this tool.
    #[error("no tool `{name}`{}; see `keel tools`", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownTool {
        name: String,
        suggestion: Option<String>,
    },
    /// The tool's skill is there but did not load.
    #[error(
        "no tool `{name}`: skill {skill} did not load: {error}; fix it and it reloads (`keel check` shows every problem)"
    )]
    SkillNotLoaded {
        name: String,
        /// `name@version`, or the skill name when the manifest did not
        /// get that far.
        skill: String,
        error: String,
    },
    /// The arguments do not match the tool's JSON Schema.
    #[error("invalid arguments for `{tool}`: {}", errors.join("; "))]
    InvalidArguments { tool: String, errors: Vec<String> },
    /// The script failed or a sandbox limit ended it.
    #[error("{tool} ({skill}): {error}")]
    Script {
        tool: String,
        /// `name@version` of the skill that ran.
        skill: String,
        error: ScriptError,
    },
    /// `tools.call` chains nested too deeply.
    #[error(
        "`{tool}`: tool calls nested more than {max} deep (a skill calling itself through keel.tools.call?)"
    )]
    TooDeep { tool: String, max: u32 },
    /// One of keel's own tools (`skills.activate`, `skills.read`,
    /// `tools.search`) refused the request; the message says why and what
    /// to do.
    #[error("{tool}: {message}")]
    Refused { tool: String, message: String },
    /// The tool exists but is not offered to the model in this session
    /// (more tools are installed than `[agent] max_offered_tools`).
    #[error(
        "`{name}` is not offered in this session: activate its skill first with skills.activate {{\"name\": \"{skill}\"}}, or find it with tools.search, then call it again"
    )]
    NotOffered { name: String, skill: String },
    /// The tool's skill is disabled in this workspace: it keeps its files
    /// and grants but offers no tools until it is enabled again.
    #[error(
        "`{name}` is not available: skill `{skill}` is disabled in this workspace; enable it with `keel skill enable {skill}`"
    )]
    SkillDisabled { name: String, skill: String },
    /// keel itself failed (a bug or a shutdown).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Checks arguments against the tool's schema, listing every violation
/// with where it is (`/text: 1 is not of type "string"`).
pub fn validate_args(name: &str, spec: &ToolSpec, args: &Value) -> Result<(), ToolError> {
    let validator = spec.validator().map_err(|e| ToolError::InvalidArguments {
        tool: name.to_string(),
        errors: vec![e],
    })?;
    if validator.is_valid(args) {
        return Ok(());
    }
    let errors: Vec<String> = validator
        .iter_errors(args)
        .take(10)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    Err(ToolError::InvalidArguments {
        tool: name.to_string(),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_parse_once() {
        let n = ToolName::parse("notes.add").unwrap();
        assert_eq!((n.skill.as_str(), n.tool.as_str()), ("notes", "add"));
        for bad in [
            "notes",
            "notes.",
            ".add",
            "Notes.add",
            "notes.add.x",
            "notes.a-b",
        ] {
            assert!(ToolName::parse(bad).is_err(), "{bad}");
        }
    }
}
