//! `keel.http`: HTTP requests, gated by `net.http`.
//!
//! Every hop of a request — the first URL and each redirect — goes through
//! the same steps, in this order, before a byte is sent (steps 2-5 are one
//! call to the gate, [`Gate::check_connect`](crate::kernel::gate::Gate::check_connect),
//! which is handed the resolver):
//!
//! 1. [`net::parse_target`]: http/https only, no credentials in the URL,
//!    alternative IP spellings normalised;
//! 2. the gate, for the host and port as written. For an IP literal that
//!    is not public (loopback, link-local, private, shared, unique-local,
//!    …) both the declaration and the policy (an allow rule or an operator
//!    grant) must *name* that address or its range: `net.http:*` and host
//!    names never cover one ([`net::rule_grants`]), and the policy's
//!    `default` never decides one;
//! 3. name resolution (IP literals are not resolved);
//! 4. [`net::check_addresses`] against the skill's declared host rules: a
//!    non-public address survives only if the manifest names it;
//! 5. the gate again for every surviving non-public address, under the
//!    same rule as step 2: a name that resolves to loopback (`localhost`,
//!    or a rebinding name) needs the policy to name the address too.
//!
//! The connection then goes only to the checked addresses: the client is
//! built per hop with a resolver that knows nothing but those addresses, so
//! a DNS answer that changes between the check and the connect (rebinding)
//! is never consulted. Redirects are followed by hand for the same reason.
//!
//! Error messages and logs show `scheme://host:port/path` only: never the
//! query string, user info or header values, which is where secrets live.
//! Bodies are bounded ([`MAX_BODY`]); every wait honours the call's deadline.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::{Args, CallCtx, HostError, HostFn, Millis, json_type, opt, p};
use crate::capability::CapabilityKind;
use crate::capability::net::{self, Host, NetError};
use crate::kernel::gate::ConnectError;

/// The largest response body keel reads, in bytes.
pub const MAX_BODY: usize = 10 * 1024 * 1024;
/// The most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 10;
/// Timeout when the script gives none (still capped by the call's deadline).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(30_000);

const REQUEST_TYPE: &str = "{ method: string?, url: string, headers: {[string]: string}?, body: (string | table)?, timeout_ms: number? }";
const OPTS_TYPE: &str = "{ headers: {[string]: string}?, timeout_ms: number? }";
const RESPONSE_TYPE: &str =
    "{ status: number, headers: {[string]: string}, body: string, url: string }";

pub const FUNCTIONS: &[HostFn] = &[
    HostFn {
        namespace: "http",
        name: "request",
        params: &[p("opts", REQUEST_TYPE)],
        returns: RESPONSE_TYPE,
        capability: Some(CapabilityKind::NetHttp),
        doc: "Sends an HTTP request and returns the response. Options: `method` (default \
              \"GET\"), `url` (http:// or https://), `headers` (a table of strings), `body` \
              (a string, or a table sent as JSON with content-type application/json) and \
              `timeout_ms` (default 30000, never beyond the call's deadline). Redirects are \
              followed (at most 10), each one checked against the skill's `net.http` \
              capabilities like the first URL. The result holds `status`, `headers` \
              (lowercase names), `body` (text, at most 10 MiB) and the final `url`. A status \
              of 4xx or 5xx is a result, not an error.",
        luau_example: r#"local res = keel.http.request{
    method = "POST",
    url = "https://api.example.com/notes",
    headers = { authorization = "Bearer " .. token },
    body = { title = "hello" },
    timeout_ms = 5000,
}
if res.status ~= 201 then error("create failed: " .. res.status) end"#,
        rhai_example: r#"let res = keel::http::request(#{
    method: "POST",
    url: "https://api.example.com/notes",
    headers: #{ authorization: "Bearer " + token },
    body: #{ title: "hello" },
    timeout_ms: 5000,
});
if res.status != 201 { throw `create failed: ${res.status}`; }"#,
        call: request,
    },
    HostFn {
        namespace: "http",
        name: "get",
        params: &[p("url", "string"), opt("opts", OPTS_TYPE)],
        returns: RESPONSE_TYPE,
        capability: Some(CapabilityKind::NetHttp),
        doc: "Sends a GET request; the result has the same shape as `keel.http.request`. \
              Options: `headers`, `timeout_ms`.",
        luau_example: r#"local res = keel.http.get("https://example.com/", { timeout_ms = 2000 })
print(res.status, res.headers["content-type"])"#,
        rhai_example: r#"let res = keel::http::get("https://example.com/", #{ timeout_ms: 2000 });
print(`${res.status} ${res.headers["content-type"]}`);"#,
        call: get,
    },
    HostFn {
        namespace: "http",
        name: "get_json",
        params: &[p("url", "string"), opt("opts", OPTS_TYPE)],
        returns: "any",
        capability: Some(CapabilityKind::NetHttp),
        doc: "Sends a GET request (with `accept: application/json`) and returns the decoded \
              JSON body. Fails with the status if it is not 2xx, or if the body is not JSON. \
              An empty body decodes to nil. Options: `headers`, `timeout_ms`.",
        luau_example: r#"local repo = keel.http.get_json("https://api.github.com/repos/rust-lang/rust")
print(repo.stargazers_count)"#,
        rhai_example: r#"let repo = keel::http::get_json("https://api.github.com/repos/rust-lang/rust");
print(repo.stargazers_count);"#,
        call: get_json,
    },
    HostFn {
        namespace: "http",
        name: "post_json",
        params: &[
            p("url", "string"),
            p("value", "any"),
            opt("opts", OPTS_TYPE),
        ],
        returns: "any",
        capability: Some(CapabilityKind::NetHttp),
        doc: "Sends `value` as a JSON body in a POST request and returns the decoded JSON \
              response. Fails with the status if it is not 2xx, or if the response is not \
              JSON. An empty response body decodes to nil. Options: `headers`, `timeout_ms`.",
        luau_example: r#"local created = keel.http.post_json("https://api.example.com/notes", { title = "hi" })
print(created.id)"#,
        rhai_example: r#"let created = keel::http::post_json("https://api.example.com/notes", #{ title: "hi" });
print(created.id);"#,
        call: post_json,
    },
];

