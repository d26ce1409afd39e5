//! Capabilities: what a script may touch, and the rules that decide it.
//!
//! A capability is a kind (`fs.read`, `net.http`, …) plus a scope (a path, a
//! host, a program name, …). Skills *declare* capabilities in their manifest;
//! the operator's policy *decides*. Everything here is pure: parsing rules,
//! matching a concrete target against a rule, and combining rules into a
//! decision. No I/O, no store, no shared state: the one place where a host
//! call is checked is the kernel's gate ([`crate::kernel::gate`]), which
//! calls into this module.
//!
//! Invariants:
//! - Strings are parsed once, at the edge, into [`CapabilityRule`]s; matching
//!   never re-parses.
//! - Path rules hold absolute, normalised paths; path targets are canonical
//!   (symlinks resolved) before they are matched, and matching is by path
//!   component, so `./notes` never covers `./notes-evil`.
//! - Deny beats ask beats allow.

pub mod net;
pub mod paths;
pub mod protected;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use net::{Host, HostRule, NetError};

/// The kinds of capability keel knows. The names are the contract used in
/// manifests, policy and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CapabilityKind {
    /// Read files beneath a path.
    FsRead,
    /// Create, write, append and remove files beneath a path.
    FsWrite,
    /// Make HTTP requests to a host.
    NetHttp,
    /// Run a program (argv only, never a shell).
    Exec,
    /// Read an environment variable (and pass it to subprocesses).
    Env,
    /// The skill's own key-value namespace.
    Kv,
    /// Call another tool.
    ToolsCall,
    /// Ask the configured model (`keel.llm.complete`).
    Llm,
    /// Long-term memory (later issue).
    Memory,
    /// Send chat messages (later issue).
    ChatSend,
    /// Create schedules (later issue).
    Schedule,
    /// Spawn sub-agents (later issue).
    AgentSpawn,
}

/// What kind of scope a capability takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    /// A file-system path; a directory covers everything beneath it.
    Path,
    /// A host, `host:port`, `*.domain`, an IP or a CIDR.
    Host,
    /// A name or a `*` pattern (program, variable, tool, channel).
    Name,
    /// No scope at all.
    None,
}

impl CapabilityKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [CapabilityKind; 12] = [
        Self::FsRead,
        Self::FsWrite,
        Self::NetHttp,
        Self::Exec,
        Self::Env,
        Self::Kv,
        Self::ToolsCall,
        Self::Llm,
        Self::Memory,
        Self::ChatSend,
        Self::Schedule,
        Self::AgentSpawn,
    ];

    /// The name used in manifests, policy and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Self::FsRead => "fs.read",
            Self::FsWrite => "fs.write",
            Self::NetHttp => "net.http",
            Self::Exec => "exec",
            Self::Env => "env",
            Self::Kv => "kv",
            Self::ToolsCall => "tools.call",
            Self::Llm => "llm",
            Self::Memory => "memory",
            Self::ChatSend => "chat.send",
            Self::Schedule => "schedule",
            Self::AgentSpawn => "agent.spawn",
        }
    }

    /// The kind of scope this capability takes.
    pub fn scope_kind(self) -> ScopeKind {
        match self {
            Self::FsRead | Self::FsWrite => ScopeKind::Path,
            Self::NetHttp => ScopeKind::Host,
            Self::Exec | Self::Env | Self::ToolsCall | Self::ChatSend => ScopeKind::Name,
            Self::Kv | Self::Llm | Self::Memory | Self::Schedule | Self::AgentSpawn => {
                ScopeKind::None
            }
        }
    }

    /// Parses a capability name, suggesting the closest known one on error.
    pub fn parse(name: &str) -> Result<Self, CapabilityError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| CapabilityError::UnknownKind {
                name: name.to_string(),
                suggestion: did_you_mean(name, Self::ALL.iter().map(|k| k.name())),
            })
    }
}

impl fmt::Display for CapabilityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The scope part of a rule, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Matches every target of the kind (`exec:*`, `kv`, `fs.read:*`).
    Any,
    /// An absolute, normalised path; `glob` is set when it holds `*`.
    Path { path: PathBuf, glob: bool },
    /// A host rule for `net.http`.
    Host(HostRule),
    /// A name, possibly with `*` wildcards.
    Name(String),
}

