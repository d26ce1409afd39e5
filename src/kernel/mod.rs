//! The kernel: owns the store, the gate, the skill set and the event bus.
//!
//! [`Kernel`] is a cheap handle (`Arc` inside). It is built once with
//! [`Kernel::builder`], handed to each front end (CLI, console, later the
//! gateway), and lent to host functions only for the duration of a call,
//! inside a `CallCtx`. Tool calls run on blocking threads (engines never run
//! on a runtime worker), so a slow script never stalls the runtime.
//!
//! Every tool call, whoever makes it, passes through one function
//! (`call_tool_inner`): there a disabled skill's tool is refused
//! ([`skill_state`]), the call gets its `tool_call` log span, and it is
//! counted in the kernel's per-skill figures and Prometheus metrics
//! ([`crate::telemetry`]).

pub mod gate;
mod reload;
pub mod skill_state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use serde_json::Value;

pub use reload::{ReloadOutcome, ReloadReport};
pub use skill_state::{SkillStateChange, SkillStateError};

use crate::capability::{ScopeBase, did_you_mean};
use crate::config::Config;
use crate::host::CallCtx;
use crate::skill::{self, Origin, SearchPath, SkillSet};
use crate::store::{SkillCopy, Standing, Store, StoreError};
use crate::tool::{ToolError, ToolName, validate_args};
use gate::Gate;

/// How deep `keel.tools.call` chains may nest.
pub const MAX_TOOL_DEPTH: u32 = 8;

/// Stack size of engine threads. Rhai recurses on the native stack (one
/// frame set per script call level), and nested `tools.call` chains add
/// engines on the same thread; a runaway must hit the call-depth limit, never
/// the thread's guard page. Only the pages a call touches are committed.
pub const ENGINE_STACK: usize = 64 * 1024 * 1024;

/// Most engine threads at once (calls beyond wait for a thread).
pub const MAX_ENGINE_THREADS: usize = 256;

/// The threads tool calls run on: a runtime used only for blocking tasks,
/// so threads (with their big stacks) are reused across calls.
///
/// Started on the first call, not with the kernel: most commands (a
/// listing, a one-shot `keel ask` the model answers without tools) never
/// call a tool. It has no worker thread of its own (nothing is ever
/// `spawn`ed on it, only `spawn_blocking`), so an idle console holds no
/// thread for it until a tool runs.
struct EngineThreads(std::sync::OnceLock<Result<tokio::runtime::Runtime, String>>);

impl EngineThreads {
    fn new() -> Self {
        Self(std::sync::OnceLock::new())
    }

    fn handle(&self) -> Result<&tokio::runtime::Handle, ToolError> {
        self.0
            .get_or_init(|| {
                tokio::runtime::Builder::new_current_thread()
                    .max_blocking_threads(MAX_ENGINE_THREADS)
                    .thread_stack_size(ENGINE_STACK)
                    .thread_name("keel-engine")
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map(tokio::runtime::Runtime::handle)
            .map_err(|e| ToolError::Internal(format!("cannot start engine threads: {e}")))
    }
}

impl Drop for EngineThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks; the kernel may be dropped on a runtime
        // thread, where blocking is not allowed.
        if let Some(Ok(rt)) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Errors from building a kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No tokio runtime was given or found.
    #[error("keel needs a tokio runtime: build the kernel inside one or pass .runtime(handle)")]
    NoRuntime,
}

/// Something that happened in the kernel that a front end may show.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KernelEvent {
    /// A reload finished; the report lists what changed and what failed.
    Reloaded(Arc<ReloadReport>),
    /// `keel.toml` changed: `Ok` with a summary once the new policy is in
    /// force, `Err` with `file:line: message` when the old one stays.
    ConfigReloaded(Result<String, String>),
    /// A skill was disabled or enabled in this process
    /// ([`Kernel::set_skill_enabled`]).
    SkillState(SkillStateChange),
}

/// The kernel handle.
#[derive(Clone)]
pub struct Kernel(Arc<KernelInner>);