// ---------------------------------------------------------------------------
// Host functions

/// `keel.http.request(opts)`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestArgs {
    opts: RequestOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RequestOptions {
    method: Option<String>,
    url: Option<String>,
    headers: Option<Headers>,
    /// A string, or a table sent as JSON.
    body: Option<Value>,
    timeout_ms: Option<Millis>,
}

/// `keel.http.get(url, opts)`, `keel.http.get_json(url, opts)`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    url: String,
    opts: Option<HelperOptions>,
}

/// `keel.http.post_json(url, value, opts)`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostJsonArgs {
    url: String,
    value: Value,
    opts: Option<HelperOptions>,
}

/// The options of the helpers: no method, URL or body, which the helper
/// sets itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HelperOptions {
    headers: Option<Headers>,
    timeout_ms: Option<Millis>,
}

/// Request headers, validated ([`parse_headers`]): lowercase names, in the
/// order given.
#[derive(Debug, Default)]
struct Headers(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = Value::deserialize(d)?;
        parse_headers(&v).map(Headers).map_err(D::Error::custom)
    }
}

fn request(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let RequestArgs { opts } = args.parse()?;
    let spec = parse_request_options(opts)?;
    let res = perform(ctx, spec)?;
    Ok(res.into_json())
}

fn get(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let GetArgs { url, opts } = args.parse()?;
    let spec = helper_spec(opts, "GET", url, false, None);
    let res = perform(ctx, spec)?;
    Ok(res.into_json())
}

fn get_json(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let GetArgs { url, opts } = args.parse()?;
    let spec = helper_spec(opts, "GET", url, true, None);
    let what = describe_request(&spec.method, &spec.url);
    let res = perform(ctx, spec)?;
    decode_json_response(&what, &res)
}

fn post_json(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let PostJsonArgs { url, value, opts } = args.parse()?;
    let body = serde_json::to_vec(&value)
        .map_err(|e| HostError::BadArgument(format!("`value` cannot be sent as JSON: {e}")))?;
    let spec = helper_spec(opts, "POST", url, true, Some(body));
    let what = describe_request(&spec.method, &spec.url);
    let res = perform(ctx, spec)?;
    decode_json_response(&what, &res)
}

/// Builds the request for `get` and the JSON helpers: the method, the URL,
/// the options, and for the JSON helpers (`json`) an
/// `accept: application/json` header and the JSON body if any.
fn helper_spec(
    opts: Option<HelperOptions>,
    method: &str,
    url: String,
    json: bool,
    json_body: Option<Vec<u8>>,
) -> RequestSpec {
    let opts = opts.unwrap_or_default();
    let mut headers = opts.headers.unwrap_or_default().0;
    let timeout = opts.timeout_ms.map_or(DEFAULT_TIMEOUT, |m| m.0);
    // The JSON helpers ask for JSON unless the script says otherwise.
    if json {
        set_default_header(&mut headers, "accept", "application/json");
    }
    if json_body.is_some() {
        set_default_header(&mut headers, "content-type", "application/json");
    }
    RequestSpec {
        method: method.to_string(),
        url,
        headers,
        body: json_body,
        timeout,
    }
}

