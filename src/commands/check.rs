//! `keel check [PATH]` and `/check [PATH]`: validate manifests, compile
//! scripts, resolve dependencies, and show each declared capability
//! against the policy. Nothing to check is a failure: a script running
//! `keel check DIR` must not pass on a typo'd folder.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Command, CommandError, Ctx, Render, Text};
use crate::capability::net::HostPattern;
use crate::capability::{CapabilityRule, Decision, Host, Policy, Scope, Target};
use crate::skill::{LoadedSkill, Origin};
use crate::text::{Tone, escape_control as esc};

/// What a check found, line by line, in the order it was found.
pub struct Check {
    pub lines: Vec<Text>,
    /// The skills checked (loaded and in scope), for `--json`.
    pub checked: Vec<Checked>,
    /// Failures, claimants held back, skills that do not compile.
    pub problems: Vec<Problem>,
    /// Fields of a SKILL.md that keel ignores, for `--json`; the text has
    /// them among the lines.
    pub warnings: Vec<Problem>,
}

/// One skill that was checked, as `--json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// `name@version`, or the name of an instructions skill.
    pub skill: String,
    /// `keel` (a manifest) or `instructions` (a SKILL.md alone).
    pub kind: crate::skill::SkillKind,
    pub origin: Origin,
    /// Whether it compiles and loads (instructions skills: always).
    pub ok: bool,
    /// Each declared capability against the policy.
    pub capabilities: Vec<CapabilityCheck>,
}

/// A declared capability and what the policy says about it.
#[derive(Debug, Clone, Serialize)]
pub struct CapabilityCheck {
    pub capability: String,
    /// `allow`, `ask` or `deny`; none for a pattern, decided per target.
    pub decision: Option<&'static str>,
    pub reason: String,
    /// New since the skill was first loaded: needs a grant.
    pub pending: bool,
}

/// A problem (or warning) with where it is, as `--json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `name@version` when known.
    pub skill: Option<String>,
    /// The file the message names (from its `file:line:` prefix), when it
    /// names one.
    pub file: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    /// One problem per line of `error` that starts `file:line:` (a
    /// SKILL.md's problems are one per line); the lines after such a line
    /// belong to it (a traceback).
    fn from_error(skill: Option<&str>, error: &str) -> Vec<Problem> {
        let mut out: Vec<Problem> = Vec::new();
        for line in error.lines() {
            match split_location(line) {
                Some((file, n, message)) => out.push(Problem {
                    skill: skill.map(str::to_string),
                    file: Some(file.to_string()),
                    line: Some(n),
                    message: message.to_string(),
                }),
                None => match out.last_mut() {
                    Some(last) => {
                        last.message.push('\n');
                        last.message.push_str(line);
                    }
                    None => out.push(Problem {
                        skill: skill.map(str::to_string),
                        file: None,
                        line: None,
                        message: line.to_string(),
                    }),
                },
            }
        }
        if out.is_empty() {
            out.push(Problem {
                skill: skill.map(str::to_string),
                file: None,
                line: None,
                message: error.to_string(),
            });
        }
        out
    }
}

/// `path:12: message` as (`path`, 12, `message`): the first `:N:` with
/// digits only between the colons (a path may hold colons of its own).
pub fn split_location(line: &str) -> Option<(&str, usize, &str)> {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(i) = line[from..].find(':').map(|i| i + from) {
        let digits = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let end = i + 1 + digits;
        if i > 0 && digits > 0 && bytes.get(end) == Some(&b':') {
            let n = line[i + 1..end].parse().ok()?;
            return Some((&line[..i], n, line[end + 1..].trim_start()));
        }
        from = i + 1;
    }
    None
}

fn under(origin: &Origin, path: &Path) -> bool {
    match origin {
        Origin::Folder(p) | Origin::File(p) => p.starts_with(path),
        Origin::Builtin(_) => false,
    }
}

/// Whether `abs` is in (or is) one of `skill_paths`, symlinks resolved.
pub fn in_search_path(skill_paths: &[PathBuf], abs: &Path) -> bool {
    let resolved = abs.canonicalize().unwrap_or_else(|_| abs.to_path_buf());
    skill_paths
        .iter()
        .any(|d| resolved.starts_with(d.canonicalize().unwrap_or_else(|_| d.clone())))
}

/// Where `keel check PATH` must look for a path outside the workspace's
/// skill folders: `None` when `path` is inside them (the workspace's kernel
/// checks it); else the folder to add to the search path — a skill (a
/// folder with skill.toml or SKILL.md, or a one-file script) is found from
/// its parent, a folder of skills is searched itself. A path that is not
/// there is an error.
pub fn outside_search_folder(
    skill_paths: &[PathBuf],
    path: &Path,
) -> Result<Option<PathBuf>, CommandError> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if !abs.exists() {
        return Err(CommandError::NoSuchPath(abs));
    }
    if in_search_path(skill_paths, &abs) {
        return Ok(None);
    }
    let is_skill =
        abs.is_file() || abs.join("skill.toml").exists() || abs.join("SKILL.md").exists();
    Ok(Some(match (is_skill, abs.parent()) {
        (true, Some(parent)) => parent.to_path_buf(),
        _ => abs,
    }))
}

