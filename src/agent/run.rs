//! The agent loop: a message in, model turns and tool calls, an answer out.
//!
//! [`Agent::submit`] stores the user's message and a queued run in one
//! transaction (so an accepted message survives any crash), then runs it on
//! the kernel's runtime behind the session's lane: runs of one session go
//! one at a time, runs of different sessions concurrently. A run asks the
//! model chain, streams text to its [`RunHandle`], runs the tool calls of
//! one model turn concurrently through the kernel (the capability gate
//! included), feeds results back, and stops at a final answer or at a limit
//! of `[agent]`. Everything it says and does is written to the transcript
//! as it happens.
//!
//! The loop is async and never calls SQLite on a runtime worker: every
//! store access from it goes through [`crate::store::Store::call`] (the
//! store's own thread), so a write waiting for another process's lock
//! stalls only that run. The approval wait runs on an engine thread and
//! uses the store directly; [`Agent::submit`] and the other entry points
//! for front ends are synchronous and are called from their threads.
//!
//! Cancelling sets the run's flag (scripts stop at their next check) and
//! drops the model stream; a tool call the run did not see finish gets an
//! error result when the context is next built, so the transcript always
//! pairs every call with a result.
//!
//! # When the model misbehaves
//!
//! - A stream that breaks off after text was shown (connection cut, idle
//!   timeout) is transient: the shown text is stored marked as cut (an
//!   assistant row with the error flag), the console is told
//!   ([`RunEvent::StreamCut`]) and the model is asked again, at most
//!   `MAX_STREAM_RETRIES` (2) times a run. Cut text is sent back only when
//!   the user spoke after it; a retry's answer supersedes it.
//! - A tool call cut by the output limit is never run nor sent back with
//!   its partial arguments: it is stored flagged `"cut"` with an error
//!   result telling the model to call again, and the run goes on.
//! - An answer over `[agent] max_answer_bytes` is kept up to the bound,
//!   marked, and fails the run; none of its calls run.
//! - A provider's "context too long" compacts everything but the current
//!   turn and tries once more. A compaction that fails loses nothing: the
//!   run goes on with the whole conversation ([`RunEvent::CompactionFailed`]).
//!   A summary cut by the output limit is kept, marked as cut. When nothing
//!   older is left and the user's message alone is too large, the run
//!   fails and the message is flagged: it stays in the transcript, and
//!   later contexts send a short stand-in ([`context::left_out`]), so one
//!   oversized paste does not fail every later turn.
//! - The context is always sent through [`context::well_formed`], and with
//!   this request's wire names ([`ToolMap`]); the transcript keeps real tool
//!   names. The guard's estimate is scaled by each model's reported usage
//!   ([`context::calibration`], in memory).
//! - Identical approval requests (same skill, capability, target and rule)
//!   from one turn's parallel calls share one record and one answer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::RunState;
use super::approval::{ApprovalKey, CallApprover, Waiter};
use super::context;
use super::owner::Owner;
use super::prompt::{Disclosed, ToolMap, offered_tools, system_prompt};
use super::transcript::{
    calls_to_json, cap, context_from_records, covered_id, parse_arguments, parse_calls, seen_by,
    summary, to_wire,
};
use crate::config::AgentConfig;
use crate::host::RunLink;
use crate::kernel::Kernel;
use crate::llm::chain::{ChainError, ModelChain};
use crate::llm::{Message, Request, StopReason, StreamEvent, ToolCall, Usage};
use crate::store::{
    AnswerError, ApprovalAnswer, ApprovalRecord, MessageKind, MessageRecord, NewMessage, RunError,
    RunRecord, SessionRecord, StoreError,
};

/// How to configure a model, shown when none is (defined with the
/// providers so the host API can say it too without depending on the agent).
pub use crate::llm::NO_MODEL_HELP;

/// Streams that may break off mid-answer in one run before it fails: each
/// is retried (on the same model or the next in the chain).
const MAX_STREAM_RETRIES: u32 = 2;
/// How long a stopped run waits for its tool calls to stop and report.
const TOOLS_STOP_GRACE: Duration = Duration::from_secs(5);

/// What a tool call cut by the output limit gets as its result.
const CUT_CALL_RESULT: &str = "not run: this call was cut by the output limit before its arguments were complete. Call the tool again; if its arguments are long, send less at once (e.g. write a long text in parts).";

/// Why the agent refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("{NO_MODEL_HELP}")]
    NoModel,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Answer(#[from] AnswerError),
    #[error("cannot claim runs for this process: {0}")]
    Owner(std::io::Error),
    /// A model's base URL (from the environment: keel.toml's are checked
    /// when it is read) is not an http(s) URL.
    #[error(
        "{source_name} = \"{url}\" is not an http(s) URL; set it like \
         {source_name}=http://127.0.0.1:11434/v1 (nothing was sent or stored)"
    )]
    BadBaseUrl { source_name: String, url: String },
}

/// Refuses a model whose base URL cannot work, before anything is stored:
/// a run created with it could only fail.
fn check_base_urls(chain: &ModelChain, from_env: bool) -> Result<(), AgentError> {
    for m in chain.models() {
        let url = &m.endpoint.base_url;
        if matches!(url::Url::parse(url), Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host())
        {
            continue;
        }
        let source_name = if from_env {
            match m.provider {
                crate::llm::ProviderKind::OpenAi => "OPENAI_BASE_URL".to_string(),
                crate::llm::ProviderKind::Anthropic => "ANTHROPIC_BASE_URL".to_string(),
            }
        } else {
            format!("[models.{}] base_url", m.name)
        };
        return Err(AgentError::BadBaseUrl {
            source_name,
            url: url.clone(),
        });
    }
    Ok(())
}

