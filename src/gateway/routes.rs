//! The routes: what each takes and answers (the README's HTTP API
//! reference lists them all).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{ApiError, json_body};
use super::{Gw, StreamGuard, runs};
use crate::agent::{AgentError, RunOutcome};
use crate::commands::{self, CommandError, Ctx, Render};
use crate::kernel::KernelEvent;
use crate::kernel::ReloadOutcome;
use crate::store::{AnswerError, ApprovalAnswer, RunError};

type ApiResult = Result<Response, ApiError>;

pub fn router(gw: Gw) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(super::console::index))
        .route("/assets/{file}", get(super::console::asset))
        .route("/v1/sessions", get(list_sessions).post(create_session))
        .route("/v1/sessions/{id}", get(get_session))
        .route(
            "/v1/sessions/{id}/messages",
            get(session_messages).post(post_message),
        )
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", post(answer_approval))
        .route("/v1/events", get(operator_events))
        .route(
            "/v1/chat/completions",
            post(super::openai::chat_completions),
        )
        .route("/v1/skills", get(list_skills))
        .route("/v1/skills/{name}", get(get_skill))
        .route("/v1/skills/{name}/reload", post(reload_skill))
        .route("/v1/skills/{name}/disable", post(disable_skill))
        .route("/v1/skills/{name}/enable", post(enable_skill))
        .route("/metrics", get(metrics))
        .route("/v1/tools", get(list_tools))
        .route("/v1/tools/{name}/call", post(call_tool))
        .route("/v1/audit", get(audit))
        .route(
            "/v1/grants",
            get(list_grants).post(add_grant).delete(remove_grant),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Handlers read their bodies with `json_body`, bounded by
        // [gateway] max_body_bytes as it is at the time.
        .layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            super::guard,
        ))
        .with_state(gw)
}

fn ok(status: StatusCode, v: Value) -> ApiResult {
    Ok((status, axum::Json(v)).into_response())
}

/// A command's `--json` output as the response body.
fn command_json(out: &dyn Render) -> ApiResult {
    let text = out
        .json()
        .map_err(|e| ApiError::internal(format!("cannot encode the answer: {e}")))?;
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response())
}

fn command_error(e: CommandError) -> ApiError {
    match e {
        CommandError::Store(s) => s.into(),
        CommandError::NoSuchGrant { .. } | CommandError::NoSuchSession(_) => {
            ApiError::not_found(e.to_string())
        }
        CommandError::Answer(a) => answer_error(a),
        other => ApiError::bad_request(other.to_string()),
    }
}

fn answer_error(e: AnswerError) -> ApiError {
    match e {
        AnswerError::NoApproval(_) => ApiError::not_found(e.to_string()),
        AnswerError::NoExactRule(_) => ApiError::bad_request(e.to_string()),
        _ => ApiError::conflict(e.to_string()),
    }
}

pub(super) fn agent_error(e: AgentError) -> ApiError {
    match e {
        AgentError::Store(s) => s.into(),
        AgentError::Run(RunError::NoSession(_) | RunError::NoRun(_)) => {
            ApiError::not_found(e.to_string())
        }
        AgentError::Answer(a) => answer_error(a),
        AgentError::NoModel => no_model(),
        other => ApiError::internal(other.to_string()),
    }
}

pub(super) fn no_model() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_model",
        crate::agent::NO_MODEL_HELP.trim().to_string(),
    )
}

/// Runs blocking work (SQLite, a skill listing) off the runtime's workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}; see the HTTP API reference in the README",
        req.method(),
        crate::text::escape_control(req.uri().path())
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            req.method(),
            crate::text::escape_control(req.uri().path())
        ),
    )
}

async fn healthz() -> ApiResult {
    ok(StatusCode::OK, json!({"status": "ok"}))
}