struct KernelInner {
    /// The configuration in force: swapped whole by a reload (see
    /// [`Kernel::reload_config`] for what applies live).
    config: ArcSwap<Config>,
    /// The workspace, fixed for the kernel's life.
    workspace: PathBuf,
    data_dir: PathBuf,
    store: Arc<Store>,
    gate: Gate,
    env: BTreeMap<String, String>,
    runtime: tokio::runtime::Handle,
    engines: EngineThreads,
    skills: ArcSwap<SkillSet>,
    events: tokio::sync::broadcast::Sender<KernelEvent>,
    reload_lock: std::sync::Mutex<()>,
    /// The model chain, built on first use (most commands never need it):
    /// `None` until then; built again after a reload changes `[models]`
    /// or the model settings of `[agent]`.
    models: std::sync::Mutex<Option<Option<Arc<crate::llm::chain::ModelChain>>>>,
    /// Prometheus metrics ([`crate::telemetry::metrics`]).
    metrics: Arc<crate::telemetry::Metrics>,
    /// Per-skill call figures ([`crate::telemetry::stats`]).
    stats: crate::telemetry::CallStats,
}

/// Builds a [`Kernel`].
pub struct KernelBuilder {
    config: Config,
    data_dir: Option<PathBuf>,
    env: BTreeMap<String, String>,
    runtime: Option<tokio::runtime::Handle>,
    in_memory: bool,
}

impl KernelBuilder {
    /// Where `keel.db` and user skills live.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The environment scripts may be granted (`env:*`, `exec` children).
    pub fn env(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = env;
        self
    }

    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Keep state in memory only (for `keel check` and tests).
    pub fn in_memory(mut self) -> Self {
        self.in_memory = true;
        self
    }

    pub fn build(self) -> Result<Kernel, KernelError> {
        let runtime = match self.runtime {
            Some(h) => h,
            None => tokio::runtime::Handle::try_current().map_err(|_| KernelError::NoRuntime)?,
        };
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| self.config.workspace.join(".keel"));
        let store = Arc::new(if self.in_memory {
            Store::in_memory()?
        } else {
            Store::open(&data_dir)?
        });
        let gate = Gate::new(
            self.config.policy.clone(),
            store.clone(),
            store.clone(),
            self.config.workspace.clone(),
        )
        .with_protected(protected_paths(&self.config, &data_dir));
        let (events, _) = tokio::sync::broadcast::channel(64);
        let kernel = Kernel(Arc::new(KernelInner {
            workspace: self.config.workspace.clone(),
            config: ArcSwap::from_pointee(self.config),
            data_dir,
            store,
            gate,
            env: self.env,
            runtime,
            engines: EngineThreads::new(),
            skills: ArcSwap::from_pointee(SkillSet::default()),
            events,
            reload_lock: std::sync::Mutex::new(()),
            models: std::sync::Mutex::new(None),
            metrics: Arc::new(crate::telemetry::Metrics::new()),
            stats: crate::telemetry::CallStats::default(),
        }));
        let set = kernel.build_skill_set(None);
        kernel.0.skills.store(Arc::new(set));
        Ok(kernel)
    }
}

/// keel's own files, which no fs capability reaches: the configuration in
/// use (and the `keel.toml` a start in the workspace would read), the data
/// directory, every skill folder, and keel's own `/proc/<pid>`.
fn protected_paths(
    config: &Config,
    data_dir: &Path,
) -> crate::capability::protected::ProtectedPaths {
    use crate::capability::protected::{ProtectedKind, ProtectedPaths};
    let mut p = ProtectedPaths::new();
    let mut add = |kind, path: &Path| {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let canonical = crate::paths::canonicalize_lenient(&abs);
        p.add(kind, abs, Some(canonical));
    };
    if let Some(src) = &config.source {
        add(ProtectedKind::Config, src);
    }
    add(ProtectedKind::Config, &config.workspace.join("keel.toml"));
    add(ProtectedKind::DataDir, data_dir);
    for dir in &config.skill_paths {
        add(ProtectedKind::SkillPath, dir);
    }
    add(ProtectedKind::SkillPath, &data_dir.join("skills"));
    // `/proc/self` resolves to this; targets are resolved before matching.
    if cfg!(any(target_os = "linux", target_os = "android")) {
        add(
            ProtectedKind::Process,
            &Path::new("/proc").join(std::process::id().to_string()),
        );
    }
    p
}

