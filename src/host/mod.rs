//! The host API: every function a script can call, each declared once.
//!
//! A [`HostFn`] names its namespace, its parameters, the capability it needs
//! and a documented example in each language. The Luau and Rhai bindings
//! (`script::lua`, `script::rhai`) are generated from [`namespaces`], so both
//! languages see the same functions with the same argument shapes, and the
//! reference docs and editor definitions (`keel docs`) come from the same
//! list. A new namespace is a new file here plus one line in [`namespaces`].
//!
//! Each host function reads its arguments with [`Args::parse`] into its
//! own serde struct, whose fields are the declared parameter names and
//! whose options tables are `deny_unknown_fields` structs (`host/args.rs`): an
//! unknown option, a wrong type or a missing argument is a `BadArgument`
//! naming the parameter and what was expected, raised before any effect.
//!
//! Host functions are synchronous Rust: they run on the engine's own thread,
//! which is never a runtime worker, so blocking I/O here stalls only the call
//! that asked for it. Anything that waits honours the call's deadline.
//! Host functions never check capabilities themselves beyond naming the
//! target: they call [`CallCtx::check`], which goes to the one gate, or one
//! of the gate's composite decisions (`check_connect` for an HTTP hop,
//! `child_env` and `sandbox_roots` for a program a skill runs); none of them
//! reads the policy or the grants. `tests/gate_coverage.rs` walks
//! [`namespaces`] and proves every function that declares a capability is
//! refused and audited by the gate.
//!
//! A call sees the kernel only through [`CallKernel`]: the few things a host
//! function may use, listed in one place.

mod args;
pub mod env;
pub mod exec;
pub mod fs;
pub mod http;
pub mod json;
pub mod kv;
pub mod llm;
pub mod log;
pub mod time;
pub mod tools;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use args::{Args, Millis};

use crate::capability::{CapabilityKind, Target};
use crate::kernel::Kernel;
use crate::kernel::gate::Gate;
use crate::kernel::gate::{Allowed, ApprovalRequest, Approver, AskOutcome, Caller};
use crate::skill::SkillIdentity;
use crate::store::Store;

/// One parameter of a host function, for binding arity and for docs.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    /// A Luau-style type for docs and editor definitions (`string`, `{string}`, `any`).
    pub ty: &'static str,
    pub optional: bool,
}

/// Shorthand for a required parameter.
pub const fn p(name: &'static str, ty: &'static str) -> Param {
    Param {
        name,
        ty,
        optional: false,
    }
}

/// Shorthand for an optional parameter.
pub const fn opt(name: &'static str, ty: &'static str) -> Param {
    Param {
        name,
        ty,
        optional: true,
    }
}

/// The implementation of a host function.
pub type HostImpl = fn(&CallCtx, Args) -> Result<Value, HostError>;

/// A host function, declared once and bound into both engines.
#[derive(Debug)]
pub struct HostFn {
    /// `fs` in `keel.fs.read`.
    pub namespace: &'static str,
    /// `read` in `keel.fs.read`.
    pub name: &'static str,
    pub params: &'static [Param],
    /// A Luau-style type for docs.
    pub returns: &'static str,
    /// The capability this function checks, if any.
    pub capability: Option<CapabilityKind>,
    pub doc: &'static str,
    pub luau_example: &'static str,
    pub rhai_example: &'static str,
    pub call: HostImpl,
}

impl HostFn {
    /// The fewest arguments the function takes.
    pub fn min_args(&self) -> usize {
        self.params.iter().filter(|p| !p.optional).count()
    }
}

/// Every namespace, in documentation order. The one list the engines bind.
pub fn namespaces() -> [(&'static str, &'static [HostFn]); 10] {
    [
        ("fs", fs::FUNCTIONS),
        ("http", http::FUNCTIONS),
        ("exec", exec::FUNCTIONS),
        ("env", env::FUNCTIONS),
        ("kv", kv::FUNCTIONS),
        ("llm", llm::FUNCTIONS),
        ("json", json::FUNCTIONS),
        ("time", time::FUNCTIONS),
        ("log", log::FUNCTIONS),
        ("tools", tools::FUNCTIONS),
    ]
}

/// An error from a host function.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The gate refused the effect. Catchable by the script.
    #[error("{0}")]
    Denied(String),
    /// An argument had the wrong shape. Catchable.
    #[error("{0}")]
    BadArgument(String),
    /// The effect was tried and failed (file missing, connection refused…).
    /// Catchable.
    #[error("{0}")]
    Failed(String),
    /// The call's deadline passed while the host function waited. Not
    /// catchable: the engine turns it into a sandbox kill.
    #[error("the call's deadline passed")]
    Deadline,
}

/// The JSON type name of a value, for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "table",
    }
}