/// Ready when the store answers, skills are loaded and a model is
/// configured; each check says what it found.
async fn readyz(State(gw): State<Gw>) -> ApiResult {
    let store = gw.kernel.store().call(|s| s.ping()).await;
    let set = gw.kernel.skills();
    let model = gw.agent.is_some();
    let ready = store.is_ok() && model;
    let body = json!({
        "ready": ready,
        "checks": {
            "store": match &store {
                Ok(()) => json!({"ok": true}),
                Err(e) => json!({"ok": false, "message": e.to_string()}),
            },
            "skills": {"ok": true, "loaded": set.skills.len(), "failed": set.failures.len()},
            "model": if model {
                json!({"ok": true})
            } else {
                json!({"ok": false, "message": crate::agent::NO_MODEL_HELP.trim()})
            },
        }
    });
    ok(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewSession {
    #[serde(default)]
    title: Option<String>,
}

async fn create_session(State(gw): State<Gw>, body: Body) -> ApiResult {
    let req: NewSession = json_body(body, gw.cfg().gateway.max_body_bytes).await?;
    let title = req.title.unwrap_or_default();
    let s = gw
        .kernel
        .store()
        .call(move |s| s.create_session(&title))
        .await?;
    ok(
        StatusCode::CREATED,
        serde_json::to_value(&s).unwrap_or_default(),
    )
}

async fn list_sessions(State(gw): State<Gw>) -> ApiResult {
    let list = gw.kernel.store().call(|s| s.session_summaries()).await?;
    ok(StatusCode::OK, json!({"sessions": list}))
}

async fn get_session(State(gw): State<Gw>, Path(id): Path<String>) -> ApiResult {
    let sid = id.clone();
    let found = gw
        .kernel
        .store()
        .call(move |s| {
            let Some(session) = s.session(&sid)? else {
                return Ok(None);
            };
            Ok(Some((session, s.runs(&sid)?)))
        })
        .await?;
    let Some((session, runs)) = found else {
        return Err(no_session(&id));
    };
    let mut v = serde_json::to_value(&session).unwrap_or_default();
    v["runs"] = serde_json::to_value(&runs).unwrap_or_default();
    ok(StatusCode::OK, v)
}

fn no_session(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no session `{}` (GET /v1/sessions lists them)",
        crate::text::escape_control(id)
    ))
}

async fn session_messages(State(gw): State<Gw>, Path(id): Path<String>) -> ApiResult {
    let sid = id.clone();
    let found = gw
        .kernel
        .store()
        .call(move |s| {
            if s.session(&sid)?.is_none() {
                return Ok(None);
            }
            Ok(Some(s.messages(&sid)?))
        })
        .await?;
    let messages = found.ok_or_else(|| no_session(&id))?;
    ok(StatusCode::OK, json!({"messages": messages}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    text: String,
}

async fn post_message(State(gw): State<Gw>, Path(id): Path<String>, body: Body) -> ApiResult {
    let req: NewMessage = json_body(body, gw.cfg().gateway.max_body_bytes).await?;
    if req.text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "field `text`: the message is empty; write what you want the agent to do",
        ));
    }
    let agent = gw.agent.clone().ok_or_else(no_model)?;
    // The message and its queued run are stored in one transaction
    // (SQLite, so off the runtime's workers); the run's log is registered
    // before its id is answered.
    let g = gw.clone();
    let (run_id, session_id) = blocking(move || {
        let handle = agent.submit(&id, &req.text).map_err(agent_error)?;
        let ids = (handle.run_id.clone(), handle.session_id.clone());
        runs::track(&g, handle);
        Ok(ids)
    })
    .await?;
    let location = format!("/v1/runs/{run_id}");
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, location)],
        axum::Json(json!({"run_id": run_id, "session_id": session_id})),
    )
        .into_response())
}

async fn get_run(State(gw): State<Gw>, Path(id): Path<String>) -> ApiResult {
    let rid = id.clone();
    let found = gw
        .kernel
        .store()
        .call(move |s| match s.run(&rid)? {
            Some(run) => RunOutcome::from_record(s, &run).map(Some),
            None => Ok(None),
        })
        .await?;
    let outcome = found.ok_or_else(|| no_run(&id))?;
    let mut v = serde_json::to_value(&outcome).unwrap_or_default();
    v["error"] = match outcome.state {
        crate::store::RunState::Failed | crate::store::RunState::Cancelled => {
            json!(outcome.reason)
        }
        _ => Value::Null,
    };
    ok(StatusCode::OK, v)
}

fn no_run(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no run `{}` (a session's runs: GET /v1/sessions/ID)",
        crate::text::escape_control(id)
    ))
}