/// A capability with its scope: one line of a manifest's `[capabilities]`,
/// one policy rule, or one grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityRule {
    pub kind: CapabilityKind,
    pub scope: Scope,
    /// The rule as written, for messages and the audit log.
    pub text: String,
}

impl fmt::Display for CapabilityRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A concrete thing a host call wants to touch.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A canonical absolute path.
    Path(&'a Path),
    /// A host and port (an IP host here means the IP itself is the target).
    Host { host: &'a Host, port: u16 },
    /// A program, variable or tool name.
    Name(&'a str),
    /// Capabilities without a scope.
    None,
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Path(p) => write!(f, "{}", p.display()),
            Target::Host { host, port } => match host {
                Host::Ip(std::net::IpAddr::V6(ip)) => write!(f, "[{ip}]:{port}"),
                _ => write!(f, "{host}:{port}"),
            },
            Target::Name(n) => f.write_str(n),
            Target::None => Ok(()),
        }
    }
}

/// Errors from parsing capability names and rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapabilityError {
    /// The capability name is not one keel knows.
    #[error("unknown capability `{name}`{}; known capabilities: {}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(), CapabilityKind::ALL.map(|k| k.name()).join(", "))]
    UnknownKind {
        name: String,
        suggestion: Option<String>,
    },
    /// The capability takes a scope but none was given.
    #[error("capability `{kind}` needs a scope ({hint}); write e.g. `{example}`")]
    MissingScope {
        kind: CapabilityKind,
        hint: &'static str,
        example: &'static str,
    },
    /// The capability takes no scope but one was given.
    #[error("capability `{kind}` takes no scope, but `{scope}` was given; write just `{kind}`")]
    UnexpectedScope { kind: CapabilityKind, scope: String },
    /// The scope could not be parsed.
    #[error("invalid scope `{scope}` for `{kind}`: {reason}")]
    InvalidScope {
        kind: CapabilityKind,
        scope: String,
        reason: String,
    },
}

/// Where relative path scopes are anchored.
#[derive(Debug, Clone)]
pub struct ScopeBase<'a> {
    /// The workspace root, absolute and canonical.
    pub workspace: &'a Path,
    /// Resolves an absolute path the way the kernel would (symlinks
    /// followed, `..` applied, parts that do not exist yet kept as
    /// written). Passed in so this module never reads the disk:
    /// [`crate::paths::scope_base`] gives the real one, tests may give
    /// [`paths::normalize_lexically`].
    pub resolve: fn(&Path) -> PathBuf,
}

impl CapabilityRule {
    /// Parses `kind[:scope]`, the form used by policy rules and `keel grant`.
    pub fn parse(text: &str, base: &ScopeBase<'_>) -> Result<Self, CapabilityError> {
        let text = text.trim();
        // The kind never contains ':', so the first ':' separates the scope
        // (host:port scopes keep their own colon).
        let (kind, scope) = match text.split_once(':') {
            Some((k, s)) => (k, Some(s)),
            None => (text, None),
        };
        let kind = CapabilityKind::parse(kind)?;
        Self::with_scope(kind, scope, base)
    }

