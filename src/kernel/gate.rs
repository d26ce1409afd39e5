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
//! policy or grants say (see [`protected`](crate::capability::protected)).
//! An allowed check returns the declaration and the rule that allowed it,
//! so file access can be rooted at the narrower of the two.
//!
//! What the gate guarantees beyond the policy's words:
//! - **Non-public addresses are explicit.** A loopback, link-local, private,
//!   shared or unique-local address is granted only by a declaration *and*
//!   a policy rule or grant that name it (see [`net::rule_grants`]);
//!   the default never decides it.
//! - **An approval grants what it showed.** The request carries the exact
//!   rule for the target ([`exact_rule`]), which is what `always`
//!   stores — never the manifest's wider declaration; a target no rule can
//!   name alone (a name with `*`) can be approved once, never for good.
//! - **Grants are per workspace.** Only grants made in this workspace are
//!   consulted; one made elsewhere (or before grants were per workspace)
//!   does not apply here.
//! - **A skill is its name and origin.** A copy from an origin not accepted
//!   for the name never reaches the gate: it is not loaded (see
//!   [`crate::skill::SkillSet::build`]).
//!
//! # One place
//!
//! Everything a host function needs decided goes through a method here, so
//! no host function re-derives policy logic of its own:
//! - [`Gate::check_as`] — one effect on one target;
//! - [`Gate::check_connect`] — may this call connect to this host, and to
//!   which of the addresses its name resolves to (each hop of a redirect
//!   chain asks again);
//! - [`Gate::child_env`] — which variables a program the skill runs may see;
//! - [`Gate::sandbox_roots`] — what the OS sandbox of such a program allows
//!   outright (folders to read and write, programs to run, folders to keep
//!   out).
//!
//! The decisions themselves are pure ([`crate::capability`]); the gate adds
//! what needs state: the current policy, the operator's grants, the audit
//! log and the approver. It reaches storage only through two small traits,
//! [`GrantSource`] and [`AuditSink`], which [`crate::store::Store`]
//! implements; tests use in-memory ones.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::capability::net::{self, Host, HostRule, NetError};
use crate::capability::protected::{ControlPlaneRefusal, ProtectedPaths};
use crate::capability::{
    CapabilityKind, CapabilityRule, Decision, DecisionBasis, Policy, Scope, ScopeBase, Target,
    exact_rule,
};
use crate::skill::SkillIdentity;

/// An error from the storage behind a [`GrantSource`] or [`AuditSink`].
pub type StorageError = Box<dyn std::error::Error + Send + Sync>;

/// Where the operator's grants come from.
pub trait GrantSource: Send + Sync {
    /// The grants (capability rules as written, e.g. `exec:ls`) made for
    /// `skill` in `workspace`. Grants made in another workspace are not
    /// returned.
    fn grants_for(&self, workspace: &Path, skill: &str) -> Result<Vec<String>, StorageError>;
}

/// What the gate decided, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditDecision {
    Allow,
    /// The policy asked; how it ended.
    Ask(AskOutcome),
    Deny,
}

impl AuditDecision {
    /// The word in the audit log: `allow`, `deny`, or `ask:` and the
    /// outcome (`ask:approved`, `ask:denied`, `ask:expired`,
    /// `ask:cancelled`, `ask:nobody`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Ask(AskOutcome::Approved) => "ask:approved",
            Self::Ask(AskOutcome::Denied) => "ask:denied",
            Self::Ask(AskOutcome::Expired) => "ask:expired",
            Self::Ask(AskOutcome::Cancelled) => "ask:cancelled",
            Self::Ask(AskOutcome::Nobody) => "ask:nobody",
        }
    }
}

/// How an `ask` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskOutcome {
    /// Someone said yes (once or always).
    Approved,
    /// Someone said no.
    Denied,
    /// Nobody answered in time (`[agent] approval_timeout_seconds`).
    Expired,
    /// The run was cancelled while it waited.
    Cancelled,
    /// No one could be asked (no approver: `keel call`, a pipe).
    Nobody,
}

impl AskOutcome {
    /// Why the effect did not happen, for the error (never `Approved`).
    fn why(self) -> &'static str {
        match self {
            Self::Approved => "it was approved",
            Self::Denied => "the request was denied",
            Self::Expired => "nobody answered in time",
            Self::Cancelled => "the run was cancelled while it waited",
            Self::Nobody => "nobody can answer here",
        }
    }
}

/// One decision, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct AuditEvent<'a> {
    pub skill: &'a str,
    pub version: &'a str,
    pub tool: &'a str,
    pub capability: CapabilityKind,
    pub target: &'a str,
    pub decision: AuditDecision,
    pub reason: &'a str,
}