async fn cancel_run(State(gw): State<Gw>, Path(id): Path<String>) -> ApiResult {
    let rid = id.clone();
    let run = gw
        .kernel
        .store()
        .call(move |s| s.run(&rid))
        .await?
        .ok_or_else(|| no_run(&id))?;
    if run.state.is_final() {
        return Err(ApiError::conflict(format!(
            "run `{id}` is already {}; nothing to cancel",
            run.state
        )));
    }
    let cancelled = gw.agent.as_ref().is_some_and(|a| a.cancel(&id));
    if !cancelled {
        return Err(ApiError::conflict(format!(
            "run `{id}` is not running in this keel process; cancel it where it runs"
        )));
    }
    ok(StatusCode::ACCEPTED, json!({"id": id, "cancelling": true}))
}

/// `Last-Event-ID` as a number (0 when absent).
fn last_event_id(headers: &HeaderMap) -> Result<u64, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(0),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "Last-Event-ID must be the id of an event of this run (a number)",
                )
            }),
    }
}

async fn run_events(State(gw): State<Gw>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let after = last_event_id(&headers)?;
    if gw.runs.get(&id).is_none() {
        let rid = id.clone();
        if gw
            .kernel
            .store()
            .call(move |s| s.run(&rid))
            .await?
            .is_none()
        {
            return Err(no_run(&id));
        }
    }
    let guard = StreamGuard::open(&gw)?;
    let stream = runs::stream(gw, id, after, guard);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(super::KEEP_ALIVE))
        .into_response())
}