/// Checks every skill, or those under `scope` (a skill folder, a one-file
/// skill or a folder of skills in the kernel's search path: `keel check`
/// makes a kernel of its own for a path outside it, with
/// [`outside_search_folder`] added to its search path).
pub fn run(ctx: Ctx<'_>, scope: Option<&Path>) -> Result<Check, CommandError> {
    let kernel = ctx.kernel;
    let scope = scope.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    if let Some(p) = &scope
        && !p.exists()
    {
        return Err(CommandError::NoSuchPath(p.clone()));
    }
    if let Some(p) = &scope
        && !in_search_path(&kernel.config().skill_paths, p)
    {
        return Err(CommandError::OutsideSearchPath(p.clone()));
    }
    let set = kernel.skills();
    let in_scope = |o: &Origin| scope.as_ref().is_none_or(|p| under(o, p));
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for f in set.failures.iter().filter(|f| in_scope(&f.origin)) {
        lines.push(Text::plain(f.error.clone()));
        problems.extend(Problem::from_error(f.skill.as_deref(), &f.error));
    }
    for c in set.claimants.iter().filter(|c| in_scope(&c.origin)) {
        let mut t = Text::new();
        t.status(Tone::Warn, "held back");
        t.push(format!(": {}", esc(&c.reason)));
        lines.push(t);
        problems.push(Problem {
            skill: Some(c.skill.clone()),
            file: None,
            line: None,
            message: format!("held back: {}", c.reason),
        });
    }
    let policy = kernel.gate().policy();
    let mut checked = Vec::new();
    for s in set.skills.values().filter(|s| in_scope(&s.source.origin)) {
        let mut entry = Checked {
            skill: s.label(),
            kind: s.source.kind,
            origin: s.source.origin.clone(),
            ok: true,
            capabilities: Vec::new(),
        };
        if s.is_instructions() {
            let n = s.source.resources.len();
            let mut t = Text::new();
            t.status(Tone::Good, "ok");
            t.push(format!(
                " {} (instructions, {n} file{}) {}",
                s.label(),
                if n == 1 { "" } else { "s" },
                s.source.origin
            ));
            lines.push(t);
            md_notes(s, &mut lines, &mut warnings);
            checked.push(entry);
            continue;
        }
        // Every schema afresh: discovery may have taken one as checked
        // from the data directory's record (`skill::checked_schemas`).
        let loaded = s
            .manifest
            .check_schemas(&s.source.manifest_path)
            .map_err(|e| e.to_string())
            .and_then(|()| kernel.instantiate(s).map(|_| ()).map_err(|e| e.to_string()));
        if let Err(e) = loaded {
            lines.push(Text::plain(e.clone()));
            problems.extend(Problem::from_error(Some(&s.id.to_string()), &e));
            entry.ok = false;
            checked.push(entry);
            continue;
        }
        let mut t = Text::new();
        t.status(Tone::Good, "ok");
        t.push(format!(
            " {} ({}, {} tool{}) {}",
            s.id,
            s.manifest.language.name(),
            s.manifest.tools.len(),
            if s.manifest.tools.len() == 1 { "" } else { "s" },
            s.source.origin
        ));
        lines.push(t);
        md_notes(s, &mut lines, &mut warnings);
        let grants = kernel.gate().grants(&s.manifest.name);
        for c in &s.manifest.capabilities {
            let v = verdict(&policy, &s.manifest.name, &grants, c);
            let pending = s.identity.pending.contains(&c.text);
            let mut t = Text::plain(format!("    {:<32} ", esc(&c.text)));
            match v.decision {
                Some(d) => {
                    t.status(super::decision_tone(d), d);
                    t.push(format!(" ({})", v.reason));
                }
                None => {
                    t.push(v.reason.as_str());
                }
            }
            if pending {
                t.append(crate::text![
                    " (new since first load: needs `",
                    Command::Grant.bare(),
                    "`)"
                ]);
            }
            lines.push(t);
            entry.capabilities.push(CapabilityCheck {
                capability: c.text.clone(),
                decision: v.decision.map(|d| if d == "DENY" { "deny" } else { d }),
                reason: v.reason,
                pending,
            });
        }
        checked.push(entry);
    }
    if checked.is_empty() && problems.is_empty() {
        return Err(CommandError::NothingToCheck(scope));
    }
    Ok(Check {
        lines,
        checked,
        problems,
        warnings,
    })
}

