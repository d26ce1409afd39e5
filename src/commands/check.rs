//! `keel check [PATH]` and `/check [PATH]`: validate manifests, compile
//! scripts, resolve dependencies, and show each declared capability
//! against the policy. Nothing to check is a failure: a script running
//! `keel check DIR` must not pass on a typo'd folder.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{CommandError, Ctx, Render};
use crate::skill::{LoadedSkill, Origin};
use crate::text::escape_control as esc;

/// What a check found, line by line, in the order it was found.
pub struct Check {
    pub lines: Vec<String>,
    /// Skills checked (loaded and in scope).
    pub checked: usize,
    /// Failures, claimants held back, skills that do not compile.
    pub problems: usize,
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

/// Checks every skill, or those under `scope` (a skill folder, a one-file
/// skill or a folder of skills in the kernel's search path: `keel check`
/// makes a kernel of its own for a path outside it).
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
    let mut problems = 0;
    for f in set.failures.iter().filter(|f| in_scope(&f.origin)) {
        lines.push(crate::text::escape_control_keep_lines(&f.error).into_owned());
        problems += 1;
    }
    for c in set.claimants.iter().filter(|c| in_scope(&c.origin)) {
        lines.push(format!("held back: {}", esc(&c.reason)));
        problems += 1;
    }
    let policy = kernel.gate().policy();
    let mut checked = 0;
    for s in set.skills.values().filter(|s| in_scope(&s.source.origin)) {
        checked += 1;
        if s.is_instructions() {
            let n = s.source.resources.len();
            lines.push(format!(
                "ok {} (instructions, {n} file{}) {}",
                s.label(),
                if n == 1 { "" } else { "s" },
                s.source.origin
            ));
            md_notes(s, &mut lines);
            continue;
        }
        // Every schema afresh: discovery may have taken one as checked
        // from the data directory's record (`skill::checked_schemas`).
        if let Err(e) = s.manifest.check_schemas(&s.source.manifest_path) {
            lines.push(crate::text::escape_control_keep_lines(&e.to_string()).into_owned());
            problems += 1;
            continue;
        }
        match kernel.instantiate(s) {
            Ok(_) => lines.push(format!(
                "ok {} ({}, {} tool{}) {}",
                s.id,
                s.manifest.language.name(),
                s.manifest.tools.len(),
                if s.manifest.tools.len() == 1 { "" } else { "s" },
                s.source.origin
            )),
            Err(e) => {
                lines.push(crate::text::escape_control_keep_lines(&e.to_string()).into_owned());
                problems += 1;
                continue;
            }
        }
        md_notes(s, &mut lines);
        let grants = kernel.gate().grants(&s.manifest.name);
        for c in &s.manifest.capabilities {
            let d = crate::repl::decision_for_rule(&policy, &s.manifest.name, &grants, c);
            let pending = if s.identity.pending.contains(&c.text) {
                " (new since first load: needs `keel grant`)"
            } else {
                ""
            };
            lines.push(format!("    {:<32} {d}{pending}", esc(&c.text)));
        }
    }
    if checked == 0 && problems == 0 {
        return Err(CommandError::NothingToCheck(scope));
    }
    Ok(Check {
        lines,
        checked,
        problems,
    })
}

/// What the Agent Skills format leaves to the operator: fields keel
/// ignores, and `allowed-tools`, which grants nothing.
fn md_notes(s: &LoadedSkill, lines: &mut Vec<String>) {
    let Some(i) = &s.source.instructions else {
        return;
    };
    let md = s.source.dir.join("SKILL.md");
    for w in &i.unknown {
        lines.push(format!(
            "    {}:{}: warning: {}",
            md.display(),
            w.line,
            esc(&w.message)
        ));
    }
    if !i.allowed_tools.is_empty() {
        lines.push(format!(
            "    allowed-tools: {} (shown only: keel grants nothing for it; scripts run through exec under the policy)",
            esc(&i.allowed_tools.join(" "))
        ));
    }
}

impl Render for Check {
    fn text(&self) -> String {
        let mut s: String = self.lines.iter().map(|l| format!("{l}\n")).collect();
        if self.problems > 0 {
            s.push_str(&format!(
                "{} problem{}\n",
                self.problems,
                if self.problems == 1 { "" } else { "s" }
            ));
        }
        s
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&json!({
            "checked": self.checked,
            "problems": self.problems,
            "lines": self.lines,
        }))
    }

    fn problems(&self) -> bool {
        self.problems > 0
    }

    fn coloured(&self) -> bool {
        true
    }
}

/// For [`CommandError::NothingToCheck`]: where nothing was found.
pub(super) fn where_(scope: &Option<PathBuf>) -> String {
    scope
        .as_ref()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}