/// Where the gate writes every decision.
pub trait AuditSink: Send + Sync {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), StorageError>;
}

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
        /// How the ask ended (never approved).
        outcome: AskOutcome,
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
    // A wildcard declaration (`exec:*`, `net.http:*`) is never offered: it
    // grants far more than the effect at hand.
    let wide = !declared.contains('*');
    match exact {
        Some(e) if e != declared && wide => format!(
            "grant exactly this with `keel grant {skill} {e}`, or all the skill declares with `keel grant {skill} {declared}` (or add either to [policy] allow in keel.toml)"
        ),
        Some(e) => format!(
            "grant exactly this with `keel grant {skill} {e}` or add \"{e}\" to [policy] allow in keel.toml"
        ),
        None if wide => format!(
            "grant it with `keel grant {skill} {declared}` or add \"{declared}\" to [policy] allow in keel.toml"
        ),
        None => format!(
            "no single rule names this target: approve it once when asked (policy `ask`), or add a rule for the folder, host or program it needs to [policy.skills.{skill}] allow in keel.toml"
        ),
    }
}

/// Whether the operator's own word for `skill` — a grant, or an allow rule
/// in the skill's own policy section (not the default nor the global rules,
/// written before the skill asked) — passes `says`. What a capability
/// declared since the skill was first seen needs: checked per effect by
/// the gate (`covers` the target) and per rule by listings (`includes`).
fn operator_says_so(
    grants: &[CapabilityRule],
    policy: &Policy,
    skill: &str,
    says: impl Fn(&CapabilityRule) -> bool,
) -> bool {
    grants.iter().any(&says)
        || policy
            .skills
            .get(skill)
            .is_some_and(|set| set.allow.iter().any(&says))
}