fn decode_json_response(what: &str, res: &HttpResponse) -> Result<Value, HostError> {
    if !(200..300).contains(&res.status) {
        return Err(HostError::Failed(format!(
            "{what}: status {}{}, expected 2xx (use keel.http.request to read the body of \
             an error response)",
            res.status,
            reqwest::StatusCode::from_u16(res.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .map(|r| format!(" {r}"))
                .unwrap_or_default()
        )));
    }
    if res.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&res.body).map_err(|e| {
        let ctype = res
            .headers
            .get("content-type")
            .map(|c| format!(" (content-type {c})"))
            .unwrap_or_default();
        HostError::Failed(format!("{what}: the response is not JSON{ctype}: {e}"))
    })
}

// ---------------------------------------------------------------------------
// Options

/// A request as the script described it, validated but not yet checked.
#[derive(Debug, Clone, PartialEq)]
struct RequestSpec {
    method: String,
    url: String,
    /// Lowercase names, in the order given.
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Duration,
}

/// Headers keel sets itself from the URL and body; letting a script set
/// `host` would let it address another virtual host behind an allowed
/// address, which the host rules never granted.
const MANAGED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding"];

fn parse_request_options(opts: RequestOptions) -> Result<RequestSpec, HostError> {
    let Some(url) = opts.url else {
        return Err(HostError::BadArgument(
            "`opts.url` is required (a string such as \"https://example.com/\")".to_string(),
        ));
    };
    let method = match opts.method {
        None => "GET".to_string(),
        Some(m) => parse_method(&m)?,
    };
    let mut headers = opts.headers.unwrap_or_default().0;
    let body = match opts.body {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.into_bytes()),
        Some(v @ (Value::Object(_) | Value::Array(_))) => {
            set_default_header(&mut headers, "content-type", "application/json");
            Some(serde_json::to_vec(&v).map_err(|e| {
                HostError::BadArgument(format!("`opts.body` cannot be sent as JSON: {e}"))
            })?)
        }
        Some(v) => {
            return Err(HostError::BadArgument(format!(
                "`opts.body` must be a string or a table, got {}",
                json_type(&v)
            )));
        }
    };
    Ok(RequestSpec {
        method,
        url,
        headers,
        body,
        timeout: opts.timeout_ms.map_or(DEFAULT_TIMEOUT, |m| m.0),
    })
}

/// A method is a token of ASCII letters; lowercase is accepted and raised.
fn parse_method(m: &str) -> Result<String, HostError> {
    let upper = m.to_ascii_uppercase();
    if upper.is_empty() || upper.len() > 20 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HostError::BadArgument(format!(
            "`opts.method` must be an HTTP method made of letters A-Z, such as \
             \"GET\" or \"POST\", got {m:?}"
        )));
    }
    Ok(upper)
}

/// Headers from a table of string (or number) values. Names are validated
/// and lowercased; values are validated but never quoted in errors.
fn parse_headers(v: &Value) -> Result<Vec<(String, String)>, HostError> {
    let map = match v {
        Value::Object(m) => m,
        // An empty Luau table arrives as an empty list.
        Value::Array(a) if a.is_empty() => return Ok(Vec::new()),
        other => {
            return Err(HostError::BadArgument(format!(
                "must be a table of header names to string values, got {}",
                json_type(other)
            )));
        }
    };
    let mut out: Vec<(String, String)> = Vec::with_capacity(map.len());
    for (name, value) in map {
        let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HostError::BadArgument(format!("{name:?} is not a valid header name")))?;
        let lname = header.as_str().to_string();
        if MANAGED_HEADERS.contains(&lname.as_str()) {
            return Err(HostError::BadArgument(format!(
                "`{lname}` is set by keel from the URL and body and cannot be given"
            )));
        }
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(HostError::BadArgument(format!(
                    "the value of `{lname}` must be a string, got {}",
                    json_type(other)
                )));
            }
        };
        if reqwest::header::HeaderValue::from_str(&value).is_err() {
            return Err(HostError::BadArgument(format!(
                "the value of `{lname}` holds characters not allowed in a header (such as \
                 a newline)"
            )));
        }
        match out.iter_mut().find(|(n, _)| *n == lname) {
            // Two spellings of one name (`Accept` and `accept`): the last wins.
            Some(slot) => slot.1 = value,
            None => out.push((lname, value)),
        }
    }
    Ok(out)
}

fn set_default_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    if !headers.iter().any(|(n, _)| n == name) {
        headers.push((name.to_string(), value.to_string()));
    }
}

// ---------------------------------------------------------------------------
// Time

/// The time a request may take: the script's timeout capped by the call's
/// deadline, remembering which of the two binds so that running out is
/// reported as the right error.
#[derive(Debug, Clone, Copy)]
struct Budget {
    deadline: Instant,
    limit: Duration,
    /// The call's deadline, not the script's timeout, is the limit.
    call_bound: bool,
}

