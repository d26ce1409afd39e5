//! What the policy says about a declared capability, for `keel check`.
//! The listings shared by the CLI and the console are in
//! [`crate::commands`].

use crate::capability::net::HostPattern;
use crate::capability::{CapabilityRule, Decision, Host, Policy, Scope, Target};

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
