//! Plain-text renderings shared by the console and the CLI.

use std::fmt::Write;

use crate::capability::net::HostPattern;
use crate::capability::{CapabilityRule, Decision, Host, Policy, Scope, Target};
use crate::skill::{SkillFailure, SkillSet};
use crate::store::{AuditRecord, GrantRecord};
use crate::text::escape_control as esc;

/// Skills and failures; `broken` lists loaded skills found not to compile
/// or load (`Kernel::validate`), shown as failures instead.
/// `blocked` says which of a skill's new capabilities are still blocked
/// (`Gate::pending_blocked`): only those are marked "not granted yet".
pub fn format_skills(
    set: &SkillSet,
    broken: &[SkillFailure],
    blocked: &dyn Fn(&crate::skill::SkillIdentity) -> Vec<String>,
) -> String {
    let mut s = String::new();
    if set.skills.is_empty() {
        s.push_str("no skills loaded\n");
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
            let _ = writeln!(
                s,
                "{:<24} {:<6} {:>2} file{} {}{allowed}",
                esc(&sk.label()),
                "md",
                n,
                if n == 1 { " " } else { "s" },
                sk.source.origin,
            );
            continue;
        }
        let _ = writeln!(
            s,
            "{:<24} {:<6} {:>2} tool{} {}{}{allowed}",
            sk.id.to_string(),
            m.language.name(),
            m.tools.len(),
            if m.tools.len() == 1 { " " } else { "s" },
            sk.source.origin,
            match blocked(&sk.identity) {
                b if b.is_empty() => String::new(),
                b => format!("  (not granted yet: {})", b.join(", ")),
            }
        );
    }
    for c in &set.claimants {
        let _ = writeln!(
            s,
            "CLAIMANT {} from {}: {}",
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
                format!(
                    "{first} (and {more} more problem{}: keel check)",
                    if more == 1 { "" } else { "s" }
                )
            }
            _ => f.error.clone(),
        };
        // An error can span lines (a traceback); a line inside it cannot
        // pretend to be something else.
        let _ = writeln!(
            s,
            "FAILED {}: {}",
            esc(&f.skill.clone().unwrap_or_else(|| f.origin.to_string())),
            crate::text::escape_control_keep_lines(&error)
        );
    }
    s
}

pub fn format_tools(set: &SkillSet) -> String {
    let mut s = String::new();
    if set.tools.is_empty() {
        s.push_str("no tools\n");
    }
    for (name, e) in &set.tools {
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

/// A tool's parameters as `text: string, limit?: integer`, from its JSON
/// Schema (`?` marks the ones not required).
pub fn param_signature(schema: &serde_json::Value) -> String {
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
                Some(serde_json::Value::String(t)) => t.clone(),
                Some(serde_json::Value::Array(ts)) => ts
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

/// Grants grouped by workspace (a grant applies only in its own); those
/// from before grants were per workspace are listed last, with what to do.
pub fn format_grants(grants: &[GrantRecord]) -> String {
    if grants.is_empty() {
        return "no grants (grant with `keel grant SKILL CAPABILITY`)\n".into();
    }
    let mut s = String::new();
    let mut current: Option<&str> = None;
    let (legacy, scoped): (Vec<_>, Vec<_>) = grants
        .iter()
        .partition(|g| g.workspace == crate::store::LEGACY_WORKSPACE);
    for g in &scoped {
        if current != Some(g.workspace.as_str()) {
            current = Some(&g.workspace);
            let _ = writeln!(s, "in workspace {}:", esc(&g.workspace));
        }
        let _ = writeln!(s, "  {:<20} {}", esc(&g.skill), esc(&g.capability));
    }
    if !legacy.is_empty() {
        let _ = writeln!(
            s,
            "from before grants were per workspace (they apply nowhere; grant again with `keel grant` in the workspace where each is meant, then `keel revoke` these):"
        );
        for g in &legacy {
            let _ = writeln!(s, "  {:<20} {}", esc(&g.skill), esc(&g.capability));
        }
    }
    s
}

/// `2026-11-23T01:50:25Z` from milliseconds since the epoch (UTC).
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn format_audit(log: &[AuditRecord]) -> String {
    if log.is_empty() {
        return "the audit log is empty\n".into();
    }
    let mut s = String::new();
    for r in log {
        let _ = writeln!(
            s,
            "{} {:<5} {}@{} {} {} {} — {}",
            format_time(r.at_ms),
            esc(&r.decision),
            esc(&r.skill),
            esc(&r.version),
            esc(&r.tool),
            esc(&r.capability),
            esc(&r.target),
            esc(&r.reason)
        );
    }
    s
}

/// What the policy says about a declared capability, for `keel check`.
pub fn decision_for_rule(
    policy: &Policy,
    skill: &str,
    grants: &[CapabilityRule],
    rule: &CapabilityRule,
) -> String {
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
            _ => return "depends on the target (pattern)".into(),
        },
        _ => return "depends on the target (pattern)".into(),
    };
    let d = policy.decide(skill, grants, rule.kind, &target);
    let word = match d.decision {
        Decision::Allow => "allow",
        Decision::Ask => "ask",
        Decision::Deny => "DENY",
    };
    format!("{word} ({})", d.reason)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_render_in_utc() {
        assert_eq!(super::format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::format_time(1_795_399_624_711),
            "2026-11-23T02:07:04Z"
        );
        assert_eq!(super::format_time(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
