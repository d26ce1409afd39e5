//! The gate: the one place where a host call's effect is checked.
//!
//! A call passes only if the skill *declared* a capability covering the
//! target, that declaration was approved (it was there when the skill was
//! first seen, or the operator granted it since), and the policy (with the
//! operator's grants) decides `allow`. `ask` goes to an [`Approver`] if one
//! is attached; with nobody to answer it is a denial that says how to grant.
//! Every decision — allowed, asked, denied — is written to the audit log.
//! Messages name the capability and target, never a secret's value.
//!
//! Before any of that, file access to keel's own files (the config in use,
//! the data dir, every skill folder) is refused whatever the declaration,
//! policy or grants say (see [`protected`](super::protected)).
//! An allowed check returns the declaration and the rule that allowed it,
//! so file access can be rooted at the narrower of the two.
//!
//! What the gate guarantees beyond the policy's words:
//! - **Non-public addresses are explicit.** A loopback, link-local, private,
//!   shared or unique-local address is granted only by a declaration *and*
//!   a policy rule or grant that name it (see [`super::net::rule_grants`]);
//!   the default never decides it.
//! - **An approval grants what it showed.** The request carries the exact
//!   rule for the target ([`super::exact_rule`]), which is what `always`
//!   stores — never the manifest's wider declaration; a target no rule can
//!   name alone (a name with `*`) can be approved once, never for good.
//! - **Grants are per workspace.** Only grants made in this workspace are
//!   consulted; one made elsewhere (or before grants were per workspace)
//!   does not apply here.
//! - **A skill is its name and origin.** A copy from an origin not accepted
//!   for the name never reaches the gate: it is not loaded (see
//!   [`crate::skill::SkillSet::build`]).

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::protected::{ControlPlaneRefusal, ProtectedPaths};
use super::{
    CapabilityKind, CapabilityRule, Decision, DecisionBasis, Policy, ScopeBase, Target, exact_rule,
};
use crate::skill::SkillIdentity;
use crate::store::{AuditEntry, Store};

/// Why the gate refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// The skill's manifest does not declare a capability covering the target.
    #[error(
        "skill `{skill}` did not declare `{capability}` for `{target}`{note}; add it to [capabilities] in its skill.toml (e.g. \"{capability}\" = [\"{example}\"])"
    )]
    NotDeclared {
        skill: String,
        capability: CapabilityKind,
        target: String,
        example: String,
        /// Why a declaration that looks like it covers the target does not
        /// (a non-public address), or empty.
        note: String,
    },
    /// The declaration is newer than what the operator approved.
    #[error(
        "skill `{skill}` {version} declares `{rule}`, which it did not have when first loaded, so it is not granted yet; grant it with `keel grant {skill} {rule}` or allow it for this skill in keel.toml ([policy.skills.{skill}] allow = [\"{rule}\"])"
    )]
    NotApproved {
        skill: String,
        version: String,
        rule: String,
    },
    /// The policy denies it.
    #[error("{} is denied for skill `{skill}` by {reason}; {hint}", what(*capability, target))]
    Denied {
        skill: String,
        capability: CapabilityKind,
        target: String,
        reason: String,
        /// How to allow it, if the operator wants to.
        hint: String,
    },
    /// The policy asks, and nobody answered yes.
    #[error(
        "`{capability}` on `{target}` needs approval for skill `{skill}` ({reason}) and {why}; {hint}"
    )]
    AskUnanswered {
        skill: String,
        capability: CapabilityKind,
        target: String,
        reason: String,
        why: &'static str,
        /// How to grant it: the exact rule, and the declaration.
        hint: String,
    },
    /// The target is keel's own configuration, data or a skill folder.
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneRefusal),
}

/// What let an effect through: the declaration that covers it, and the
/// policy rule or grant that allowed it (none when the default did). File
/// access is rooted at the narrower of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub declared: CapabilityRule,
    pub by: Option<CapabilityRule>,
}

/// How to allow an effect for good: exactly this target, and (named as
/// the wider choice it is) everything the skill declared.
fn grant_hint(skill: &str, exact: Option<&str>, declared: &str) -> String {
    match exact {
        Some(e) if e != declared => format!(
            "grant exactly this with `keel grant {skill} {e}`, or all the skill declares with `keel grant {skill} {declared}` (or add either to [policy] allow in keel.toml)"
        ),
        _ => format!(
            "grant it with `keel grant {skill} {declared}` or add \"{declared}\" to [policy] allow in keel.toml"
        ),
    }
}

