//! `keel.toml`: the operator's configuration.
//!
//! Parsing is pure: [`Config::parse`] takes the file's text and the directory
//! it was found in, and returns a validated [`Config`] or an error naming the
//! line and the key. Nothing else reads the environment or the file system
//! while parsing; the CLI hands in what it found. With no file at all,
//! [`Config::default_for`] gives built-in defaults that start cleanly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::capability::{CapabilityError, CapabilityRule, Decision, Policy, RuleSet};

/// Errors from reading `keel.toml`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read. (The I/O error is part of the message,
    /// not a separate source, so a `{:#}` chain says it once.)
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The path is a directory, not a file.
    #[error(
        "{path} is a directory, not a configuration file; remove or rename it, or point --config at a file"
    )]
    IsDirectory { path: PathBuf },
    /// The TOML is malformed or has a key of the wrong type or name.
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A policy rule is not a valid capability rule.
    #[error("{path}:{line}: policy rule `{rule}` in `{list}`: {error}")]
    Rule {
        path: PathBuf,
        line: usize,
        list: String,
        rule: String,
        error: Box<CapabilityError>,
    },
    /// Workspace discovery found a `keel.toml` that another user owns.
    #[error(
        "{path} is owned by another user (uid {owner}), and keel takes no policy from a file someone else controls; run keel from your own workspace, pass --config, or take the file over (chown)"
    )]
    NotYours { path: PathBuf, owner: u32 },
    /// A value is out of range or otherwise invalid.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Sandbox limits for one skill's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory cap per engine state, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock deadline per tool call.
    pub timeout: std::time::Duration,
    /// Instruction/operation budget per call (Luau: interrupt checks, which
    /// fire on every loop iteration and call; Rhai: operations).
    pub max_operations: u64,
    /// Maximum nesting of script function calls.
    pub max_call_depth: usize,
    /// Engine states kept per skill version, so that calls waiting on I/O do
    /// not queue behind each other.
    pub max_instances: usize,
    /// Most bytes (keys plus JSON values) a skill may keep in `keel.kv`.
    pub kv_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 * 1024 * 1024,
            timeout: std::time::Duration::from_secs(30),
            max_operations: 100_000_000,
            max_call_depth: 128,
            max_instances: 4,
            kv_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from, if anywhere.
    pub source: Option<PathBuf>,
    /// The workspace root: absolute and canonical.
    pub workspace: PathBuf,
    /// Folders searched for skills, in order (before the user's data dir
    /// and the built-in skills).
    pub skill_paths: Vec<PathBuf>,
    /// Whether the skills compiled into the binary are offered.
    pub builtin_skills: bool,
    /// Whether to watch skill folders and reload on change.
    pub watch: bool,
    pub limits: Limits,
    pub skill_limits: BTreeMap<String, Limits>,
    pub policy: Policy,
    /// `[models]`, if the file has one.
    pub models: Option<ModelsConfig>,
    /// `[agent]`: the prompt and the limits of a run.
    pub agent: AgentConfig,
    /// `[gateway]`: how `keel serve` listens and whom it lets in.
    pub gateway: GatewayConfig,
    /// `[telemetry]`: how keel reports on itself.
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]` in keel.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `log_format = "text" | "json"` (the `--log-format` flag wins).
    pub log_format: crate::telemetry::LogFormat,
}

/// `[gateway]`: the HTTP gateway of `keel serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Where to listen (`--listen` overrides it). Loopback by default: a
    /// non-loopback address is served with a warning to put TLS in front.
    pub listen: std::net::SocketAddr,
    /// The environment variable holding the access token; when it is
    /// unset, keel keeps a random token in the data dir (`keel token`).
    pub token_env: String,
    /// Browser origins allowed besides the gateway's own
    /// (`https://ops.example.com`), exact matches.
    pub allowed_origins: Vec<String>,
    /// Host names the gateway answers to besides the address it listens
    /// on (the name a reverse proxy forwards, e.g. `keel.example.com`).
    pub allowed_hosts: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most event streams (SSE) open at once per token.
    pub max_streams: usize,
    /// How long runs in flight may finish after SIGTERM/SIGINT.
    pub shutdown_grace: std::time::Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 5335)),
            token_env: "KEEL_TOKEN".into(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_body_bytes: 1 << 20,
            max_streams: 100,
            shutdown_grace: std::time::Duration::from_secs(10),
        }
    }
}