impl Budget {
    fn new(requested: Duration, remaining: Duration) -> Self {
        let limit = requested.min(remaining);
        Self {
            deadline: Instant::now() + limit,
            limit,
            call_bound: remaining <= requested,
        }
    }

    /// Time left, or the error for running out.
    fn left(&self, what: &str) -> Result<Duration, HostError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(self.expired(what))
        } else {
            Ok(left)
        }
    }

    fn expired(&self, what: &str) -> HostError {
        if self.call_bound {
            HostError::Deadline
        } else {
            HostError::Failed(format!(
                "{what}: timed out after {} ms",
                self.limit.as_millis()
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// The request loop

/// A response as returned to scripts.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    url: Url,
}

impl HttpResponse {
    fn into_json(self) -> Value {
        json!({
            "status": self.status,
            "headers": self.headers,
            "body": String::from_utf8_lossy(&self.body),
            "url": self.url.as_str(),
        })
    }
}

/// What one hop produced.
enum Hop {
    Final(HttpResponse),
    Redirect { status: u16, location: String },
}

/// Runs a request, hop by hop, each hop fully checked.
fn perform(ctx: &CallCtx, spec: RequestSpec) -> Result<HttpResponse, HostError> {
    // Harmless if the kernel already installed it, needed if it did not.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let RequestSpec {
        mut method,
        url,
        mut headers,
        mut body,
        timeout,
    } = spec;
    let budget = Budget::new(timeout, ctx.remaining()?);

    let mut target = net::parse_target(&url).map_err(|e| {
        HostError::BadArgument(format!(
            "http {method} {}: {}",
            display_raw_url(&url),
            net_error_message(&e)
        ))
    })?;
    let origin = (target.scheme.clone(), target.host.clone(), target.port);

    for hop in 0..=MAX_REDIRECTS {
        let what = format!("http {method} {}", display_url(&target.url));
        let addrs = check_hop(ctx, &target, &budget, &what)?;
        tracing::debug!(
            skill = %ctx.skill.name,
            method = %method,
            url = %display_url(&target.url),
            hop,
            "http request"
        );
        let left = budget.left(&what)?;
        let sent = send(
            ctx,
            &method,
            &target,
            &addrs,
            &headers,
            body.as_deref(),
            left,
        );
        let (status, location) = match sent {
            Ok(Hop::Final(res)) => {
                tracing::debug!(skill = %ctx.skill.name, url = %display_url(&res.url), status = res.status, "http response");
                return Ok(res);
            }
            Ok(Hop::Redirect { status, location }) => (status, location),
            Err(SendError::TimedOut) => return Err(budget.expired(&what)),
            Err(SendError::Failed(msg)) => return Err(HostError::Failed(format!("{what}: {msg}"))),
        };
        if hop == MAX_REDIRECTS {
            return Err(HostError::Failed(format!(
                "{what}: too many redirects (more than {MAX_REDIRECTS})"
            )));
        }
        let next = redirect_url(&target.url, &location)
            .map_err(|reason| HostError::Failed(format!("{what}: bad redirect: {reason}")))?;
        target = net::parse_target(next.as_str()).map_err(|e| {
            HostError::Failed(format!(
                "{what}: redirect ({status}) to {} refused: {}",
                display_raw_url(next.as_str()),
                net_error_message(&e)
            ))
        })?;
        let (next_method, keep_body) = redirect_method(status, &method);
        if !keep_body {
            body = None;
            headers.retain(|(n, _)| !BODY_HEADERS.contains(&n.as_str()));
        }
        method = next_method;
        // Credentials meant for one origin are not handed to another.
        if (target.scheme.as_str(), &target.host, target.port)
            != (origin.0.as_str(), &origin.1, origin.2)
        {
            headers.retain(|(n, _)| !CREDENTIAL_HEADERS.contains(&n.as_str()));
        }
    }
    // The loop returns on every path; this is for the compiler's benefit.
    Err(HostError::Failed(format!(
        "http {method}: too many redirects (more than {MAX_REDIRECTS})"
    )))
}

/// Headers describing a body, dropped when a redirect drops the body.
const BODY_HEADERS: &[&str] = &["content-type", "content-encoding", "content-language"];
/// Headers that carry credentials, dropped when a redirect leaves the origin.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// Steps 2-5 of the module docs for one hop, all decided by the gate
/// ([`Gate::check_connect`](crate::kernel::gate::Gate::check_connect));
/// returns the addresses the connection may use.
fn check_hop(
    ctx: &CallCtx,
    target: &net::Target,
    budget: &Budget,
    what: &str,
) -> Result<Vec<SocketAddr>, HostError> {
    let approver = ctx.approver();
    let caller = ctx.caller(
        approver
            .as_ref()
            .map(|a| a as &dyn crate::kernel::gate::Approver),
    );
    ctx.kernel
        .gate()
        .check_connect(&caller, target, |name, port| {
            resolve(ctx, name, port, budget, what)
        })
        .map_err(|e| match e {
            ConnectError::Gate(e) => HostError::Denied(e.to_string()),
            ConnectError::Net(e @ NetError::NoAddresses { .. }) => {
                HostError::Failed(format!("{what}: {e}"))
            }
            ConnectError::Net(other) => HostError::Denied(format!("{what}: {other}")),
            ConnectError::Resolve(e) => e,
        })
}

fn resolve(
    ctx: &CallCtx,
    name: &str,
    port: u16,
    budget: &Budget,
    what: &str,
) -> Result<Vec<IpAddr>, HostError> {
    let left = budget.left(what)?;
    let looked_up = ctx.kernel.runtime().block_on(async move {
        tokio::time::timeout(left, tokio::net::lookup_host((name, port))).await
    });
    match looked_up {
        Err(_) => Err(budget.expired(what)),
        Ok(Err(e)) => Err(HostError::Failed(format!(
            "{what}: could not resolve `{name}`: {e}"
        ))),
        Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).collect()),
    }
}