/// Something that happened in a run, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    State(RunState),
    /// A piece of the answer, as the model streams it.
    Text(String),
    ToolStarted {
        call_id: String,
        name: String,
        arguments: String,
    },
    ToolFinished {
        call_id: String,
        name: String,
        ok: bool,
        /// The start of the result (or the error), on one line.
        summary: String,
        elapsed: Duration,
    },
    /// The run is waiting for someone to answer this.
    Approval(ApprovalRecord),
    /// Older turns were summarised; `messages` of them.
    Compacted {
        messages: usize,
    },
    /// Compacting failed (the model did not answer in time, say); the run
    /// goes on with the whole conversation.
    CompactionFailed {
        reason: String,
    },
    /// The model's stream broke off after part of the answer was shown;
    /// the part is kept marked as cut and the model is asked again.
    StreamCut {
        reason: String,
    },
    Finished(RunOutcome),
}

/// One tool call of a run, with its result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ToolCallOutcome {
    pub id: String,
    pub name: String,
    pub arguments: String,
    pub result: Option<String>,
    pub is_error: bool,
    pub elapsed_ms: Option<i64>,
}

/// A run as it ended (or stands): what `keel ask --json` prints.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunOutcome {
    pub id: String,
    pub session_id: String,
    pub state: RunState,
    pub answer: String,
    pub reason: Option<String>,
    pub model: Option<String>,
    pub tool_calls: Vec<ToolCallOutcome>,
    /// Tokens of the model calls whose server reported them.
    pub usage: Usage,
    /// Model calls whose server reported no usage (their tokens are
    /// unknown, not 0).
    pub unreported_calls: u64,
    /// Tools offered to the latest model call.
    pub offered_tools: u64,
    /// Bytes of that call's system prompt and tool definitions (JSON).
    pub offered_bytes: u64,
}

impl RunOutcome {
    /// An outcome with no stored record behind it (keel stopped first, or
    /// the record could not be read back): the run's ids, state and why.
    fn unrecorded(id: String, session_id: String, state: RunState, reason: String) -> Self {
        Self {
            id,
            session_id,
            state,
            answer: String::new(),
            reason: Some(reason),
            model: None,
            tool_calls: Vec::new(),
            usage: Usage::default(),
            unreported_calls: 0,
            offered_tools: 0,
            offered_bytes: 0,
        }
    }

    /// Reads a run back from the store.
    pub fn load(store: &crate::store::Store, run_id: &str) -> Result<Self, AgentError> {
        let run = store
            .run(run_id)?
            .ok_or_else(|| RunError::NoRun(run_id.to_string()))?;
        Ok(Self::from_record(store, &run)?)
    }

    /// A stored run's outcome, from its record and its messages.
    pub fn from_record(store: &crate::store::Store, run: &RunRecord) -> Result<Self, StoreError> {
        Ok(Self::from_records(run, &store.run_messages(&run.id)?))
    }

    fn from_records(run: &RunRecord, messages: &[MessageRecord]) -> Self {
        let mut tool_calls: Vec<ToolCallOutcome> = Vec::new();
        let mut answer = String::new();
        for m in messages {
            match m.kind {
                MessageKind::Assistant => {
                    for c in parse_calls(m.tool_calls.as_deref()) {
                        tool_calls.push(ToolCallOutcome {
                            id: c.id,
                            name: super::prompt::tool_name(&c.name),
                            arguments: c.arguments,
                            result: None,
                            is_error: false,
                            elapsed_ms: None,
                        });
                    }
                    if !m.content.is_empty() {
                        answer.clone_from(&m.content);
                    }
                }
                MessageKind::Tool => {
                    if let Some(c) = tool_calls
                        .iter_mut()
                        .find(|c| Some(&c.id) == m.call_id.as_ref())
                    {
                        c.result = Some(m.content.clone());
                        c.is_error = m.is_error;
                        c.elapsed_ms = m.elapsed_ms;
                    }
                }
                MessageKind::User | MessageKind::Summary => {}
            }
        }
        Self {
            id: run.id.clone(),
            session_id: run.session_id.clone(),
            state: run.state,
            answer,
            reason: run.reason.clone(),
            model: run.model.clone(),
            tool_calls,
            usage: Usage {
                input_tokens: run.input_tokens,
                output_tokens: run.output_tokens,
            },
            unreported_calls: run.unreported_calls,
            offered_tools: run.offered_tools,
            offered_bytes: run.offered_bytes,
        }
    }
}

/// A submitted run: its ids and its events.
pub struct RunHandle {
    pub run_id: String,
    pub session_id: String,
    pub events: mpsc::UnboundedReceiver<RunEvent>,
}

impl RunHandle {
    /// Waits for the end, passing every event to `on_event`.
    pub async fn wait_with(mut self, mut on_event: impl FnMut(&RunEvent)) -> RunOutcome {
        while let Some(e) = self.events.recv().await {
            on_event(&e);
            if let RunEvent::Finished(outcome) = e {
                return outcome;
            }
        }
        // The run task ended without a Finished event: only on shutdown.
        RunOutcome::unrecorded(
            self.run_id,
            self.session_id,
            RunState::Failed,
            "keel stopped before the run finished".into(),
        )
    }

    pub async fn wait(self) -> RunOutcome {
        self.wait_with(|_| {}).await
    }
}