impl Kernel {
    pub fn builder(config: Config) -> KernelBuilder {
        KernelBuilder {
            config,
            data_dir: None,
            env: BTreeMap::new(),
            runtime: None,
            in_memory: false,
        }
    }

    /// The configuration in force (a reload may replace it; hold the
    /// `Arc` for one consistent view).
    pub fn config(&self) -> Arc<Config> {
        self.0.config.load_full()
    }

    pub fn workspace(&self) -> &Path {
        &self.0.workspace
    }

    pub fn data_dir(&self) -> &Path {
        &self.0.data_dir
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.0.store
    }

    pub fn gate(&self) -> &Gate {
        &self.0.gate
    }

    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.0.env
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.0.runtime
    }

    /// The current skill set.
    pub fn skills(&self) -> Arc<SkillSet> {
        self.0.skills.load_full()
    }

    /// The configured model chain (`[models]` in keel.toml, else the usual
    /// environment variables), or `None` when no model is configured.
    /// Built on first use, and again after a reload changed the models.
    pub fn models(&self) -> Option<Arc<crate::llm::chain::ModelChain>> {
        let mut cell = self.0.models.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(built) = &*cell {
            return built.clone();
        }
        let built = self.build_models();
        *cell = Some(built.clone());
        built
    }

    fn build_models(&self) -> Option<Arc<crate::llm::chain::ModelChain>> {
        use crate::llm::chain;
        let config = self.config();
        let agent = &config.agent;
        let timeout = agent.model_timeout;
        let limits = crate::llm::StreamLimits {
            max_answer_bytes: agent.max_answer_bytes,
            idle_timeout: agent.model_idle_timeout,
            first_token_timeout: agent.model_first_token_timeout,
        };
        let specs = match &config.models {
            Some(m) => chain::specs_from_config(m, &self.0.env, timeout, limits),
            None => chain::specs_from_env(&self.0.env, timeout, limits),
        };
        if specs.is_empty() {
            return None;
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = match chain::http_client(&specs) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client for models");
                return None;
            }
        };
        Some(Arc::new(
            chain::ModelChain::new(specs, http, chain::RetryPolicy::default())
                .with_metrics(self.0.metrics.clone()),
        ))
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<KernelEvent> {
        self.0.events.subscribe()
    }

    /// The kernel's Prometheus metrics, for the parts that count (the
    /// agent counts runs here).
    pub fn metrics(&self) -> &Arc<crate::telemetry::Metrics> {
        &self.0.metrics
    }

    /// The metrics in the Prometheus text format (`GET /metrics`): reads
    /// the approvals waiting on the store's thread, then renders. If the
    /// store cannot be read, the gauge keeps its last value and the rest
    /// is rendered anyway.
    pub async fn metrics_text(&self) -> String {
        match self.0.store.call(|s| s.pending_approval_count()).await {
            Ok(n) => self.0.metrics.set_approvals_pending(n),
            Err(e) => tracing::warn!(error = %e, "cannot count the approvals waiting"),
        }
        self.0.metrics.render()
    }

    /// Calls, errors and latency percentiles of skill `name`'s tools since
    /// this process started (all zero when it was never called). Kept per
    /// skill name, across reloads; see [`crate::telemetry::stats`].
    pub fn skill_stats(&self, name: &str) -> crate::telemetry::SkillStats {
        self.0.stats.skill(name)
    }

    /// [`skill_stats`](Self::skill_stats) of every skill called since
    /// this process started (keel's own tools under `skills` and `tools`).
    pub fn all_skill_stats(&self) -> Vec<crate::telemetry::SkillStats> {
        self.0
            .stats
            .skills()
            .iter()
            .map(|n| self.0.stats.skill(n))
            .collect()
    }

    /// The configuration file reloads read: the one keel started with, or
    /// `keel.toml` in the workspace if it started without one.
    pub fn config_path(&self) -> PathBuf {
        self.config()
            .source
            .clone()
            .unwrap_or_else(|| self.0.workspace.join("keel.toml"))
    }

    /// Re-reads the configuration file and puts it in force, built on the
    /// side and swapped only when the whole file is valid (else the old
    /// one stays and the error names file and line). Live: the policy,
    /// `[models]` and `[agent]` (from the next run; runs in flight keep
    /// what they started with), `[skills]` folders and `[limits]` (the
    /// skills reload under them; new folders are protected from fs
    /// capabilities at once) and `[gateway]`'s origins, hosts and bounds.
    /// Not live — the old value stays in force, and the summary and the log
    /// say a restart applies it: `workspace`, `[skills] builtin` and
    /// `watch`, `[gateway] listen` and `token_env`.
    pub fn reload_config(&self) -> Result<String, String> {
        let path = self.config_path();
        let result = if path.is_file() {
            crate::config::Config::load(&path).map_err(|e| e.to_string())
        } else {
            Ok(crate::config::Config::default_for(&self.0.workspace))
        };
        let result = result.map(|mut new| {
            let old = self.config();
            let mut restart = Vec::new();
            if new.workspace != old.workspace {
                restart.push("workspace");
                new.workspace = old.workspace.clone();
            }
            if new.builtin_skills != old.builtin_skills {
                restart.push("[skills] builtin");
                new.builtin_skills = old.builtin_skills;
            }
            if new.watch != old.watch {
                restart.push("[skills] watch");
                new.watch = old.watch;
            }
            if new.gateway.listen != old.gateway.listen {
                restart.push("[gateway] listen");
                new.gateway.listen = old.gateway.listen;
            }
            if new.gateway.token_env != old.gateway.token_env {
                restart.push("[gateway] token_env");
                new.gateway.token_env = old.gateway.token_env.clone();
            }
            let mut applied = vec!["policy reloaded"];
            let models_changed = new.models != old.models || new.agent != old.agent;
            let skills_changed = new.skill_paths != old.skill_paths
                || new.limits != old.limits
                || new.skill_limits != old.skill_limits;
            if new.gateway != old.gateway {
                applied.push("[gateway] applied");
            }
            if models_changed {
                applied.push("[models] and [agent] apply from the next run");
            }
            if skills_changed {
                applied.push("skills reloaded for the new [skills] folders and [limits]");
            }
            // New skill folders are keel's own files from now on; removed
            // ones stay protected until a restart.
            if new.skill_paths != old.skill_paths {
                let mut both = new.clone();
                for d in &old.skill_paths {
                    if !both.skill_paths.contains(d) {
                        both.skill_paths.push(d.clone());
                    }
                }
                self.0
                    .gate
                    .set_protected(protected_paths(&both, &self.0.data_dir));
            }
            self.0.gate.set_policy(new.policy.clone());
            self.0.config.store(Arc::new(new));
            if models_changed {
                *self.0.models.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            let mut summary = applied.join("; ");
            if !restart.is_empty() {
                summary.push_str(&format!(
                    "; {} keep their old value until a restart",
                    restart.join(", ")
                ));
            }
            (summary, skills_changed, !restart.is_empty())
        });
        self.0.metrics.config_reloaded(result.is_ok());
        match result {
            Ok((summary, skills_changed, needs_restart)) => {
                if needs_restart {
                    tracing::warn!("{}: {summary}", path.display());
                } else {
                    tracing::info!("{}: {summary}", path.display());
                }
                let _ = self
                    .0
                    .events
                    .send(KernelEvent::ConfigReloaded(Ok(summary.clone())));
                if skills_changed {
                    self.reload();
                }
                Ok(summary)
            }
            Err(e) => {
                tracing::warn!("keeping the previous configuration: {e}");
                let _ = self
                    .0
                    .events
                    .send(KernelEvent::ConfigReloaded(Err(e.clone())));
                Err(e)
            }
        }
    }

    /// Where skills are looked for: the configured folders, the user's data
    /// dir, then the built-in skills.
    pub fn search_path(&self) -> SearchPath {
        let mut dirs = self.config().skill_paths.clone();
        dirs.push(self.0.data_dir.join("skills"));
        SearchPath {
            dirs,
            builtin: self.config().builtin_skills,
            checked_schemas: Some(self.0.data_dir.join("tool-schemas.checked")),
        }
    }

    fn scope_base(&self) -> ScopeBase<'_> {
        crate::paths::scope_base(&self.0.workspace)
    }

    /// Where each copy of skill `name` stands in this workspace: accepted
    /// (with its capabilities newer than the name's baseline) or claimant.
    /// Records a first sighting. Without the records it fails closed:
    /// every copy is held back.
    fn sight_skill(&self, name: &str, copies: &[skill::Copy<'_>]) -> Vec<Standing> {
        let keys: Vec<(String, Vec<String>, bool)> = copies
            .iter()
            .map(|(m, origin, may_accept)| {
                (
                    origin.key(),
                    m.capabilities.iter().map(|c| c.text.clone()).collect(),
                    *may_accept,
                )
            })
            .collect();
        let asked: Vec<SkillCopy<'_>> = keys
            .iter()
            .map(|(origin, declared, may_accept)| SkillCopy {
                origin,
                declared,
                may_accept: *may_accept,
            })
            .collect();
        self.0
            .store
            .sight_skill(&self.0.workspace, name, &asked)
            .unwrap_or_else(|e| {
                tracing::warn!(skill = %name, error = %e, "could not read the skill name's accepted origins; not loading it");
                vec![Standing::Claimant { owners: vec![] }; copies.len()]
            })
    }

    fn build_skill_set(&self, previous: Option<&SkillSet>) -> SkillSet {
        let (candidates, failures) = skill::discover(&self.search_path(), &self.scope_base());
        self.assemble(candidates, failures, previous)
    }

    fn assemble(
        &self,
        candidates: Vec<skill::Candidate>,
        failures: Vec<skill::SkillFailure>,
        previous: Option<&SkillSet>,
    ) -> SkillSet {
        SkillSet::build(
            candidates,
            failures,
            previous,
            &|name| self.0.config.load().limits_for(name),
            &|name, copies| self.sight_skill(name, copies),
        )
    }

    /// Runs `f` on an engine thread (big stack) and waits for it. Safe to
    /// call from any thread, including a runtime's.
    pub fn on_engine_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ToolError> {
        let engines = self.0.engines.handle()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        engines.spawn_blocking(move || {
            let _ = tx.send(f());
        });
        rx.recv()
            .map_err(|_| ToolError::Internal("an engine thread panicked".into()))
    }

    /// Compiles a skill's argument schemas and creates a fresh engine for it
    /// (compile + load phase) on an engine thread: validation for reloads
    /// and `keel check`.
    pub fn instantiate(
        &self,
        skill: &Arc<crate::skill::LoadedSkill>,
    ) -> Result<Box<dyn crate::script::Instance>, crate::script::ScriptError> {
        for t in &skill.manifest.tools {
            t.validator()
                .map_err(|message| crate::script::ScriptError::Load { message })?;
        }
        let s = skill.clone();
        self.on_engine_thread(move || crate::script::instantiate(&s))
            .unwrap_or_else(|e| {
                Err(crate::script::ScriptError::Load {
                    message: e.to_string(),
                })
            })
    }

    /// Compiles and loads every skill of the current set in a fresh engine
    /// (engines are otherwise lazy) and returns those that fail, with
    /// file and line: `keel skills` and `keel check`.
    pub fn validate(&self) -> Vec<crate::skill::SkillFailure> {
        self.skills()
            .skills
            .values()
            // Instructions skills have no code; their SKILL.md was checked
            // when they were found.
            .filter(|s| !s.is_instructions())
            .filter_map(|s| {
                self.instantiate(s)
                    .err()
                    .map(|e| crate::skill::SkillFailure {
                        skill: Some(s.id.to_string()),
                        origin: s.source.origin.clone(),
                        error: e.to_string(),
                    })
            })
            .collect()
    }

    /// Calls a tool by name from outside any script (CLI, console, API).
    pub async fn call_tool(&self, name: &str, args: Value) -> Result<Value, ToolError> {
        self.call_tool_for(name, args, None).await
    }

    /// Calls a tool for an agent run: the run's approver answers `ask`
    /// decisions and cancelling the run stops the script.
    pub async fn call_tool_for(
        &self,
        name: &str,
        args: Value,
        run: Option<Arc<crate::host::RunLink>>,
    ) -> Result<Value, ToolError> {
        let k = self.clone();
        let name = name.to_string();
        let engines = self.0.engines.handle()?;
        // The caller's span (an agent run's) follows the call to its
        // engine thread, so the call's logs carry the run's ids.
        let span = tracing::Span::current();
        engines
            .spawn_blocking(move || span.in_scope(|| k.call_tool_inner(&name, args, None, run)))
            .await
            .map_err(|e| ToolError::Internal(format!("tool call task failed: {e}")))?
    }

    /// Calls a tool on the current (blocking) thread. `parent` is the call
    /// that asked, for `keel.tools.call`: the callee runs under its *own*
    /// skill's authority, within the parent's deadline.
    pub fn call_tool_blocking(
        &self,
        name: &str,
        args: Value,
        parent: Option<&CallCtx>,
    ) -> Result<Value, ToolError> {
        self.call_tool_inner(name, args, parent, None)
    }

    /// Every tool call, whoever makes it, goes through here: it runs in a
    /// `tool_call` span (`skill`, `tool`: the ids in its log lines) and is
    /// counted in the per-skill figures and the metrics when the tool is
    /// one keel has (a name that resolves to nothing is not: it is
    /// whatever the caller typed, and counting it would make label
    /// cardinality unbounded).
    fn call_tool_inner(
        &self,
        name: &str,
        args: Value,
        parent: Option<&CallCtx>,
        run: Option<Arc<crate::host::RunLink>>,
    ) -> Result<Value, ToolError> {
        let started = Instant::now();
        let skill = name.split('.').next().unwrap_or_default();
        // At ERROR level so the span (and its ids) is there whenever
        // anything is logged at all: a warning inside a tool call must
        // still say which tool.
        let span = tracing::error_span!("tool_call", skill, tool = name);
        let _entered = span.enter();
        let mut installed = false;
        let result = self.dispatch_tool(name, args, parent, run, &mut installed);
        if installed {
            let outcome = crate::telemetry::CallOutcome::of(&result);
            let took = started.elapsed();
            self.0
                .stats
                .record(skill, name, outcome, took, Some(&self.0.metrics));
        }
        result
    }

    /// Resolves `name` and runs it; sets `installed` once `name` is known
    /// to be one of keel's tools or an installed skill's.
    fn dispatch_tool(
        &self,
        name: &str,
        args: Value,
        parent: Option<&CallCtx>,
        run: Option<Arc<crate::host::RunLink>>,
        installed: &mut bool,
    ) -> Result<Value, ToolError> {
        let set = self.skills();
        // keel's own tools read only what skills publish about themselves:
        // no capability, no engine. They see only enabled skills.
        if let Some(spec) = crate::tool::native::spec(name) {
            *installed = true;
            validate_args(name, spec, &args)?;
            use crate::tool::native::{ACTIVATE, READ};
            let target = match name {
                ACTIVATE => args.get("name"),
                READ => args.get("skill"),
                _ => None,
            }
            .and_then(Value::as_str);
            if let Some(target) = target
                && set.latest(target).is_some()
            {
                self.check_enabled(target, target)?;
            }
            return crate::tool::native::call(&self.offered_skills(), name, &args);
        }
        let parsed = ToolName::parse(name)?;
        let Some(entry) = set.tools.get(name) else {
            // A skill of that name that failed to load (or is held back)
            // says why, rather than "no tool".
            let of_skill = |s: &str| s.split('@').next() == Some(parsed.skill.as_str());
            // A manifest that did not parse names no skill: its folder (or
            // file) name stands in.
            let by_place = |o: &Origin| match o {
                Origin::Folder(p) => p.file_name().is_some_and(|n| n == parsed.skill.as_str()),
                Origin::File(p) => p.file_stem().is_some_and(|n| n == parsed.skill.as_str()),
                Origin::Builtin(_) => false,
            };
            if let Some(f) = set.failures.iter().find(|f| match &f.skill {
                Some(s) => of_skill(s),
                None => by_place(&f.origin),
            }) {
                return Err(ToolError::SkillNotLoaded {
                    name: name.to_string(),
                    skill: f.skill.clone().unwrap_or_else(|| parsed.skill.clone()),
                    error: f.error.clone(),
                });
            }
            if let Some(c) = set.claimants.iter().find(|c| of_skill(&c.skill)) {
                return Err(ToolError::SkillNotLoaded {
                    name: name.to_string(),
                    skill: c.skill.clone(),
                    error: format!("held back: {}", c.reason),
                });
            }
            return Err(ToolError::UnknownTool {
                name: name.to_string(),
                suggestion: did_you_mean(name, set.tools.keys().map(String::as_str)),
            });
        };
        *installed = true;
        // Before the arguments: a disabled skill's tool says so whatever
        // it was given.
        self.check_enabled(name, &parsed.skill)?;
        validate_args(name, entry.spec(), &args)?;
        let depth = parent.map_or(0, |p| p.depth + 1);
        if depth > MAX_TOOL_DEPTH {
            return Err(ToolError::TooDeep {
                tool: name.to_string(),
                max: MAX_TOOL_DEPTH,
            });
        }
        let skill = entry.skill.clone();
        let mut deadline = Instant::now() + skill.limits.timeout;
        if let Some(p) = parent {
            deadline = deadline.min(p.deadline);
        }
        let ctx = CallCtx {
            kernel: crate::host::CallKernel::new(self.clone()),
            skill: skill.identity.clone(),
            tool: name.to_string(),
            deadline,
            depth,
            paused_ns: parent.map_or_else(Default::default, |p| p.paused_ns.clone()),
            run: parent.map_or(run, |p| p.run.clone()),
        };
        let script_err = |error| ToolError::Script {
            tool: name.to_string(),
            skill: skill.id.to_string(),
            error,
        };
        // The calls this one is nested in run on this same thread and each
        // holds an engine of its skill until it returns. If they hold every
        // engine this skill version has, waiting for one could only end at
        // the deadline: fail now, naming the chain.
        let held = CHAIN.with_borrow(|c| {
            c.iter()
                .filter(|l| std::ptr::eq(l.skill, Arc::as_ptr(&skill)))
                .count()
        });
        if held >= skill.pool.max() {
            let mut chain =
                CHAIN.with_borrow(|c| c.iter().map(|l| l.tool.clone()).collect::<Vec<_>>());
            chain.push(name.to_string());
            return Err(script_err(crate::script::ScriptError::Reentrant(Box::new(
                crate::script::Reentry {
                    chain: chain.join(" → "),
                    skill: skill.id.to_string(),
                    name: skill.identity.name.clone(),
                    max: skill.pool.max(),
                },
            ))));
        }
        let mut instance = skill.pool.acquire(&skill, deadline).map_err(script_err)?;
        let link = ChainLink::push(Arc::as_ptr(&skill), name);
        let result = instance.call(&parsed.tool, args, &ctx);
        drop(link);
        skill.pool.release(instance);
        result.map_err(script_err)
    }
}

/// One call in progress on this thread's `tools.call` chain: the skill
/// version whose engine it holds (by address, only compared) and its tool.
struct ChainLink {
    skill: *const crate::skill::LoadedSkill,
    tool: String,
}

thread_local! {
    /// The tool calls running on this engine thread, outermost first. A
    /// `keel.tools.call` runs its callee on the caller's thread, so this is
    /// exactly the chain of calls the current one is nested in.
    static CHAIN: std::cell::RefCell<Vec<ChainLink>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Pops its link when the call ends, whether it returns or unwinds.
struct ChainGuard;

impl ChainLink {
    fn push(skill: *const crate::skill::LoadedSkill, tool: &str) -> ChainGuard {
        CHAIN.with_borrow_mut(|c| {
            c.push(ChainLink {
                skill,
                tool: tool.to_string(),
            })
        });
        ChainGuard
    }
}

impl Drop for ChainGuard {
    fn drop(&mut self) {
        let _ = CHAIN.try_with(|c| c.borrow_mut().pop());
    }
}
