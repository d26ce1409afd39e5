//! Runs started over HTTP and their event streams.
//!
//! A run's events get numbers from 1 as they happen ([`RunLog::push`]) and
//! go to live subscribers at once, from memory; the same events are written
//! to the store in batches (one transaction per batch, off the runtime's
//! threads), so `GET /v1/runs/{id}/events` with `Last-Event-ID` resumes
//! from memory while the run lives and from the store after it ended or
//! after a restart. A run whose stored events have no `done` — keel was
//! killed mid-run, or another keel process ran it — gets one made from its
//! record once it is final, stored too (numbered [`SETTLED_DONE_SEQ`], past
//! any event a client may have seen live but keel had not stored yet), so
//! every reader sees the same ids. Events of a killed keel that were sent
//! but not yet stored are not replayed; the transcript and the `done` say
//! how the run ended.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::Event;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::Gw;
use crate::agent::{RunEvent, RunHandle, RunOutcome};
use crate::store::RunEventRecord;

/// How long a finished run's events stay in memory after they are stored.
const KEEP_FINISHED: Duration = Duration::from_secs(30);
/// The number of a `done` made from a run's record. Above any number a
/// live run reaches, so a client that saw events keel had not stored yet
/// when it was killed still gets it after the number it saw.
pub const SETTLED_DONE_SEQ: u64 = u32::MAX as u64;

/// How often a stream of a run that is not live here looks at its record.
const POLL: Duration = Duration::from_millis(250);

/// One event as sent.
#[derive(Debug)]
pub struct Sent {
    pub seq: u64,
    pub name: &'static str,
    pub data: String,
}

/// The events of a run live in this process.
pub struct RunLog {
    pub session_id: String,
    events: Mutex<Vec<Arc<Sent>>>,
    done: AtomicBool,
    latest: watch::Sender<u64>,
}

impl RunLog {
    fn new(session_id: String) -> Self {
        Self {
            session_id,
            events: Mutex::new(Vec::new()),
            done: AtomicBool::new(false),
            latest: watch::channel(0).0,
        }
    }

    fn push(&self, name: &'static str, data: String) -> Arc<Sent> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let sent = Arc::new(Sent {
            seq: events.len() as u64 + 1,
            name,
            data,
        });
        events.push(sent.clone());
        drop(events);
        self.latest.send_replace(sent.seq);
        sent
    }

    /// The event after `cursor`, if it happened yet.
    fn after(&self, cursor: u64) -> Option<Arc<Sent>> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.get(cursor as usize).cloned()
    }

    fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
        self.latest.send_modify(|_| {});
    }
}

/// Runs of this process with their logs.
#[derive(Default)]
pub struct RunLogs {
    live: Mutex<HashMap<String, Arc<RunLog>>>,
}

impl RunLogs {
    pub fn get(&self, run_id: &str) -> Option<Arc<RunLog>> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .cloned()
    }

    fn insert(&self, run_id: &str, log: Arc<RunLog>) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.to_string(), log);
    }

    fn remove(&self, run_id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
    }
}

/// A run event as the stream names and shapes it.
pub fn wire(e: &RunEvent) -> (&'static str, Value) {
    match e {
        RunEvent::State(s) => ("state", json!({"state": s})),
        RunEvent::Text(delta) => ("text", json!({"delta": delta})),
        RunEvent::ToolStarted {
            call_id,
            name,
            arguments,
        } => {
            // The arguments as JSON when they are (they nearly always are).
            let args = serde_json::from_str::<Value>(arguments)
                .unwrap_or_else(|_| Value::String(arguments.clone()));
            (
                "tool_call",
                json!({"id": call_id, "name": name, "args": args}),
            )
        }
        RunEvent::ToolFinished {
            call_id,
            name,
            ok,
            summary,
            elapsed,
        } => (
            "tool_result",
            json!({"id": call_id, "name": name, "ok": ok, "summary": summary, "ms": elapsed.as_millis() as u64}),
        ),
        RunEvent::Approval(a) => (
            "approval",
            json!({"id": a.id, "skill": a.skill, "tool": a.tool, "capability": a.capability, "target": a.target}),
        ),
        RunEvent::Compacted { messages } => ("compacted", json!({"messages": messages})),
        RunEvent::CompactionFailed { reason } => ("compaction_failed", json!({"reason": reason})),
        RunEvent::StreamCut { reason } => ("stream_cut", json!({"reason": reason})),
        RunEvent::Finished(o) => ("done", done_data(o)),
    }
}

/// The `done` event's data.
pub fn done_data(o: &RunOutcome) -> Value {
    json!({
        "state": o.state,
        "answer": o.answer,
        "usage": o.usage,
        "error": o.reason,
        "model": o.model,
    })
}

/// Takes a submitted run: registers its log (before the caller answers
/// with the run's id, so a stream opened at once finds it live) and
/// drains its events in a task of its own.
pub fn track(gw: &Gw, handle: RunHandle) {
    let log = Arc::new(RunLog::new(handle.session_id.clone()));
    gw.runs.insert(&handle.run_id, log.clone());
    gw.hub.publish(
        "run.started",
        json!({"run_id": handle.run_id, "session_id": handle.session_id}),
    );
    let gw = gw.clone();
    tokio::spawn(async move { drain(gw, handle, log).await });
}