enum SendError {
    TimedOut,
    Failed(String),
}

/// A resolver that answers every name with the checked addresses, so the
/// client can never connect anywhere the checks did not approve.
struct PinnedResolver(Vec<SocketAddr>);

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs: reqwest::dns::Addrs = Box::new(self.0.clone().into_iter());
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

/// Sends one hop to the checked addresses and reads the response (not the
/// body of a redirect).
fn send(
    ctx: &CallCtx,
    method: &str,
    target: &net::Target,
    addrs: &[SocketAddr],
    headers: &[(String, String)],
    body: Option<&[u8]>,
    left: Duration,
) -> Result<Hop, SendError> {
    let mut url = target.url.clone();
    url.set_fragment(None);
    if let Host::Ip(ip) = target.host {
        // Connect to the canonical address that was checked, not to another
        // spelling of it (`[::ffff:127.0.0.1]`).
        if url.set_ip_host(ip).is_err() {
            return Err(SendError::Failed("cannot address this host".into()));
        }
    }
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(PinnedResolver(addrs.to_vec()))
        .timeout(left)
        .connect_timeout(left)
        .pool_max_idle_per_host(0)
        .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")));
    if let Some(host) = url.host_str() {
        builder = builder.resolve_to_addrs(host, addrs);
    }
    let client = builder.build().map_err(|e| {
        SendError::Failed(format!(
            "could not set up the HTTP client: {}",
            describe_reqwest_error(e)
        ))
    })?;

    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| SendError::Failed(format!("invalid method {method:?}")))?;
    let mut header_map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) else {
            return Err(SendError::Failed(format!("invalid header `{name}`")));
        };
        header_map.insert(n, v);
    }
    let mut req = client.request(method, url.clone()).headers(header_map);
    if let Some(body) = body {
        req = req.body(body.to_vec());
    }

    let exchange = async move {
        let mut res = req.send().await.map_err(map_reqwest_error)?;
        let status = res.status().as_u16();
        if is_redirect(status)
            && let Some(location) = res.headers().get(reqwest::header::LOCATION)
        {
            let location = location.to_str().map_err(|_| {
                SendError::Failed(format!(
                    "redirect ({status}) has a Location header that is not valid text"
                ))
            })?;
            return Ok(Hop::Redirect {
                status,
                location: location.to_string(),
            });
        }
        let headers = response_headers(res.headers());
        if res.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(body_too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(map_reqwest_error)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(body_too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Hop::Final(HttpResponse {
            status,
            headers,
            body,
            url,
        }))
    };
    match ctx
        .kernel
        .runtime()
        .block_on(async move { tokio::time::timeout(left, exchange).await })
    {
        Ok(result) => result,
        Err(_) => Err(SendError::TimedOut),
    }
}

