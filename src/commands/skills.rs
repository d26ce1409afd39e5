//! `keel skills` and `/skills`: the loaded skills, with the ones that failed
//! to load (or that load but do not compile) and the reason, and claimants
//! held back. A disabled skill is listed with `disabled` and how to enable
//! it (`"enabled": false` in `--json`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Command, Ctx, Front, Render, Text};
use crate::skill::{SkillFailure, SkillSet};
use crate::text::Tone;
use crate::text::escape_control as esc;

/// The listing: the skill set as loaded, plus what a check found.
pub struct Skills {
    set: Arc<SkillSet>,
    /// Loaded skills found not to compile or load (`Kernel::validate`),
    /// shown as failures instead.
    broken: Vec<SkillFailure>,
    /// Per skill id, its new capabilities that are still blocked.
    blocked: BTreeMap<String, Vec<String>>,
    /// How programs are confined, when a skill may run one.
    sandbox: Option<String>,
    /// Skills disabled in this workspace (`keel skill disable`).
    disabled: BTreeSet<String>,
}

/// Lists the skills. A listing in another terminal shows what the console
/// would: scripts that do not compile or load, with file and line.
pub fn run(ctx: Ctx<'_>) -> Skills {
    let kernel = ctx.kernel;
    let set = kernel.skills();
    let broken = kernel.validate();
    let gate = kernel.gate();
    let blocked = set
        .skills
        .values()
        .map(|s| (s.id.to_string(), gate.pending_blocked(&s.identity)))
        .filter(|(_, b)| !b.is_empty())
        .collect();
    // Say how programs are confined wherever a skill may run one.
    let runs_programs = set.skills.values().any(|sk| {
        sk.manifest
            .capabilities
            .iter()
            .any(|c| c.kind == crate::capability::CapabilityKind::Exec)
    });
    let disabled = kernel.disabled_skills().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read which skills are disabled");
        BTreeSet::new()
    });
    Skills {
        sandbox: runs_programs.then(crate::sandbox::status),
        disabled,
        set,
        broken,
        blocked,
    }
}

impl Render for Skills {
    fn text(&self) -> Text {
        let mut s = listing(
            &self.set,
            &self.broken,
            &|sk| {
                self.blocked
                    .get(&sk.id.to_string())
                    .cloned()
                    .unwrap_or_default()
            },
            &self.disabled,
        );
        if let Some(status) = &self.sandbox {
            let _ = writeln!(s, "{status}");
        }
        s
    }

    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&skills_json(&self.set, &self.broken, &self.disabled))
    }

    fn problems(&self) -> bool {
        !(self.set.failures.is_empty() && self.broken.is_empty() && self.set.claimants.is_empty())
    }
}

/// Skills and failures; `broken` lists loaded skills found not to compile
/// or load (`Kernel::validate`), shown as failures instead.
/// `blocked` says which of a skill's new capabilities are still blocked
/// (`Gate::pending_blocked`): only those are marked "not granted yet".
pub fn format_skills(
    set: &SkillSet,
    broken: &[SkillFailure],
    blocked: &dyn Fn(&crate::skill::SkillIdentity) -> Vec<String>,
) -> String {
    listing(set, broken, &|sk| blocked(&sk.identity), &BTreeSet::new()).render(Front::Cli, false)
}

/// After a disabled skill's line: that it is, and how to enable it.
fn disabled_mark(s: &mut Text, disabled: &BTreeSet<String>, name: &str) {
    if disabled.contains(name) {
        s.push("  ");
        s.status(Tone::Warn, "disabled");
        s.push(": no tools offered (`");
        s.command(Command::Enable.with(esc(name).into_owned()));
        s.push("`)");
    }
}

