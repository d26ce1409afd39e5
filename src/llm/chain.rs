//! Fallback chains: try models in order, retry what a retry can fix, and
//! remember a failing provider for a while.
//!
//! The decision of what to do after a failure is a pure function
//! ([`next_step`]) over the error, the attempt number and the
//! [`RetryPolicy`]; [`ModelChain::complete`] is the shell that sleeps, calls
//! providers and keeps cooldowns. A request's own fault (a 4xx other than
//! 429) is reported at once, never retried or passed down the chain. Once
//! any output has been forwarded to the user, the chain does not retry by
//! itself (the answer would be streamed twice): a transient failure then
//! comes back as [`ChainError::Interrupted`], and the agent, which knows
//! what was shown, marks the partial text as cut and asks again.
//!
//! Each model is tried [`RetryPolicy::attempts`] times (default 2: one
//! retry) before the next one: a CPU-bound local server answering a long
//! prompt takes tens of seconds per try, and the chain's next model is the
//! better second chance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    Completion, Endpoint, ProviderError, ProviderKind, Request, StreamEvent, StreamLimits,
    anthropic, openai,
};

/// One model of a chain, as configured.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The name in `[models.NAME]`.
    pub name: String,
    pub provider: ProviderKind,
    pub endpoint: Endpoint,
    /// The provider's model id (`qwen2.5:7b`, `claude-sonnet-4-5`).
    pub model: String,
    pub context_window: Option<u32>,
}

/// Builds the chain's models from `[models]`, reading each API key from the
/// environment variable the config names (or the provider's usual one).
/// A missing variable means no key: the server's 401 then says so.
pub fn specs_from_config(
    models: &crate::config::ModelsConfig,
    env: &std::collections::BTreeMap<String, String>,
    timeout: Duration,
    limits: StreamLimits,
) -> Vec<ModelSpec> {
    models
        .chain
        .iter()
        .map(|m| {
            let var = m.api_key_env.clone().unwrap_or_else(|| {
                match m.provider {
                    ProviderKind::OpenAi => "OPENAI_API_KEY",
                    ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
                }
                .to_string()
            });
            ModelSpec {
                name: m.name.clone(),
                provider: m.provider,
                endpoint: Endpoint {
                    base_url: m.base_url.clone(),
                    api_key: env
                        .get(&var)
                        .filter(|k| !k.is_empty())
                        .map(|k| super::Secret::new(k.clone())),
                    timeout,
                    limits,
                },
                model: m.model.clone(),
                context_window: m.context_window,
            }
        })
        .collect()
}

/// Models from the usual environment variables, for when keel.toml names
/// none: `OPENAI_BASE_URL` and/or `OPENAI_API_KEY` make an OpenAI-compatible
/// model (`OPENAI_MODEL`, default `gpt-4o-mini`), `ANTHROPIC_API_KEY` an
/// Anthropic one (`ANTHROPIC_MODEL`, default `claude-sonnet-4-5`;
/// `ANTHROPIC_BASE_URL` optional). With both, OpenAI comes first and
/// Anthropic is its fallback.
pub fn specs_from_env(
    env: &std::collections::BTreeMap<String, String>,
    timeout: Duration,
    limits: StreamLimits,
) -> Vec<ModelSpec> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut specs = Vec::new();
    if get("OPENAI_BASE_URL").is_some() || get("OPENAI_API_KEY").is_some() {
        specs.push(ModelSpec {
            name: "openai".into(),
            provider: ProviderKind::OpenAi,
            endpoint: Endpoint {
                base_url: get("OPENAI_BASE_URL")
                    .unwrap_or("https://api.openai.com/v1")
                    .to_string(),
                api_key: get("OPENAI_API_KEY").map(super::Secret::new),
                timeout,
                limits,
            },
            model: get("OPENAI_MODEL").unwrap_or("gpt-4o-mini").to_string(),
            context_window: None,
        });
    }
    if let Some(key) = get("ANTHROPIC_API_KEY") {
        specs.push(ModelSpec {
            name: "anthropic".into(),
            provider: ProviderKind::Anthropic,
            endpoint: Endpoint {
                base_url: get("ANTHROPIC_BASE_URL")
                    .unwrap_or("https://api.anthropic.com")
                    .to_string(),
                api_key: Some(super::Secret::new(key)),
                timeout,
                limits,
            },
            model: get("ANTHROPIC_MODEL")
                .unwrap_or("claude-sonnet-4-5")
                .to_string(),
            context_window: None,
        });
    }
    specs
}