fn body_too_large() -> SendError {
    SendError::Failed(format!(
        "the response body is larger than the {} MiB limit",
        MAX_BODY / (1024 * 1024)
    ))
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Response headers with lowercase names; repeated headers are joined with
/// ", " (the HTTP list form).
fn response_headers(map: &reqwest::header::HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in map {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

fn map_reqwest_error(e: reqwest::Error) -> SendError {
    if e.is_timeout() {
        SendError::TimedOut
    } else {
        SendError::Failed(describe_reqwest_error(e))
    }
}

/// A message for a reqwest error without the URL (it may hold a secret in
/// its query string): the short cause for the common cases, otherwise the
/// error and its innermost cause.
fn describe_reqwest_error(e: reqwest::Error) -> String {
    let mut innermost: Option<String> = None;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused => return "connection refused".into(),
                K::ConnectionReset => return "connection reset by peer".into(),
                K::ConnectionAborted => return "connection aborted".into(),
                K::TimedOut => return "connection timed out".into(),
                K::HostUnreachable => return "host unreachable".into(),
                K::NetworkUnreachable => return "network unreachable".into(),
                _ => {}
            }
        }
        innermost = Some(s.to_string());
        source = s.source();
    }
    let top = e.without_url().to_string();
    match innermost {
        Some(inner) if inner != top => format!("{top}: {inner}"),
        _ => top,
    }
}

// ---------------------------------------------------------------------------
// Pure helpers

/// Where a redirect goes: `location` resolved against the current URL.
fn redirect_url(current: &Url, location: &str) -> Result<Url, String> {
    let location = location.trim();
    if location.is_empty() {
        return Err("the Location header is empty".into());
    }
    current
        .join(location)
        .map_err(|e| format!("cannot resolve the Location header: {e}"))
}

/// The method for the next hop and whether the body goes with it: 303
/// turns anything but HEAD into GET, 301/302 turn POST into GET (what every
/// browser does), 307/308 keep both.
fn redirect_method(status: u16, method: &str) -> (String, bool) {
    match status {
        303 if method != "HEAD" => ("GET".into(), false),
        301 | 302 if method == "POST" => ("GET".into(), false),
        _ => (method.to_string(), true),
    }
}

/// `scheme://host[:port]/path`: a URL as it may appear in errors and logs,
/// without user info, query or fragment.
fn display_url(url: &Url) -> String {
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{host}{port}{}", url.scheme(), url.path())
}

/// The same for a string that may not parse: cut at the query or fragment
/// and mask anything that looks like user info.
fn display_raw_url(raw: &str) -> String {
    let cut = raw.find(['?', '#']).map_or(raw, |i| &raw[..i]);
    let Some(at) = cut.rfind('@') else {
        return cut.to_string();
    };
    let start = cut.find("://").map_or(0, |i| i + 3).min(at);
    format!("{}***{}", &cut[..start], &cut[at..])
}

/// A [`NetError`] as a message that never echoes a query string.
fn net_error_message(e: &NetError) -> String {
    match e {
        NetError::InvalidUrl { reason, .. } => {
            format!("invalid URL: {reason}; expected an absolute http:// or https:// URL")
        }
        NetError::CredentialsInUrl { .. } => "credentials in URLs are not allowed; put them \
                                              in a header such as authorization instead"
            .to_string(),
        other => other.to_string(),
    }
}