async fn operator_events(State(gw): State<Gw>, headers: HeaderMap) -> ApiResult {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let after = gw.hub.resume_after(last);
    let guard = StreamGuard::open(&gw)?;
    let state = (
        gw.clone(),
        after,
        gw.hub.watch(),
        gw.closing.subscribe(),
        guard,
    );
    let stream = futures_util::stream::unfold(
        state,
        |(gw, mut after, mut rx, mut closing, guard)| async move {
            loop {
                if *closing.borrow() {
                    return None;
                }
                if let Some(e) = gw.hub.next_after(after) {
                    after = e.seq;
                    let ev = axum::response::sse::Event::default()
                        .id(gw.hub.id(e.seq))
                        .event(e.name)
                        .data(e.data);
                    return Some((
                        Ok::<_, std::convert::Infallible>(ev),
                        (gw, after, rx, closing, guard),
                    ));
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return None },
                    _ = closing.changed() => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(super::KEEP_ALIVE))
        .into_response())
}

async fn list_approvals(State(gw): State<Gw>) -> ApiResult {
    let list = gw.kernel.store().call(|s| s.approvals(true)).await?;
    ok(StatusCode::OK, json!({"approvals": list}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    answer: String,
}

async fn answer_approval(State(gw): State<Gw>, Path(id): Path<String>, body: Body) -> ApiResult {
    let req: Answer = json_body(body, gw.cfg().gateway.max_body_bytes).await?;
    let Some(answer) = ApprovalAnswer::parse(&req.answer) else {
        return Err(ApiError::bad_request(format!(
            "field `answer`: `{}` is not an answer; use \"yes\", \"no\" or \"always\"",
            crate::text::escape_control(&req.answer)
        )));
    };
    let g = gw.clone();
    let record = blocking(move || match &g.agent {
        // Wakes a run of this process at once.
        Some(agent) => agent.answer(&id, answer).map_err(agent_error),
        None => {
            let (record, _) = g
                .kernel
                .store()
                .answer_approval(&id, answer)?
                .map_err(answer_error)?;
            Ok(record)
        }
    })
    .await?;
    gw.hub.publish(
        "approval.answered",
        json!({"id": record.id, "run_id": record.run_id, "answer": answer, "skill": record.skill, "capability": record.capability, "target": record.target}),
    );
    ok(
        StatusCode::OK,
        serde_json::to_value(&record).unwrap_or_default(),
    )
}

async fn list_skills(State(gw): State<Gw>) -> ApiResult {
    let out = blocking(move || Ok(commands::skills::run(Ctx::new(&gw.kernel)))).await?;
    command_json(&out)
}

async fn get_skill(State(gw): State<Gw>, Path(name): Path<String>) -> ApiResult {
    let set = gw.kernel.skills();
    let (k, n) = (gw.kernel.clone(), name.clone());
    let enabled = blocking(move || Ok(k.skill_enabled(&n)?)).await?;
    let stats = gw.kernel.skill_stats(&name);
    let versions: Vec<Value> = set
        .skills
        .values()
        .filter(|s| s.manifest.name == name)
        .map(|s| {
            json!({
                "name": s.manifest.name,
                "version": s.manifest.version.to_string(),
                "kind": s.source.kind.name(),
                "description": s.description(),
                "tools": s.manifest.tools.iter().map(|t| format!("{}.{}", s.manifest.name, t.name)).collect::<Vec<_>>(),
                "capabilities": s.manifest.capabilities.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "dependencies": s.manifest.dependencies.iter().map(|(n, r)| json!({"name": n, "version": r.to_string()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let failures: Vec<&crate::skill::SkillFailure> = set
        .failures
        .iter()
        .filter(|f| f.skill.as_deref().and_then(|s| s.split('@').next()) == Some(name.as_str()))
        .collect();
    if versions.is_empty() && failures.is_empty() {
        return Err(ApiError::not_found(format!(
            "no skill `{}` (GET /v1/skills lists them)",
            crate::text::escape_control(&name)
        )));
    }
    ok(
        StatusCode::OK,
        json!({
            "name": name,
            "state": if !enabled { "disabled" } else if versions.is_empty() { "failed" } else if failures.is_empty() { "loaded" } else { "loaded_with_errors" },
            "enabled": enabled,
            "telemetry": stats,
            "versions": versions,
            "last_error": failures.last().map(|f| &f.error),
            "errors": failures,
        }),
    )
}

async fn disable_skill(State(gw): State<Gw>, Path(name): Path<String>) -> ApiResult {
    set_skill_enabled(gw, name, false).await
}

async fn enable_skill(State(gw): State<Gw>, Path(name): Path<String>) -> ApiResult {
    set_skill_enabled(gw, name, true).await
}

/// `keel skill disable|enable` over HTTP: the same rules, the same state.
async fn set_skill_enabled(gw: Gw, name: String, enabled: bool) -> ApiResult {
    use crate::kernel::SkillStateError;
    let change = blocking(move || {
        gw.kernel
            .set_skill_enabled(&name, enabled)
            .map_err(|e| match e {
                SkillStateError::UnknownSkill { .. } => ApiError::not_found(e.to_string()),
                SkillStateError::Store(s) => s.into(),
                other => ApiError::bad_request(other.to_string()),
            })
    })
    .await?;
    ok(
        StatusCode::OK,
        serde_json::to_value(&change).unwrap_or_default(),
    )
}

/// Prometheus text (`promtool check metrics` clean).
async fn metrics(State(gw): State<Gw>) -> ApiResult {
    let text = gw.kernel.metrics_text().await;
    Ok((
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            crate::telemetry::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

async fn reload_skill(State(gw): State<Gw>, Path(name): Path<String>) -> ApiResult {
    let report = blocking(move || Ok(gw.kernel.reload())).await?;
    ok(StatusCode::OK, json!({"skill": name, "report": &*report}))
}

async fn list_tools(State(gw): State<Gw>) -> ApiResult {
    let out = blocking(move || Ok(commands::tools::run(Ctx::new(&gw.kernel)))).await?;
    command_json(&out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolCall {
    #[serde(default)]
    args: Option<Value>,
}

async fn call_tool(State(gw): State<Gw>, Path(name): Path<String>, body: Body) -> ApiResult {
    let req: ToolCall = json_body(body, gw.cfg().gateway.max_body_bytes).await?;
    let args = req.args.unwrap_or_else(|| json!({}));
    if !args.is_object() {
        return Err(ApiError::bad_request(
            "field `args`: must be a JSON object of the tool's arguments (GET /v1/tools shows its schema)",
        ));
    }
    let started = std::time::Instant::now();
    // `ask` parks as an approval request (super::calls); a client that
    // leaves cancels the call.
    let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _cancel = super::calls::CancelOnDrop(cancelled.clone());
    let link = std::sync::Arc::new(crate::host::RunLink {
        run_id: None,
        cancelled: cancelled.clone(),
        approver: std::sync::Arc::new(super::calls::HttpApprover::new(
            gw.clone(),
            args.to_string(),
            cancelled,
        )),
    });
    match gw.kernel.call_tool_for(&name, args, Some(link)).await {
        Ok(result) => ok(
            StatusCode::OK,
            json!({"ok": true, "result": result, "ms": started.elapsed().as_millis() as u64}),
        ),
        Err(e) => {
            use crate::tool::ToolError;
            let (status, code) = match &e {
                ToolError::UnknownTool { .. } | ToolError::BadName { .. } => {
                    (StatusCode::NOT_FOUND, "not_found")
                }
                ToolError::InvalidArguments { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
                ToolError::SkillNotLoaded { .. } => (StatusCode::CONFLICT, "skill_not_loaded"),
                ToolError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                // The tool ran and failed, or the gate refused: the call
                // was fine, its result is an error.
                _ => (StatusCode::UNPROCESSABLE_ENTITY, "tool_failed"),
            };
            Err(ApiError::new(status, code, e.to_string()))
        }
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(State(gw): State<Gw>, Query(q): Query<AuditQuery>) -> ApiResult {
    let limit = q.limit.unwrap_or(100);
    let out =
        blocking(move || commands::audit::run(Ctx::new(&gw.kernel), limit).map_err(command_error))
            .await?;
    command_json(&out)
}

async fn list_grants(State(gw): State<Gw>) -> ApiResult {
    let out = blocking(move || commands::grants::run(Ctx::new(&gw.kernel)).map_err(command_error))
        .await?;
    command_json(&out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    skill: String,
    capability: String,
}

async fn add_grant(State(gw): State<Gw>, body: Body) -> ApiResult {
    let req: GrantBody = json_body(body, gw.cfg().gateway.max_body_bytes).await?;
    let out = blocking(move || {
        commands::grant::run(Ctx::new(&gw.kernel), &req.skill, &req.capability)
            .map_err(command_error)
    })
    .await?;
    let mut r = command_json(&out)?;
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

async fn remove_grant(State(gw): State<Gw>, body: Body) -> ApiResult {
    let req: GrantBody = json_body(body, gw.cfg().gateway.max_body_bytes).await?;
    let out = blocking(move || {
        commands::revoke::run(Ctx::new(&gw.kernel), &req.skill, &req.capability)
            .map_err(command_error)
    })
    .await?;
    command_json(&out)
}

/// Splits `file:line: message` (as skill failures are written) into its
/// parts, as `keel check --json` does; `None`s when the error names no
/// place.
fn located(error: &str) -> (Option<&str>, Option<usize>, &str) {
    match crate::commands::check::split_location(error) {
        Some((file, line, message)) => (Some(file), Some(line), message),
        None => (None, None, error),
    }
}

/// A kernel event as operator events on `/v1/events`.
pub fn publish_kernel_event(gw: &Gw, e: &KernelEvent) {
    match e {
        KernelEvent::Reloaded(report) => {
            for o in &report.outcomes {
                match o {
                    ReloadOutcome::Added { skill }
                    | ReloadOutcome::Reloaded { skill }
                    | ReloadOutcome::Fixed { skill } => {
                        gw.hub.publish("skill.loaded", json!({"skill": skill}))
                    }
                    ReloadOutcome::Removed { skill } => {
                        gw.hub.publish("skill.unloaded", json!({"skill": skill}))
                    }
                    ReloadOutcome::Failed { origin, error, kept } => {
                        let (file, line, message) = located(error);
                        gw.hub.publish(
                            "skill.failed",
                            json!({"origin": origin.key(), "file": file, "line": line, "message": message, "error": error, "kept": kept}),
                        )
                    }
                    ReloadOutcome::HeldBack { origin, reason } => gw.hub.publish(
                        "skill.failed",
                        json!({"origin": origin.key(), "file": Value::Null, "line": Value::Null, "message": reason, "error": reason, "kept": Value::Null}),
                    ),
                }
            }
        }
        KernelEvent::ConfigReloaded(Ok(summary)) => gw
            .hub
            .publish("config.reloaded", json!({"summary": summary})),
        KernelEvent::ConfigReloaded(Err(error)) => {
            let (file, line, message) = located(error);
            gw.hub.publish(
                "config.failed",
                json!({"file": file, "line": line, "message": message, "error": error}),
            )
        }
        KernelEvent::SkillState(change) => gw.hub.publish(
            if change.enabled {
                "skill.enabled"
            } else {
                "skill.disabled"
            },
            serde_json::to_value(change).unwrap_or_default(),
        ),
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::located;

    #[test]
    fn failures_split_into_file_line_and_message() {
        assert_eq!(
            located("/w/skills/a/main.luau:3: unexpected symbol"),
            (Some("/w/skills/a/main.luau"), Some(3), "unexpected symbol")
        );
        assert_eq!(located("no manifest"), (None, None, "no manifest"));
        assert_eq!(
            located("skill.toml: bad: x"),
            (None, None, "skill.toml: bad: x")
        );
    }
}