/// What the Agent Skills format leaves to the operator: fields keel
/// ignores, and `allowed-tools`, which grants nothing.
fn md_notes(s: &LoadedSkill, lines: &mut Vec<Text>, warnings: &mut Vec<Problem>) {
    let Some(i) = &s.source.instructions else {
        return;
    };
    let md = s.source.dir.join("SKILL.md");
    for w in &i.unknown {
        let mut t = Text::plain(format!("    {}:{}: ", md.display(), w.line));
        t.status(Tone::Warn, "warning");
        t.push(format!(": {}", esc(&w.message)));
        lines.push(t);
        warnings.push(Problem {
            skill: Some(s.label()),
            file: Some(md.display().to_string()),
            line: Some(w.line),
            message: w.message.clone(),
        });
    }
    if !i.allowed_tools.is_empty() {
        lines.push(Text::plain(format!(
            "    allowed-tools: {} (shown only: keel grants nothing for it; scripts run through exec under the policy)",
            esc(&i.allowed_tools.join(" "))
        )));
    }
}

impl Render for Check {
    fn text(&self) -> Text {
        let mut s = Text::new();
        for l in &self.lines {
            s.append(l.clone());
            s.push("\n");
        }
        let n = self.problems.len();
        if n > 0 {
            s.status(
                Tone::Bad,
                format!("{n} problem{}", if n == 1 { "" } else { "s" }),
            );
            s.push("\n");
        }
        s
    }

    /// `{checked, problems, warnings, skills}`, fields in that order.
    fn json(&self) -> serde_json::Result<String> {
        #[derive(Serialize)]
        struct Report<'a> {
            checked: usize,
            problems: &'a [Problem],
            warnings: &'a [Problem],
            skills: &'a [Checked],
        }
        serde_json::to_string_pretty(&Report {
            checked: self.checked.len(),
            problems: &self.problems,
            warnings: &self.warnings,
            skills: &self.checked,
        })
    }

    fn problems(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// What the policy says about a declared capability: the decision word
/// (`allow`, `ask`, `DENY`; none for a pattern, decided per target) and
/// why.
struct Verdict {
    decision: Option<&'static str>,
    reason: String,
}

fn verdict(
    policy: &Policy,
    skill: &str,
    grants: &[CapabilityRule],
    rule: &CapabilityRule,
) -> Verdict {
    let pattern = || Verdict {
        decision: None,
        reason: "depends on the target (pattern)".into(),
    };
    let host;
    let target = match &rule.scope {
        // `kv`: no scope at all. `exec:*`: a pattern, decided per target.
        Scope::Any if rule.kind.scope_kind() == crate::capability::ScopeKind::None => Target::None,
        Scope::Path { path, glob: false } => Target::Path(path),
        Scope::Name(n) if !n.contains('*') => Target::Name(n),
        Scope::Host(h) => match h.pattern() {
            HostPattern::Exact(name) => {
                host = Host::Name(name.clone());
                Target::Host {
                    host: &host,
                    port: h.port().unwrap_or(443),
                }
            }
            HostPattern::Ip(ip) => {
                host = Host::Ip(*ip);
                Target::Host {
                    host: &host,
                    port: h.port().unwrap_or(443),
                }
            }
            _ => return pattern(),
        },
        _ => return pattern(),
    };
    let d = policy.decide(skill, grants, rule.kind, &target);
    Verdict {
        decision: Some(match d.decision {
            Decision::Allow => "allow",
            Decision::Ask => "ask",
            Decision::Deny => "DENY",
        }),
        reason: d.reason.to_string(),
    }
}

/// For [`CommandError::NothingToCheck`]: where nothing was found.
pub(super) fn where_(scope: &Option<PathBuf>) -> String {
    scope
        .as_ref()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_split_into_file_line_and_message() {
        assert_eq!(
            split_location("/a:b/main.luau:12: Expected x: got y"),
            Some(("/a:b/main.luau", 12, "Expected x: got y"))
        );
        assert_eq!(split_location("no location: here"), None);
        assert_eq!(split_location(":3: starts with a colon"), None);
        assert_eq!(
            split_location("C:\\x.rhai:4:5: rhai"),
            Some(("C:\\x.rhai", 4, "5: rhai"))
        );
        // A traceback's later lines belong to the problem above them; a
        // SKILL.md's problems are one per line.
        let p = Problem::from_error(
            Some("s@1.0.0"),
            "m.luau:2: bad\n  at m.luau:2\nSKILL.md:3: long",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].message, "bad\n  at m.luau:2");
        assert_eq!(
            (p[1].file.as_deref(), p[1].line),
            (Some("SKILL.md"), Some(3))
        );
        let p = Problem::from_error(None, "cycle: a -> b -> a");
        assert_eq!(
            (p[0].file.as_deref(), p[0].message.as_str()),
            (None, "cycle: a -> b -> a")
        );
    }
}