fn listing(
    set: &SkillSet,
    broken: &[SkillFailure],
    blocked: &dyn Fn(&crate::skill::LoadedSkill) -> Vec<String>,
    disabled: &BTreeSet<String>,
) -> Text {
    let mut s = Text::new();
    if set.skills.is_empty() {
        s.push("no skills loaded\n");
    }
    let is_broken = |id: &str| broken.iter().any(|f| f.skill.as_deref() == Some(id));
    for sk in set
        .skills
        .values()
        .filter(|sk| !is_broken(&sk.id.to_string()))
    {
        let m = &sk.manifest;
        let allowed = sk
            .source
            .instructions
            .as_ref()
            .filter(|i| !i.allowed_tools.is_empty())
            .map(|i| {
                format!(
                    "  (allowed-tools, shown only, grants nothing: {})",
                    esc(&i.allowed_tools.join(" "))
                )
            })
            .unwrap_or_default();
        if sk.is_instructions() {
            let n = sk.source.resources.len();
            let _ = write!(
                s,
                "{:<24} {:<6} {:>2} file{} {}{allowed}",
                esc(&sk.label()),
                "md",
                n,
                if n == 1 { " " } else { "s" },
                sk.source.origin,
            );
            disabled_mark(&mut s, disabled, &m.name);
            s.push("\n");
            continue;
        }
        let _ = write!(
            s,
            "{:<24} {:<6} {:>2} tool{} {}",
            sk.id.to_string(),
            m.language.name(),
            m.tools.len(),
            if m.tools.len() == 1 { " " } else { "s" },
            sk.source.origin,
        );
        let b = blocked(sk);
        if !b.is_empty() {
            s.push("  (");
            s.status(Tone::Warn, "not granted yet");
            let _ = write!(s, ": {})", b.join(", "));
        }
        let _ = write!(s, "{allowed}");
        disabled_mark(&mut s, disabled, &m.name);
        s.push("\n");
    }
    for c in &set.claimants {
        s.status(Tone::Warn, "CLAIMANT");
        let _ = writeln!(
            s,
            " {} from {}: {}",
            esc(&c.skill),
            esc(&c.origin.to_string()),
            esc(&c.reason)
        );
    }
    for f in set.failures.iter().chain(broken) {
        // A SKILL.md's problems are one per line: the listing shows the
        // first, `keel check` all of them.
        let error = match f.error.split_once('\n') {
            Some((first, rest)) if first.contains("SKILL.md:") => {
                let more = rest.lines().count();
                crate::text![
                    format!(
                        "{first} (and {more} more problem{}: ",
                        if more == 1 { "" } else { "s" }
                    ),
                    Command::Check.bare(),
                    ")"
                ]
            }
            _ => Text::plain(f.error.clone()),
        };
        // An error can span lines (a traceback); a line inside it cannot
        // pretend to be something else (rendering escapes it).
        s.status(Tone::Bad, "FAILED");
        let _ = write!(
            s,
            " {}: ",
            esc(&f.skill.clone().unwrap_or_else(|| f.origin.to_string())),
        );
        s.append(error);
        s.push("\n");
    }
    s
}

/// `keel skills --json`: skills (instructions skills with their format's
/// fields), failures and claimants.
fn skills_json(set: &SkillSet, broken: &[SkillFailure], disabled: &BTreeSet<String>) -> Value {
    let is_broken = |id: &str| broken.iter().any(|f| f.skill.as_deref() == Some(id));
    let skills: Vec<Value> = set
        .skills
        .values()
        .filter(|s| !is_broken(&s.id.to_string()))
        .map(|s| {
            let m = &s.manifest;
            let md = s.source.instructions.as_ref();
            if s.is_instructions() {
                return json!({
                    "name": m.name,
                    "kind": s.source.kind,
                    "description": s.description(),
                    "origin": s.source.origin,
                    "license": md.and_then(|i| i.license.clone()),
                    "compatibility": md.and_then(|i| i.compatibility.clone()),
                    "metadata": md.map(|i| i.metadata.clone()).unwrap_or_default(),
                    "allowed_tools": md.map(|i| i.allowed_tools.clone()).unwrap_or_default(),
                    "files": s.source.resources,
                    "tools": Vec::<String>::new(),
                    "enabled": !disabled.contains(&m.name),
                });
            }
            json!({
                "name": m.name,
                "kind": s.source.kind,
                "version": m.version.to_string(),
                "description": m.description,
                "language": m.language,
                "origin": s.source.origin,
                "tools": m.tools.iter().map(|t| format!("{}.{}", m.name, t.name)).collect::<Vec<_>>(),
                "dependencies": s.deps.iter().map(|(k, v)| (k.clone(), v.id.version.to_string())).collect::<BTreeMap<_, _>>(),
                "capabilities": m.capabilities.iter().map(|c| c.text.clone()).collect::<Vec<_>>(),
                "pending_capabilities": s.identity.pending,
                "allowed_tools": md.map(|i| i.allowed_tools.clone()).unwrap_or_default(),
                "enabled": !disabled.contains(&m.name),
            })
        })
        .collect();
    let failures: Vec<&SkillFailure> = set.failures.iter().chain(broken).collect();
    json!({ "skills": skills, "failures": failures, "claimants": set.claimants })
}