/// `[agent]`: how runs are built and bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Replaces the built-in system prompt (skills' instructions are still
    /// added after it).
    pub system_prompt: Option<String>,
    /// Model turns that asked for tools, per run.
    pub max_tool_rounds: u32,
    /// Wall-clock time per run (approvals included).
    pub max_run_time: std::time::Duration,
    /// Input + output tokens over a run's model calls.
    pub max_run_tokens: u64,
    /// `max_tokens` of each model call.
    pub max_output_tokens: u32,
    /// How long a run waits for an approval before taking it as no.
    pub approval_timeout: std::time::Duration,
    /// Whole-request timeout of one model call.
    pub model_timeout: std::time::Duration,
    /// How long a model's stream may stay silent (keep-alive comments do
    /// not count) before the call fails as interrupted.
    pub model_idle_timeout: std::time::Duration,
    /// How long a model may take to send the first byte of its answer
    /// (reading a long prompt on a CPU takes a while).
    pub model_first_token_timeout: std::time::Duration,
    /// Longest answer kept from one model call (text plus tool-call
    /// arguments, in bytes); the stream is cut there.
    pub max_answer_bytes: usize,
    /// The context window assumed for models that do not set one.
    pub context_window: u32,
    /// Compact when a request would fill this fraction of the window.
    pub compact_at: f64,
    /// User turns kept verbatim by compaction.
    pub keep_turns: usize,
    /// Most tools offered to the model in one request. With more tools
    /// installed, a request offers keel's own tools, those of the skills
    /// activated in the session and those found by `tools.search`.
    pub max_offered_tools: usize,
    /// Skills active in every session from its first request: their tools
    /// are offered without a `skills.activate` first.
    pub active_skills: Vec<String>,
}

/// Default of `[agent] max_offered_tools`.
pub const DEFAULT_MAX_OFFERED_TOOLS: usize = 40;
/// Bounds of `[agent] max_offered_tools`: keel's own three tools at
/// least; OpenAI refuses requests with more than 128 tools.
pub const OFFERED_TOOLS_RANGE: std::ops::RangeInclusive<usize> = 3..=128;

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            system_prompt: None,
            max_tool_rounds: 20,
            max_run_time: std::time::Duration::from_secs(600),
            max_run_tokens: 1_000_000,
            max_output_tokens: 4096,
            approval_timeout: std::time::Duration::from_secs(120),
            model_timeout: std::time::Duration::from_secs(300),
            model_idle_timeout: std::time::Duration::from_secs(30),
            model_first_token_timeout: std::time::Duration::from_secs(120),
            max_answer_bytes: 1 << 20,
            context_window: 32_768,
            compact_at: 0.8,
            keep_turns: 2,
            max_offered_tools: DEFAULT_MAX_OFFERED_TOOLS,
            active_skills: Vec::new(),
        }
    }
}

/// One `[models.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    pub provider: crate::llm::ProviderKind,
    /// Defaults to the provider's public API.
    pub base_url: String,
    pub model: String,
    /// The environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    pub context_window: Option<u32>,
}

/// `[models]`: the chain, in order, and every model it names.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelsConfig {
    pub chain: Vec<ModelConfig>,
}

/// Where keel runs from `dir` with no `--config`, as cargo and git find
/// their roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovered {
    /// The nearest `keel.toml` in `dir` or a folder above it.
    File(PathBuf),
    /// No `keel.toml` above: the defaults, for this workspace — the folder
    /// holding the nearest `skills` folder `dir` is inside (so running in
    /// `ws/skills/x` is running in `ws`), else `dir` itself.
    Defaults(PathBuf),
}