/// For a non-public address: why `*` or a host name did not cover it.
fn non_public_note(target: &Target<'_>) -> String {
    match target {
        Target::Host {
            host: super::Host::Ip(ip),
            ..
        } => super::net::non_public_kind(*ip)
            .map(|kind| {
                format!(
                    " ({ip} is a non-public {kind} address: `*` and host names never cover one; name it, e.g. net.http:{target}, in the manifest and in the policy)"
                )
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// "`fs.read` on `/x`", or just "`kv`" for capabilities without a scope.
fn what(capability: CapabilityKind, target: &str) -> String {
    if target.is_empty() {
        format!("`{capability}`")
    } else {
        format!("`{capability}` on `{target}`")
    }
}

/// A request for a person to approve one effect.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    pub skill: String,
    pub tool: String,
    pub capability: CapabilityKind,
    pub target: String,
    /// The rule `always` would grant: exactly this target
    /// ([`exact_rule`](super::exact_rule)), never the manifest's wider
    /// declaration. `None` when no rule names this target alone; such a
    /// request can be approved once, not for good.
    pub rule: Option<String>,
}

/// Something that can answer `ask` decisions: the agent's runs (which park
/// in `waiting_permission` and ask whichever front end is attached), or an
/// embedder's own hook.
pub trait Approver: Send + Sync {
    /// Returns whether the effect is approved. Blocks until answered; the
    /// approver owns its own timeout (no answer in time is a no). The time
    /// spent here does not count against the tool call's deadline.
    fn approve(&self, request: &ApprovalRequest) -> bool;
}

/// The capability gate. One per kernel.
pub struct Gate {
    policy: ArcSwap<Policy>,
    store: Arc<Store>,
    workspace: std::path::PathBuf,
    approver: ArcSwap<Option<Arc<dyn Approver>>>,
    /// keel's own files: refused to every fs capability.
    protected: ProtectedPaths,
}

impl Gate {
    pub fn new(policy: Policy, store: Arc<Store>, workspace: std::path::PathBuf) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            store,
            workspace,
            approver: ArcSwap::from_pointee(None),
            protected: ProtectedPaths::default(),
        }
    }

    /// Sets the paths no fs capability reaches (see
    /// [`protected`](super::protected)).
    pub fn with_protected(mut self, protected: ProtectedPaths) -> Self {
        self.protected = protected;
        self
    }

    pub fn protected(&self) -> &ProtectedPaths {
        &self.protected
    }

    /// Replaces the policy (config reload).
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Attaches (or removes) the approver that answers `ask`.
    pub fn set_approver(&self, approver: Option<Arc<dyn Approver>>) {
        self.approver.store(Arc::new(approver));
    }

    fn scope_base(&self) -> ScopeBase<'_> {
        ScopeBase {
            workspace: &self.workspace,
        }
    }

    /// The operator's grants for a skill in this workspace, parsed. Grants
    /// made in another workspace (or before grants were per workspace) do
    /// not apply here. A grant that no longer parses (written by another
    /// keel version) is skipped.
    pub fn grants(&self, skill: &str) -> Vec<CapabilityRule> {
        let base = self.scope_base();
        self.store
            .grants(&self.workspace, Some(skill))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| CapabilityRule::parse(&g.capability, &base).ok())
            .collect()
    }

    /// Checks one effect. Returns the declared rule that covers the target
    /// and the policy rule that allowed it (file operations are rooted at
    /// the narrower of the two).
    pub fn check(
        &self,
        skill: &SkillIdentity,
        tool: &str,
        kind: CapabilityKind,
        target: &Target<'_>,
    ) -> Result<Allowed, GateError> {
        self.check_as(skill, tool, kind, target, None)
    }

    /// [`check`](Self::check), with `ask` answered by `approver` (the run the
    /// call belongs to) instead of the gate's own.
    pub fn check_as(
        &self,
        skill: &SkillIdentity,
        tool: &str,
        kind: CapabilityKind,
        target: &Target<'_>,
        approver: Option<&dyn Approver>,
    ) -> Result<Allowed, GateError> {
        let target_text = target.to_string();
        let result = self.decide(skill, tool, kind, target, &target_text, approver);
        let (decision, reason) = match &result {
            Ok((_, reason)) => ("allow", reason.clone()),
            Err(e @ GateError::AskUnanswered { .. }) => ("ask", e.to_string()),
            Err(e) => ("deny", e.to_string()),
        };
        // An audit failure must not turn a denial into an allowance, nor
        // block an allowed effect; it is logged instead.
        if let Err(e) = self.store.audit(&AuditEntry {
            skill: &skill.name,
            version: &skill.version.to_string(),
            tool,
            capability: kind.name(),
            target: &target_text,
            decision,
            reason: &reason,
        }) {
            tracing::warn!(skill = %skill.name, error = %e, "could not write the audit log");
        }
        result.map(|(rule, _)| rule)
    }

    fn decide(
        &self,
        skill: &SkillIdentity,
        tool: &str,
        kind: CapabilityKind,
        target: &Target<'_>,
        target_text: &str,
        approver: Option<&dyn Approver>,
    ) -> Result<(Allowed, String), GateError> {
        if let Some(refusal) = self.protected.refuse(kind, target) {
            return Err(refusal.into());
        }
        // Prefer a covering declaration the skill already had when first
        // seen: a newer, broader one must not shadow it.
        let is_pending = |r: &&CapabilityRule| skill.pending.iter().any(|p| p == &r.text);
        let covering = || skill.declared.iter().filter(|r| r.covers(kind, target));
        let found = covering()
            .find(|r| !is_pending(r))
            .or_else(|| covering().next());
        let Some(declared) = found else {
            return Err(GateError::NotDeclared {
                skill: skill.name.clone(),
                capability: kind,
                target: target_text.to_string(),
                example: self.suggest_scope(kind, target),
                note: non_public_note(target),
            });
        };
        let grants = self.grants(&skill.name);
        let policy = self.policy.load();
        // A capability declared after the skill was first seen needs the
        // operator's say-so for this skill: a grant, or an allow rule in its
        // own policy section. The default and global rules were written
        // before the skill asked, so they do not count.
        if is_pending(&declared)
            && !grants.iter().any(|g| g.covers(kind, target))
            && !policy
                .skills
                .get(&skill.name)
                .is_some_and(|set| set.allow.iter().any(|r| r.covers(kind, target)))
        {
            return Err(GateError::NotApproved {
                skill: skill.name.clone(),
                version: skill.version.to_string(),
                rule: declared.text.clone(),
            });
        }
        let d = policy.decide(&skill.name, &grants, kind, target);
        // What a grant or an allow rule for exactly this target looks like.
        let exact = exact_rule(kind, target, &self.scope_base()).map(|r| r.text);
        let grant_hint = grant_hint(&skill.name, exact.as_deref(), &declared.text);
        match d.decision {
            Decision::Allow => Ok((
                Allowed {
                    declared: declared.clone(),
                    by: d.rule,
                },
                d.reason,
            )),
            Decision::Deny => {
                let hint = match d.basis {
                    DecisionBasis::Default => grant_hint,
                    DecisionBasis::NonPublicAddress => {
                        let rule = exact.as_deref().unwrap_or(&declared.text);
                        format!(
                            "if this skill should reach it, name the address in the policy: add \"{rule}\" to [policy] allow in keel.toml or run `keel grant {} {rule}`",
                            skill.name
                        )
                    }
                    _ => "a deny rule wins over allow rules and grants; change it in keel.toml to allow this".into(),
                };
                Err(GateError::Denied {
                    skill: skill.name.clone(),
                    capability: kind,
                    target: target_text.to_string(),
                    reason: d.reason,
                    hint,
                })
            }
            Decision::Ask => {
                let own = self.approver.load();
                let why = match approver.or(own.as_ref().as_deref()) {
                    Some(a) => {
                        let req = ApprovalRequest {
                            skill: skill.name.clone(),
                            tool: tool.to_string(),
                            capability: kind,
                            target: target_text.to_string(),
                            rule: exact,
                        };
                        if a.approve(&req) {
                            return Ok((
                                Allowed {
                                    declared: declared.clone(),
                                    by: d.rule,
                                },
                                format!("{} (approved)", d.reason),
                            ));
                        }
                        "the request was not approved"
                    }
                    None => "nobody can answer here",
                };
                Err(GateError::AskUnanswered {
                    skill: skill.name.clone(),
                    capability: kind,
                    target: target_text.to_string(),
                    reason: d.reason,
                    why,
                    hint: grant_hint,
                })
            }
        }
    }

    fn suggest_scope(&self, kind: CapabilityKind, target: &Target<'_>) -> String {
        match target {
            Target::Path(p) => match p.strip_prefix(&self.workspace) {
                Ok(rel) => format!("./{}", rel.display()),
                Err(_) => p.display().to_string(),
            },
            Target::None => kind.name().to_string(),
            other => other.to_string(),
        }
    }
}