/// Whether reaching `base_url` needs TLS: anything but a plain `http://`
/// URL (one that does not parse is counted as needing it, and fails later
/// with the URL's own error).
fn needs_tls(base_url: &str) -> bool {
    url::Url::parse(base_url).map_or(true, |u| u.scheme() != "http")
}

/// A plain-HTTP model answered with a redirect to https, which the client
/// built for it cannot verify.
#[derive(Debug, thiserror::Error)]
#[error(
    "the model's server redirected to {0}; keel reaches models over https only when base_url says so: put the https address in base_url"
)]
struct RedirectToTls(String);

/// The HTTP client a chain reaches its models with.
///
/// TLS is set up only when a model needs it. Building the TLS
/// configuration loads the platform's root certificates (every file in
/// `/etc/ssl/certs` on Linux), which was the largest single cost of a
/// one-shot `keel ask` against a local model (issue 10: about a sixth of
/// its CPU time). A chain of plain `http://` models (a local llama-server or
/// Ollama) gets a client with no trusted roots; since it could not verify
/// a server anyway, a redirect to https is refused with an error that
/// says to put the https URL in `base_url`, rather than failing on an
/// unknown certificate.
pub fn http_client(models: &[ModelSpec]) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder();
    if models.iter().any(|m| needs_tls(&m.endpoint.base_url)) {
        return builder.build();
    }
    builder
        .tls_certs_only(std::iter::empty())
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().scheme() != "http" {
                let to = attempt.url().to_string();
                attempt.error(RedirectToTls(to))
            } else if attempt.previous().len() >= 10 {
                attempt.error("too many redirects (10)")
            } else {
                attempt.follow()
            }
        }))
        .build()
}

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls per model before moving on (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubles per retry.
    pub base_backoff: Duration,
    /// Longest wait, whatever `Retry-After` says.
    pub max_backoff: Duration,
    /// How long a model that exhausted its attempts is skipped.
    pub cooldown: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// What to do after a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Call the same model again after waiting.
    Retry(Duration),
    /// Give this model up (and cool it down); try the next one.
    NextModel,
    /// Stop: the error is the request's fault, or output already went out.
    Fail,
}

/// The decision after attempt `attempt` (1-based) failed with `err`.
pub fn next_step(
    err: &ProviderError,
    attempt: u32,
    output_started: bool,
    policy: &RetryPolicy,
) -> Step {
    if output_started || !err.is_retryable() {
        return Step::Fail;
    }
    if attempt >= policy.attempts {
        return Step::NextModel;
    }
    let exp = policy
        .base_backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let wait = err
        .retry_after()
        .unwrap_or(exp)
        .max(exp.min(policy.max_backoff));
    Step::Retry(wait.min(policy.max_backoff))
}

/// Why a chain gave up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The chain is empty.
    #[error(
        "no model is configured; set [models] in keel.toml or OPENAI_BASE_URL / OPENAI_API_KEY / ANTHROPIC_API_KEY"
    )]
    NoModels,
    /// A model failed in a way no other model would fix.
    #[error("model `{model}`: {error}")]
    Failed { model: String, error: ProviderError },
    /// A stream broke off after part of the answer was shown: a retry may
    /// well succeed, but only the caller knows how to show it.
    #[error("model `{model}`: {error}")]
    Interrupted { model: String, error: ProviderError },
    /// Every model failed (or was cooling down); the last error of each.
    #[error("every model failed: {}", errors.iter().map(|(m, e)| format!("`{m}`: {e}")).collect::<Vec<_>>().join("; "))]
    Exhausted {
        errors: Vec<(String, ProviderError)>,
    },
}

/// A fallback chain over configured models.
pub struct ModelChain {
    models: Vec<ModelSpec>,
    http: reqwest::Client,
    policy: RetryPolicy,
    cooling: Mutex<HashMap<String, Instant>>,
    /// Where each provider request is counted (`keel_model_requests_total`,
    /// `keel_model_tokens_total`), when the chain belongs to a kernel.
    metrics: Option<std::sync::Arc<crate::telemetry::Metrics>>,
}

/// Counts one provider request when it ends; one dropped before it ended
/// (the run was cancelled or ran out of time) counts as cancelled.
struct RequestTally<'a> {
    metrics: Option<&'a crate::telemetry::Metrics>,
    model: &'a str,
    done: bool,
}