/// Everything a host function may use, for the duration of one tool call.
///
/// The engine holds a `CallCtx` only while a call runs; between calls (and
/// during a skill's load phase) there is none, so host calls fail with
/// "no capabilities during load". That is how scripts never keep a handle on
/// kernel state.
#[derive(Clone)]
pub struct CallCtx {
    /// The kernel as a host call sees it: only what a call may use.
    pub kernel: CallKernel,
    /// The skill whose code runs *as a tool*: the authority for every check.
    pub skill: SkillIdentity,
    /// The tool being called (`notes.add`).
    pub tool: String,
    pub deadline: Instant,
    /// Nesting of `tools.call`, to bound recursion between skills.
    pub depth: u32,
    /// Nanoseconds this call (and the calls it is nested in, which share
    /// the counter) spent waiting for a person to answer an approval: the
    /// deadline moves by that much, so a slow human never kills a tool.
    pub paused_ns: Arc<AtomicU64>,
    /// The agent run this call belongs to, if any (nested calls inherit it).
    pub run: Option<Arc<RunLink>>,
}

/// The part of the kernel a host function may use, and nothing more: the
/// gate, the workspace, the environment keel was given, the calling skill's
/// own kv namespace and the token-usage record (not the store), the runtime
/// (to wait on I/O with a timeout), the model chain and `tools.call`'s entry.
///
/// Not reachable from here: the store as a whole (other skills' data, grants,
/// the audit log), the skill set, reloads, the event bus, the configuration as
/// a whole, the data directory, the engine threads. A host
/// function that needs more gets a new, named method here, so what host
/// code can touch is listed in one place and reviewed as such.
#[derive(Clone)]
pub struct CallKernel(Kernel);

impl CallKernel {
    /// The narrow view of `kernel` for one call.
    pub(crate) fn new(kernel: Kernel) -> Self {
        Self(kernel)
    }

    /// The one gate: every effect is checked here.
    pub fn gate(&self) -> &Gate {
        self.0.gate()
    }

    /// The folder keel runs in: relative paths and the sandbox start here.
    pub fn workspace(&self) -> &std::path::Path {
        self.0.workspace()
    }

    /// The environment keel was given (scrubbed of keel's own secrets);
    /// variables reach a script only through the gate.
    pub fn env(&self) -> &std::collections::BTreeMap<String, String> {
        self.0.env()
    }

    /// `skill`'s own kv data in this workspace, bounded by its `kv_mb`: the
    /// only part of the store a host function reaches, besides usage.
    pub fn skill_kv<'a>(&'a self, skill: &'a str) -> SkillKv<'a> {
        SkillKv {
            store: self.0.store(),
            workspace: self.0.workspace(),
            skill,
            max_bytes: self.0.config().limits_for(skill).kv_bytes,
        }
    }

    /// Records one model call's tokens for `skill` (and the run it belongs
    /// to); `None` when the server reported none.
    pub fn record_usage(
        &self,
        run_id: Option<&str>,
        skill: &str,
        model: &str,
        tokens: Option<(u64, u64)>,
    ) -> Result<(), crate::store::StoreError> {
        self.0
            .store()
            .record_usage(run_id, Some(skill), model, tokens)
    }

    /// The runtime, for waits that need one (name resolution, model calls).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.0.runtime()
    }

    /// The model chain, if a model is configured.
    pub fn models(&self) -> Option<Arc<crate::llm::chain::ModelChain>> {
        self.0.models()
    }

    /// The most output tokens one model call may ask for.
    pub fn max_output_tokens(&self) -> u32 {
        self.0.config().agent.max_output_tokens
    }

    /// `tools.call`'s entry: calls a tool as a child of `parent`.
    pub fn call_tool_blocking(
        &self,
        name: &str,
        args: Value,
        parent: Option<&CallCtx>,
    ) -> Result<Value, crate::tool::ToolError> {
        self.0.call_tool_blocking(name, args, parent)
    }
}

/// One skill's kv namespace in one workspace: what `keel.kv` may touch.
pub struct SkillKv<'a> {
    store: &'a Store,
    workspace: &'a std::path::Path,
    skill: &'a str,
    max_bytes: u64,
}

impl SkillKv<'_> {
    pub fn get(&self, key: &str) -> Result<Option<String>, crate::store::StoreError> {
        self.store.kv_get(self.workspace, self.skill, key)
    }

    /// Stores `json` under `key`, within the skill's `kv_mb`.
    pub fn set(&self, key: &str, json: &str) -> Result<(), crate::store::StoreError> {
        self.store
            .kv_set(self.workspace, self.skill, key, json, self.max_bytes)
    }

    pub fn delete(&self, key: &str) -> Result<bool, crate::store::StoreError> {
        self.store.kv_delete(self.workspace, self.skill, key)
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<String>, crate::store::StoreError> {
        self.store.kv_list(self.workspace, self.skill, prefix)
    }
}

