//! The engines: Luau ([`lua`]) and Rhai ([`rhai`]) behind one trait.
//!
//! Each loaded skill version owns an [`InstancePool`] of engine states
//! ([`Instance`]s). A state serves one call at a time; a second concurrent
//! call to the same skill gets a second state (up to `max_instances`), so a
//! call waiting on I/O never queues another behind it. States are never
//! shared between skills.
//!
//! Sandbox limits live in a [`CallGuard`] that the engine's interrupt
//! (Luau) or progress callback (Rhai) reads on every check. Once a limit is
//! hit the guard is *sticky*: every later check fails too, so a script's
//! `pcall`/`try` cannot swallow the kill. A state that was killed is dropped,
//! never reused.

pub mod lua;
pub mod memory;
pub mod rhai;

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::Limits;
use crate::host::CallCtx;
use crate::skill::{Language, LoadedSkill};

/// Which sandbox limit ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitKind {
    /// The wall-clock deadline passed.
    Deadline,
    /// The engine's memory cap was reached.
    Memory,
    /// The instruction/operation budget ran out.
    Operations,
    /// Script calls nested too deeply.
    CallDepth,
    /// A host function panicked; the call is ended rather than letting the
    /// script carry on over a broken invariant.
    HostPanic,
    /// The agent run the call belongs to was cancelled.
    Cancelled,
}

impl LimitKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Deadline,
            2 => Self::Memory,
            3 => Self::Operations,
            4 => Self::CallDepth,
            5 => Self::HostPanic,
            6 => Self::Cancelled,
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Deadline => 1,
            Self::Memory => 2,
            Self::Operations => 3,
            Self::CallDepth => 4,
            Self::HostPanic => 5,
            Self::Cancelled => 6,
        }
    }

    /// A message naming the limit and the setting that raises it.
    pub fn describe(self, limits: &Limits) -> String {
        match self {
            Self::Deadline => format!(
                "stopped: wall-clock deadline of {} ms reached (limits.timeout_ms in keel.toml)",
                limits.timeout.as_millis()
            ),
            Self::Memory => format!(
                "stopped: memory limit of {} MiB reached (limits.memory_mb in keel.toml)",
                limits.memory_bytes / (1024 * 1024)
            ),
            Self::Operations => format!(
                "stopped: operation budget of {} exhausted (limits.max_operations in keel.toml)",
                limits.max_operations
            ),
            Self::CallDepth => format!(
                "stopped: call depth over {} (limits.max_call_depth in keel.toml)",
                limits.max_call_depth
            ),
            Self::HostPanic => {
                "stopped: a host function panicked (a keel bug; please report it)".into()
            }
            Self::Cancelled => "stopped: the run was cancelled".into(),
        }
    }
}

/// Per-state call bookkeeping, shared between the calling thread, the
/// engine's interrupt callback and the host function bindings: the limits
/// of the call in progress and its [`CallCtx`] (absent between calls and
/// during the load phase, which is what keeps host functions unavailable
/// then).
pub struct CallGuard {
    ctx: arc_swap::ArcSwapOption<CallCtx>,
    epoch: Instant,
    killed: AtomicU8,
    /// Deadline, in nanoseconds since `epoch`.
    deadline_ns: AtomicU64,
    ops: AtomicU64,
    max_ops: AtomicU64,
    /// The engine thread's allocation counter when the call was armed
    /// (see [`memory`]).
    mem_mark: AtomicI64,
    /// Most bytes a call may grow the thread's allocations by.
    mem_cap: i64,
}

impl Default for CallGuard {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

/// How many checks pass between clock reads: reading the clock on every
/// check would triple the cost of a loop iteration.
pub const CLOCK_EVERY: u64 = 64;

impl CallGuard {
    /// A guard whose calls may allocate at most `memory_cap` bytes, net.
    pub fn new(memory_cap: usize) -> Self {
        Self {
            ctx: arc_swap::ArcSwapOption::empty(),
            epoch: Instant::now(),
            killed: AtomicU8::new(0),
            deadline_ns: AtomicU64::new(u64::MAX),
            ops: AtomicU64::new(0),
            max_ops: AtomicU64::new(u64::MAX),
            mem_mark: AtomicI64::new(0),
            mem_cap: i64::try_from(memory_cap).unwrap_or(i64::MAX),
        }
    }

    /// Arms the guard for one call. Must run on the thread that runs the
    /// call: the memory mark is that thread's allocation counter.
    pub fn arm(&self, deadline: Instant, max_ops: u64) {
        self.mem_mark
            .store(memory::MemoryMark::now().raw(), Ordering::Relaxed);
        let ns = deadline.saturating_duration_since(self.epoch).as_nanos();
        self.deadline_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.ops.store(0, Ordering::Relaxed);
        self.max_ops.store(max_ops, Ordering::Relaxed);
        self.killed.store(0, Ordering::Relaxed);
    }