    /// Builds a rule from a kind and an optional scope string, as found in a
    /// manifest's `[capabilities]` table.
    pub fn with_scope(
        kind: CapabilityKind,
        scope: Option<&str>,
        base: &ScopeBase<'_>,
    ) -> Result<Self, CapabilityError> {
        let text = match scope {
            Some(s) => format!("{kind}:{s}"),
            None => kind.name().to_string(),
        };
        let scope = match (kind.scope_kind(), scope) {
            (ScopeKind::None, None) => Scope::Any,
            (ScopeKind::None, Some("*")) => Scope::Any,
            (ScopeKind::None, Some(s)) => {
                return Err(CapabilityError::UnexpectedScope {
                    kind,
                    scope: s.to_string(),
                });
            }
            (sk, None) => {
                let (hint, example) = match sk {
                    ScopeKind::Path => ("a path", "fs.read:./notes"),
                    ScopeKind::Host => ("a host", "net.http:api.example.com"),
                    _ => ("a name or pattern", "exec:git"),
                };
                return Err(CapabilityError::MissingScope {
                    kind,
                    hint,
                    example,
                });
            }
            (_, Some("*")) if kind != CapabilityKind::NetHttp => Scope::Any,
            (ScopeKind::Path, Some(s)) => parse_path_scope(kind, s, base)?,
            (ScopeKind::Host, Some(s)) => {
                Scope::Host(
                    net::parse_host_rule(s).map_err(|e| CapabilityError::InvalidScope {
                        kind,
                        scope: s.to_string(),
                        reason: e.to_string(),
                    })?,
                )
            }
            (ScopeKind::Name, Some(s)) => {
                if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(CapabilityError::InvalidScope {
                        kind,
                        scope: s.to_string(),
                        reason: "a name must be non-empty and hold no spaces".into(),
                    });
                }
                Scope::Name(s.to_string())
            }
        };
        Ok(Self { kind, scope, text })
    }

    /// Does this rule *grant* the target? This is the matcher for
    /// declarations, allow and ask rules and operator grants. Host rules
    /// match by name and port here (the gate checks resolved addresses
    /// again), and a non-public IP target is covered only by a rule that
    /// names that address or its range: `net.http:*` and host names never
    /// grant loopback, link-local or private addresses
    /// ([`net::rule_grants`]).
    pub fn covers(&self, kind: CapabilityKind, target: &Target<'_>) -> bool {
        self.matches(kind, target, net::rule_grants)
    }

    /// Does this rule grant everything `other` would? Conservative: true
    /// only when it surely does (the same rule, `*`, a folder holding
    /// `other`'s folder, a name pattern matching `other`'s exact name).
    /// For listings ("not granted yet"), never for a decision.
    pub fn includes(&self, other: &CapabilityRule) -> bool {
        if self.kind != other.kind {
            return false;
        }
        if self.text == other.text {
            return true;
        }
        match (&self.scope, &other.scope) {
            // (`net.http:*` is a host rule, never `Any`: it does not
            // include the rules naming addresses, and is compared by text.)
            (Scope::Any, _) => true,
            (
                Scope::Path { path, glob: false },
                Scope::Path {
                    path: o,
                    glob: false,
                },
            ) => o.starts_with(path),
            (Scope::Name(p), Scope::Name(n)) if !n.contains('*') => glob_match(p, n),
            _ => false,
        }
    }

    /// Does this rule's pattern reach the target at all? The matcher for
    /// deny rules: `deny net.http:*` denies loopback too, although it
    /// could never grant it.
    pub fn reaches(&self, kind: CapabilityKind, target: &Target<'_>) -> bool {
        self.matches(kind, target, net::rule_matches_name)
    }

    fn matches(
        &self,
        kind: CapabilityKind,
        target: &Target<'_>,
        host_matches: fn(&HostRule, &Host, u16) -> bool,
    ) -> bool {
        if kind != self.kind {
            return false;
        }
        match (&self.scope, target) {
            (Scope::Any, _) => true,
            (Scope::Path { path, glob: false }, Target::Path(p)) => p.starts_with(path),
            (Scope::Path { path, glob: true }, Target::Path(p)) => {
                match (path.to_str(), p.to_str()) {
                    (Some(pat), Some(p)) => glob_match(pat, p),
                    _ => false,
                }
            }
            (Scope::Host(rule), Target::Host { host, port }) => host_matches(rule, host, *port),
            (Scope::Name(pat), Target::Name(n)) => glob_match(pat, n),
            _ => false,
        }
    }
}

/// The narrowest rule that grants exactly this one target: `exec:ls`,
/// `fs.read:/abs/path/file`, `net.http:host:port`, `kv`. This, never the
/// manifest's wider declaration, is what answering `always` stores, and
/// what the approval prompt shows.
///
/// `None` when no rule can name the target alone: a name or path holding
/// `*` (it would be read back as a wildcard: a program called `*` must not
/// turn `always` into `exec:*`), or one with spaces or control characters.
/// Such a request can be approved once, never for good. The result is
/// checked by parsing it back and matching the target, so what is stored
/// is what was shown and grants only what was asked.
pub fn exact_rule(
    kind: CapabilityKind,
    target: &Target<'_>,
    base: &ScopeBase<'_>,
) -> Option<CapabilityRule> {
    let text = match target {
        Target::None => kind.name().to_string(),
        Target::Name(n) => {
            if n.contains('*') {
                return None;
            }
            format!("{kind}:{n}")
        }
        Target::Path(p) => {
            let p = p.to_str()?;
            if p.contains('*') || !p.starts_with('/') || p.chars().any(char::is_control) {
                return None;
            }
            format!("{kind}:{p}")
        }
        Target::Host { .. } => format!("{kind}:{target}"),
    };
    let rule = CapabilityRule::parse(&text, base).ok()?;
    let exact = match (&rule.scope, target) {
        (Scope::Path { path, glob: false }, Target::Path(p)) => path == p,
        (Scope::Name(n), Target::Name(t)) => n == t,
        (Scope::Host(h), Target::Host { port, .. }) => {
            h.port() == Some(*port)
                && matches!(
                    h.pattern(),
                    net::HostPattern::Exact(_) | net::HostPattern::Ip(_)
                )
        }
        (Scope::Any, Target::None) => true,
        _ => false,
    };
    (exact && rule.covers(kind, target)).then_some(rule)
}

