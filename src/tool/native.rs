//! keel's own tools: progressive disclosure of skills and tool search.
//!
//! The model's prompt lists each skill by name and description only
//! (`agent::prompt`). These tools, implemented here in Rust and offered
//! with every request, let it ask for more when a skill fits the task:
//!
//! - `skills.activate {name}` — the skill's `SKILL.md` body, the list of its
//!   other files, and (for a keel skill) its tools;
//! - `skills.read {skill, path}` — one file of that skill's folder;
//! - `tools.search {query}` — tools (name, description, JSON Schema) and
//!   skills matching a query, for when more tools exist than are offered.
//!
//! They need no capability grant: they read only what a skill publishes
//! about itself, from the skill set as loaded (claimants and failed skills
//! are not in it). `skills.read` reaches nothing but the named skill's own
//! folder: the path must be relative with no `..`, and the file is opened
//! beneath the folder (`openat2(RESOLVE_BENEATH)`, see
//! [`crate::skill::files`]), so a symlink out of the folder, even one
//! swapped in between check and open, is refused, as are FIFOs, devices
//! and files over [`crate::skill::MAX_FILE_BYTES`]. A built-in skill's
//! files are the ones compiled into keel. Their calls are recorded in the
//! transcript like any other tool call.
//!
//! The names `skills` and `tools` are therefore reserved: no skill may
//! take them.

use std::path::{Component, Path};
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::ToolError;
use crate::skill::{LoadedSkill, Origin, SkillSet, ToolSpec, builtin};

/// `skills.activate`.
pub const ACTIVATE: &str = "skills.activate";
/// `skills.read`.
pub const READ: &str = "skills.read";
/// `tools.search`.
pub const SEARCH: &str = "tools.search";

/// Skill names keel's own tools use; no skill may take them.
pub const RESERVED_SKILL_NAMES: &[&str] = &["skills", "tools"];

/// Most results of one `tools.search`.
pub const MAX_SEARCH_RESULTS: usize = 8;
/// Longest `tools.search` query, in bytes.
const MAX_QUERY: usize = 500;

/// The specs of keel's own tools, in the order they are offered.
pub fn specs() -> &'static [ToolSpec] {
    static SPECS: OnceLock<Vec<ToolSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        vec![
            ToolSpec::new(
                ACTIVATE,
                "Load a listed skill's instructions (and its file list) before doing a task it fits.",
                json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": false}),
            ),
            ToolSpec::new(
                READ,
                "Read one file of an activated skill's folder (path relative to it).",
                json!({"type": "object", "properties": {"skill": {"type": "string"}, "path": {"type": "string"}}, "required": ["skill", "path"], "additionalProperties": false}),
            ),
            ToolSpec::new(
                SEARCH,
                "Find tools and skills by keywords; tools found can be called from then on.",
                json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"], "additionalProperties": false}),
            ),
        ]
    })
}

/// The spec of a native tool, if `name` is one.
pub fn spec(name: &str) -> Option<&'static ToolSpec> {
    specs().iter().find(|s| s.name == name)
}

/// Whether `name` is one of keel's own tools.
pub fn is_native(name: &str) -> bool {
    spec(name).is_some()
}

fn refused(tool: &str, message: impl Into<String>) -> ToolError {
    ToolError::Refused {
        tool: tool.to_string(),
        message: message.into(),
    }
}

/// Calls a native tool on the skill set (arguments already validated
/// against its schema).
pub fn call(set: &SkillSet, name: &str, args: &Value) -> Result<Value, ToolError> {
    let arg = |key: &str| args.get(key).and_then(Value::as_str).unwrap_or_default();
    match name {
        ACTIVATE => activate(set, arg("name")).map(Value::String),
        READ => read(set, arg("skill"), arg("path")).map(Value::String),
        SEARCH => search(set, arg("query")),
        _ => Err(ToolError::UnknownTool {
            name: name.to_string(),
            suggestion: None,
        }),
    }
}

