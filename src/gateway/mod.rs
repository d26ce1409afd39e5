//! `keel serve`: the HTTP gateway — the agent, its runs and approvals, and
//! the skills, over HTTP, with event streams (SSE).
//!
//! Everything goes through the same kernel, agent and gate as the console:
//! a message posted here is a run in the session's lane with the same
//! limits, and a tool call here runs under its skill's grants. The gateway
//! adds no authority of its own.
//!
//! # Who gets in (see [`auth`])
//!
//! Every route but `/healthz`, `/readyz` (and the web console's static
//! files, which hold no data) needs `Authorization: Bearer TOKEN`. Before
//! that, for every route: the `Host` header must name this gateway (DNS
//! rebinding), a browser's `Origin` must be the gateway's own or allowed,
//! a token in the query string is refused, and an address with too many
//! failed attempts gets 429. Each request gets an `X-Request-Id`.
//!
//! # Bounded
//!
//! Bodies up to `[gateway] max_body_bytes` (413 beyond); headers must
//! arrive within [`HEADER_TIMEOUT`] (slow-loris clients are dropped); at
//! most [`MAX_CONNECTIONS`] connections; at most `[gateway] max_streams`
//! event streams open at once (429 beyond); each stream sends a keep-alive
//! comment every [`KEEP_ALIVE`].
//!
//! # Stopping
//!
//! On SIGTERM or SIGINT the listener closes, event streams end, runs in
//! flight get `[gateway] shutdown_grace_seconds` to finish, and the rest
//! are marked failed with the reason; then keel exits 0. A `kill -9` loses
//! no accepted message: the store's recovery marks its runs interrupted at
//! the next start, and their event streams end with a `done` made from the
//! record.

mod api;
pub mod auth;
mod calls;
mod console;
mod hub;
mod openai;
mod routes;
mod runs;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

pub use api::ApiError;
use auth::{Limiter, TokenSource};
use hub::Hub;
use runs::RunLogs;

use crate::Kernel;
use crate::agent::Agent;

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 2048;
/// How often an idle event stream sends a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {error}{hint}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
        hint: &'static str,
    },
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    #[error("the agent cannot start: {0}")]
    Agent(#[from] crate::agent::AgentError),
}

/// The gateway's shared state.
#[derive(Clone)]
pub struct Gw(Arc<GwInner>);

impl std::ops::Deref for Gw {
    type Target = GwInner;
    fn deref(&self) -> &GwInner {
        &self.0
    }
}

pub struct GwInner {
    pub kernel: Kernel,
    /// `None` when no model is configured (`/readyz` says so).
    pub agent: Option<Agent>,
    token: TokenSource,
    limiter: Limiter,
    runs: RunLogs,
    hub: Hub,
    streams: AtomicUsize,
    closing: watch::Sender<bool>,
    boot: String,
    requests: AtomicU64,
}

impl GwInner {
    /// The configuration in force: `[gateway]`'s origins, hosts and bounds
    /// apply live when keel.toml changes.
    pub fn cfg(&self) -> Arc<crate::config::Config> {
        self.kernel.config()
    }
}

/// Counts an open event stream; refused past `max_streams`.
pub struct StreamGuard(Gw);

impl StreamGuard {
    fn open(gw: &Gw) -> Result<Self, ApiError> {
        let max = gw.cfg().gateway.max_streams;
        let n = gw.streams.fetch_add(1, Ordering::SeqCst);
        if n >= max {
            gw.streams.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "{max} event streams are open already; close one, or raise [gateway] max_streams"
                ),
            ));
        }
        Ok(Self(gw.clone()))
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where the connection came in, for the `Host` check.
#[derive(Clone, Copy)]
struct Conn {
    peer: SocketAddr,
    local: SocketAddr,
}

/// The id of a request, in its extensions and its response.
#[derive(Clone)]
pub struct RequestId(pub String);