/// A run in flight in this process.
pub(super) struct RunControl {
    pub(super) session_id: String,
    pub(super) cancelled: Arc<AtomicBool>,
    pub(super) cancel_tx: watch::Sender<bool>,
    pub(super) events: mpsc::UnboundedSender<RunEvent>,
    /// Approvals being waited on (the run is `waiting_permission` while
    /// any is).
    pub(super) waiting: AtomicUsize,
    /// Serialises state changes between concurrent tool calls.
    pub(super) state_lock: Mutex<()>,
    /// Approval requests of the current model turn's tool calls, by what
    /// they ask (skill, capability, target, rule): identical requests from
    /// parallel calls share one record and one answer. Cleared when the
    /// next turn's calls start.
    pub(super) asked: Mutex<HashMap<ApprovalKey, (ApprovalRecord, Arc<Waiter>)>>,
    /// Text of the model call in flight, already shown to the user. Kept
    /// here rather than in the loop so that a run stopped mid-stream
    /// (cancelled, or over its time) can still write it to the transcript.
    pub(super) shown: Mutex<String>,
    /// False while a turn's tool calls are running. The calls run in a task
    /// of their own that stores their results, so a run stopped meanwhile
    /// (cancelled, over its time) can wait for them to stop and record
    /// what they said, rather than leaving them unanswered.
    pub(super) tools_done: watch::Sender<bool>,
}

impl RunControl {
    pub(super) fn emit(&self, e: RunEvent) {
        let _ = self.events.send(e);
    }
}

pub(super) struct Inner {
    pub(super) kernel: Kernel,
    pub(super) owner: Owner,
    /// Per session: woken when one of its runs ends here, so the next one
    /// starts at once (runs of other processes are polled for).
    pub(super) lanes: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    pub(super) runs: Mutex<HashMap<String, Arc<RunControl>>>,
    pub(super) waiters: Mutex<HashMap<String, Arc<Waiter>>>,
    pub(super) approvals: tokio::sync::broadcast::Sender<ApprovalRecord>,
    /// Per model name: real prompt tokens / estimated (see
    /// [`context::calibration`]), from the latest call that reported usage.
    pub(super) calibration: Mutex<HashMap<String, f64>>,
    /// The model that answered last, whose calibration guides compaction.
    pub(super) last_model: Mutex<Option<String>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The agent. Cheap to clone; one per process is enough.
#[derive(Clone)]
pub struct Agent(pub(super) Arc<Inner>);

/// How a run ended, inside the loop.
enum Stop {
    Failed(String),
    Cancelled,
}

/// The transcript could not be written: the run cannot go on consistently.
fn fail_store(e: StoreError) -> Stop {
    Stop::Failed(format!("cannot write the transcript: {e}"))
}

impl Agent {
    /// An agent over the kernel's model chain. Fails with
    /// [`AgentError::NoModel`] (whose message says how to configure one)
    /// when there is none. Marks runs whose process died as interrupted.
    pub fn new(kernel: Kernel) -> Result<Self, AgentError> {
        let chain = kernel.models().ok_or(AgentError::NoModel)?;
        check_base_urls(&chain, kernel.config().models.is_none())?;
        // Runs in an in-memory store are seen by this process only.
        let data_dir = kernel.store().data_dir().map(Path::to_path_buf);
        let owner = Owner::acquire(data_dir.as_deref()).map_err(AgentError::Owner)?;
        if let Some(dir) = &data_dir {
            super::owner::sweep(dir);
        }
        let recovered = kernel
            .store()
            .recover_interrupted_runs(&|id| owner.sees_alive(id))?;
        if recovered > 0 {
            tracing::warn!(
                runs = recovered,
                "marked runs interrupted by a stop as failed"
            );
        }
        drop(chain);
        Ok(Self(Arc::new(Inner {
            kernel,
            owner,
            lanes: Mutex::default(),
            runs: Mutex::default(),
            waiters: Mutex::default(),
            approvals: tokio::sync::broadcast::channel(64).0,
            calibration: Mutex::default(),
            last_model: Mutex::default(),
        })))
    }

    pub fn kernel(&self) -> &Kernel {
        &self.0.kernel
    }

    /// The model chain in force (`None` once a reload removed every
    /// model: runs then fail saying how to configure one).
    pub fn chain(&self) -> Option<Arc<ModelChain>> {
        self.0.kernel.models()
    }

    /// `[agent]` as it is now (a configuration reload replaces it).
    pub(super) fn settings(&self) -> AgentConfig {
        self.0.kernel.config().agent.clone()
    }

    /// The chain for the next model call, or why there is none.
    fn chain_now(&self) -> Result<Arc<ModelChain>, Stop> {
        self.0
            .kernel
            .models()
            .ok_or_else(|| Stop::Failed(NO_MODEL_HELP.trim().to_string()))
    }

    pub fn new_session(&self, title: &str) -> Result<SessionRecord, AgentError> {
        Ok(self.0.kernel.store().create_session(title)?)
    }

    /// Approval requests as they are made, for front ends.
    pub fn approval_requests(&self) -> tokio::sync::broadcast::Receiver<ApprovalRecord> {
        self.0.approvals.subscribe()
    }