/// The loaded skill `name`, or an error listing what there is.
fn find<'a>(
    set: &'a SkillSet,
    tool: &str,
    name: &str,
) -> Result<&'a std::sync::Arc<LoadedSkill>, ToolError> {
    set.latest(name).ok_or_else(|| {
        let suggestion = crate::capability::did_you_mean(
            name,
            set.skills.keys().map(|id| id.name.as_str()),
        );
        refused(
            tool,
            format!(
                "no skill `{name}`{}; the skills are listed in the system prompt (or search with tools.search)",
                suggestion.map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
            ),
        )
    })
}

/// `skills.activate`: what the model needs to use a skill.
pub fn activate(set: &SkillSet, name: &str) -> Result<String, ToolError> {
    let skill = find(set, ACTIVATE, name)?;
    let mut out = format!("# Skill `{}` is active\n\n", skill.manifest.name);
    match skill.source.instructions.as_ref().map(|i| i.body.as_str()) {
        Some(body) if !body.is_empty() => out.push_str(body),
        _ => out.push_str(skill.description()),
    }
    out.push('\n');
    let tools: Vec<String> = skill
        .manifest
        .tools
        .iter()
        .map(|t| format!("{}.{}", skill.manifest.name, t.name))
        .collect();
    if !tools.is_empty() {
        out.push_str(&format!("\nTools: {}\n", tools.join(", ")));
    }
    if !skill.source.resources.is_empty() {
        out.push_str(&format!(
            "\nFiles of this skill (read one with skills.read {{\"skill\": \"{}\", \"path\": \"…\"}}):\n",
            skill.manifest.name
        ));
        for f in &skill.source.resources {
            out.push_str(&format!("- {f}\n"));
        }
    }
    if let Origin::Folder(dir) = &skill.source.origin
        && skill
            .source
            .resources
            .iter()
            .any(|f| f.starts_with("scripts/"))
    {
        out.push_str(&format!(
            "\nThe skill's folder is {}. Its scripts run only through a tool that runs programs (exec), if the operator's policy allows the program; this skill grants nothing by itself.\n",
            dir.display()
        ));
    }
    Ok(out)
}

/// Checks a path given to `skills.read`: relative, each part a plain name.
fn checked_path(path: &str) -> Result<&Path, ToolError> {
    let p = Path::new(path);
    let why = if path.is_empty() {
        Some("the path is empty")
    } else if path.contains('\0') {
        Some("the path contains a NUL byte")
    } else if p.is_absolute() {
        Some("absolute paths are refused")
    } else if p.components().any(|c| matches!(c, Component::ParentDir)) {
        Some("`..` is refused")
    } else if !p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Some("the path must be relative to the skill's folder")
    } else {
        None
    };
    match why {
        Some(why) => Err(refused(
            READ,
            format!(
                "{why}: give a path inside the skill's folder, as skills.activate lists them (e.g. \"reference.md\")"
            ),
        )),
        None => Ok(p),
    }
}

/// `skills.read`: one file of the skill's own folder.
pub fn read(set: &SkillSet, skill: &str, path: &str) -> Result<String, ToolError> {
    let s = find(set, READ, skill)?;
    let rel = checked_path(path)?;
    let key = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/");
    let missing = || {
        refused(
            READ,
            format!(
                "skill `{skill}` has no file `{path}`; its files: {}",
                if s.source.resources.is_empty() {
                    "none besides SKILL.md".to_string()
                } else {
                    s.source.resources.join(", ")
                }
            ),
        )
    };
    match &s.source.origin {
        Origin::Builtin(name) => {
            let b = builtin::SKILLS
                .iter()
                .find(|b| b.name == name)
                .ok_or_else(missing)?;
            let text = match key.as_str() {
                "SKILL.md" => b.instructions,
                "skill.toml" => b.manifest,
                k => b
                    .files
                    .iter()
                    .find(|(f, _)| *f == k)
                    .map(|(_, t)| *t)
                    .ok_or_else(missing)?,
            };
            Ok(text.to_string())
        }
        // A one-file skill is its file.
        Origin::File(_) => s
            .source
            .files
            .get(&key)
            .map(|t| t.to_string())
            .ok_or_else(missing),
        Origin::Folder(dir) => {
            let folder = crate::skill::files::SkillDir::open(dir)
                .map_err(|e| refused(READ, e.to_string()))?;
            folder.read(rel).map_err(|e| {
                if e.is_not_found() {
                    missing()
                } else {
                    refused(READ, e.to_string())
                }
            })
        }
    }
}