/// A gateway bound to its address, not serving yet.
pub struct Bound {
    gw: Gw,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Bound {
    /// Binds `addr` and reads (or creates) the token. Builds the agent if
    /// a model is configured (its chain stays lazy until the first run).
    pub async fn bind(kernel: Kernel, addr: SocketAddr) -> Result<Self, GatewayError> {
        let token_env = kernel.config().gateway.token_env.clone();
        let token = TokenSource::new(kernel.data_dir(), &token_env, kernel.env())?;
        let agent = match Agent::new(kernel.clone()) {
            Ok(a) => Some(a),
            Err(crate::agent::AgentError::NoModel) => None,
            Err(e) => return Err(e.into()),
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| GatewayError::Bind {
                addr,
                hint: match error.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        "; another program (another keel serve?) is listening there: stop it, or pass --listen 127.0.0.1:PORT"
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        "; ports below 1024 need privileges: use a port above 1024"
                    }
                    _ => "",
                },
                error,
            })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let boot = auth::random_hex(4).unwrap_or_else(|_| format!("{:x}", std::process::id()));
        let gw = Gw(Arc::new(GwInner {
            kernel,
            agent,
            token,
            limiter: Limiter::default(),
            runs: RunLogs::default(),
            hub: Hub::new(boot.clone()),
            streams: AtomicUsize::new(0),
            closing: watch::channel(false).0,
            boot,
            requests: AtomicU64::new(0),
        }));
        Ok(Self { gw, listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the token is, for the start-up line.
    pub fn token_source(&self) -> String {
        self.gw.token.describe()
    }

    pub fn has_model(&self) -> bool {
        self.gw.agent.is_some()
    }

    /// Serves until `stop` resolves, then stops as the module doc says.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()>) {
        let Self { gw, listener, .. } = self;
        forward_kernel_events(&gw);
        let app = routes::router(gw.clone());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                () = &mut stop => break,
            };
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a
                        // little rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(peer);
            let conn = Conn { peer, local };
            let app = app.clone();
            let service =
                hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(conn);
                    let mut app = app.clone();
                    async move {
                        let req = req.map(axum::body::Body::new);
                        tower_service::Service::call(&mut app, req).await
                    }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let watched = graceful.watch(connection);
            tokio::spawn(async move {
                let _ = watched.await;
                drop(permit);
            });
        }
        drop(listener);
        shut_down(&gw).await;
        // Connections finish the response they are writing.
        let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    }
}