/// Looks for the workspace of `dir`: the nearest `keel.toml` upward
/// (a directory or an unreadable entry of that name stops the search and is
/// reported by [`Config::load`], never skipped). On Unix a `keel.toml` owned
/// by another user (other than root) is refused: anyone who can write
/// `/tmp/keel.toml` would otherwise set the policy of every keel run under
/// `/tmp`.
pub fn discover(dir: &Path) -> Result<Discovered, ConfigError> {
    for d in dir.ancestors() {
        let candidate = d.join("keel.toml");
        let Ok(meta) = std::fs::symlink_metadata(&candidate) else {
            continue;
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me && meta.uid() != 0 {
                return Err(ConfigError::NotYours {
                    path: candidate,
                    owner: meta.uid(),
                });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        return Ok(Discovered::File(candidate));
    }
    let in_skills = dir
        .ancestors()
        .find(|d| d.file_name().is_some_and(|n| n == "skills"))
        .and_then(Path::parent);
    Ok(Discovered::Defaults(in_skills.unwrap_or(dir).to_path_buf()))
}

impl Config {
    /// Defaults for a workspace with no `keel.toml`.
    pub fn default_for(workspace: &Path) -> Self {
        let workspace = crate::paths::canonicalize_lenient(workspace);
        Self {
            source: None,
            skill_paths: vec![workspace.join("skills"), workspace.join("scripts")],
            workspace,
            builtin_skills: true,
            watch: true,
            limits: Limits::default(),
            skill_limits: BTreeMap::new(),
            policy: Policy::default(),
            models: None,
            agent: AgentConfig::default(),
            gateway: GatewayConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }

    /// Limits for one skill: its own section if any, else the global ones.
    pub fn limits_for(&self, skill: &str) -> Limits {
        self.skill_limits.get(skill).copied().unwrap_or(self.limits)
    }

    /// Reads and parses `path`. `dir` anchors relative paths (the file's
    /// folder is the default workspace).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if path.is_dir() {
            return Err(ConfigError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Self::parse(&text, path, &dir)
    }

    /// Parses the text of a `keel.toml` found at `path`, in folder `dir`.
    pub fn parse(text: &str, path: &Path, dir: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: toml_error_line(text, &e),
            message: suggest_field(e.message()),
        })?;
        let at = Locator::new(text);
        let workspace = match &raw.workspace {
            Some(w) => crate::paths::canonicalize_lenient(&dir.join(w)),
            None => crate::paths::canonicalize_lenient(dir),
        };
        let mut cfg = Self::default_for(&workspace);
        cfg.source = Some(path.to_path_buf());
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if let Some(s) = raw.skills {
            if let Some(p) = s.paths {
                cfg.skill_paths = p.iter().map(|p| workspace.join(p)).collect();
            }
            cfg.builtin_skills = s.builtin.unwrap_or(true);
            cfg.watch = s.watch.unwrap_or(true);
        }
        if let Some(l) = raw.limits {
            let base = RawLimits {
                memory_mb: l.memory_mb,
                timeout_ms: l.timeout_ms,
                max_operations: l.max_operations,
                max_call_depth: l.max_call_depth,
                max_instances: l.max_instances,
                kv_mb: l.kv_mb,
            };
            cfg.limits = base
                .apply(Limits::default())
                .map_err(|m| invalid(format!("[limits]: {m}")))?;
            for (name, raw) in l.skills {
                let lim = raw
                    .apply(cfg.limits)
                    .map_err(|m| invalid(format!("[limits.skills.{name}]: {m}")))?;
                cfg.skill_limits.insert(name, lim);
            }
        }
        if let Some(a) = raw.agent {
            cfg.agent = a.apply().map_err(invalid)?;
        }
        if let Some(g) = raw.gateway {
            cfg.gateway = g.apply().map_err(invalid)?;
        }
        if let Some(t) = raw.telemetry {
            cfg.telemetry.log_format = t.log_format.unwrap_or_default();
        }
        if let Some(m) = raw.models {
            cfg.models = Some(parse_models(m).map_err(|(place, message)| {
                let keys: Vec<&str> = place.iter().map(String::as_str).collect();
                ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: at.line(&keys, None),
                    message,
                }
            })?);
        }
        if let Some(p) = raw.policy {
            let base = crate::paths::scope_base(&workspace);
            let rules =
                |list: &str, rules: Vec<String>| -> Result<Vec<CapabilityRule>, ConfigError> {
                    rules
                        .into_iter()
                        .map(|r| {
                            CapabilityRule::parse(&r, &base).map_err(|error| {
                                let keys: Vec<&str> = list.split('.').collect();
                                ConfigError::Rule {
                                    path: path.to_path_buf(),
                                    line: at.line(&keys, Some(&r)),
                                    list: list.to_string(),
                                    rule: r.clone(),
                                    error: Box::new(error),
                                }
                            })
                        })
                        .collect()
                };
            let set = |prefix: &str, raw: RawRuleSet| -> Result<RuleSet, ConfigError> {
                Ok(RuleSet {
                    allow: rules(&format!("{prefix}allow"), raw.allow)?,
                    ask: rules(&format!("{prefix}ask"), raw.ask)?,
                    deny: rules(&format!("{prefix}deny"), raw.deny)?,
                })
            };
            if let Some(d) = &p.default {
                cfg.policy.default = Decision::parse(d).ok_or_else(|| {
                    let hint = crate::capability::did_you_mean(d, ["allow", "ask", "deny"].into_iter())
                        .map(|s| format!(" (did you mean \"{s}\"?)"))
                        .unwrap_or_default();
                    ConfigError::Syntax {
                        path: path.to_path_buf(),
                        line: at.line(&["policy", "default"], None),
                        message: format!(
                            "[policy] default = \"{d}\" is not a decision{hint}; use \"allow\", \"ask\" or \"deny\""
                        ),
                    }
                })?;
            }
            cfg.policy.global = set(
                "policy.",
                RawRuleSet {
                    allow: p.allow,
                    ask: p.ask,
                    deny: p.deny,
                },
            )?;
            for (name, raw) in p.skills {
                let s = set(&format!("policy.skills.{name}."), raw)?;
                cfg.policy.skills.insert(name, s);
            }
        }
        Ok(cfg)
    }
}