fn parse_path_scope(
    kind: CapabilityKind,
    s: &str,
    base: &ScopeBase<'_>,
) -> Result<Scope, CapabilityError> {
    if s.is_empty() || s.contains('\0') {
        return Err(CapabilityError::InvalidScope {
            kind,
            scope: s.to_string(),
            reason: "a path must be non-empty".into(),
        });
    }
    if s.starts_with('~') {
        // `~` is a shell convention; keel never expands it, so a rule that
        // looks like it names the home directory must not silently name a
        // folder called `~` in the workspace instead.
        return Err(CapabilityError::InvalidScope {
            kind,
            scope: s.to_string(),
            reason: "`~` is not expanded; write the absolute path instead".into(),
        });
    }
    let glob = s.contains('*');
    let joined = base.workspace.join(s);
    let path = if glob {
        paths::normalize_lexically(&joined)
    } else {
        (base.resolve)(&joined)
    };
    Ok(Scope::Path { path, glob })
}

/// The declarations a skill did not have when its name was first accepted
/// (its *baseline*): they are pending, and the gate lets them through only
/// with the operator's word for that skill (a grant, or an allow rule in its
/// own policy section). Compared as written, so a reworded rule is new too.
pub fn not_in_baseline(declared: &[String], baseline: &[String]) -> Vec<String> {
    declared
        .iter()
        .filter(|d| !baseline.contains(d))
        .cloned()
        .collect()
}

/// `*` matches any run of characters (including none, and including `/`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
pub fn did_you_mean<'a>(input: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (edit_distance(input, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The operator's answer for one kind of effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decision {
    Allow,
    Ask,
    Deny,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Ask => "ask",
            Decision::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "ask" => Some(Self::Ask),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Allow, ask and deny rules at one level (global or one skill).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub allow: Vec<CapabilityRule>,
    pub ask: Vec<CapabilityRule>,
    pub deny: Vec<CapabilityRule>,
}

/// The operator's policy: global rules, per-skill rules, and a default.
#[derive(Debug, Clone)]
pub struct Policy {
    pub default: Decision,
    pub global: RuleSet,
    pub skills: BTreeMap<String, RuleSet>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default: Decision::Ask,
            global: RuleSet::default(),
            skills: Default::default(),
        }
    }
}

/// What produced a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecisionBasis {
    /// An allow, ask or deny rule of the policy.
    Rule,
    /// An operator grant.
    Grant,
    /// The policy's `default`.
    Default,
    /// A non-public address that no allow rule, ask rule or grant names:
    /// denied whatever the default says.
    NonPublicAddress,
}

/// A decision with the rule that produced it, for messages and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub decision: Decision,
    pub basis: DecisionBasis,
    /// `policy deny fs.write:./notes/locked`, `grant exec:git`, `default`, …
    pub reason: String,
    /// The rule or grant that decided, if one did (not the default). File
    /// access is rooted at it when it is narrower than the declaration.
    pub rule: Option<CapabilityRule>,
}

/// The non-public IP a target names, if any (for the address rule).
fn non_public_target(target: &Target<'_>) -> Option<std::net::IpAddr> {
    match target {
        Target::Host {
            host: Host::Ip(ip), ..
        } if !net::is_public(*ip) => Some(*ip),
        _ => None,
    }
}