fn describe_request(method: &str, url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => format!("http {method} {}", display_url(&u)),
        Err(_) => format!("http {method} {}", display_raw_url(url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `keel.http.request(v)`'s options, read the way a script's call is.
    fn req(v: Value) -> Result<RequestSpec, HostError> {
        let RequestArgs { opts } = Args::new(FUNCTIONS[0].params, vec![v]).parse()?;
        parse_request_options(opts)
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn relative_and_absolute_locations_resolve_against_the_current_url() {
        let cur = url("https://api.example.com/v1/items/42?token=secret");
        assert_eq!(
            redirect_url(&cur, "/v2/items/42").unwrap().as_str(),
            "https://api.example.com/v2/items/42"
        );
        assert_eq!(
            redirect_url(&cur, "43").unwrap().as_str(),
            "https://api.example.com/v1/items/43"
        );
        assert_eq!(
            redirect_url(&cur, "../other?x=1").unwrap().as_str(),
            "https://api.example.com/v1/other?x=1"
        );
        assert_eq!(
            redirect_url(&cur, "//cdn.example.net/a").unwrap().as_str(),
            "https://cdn.example.net/a"
        );
        assert_eq!(
            redirect_url(&cur, "http://169.254.169.254/latest")
                .unwrap()
                .as_str(),
            "http://169.254.169.254/latest"
        );
        assert!(redirect_url(&cur, "  ").is_err());
    }

    #[test]
    fn redirect_to_another_scheme_is_refused_by_parse_target() {
        let next = redirect_url(&url("https://a.example/"), "file:///etc/passwd").unwrap();
        assert!(matches!(
            net::parse_target(next.as_str()),
            Err(NetError::UnsupportedScheme { .. })
        ));
    }

    #[test]
    fn redirect_methods_follow_common_practice() {
        assert_eq!(redirect_method(303, "POST"), ("GET".into(), false));
        assert_eq!(redirect_method(303, "PUT"), ("GET".into(), false));
        assert_eq!(redirect_method(303, "HEAD"), ("HEAD".into(), true));
        assert_eq!(redirect_method(301, "POST"), ("GET".into(), false));
        assert_eq!(redirect_method(302, "POST"), ("GET".into(), false));
        assert_eq!(redirect_method(302, "PUT"), ("PUT".into(), true));
        assert_eq!(redirect_method(307, "POST"), ("POST".into(), true));
        assert_eq!(redirect_method(308, "POST"), ("POST".into(), true));
        assert_eq!(redirect_method(301, "GET"), ("GET".into(), true));
        assert!(is_redirect(307) && !is_redirect(304) && !is_redirect(300));
    }

    #[test]
    fn urls_in_messages_never_show_query_or_user_info() {
        let u = url("https://api.example.com:8443/v1/x?api_key=SECRET#frag");
        assert_eq!(display_url(&u), "https://api.example.com:8443/v1/x");
        assert_eq!(
            display_url(&url("http://[::1]:8080/p?q")),
            "http://[::1]:8080/p"
        );
        assert_eq!(
            display_url(&url("https://example.com/")),
            "https://example.com/"
        );
        assert_eq!(
            display_raw_url("https://user:pa55@host.example/p?key=SECRET"),
            "https://***@host.example/p"
        );
        assert_eq!(display_raw_url("not a url?secret=1"), "not a url");
        let msg = net_error_message(
            &net::parse_target("https://u:SECRET@h.example/?k=SECRET2").unwrap_err(),
        );
        assert!(!msg.contains("SECRET"), "{msg}");
        let msg = net_error_message(&net::parse_target("https://[bad/?k=SECRET").unwrap_err());
        assert!(!msg.contains("SECRET"), "{msg}");
        assert!(!describe_request("GET", "https://h.example/p?k=SECRET").contains("SECRET"));
    }

    #[test]
    fn request_options_have_defaults() {
        let spec = req(json!({ "url": "https://example.com/" })).unwrap();
        assert_eq!(spec.method, "GET");
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        assert!(spec.headers.is_empty());
        assert!(spec.body.is_none());
    }

    #[test]
    fn request_options_are_parsed() {
        let spec = req(json!({
            "method": "post",
            "url": "https://example.com/",
            "headers": { "X-Token": "abc", "Accept": "text/plain" },
            "body": "hello",
            "timeout_ms": 1500,
        }))
        .unwrap();
        assert_eq!(spec.method, "POST");
        assert_eq!(spec.timeout, Duration::from_millis(1500));
        assert_eq!(spec.body.as_deref(), Some(&b"hello"[..]));
        assert!(spec.headers.contains(&("x-token".into(), "abc".into())));
        assert!(
            spec.headers
                .contains(&("accept".into(), "text/plain".into()))
        );
    }

    #[test]
    fn a_table_body_is_sent_as_json() {
        let spec = req(json!({ "url": "http://x.example/", "body": { "a": [1, 2] } })).unwrap();
        assert_eq!(spec.body.as_deref(), Some(&br#"{"a":[1,2]}"#[..]));
        assert!(
            spec.headers
                .contains(&("content-type".into(), "application/json".into()))
        );
        // An explicit content type wins.
        let spec = req(json!({
            "url": "http://x.example/",
            "body": { "a": 1 },
            "headers": { "Content-Type": "application/vnd.api+json" },
        }))
        .unwrap();
        let ctypes: Vec<_> = spec
            .headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .collect();
        assert_eq!(ctypes.len(), 1);
        assert_eq!(ctypes[0].1, "application/vnd.api+json");
    }

    #[test]
    fn bad_options_name_the_field_and_the_expected_type() {
        let err = |v: Value| match req(v) {
            Err(HostError::BadArgument(m)) => m,
            other => panic!("expected BadArgument, got {other:?}"),
        };
        let m = err(json!({}));
        assert!(m.contains("`opts.url` is required"), "{m}");
        let m = err(json!({ "url": 5 }));
        assert!(m.contains("`opts.url` must be a string, got number"), "{m}");
        let m = err(json!({ "url": "http://x/", "method": "GE T" }));
        assert!(m.contains("`opts.method` must be an HTTP method"), "{m}");
        let m = err(json!({ "url": "http://x/", "method": 1 }));
        assert!(m.contains("`opts.method` must be a string"), "{m}");
        let m = err(json!({ "url": "http://x/", "headers": "x" }));
        assert!(m.contains("`opts.headers` must be a table"), "{m}");
        let m = err(json!({ "url": "http://x/", "headers": { "a": true } }));
        assert!(
            m.contains("value of `a` must be a string, got boolean"),
            "{m}"
        );
        let m = err(json!({ "url": "http://x/", "headers": { "bad name": "v" } }));
        assert!(m.contains("not a valid header name"), "{m}");
        let m = err(json!({ "url": "http://x/", "headers": { "x": "SECRET\r\nevil: 1" } }));
        assert!(
            m.contains("not allowed in a header") && !m.contains("SECRET"),
            "{m}"
        );
        let m = err(json!({ "url": "http://x/", "headers": { "Host": "internal" } }));
        assert!(m.contains("`host` is set by keel"), "{m}");
        let m = err(json!({ "url": "http://x/", "body": 5 }));
        assert!(
            m.contains("`opts.body` must be a string or a table, got number"),
            "{m}"
        );
        let m = err(json!({ "url": "http://x/", "timeout_ms": 0 }));
        assert!(
            m.contains("`opts.timeout_ms` must be a positive number"),
            "{m}"
        );
        let m = err(json!({ "url": "http://x/", "timeout_ms": "5" }));
        assert!(
            m.contains("`opts.timeout_ms` must be") && m.contains("got string"),
            "{m}"
        );
        let m = err(json!({ "url": "http://x/", "timout_ms": 5 }));
        assert!(
            m.contains("opts: unknown field `timout_ms` (did you mean `timeout_ms`?)")
                && m.contains("`method`, `url`, `headers`, `body`, `timeout_ms`"),
            "{m}"
        );
        let m = err(json!("http://x/"));
        assert!(
            m.contains("`opts` must be a table of options, got string"),
            "{m}"
        );
    }

    #[test]
    fn nil_options_count_as_absent_and_empty_tables_as_no_headers() {
        let spec =
            req(json!({ "url": "http://x.example/", "method": null, "headers": [] })).unwrap();
        assert_eq!(spec.method, "GET");
        assert!(spec.headers.is_empty());
    }

    #[test]
    fn helper_options_set_json_headers() {
        let args = Args::new(
            FUNCTIONS[3].params,
            vec![
                json!("https://x.example/"),
                json!({ "a": 1 }),
                json!({ "headers": { "accept": "application/x-custom" }, "timeout_ms": 10 }),
            ],
        );
        let PostJsonArgs { url, opts, .. } = args.parse().unwrap();
        let spec = helper_spec(opts, "POST", url, true, Some(b"{}".to_vec()));
        assert_eq!(spec.timeout, Duration::from_millis(10));
        assert!(
            spec.headers
                .contains(&("accept".into(), "application/x-custom".into()))
        );
        assert!(
            spec.headers
                .contains(&("content-type".into(), "application/json".into()))
        );
        // The helpers take no body option: it is an argument.
        let args = Args::new(
            FUNCTIONS[1].params,
            vec![json!("https://x.example/"), json!({ "body": "x" })],
        );
        assert!(matches!(
            args.parse::<GetArgs>(),
            Err(HostError::BadArgument(m)) if m.contains("opts: unknown field `body`")
        ));
    }

    #[test]
    fn json_responses_are_decoded_or_explained() {
        let res = |status: u16, body: &str| HttpResponse {
            status,
            headers: BTreeMap::from([("content-type".to_string(), "text/html".to_string())]),
            body: body.as_bytes().to_vec(),
            url: url("https://x.example/"),
        };
        assert_eq!(
            decode_json_response("w", &res(200, r#"{"a":1}"#)).unwrap(),
            json!({ "a": 1 })
        );
        assert_eq!(
            decode_json_response("w", &res(204, "")).unwrap(),
            Value::Null
        );
        match decode_json_response("http GET x", &res(404, "{}")) {
            Err(HostError::Failed(m)) => assert!(m.contains("status 404 Not Found"), "{m}"),
            other => panic!("{other:?}"),
        }
        match decode_json_response("w", &res(200, "<html>")) {
            Err(HostError::Failed(m)) => {
                assert!(m.contains("not JSON") && m.contains("text/html"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn response_headers_are_lowercase_and_repeats_joined() {
        let mut map = reqwest::header::HeaderMap::new();
        map.append("Content-Type", "text/plain".parse().unwrap());
        map.append("x-a", "1".parse().unwrap());
        map.append("x-a", "2".parse().unwrap());
        let h = response_headers(&map);
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["x-a"], "1, 2");
    }

    #[test]
    fn the_budget_reports_which_limit_ran_out() {
        let b = Budget::new(Duration::from_millis(100), Duration::from_secs(10));
        assert!(!b.call_bound);
        assert!(
            matches!(b.expired("http GET x"), HostError::Failed(m) if m.contains("timed out after 100 ms"))
        );
        let b = Budget::new(Duration::from_secs(30), Duration::from_millis(50));
        assert!(b.call_bound);
        assert_eq!(b.limit, Duration::from_millis(50));
        assert!(matches!(b.expired("x"), HostError::Deadline));
    }
}