/// Finds the line of a key (or of one string in a list) in the text of a
/// `keel.toml`, for errors found after deserializing, when serde's spans
/// are gone.
struct Locator<'a> {
    text: &'a str,
    root: Option<toml::Spanned<toml::de::DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            root: toml::de::DeTable::parse(text).ok(),
        }
    }

    /// The 1-based line of the deepest of `keys` that exists (of the list
    /// item equal to `item`, when given); 1 when none does.
    fn line(&self, keys: &[&str], item: Option<&str>) -> usize {
        let Some(root) = &self.root else { return 1 };
        let mut span = None;
        let mut table = Some(root.get_ref());
        let mut value: Option<&toml::Spanned<toml::de::DeValue<'_>>> = None;
        for k in keys {
            let Some((key, v)) = table.and_then(|t| t.get_key_value(*k)) else {
                break;
            };
            span = Some(key.span());
            value = Some(v);
            table = match v.get_ref() {
                toml::de::DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        if let (Some(item), Some(v)) = (item, value)
            && let toml::de::DeValue::Array(items) = v.get_ref()
            && let Some(found) = items
                .iter()
                .find(|i| matches!(i.get_ref(), toml::de::DeValue::String(s) if s.as_ref() == item))
        {
            span = Some(found.span());
        }
        span.map(|s| {
            self.text
                .get(..s.start)
                .unwrap_or(self.text)
                .matches('\n')
                .count()
                + 1
        })
        .unwrap_or(1)
    }
}

/// Adds "did you mean" to serde's "unknown field `x`, expected one of `a`,
/// `b`" when one of the expected names is close to `x`.
fn suggest_field(message: &str) -> String {
    let message = message.trim();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match crate::capability::did_you_mean(unknown, candidates.into_iter()) {
        Some(s) => format!("{message} (did you mean `{s}`?)"),
        None => message.to_string(),
    }
}

/// The 1-based line a TOML error points at.
pub fn toml_error_line(text: &str, e: &toml::de::Error) -> usize {
    e.span()
        .map(|s| text.get(..s.start).unwrap_or(text).matches('\n').count() + 1)
        .unwrap_or(1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    workspace: Option<String>,
    skills: Option<RawSkills>,
    limits: Option<RawLimitsSection>,
    policy: Option<RawPolicy>,
    models: Option<toml::Table>,
    agent: Option<RawAgent>,
    gateway: Option<RawGateway>,
    telemetry: Option<RawTelemetry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<String>,
    token_env: Option<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    max_body_bytes: Option<usize>,
    max_streams: Option<usize>,
    shutdown_grace_seconds: Option<u64>,
}

impl RawGateway {
    fn apply(self) -> Result<GatewayConfig, String> {
        let d = GatewayConfig::default();
        let listen = match self.listen {
            Some(l) => parse_listen(&l).map_err(|e| format!("[gateway] {e}"))?,
            None => d.listen,
        };
        let token_env = self.token_env.unwrap_or(d.token_env);
        if token_env.is_empty()
            || !token_env
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "[gateway] token_env = {token_env:?} is not an environment variable name; use letters, digits and _ (e.g. \"KEEL_TOKEN\")"
            ));
        }
        for o in &self.allowed_origins {
            let ok = url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && !o.ends_with('/')
            });
            if !ok {
                return Err(format!(
                    "[gateway] allowed_origins: {o:?} is not an origin; write scheme, host and port only, e.g. \"https://ops.example.com\" (no path, no trailing /)"
                ));
            }
        }
        for h in &self.allowed_hosts {
            if h.is_empty() || h.contains(['/', ' ', '@']) || h.contains("://") {
                return Err(format!(
                    "[gateway] allowed_hosts: {h:?} is not a host name; write the name (and port, if not the listening one), e.g. \"keel.example.com\""
                ));
            }
        }
        let max_body_bytes = self.max_body_bytes.unwrap_or(d.max_body_bytes);
        if !(1024..=(1 << 30)).contains(&max_body_bytes) {
            return Err(format!(
                "[gateway] max_body_bytes = {max_body_bytes} is out of range; use 1024..=1073741824 (the default is 1048576)"
            ));
        }
        let max_streams = self.max_streams.unwrap_or(d.max_streams);
        if !(1..=100_000).contains(&max_streams) {
            return Err(format!(
                "[gateway] max_streams = {max_streams} is out of range; use 1..=100000 (the default is 100)"
            ));
        }
        let shutdown_grace = match self.shutdown_grace_seconds {
            Some(s) if s > 3600 => {
                return Err(format!(
                    "[gateway] shutdown_grace_seconds = {s} is too long; use at most 3600 (the default is 10)"
                ));
            }
            Some(s) => std::time::Duration::from_secs(s),
            None => d.shutdown_grace,
        };
        Ok(GatewayConfig {
            listen,
            token_env,
            allowed_origins: self.allowed_origins,
            allowed_hosts: self
                .allowed_hosts
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            max_body_bytes,
            max_streams,
            shutdown_grace,
        })
    }
}