/// Ends event streams, gives runs their grace, fails what is left.
async fn shut_down(gw: &Gw) {
    gw.closing.send_replace(true);
    let Some(agent) = &gw.agent else { return };
    let grace = gw.cfg().gateway.shutdown_grace;
    let deadline = Instant::now() + grace;
    while !agent.active_runs().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = agent.active_runs();
    if left.is_empty() {
        return;
    }
    let reason = format!(
        "interrupted: keel serve stopped and the run did not finish within the {} s grace ([gateway] shutdown_grace_seconds)",
        grace.as_secs()
    );
    for (run_id, _) in &left {
        let (id, why) = (run_id.clone(), reason.clone());
        let _ = gw
            .kernel
            .store()
            .call(move |s| {
                s.transition_run(&id, crate::store::RunState::Failed, Some(&why))
                    .map(|_| ())
            })
            .await;
        agent.cancel(run_id);
    }
    tracing::warn!(
        runs = left.len(),
        "runs still in flight at shutdown were marked failed"
    );
    // Let their tasks record what they were doing.
    let settle = Instant::now() + Duration::from_secs(2);
    while !agent.active_runs().is_empty() && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reloads, config changes and approval requests onto `/v1/events`.
fn forward_kernel_events(gw: &Gw) {
    let mut kernel_events = gw.kernel.subscribe();
    let g = gw.clone();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match kernel_events.recv().await {
                Ok(e) => routes::publish_kernel_event(&g, &e),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "the event stream fell behind the kernel's events"
                    )
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
    if let Some(agent) = &gw.agent {
        let mut asked = agent.approval_requests();
        let g = gw.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match asked.recv().await {
                    Ok(a) => announce_approval(&g, &a),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
}

/// `approval.requested` on `/v1/events`, for a run's request or a direct
/// call's (whose `run_id` is null).
fn announce_approval(gw: &Gw, a: &crate::store::ApprovalRecord) {
    let run_id = (!a.run_id.is_empty()).then_some(&a.run_id);
    gw.hub.publish(
        "approval.requested",
        serde_json::json!({"id": a.id, "run_id": run_id, "skill": a.skill, "tool": a.tool, "capability": a.capability, "target": a.target}),
    );
}

/// Routes anyone may call: liveness, readiness, the web console's files.
fn is_public(method: &Method, path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
        || (method == Method::GET && (path == "/" || path.starts_with("/assets/")))
}

/// The checks of the module doc, in order, around every request.
async fn guard(State(gw): State<Gw>, mut req: Request, next: Next) -> Response {
    let n = gw.requests.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n:x}", gw.boot);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut response = {
        let _entered = span.enter();
        match admit(&gw, &req) {
            // A preflight from an allowed origin: the headers are the answer.
            Ok(Some(origin)) if req.method() == Method::OPTIONS => {
                let mut r = StatusCode::NO_CONTENT.into_response();
                add_cors(&mut r, &origin);
                r
            }
            Ok(cors) => {
                drop(_entered);
                let mut r = tracing::Instrument::instrument(next.run(req), span.clone()).await;
                if let Some(origin) = cors {
                    add_cors(&mut r, &origin);
                }
                r
            }
            Err(e) => e.into_response(),
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Lets a request through, or says why not. `Ok(Some(origin))` for a
/// request from an allowed foreign origin, whose response gets CORS
/// headers.
fn admit(gw: &Gw, req: &Request) -> Result<Option<String>, ApiError> {
    let conn = req.extensions().get::<Conn>().copied();
    let forbidden = |m: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", m);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if let Some(c) = conn
        && !auth::host_allowed(host, c.local, &gw.cfg().gateway.allowed_hosts)
    {
        return Err(forbidden(format!(
            "this gateway does not answer to the host {:?}; use http://{}/ or add the name to [gateway] allowed_hosts",
            crate::text::escape_control(host),
            c.local
        )));
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("?").to_string());
    let mut cors = None;
    if let Some(o) = &origin {
        if !auth::origin_allowed(o, host, &gw.cfg().gateway.allowed_origins) {
            return Err(forbidden(format!(
                "requests from the web origin {:?} are refused; list it in [gateway] allowed_origins to allow it",
                crate::text::escape_control(o)
            )));
        }
        if !auth::origin_allowed(o, host, &[]) {
            cors = Some(o.clone());
        }
    }
    if is_public(req.method(), req.uri().path()) {
        return Ok(cors);
    }
    // A preflight carries no credentials; the real request is checked.
    if req.method() == Method::OPTIONS && cors.is_some() {
        return Ok(cors);
    }
    let ip = conn.map(|c| c.peer.ip());
    let now = Instant::now();
    if let Some(ip) = ip
        && let Some(wait) = gw.limiter.locked(ip, now)
    {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many failed attempts from this address; try again in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    if let Some(q) = req.uri().query()
        && auth::query_has_token(q, |v| gw.token.check(v))
    {
        if let Some(ip) = ip {
            gw.limiter.failed(ip, now);
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_in_url",
            "never put the token in a URL (it ends up in logs and history); send it as `Authorization: Bearer TOKEN`",
        ));
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if gw.token.check(t) => Ok(cors),
        _ => {
            if let Some(ip) = ip {
                gw.limiter.failed(ip, now);
            }
            Err(ApiError::unauthorized())
        }
    }
}

fn add_cors(r: &mut Response, origin: &str) {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, last-event-id, x-keel-session"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-request-id"),
    );
}