async fn drain(gw: Gw, mut handle: RunHandle, log: Arc<RunLog>) {
    let run_id = handle.run_id.clone();
    let mut finished: Option<RunOutcome> = None;
    let mut stored_all = true;
    while let Some(first) = handle.events.recv().await {
        let mut batch = Vec::new();
        let mut take = |e: RunEvent| {
            let (name, data) = wire(&e);
            let sent = log.push(name, data.to_string());
            batch.push(RunEventRecord {
                seq: sent.seq,
                event: name.to_string(),
                data: sent.data.clone(),
            });
            if let RunEvent::Finished(o) = e {
                finished = Some(o);
            }
        };
        take(first);
        while let Ok(e) = handle.events.try_recv() {
            take(e);
        }
        let id = run_id.clone();
        if let Err(e) = gw
            .kernel
            .store()
            .call(move |s| s.append_run_events(&id, &batch))
            .await
        {
            stored_all = false;
            tracing::warn!(run_id = %run_id, error = %e, "cannot store the run's events; they are served from memory");
        }
        if finished.is_some() {
            break;
        }
    }
    log.finish();
    let state = finished.as_ref().map(|o| o.state);
    gw.hub.publish(
        "run.finished",
        json!({"run_id": run_id, "session_id": log.session_id, "state": state}),
    );
    if stored_all {
        tokio::time::sleep(KEEP_FINISHED).await;
        gw.runs.remove(&run_id);
    }
}

/// Where a stream reads from.
enum Source {
    Live(Arc<RunLog>, watch::Receiver<u64>),
    Stored(VecDeque<RunEventRecord>),
}

struct Cursor {
    gw: Gw,
    run_id: String,
    after: u64,
    source: Source,
    closing: watch::Receiver<bool>,
    ended: bool,
    /// A `done` was made sure of in the store: nothing more will come.
    settled: bool,
    _guard: super::StreamGuard,
}

fn event(seq: u64, name: &str, data: &str) -> Event {
    Event::default().id(seq.to_string()).event(name).data(data)
}

/// The events of `run_id` after event `after`, live or stored, ending
/// after `done` (or when the gateway closes): `(seq, name, data)`.
pub fn follow(
    gw: Gw,
    run_id: String,
    after: u64,
    guard: super::StreamGuard,
) -> impl futures_util::Stream<Item = (u64, String, String)> + Send {
    let source = match gw.runs.get(&run_id) {
        Some(log) => {
            let rx = log.latest.subscribe();
            Source::Live(log, rx)
        }
        None => Source::Stored(VecDeque::new()),
    };
    let closing = gw.closing.subscribe();
    let cursor = Cursor {
        gw,
        run_id,
        after,
        source,
        closing,
        ended: false,
        settled: false,
        _guard: guard,
    };
    futures_util::stream::unfold(cursor, |mut c| async move {
        let e = c.next().await?;
        Some((e, c))
    })
}

/// [`follow`] as server-sent events.
pub fn stream(
    gw: Gw,
    run_id: String,
    after: u64,
    guard: super::StreamGuard,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send {
    use futures_util::StreamExt;
    follow(gw, run_id, after, guard).map(|(seq, name, data)| Ok(event(seq, &name, &data)))
}

impl Cursor {
    async fn next(&mut self) -> Option<(u64, String, String)> {
        loop {
            if self.ended || *self.closing.borrow() {
                return None;
            }
            match &mut self.source {
                Source::Live(log, rx) => {
                    if let Some(e) = log.after(self.after) {
                        self.after = e.seq;
                        if e.name == "done" {
                            self.ended = true;
                        }
                        return Some((e.seq, e.name.to_string(), e.data.clone()));
                    }
                    if log.done.load(Ordering::SeqCst) {
                        return None;
                    }
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { return None },
                        _ = self.closing.changed() => return None,
                    }
                }
                Source::Stored(page) => {
                    if let Some(e) = page.pop_front() {
                        self.after = e.seq;
                        if e.event == "done" {
                            self.ended = true;
                        }
                        return Some((e.seq, e.event, e.data));
                    }
                    let (id, after) = (self.run_id.clone(), self.after);
                    let more = self
                        .gw
                        .kernel
                        .store()
                        .call(move |s| s.run_events(&id, after))
                        .await
                        .ok()?;
                    if !more.is_empty() {
                        page.extend(more);
                        continue;
                    }
                    // Started here after the stream opened? (Not for ids
                    // handed out: those are registered first.)
                    if let Some(log) = self.gw.runs.get(&self.run_id) {
                        let rx = log.latest.subscribe();
                        self.source = Source::Live(log, rx);
                        continue;
                    }
                    let id = self.run_id.clone();
                    let settled = self
                        .gw
                        .kernel
                        .store()
                        .call(move |s| settle_done(s, &id))
                        .await
                        .ok()?;
                    if settled {
                        if self.settled {
                            return None;
                        }
                        self.settled = true;
                        continue;
                    }
                    // In flight in another process: look again shortly.
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {},
                        _ = self.closing.changed() => return None,
                    }
                }
            }
        }
    }
}

/// For a final run whose stored events end without `done`: stores one made
/// from its record. Returns whether the run is final (so a `done` is now
/// stored); false while it is still in flight.
fn settle_done(s: &crate::store::Store, run_id: &str) -> Result<bool, crate::store::StoreError> {
    let Some(run) = s.run(run_id)? else {
        return Ok(true);
    };
    if !run.state.is_final() {
        return Ok(false);
    }
    let last = s.last_run_event(run_id)?;
    let has_done = last > 0
        && s.run_events(run_id, last - 1)?
            .first()
            .is_some_and(|e| e.event == "done");
    if !has_done {
        let outcome = RunOutcome::from_record(s, &run)?;
        s.append_run_events(
            run_id,
            &[RunEventRecord {
                seq: SETTLED_DONE_SEQ.max(last + 1),
                event: "done".into(),
                data: done_data(&outcome).to_string(),
            }],
        )?;
    }
    Ok(true)
}