impl RequestTally<'_> {
    fn end(mut self, outcome: crate::telemetry::metrics::ModelOutcome, tokens: Option<(u64, u64)>) {
        self.done = true;
        if let Some(m) = self.metrics {
            m.model_request(self.model, outcome, tokens);
        }
    }
}

impl Drop for RequestTally<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Some(m) = self.metrics
        {
            m.model_request(
                self.model,
                crate::telemetry::metrics::ModelOutcome::Cancelled,
                None,
            );
        }
    }
}

impl ChainError {
    /// Whether the provider said the request was over the context window.
    pub fn is_context_overflow(&self) -> bool {
        match self {
            Self::Failed { error, .. } => error.is_context_overflow(),
            Self::Exhausted { errors } => errors.iter().any(|(_, e)| e.is_context_overflow()),
            _ => false,
        }
    }
}

impl ModelChain {
    pub fn new(models: Vec<ModelSpec>, http: reqwest::Client, policy: RetryPolicy) -> Self {
        Self {
            models,
            http,
            policy,
            cooling: Mutex::new(HashMap::new()),
            metrics: None,
        }
    }

    /// Counts every provider request in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::telemetry::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn models(&self) -> &[ModelSpec] {
        &self.models
    }

    fn cooling_down(&self, name: &str) -> bool {
        let mut c = self.cooling.lock().unwrap_or_else(|p| p.into_inner());
        match c.get(name) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                c.remove(name);
                false
            }
            None => false,
        }
    }

    fn cool(&self, name: &str) {
        self.cooling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Instant::now() + self.policy.cooldown);
    }

    /// Runs `req` on the first model that answers; `req.model` is set per
    /// model. Returns the completion and the name of the model that gave it.
    pub async fn complete(
        &self,
        req: &Request,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<(Completion, String), ChainError> {
        if self.models.is_empty() {
            return Err(ChainError::NoModels);
        }
        // Models cooling down are tried last rather than never: if all of
        // them are, the request still gets its chance.
        let (warm, cold): (Vec<&ModelSpec>, Vec<&ModelSpec>) = self
            .models
            .iter()
            .partition(|m| !self.cooling_down(&m.name));
        let mut errors = Vec::new();
        for spec in warm.into_iter().chain(cold) {
            let mut req = req.clone();
            req.model = spec.model.clone();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut started = false;
                let tally = RequestTally {
                    metrics: self.metrics.as_deref(),
                    model: &spec.name,
                    done: false,
                };
                let result = {
                    let mut forward = |e: StreamEvent| {
                        started = true;
                        on_event(e);
                    };
                    match spec.provider {
                        ProviderKind::OpenAi => {
                            openai::complete(&self.http, &spec.endpoint, &req, &mut forward).await
                        }
                        ProviderKind::Anthropic => {
                            anthropic::complete(&self.http, &spec.endpoint, &req, &mut forward)
                                .await
                        }
                    }
                };
                use crate::telemetry::metrics::ModelOutcome;
                let error = match result {
                    Ok(c) => {
                        let tokens = c.usage.as_ref().map(|u| (u.input_tokens, u.output_tokens));
                        tally.end(ModelOutcome::Ok, tokens);
                        return Ok((c, spec.name.clone()));
                    }
                    Err(e) => {
                        tally.end(ModelOutcome::Error, None);
                        e
                    }
                };
                match next_step(&error, attempt, started, &self.policy) {
                    Step::Retry(wait) => {
                        tracing::info!(model = %spec.name, attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying");
                        tokio::time::sleep(wait).await;
                    }
                    Step::NextModel => {
                        tracing::warn!(model = %spec.name, error = %error, "model failed; trying the next one");
                        self.cool(&spec.name);
                        errors.push((spec.name.clone(), error));
                        break;
                    }
                    Step::Fail if started && error.is_retryable() => {
                        return Err(ChainError::Interrupted {
                            model: spec.name.clone(),
                            error,
                        });
                    }
                    Step::Fail => {
                        return Err(ChainError::Failed {
                            model: spec.name.clone(),
                            error,
                        });
                    }
                }
            }
        }
        Err(ChainError::Exhausted { errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_environment_variables_make_a_chain() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let t = Duration::from_secs(1);
        let l = StreamLimits::default();
        assert!(specs_from_env(&env(&[("HOME", "/h")]), t, l).is_empty());
        let local = specs_from_env(
            &env(&[
                ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1"),
                ("OPENAI_MODEL", "qwen2.5:7b"),
            ]),
            t,
            l,
        );
        assert_eq!(local.len(), 1);
        assert_eq!(
            (
                local[0].endpoint.base_url.as_str(),
                local[0].model.as_str(),
                local[0].endpoint.api_key.is_none()
            ),
            ("http://127.0.0.1:11434/v1", "qwen2.5:7b", true)
        );
        let both = specs_from_env(
            &env(&[("OPENAI_API_KEY", "sk-1"), ("ANTHROPIC_API_KEY", "ak-2")]),
            t,
            l,
        );
        let names: Vec<&str> = both.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["openai", "anthropic"]);
        assert_eq!(both[0].endpoint.base_url, "https://api.openai.com/v1");
        assert_eq!(both[1].model, "claude-sonnet-4-5");
        assert_eq!(both[1].endpoint.api_key.as_ref().unwrap().expose(), "ak-2");
    }

    fn status(code: u16, retry_after: Option<u64>) -> ProviderError {
        ProviderError::Status {
            url: "u".into(),
            status: code,
            retry_after: retry_after.map(Duration::from_secs),
            message: String::new(),
        }
    }

    #[test]
    fn the_request_s_own_fault_is_never_retried() {
        let p = RetryPolicy::default();
        assert_eq!(next_step(&status(400, None), 1, false, &p), Step::Fail);
        assert_eq!(next_step(&status(401, None), 1, false, &p), Step::Fail);
    }

    #[test]
    fn retries_back_off_then_move_on() {
        let p = RetryPolicy {
            attempts: 3,
            ..Default::default()
        };
        assert_eq!(
            next_step(&status(503, None), 1, false, &p),
            Step::Retry(Duration::from_millis(250))
        );
        assert_eq!(
            next_step(&status(503, None), 2, false, &p),
            Step::Retry(Duration::from_millis(500))
        );
        assert_eq!(next_step(&status(503, None), 3, false, &p), Step::NextModel);
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(
            next_step(&status(429, Some(2)), 1, false, &p),
            Step::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            next_step(&status(429, Some(600)), 1, false, &p),
            Step::Retry(p.max_backoff)
        );
    }

    #[test]
    fn nothing_is_retried_once_output_went_out() {
        let cut = ProviderError::Protocol {
            url: "u".into(),
            reason: "the stream broke off".into(),
        };
        assert_eq!(
            next_step(&cut, 1, true, &RetryPolicy::default()),
            Step::Fail
        );
        assert!(matches!(
            next_step(&cut, 1, false, &RetryPolicy::default()),
            Step::Retry(_)
        ));
    }

    /// A real HTTP server on 127.0.0.1 that answers each connection with the
    /// next canned response (status line, extra headers, body), then stops.
    async fn serve(responses: Vec<(&'static str, &'static str, String)>) -> String {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for (status, headers, body) in responses {
                let Ok(Ok((mut sock, _))) =
                    tokio::time::timeout(Duration::from_secs(10), listener.accept()).await
                else {
                    return;
                };
                crate::llm::testing::read_request(&mut sock).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        format!("http://{addr}/v1")
    }

    fn openai_stream(text: &str) -> String {
        let chunk = serde_json::json!({
            "id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": null}]
        });
        let end = serde_json::json!({
            "id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        });
        format!("data: {chunk}\n\ndata: {end}\n\ndata: [DONE]\n\n")
    }

    fn spec(name: &str, base_url: String) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            provider: ProviderKind::OpenAi,
            endpoint: Endpoint {
                base_url,
                api_key: None,
                timeout: Duration::from_secs(10),
                limits: StreamLimits::default(),
            },
            model: "m".into(),
            context_window: None,
        }
    }

    fn request() -> Request {
        Request {
            model: String::new(),
            messages: vec![super::super::Message::User("hi".into())],
            tools: vec![],
            max_tokens: 64,
            temperature: None,
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(2),
            cooldown: Duration::from_secs(60),
        }
    }

    #[test]
    fn only_plain_http_models_go_without_tls() {
        assert!(!needs_tls("http://127.0.0.1:11434/v1"));
        assert!(!needs_tls("HTTP://localhost:8080"));
        assert!(needs_tls("https://api.openai.com/v1"));
        assert!(needs_tls("not a url"));
        let plain = spec("local", "http://127.0.0.1:1/v1".into());
        let hosted = spec("hosted", "https://api.openai.com/v1".into());
        assert!(http_client(std::slice::from_ref(&plain)).is_ok());
        assert!(http_client(&[plain, hosted]).is_ok());
    }

    #[tokio::test]
    async fn a_plain_http_chain_follows_http_redirects_and_refuses_https_ones() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sse = "content-type: text/event-stream\r\n";
        let target = serve(vec![("200 OK", sse, openai_stream("moved here"))]).await;
        let moved: &'static str =
            Box::leak(format!("location: {target}/chat/completions\r\n").into_boxed_str());
        let old = serve(vec![("307 Temporary Redirect", moved, String::new())]).await;
        let models = vec![spec("main", old)];
        let chain = ModelChain::new(models.clone(), http_client(&models).unwrap(), fast());
        let (c, _) = chain.complete(&request(), &mut |_| {}).await.unwrap();
        assert_eq!(c.text, "moved here");

        // To https: refused before any connection (nothing listens on
        // port 9), saying what to change. Every attempt meets the redirect.
        let to_tls = "location: https://127.0.0.1:9/v1/chat/completions\r\n";
        let tls = serve(vec![
            ("308 Permanent Redirect", to_tls, String::new()),
            ("308 Permanent Redirect", to_tls, String::new()),
        ])
        .await;
        let models = vec![spec("main", tls)];
        let chain = ModelChain::new(models.clone(), http_client(&models).unwrap(), fast());
        let e = chain.complete(&request(), &mut |_| {}).await.unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("redirected to https://127.0.0.1:9/") && e.contains("base_url"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_failing_provider_falls_back_and_cools_down() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sse = "content-type: text/event-stream\r\n";
        let main = serve(vec![
            (
                "500 Internal Server Error",
                "",
                "{\"error\":{\"message\":\"down\"}}".into(),
            ),
            ("503 Service Unavailable", "", "busy".into()),
        ])
        .await;
        let backup = serve(vec![
            ("200 OK", sse, openai_stream("from backup")),
            ("200 OK", sse, openai_stream("again")),
        ])
        .await;
        let chain = ModelChain::new(
            vec![spec("main", main), spec("backup", backup)],
            reqwest::Client::new(),
            fast(),
        );
        let mut seen = Vec::new();
        let (c, used) = chain
            .complete(&request(), &mut |e| seen.push(e))
            .await
            .unwrap();
        assert_eq!((c.text.as_str(), used.as_str()), ("from backup", "backup"));
        assert_eq!(seen, vec![StreamEvent::Text("from backup".into())]);
        // `main` is cooling down: the next request goes straight to backup
        // (main's server has no responses left, so touching it would fail).
        let (c, used) = chain.complete(&request(), &mut |_| {}).await.unwrap();
        assert_eq!((c.text.as_str(), used.as_str()), ("again", "backup"));
    }

    #[tokio::test]
    async fn retry_after_is_waited_for_and_a_bad_request_is_not_retried() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sse = "content-type: text/event-stream\r\n";
        let main = serve(vec![
            (
                "429 Too Many Requests",
                "retry-after: 1\r\n",
                "{\"error\":{\"message\":\"slow down\"}}".into(),
            ),
            ("200 OK", sse, openai_stream("after waiting")),
        ])
        .await;
        let chain = ModelChain::new(vec![spec("main", main)], reqwest::Client::new(), fast());
        let t = Instant::now();
        let (c, _) = chain.complete(&request(), &mut |_| {}).await.unwrap();
        assert_eq!(c.text, "after waiting");
        assert!(
            t.elapsed() >= Duration::from_secs(1),
            "Retry-After was not honoured"
        );

        let bad = serve(vec![(
            "400 Bad Request",
            "",
            "{\"error\":{\"message\":\"model not found\"}}".into(),
        )])
        .await;
        let other = serve(vec![("200 OK", sse, openai_stream("must not be used"))]).await;
        let chain = ModelChain::new(
            vec![spec("bad", bad), spec("other", other)],
            reqwest::Client::new(),
            fast(),
        );
        let e = chain.complete(&request(), &mut |_| {}).await.unwrap_err();
        assert!(
            matches!(&e, ChainError::Failed { model, .. } if model == "bad"),
            "{e}"
        );
        assert!(e.to_string().contains("model not found"), "{e}");
    }
}