    /// Accepts a message for a session and starts its run (after the runs
    /// already queued in that session). Must be called within the kernel's
    /// runtime or with it reachable (the run is spawned on it).
    pub fn submit(&self, session_id: &str, text: &str) -> Result<RunHandle, AgentError> {
        let run = self.0.kernel.store().accept_message(
            session_id,
            Some(self.0.owner.id()),
            Some(text),
        )??;
        let (events_tx, events) = mpsc::unbounded_channel();
        let (cancel_tx, _) = watch::channel(false);
        let ctl = Arc::new(RunControl {
            session_id: session_id.to_string(),
            cancelled: Arc::new(AtomicBool::new(false)),
            cancel_tx,
            events: events_tx,
            waiting: AtomicUsize::new(0),
            state_lock: Mutex::new(()),
            asked: Mutex::default(),
            shown: Mutex::default(),
            tools_done: watch::channel(true).0,
        });
        lock(&self.0.runs).insert(run.id.clone(), ctl.clone());
        let agent = self.clone();
        let run_id = run.id.clone();
        // Every log line of the run (its tool calls' included, see
        // `Kernel::call_tool_for`) carries its ids. At ERROR level so the
        // ids are there whenever anything is logged.
        let span = tracing::error_span!("run", run_id = %run.id, session_id = %session_id);
        self.0
            .kernel
            .runtime()
            .spawn(tracing::Instrument::instrument(
                async move {
                    agent.execute(run_id, ctl).await;
                },
                span,
            ));
        Ok(RunHandle {
            run_id: run.id,
            session_id: session_id.to_string(),
            events,
        })
    }

    /// Cancels a run of this process. Returns false if it is not running
    /// here (finished, unknown, or another process's).
    pub fn cancel(&self, run_id: &str) -> bool {
        let Some(ctl) = lock(&self.0.runs).get(run_id).cloned() else {
            return false;
        };
        ctl.cancelled.store(true, Ordering::Relaxed);
        ctl.cancel_tx.send_replace(true);
        // Wake its approval waits, which then answer no. Notifying under
        // the waiter's lock: a wait that checked the flag just before it
        // was set is then already parked, so the wake-up is not lost (it
        // would sleep until the approval timeout).
        for w in lock(&self.0.waiters).values() {
            let _held = lock(&w.answer);
            w.ready.notify_all();
        }
        true
    }

    /// Runs in flight in this process, with their sessions.
    pub fn active_runs(&self) -> Vec<(String, String)> {
        lock(&self.0.runs)
            .iter()
            .map(|(r, c)| (r.clone(), c.session_id.clone()))
            .collect()
    }

    /// Approval requests still waiting for an answer.
    pub fn pending_approvals(&self) -> Result<Vec<ApprovalRecord>, AgentError> {
        Ok(self.0.kernel.store().approvals(true)?)
    }

    /// Answers an approval request. Idempotent: the same answer again
    /// succeeds and changes nothing; `always` also stores the grant.
    pub fn answer(
        &self,
        approval_id: &str,
        answer: ApprovalAnswer,
    ) -> Result<ApprovalRecord, AgentError> {
        let (record, changed) = self
            .0
            .kernel
            .store()
            .answer_approval(approval_id, answer)??;
        if changed && let Some(w) = lock(&self.0.waiters).get(approval_id) {
            *lock(&w.answer) = Some(answer.approves());
            w.ready.notify_all();
        }
        Ok(record)
    }

    /// Moves a run, from a thread that may block (an engine thread waiting
    /// for an approval).
    pub(super) fn transition(&self, run_id: &str, to: RunState, reason: Option<&str>) {
        log_transition(
            run_id,
            self.0.kernel.store().transition_run(run_id, to, reason),
        );
    }

    /// Moves a run, from async code: the write happens on the store thread.
    async fn transition_async(&self, run_id: &str, to: RunState, reason: Option<String>) {
        let run = run_id.to_string();
        let r = self
            .db(move |s| s.transition_run(&run, to, reason.as_deref()))
            .await;
        log_transition(run_id, r);
    }

    /// Runs `f` on the store's thread (see [`crate::store::Store::call`]):
    /// async code here never waits on SQLite on a runtime worker.
    pub(super) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::store::Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.0.kernel.store().call(f).await
    }

    async fn execute(self, run_id: String, ctl: Arc<RunControl>) {
        let lane = self.lane(&ctl.session_id);
        let my_turn = self.wait_turn(&run_id, &ctl, &lane).await;
        let (state, reason) = if !my_turn || ctl.cancelled.load(Ordering::Relaxed) {
            (
                RunState::Cancelled,
                Some("cancelled before it started".to_string()),
            )
        } else {
            self.transition_async(&run_id, RunState::Running, None)
                .await;
            ctl.emit(RunEvent::State(RunState::Running));
            let mut cancel_rx = ctl.cancel_tx.subscribe();
            let limit = self.settings().max_run_time;
            let result = tokio::select! {
                r = self.turns(&run_id, &ctl) => r,
                _ = cancel_rx.wait_for(|c| *c) => Err(Stop::Cancelled),
                _ = tokio::time::sleep(limit) => Err(Stop::Failed(format!(
                    "stopped: the run took longer than {} s (agent.max_run_seconds in keel.toml)",
                    limit.as_secs()
                ))),
            };
            // Whatever stopped the loop, tools still running must stop too,
            // and what the user already saw stays in the transcript.
            if result.is_err() {
                ctl.cancelled.store(true, Ordering::Relaxed);
                // Scripts stop at their next check and `exec` kills its
                // process group: their "stopped" results are stored before
                // the run ends, so the transcript says what happened.
                let mut done = ctl.tools_done.subscribe();
                if tokio::time::timeout(TOOLS_STOP_GRACE, done.wait_for(|d| *d))
                    .await
                    .is_err()
                {
                    tracing::warn!(run = %run_id, "tool calls still running after the run stopped");
                }
                let why = match &result {
                    Err(Stop::Cancelled) => "the run was cancelled".to_string(),
                    Err(Stop::Failed(why)) => why.clone(),
                    Ok(()) => String::new(),
                };
                if let Err(e) = self.keep_shown(&run_id, &ctl, &why).await {
                    tracing::error!(run = %run_id, error = %e, "cannot write the transcript");
                }
            }
            match result {
                Ok(()) => (RunState::Done, None),
                Err(Stop::Cancelled) => (RunState::Cancelled, Some("cancelled".to_string())),
                Err(Stop::Failed(why)) => (RunState::Failed, Some(why)),
            }
        };
        self.transition_async(&run_id, state, reason.clone()).await;
        self.0.kernel.metrics().run_finished(state);
        lane.notify_waiters();
        lock(&self.0.runs).remove(&run_id);
        let run = run_id.clone();
        let loaded = match self.db(move |s| Ok(RunOutcome::load(s, &run))).await {
            Ok(r) => r,
            Err(e) => Err(AgentError::Store(e)),
        };
        let outcome = loaded.unwrap_or_else(|e| {
            RunOutcome::unrecorded(
                run_id.clone(),
                ctl.session_id.clone(),
                state,
                format!(
                    "{} (and the run could not be read back: {e})",
                    reason.unwrap_or_default()
                ),
            )
        });
        ctl.emit(RunEvent::State(state));
        ctl.emit(RunEvent::Finished(outcome));
    }

