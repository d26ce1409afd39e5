//! `skill.toml`: what a skill is, parsed without running any of it.
//!
//! Everything needed to list tools, resolve dependencies and check
//! capabilities is here. Parsing is pure (text in, manifest or error out); a
//! one-file skill in `scripts/` carries the same TOML in a leading comment
//! block, which [`extract_comment_manifest`] lifts out with its line numbers
//! intact so errors point at the right line of the script.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use semver::{Version, VersionReq};
use serde::Deserialize;
use serde_json::Value;

use crate::capability::{CapabilityError, CapabilityKind, CapabilityRule, ScopeBase, ScopeKind};
use crate::config::toml_error_line;
use crate::skill::checked_schemas::CheckedSchemas;

/// The language of a script, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Luau,
    Rhai,
}

impl Language {
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "luau" | "lua" => Some(Self::Luau),
            "rhai" => Some(Self::Rhai),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Luau => "luau",
            Self::Rhai => "rhai",
        }
    }
}

/// One tool a skill offers.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// The tool's name within the skill (`add` in `notes.add`).
    pub name: String,
    pub description: String,
    /// The JSON Schema of the arguments, as written.
    pub parameters: Value,
    /// The compiled schema, built on first use: listing tools never pays
    /// for it (a compiled validator costs far more memory than the text).
    validator: Arc<OnceLock<Result<jsonschema::Validator, String>>>,
    /// The manifest line that declares the tool (1 for tools built in
    /// code), for errors found after parsing.
    line: usize,
}

impl ToolSpec {
    /// A tool spec built in code (keel's own tools).
    pub fn new(name: &str, description: &str, parameters: Value) -> Self {
        Self {
            name: name.to_string(),
            description: description.to_string(),
            parameters,
            validator: Arc::default(),
            line: 1,
        }
    }