/// `tools.search`: tools and skills whose name or description holds the
/// query's words, best first.
pub fn search(set: &SkillSet, query: &str) -> Result<Value, ToolError> {
    if query.len() > MAX_QUERY {
        return Err(refused(
            SEARCH,
            format!("the query is longer than {MAX_QUERY} bytes; use a few keywords"),
        ));
    }
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        return Err(refused(
            SEARCH,
            "the query has no words; give a few keywords, e.g. \"pdf form\"",
        ));
    }
    let score = |name: &str, description: &str| {
        let hay = format!("{name} {description}").to_lowercase();
        words.iter().filter(|w| hay.contains(w.as_str())).count()
            // A word in the name counts double.
            + words.iter().filter(|w| name.to_lowercase().contains(w.as_str())).count()
    };
    let mut tools: Vec<(usize, &str, &ToolSpec)> = set
        .tools
        .iter()
        .map(|(name, e)| (name.as_str(), e.spec()))
        .map(|(name, spec)| (score(name, &spec.description), name, spec))
        .filter(|(s, _, _)| *s > 0)
        .collect();
    tools.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut skills: Vec<(usize, &LoadedSkill)> = Vec::new();
    for s in set.skills.values() {
        // The highest version of each name only.
        if !set
            .latest(&s.manifest.name)
            .is_some_and(|l| std::ptr::eq(l.as_ref(), s.as_ref()))
        {
            continue;
        }
        let sc = score(&s.manifest.name, s.description());
        if sc > 0 {
            skills.push((sc, s));
        }
    }
    skills.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.manifest.name.cmp(&b.1.manifest.name))
    });
    let tools: Vec<Value> = tools
        .into_iter()
        .take(MAX_SEARCH_RESULTS)
        .map(|(_, name, spec)| json!({"name": name, "description": spec.description, "parameters": spec.parameters}))
        .collect();
    let skills: Vec<Value> = skills
        .into_iter()
        .take(MAX_SEARCH_RESULTS)
        .map(|(_, s)| json!({"name": s.manifest.name, "description": s.description()}))
        .collect();
    Ok(json!({
        "tools": tools,
        "skills": skills,
        "note": "Tools listed here can be called from your next step on; activate a skill with skills.activate to get its instructions and all its tools."
    }))
}

/// The tool names a successful `tools.search` result made callable.
pub fn found_tools(result: &str) -> Vec<String> {
    serde_json::from_str::<Value>(result)
        .ok()
        .and_then(|v| {
            v.get("tools").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_folder_are_refused_before_any_open() {
        for bad in [
            "",
            "/etc/passwd",
            "../other/SKILL.md",
            "a/../../b",
            "a/..",
            "x\0y",
        ] {
            let e = checked_path(bad).unwrap_err().to_string();
            assert!(e.starts_with("skills.read: "), "{bad}: {e}");
        }
        for ok in ["reference.md", "scripts/fill.py", "./forms.md"] {
            assert!(checked_path(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn native_tools_have_valid_schemas_and_reserved_names() {
        for s in specs() {
            assert!(s.validator().is_ok(), "{}", s.name);
            let skill = s.name.split('.').next().unwrap();
            assert!(RESERVED_SKILL_NAMES.contains(&skill), "{}", s.name);
        }
        assert_eq!(found_tools(r#"{"tools":[{"name":"a.b"}]}"#), ["a.b"]);
        assert!(found_tools("not json").is_empty());
    }
}