/// What a tool call made for an agent run carries: which run, whether it
/// was cancelled, and who answers its `ask` decisions.
pub struct RunLink {
    /// The agent run the call belongs to; `None` for a call a person made
    /// directly (the console's `/call`), which has no run.
    pub run_id: Option<String>,
    /// Set when the run is cancelled: scripts stop at their next check,
    /// host functions that wait give up.
    pub cancelled: Arc<AtomicBool>,
    pub approver: Arc<dyn Approver>,
}

impl RunLink {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// Adds the time an approval took to the call's pause counter.
pub(crate) struct TimedApprover<'a> {
    inner: &'a dyn Approver,
    paused_ns: &'a AtomicU64,
}

impl Approver for TimedApprover<'_> {
    fn approve(&self, request: &ApprovalRequest) -> AskOutcome {
        let started = Instant::now();
        let answer = self.inner.approve(request);
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.paused_ns.fetch_add(waited, Ordering::Relaxed);
        answer
    }
}

impl CallCtx {
    /// The deadline, moved by the time spent waiting on approvals.
    pub fn effective_deadline(&self) -> Instant {
        self.deadline + Duration::from_nanos(self.paused_ns.load(Ordering::Relaxed))
    }

    /// Whether the run this call belongs to was cancelled.
    pub fn cancelled(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.is_cancelled())
    }

    /// Time left before the deadline, or `HostError::Deadline` (also once
    /// the run is cancelled).
    pub fn remaining(&self) -> Result<Duration, HostError> {
        let left = self
            .effective_deadline()
            .saturating_duration_since(Instant::now());
        if left.is_zero() || self.cancelled() {
            Err(HostError::Deadline)
        } else {
            Ok(left)
        }
    }

    /// Who answers `ask` for this call: the run's approver, timed so the
    /// wait moves the deadline. `None` outside a run.
    pub(crate) fn approver(&self) -> Option<TimedApprover<'_>> {
        self.run.as_ref().map(|run| TimedApprover {
            inner: run.approver.as_ref(),
            paused_ns: &self.paused_ns,
        })
    }

    /// This call as the gate sees it, with `approver` answering `ask`.
    pub fn caller<'a>(&'a self, approver: Option<&'a dyn Approver>) -> Caller<'a> {
        Caller {
            skill: &self.skill,
            tool: &self.tool,
            approver,
        }
    }

    /// Asks the gate whether this call may touch `target` with `kind`;
    /// returns the declared rule that covers it and the rule that allowed it.
    pub fn check(&self, kind: CapabilityKind, target: Target<'_>) -> Result<Allowed, HostError> {
        let approver = self.approver();
        let caller = self.caller(approver.as_ref().map(|a| a as &dyn Approver));
        self.kernel
            .gate()
            .check_call(&caller, kind, &target)
            .map_err(|e| HostError::Denied(e.to_string()))
    }

    /// A path as a script wrote it, made absolute against the workspace and
    /// resolved the way the kernel would resolve it.
    pub fn resolve_path(&self, path: &str) -> Result<PathBuf, HostError> {
        if path.is_empty() || path.contains('\0') {
            return Err(HostError::BadArgument(format!(
                "invalid path {path:?}: a path must be non-empty"
            )));
        }
        if path == "~" || path.starts_with("~/") {
            return Err(HostError::BadArgument(format!(
                "invalid path {path:?}: `~` is not expanded; use an absolute path or one relative to the workspace"
            )));
        }
        let joined = self.kernel.workspace().join(path);
        Ok(crate::paths::canonicalize_lenient(&joined))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_function_is_documented_in_both_languages() {
        let mut seen = std::collections::BTreeSet::new();
        for (ns, fns) in namespaces() {
            for f in fns {
                assert_eq!(
                    f.namespace, ns,
                    "{} is listed under the wrong namespace",
                    f.name
                );
                assert!(seen.insert((ns, f.name)), "{ns}.{} declared twice", f.name);
                assert!(!f.doc.is_empty(), "{ns}.{} has no doc", f.name);
                assert!(
                    f.luau_example.contains(&format!("keel.{ns}.{}", f.name)),
                    "{ns}.{}: Luau example must call it",
                    f.name
                );
                assert!(
                    f.rhai_example.contains(&format!("keel::{ns}::{}", f.name)),
                    "{ns}.{}: Rhai example must call it",
                    f.name
                );
                // Optional parameters come last, so arity ranges are contiguous.
                let first_opt = f.params.iter().position(|p| p.optional);
                if let Some(i) = first_opt {
                    assert!(f.params[i..].iter().all(|p| p.optional), "{ns}.{}", f.name);
                }
            }
        }
    }
}