    /// The model/tool loop.
    async fn turns(&self, run_id: &str, ctl: &Arc<RunControl>) -> Result<(), Stop> {
        let kernel = &self.0.kernel;
        let mut rounds = 0u32;
        let mut used = 0u64;
        let mut stream_retries = 0u32;
        let mut overflow_retried = false;
        loop {
            // The skills and [agent] as they are now: an edit between
            // rounds is seen, and so is a skill disabled since (from any
            // process).
            let set = self.offered_set().await;
            let cfg = self.settings();
            let records = self.records(run_id, ctl).await.map_err(fail_store)?;
            // What the session has activated and found so far (read from
            // every stored message, so compaction does not forget it).
            let mut disclosed = Disclosed::from_records(&records);
            // Skills the operator keeps active count as activated last.
            disclosed
                .activated
                .extend(cfg.active_skills.iter().cloned());
            let offered = offered_tools(&set, cfg.max_offered_tools, &disclosed);
            let tools = ToolMap::offered(&set, &offered);
            let system = system_prompt(
                cfg.system_prompt.as_deref(),
                &kernel.workspace().display().to_string(),
                &set,
            );
            let mut messages = context_from_records(&records);
            let window = self.context_window();
            let budget = (f64::from(window) * cfg.compact_at) as u32;
            let estimate = context::calibrated(
                context::estimate_request(&system, &messages, &tools.defs),
                self.calibration(),
            );
            if estimate > budget
                && let Some(n) = self.compact(run_id, ctl, &messages, cfg.keep_turns).await?
            {
                ctl.emit(RunEvent::Compacted { messages: n });
                messages = self.context(run_id, ctl).await.map_err(fail_store)?;
            }
            if used >= cfg.max_run_tokens {
                return Err(Stop::Failed(format!(
                    "stopped: the run used {used} tokens, over its budget of {} (agent.max_run_tokens in keel.toml)",
                    cfg.max_run_tokens
                )));
            }
            let estimated = context::estimate_request(&system, &messages, &tools.defs);
            let (n_tools, offered_bytes) = (
                tools.defs.len() as u64,
                (system.len() + tools.defs_bytes()) as u64,
            );
            tracing::debug!(
                run = run_id,
                tools = n_tools,
                bytes = offered_bytes,
                "offered to the model"
            );
            let run = run_id.to_string();
            self.db(move |s| s.record_offered(&run, n_tools, offered_bytes))
                .await
                .map_err(fail_store)?;
            let mut all = Vec::with_capacity(messages.len() + 1);
            all.push(Message::System(system));
            all.extend(context::well_formed(to_wire(messages.clone(), &tools)));
            let req = Request {
                model: String::new(),
                messages: all,
                tools: tools.defs.clone(),
                max_tokens: cfg.max_output_tokens,
                temperature: None,
            };
            let result = self
                .chain_now()?
                .complete(&req, &mut |e| {
                    if let StreamEvent::Text(t) = e {
                        lock(&ctl.shown).push_str(&t);
                        ctl.emit(RunEvent::Text(t));
                    }
                })
                .await;
            let (completion, model) = match result {
                Ok(c) => c,
                Err(ChainError::Interrupted { model, error })
                    if stream_retries < MAX_STREAM_RETRIES =>
                {
                    stream_retries += 1;
                    let reason = format!("model `{model}`: {error}");
                    tracing::warn!(run = run_id, %reason, "the model's stream was cut; asking again");
                    self.keep_shown(run_id, ctl, &format!("the stream was cut: {error}"))
                        .await
                        .map_err(fail_store)?;
                    ctl.emit(RunEvent::StreamCut { reason });
                    continue;
                }
                Err(e) if e.is_context_overflow() => {
                    let older = context::compaction_split(&messages, 1).is_some();
                    if older && !overflow_retried {
                        overflow_retried = true;
                        tracing::warn!(run = run_id, error = %e, "the model's context overflowed; compacting");
                        // The server knows best: compact everything but the
                        // current turn (one huge earlier turn kept verbatim
                        // would otherwise overflow every later request).
                        match self.compact(run_id, ctl, &messages, 1).await? {
                            Some(n) => {
                                ctl.emit(RunEvent::Compacted { messages: n });
                                continue;
                            }
                            None => {
                                return Err(Stop::Failed(format!(
                                    "the model failed: {e} (and compacting the older turns failed too; start a new session or raise the server's context size)"
                                )));
                            }
                        }
                    }
                    // Nothing older is left to compact. If the request ends
                    // with the user's message (nothing of this run's own
                    // work is in it yet), that message alone is too large:
                    // sent again with every later turn it would fail them
                    // all, so later contexts get a stand-in for it.
                    if matches!(messages.last(), Some(Message::User(_))) {
                        let run = run_id.to_string();
                        self.db(move |s| s.leave_out_user_message(&run))
                            .await
                            .map_err(fail_store)?;
                        return Err(Stop::Failed(format!(
                            "the model failed: {e}. Your message is too large for the model's context: it stays in the transcript but is left out of what the model sees from now on. Send it in smaller parts, or raise the server's context size"
                        )));
                    }
                    return Err(Stop::Failed(format!(
                        "the model failed: {e} (the conversation is still too large after compacting; start a new session or raise the server's context size)"
                    )));
                }
                Err(e) => {
                    self.keep_shown(run_id, ctl, &format!("the model failed: {e}"))
                        .await
                        .map_err(fail_store)?;
                    return Err(Stop::Failed(format!("the model failed: {e}")));
                }
            };
            // The completion (stored next) holds the whole text.
            lock(&ctl.shown).clear();
            if let Some(u) = completion.usage {
                used += u.input_tokens + u.output_tokens;
                if let Some(r) = context::calibration(Some(u.input_tokens), estimated) {
                    tracing::debug!(
                        %model,
                        estimated,
                        reported = u.input_tokens,
                        ratio = r,
                        "token estimate calibrated"
                    );
                    lock(&self.0.calibration).insert(model.clone(), r);
                }
            }
            *lock(&self.0.last_model) = Some(model.clone());
            self.record_usage(run_id, &model, completion.usage)
                .await
                .map_err(fail_store)?;
            let crate::llm::Completion {
                mut text,
                tool_calls,
                mut cut_calls,
                stop,
                ..
            } = completion;
            // Transcripts hold real tool names; wire names are per request.
            let resolve = |mut c: ToolCall| {
                let resolved = tools.resolve(&c.name).to_string();
                // A tool that exists but was not offered has no wire name
                // in this request: read its plain wire form back, so the
                // call is refused with the way to reach it (or, for a
                // disabled skill's tool, with how to enable it).
                let plain = super::prompt::tool_name(&resolved);
                c.name = if resolved == c.name
                    && !tools.offers(&resolved)
                    && kernel.skills().tools.contains_key(&plain)
                {
                    plain
                } else {
                    resolved
                };
                c
            };
            let mut calls: Vec<ToolCall> = tool_calls.into_iter().map(resolve).collect();
            if let StopReason::AnswerLimit(limit) = stop {
                // Nothing of an answer over the bound is acted on.
                cut_calls.append(&mut calls);
                text.push_str(&format!(
                    "\n[… answer cut at {limit} bytes: agent.max_answer_bytes in keel.toml]"
                ));
            }
            let cut_calls: Vec<ToolCall> = cut_calls.into_iter().map(resolve).collect();
            let calls_json = (!calls.is_empty() || !cut_calls.is_empty())
                .then(|| calls_to_json(&calls, &cut_calls));
            let (session, run, cut) = (
                ctl.session_id.clone(),
                run_id.to_string(),
                cut_calls.clone(),
            );
            let stored_text = text.clone();
            self.db(move |s| {
                let mut rows = vec![NewMessage {
                    session_id: &session,
                    run_id: Some(&run),
                    kind: MessageKind::Assistant,
                    content: &stored_text,
                    tool_calls: calls_json.as_deref(),
                    ..Default::default()
                }];
                rows.extend(cut.iter().map(|c| NewMessage {
                    session_id: &session,
                    run_id: Some(&run),
                    kind: MessageKind::Tool,
                    content: CUT_CALL_RESULT,
                    call_id: Some(&c.id),
                    name: Some(&c.name),
                    is_error: true,
                    ..Default::default()
                }));
                s.add_messages(&rows)
            })
            .await
            .map_err(fail_store)?;
            for c in &cut_calls {
                ctl.emit(RunEvent::ToolFinished {
                    call_id: c.id.clone(),
                    name: c.name.clone(),
                    ok: false,
                    summary: "not run: cut by the output limit".into(),
                    elapsed: Duration::ZERO,
                });
            }
            if let StopReason::AnswerLimit(limit) = stop {
                return Err(Stop::Failed(format!(
                    "the answer was cut at {limit} bytes (agent.max_answer_bytes in keel.toml)"
                )));
            }
            if calls.is_empty() && cut_calls.is_empty() {
                if stop == StopReason::MaxTokens {
                    return Err(Stop::Failed(format!(
                        "the answer was cut at {} tokens (agent.max_output_tokens in keel.toml)",
                        cfg.max_output_tokens
                    )));
                }
                return Ok(());
            }
            if rounds >= cfg.max_tool_rounds {
                return Err(Stop::Failed(format!(
                    "stopped: the model still wanted tools after {} rounds (agent.max_tool_rounds in keel.toml)",
                    cfg.max_tool_rounds
                )));
            }
            rounds += 1;
            // Only whole calls run; the cut ones already have their result
            // telling the model to try again.
            self.run_tools(run_id, ctl, calls, Arc::new(offered), set)
                .await?;
        }
    }