/// For a non-public address: why `*` or a host name did not cover it.
fn non_public_note(target: &Target<'_>) -> String {
    match target {
        Target::Host {
            host: Host::Ip(ip),
            ..
        } => net::non_public_kind(*ip)
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
    /// ([`exact_rule`]), never the manifest's wider
    /// declaration. `None` when no rule names this target alone; such a
    /// request can be approved once, not for good.
    pub rule: Option<String>,
}

/// Something that can answer `ask` decisions: the agent's runs (which park
/// in `waiting_permission` and ask whichever front end is attached), or an
/// embedder's own hook.
pub trait Approver: Send + Sync {
    /// How the request ended: only [`AskOutcome::Approved`] lets the effect
    /// happen. Blocks until answered; the approver owns its own timeout (no
    /// answer in time is [`AskOutcome::Expired`]). The time spent here does
    /// not count against the tool call's deadline.
    fn approve(&self, request: &ApprovalRequest) -> AskOutcome;
}

/// The capability gate. One per kernel.
pub struct Gate {
    policy: ArcSwap<Policy>,
    grant_source: Arc<dyn GrantSource>,
    audit: Arc<dyn AuditSink>,
    workspace: PathBuf,
    approver: ArcSwap<Option<Arc<dyn Approver>>>,
    /// keel's own files: refused to every fs capability. Swapped whole
    /// when a configuration reload adds skill folders.
    protected: ArcSwap<ProtectedPaths>,
}

impl Gate {
    /// A gate deciding by `policy` for `workspace`, reading grants from
    /// `grants` and writing decisions to `audit` (both usually the store).
    pub fn new(
        policy: Policy,
        grants: Arc<dyn GrantSource>,
        audit: Arc<dyn AuditSink>,
        workspace: PathBuf,
    ) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            grant_source: grants,
            audit,
            workspace,
            approver: ArcSwap::from_pointee(None),
            protected: ArcSwap::from_pointee(ProtectedPaths::default()),
        }
    }

    /// Sets the paths no fs capability reaches (see
    /// [`protected`](crate::capability::protected)).
    pub fn with_protected(self, protected: ProtectedPaths) -> Self {
        self.protected.store(Arc::new(protected));
        self
    }

    /// Replaces the protected paths (a reload that adds skill folders).
    pub fn set_protected(&self, protected: ProtectedPaths) {
        self.protected.store(Arc::new(protected));
    }

    pub fn protected(&self) -> Arc<ProtectedPaths> {
        self.protected.load_full()
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
        crate::paths::scope_base(&self.workspace)
    }

    /// The operator's grants for a skill in this workspace, parsed. Grants
    /// made in another workspace (or before grants were per workspace) do
    /// not apply here. A grant that no longer parses (written by another
    /// keel version) is skipped.
    pub fn grants(&self, skill: &str) -> Vec<CapabilityRule> {
        let base = self.scope_base();
        let written = match self.grant_source.grants_for(&self.workspace, skill) {
            Ok(g) => g,
            Err(e) => {
                // Failing closed: no grants is the narrower reading.
                tracing::warn!(skill, error = %e, "could not read the operator's grants");
                Vec::new()
            }
        };
        written
            .iter()
            .filter_map(|g| CapabilityRule::parse(g, &base).ok())
            .collect()
    }

    /// The capabilities `skill` declared since it was first seen that are
    /// still blocked: neither a grant for it here nor its own policy
    /// section's allow rules include them (see
    /// [`CapabilityRule::includes`]). What listings mark "not granted yet".
    pub fn pending_blocked(&self, skill: &SkillIdentity) -> Vec<String> {
        if skill.pending.is_empty() {
            return Vec::new();
        }
        let grants = self.grants(&skill.name);
        let policy = self.policy.load();
        skill
            .pending
            .iter()
            .filter(|text| {
                let Some(rule) = skill.declared.iter().find(|r| &r.text == *text) else {
                    return true;
                };
                !operator_says_so(&grants, &policy, &skill.name, |a| a.includes(rule))
            })
            .cloned()
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
            Ok((_, reason, decision)) => (*decision, reason.clone()),
            Err(e @ GateError::AskUnanswered { outcome, .. }) => {
                (AuditDecision::Ask(*outcome), e.to_string())
            }
            Err(e) => (AuditDecision::Deny, e.to_string()),
        };
        // An audit failure must not turn a denial into an allowance, nor
        // block an allowed effect; it is logged instead.
        if let Err(e) = self.audit.record(&AuditEvent {
            skill: &skill.name,
            version: &skill.version.to_string(),
            tool,
            capability: kind,
            target: &target_text,
            decision,
            reason: &reason,
        }) {
            tracing::warn!(skill = %skill.name, error = %e, "could not write the audit log");
        }
        result.map(|(rule, _, _)| rule)
    }

    fn decide(
        &self,
        skill: &SkillIdentity,
        tool: &str,
        kind: CapabilityKind,
        target: &Target<'_>,
        target_text: &str,
        approver: Option<&dyn Approver>,
    ) -> Result<(Allowed, String, AuditDecision), GateError> {
        if let Some(refusal) = self.protected.load().refuse(kind, target) {
            return Err(refusal.into());
        }
        // Prefer a covering declaration the skill already had when first
        // seen: a newer, broader one must not shadow it.
        let is_pending = |r: &&CapabilityRule| skill.pending.iter().any(|p| p == &r.text);
        // A built-in's declaration is keel's own: its `net.http:*` reaches a
        // local address, and the policy alone (which must name the address)
        // decides. Anyone else's manifest must name the address itself.
        let builtin = matches!(skill.origin, crate::skill::Origin::Builtin(_));
        let covering = || {
            skill.declared.iter().filter(move |r| {
                if builtin {
                    r.reaches(kind, target)
                } else {
                    r.covers(kind, target)
                }
            })
        };
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
            && !operator_says_so(&grants, &policy, &skill.name, |r| r.covers(kind, target))
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
                AuditDecision::Allow,
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
                let outcome = match approver.or(own.as_ref().as_deref()) {
                    Some(a) => a.approve(&ApprovalRequest {
                        skill: skill.name.clone(),
                        tool: tool.to_string(),
                        capability: kind,
                        target: target_text.to_string(),
                        rule: exact,
                    }),
                    None => AskOutcome::Nobody,
                };
                if outcome == AskOutcome::Approved {
                    return Ok((
                        Allowed {
                            declared: declared.clone(),
                            by: d.rule,
                        },
                        format!("{} (approved)", d.reason),
                        AuditDecision::Ask(AskOutcome::Approved),
                    ));
                }
                Err(GateError::AskUnanswered {
                    skill: skill.name.clone(),
                    capability: kind,
                    target: target_text.to_string(),
                    reason: d.reason,
                    why: outcome.why(),
                    outcome,
                    hint: grant_hint,
                })
            }
        }
    }

    /// [`check_as`](Self::check_as) for a [`Caller`].
    pub fn check_call(
        &self,
        caller: &Caller<'_>,
        kind: CapabilityKind,
        target: &Target<'_>,
    ) -> Result<Allowed, GateError> {
        self.check_as(caller.skill, caller.tool, kind, target, caller.approver)
    }

    /// May this call connect to `target` (one hop of an HTTP request), and
    /// to which addresses? In order:
    ///
    /// 1. the host and port as written (for a non-public IP literal both the
    ///    declaration and the policy must name it);
    /// 2. the name is resolved with `resolve` (IP literals are not);
    /// 3. the addresses are filtered by the skill's declared host rules
    ///    ([`net::check_addresses`]): a non-public address survives only if
    ///    the manifest names it;
    /// 4. every surviving non-public address is checked as itself, so a
    ///    name that resolves to loopback needs the policy to name it too.
    ///
    /// Returns the addresses the connection may use, and nothing else: the
    /// caller must connect only to these (pinning them defeats rebinding).
    pub fn check_connect<E>(
        &self,
        caller: &Caller<'_>,
        target: &net::Target,
        resolve: impl FnOnce(&str, u16) -> Result<Vec<IpAddr>, E>,
    ) -> Result<Vec<SocketAddr>, ConnectError<E>> {
        let kind = CapabilityKind::NetHttp;
        self.check_call(
            caller,
            kind,
            &Target::Host {
                host: &target.host,
                port: target.port,
            },
        )?;
        let ips = match &target.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => resolve(name, target.port).map_err(ConnectError::Resolve)?,
        };
        let rules = declared_host_rules(&caller.skill.declared);
        let builtin = matches!(caller.skill.origin, crate::skill::Origin::Builtin(_));
        let addrs = net::check_addresses_for(&rules, target, &ips, builtin)?;
        // Each non-public address is checked as itself; the connection uses
        // only those that pass (`localhost` → 127.0.0.1 named, ::1 not:
        // 127.0.0.1), and fails with the first refusal if none does.
        let mut passed = Vec::with_capacity(addrs.len());
        let mut refusal = None;
        for addr in addrs {
            let ip = Host::Ip(addr.ip());
            // An IP-literal target was just checked as itself.
            if net::is_public(addr.ip()) || ip == target.host {
                passed.push(addr);
                continue;
            }
            match self.check_call(
                caller,
                kind,
                &Target::Host {
                    host: &ip,
                    port: addr.port(),
                },
            ) {
                Ok(_) => passed.push(addr),
                Err(e) => {
                    refusal.get_or_insert(e);
                }
            }
        }
        match (passed.is_empty(), refusal) {
            (true, Some(e)) => Err(e.into()),
            _ => Ok(passed),
        }
    }

    /// The environment for a program the skill runs: the variables of
    /// `env` the skill declared and the gate allows *without asking anyone*
    /// (a program cannot answer a prompt, and a run should not stop for a
    /// variable it may not need). Each variable passed on is checked and
    /// audited like `keel.env.get`.
    pub fn child_env(
        &self,
        caller: &Caller<'_>,
        env: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let candidates = crate::capability::declared_env_candidates(&caller.skill.declared, env);
        if candidates.is_empty() {
            return Vec::new();
        }
        let grants = self.grants(&caller.skill.name);
        candidates
            .into_iter()
            .filter(|(name, _)| {
                self.allowed_outright(caller, &grants, CapabilityKind::Env, &Target::Name(name))
            })
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What the OS sandbox of a program the skill runs allows outright: the
    /// folders the skill may read and write and the other programs it may
    /// run, each allowed by the policy without asking (a grant that would
    /// need asking is not lent to a program, which cannot ask), and the
    /// folders to keep out (every path the policy denies or asks about, and
    /// keel's control plane).
    pub fn sandbox_roots(&self, caller: &Caller<'_>) -> SandboxRoots {
        let skill = caller.skill;
        let policy = self.policy.load_full();
        let grants = self.grants(&skill.name);
        let sets = std::iter::once(&policy.global).chain(policy.skills.get(&skill.name));
        let plain_path = |r: &CapabilityRule| match &r.scope {
            Scope::Path { path, glob: false } => Some(path.clone()),
            _ => None,
        };
        let mut roots = SandboxRoots::default();
        for kind in [CapabilityKind::FsRead, CapabilityKind::FsWrite] {
            let mut candidates: Vec<PathBuf> = Vec::new();
            for rule in skill.declared.iter().filter(|r| r.kind == kind) {
                match &rule.scope {
                    Scope::Path { path, glob: false } => candidates.push(path.clone()),
                    // `fs.read:*`: whatever the policy and grants name outright.
                    Scope::Any => candidates.extend(
                        sets.clone()
                            .flat_map(|s| s.allow.iter())
                            .chain(grants.iter())
                            .filter(|r| r.kind == kind)
                            .filter_map(plain_path),
                    ),
                    // Glob scopes cannot be expressed as Landlock rules: the
                    // child gets nothing from them.
                    _ => {}
                }
            }
            let allowed: Vec<PathBuf> = candidates
                .into_iter()
                .filter(|p| self.allowed_outright(caller, &grants, kind, &Target::Path(p)))
                .collect();
            for set in sets.clone() {
                roots.excluded.extend(
                    set.deny
                        .iter()
                        .chain(set.ask.iter())
                        .filter(|r| r.kind == kind)
                        .filter_map(plain_path),
                );
            }
            match kind {
                CapabilityKind::FsRead => roots.read = allowed,
                _ => roots.write = allowed,
            }
        }
        // Other programs the skill may run by exact name (git running ssh).
        // Not audited: nothing runs them here; running one is checked then.
        for rule in skill.declared.iter() {
            if let (CapabilityKind::Exec, Scope::Name(name)) = (rule.kind, &rule.scope)
                && !name.contains('*')
                && self.allowed_silently(
                    skill,
                    &policy,
                    &grants,
                    CapabilityKind::Exec,
                    &Target::Name(name),
                )
            {
                roots.programs.push(name.clone());
            }
        }
        // keel's own files: the same list file capabilities are refused on.
        roots
            .excluded
            .extend(self.protected.load().all_forms().map(Path::to_path_buf));
        roots.network = skill.declared.iter().any(|r| {
            r.kind == CapabilityKind::NetHttp && !skill.pending.iter().any(|p| p == &r.text)
        });
        roots
    }

    /// Whether the policy allows this without asking, checked (and audited)
    /// by the gate. Never prompts.
    fn allowed_outright(
        &self,
        caller: &Caller<'_>,
        grants: &[CapabilityRule],
        kind: CapabilityKind,
        target: &Target<'_>,
    ) -> bool {
        let policy = self.policy.load();
        policy
            .decide(&caller.skill.name, grants, kind, target)
            .decision
            == Decision::Allow
            && self
                .check_as(caller.skill, caller.tool, kind, target, None)
                .is_ok()
    }

    /// Whether the gate would allow this without asking, with no audit
    /// record: for deriving confinement, not for an effect.
    fn allowed_silently(
        &self,
        skill: &SkillIdentity,
        policy: &Policy,
        grants: &[CapabilityRule],
        kind: CapabilityKind,
        target: &Target<'_>,
    ) -> bool {
        if self.protected.load().refuse(kind, target).is_some() {
            return false;
        }
        let covering = |r: &&CapabilityRule| r.covers(kind, target);
        let approved = skill
            .declared
            .iter()
            .filter(covering)
            .any(|r| !skill.pending.iter().any(|p| p == &r.text))
            || grants.iter().any(|g| g.covers(kind, target))
            || policy
                .skills
                .get(&skill.name)
                .is_some_and(|set| set.allow.iter().any(|r| r.covers(kind, target)));
        skill.declared.iter().any(|r| r.covers(kind, target))
            && approved
            && policy.decide(&skill.name, grants, kind, target).decision == Decision::Allow
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

/// Who is asking: the skill whose code runs as a tool, the tool, and who
/// answers `ask` for it (the run it belongs to), if anyone.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub skill: &'a SkillIdentity,
    pub tool: &'a str,
    pub approver: Option<&'a dyn Approver>,
}

/// Why [`Gate::check_connect`] refused a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError<E> {
    /// The gate refused the host or one of its addresses.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// The addresses did not pass the declared host rules (or none resolved).
    #[error(transparent)]
    Net(#[from] NetError),
    /// Name resolution failed; the caller's own error.
    #[error("{0}")]
    Resolve(E),
}

/// What [`Gate::sandbox_roots`] allows a program outright.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxRoots {
    /// Folders it may read beneath.
    pub read: Vec<PathBuf>,
    /// Folders it may write beneath.
    pub write: Vec<PathBuf>,
    /// Other programs (names or absolute paths, as declared) it may run.
    pub programs: Vec<String>,
    /// Folders kept out whatever the roots say: what the policy denies or
    /// asks about, and keel's own files.
    pub excluded: Vec<PathBuf>,
    /// Whether it may use the network (the skill declares an approved
    /// `net.http`).
    pub network: bool,
}