    /// Starts a call: arms the limits and lends the call's context to host
    /// functions.
    pub fn enter(&self, ctx: &CallCtx, max_ops: u64) {
        self.arm(ctx.deadline, max_ops);
        self.ctx.store(Some(Arc::new(ctx.clone())));
    }

    /// Ends a call: host functions lose the context.
    pub fn leave(&self) {
        self.ctx.store(None);
    }

    /// The context of the call in progress, if any.
    #[inline]
    pub fn context(&self) -> arc_swap::Guard<Option<Arc<CallCtx>>> {
        self.ctx.load()
    }

    /// The limit that killed the current call, if any.
    pub fn killed(&self) -> Option<LimitKind> {
        LimitKind::from_u8(self.killed.load(Ordering::Relaxed))
    }

    /// Marks the call as killed; the first reason wins.
    pub fn kill(&self, kind: LimitKind) {
        let _ = self
            .killed
            .compare_exchange(0, kind.to_u8(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// One check, from the engine's interrupt, on the thread running the
    /// call. Cheap on the fast path: a few relaxed loads, one thread-local
    /// read and a store; the clock is read every [`CLOCK_EVERY`].
    #[inline]
    pub fn tick(&self) -> Result<(), LimitKind> {
        if let Some(k) = self.killed() {
            return Err(k);
        }
        let mark = memory::MemoryMark::from_raw(self.mem_mark.load(Ordering::Relaxed));
        if mark.grown() > self.mem_cap {
            self.kill(LimitKind::Memory);
            return Err(LimitKind::Memory);
        }
        let n = self.ops.load(Ordering::Relaxed) + 1;
        self.ops.store(n, Ordering::Relaxed);
        if n > self.max_ops.load(Ordering::Relaxed) {
            self.kill(LimitKind::Operations);
            return Err(LimitKind::Operations);
        }
        if n.is_multiple_of(CLOCK_EVERY) {
            return self.slow_checks();
        }
        Ok(())
    }

    /// The checks made every [`CLOCK_EVERY`] ticks: the clock, and whether
    /// the run was cancelled.
    #[cold]
    fn slow_checks(&self) -> Result<(), LimitKind> {
        let guard = self.ctx.load();
        let ctx = guard.as_deref();
        if ctx.is_some_and(CallCtx::cancelled) {
            self.kill(LimitKind::Cancelled);
            return Err(LimitKind::Cancelled);
        }
        if self.past_deadline(ctx) {
            self.kill(LimitKind::Deadline);
            return Err(LimitKind::Deadline);
        }
        Ok(())
    }

    fn past_deadline(&self, ctx: Option<&CallCtx>) -> bool {
        let now = self.epoch.elapsed().as_nanos();
        if now < u128::from(self.deadline_ns.load(Ordering::Relaxed)) {
            return false;
        }
        // Time spent waiting for approvals moves the deadline.
        let Some(ctx) = ctx else { return true };
        let moved = ctx
            .effective_deadline()
            .saturating_duration_since(self.epoch)
            .as_nanos();
        if now < moved {
            self.deadline_ns
                .store(u64::try_from(moved).unwrap_or(u64::MAX), Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Whether a `tick` is due to read the clock (used by engines that check
    /// call depth at the same cadence).
    #[inline]
    pub fn clock_due(&self) -> bool {
        self.ops.load(Ordering::Relaxed).is_multiple_of(CLOCK_EVERY)
    }
}

/// An error from loading or calling a script.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// The script failed to compile. `message` starts with `file:line:`.
    #[error("{message}")]
    Compile { message: String },
    /// The load phase (top-level code) failed.
    #[error("{message}")]
    Load { message: String },
    /// The tool raised an error.
    #[error("{message}")]
    Runtime { message: String },
    /// A sandbox limit ended the call; it could not be caught.
    #[error("{message}")]
    Limit { kind: LimitKind, message: String },
    /// The result could not be turned into JSON.
    #[error("{message}")]
    Result { message: String },
    /// A `tools.call` chain came back into a skill whose every engine state
    /// is held by calls earlier in the same chain: waiting could never end,
    /// so the call fails at once.
    #[error("{0}")]
    Reentrant(Box<Reentry>),
    /// Every engine state of the skill stayed busy until the deadline.
    #[error(
        "every engine of this skill is busy ({max} calls in flight); try again or raise limits.max_instances"
    )]
    Busy { max: usize },
}

/// A `tools.call` chain that cannot be served (see [`ScriptError::Reentrant`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "tools.call chain {chain} comes back into {skill}, but every engine it may have (limits.max_instances = {max}) is held by a call earlier in this chain, so this call could never start; raise max_instances under [limits.skills.{name}] in keel.toml, or do not call back into {name}"
)]
pub struct Reentry {
    /// The tools of the chain, outermost first, ` → `-joined.
    pub chain: String,
    /// `name@version` of the skill re-entered.
    pub skill: String,
    /// Its name (the `[limits.skills.NAME]` section).
    pub name: String,
    /// Its `max_instances`.
    pub max: usize,
}

/// One engine state of one skill version.
pub trait Instance: Send {
    /// Calls the tool's handler with validated arguments.
    fn call(&mut self, tool: &str, args: Value, ctx: &CallCtx) -> Result<Value, ScriptError>;
    /// Bytes the state holds (Luau: exact; Rhai: not tracked, 0).
    fn memory_used(&self) -> usize;
    /// Whether the state may serve another call (not killed by a limit).
    fn reusable(&self) -> bool;
}

/// Creates a fresh engine state for a skill: compile, then the load phase
/// (top-level code, with no capabilities).
pub fn instantiate(skill: &Arc<LoadedSkill>) -> Result<Box<dyn Instance>, ScriptError> {
    if skill.is_instructions() {
        return Err(ScriptError::Load {
            message: format!(
                "`{}` is an instructions skill (a SKILL.md): it has no code to run",
                skill.manifest.name
            ),
        });
    }
    match skill.manifest.language {
        Language::Luau => Ok(Box::new(Counted::new(lua::LuaInstance::new(skill)?))),
        Language::Rhai => Ok(Box::new(Counted::new(rhai::RhaiInstance::new(skill)?))),
    }
}

/// Engine states alive in this process (see [`live_instances`]).
static LIVE_INSTANCES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Engine states alive in this process now, pooled or not (a reload's
/// validation run, `keel check`): every state [`instantiate`] made and not
/// yet dropped. A fact about the process, like its memory, so it is kept
/// here rather than per kernel (the `keel_engine_instances` gauge).
pub fn live_instances() -> usize {
    LIVE_INSTANCES.load(std::sync::atomic::Ordering::Relaxed)
}

/// An engine state, counted in [`live_instances`] while it lives.
struct Counted<I>(I);

impl<I> Counted<I> {
    fn new(instance: I) -> Self {
        LIVE_INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(instance)
    }
}

impl<I> Drop for Counted<I> {
    fn drop(&mut self) {
        LIVE_INSTANCES.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<I: Instance> Instance for Counted<I> {
    fn call(&mut self, tool: &str, args: Value, ctx: &CallCtx) -> Result<Value, ScriptError> {
        self.0.call(tool, args, ctx)
    }

    fn memory_used(&self) -> usize {
        self.0.memory_used()
    }

    fn reusable(&self) -> bool {
        self.0.reusable()
    }
}

/// The engine states of one skill version.
pub struct InstancePool {
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
}

struct PoolState {
    idle: Vec<Box<dyn Instance>>,
    live: usize,
}

impl InstancePool {
    pub fn new(max: usize) -> Self {
        Self {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                live: 0,
            }),
            freed: Condvar::new(),
            max: max.max(1),
        }
    }

    /// Most engine states this pool keeps (`limits.max_instances`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Engine states currently alive (idle or serving).
    pub fn live(&self) -> usize {
        self.lock().live
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes an idle state, or makes one, or waits for one until `deadline`.
    pub fn acquire(
        &self,
        skill: &Arc<LoadedSkill>,
        deadline: Instant,
    ) -> Result<Box<dyn Instance>, ScriptError> {
        let mut st = self.lock();
        loop {
            if let Some(i) = st.idle.pop() {
                return Ok(i);
            }
            if st.live < self.max {
                st.live += 1;
                drop(st);
                return instantiate(skill).inspect_err(|_| {
                    self.lock().live -= 1;
                    self.freed.notify_one();
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ScriptError::Busy { max: self.max });
            }
            st = self
                .freed
                .wait_timeout(st, left.min(Duration::from_millis(100)))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Adds a state made elsewhere (a reload's validation run), so the first
    /// call after a reload finds a warm engine.
    pub fn offer(&self, instance: Box<dyn Instance>) {
        let mut st = self.lock();
        if st.live < self.max {
            st.live += 1;
            st.idle.push(instance);
        }
    }

    /// Drops idle states, so the next call starts a fresh one (`/reload SKILL`).
    pub fn clear_idle(&self) {
        let mut st = self.lock();
        let n = st.idle.len();
        st.idle.clear();
        st.live -= n;
    }

    /// Returns a state after a call; a killed state is dropped.
    pub fn release(&self, instance: Box<dyn Instance>) {
        let mut st = self.lock();
        if instance.reusable() {
            st.idle.push(instance);
        } else {
            st.live -= 1;
            drop(st);
            drop(instance);
        }
        self.freed.notify_one();
    }
}

/// Renders a panic payload for messages.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