impl Policy {
    /// Decides a target for a skill. `grants` are the operator's persisted
    /// grants for this skill: a grant answers `ask` (and the default) with
    /// yes, but never overrides a `deny`. A non-public address is never
    /// decided by the default: unless an allow rule, ask rule or grant names
    /// it (or its range), it is denied.
    pub fn decide(
        &self,
        skill: &str,
        grants: &[CapabilityRule],
        kind: CapabilityKind,
        target: &Target<'_>,
    ) -> PolicyDecision {
        let sets = std::iter::once(&self.global).chain(self.skills.get(skill));
        let mut ask = None;
        let mut allow = None;
        for set in sets {
            if let Some(r) = set.deny.iter().find(|r| r.reaches(kind, target)) {
                return PolicyDecision {
                    decision: Decision::Deny,
                    basis: DecisionBasis::Rule,
                    reason: format!("policy deny `{r}`"),
                    rule: Some(r.clone()),
                };
            }
            if ask.is_none() {
                ask = set.ask.iter().find(|r| r.covers(kind, target));
            }
            if allow.is_none() {
                allow = set.allow.iter().find(|r| r.covers(kind, target));
            }
        }
        if let Some(g) = grants.iter().find(|r| r.covers(kind, target)) {
            return PolicyDecision {
                decision: Decision::Allow,
                basis: DecisionBasis::Grant,
                reason: format!("grant `{g}`"),
                rule: Some(g.clone()),
            };
        }
        if let Some(r) = ask {
            return PolicyDecision {
                decision: Decision::Ask,
                basis: DecisionBasis::Rule,
                reason: format!("policy ask `{r}`"),
                rule: Some(r.clone()),
            };
        }
        if let Some(r) = allow {
            return PolicyDecision {
                decision: Decision::Allow,
                basis: DecisionBasis::Rule,
                reason: format!("policy allow `{r}`"),
                rule: Some(r.clone()),
            };
        }
        if let Some(ip) = non_public_target(target) {
            return PolicyDecision {
                decision: Decision::Deny,
                basis: DecisionBasis::NonPublicAddress,
                reason: format!(
                    "the address rule ({ip} is a non-public {} address and no allow rule or grant names it; `*` and host names never cover one)",
                    net::non_public_kind(ip).unwrap_or("non-public")
                ),
                rule: None,
            };
        }
        PolicyDecision {
            decision: self.default,
            basis: DecisionBasis::Default,
            reason: format!("policy default `{}`", self.default),
            rule: None,
        }
    }
}