/// The host rules a skill declared for `net.http`.
fn declared_host_rules(declared: &[CapabilityRule]) -> Vec<HostRule> {
    declared
        .iter()
        .filter(|r| r.kind == CapabilityKind::NetHttp)
        .filter_map(|r| match &r.scope {
            Scope::Host(h) => Some(h.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The gate against in-memory grants and audit (no SQLite): what the
    //! traits are for. The SQLite-backed paths are covered by the
    //! integration tests (`tests/gate_*.rs`, `tests/control_plane.rs`).

    use std::sync::Mutex;

    use super::*;
    use crate::capability::protected::ProtectedKind;
    use crate::capability::{Decision, RuleSet};
    use crate::skill::{Origin, SkillInfo};

    /// Grants by (workspace, skill), as written.
    #[derive(Default)]
    struct MemGrants(Mutex<BTreeMap<(PathBuf, String), Vec<String>>>);

    impl MemGrants {
        fn grant(&self, ws: &Path, skill: &str, rule: &str) {
            let mut map = self.0.lock().unwrap();
            map.entry((ws.to_path_buf(), skill.to_string()))
                .or_default()
                .push(rule.to_string());
        }
    }

    impl GrantSource for MemGrants {
        fn grants_for(&self, ws: &Path, skill: &str) -> Result<Vec<String>, StorageError> {
            let map = self.0.lock().map_err(|_| "poisoned")?;
            Ok(map
                .get(&(ws.to_path_buf(), skill.to_string()))
                .cloned()
                .unwrap_or_default())
        }
    }

    /// A grant source whose storage is broken.
    struct BrokenGrants;

    impl GrantSource for BrokenGrants {
        fn grants_for(&self, _: &Path, _: &str) -> Result<Vec<String>, StorageError> {
            Err("disk I/O error".into())
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Row {
        capability: CapabilityKind,
        target: String,
        decision: AuditDecision,
    }

    #[derive(Default)]
    struct MemAudit(Mutex<Vec<Row>>);

    impl MemAudit {
        fn rows(&self) -> Vec<Row> {
            self.0.lock().unwrap().clone()
        }
    }

    impl AuditSink for MemAudit {
        fn record(&self, e: &AuditEvent<'_>) -> Result<(), StorageError> {
            self.0.lock().map_err(|_| "poisoned")?.push(Row {
                capability: e.capability,
                target: e.target.to_string(),
                decision: e.decision,
            });
            Ok(())
        }
    }

    /// An audit log that cannot be written.
    struct BrokenAudit;

    impl AuditSink for BrokenAudit {
        fn record(&self, _: &AuditEvent<'_>) -> Result<(), StorageError> {
            Err("database is full".into())
        }
    }

    struct Answer(AskOutcome);

    impl Approver for Answer {
        fn approve(&self, _: &ApprovalRequest) -> AskOutcome {
            self.0
        }
    }

    fn ws() -> PathBuf {
        std::env::temp_dir().join("keel-gate-unit-ws")
    }

    fn rule(s: &str) -> CapabilityRule {
        let ws = ws();
        CapabilityRule::parse(s, &crate::paths::scope_base(&ws)).unwrap()
    }

    fn rules(list: &[&str]) -> Vec<CapabilityRule> {
        list.iter().map(|s| rule(s)).collect()
    }

    fn skill(declared: &[&str], pending: &[&str]) -> SkillIdentity {
        Arc::new(SkillInfo {
            name: "s".into(),
            version: semver::Version::new(1, 0, 0),
            // A user's skill: a built-in's declaration is trusted further
            // (see `builtin_skill`).
            origin: Origin::Folder("/skills/s".into()),
            declared: rules(declared),
            pending: pending.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn policy(default: Decision, allow: &[&str], ask: &[&str], deny: &[&str]) -> Policy {
        Policy {
            default,
            global: RuleSet {
                allow: rules(allow),
                ask: rules(ask),
                deny: rules(deny),
            },
            skills: BTreeMap::new(),
        }
    }

    struct Fixture {
        gate: Gate,
        grants: Arc<MemGrants>,
        audit: Arc<MemAudit>,
    }

    fn fixture(policy: Policy) -> Fixture {
        let grants = Arc::new(MemGrants::default());
        let audit = Arc::new(MemAudit::default());
        let gate = Gate::new(policy, grants.clone(), audit.clone(), ws());
        Fixture {
            gate,
            grants,
            audit,
        }
    }

    fn caller(skill: &SkillIdentity) -> Caller<'_> {
        Caller {
            skill,
            tool: "t",
            approver: None,
        }
    }

    #[test]
    fn every_decision_is_audited_with_its_capability() {
        let f = fixture(policy(Decision::Deny, &["exec:ls"], &["exec:cat"], &[]));
        let s = skill(&["exec:*"], &[]);
        let c = caller(&s);
        assert!(
            f.gate
                .check_call(&c, CapabilityKind::Exec, &Target::Name("ls"))
                .is_ok()
        );
        assert!(
            f.gate
                .check_call(&c, CapabilityKind::Exec, &Target::Name("cat"))
                .is_err()
        );
        assert!(
            f.gate
                .check_call(&c, CapabilityKind::Exec, &Target::Name("rm"))
                .is_err()
        );
        assert!(
            f.gate
                .check_call(&c, CapabilityKind::Env, &Target::Name("HOME"))
                .is_err()
        );
        let got: Vec<(CapabilityKind, String, AuditDecision)> = f
            .audit
            .rows()
            .into_iter()
            .map(|r| (r.capability, r.target, r.decision))
            .collect();
        assert_eq!(
            got,
            [
                (CapabilityKind::Exec, "ls".into(), AuditDecision::Allow),
                (
                    CapabilityKind::Exec,
                    "cat".into(),
                    AuditDecision::Ask(AskOutcome::Nobody)
                ),
                (CapabilityKind::Exec, "rm".into(), AuditDecision::Deny),
                (CapabilityKind::Env, "HOME".into(), AuditDecision::Deny),
            ]
        );
    }

    /// Advice names the narrowest rule for the target; a wildcard
    /// declaration (`exec:*`, `net.http:*`) is never suggested.
    #[test]
    fn advice_never_suggests_a_wildcard() {
        let h = grant_hint("sh", Some("exec:cat"), "exec:*");
        assert!(
            h.contains("keel grant sh exec:cat") && !h.contains("exec:*"),
            "{h}"
        );
        let h = grant_hint("web", Some("net.http:127.0.0.1:8080"), "net.http:*");
        assert!(!h.contains("net.http:*"), "{h}");
        let h = grant_hint("web", None, "net.http:*");
        assert!(
            !h.contains("net.http:*") && h.contains("[policy.skills.web]"),
            "{h}"
        );
        // A narrow declaration may still be offered as the wider choice.
        let h = grant_hint("notes", Some("fs.write:./notes/a.md"), "fs.write:./notes");
        assert!(h.contains("keel grant notes fs.write:./notes`"), "{h}");
    }

    #[test]
    fn grants_apply_only_in_their_workspace() {
        let f = fixture(policy(Decision::Deny, &[], &[], &[]));
        let s = skill(&["exec:*"], &[]);
        let c = caller(&s);
        f.grants.grant(Path::new("/elsewhere"), "s", "exec:ls");
        assert!(
            f.gate
                .check_call(&c, CapabilityKind::Exec, &Target::Name("ls"))
                .is_err()
        );
        f.grants.grant(&ws(), "s", "exec:ls");
        assert!(
            f.gate
                .check_call(&c, CapabilityKind::Exec, &Target::Name("ls"))
                .is_ok()
        );
        // Another skill's grant is not this skill's.
        f.grants.grant(&ws(), "other", "exec:cat");
        assert!(
            f.gate
                .check_call(&c, CapabilityKind::Exec, &Target::Name("cat"))
                .is_err()
        );
    }

    #[test]
    fn broken_storage_fails_closed_and_still_decides() {
        // Grants unreadable: no grant counts; the policy still allows.
        let audit = Arc::new(MemAudit::default());
        let gate = Gate::new(
            policy(Decision::Deny, &["exec:ls"], &[], &[]),
            Arc::new(BrokenGrants),
            audit.clone(),
            ws(),
        );
        let s = skill(&["exec:*"], &[]);
        assert!(
            gate.check_call(&caller(&s), CapabilityKind::Exec, &Target::Name("ls"))
                .is_ok()
        );
        assert!(
            gate.check_call(&caller(&s), CapabilityKind::Exec, &Target::Name("rm"))
                .is_err()
        );
        // Audit unwritable: a denial stays a denial, an allowance is not blocked.
        let gate = Gate::new(
            policy(Decision::Deny, &["exec:ls"], &[], &[]),
            Arc::new(MemGrants::default()),
            Arc::new(BrokenAudit),
            ws(),
        );
        assert!(
            gate.check_call(&caller(&s), CapabilityKind::Exec, &Target::Name("ls"))
                .is_ok()
        );
        assert!(
            gate.check_call(&caller(&s), CapabilityKind::Exec, &Target::Name("rm"))
                .is_err()
        );
    }

    #[test]
    fn a_pending_declaration_needs_the_operators_word() {
        let f = fixture(policy(Decision::Allow, &["exec:*"], &[], &[]));
        let s = skill(&["exec:sh"], &["exec:sh"]);
        let c = caller(&s);
        let e = f
            .gate
            .check_call(&c, CapabilityKind::Exec, &Target::Name("sh"))
            .unwrap_err();
        assert!(matches!(e, GateError::NotApproved { .. }), "{e}");
        // Nor does the sandbox lend it to a program.
        assert!(f.gate.sandbox_roots(&c).programs.is_empty());
        f.grants.grant(&ws(), "s", "exec:sh");
        assert!(
            f.gate
                .check_call(&c, CapabilityKind::Exec, &Target::Name("sh"))
                .is_ok()
        );
        assert_eq!(f.gate.sandbox_roots(&c).programs, ["sh"]);
    }

    #[test]
    fn ask_goes_to_the_callers_approver() {
        let f = fixture(policy(Decision::Ask, &[], &[], &[]));
        let s = skill(&["exec:*"], &[]);
        let yes = Answer(AskOutcome::Approved);
        let no = Answer(AskOutcome::Denied);
        let with = |a: &'static str, ap: &dyn Approver| {
            f.gate.check_call(
                &Caller {
                    skill: &s,
                    tool: "t",
                    approver: Some(ap),
                },
                CapabilityKind::Exec,
                &Target::Name(a),
            )
        };
        assert!(with("ls", &yes).is_ok());
        assert!(matches!(
            with("ls", &no),
            Err(GateError::AskUnanswered { .. })
        ));
    }

    #[test]
    fn keels_own_files_are_refused_whatever_the_policy() {
        let mut protected = ProtectedPaths::new();
        let data = ws().join(".keel");
        protected.add(ProtectedKind::DataDir, data.clone(), None);
        let f = fixture(policy(
            Decision::Allow,
            &["fs.write:*", "fs.read:*"],
            &[],
            &[],
        ));
        let gate = f.gate.with_protected(protected);
        let s = skill(&["fs.write:.", "fs.read:."], &[]);
        let c = caller(&s);
        let db = data.join("keel.db");
        let e = gate
            .check_call(&c, CapabilityKind::FsWrite, &Target::Path(&db))
            .unwrap_err();
        assert!(matches!(e, GateError::ControlPlane(_)), "{e}");
        let roots = gate.sandbox_roots(&c);
        assert!(roots.excluded.contains(&data), "{roots:?}");
        assert!(roots.write.contains(&ws()), "{roots:?}");
    }

    #[test]
    fn connect_checks_the_name_and_every_non_public_address() {
        let f = fixture(policy(Decision::Deny, &["net.http:*"], &[], &[]));
        let s = skill(&["net.http:*"], &[]);
        let c = caller(&s);
        let t = net::parse_target("http://example.test/").unwrap();
        // A public address passes; the resolver is asked for the name.
        let got = f
            .gate
            .check_connect(&c, &t, |name, port| {
                assert_eq!((name, port), ("example.test", 80));
                Ok::<_, ()>(vec!["93.184.216.34".parse().unwrap()])
            })
            .unwrap();
        assert_eq!(got, ["93.184.216.34:80".parse().unwrap()]);
        // A name that resolves to loopback (rebinding) is refused: `*`
        // never covers a non-public address.
        let e = f
            .gate
            .check_connect(&c, &t, |_, _| {
                Ok::<_, &str>(vec!["127.0.0.1".parse().unwrap()])
            })
            .unwrap_err();
        assert!(
            matches!(e, ConnectError::Net(_) | ConnectError::Gate(_)),
            "{e}"
        );
        // A resolver failure is the caller's own error.
        let e = f
            .gate
            .check_connect(&c, &t, |_, _| Err::<Vec<IpAddr>, _>("nxdomain"))
            .unwrap_err();
        assert!(matches!(e, ConnectError::Resolve("nxdomain")));
        // An IP literal is never resolved.
        let lit = net::parse_target("http://169.254.169.254/").unwrap();
        let e = f
            .gate
            .check_connect(&c, &lit, |_, _| -> Result<Vec<IpAddr>, &str> {
                panic!("an IP literal was resolved")
            })
            .unwrap_err();
        assert!(matches!(e, ConnectError::Gate(_)), "{e}");
        assert!(
            f.audit
                .rows()
                .iter()
                .all(|r| r.capability == CapabilityKind::NetHttp)
        );
    }

    #[test]
    fn a_named_loopback_address_passes_only_when_policy_and_manifest_name_it() {
        let f = fixture(policy(
            Decision::Deny,
            &["net.http:127.0.0.1:8080"],
            &[],
            &[],
        ));
        let named = skill(&["net.http:127.0.0.1:8080", "net.http:local.test"], &[]);
        let t = net::parse_target("http://local.test:8080/").unwrap();
        let resolve = |_: &str, _: u16| Ok::<_, &str>(vec!["127.0.0.1".parse().unwrap()]);
        // The name itself is not allowed by the policy (default deny).
        assert!(f.gate.check_connect(&caller(&named), &t, resolve).is_err());
        f.grants.grant(&ws(), "s", "net.http:local.test");
        let got = f.gate.check_connect(&caller(&named), &t, resolve).unwrap();
        assert_eq!(got, ["127.0.0.1:8080".parse().unwrap()]);
        // Without the manifest naming the address, `*` does not cover it.
        let wide = skill(&["net.http:*"], &[]);
        assert!(f.gate.check_connect(&caller(&wide), &t, resolve).is_err());
        // A built-in's `*` is keel's own word: the policy naming the address
        // (and the grant naming the host) are enough.
        let builtin = Arc::new(SkillInfo {
            origin: Origin::Builtin("s".into()),
            name: "s".into(),
            version: semver::Version::new(1, 0, 0),
            declared: rules(&["net.http:*"]),
            pending: Vec::new(),
        });
        let got = f
            .gate
            .check_connect(&caller(&builtin), &t, resolve)
            .unwrap();
        assert_eq!(got, ["127.0.0.1:8080".parse().unwrap()]);
        // ...and `*` in the policy never is, built-in or not.
        let other = net::parse_target("http://127.0.0.1:9090/").unwrap();
        assert!(
            f.gate
                .check_connect(&caller(&builtin), &other, resolve)
                .is_err()
        );
    }

    #[test]
    fn declared_host_rules_keep_only_net_http_scopes() {
        let declared = rules(&[
            "net.http:api.example.com",
            "exec:git",
            "net.http:*",
            "net.http:127.0.0.1:8080",
        ]);
        let host_rules = declared_host_rules(&declared);
        assert_eq!(host_rules.len(), 3);
        let t = net::parse_target("http://127.0.0.1:8080/").unwrap();
        assert!(net::check_addresses(&host_rules, &t, &[]).is_ok());
    }

    #[test]
    fn a_child_sees_only_variables_allowed_without_asking() {
        let f = fixture(policy(
            Decision::Deny,
            &["env:PATH", "env:LANG"],
            &["env:GH_TOKEN"],
            &["env:LANG"],
        ));
        let s = skill(&["env:*"], &[]);
        let env: BTreeMap<String, String> = [
            ("PATH", "/bin"),
            ("GH_TOKEN", "t"),
            ("LANG", "C"),
            ("HOME", "/h"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // Even with an approver that says yes: a program cannot ask.
        let yes = Answer(AskOutcome::Approved);
        let c = Caller {
            skill: &s,
            tool: "t",
            approver: Some(&yes),
        };
        let got = f.gate.child_env(&c, &env);
        assert_eq!(got, [("PATH".to_string(), "/bin".to_string())]);
        // Undeclared variables are never candidates.
        let none = skill(&["exec:*"], &[]);
        assert!(f.gate.child_env(&caller(&none), &env).is_empty());
    }

    #[test]
    fn sandbox_roots_are_what_the_policy_allows_outright() {
        let root = ws();
        let notes = root.join("notes");
        let secret = root.join("notes/secret");
        let f = fixture(policy(
            Decision::Deny,
            &["fs.read:./notes", "fs.write:./out", "exec:git"],
            &["fs.write:./notes", "exec:ssh"],
            &["fs.read:./notes/secret"],
        ));
        let s = skill(
            &[
                "fs.read:./notes",
                "fs.write:./notes",
                "fs.write:./out",
                "exec:git",
                "exec:ssh",
                "exec:*",
            ],
            &[],
        );
        let r = f.gate.sandbox_roots(&caller(&s));
        assert_eq!(r.read, std::slice::from_ref(&notes));
        assert_eq!(r.write, [root.join("out")]);
        // `exec:ssh` would ask: not lent; `*` names no program.
        assert_eq!(r.programs, ["git"]);
        assert!(r.excluded.contains(&secret) && r.excluded.contains(&notes));
        assert!(!r.network);
    }
}