    /// The compiled argument schema. The schema passed meta-validation when
    /// the manifest was parsed (or an identical text did before: see
    /// [`CheckedSchemas`]); what only compiling finds (an unresolvable
    /// `$ref`, a bad regex) is reported here, naming the tool.
    pub fn validator(&self) -> Result<&jsonschema::Validator, String> {
        self.validator
            .get_or_init(|| {
                jsonschema::validator_for(&self.parameters).map_err(|e| {
                    format!(
                        "tool `{}`: parameters is not a usable JSON Schema: {e}",
                        self.name
                    )
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// A parsed, validated manifest.
#[derive(Debug, Clone)]
pub struct SkillManifest {
    pub name: String,
    pub version: Version,
    pub description: String,
    /// The entry script, relative to the skill's folder.
    pub entry: PathBuf,
    pub language: Language,
    pub dependencies: BTreeMap<String, VersionReq>,
    /// Declared capabilities, anchored at the workspace.
    pub capabilities: Vec<CapabilityRule>,
    pub tools: Vec<ToolSpec>,
}

/// A manifest error, with the file and line it points at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct ManifestError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    skill: RawSkill,
    #[serde(default)]
    dependencies: BTreeMap<String, String>,
    #[serde(default)]
    capabilities: BTreeMap<String, toml::Value>,
    #[serde(default)]
    tools: Vec<RawTool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSkill {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    entry: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    name: String,
    description: String,
    parameters: Option<toml::Value>,
}

/// `[a-z][a-z0-9_-]*`, at most 64 characters.
pub fn valid_skill_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `[a-z][a-z0-9_]*`, at most 64 characters (no `-` or `.`, so that
/// `skill.tool` splits unambiguously and is a valid function name in both
/// languages).
pub fn valid_tool_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Finds the line where `needle` (a key or value as written) first appears,
/// to point errors found after deserialising at something useful.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or(1)
}

impl SkillManifest {
    /// The manifest an instructions skill (a `SKILL.md` without
    /// `skill.toml`) stands on: its name and description, no tools, no
    /// capabilities, no dependencies, version 0.0.0. It never reaches an
    /// engine (see [`crate::skill::SkillKind`]); `entry` and `language`
    /// are placeholders.
    pub fn instructions_only(name: String, description: String) -> Self {
        Self {
            name,
            version: Version::new(0, 0, 0),
            description,
            entry: PathBuf::from("SKILL.md"),
            language: Language::Luau,
            dependencies: BTreeMap::new(),
            capabilities: Vec::new(),
            tools: Vec::new(),
        }
    }

    /// Parses manifest text. `file` is used in errors; `default_entry` is the
    /// entry script when the manifest names none (the script itself, for a
    /// one-file skill).
    pub fn parse(
        text: &str,
        file: &Path,
        default_entry: Option<&Path>,
        base: &ScopeBase<'_>,
    ) -> Result<Self, ManifestError> {
        Self::parse_checked(
            text,
            file,
            default_entry,
            base,
            Some(&mut CheckedSchemas::new()),
        )
    }

    /// [`parse`](Self::parse), taking each tool schema whose exact text is
    /// in `schemas` as already checked against the meta-schema (and adding
    /// those it checks now). Discovery passes the set kept in the data
    /// directory, so a start checks only new or edited schemas; the errors
    /// are the same as `parse`'s.
    pub fn parse_with(
        text: &str,
        file: &Path,
        default_entry: Option<&Path>,
        base: &ScopeBase<'_>,
        schemas: &mut CheckedSchemas,
    ) -> Result<Self, ManifestError> {
        Self::parse_checked(text, file, default_entry, base, Some(schemas))
    }

    /// A built-in skill's manifest: the same parse, without checking each
    /// tool's schema against the JSON Schema meta-schema. Building that
    /// meta-validator was a quarter of a one-shot `keel ask`'s work and
    /// 1.5 MB of its memory; the built-ins' schemas are compiled in and
    /// checked by a unit test (`every_builtin_manifest_parses…`), so a
    /// workspace with only built-ins never builds it.
    pub fn parse_builtin(
        text: &str,
        file: &Path,
        base: &ScopeBase<'_>,
    ) -> Result<Self, ManifestError> {
        Self::parse_checked(text, file, None, base, None)
    }

    /// Checks every tool's schema against the JSON Schema meta-schema
    /// afresh, whatever was checked before: `keel check`'s guarantee that
    /// it judges the schemas themselves, not a record of an earlier check.
    /// `file` is the manifest's path, for the error (the same error as a
    /// parse gives).
    pub fn check_schemas(&self, file: &Path) -> Result<(), ManifestError> {
        for t in &self.tools {
            jsonschema::meta::validate(&t.parameters).map_err(|e| ManifestError {
                file: file.to_path_buf(),
                line: t.line,
                message: schema_error(&t.name, &e),
            })?;
        }
        Ok(())
    }

    fn parse_checked(
        text: &str,
        file: &Path,
        default_entry: Option<&Path>,
        base: &ScopeBase<'_>,
        mut schemas: Option<&mut CheckedSchemas>,
    ) -> Result<Self, ManifestError> {
        let err = |line: usize, message: String| ManifestError {
            file: file.to_path_buf(),
            line,
            message,
        };
        let raw: RawManifest = toml::from_str(text)
            .map_err(|e| err(toml_error_line(text, &e), e.message().trim().to_string()))?;
        let s = &raw.skill;
        if !valid_skill_name(&s.name) {
            return Err(err(
                line_of(text, "name"),
                format!(
                    "invalid skill name `{}`: use lowercase letters, digits, `_` and `-`, starting with a letter (e.g. `my-notes`)",
                    s.name
                ),
            ));
        }
        let version = Version::parse(&s.version).map_err(|e| {
            err(
                line_of(text, &s.version),
                format!(
                    "invalid version `{}`: {e}; use semver like `1.2.0`",
                    s.version
                ),
            )
        })?;
        let entry = match (&s.entry, default_entry) {
            (Some(e), _) => PathBuf::from(e),
            (None, Some(d)) => d.to_path_buf(),
            (None, None) => {
                return Err(err(
                    line_of(text, "[skill]"),
                    "missing `entry`: name the entry script, e.g. `entry = \"main.luau\"`".into(),
                ));
            }
        };
        let entry_ok = !entry.as_os_str().is_empty()
            && entry
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !entry_ok {
            return Err(err(
                line_of(text, "entry"),
                format!(
                    "entry `{}` must be a relative path inside the skill's folder, without `..`",
                    entry.display()
                ),
            ));
        }
        let language = Language::from_path(&entry).ok_or_else(|| {
            err(
                line_of(text, "entry"),
                format!(
                    "entry `{}` has no known extension; use .luau or .lua (Luau) or .rhai (Rhai)",
                    entry.display()
                ),
            )
        })?;

        let mut dependencies = BTreeMap::new();
        for (name, req) in &raw.dependencies {
            if !valid_skill_name(name) {
                return Err(err(
                    line_of(text, name),
                    format!("invalid dependency name `{name}`"),
                ));
            }
            if name == &s.name {
                return Err(err(
                    line_of(text, name),
                    format!("skill `{name}` cannot depend on itself"),
                ));
            }
            let r = VersionReq::parse(req).map_err(|e| {
                err(
                    line_of(text, req),
                    format!(
                        "invalid version requirement `{req}` for `{name}`: {e}; use e.g. \"^1.0\""
                    ),
                )
            })?;
            dependencies.insert(name.clone(), r);
        }

        let mut capabilities = Vec::new();
        for (key, value) in &raw.capabilities {
            let line = line_of(text, key);
            let cap_err = |e: CapabilityError| err(line, e.to_string());
            let kind = CapabilityKind::parse(key).map_err(cap_err)?;
            let scopes: Vec<Option<String>> = match value {
                toml::Value::Boolean(true) if kind.scope_kind() == ScopeKind::None => vec![None],
                toml::Value::Boolean(false) => vec![],
                toml::Value::Boolean(true) => {
                    return Err(err(
                        line,
                        format!(
                            "`{key}` = true grants nothing specific; list the scopes instead, e.g. \"{key}\" = [\"...\"]"
                        ),
                    ));
                }
                toml::Value::String(s) => vec![Some(s.clone())],
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str().map(|s| Some(s.to_string())).ok_or_else(|| {
                            err(line, format!("`{key}` must list strings, found {v}"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(err(
                        line,
                        format!(
                            "`{key}` must be true or a list of scopes, found {}",
                            other.type_str()
                        ),
                    ));
                }
            };
            for scope in scopes {
                capabilities.push(
                    CapabilityRule::with_scope(kind, scope.as_deref(), base).map_err(cap_err)?,
                );
            }
        }

        let mut tools: Vec<ToolSpec> = Vec::new();
        for t in raw.tools {
            let line = line_of(text, &format!("\"{}\"", t.name));
            if !valid_tool_name(&t.name) {
                return Err(err(
                    line,
                    format!(
                        "invalid tool name `{}`: use lowercase letters, digits and `_`, starting with a letter",
                        t.name
                    ),
                ));
            }
            if tools.iter().any(|x| x.name == t.name) {
                return Err(err(line, format!("tool `{}` is declared twice", t.name)));
            }
            if t.description.trim().is_empty() {
                return Err(err(
                    line,
                    format!("tool `{}` needs a description (the model reads it)", t.name),
                ));
            }
            let parameters = match t.parameters {
                Some(p) => serde_json::to_value(&p).map_err(|e| err(line, e.to_string()))?,
                None => serde_json::json!({ "type": "object", "properties": {} }),
            };
            if parameters.get("type").and_then(Value::as_str) != Some("object") {
                return Err(err(
                    line,
                    format!(
                        "tool `{}`: parameters must be a JSON Schema with type = \"object\"",
                        t.name
                    ),
                ));
            }
            if let Some(schemas) = schemas.as_deref_mut() {
                schemas
                    .check(&parameters)
                    .map_err(|e| err(line, schema_error(&t.name, &e)))?;
            }
            tools.push(ToolSpec {
                name: t.name,
                description: t.description,
                parameters,
                validator: Arc::new(OnceLock::new()),
                line,
            });
        }

        Ok(Self {
            name: s.name.clone(),
            version,
            description: s.description.clone(),
            entry,
            language,
            dependencies,
            capabilities,
            tools,
        })
    }
}

/// The message for a tool schema the meta-schema refuses.
fn schema_error(tool: &str, e: &dyn std::fmt::Display) -> String {
    format!("tool `{tool}`: parameters is not a valid JSON Schema: {e}")
}

/// Lifts the manifest out of a one-file skill's leading comment block: the
/// consecutive lines at the top that start with `--` (Luau) or `//` (Rhai).
/// The prefix and one following space are removed; other lines become empty,
/// so line numbers in TOML errors are the script's own. Returns `None` when
/// the block holds no `[skill]` table.
pub fn extract_comment_manifest(source: &str, language: Language) -> Option<String> {
    let prefix = match language {
        Language::Luau => "--",
        Language::Rhai => "//",
    };
    let mut out = String::new();
    for line in source.lines() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix(prefix) else {
            break;
        };
        // `--!strict` and other Luau directives are not manifest lines.
        let rest = if rest.starts_with('!') { "" } else { rest };
        out.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        out.push('\n');
    }
    out.lines().any(|l| l.trim() == "[skill]").then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[skill]
name = "notes"
version = "1.2.0"
description = "Keep short notes in ./notes"
entry = "main.luau"

[dependencies]
text = "^1.0"

[capabilities]
"fs.read" = ["./notes"]
"fs.write" = ["./notes"]
"net.http" = ["api.example.com"]
"exec" = ["git"]
"env" = ["HOME"]
"kv" = true

[[tools]]
name = "add"
description = "Append a note"
parameters = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
"#;

    fn parse(text: &str) -> Result<SkillManifest, ManifestError> {
        let ws = std::env::temp_dir();
        SkillManifest::parse(
            text,
            Path::new("skill.toml"),
            None,
            &crate::paths::scope_base(&ws),
        )
    }

    #[test]
    fn the_issue_example_parses() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "notes");
        assert_eq!(m.version, Version::new(1, 2, 0));
        assert_eq!(m.language, Language::Luau);
        assert_eq!(m.capabilities.len(), 6);
        assert_eq!(m.tools[0].name, "add");
        let v = m.tools[0].validator().unwrap();
        assert!(v.is_valid(&serde_json::json!({"text": "hi"})));
        assert!(!v.is_valid(&serde_json::json!({"text": 1})));
    }

    #[test]
    fn bad_input_names_the_line() {
        let e = parse(&GOOD.replace("1.2.0", "1.2")).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("invalid version `1.2`"), "{e}");
        let e = parse(&GOOD.replace("\"kv\" = true", "\"kvv\" = true")).unwrap_err();
        assert!(e.message.contains("did you mean `kv`"), "{e}");
        assert_eq!(e.line, 17);
        let e = parse(&GOOD.replace("^1.0", "^^1")).unwrap_err();
        assert!(e.message.contains("`^^1`"), "{e}");
        let e = parse(&GOOD.replace("name = \"notes\"", "name = \"Notes\"")).unwrap_err();
        assert!(e.message.contains("invalid skill name"), "{e}");
        let e = parse(&GOOD.replace("[[tools]]", "[[tools]\n")).unwrap_err();
        assert!(e.line >= 19, "{e}");
        let e = parse(&GOOD.replace("main.luau", "../x.luau")).unwrap_err();
        assert!(e.message.contains("inside the skill's folder"), "{e}");
        let e = parse(&GOOD.replace("type = \"string\"", "type = \"strin\"")).unwrap_err();
        assert!(e.message.contains("not a valid JSON Schema"), "{e}");
        let e = parse(&GOOD.replace("\"kv\" = true", "\"tools.call\" = true")).unwrap_err();
        assert!(e.message.contains("list the scopes"), "{e}");
    }

    #[test]
    fn comment_manifest_keeps_line_numbers() {
        let src = "-- [skill]\n-- name = \"w\"\n-- version = \"x\"\nlocal M = {}\n";
        let text = extract_comment_manifest(src, Language::Luau).unwrap();
        let ws = std::env::temp_dir();
        let e = SkillManifest::parse(
            &text,
            Path::new("w.luau"),
            Some(Path::new("w.luau")),
            &crate::paths::scope_base(&ws),
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(extract_comment_manifest("local x = 1\n", Language::Luau).is_none());
        assert!(extract_comment_manifest("// [skill]\n", Language::Rhai).is_some());
    }

    #[test]
    fn mangled_manifests_never_panic() {
        let mut st = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            st
        };
        let inserts = ["\"", "[", "]", "=", "\n", "{", "}", ",", "*", "0", "-", "."];
        for _ in 0..3_000 {
            let mut text: Vec<char> = GOOD.chars().collect();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % (text.len() + 1);
                if next() % 2 == 0 && at < text.len() {
                    text.remove(at);
                } else {
                    let ins = inserts[(next() as usize) % inserts.len()];
                    for (i, c) in ins.chars().enumerate() {
                        text.insert((at + i).min(text.len()), c);
                    }
                }
            }
            let text: String = text.into_iter().collect();
            if let Err(e) = parse(&text) {
                assert!(
                    e.line >= 1 && e.line <= text.lines().count().max(1) + 1,
                    "{e}"
                );
            }
        }
    }
}