/// Parses a listening address: `IP:PORT`, or `localhost:PORT` for the
/// IPv4 loopback. Names other than `localhost` are refused rather than
/// resolved: the address keel binds must be the one the operator read.
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    if let Some(port) = text.strip_prefix("localhost:")
        && let Ok(p) = port.parse::<u16>()
    {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], p)));
    }
    Err(format!(
        "listen = {text:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:5335\" (or \"0.0.0.0:5335\" for every interface, behind TLS)"
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    log_format: Option<crate::telemetry::LogFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    system_prompt: Option<String>,
    max_tool_rounds: Option<u32>,
    max_run_seconds: Option<u64>,
    max_run_tokens: Option<u64>,
    max_output_tokens: Option<u32>,
    approval_timeout_seconds: Option<u64>,
    model_timeout_seconds: Option<u64>,
    model_idle_seconds: Option<u64>,
    model_first_token_seconds: Option<u64>,
    max_answer_bytes: Option<usize>,
    context_window: Option<u32>,
    compact_at: Option<f64>,
    keep_turns: Option<usize>,
    max_offered_tools: Option<usize>,
    #[serde(default)]
    active_skills: Vec<String>,
}

impl RawAgent {
    fn apply(self) -> Result<AgentConfig, String> {
        use std::time::Duration;
        let d = AgentConfig::default();
        let positive = |name: &str, v: u64| {
            if v == 0 {
                Err(format!("[agent] {name} must be at least 1"))
            } else {
                Ok(v)
            }
        };
        let compact_at = self.compact_at.unwrap_or(d.compact_at);
        if !(0.1..=1.0).contains(&compact_at) {
            return Err(format!(
                "[agent] compact_at = {compact_at} must be a fraction of the context window between 0.1 and 1.0 (e.g. 0.8)"
            ));
        }
        if let Some(bad) = self.active_skills.iter().find(|n| {
            !crate::skill::manifest::valid_skill_name(n)
                && crate::skill::instructions::name_problem(n).is_some()
        }) {
            return Err(format!(
                "[agent] active_skills: `{bad}` is not a skill name; list skills by name, e.g. active_skills = [\"calc\"]"
            ));
        }
        Ok(AgentConfig {
            system_prompt: self.system_prompt,
            active_skills: self.active_skills,
            max_tool_rounds: positive(
                "max_tool_rounds",
                self.max_tool_rounds.unwrap_or(d.max_tool_rounds).into(),
            )? as u32,
            max_run_time: self
                .max_run_seconds
                .map(|s| positive("max_run_seconds", s).map(Duration::from_secs))
                .transpose()?
                .unwrap_or(d.max_run_time),
            max_run_tokens: positive(
                "max_run_tokens",
                self.max_run_tokens.unwrap_or(d.max_run_tokens),
            )?,
            max_output_tokens: positive(
                "max_output_tokens",
                self.max_output_tokens.unwrap_or(d.max_output_tokens).into(),
            )? as u32,
            approval_timeout: self
                .approval_timeout_seconds
                .map(|s| positive("approval_timeout_seconds", s).map(Duration::from_secs))
                .transpose()?
                .unwrap_or(d.approval_timeout),
            model_timeout: self
                .model_timeout_seconds
                .map(|s| positive("model_timeout_seconds", s).map(Duration::from_secs))
                .transpose()?
                .unwrap_or(d.model_timeout),
            model_idle_timeout: self
                .model_idle_seconds
                .map(|s| positive("model_idle_seconds", s).map(Duration::from_secs))
                .transpose()?
                .unwrap_or(d.model_idle_timeout),
            model_first_token_timeout: self
                .model_first_token_seconds
                .map(|s| positive("model_first_token_seconds", s).map(Duration::from_secs))
                .transpose()?
                .unwrap_or(d.model_first_token_timeout),
            max_answer_bytes: match self.max_answer_bytes {
                Some(n) if n < 1024 => {
                    return Err(format!(
                        "[agent] max_answer_bytes = {n} is too small for any answer; use at least 1024 (the default is 1048576)"
                    ));
                }
                Some(n) => n,
                None => d.max_answer_bytes,
            },
            context_window: positive(
                "context_window",
                self.context_window.unwrap_or(d.context_window).into(),
            )? as u32,
            compact_at,
            keep_turns: self.keep_turns.unwrap_or(d.keep_turns),
            max_offered_tools: match self.max_offered_tools {
                Some(n) if !OFFERED_TOOLS_RANGE.contains(&n) => {
                    return Err(format!(
                        "[agent] max_offered_tools = {n} must be between {} and {}: keel's own tools (skills.activate, skills.read, tools.search) are always offered, and OpenAI refuses more than {} tools in a request (the default is {DEFAULT_MAX_OFFERED_TOOLS})",
                        OFFERED_TOOLS_RANGE.start(),
                        OFFERED_TOOLS_RANGE.end(),
                        OFFERED_TOOLS_RANGE.end()
                    ));
                }
                Some(n) => n,
                None => d.max_offered_tools,
            },
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    provider: String,
    base_url: Option<String>,
    model: String,
    api_key_env: Option<String>,
    context_window: Option<u32>,
}

/// `[models]` mixes the `chain` list with one table per model, so it is
/// read as a table and taken apart here.
/// An error is the keys it is about (for its line) and the message.
fn parse_models(mut table: toml::Table) -> Result<ModelsConfig, (Vec<String>, String)> {
    use crate::llm::ProviderKind;
    let at = |keys: &[&str]| -> Vec<String> {
        std::iter::once("models")
            .chain(keys.iter().copied())
            .map(str::to_string)
            .collect()
    };
    let chain: Vec<String> = match table.remove("chain") {
        Some(v) => v.try_into().map_err(|_| {
            (
                at(&["chain"]),
                "[models] chain must be a list of model names, e.g. chain = [\"main\", \"backup\"]"
                    .to_string(),
            )
        })?,
        None => Vec::new(),
    };
    let mut models = BTreeMap::new();
    for (name, value) in table {
        let raw: RawModel = value.try_into().map_err(|e: toml::de::Error| {
            let message = suggest_field(e.message());
            // The line of the unknown key, when that is the problem.
            let field = message
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                .unwrap_or_default()
                .to_string();
            (at(&[&name, &field]), format!("[models.{name}]: {message}"))
        })?;
        let provider = ProviderKind::parse(&raw.provider).ok_or_else(|| {
            let hint = crate::capability::did_you_mean(
                &raw.provider.to_ascii_lowercase(),
                ["openai", "anthropic"].into_iter(),
            )
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_default();
            (
                at(&[&name, "provider"]),
                format!(
                    "[models.{name}] provider = \"{}\" is not a provider{hint}; use \"openai\" (any OpenAI-compatible server) or \"anthropic\"",
                    raw.provider
                ),
            )
        })?;
        let base_url = raw.base_url.unwrap_or_else(|| {
            match provider {
                ProviderKind::OpenAi => "https://api.openai.com/v1",
                ProviderKind::Anthropic => "https://api.anthropic.com",
            }
            .to_string()
        });
        match url::Url::parse(&base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err((
                    at(&[&name, "base_url"]),
                    format!(
                        "[models.{name}] base_url = \"{base_url}\" is not an http(s) URL; write it like \"http://127.0.0.1:11434/v1\""
                    ),
                ));
            }
        }
        if raw.model.trim().is_empty() {
            return Err((
                at(&[&name, "model"]),
                format!("[models.{name}] model is empty; name the provider's model id"),
            ));
        }
        models.insert(
            name.clone(),
            ModelConfig {
                name,
                provider,
                base_url,
                model: raw.model,
                api_key_env: raw.api_key_env,
                context_window: raw.context_window,
            },
        );
    }
    // Without a chain, every model in name order; with one, exactly those.
    let chain = if chain.is_empty() {
        models.into_values().collect()
    } else {
        chain
            .iter()
            .map(|n| {
                models.get(n).cloned().ok_or_else(|| {
                    let hint =
                        crate::capability::did_you_mean(n, models.keys().map(String::as_str))
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                    (
                        at(&["chain"]),
                        format!("[models] chain names `{n}`, but there is no [models.{n}]{hint}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    Ok(ModelsConfig { chain })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSkills {
    paths: Option<Vec<String>>,
    builtin: Option<bool>,
    watch: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimitsSection {
    memory_mb: Option<u64>,
    timeout_ms: Option<u64>,
    max_operations: Option<u64>,
    max_call_depth: Option<usize>,
    max_instances: Option<usize>,
    kv_mb: Option<u64>,
    #[serde(default)]
    skills: BTreeMap<String, RawLimits>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mb: Option<u64>,
    timeout_ms: Option<u64>,
    max_operations: Option<u64>,
    max_call_depth: Option<usize>,
    max_instances: Option<usize>,
    kv_mb: Option<u64>,
}

impl RawLimits {
    fn apply(self, mut l: Limits) -> Result<Limits, String> {
        if let Some(m) = self.memory_mb {
            if !(1..=4096).contains(&m) {
                return Err(format!("memory_mb = {m} is out of range; use 1..=4096"));
            }
            l.memory_bytes = (m as usize) * 1024 * 1024;
        }
        if let Some(t) = self.timeout_ms {
            if !(1..=3_600_000).contains(&t) {
                return Err(format!("timeout_ms = {t} is out of range; use 1..=3600000"));
            }
            l.timeout = std::time::Duration::from_millis(t);
        }
        if let Some(o) = self.max_operations {
            if o == 0 {
                return Err("max_operations = 0 would stop every call; use at least 1000".into());
            }
            l.max_operations = o;
        }
        if let Some(d) = self.max_call_depth {
            if !(1..=10_000).contains(&d) {
                return Err(format!(
                    "max_call_depth = {d} is out of range; use 1..=10000"
                ));
            }
            l.max_call_depth = d;
        }
        if let Some(i) = self.max_instances {
            if !(1..=256).contains(&i) {
                return Err(format!("max_instances = {i} is out of range; use 1..=256"));
            }
            l.max_instances = i;
        }
        if let Some(m) = self.kv_mb {
            if !(1..=65_536).contains(&m) {
                return Err(format!("kv_mb = {m} is out of range; use 1..=65536"));
            }
            l.kv_bytes = m * 1024 * 1024;
        }
        Ok(l)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    ask: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    skills: BTreeMap<String, RawRuleSet>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRuleSet {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    ask: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let r = Config::parse(text, &dir.join("keel.toml"), &dir);
        drop(d);
        r
    }

    #[test]
    fn telemetry_log_format_parses_and_bad_values_name_the_choices() {
        use crate::telemetry::LogFormat;
        assert_eq!(parse("").unwrap().telemetry.log_format, LogFormat::Text);
        let cfg = parse("[telemetry]\nlog_format = \"json\"\n").unwrap();
        assert_eq!(cfg.telemetry.log_format, LogFormat::Json);
        let e = parse("[telemetry]\nlog_format = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2:") && e.contains("`text`") && e.contains("`json`"),
            "{e}"
        );
        let e = parse("[telemetry]\nlog_fromat = \"json\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `log_format`"), "{e}");
    }

    #[test]
    fn the_issue_example_parses() {
        let cfg = parse(
            r#"
[policy]
default = "ask"
allow = ["fs.read:./notes", "kv", "net.http:api.example.com"]
ask   = ["exec:*"]
deny  = ["env:*TOKEN*", "fs.write:./notes/locked"]
[policy.skills.notes]
allow = ["fs.write:./notes"]
[limits]
timeout_ms = 500
[limits.skills.slow]
timeout_ms = 9000
"#,
        )
        .unwrap();
        assert_eq!(cfg.policy.global.allow.len(), 3);
        assert_eq!(cfg.policy.skills["notes"].allow.len(), 1);
        assert_eq!(cfg.limits.timeout.as_millis(), 500);
        assert_eq!(cfg.limits_for("slow").timeout.as_millis(), 9000);
        assert_eq!(cfg.limits_for("other").timeout.as_millis(), 500);
    }

    #[test]
    fn models_parse_as_the_issue_writes_them() {
        let cfg = parse(
            r#"
[models]
chain = ["main", "backup"]
[models.main]
provider = "openai"
base_url = "http://127.0.0.1:11434/v1"
model = "qwen2.5:7b"
api_key_env = "OPENAI_API_KEY"
context_window = 32768
[models.backup]
provider = "anthropic"
model = "claude-sonnet-4-5"
api_key_env = "ANTHROPIC_API_KEY"
"#,
        )
        .unwrap();
        let chain = cfg.models.unwrap().chain;
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].name, "main");
        assert_eq!(chain[0].context_window, Some(32768));
        assert_eq!(chain[1].base_url, "https://api.anthropic.com");
        let e = parse(
            "[models]\nchain = [\"mian\"]\n[models.main]\nprovider = \"openai\"\nmodel = \"m\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("did you mean `main`"), "{e}");
        let e = parse("[models.main]\nprovider = \"gemini\"\nmodel = \"m\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"gemini\" is not a provider"), "{e}");
        let e = parse("[models.main]\nprovider = \"openai\"\nmodel = \"m\"\napi_key = \"sk-x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_key") && !e.contains("sk-x"), "{e}");
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let e = parse("[policy]\ndefault = \"ask\"\nallow = [\"fs.raed:./x\"]\n").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("fs.raed") && m.contains("did you mean `fs.read`"),
            "{m}"
        );
        let e = parse("[policy]\ndefault = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"maybe\"") && e.contains("allow"), "{e}");
        let e = parse("\n\n[polcy]\n").unwrap_err().to_string();
        assert!(e.contains(":3:") && e.contains("polcy"), "{e}");
        let e = parse("[limits]\nmemory_mb = 0\n").unwrap_err().to_string();
        assert!(e.contains("memory_mb = 0"), "{e}");
    }

    #[test]
    fn the_agent_section_has_defaults_and_checked_values() {
        let d = parse("").unwrap().agent;
        assert_eq!(d, AgentConfig::default());
        let a = parse(
            "[agent]\nsystem_prompt = \"Be brief.\"\nmax_tool_rounds = 3\nmax_run_seconds = 9\napproval_timeout_seconds = 5\ncompact_at = 0.5\nkeep_turns = 4\n",
        )
        .unwrap()
        .agent;
        assert_eq!(a.system_prompt.as_deref(), Some("Be brief."));
        assert_eq!(
            (
                a.max_tool_rounds,
                a.max_run_time.as_secs(),
                a.approval_timeout.as_secs()
            ),
            (3, 9, 5)
        );
        assert_eq!((a.compact_at, a.keep_turns), (0.5, 4));
        let e = parse("[agent]\nmax_offered_tools = 2\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_offered_tools = 2 must be between 3 and 128"),
            "{e}"
        );
        let e = parse("[agent]\nactive_skills = [\"Not A Name\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`Not A Name` is not a skill name"), "{e}");
        assert_eq!(
            parse("[agent]\nactive_skills = [\"calc\", \"3d-print\"]\n")
                .unwrap()
                .agent
                .active_skills,
            ["calc", "3d-print"]
        );
        let e = parse("[agent]\nmax_offered_tools = 500\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("OpenAI refuses more than 128"), "{e}");
        assert_eq!(
            parse("[agent]\nmax_offered_tools = 12\n")
                .unwrap()
                .agent
                .max_offered_tools,
            12
        );
        let e = parse("[agent]\nmax_tool_rounds = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_tool_rounds must be at least 1"), "{e}");
        let e = parse("[agent]\ncompact_at = 2.0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("compact_at = 2") && e.contains("between 0.1 and 1.0"),
            "{e}"
        );
        let e = parse("[agent]\nmax_rounds = 3\n").unwrap_err().to_string();
        assert!(
            e.contains("max_rounds") && e.contains("max_tool_rounds"),
            "{e}"
        );
    }

    #[test]
    fn model_stream_bounds_have_defaults_and_are_checked() {
        let d = parse("").unwrap().agent;
        assert_eq!(
            (
                d.model_idle_timeout.as_secs(),
                d.model_first_token_timeout.as_secs(),
                d.max_answer_bytes
            ),
            (30, 120, 1 << 20)
        );
        let a = parse("[agent]\nmodel_idle_seconds = 5\nmodel_first_token_seconds = 60\nmax_answer_bytes = 4096\n")
            .unwrap()
            .agent;
        assert_eq!(
            (
                a.model_idle_timeout.as_secs(),
                a.model_first_token_timeout.as_secs(),
                a.max_answer_bytes
            ),
            (5, 60, 4096)
        );
        let e = parse("[agent]\nmax_answer_bytes = 10\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_answer_bytes = 10") && e.contains("at least 1024"),
            "{e}"
        );
        let e = parse("[agent]\nmodel_idle_seconds = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("model_idle_seconds must be at least 1"), "{e}");
    }
}