    /// The skill set without the disabled skills, read on the store's
    /// thread. If that fails, every skill is offered (with a warning): the
    /// kernel still refuses a disabled skill's tools when called.
    async fn offered_set(&self) -> Arc<crate::skill::SkillSet> {
        let kernel = &self.0.kernel;
        let ws = kernel.workspace().to_path_buf();
        let disabled = self
            .db(move |s| s.disabled_skills(&ws))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read which skills are disabled; offering all");
                Default::default()
            });
        kernel.offered_skills_given(&disabled)
    }

    /// The calibration of the model expected to answer next: the one that
    /// answered last, else the chain's first.
    fn calibration(&self) -> Option<f64> {
        let model = lock(&self.0.last_model).clone().or_else(|| {
            self.0
                .kernel
                .models()
                .and_then(|c| c.models().first().map(|m| m.name.clone()))
        })?;
        lock(&self.0.calibration).get(&model).copied()
    }

    /// Stores the text shown of a model call that did not complete, if
    /// any, marked as cut (with `why`), as the run's partial answer. It is
    /// sent to the model again only if the user speaks next (see
    /// [`context_from_records`]).
    async fn keep_shown(
        &self,
        run_id: &str,
        ctl: &RunControl,
        why: &str,
    ) -> Result<(), StoreError> {
        let shown = std::mem::take(&mut *lock(&ctl.shown));
        if !shown.is_empty() {
            let content = format!("{shown}\n[… cut: {why}]");
            let (session, run) = (ctl.session_id.clone(), run_id.to_string());
            self.db(move |s| {
                s.add_messages(&[NewMessage {
                    session_id: &session,
                    run_id: Some(&run),
                    kind: MessageKind::Assistant,
                    content: &content,
                    is_error: true,
                    ..Default::default()
                }])
            })
            .await?;
        }
        Ok(())
    }

    /// Adds one model call's tokens to the run; a server that reported
    /// none is recorded as unknown, not as 0.
    async fn record_usage(
        &self,
        run_id: &str,
        model: &str,
        usage: Option<Usage>,
    ) -> Result<(), StoreError> {
        let (run, model) = (run_id.to_string(), model.to_string());
        let tokens = usage.map(|u| (u.input_tokens, u.output_tokens));
        self.db(move |s| s.record_usage(Some(&run), None, &model, tokens))
            .await
    }

    fn context_window(&self) -> u32 {
        self.0
            .kernel
            .models()
            .and_then(|c| c.models().first().and_then(|m| m.context_window))
            .unwrap_or(self.settings().context_window)
    }

    /// Runs one model turn's tool calls concurrently and stores their
    /// results, in the order the model asked.
    async fn run_tools(
        &self,
        run_id: &str,
        ctl: &Arc<RunControl>,
        calls: Vec<ToolCall>,
        offered: Arc<Vec<String>>,
        set: Arc<crate::skill::SkillSet>,
    ) -> Result<(), Stop> {
        // In a task of its own: if this future is dropped (the run was
        // cancelled or ran out of time), the calls still finish, stopping
        // early, and their results are stored (see `tools_done`).
        ctl.tools_done.send_replace(false);
        let (agent, run, c) = (self.clone(), run_id.to_string(), ctl.clone());
        // Spawned tasks do not inherit the run's span: hand it on, so the
        // tool calls' log lines carry the run's ids.
        let span = tracing::Span::current();
        let batch = tokio::spawn(tracing::Instrument::instrument(
            async move {
                // Set however the batch ends, a panic included.
                struct Done(Arc<RunControl>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        self.0.tools_done.send_replace(true);
                    }
                }
                let _done = Done(c.clone());
                agent.tool_batch(&run, &c, calls, &offered, &set).await
            },
            span,
        ));
        batch
            .await
            .map_err(|e| Stop::Failed(format!("a tool task failed: {e}")))?
    }

    /// Runs one turn's calls concurrently and stores their results in call
    /// order.
    async fn tool_batch(
        &self,
        run_id: &str,
        ctl: &Arc<RunControl>,
        calls: Vec<ToolCall>,
        offered: &[String],
        set: &crate::skill::SkillSet,
    ) -> Result<(), Stop> {
        lock(&ctl.asked).clear();
        let mut tasks = Vec::with_capacity(calls.len());
        for call in calls {
            let name = call.name.clone();
            ctl.emit(RunEvent::ToolStarted {
                call_id: call.id.clone(),
                name: name.clone(),
                arguments: call.arguments.clone(),
            });
            let link = Arc::new(RunLink {
                run_id: Some(run_id.to_string()),
                cancelled: ctl.cancelled.clone(),
                approver: Arc::new(CallApprover {
                    agent: Arc::downgrade(&self.0),
                    run_id: run_id.to_string(),
                    arguments: call.arguments.clone(),
                    ctl: ctl.clone(),
                }),
            });
            let kernel = self.0.kernel.clone();
            // A tool that exists but was not offered (more are installed
            // than [agent] max_offered_tools) is refused with the way to
            // reach it; keel's own tools are always callable. A disabled
            // skill's tool is not in `set`: the kernel refuses it, saying
            // it is disabled.
            let not_offered = !offered.contains(&name)
                && !crate::tool::native::is_native(&name)
                && !super::prompt::all_callable(set, self.settings().max_offered_tools)
                && set.tools.contains_key(&name);
            tasks.push(tokio::spawn(tracing::Instrument::in_current_span(
                async move {
                    let started = Instant::now();
                    let result = match parse_arguments(&call.arguments) {
                        _ if not_offered => Err(crate::tool::ToolError::NotOffered {
                            skill: name.split('.').next().unwrap_or_default().to_string(),
                            name: name.clone(),
                        }
                        .to_string()),
                        Ok(args) => kernel
                            .call_tool_for(&name, args, Some(link))
                            .await
                            .map(|v| match v {
                                Value::String(s) => s,
                                other => other.to_string(),
                            })
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    };
                    (call, name, result, started.elapsed())
                },
            )));
        }
        let mut rows = Vec::with_capacity(tasks.len());
        for t in tasks {
            let (call, name, result, elapsed) = t
                .await
                .map_err(|e| Stop::Failed(format!("a tool task failed: {e}")))?;
            let (ok, content) = match result {
                Ok(s) => (true, cap(s)),
                Err(e) => (false, cap(e)),
            };
            ctl.emit(RunEvent::ToolFinished {
                call_id: call.id.clone(),
                name: name.clone(),
                ok,
                summary: summary(&content),
                elapsed,
            });
            rows.push((call.id, name, ok, content, elapsed));
        }
        let (session, run) = (ctl.session_id.clone(), run_id.to_string());
        self.db(move |s| {
            let messages: Vec<NewMessage<'_>> = rows
                .iter()
                .map(|(id, name, ok, content, elapsed)| NewMessage {
                    session_id: &session,
                    run_id: Some(&run),
                    kind: MessageKind::Tool,
                    content,
                    call_id: Some(id),
                    name: Some(name),
                    is_error: !ok,
                    elapsed_ms: Some(elapsed.as_millis() as i64),
                    ..Default::default()
                })
                .collect();
            s.add_messages(&messages)
        })
        .await
        .map_err(fail_store)?;
        if ctl.cancelled.load(Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
        Ok(())
    }

    /// The conversation as the model sees it: the latest summary (if any)
    /// in place of what it covers, then every later message; a tool call
    /// without a stored result gets an error result, so calls and results
    /// always pair up.
    async fn context(&self, run_id: &str, ctl: &RunControl) -> Result<Vec<Message>, StoreError> {
        Ok(context_from_records(&self.records(run_id, ctl).await?))
    }

    /// The stored messages a run sees (see [`seen_by`]).
    async fn records(
        &self,
        run_id: &str,
        ctl: &RunControl,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let session = ctl.session_id.clone();
        let mut records = self.db(move |s| s.messages(&session)).await?;
        let seen = seen_by(&records, run_id).len();
        records.truncate(seen);
        Ok(records)
    }

    /// Summarises older turns; returns how many messages the summary
    /// replaced, or `None` if there was nothing old enough to compact.
    async fn compact(
        &self,
        run_id: &str,
        ctl: &Arc<RunControl>,
        messages: &[Message],
        keep_turns: usize,
    ) -> Result<Option<usize>, Stop> {
        let Some(split) = context::compaction_split(messages, keep_turns) else {
            return Ok(None);
        };
        let req = Request {
            model: String::new(),
            messages: context::summary_request(&messages[..split], 400),
            tools: Vec::new(),
            max_tokens: 1024,
            temperature: None,
        };
        // A failed compaction loses nothing: the run goes on with the whole
        // conversation (a server that then finds it too long says so, and
        // that is reported), and the console is told.
        let chain = match self.chain_now() {
            Ok(c) => c,
            Err(_) => return Ok(None),
        };
        let (completion, model) = match chain.complete(&req, &mut |_| {}).await {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("compacting the conversation failed: {e}");
                tracing::warn!(run = run_id, %reason);
                ctl.emit(RunEvent::CompactionFailed { reason });
                return Ok(None);
            }
        };
        self.record_usage(run_id, &model, completion.usage)
            .await
            .map_err(fail_store)?;
        // A summary cut by the output limit (or by a small server's full
        // context) still stands for the turns it covers better than
        // failing the run does; it is marked as cut. Only text with no
        // words, or one cut by our own byte bound, is refused.
        let refused = if completion.text.trim().is_empty() {
            Some("empty")
        } else if matches!(completion.stop, StopReason::AnswerLimit(_)) {
            Some("too long")
        } else {
            None
        };
        if let Some(why) = refused {
            let reason =
                format!("compacting the conversation failed: the model's summary was {why}");
            ctl.emit(RunEvent::CompactionFailed { reason });
            return Ok(None);
        }
        let mut summary = completion.text.trim().to_string();
        if completion.stop == StopReason::MaxTokens {
            summary.push_str("\n[… summary cut short]");
        }
        // The last stored message the summary stands for: the context's
        // messages map onto the stored ones after the previous summary.
        let records = self.records(run_id, ctl).await.map_err(fail_store)?;
        let Some(covers_to) = covered_id(&records, split) else {
            return Ok(None);
        };
        let (session, run, text) = (ctl.session_id.clone(), run_id.to_string(), summary);
        self.db(move |s| {
            s.add_messages(&[NewMessage {
                session_id: &session,
                run_id: Some(&run),
                kind: MessageKind::Summary,
                content: &text,
                covers_to: Some(covers_to),
                ..Default::default()
            }])
        })
        .await
        .map_err(fail_store)?;
        Ok(Some(split))
    }
}

/// Logs a run transition that could not be stored or was refused.
fn log_transition(run_id: &str, r: Result<Result<(), RunError>, StoreError>) {
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(run = run_id, error = %e, "run transition refused"),
        Err(e) => tracing::error!(run = run_id, error = %e, "cannot store a run transition"),
    }
}