/// The variables of `env` covered by a declared `env` rule: the candidates
/// a program the skill runs may see (the gate still decides each).
pub fn declared_env_candidates<'a>(
    declared: &[CapabilityRule],
    env: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, &'a str)> {
    let rules: Vec<&CapabilityRule> = declared
        .iter()
        .filter(|r| r.kind == CapabilityKind::Env && matches!(r.scope, Scope::Any | Scope::Name(_)))
        .collect();
    if rules.is_empty() {
        return Vec::new();
    }
    env.iter()
        .filter(|(k, _)| {
            rules
                .iter()
                .any(|r| r.covers(CapabilityKind::Env, &Target::Name(k)))
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declared_variables_are_candidates() {
        let ws = std::env::temp_dir();
        let base = crate::paths::scope_base(&ws);
        let rule = |s: &str| CapabilityRule::parse(s, &base).unwrap();
        let env: BTreeMap<String, String> = [
            ("HOME", "/h"),
            ("GH_TOKEN", "t"),
            ("PATH", "/bin"),
            ("LANG", "C"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let names = |declared: &[CapabilityRule]| -> Vec<String> {
            declared_env_candidates(declared, &env)
                .into_iter()
                .map(|(k, _)| k.to_string())
                .collect()
        };
        assert!(names(&[rule("exec:git")]).is_empty());
        assert_eq!(
            names(&[rule("env:PATH"), rule("env:NOPE"), rule("exec:*")]),
            ["PATH"]
        );
        assert_eq!(names(&[rule("env:*TOKEN")]), ["GH_TOKEN"]);
        assert_eq!(names(&[rule("env:*")]).len(), 4);
    }

    fn base() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        (dir, root)
    }

    fn rule(s: &str, ws: &Path) -> CapabilityRule {
        CapabilityRule::parse(s, &crate::paths::scope_base(ws)).unwrap()
    }

    #[test]
    fn unknown_capability_suggests_the_closest_name() {
        let err = CapabilityKind::parse("fs.raed").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("did you mean `fs.read`"), "{msg}");
        assert!(msg.contains("net.http"), "{msg}");
        assert!(
            CapabilityKind::parse("bogus")
                .unwrap_err()
                .to_string()
                .contains("known capabilities")
        );
    }

    #[test]
    fn scope_presence_is_checked_per_kind() {
        let (_d, ws) = base();
        let b = crate::paths::scope_base(&ws);
        assert!(matches!(
            CapabilityRule::parse("fs.read", &b),
            Err(CapabilityError::MissingScope { .. })
        ));
        assert!(matches!(
            CapabilityRule::parse("kv:foo", &b),
            Err(CapabilityError::UnexpectedScope { .. })
        ));
        assert_eq!(CapabilityRule::parse("kv", &b).unwrap().scope, Scope::Any);
        assert!(CapabilityRule::parse("fs.read:~/x", &b).is_err());
        assert!(CapabilityRule::parse("exec:a b", &b).is_err());
    }

    #[test]
    fn directory_scope_covers_beneath_but_not_a_shared_prefix() {
        let (_d, ws) = base();
        let r = rule("fs.read:./notes", &ws);
        let inside = ws.join("notes/a/b.txt");
        let itself = ws.join("notes");
        let evil = ws.join("notes-evil/x");
        assert!(r.covers(CapabilityKind::FsRead, &Target::Path(&inside)));
        assert!(r.covers(CapabilityKind::FsRead, &Target::Path(&itself)));
        assert!(!r.covers(CapabilityKind::FsRead, &Target::Path(&evil)));
        assert!(!r.covers(CapabilityKind::FsWrite, &Target::Path(&inside)));
        // `..` in a rule is normalised, not kept as a string prefix.
        let r2 = rule("fs.read:./a/../notes", &ws);
        assert!(r2.covers(CapabilityKind::FsRead, &Target::Path(&inside)));
    }

    #[test]
    fn name_patterns_use_wildcards() {
        let (_d, ws) = base();
        let r = rule("env:*TOKEN*", &ws);
        assert!(r.covers(CapabilityKind::Env, &Target::Name("GITHUB_TOKEN")));
        assert!(r.covers(CapabilityKind::Env, &Target::Name("TOKEN")));
        assert!(!r.covers(CapabilityKind::Env, &Target::Name("HOME")));
        assert!(rule("exec:*", &ws).covers(CapabilityKind::Exec, &Target::Name("git")));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn deny_beats_ask_beats_allow_and_grants_answer_ask_only() {
        let (_d, ws) = base();
        let mut p = Policy {
            default: Decision::Deny,
            ..Default::default()
        };
        p.global.allow.push(rule("fs.read:./notes", &ws));
        p.global.ask.push(rule("exec:*", &ws));
        p.global.deny.push(rule("env:*TOKEN*", &ws));
        p.global.deny.push(rule("fs.read:./notes/locked", &ws));
        p.skills.insert(
            "notes".into(),
            RuleSet {
                allow: vec![rule("exec:git", &ws), rule("env:GH_TOKEN", &ws)],
                ..Default::default()
            },
        );
        let note = ws.join("notes/a.txt");
        let locked = ws.join("notes/locked/a.txt");
        let d = |skill: &str, grants: &[CapabilityRule], k, t: Target<'_>| {
            p.decide(skill, grants, k, &t).decision
        };
        assert_eq!(
            d("x", &[], CapabilityKind::FsRead, Target::Path(&note)),
            Decision::Allow
        );
        assert_eq!(
            d("x", &[], CapabilityKind::FsRead, Target::Path(&locked)),
            Decision::Deny
        );
        // Ask (global) beats allow (per skill).
        assert_eq!(
            d("notes", &[], CapabilityKind::Exec, Target::Name("git")),
            Decision::Ask
        );
        // Deny (global) beats allow (per skill).
        assert_eq!(
            d("notes", &[], CapabilityKind::Env, Target::Name("GH_TOKEN")),
            Decision::Deny
        );
        // A grant answers ask, not deny.
        let g = [rule("exec:git", &ws), rule("env:GH_TOKEN", &ws)];
        assert_eq!(
            d("notes", &g, CapabilityKind::Exec, Target::Name("git")),
            Decision::Allow
        );
        assert_eq!(
            d("notes", &g, CapabilityKind::Env, Target::Name("GH_TOKEN")),
            Decision::Deny
        );
        assert_eq!(
            d("x", &[], CapabilityKind::Kv, Target::None),
            Decision::Deny
        );
    }

    fn host_target(h: &str) -> net::Target {
        net::parse_target(h).unwrap()
    }

    /// Issue 9, Security 4: `net.http:*` and host names never grant a
    /// non-public address; only a rule naming it does, and deny `*` still
    /// denies it. Every IP spelling lands on the same decision.
    /// `includes` is for listings: it says yes only when sure.
    #[test]
    fn a_rule_includes_only_what_it_surely_grants() {
        let ws = Path::new("/ws");
        let base = ScopeBase {
            workspace: ws,
            resolve: paths::normalize_lexically,
        };
        let r = |t: &str| CapabilityRule::parse(t, &base).unwrap();
        assert!(r("fs.read:./a").includes(&r("fs.read:./a/b")));
        assert!(!r("fs.read:./a/b").includes(&r("fs.read:./a")));
        assert!(!r("fs.write:./a").includes(&r("fs.read:./a")));
        assert!(r("exec:*").includes(&r("exec:git")));
        assert!(r("exec:g*").includes(&r("exec:git")));
        assert!(!r("exec:git").includes(&r("exec:g*")));
        assert!(r("kv").includes(&r("kv")));
        assert!(r("net.http:api.example.com").includes(&r("net.http:api.example.com")));
        assert!(!r("net.http:*").includes(&r("net.http:127.0.0.1:8080")));
        assert!(!r("fs.read:./*.pem").includes(&r("fs.read:./a.pem")));
    }

    #[test]
    fn non_public_addresses_need_a_rule_that_names_them() {
        let (_d, ws) = base();
        let mut p = Policy {
            default: Decision::Allow,
            ..Default::default()
        };
        p.global.allow.push(rule("net.http:*", &ws));
        p.global.allow.push(rule("net.http:localhost", &ws));
        let decide = |p: &Policy, grants: &[CapabilityRule], url: &str| {
            let t = host_target(url);
            let target = Target::Host {
                host: &t.host,
                port: t.port,
            };
            p.decide("s", grants, CapabilityKind::NetHttp, &target)
        };
        for url in [
            "http://127.0.0.1:18082/",
            "http://2130706433:18082/",
            "http://0x7f.1:18082/",
            "http://0177.0.0.1:18082/",
            "http://[::ffff:127.0.0.1]:18082/",
            "http://[::1]:18082/",
            "http://169.254.169.254/",
            "http://10.1.2.3/",
            "http://100.64.0.1/",
            "http://[fd00::1]/",
            "http://0.0.0.0:18082/",
        ] {
            let d = decide(&p, &[], url);
            assert_eq!(d.decision, Decision::Deny, "{url}: {d:?}");
            assert_eq!(d.basis, DecisionBasis::NonPublicAddress, "{url}");
            assert!(d.reason.contains("non-public"), "{}", d.reason);
        }
        // A public address and a name are decided as before.
        assert_eq!(
            decide(&p, &[], "http://93.184.216.34/").decision,
            Decision::Allow
        );
        assert_eq!(
            decide(&p, &[], "http://localhost:1/").decision,
            Decision::Allow
        );
        // Named by an allow rule, a CIDR, or a grant: allowed, port held.
        let mut named = p.clone();
        named
            .global
            .allow
            .push(rule("net.http:127.0.0.1:18082", &ws));
        named.global.allow.push(rule("net.http:10.0.0.0/8", &ws));
        assert_eq!(
            decide(&named, &[], "http://0x7f000001:18082/").decision,
            Decision::Allow
        );
        assert_eq!(
            decide(&named, &[], "http://127.0.0.1:18083/").decision,
            Decision::Deny
        );
        assert_eq!(
            decide(&named, &[], "http://10.9.9.9/").decision,
            Decision::Allow
        );
        let g = [rule("net.http:[::1]:18082", &ws)];
        assert_eq!(
            decide(&p, &g, "http://[::1]:18082/").decision,
            Decision::Allow
        );
        // An ask rule with `*` does not reach it either; one naming it does.
        let mut ask = Policy::default();
        ask.global.ask.push(rule("net.http:*", &ws));
        assert_eq!(
            decide(&ask, &[], "http://127.0.0.1/").decision,
            Decision::Deny
        );
        ask.global.ask.push(rule("net.http:127.0.0.1", &ws));
        assert_eq!(
            decide(&ask, &[], "http://127.0.0.1/").decision,
            Decision::Ask
        );
        // Deny `*` denies loopback although it could never grant it.
        let mut deny = named.clone();
        deny.global.deny.push(rule("net.http:*", &ws));
        let d = decide(&deny, &[], "http://127.0.0.1:18082/");
        assert_eq!((d.decision, d.basis), (Decision::Deny, DecisionBasis::Rule));
        // Declarations follow the same rule (the gate's first check).
        let star = rule("net.http:*", &ws);
        let lo = host_target("http://127.0.0.1:18082/");
        let lo = Target::Host {
            host: &lo.host,
            port: lo.port,
        };
        assert!(!star.covers(CapabilityKind::NetHttp, &lo));
        assert!(star.reaches(CapabilityKind::NetHttp, &lo));
        assert!(rule("net.http:127.0.0.1:18082", &ws).covers(CapabilityKind::NetHttp, &lo));
    }

    /// Issue 9, Security 3: `always` stores exactly the target's rule.
    #[test]
    fn the_exact_rule_names_one_target_and_nothing_wider() {
        let (_d, ws) = base();
        let b = crate::paths::scope_base(&ws);
        let ex = |kind, t: Target<'_>| exact_rule(kind, &t, &b).map(|r| r.text);
        assert_eq!(
            ex(CapabilityKind::Exec, Target::Name("ls")).as_deref(),
            Some("exec:ls")
        );
        assert_eq!(ex(CapabilityKind::Kv, Target::None).as_deref(), Some("kv"));
        let file = ws.join("notes/a.txt");
        let r = exact_rule(CapabilityKind::FsRead, &Target::Path(&file), &b).unwrap();
        assert_eq!(r.text, format!("fs.read:{}", file.display()));
        assert!(!r.covers(
            CapabilityKind::FsRead,
            &Target::Path(&ws.join("notes/b.txt"))
        ));
        let h = Host::Ip("::1".parse().unwrap());
        assert_eq!(
            ex(
                CapabilityKind::NetHttp,
                Target::Host {
                    host: &h,
                    port: 8080
                }
            )
            .as_deref(),
            Some("net.http:[::1]:8080")
        );
        let n = Host::Name("api.example.com".into());
        assert_eq!(
            ex(
                CapabilityKind::NetHttp,
                Target::Host {
                    host: &n,
                    port: 443
                }
            )
            .as_deref(),
            Some("net.http:api.example.com:443")
        );
        // Nothing names these alone: `always` is not offered.
        assert_eq!(ex(CapabilityKind::Exec, Target::Name("*")), None);
        assert_eq!(ex(CapabilityKind::Exec, Target::Name("l*s")), None);
        assert_eq!(ex(CapabilityKind::Exec, Target::Name("a b")), None);
        assert_eq!(ex(CapabilityKind::Exec, Target::Name("ls\r\x1b[2K")), None);
        let glob = ws.join("a*b");
        assert_eq!(ex(CapabilityKind::FsRead, Target::Path(&glob)), None);
    }

    /// A small deterministic generator, so the property below needs no
    /// extra crates and fails the same way every time.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn rule_parsing_never_panics_and_round_trips() {
        let (_d, ws) = base();
        let b = crate::paths::scope_base(&ws);
        let pieces = [
            "fs.read",
            "fs.write",
            "net.http",
            "exec",
            "env",
            "kv",
            "tools.call",
            ":",
            "*",
            ".",
            "/",
            "..",
            "~",
            "a",
            "[",
            "]",
            "::1",
            "127.0.0.1",
            "80",
            "@",
            " ",
            "\0",
            "é",
            "example.com",
            "*.",
            "-",
            "%",
        ];
        let mut st = 0x9e37_79b9_7f4a_7c15u64;
        let mut parsed = 0;
        for _ in 0..20_000 {
            let n = (xorshift(&mut st) % 6) as usize;
            let text: String = (0..n)
                .map(|_| pieces[(xorshift(&mut st) % pieces.len() as u64) as usize])
                .collect();
            if let Ok(r) = CapabilityRule::parse(&text, &b) {
                parsed += 1;
                let again =
                    CapabilityRule::parse(&r.text, &b).expect("a parsed rule's text parses");
                assert_eq!(again, r, "{text:?}");
            }
        }
        assert!(
            parsed > 100,
            "the generator should hit valid rules too ({parsed})"
        );
    }
}
