//! Issue 9, Security 4: a non-public address is reachable only when the
//! *policy* names it. Real HTTP servers on 127.0.0.1 count every connection
//! they get, so "refused" means the server never saw the skill — not just
//! that an error came back — and the real binary makes every call.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Called, Ws};
use serde_json::json;

/// A server on 127.0.0.1 that counts connections. `/text` answers "hello";
/// `/to?PORT` redirects to 127.0.0.1:PORT/text.
struct Counting {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Counting {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::Relaxed) && Instant::now() < until {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                h.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut s = stream;
                let _ = match path.strip_prefix("/to?") {
                    Some(to) => write!(
                        s,
                        "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    ),
                    None => write!(
                        s,
                        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
                    ),
                };
            }
        });
        Self {
            port,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A skill `p` declaring `declared` (TOML array items) under `policy`.
fn fetcher(declared: &str, policy: &str) -> Ws {
    Ws::new()
        .skill(
            "p",
            &format!(
                "[skill]\nname = \"p\"\nversion = \"1.0.0\"\nentry = \"main.luau\"\n\
                 [capabilities]\n\"net.http\" = [{declared}]\n\
                 [[tools]]\nname = \"get\"\ndescription = \"GET a URL\"\n"
            ),
            &[(
                "main.luau",
                "local M = {}\nfunction M.get(a) return keel.http.get(a.url).body end\nreturn M\n",
            )],
        )
        .policy(policy)
}

fn get(ws: &Ws, url: &str) -> Called {
    ws.call("p.get", json!({ "url": url }))
}

/// The reported attack: the skill *declares* the loopback address, the
/// policy is the common `net.http:*`. Today it reached the server.
#[test]
fn declaring_a_loopback_address_is_not_enough_under_net_http_star() {
    let server = Counting::start();
    let port = server.port;
    let ws = fetcher(
        &format!("\"*\", \"127.0.0.1:{port}\""),
        "[policy]\nallow = [\"net.http:*\"]\n",
    );
    let c = get(&ws, &format!("http://127.0.0.1:{port}/text"));
    c.err_contains(&[
        "non-public",
        "loopback",
        &format!("net.http:127.0.0.1:{port}"),
        "[policy] allow",
    ]);
    assert_eq!(server.hits(), 0, "the server was reached");
    // Every other spelling of the same address, and a name resolving to
    // it: still refused, still never connected.
    for url in [
        format!("http://2130706433:{port}/text"),
        format!("http://0x7f.0.0.1:{port}/text"),
        format!("http://0177.0.0.1:{port}/text"),
        format!("http://127.1:{port}/text"),
        format!("http://[::ffff:127.0.0.1]:{port}/text"),
        format!("http://[::ffff:7f00:1]:{port}/text"),
        format!("http://localhost:{port}/text"),
    ] {
        let c = get(&ws, &url);
        assert_ne!(c.status, 0, "{url} was fetched: {}", c.stdout);
        assert!(c.stderr.contains("non-public"), "{url}: {}", c.stderr);
    }
    assert_eq!(server.hits(), 0, "a spelling reached the server");
}

/// With the policy naming the address (an allow rule, a CIDR or an
/// operator grant), the same call works: the rule is explicit, not a ban.
#[test]
fn the_policy_naming_the_address_lets_it_through() {
    let server = Counting::start();
    let port = server.port;
    let declared = format!("\"*\", \"127.0.0.1:{port}\"");
    let allowed = fetcher(
        &declared,
        &format!("[policy]\nallow = [\"net.http:*\", \"net.http:127.0.0.1:{port}\"]\n"),
    );
    assert_eq!(
        get(&allowed, &format!("http://127.0.0.1:{port}/text")).ok(),
        json!("hello")
    );
    // Any spelling of the named address is the named address.
    assert_eq!(
        get(&allowed, &format!("http://0x7f000001:{port}/text")).ok(),
        json!("hello")
    );
    assert_eq!(server.hits(), 2);
    // Another port on the same host is not named.
    get(
        &allowed,
        &format!("http://127.0.0.1:{}/text", port.wrapping_add(1).max(1)),
    )
    .err_contains(&["net.http"]);

    let cidr = fetcher(
        "\"127.0.0.0/8\"",
        "[policy]\nallow = [\"net.http:127.0.0.0/8\"]\n",
    );
    assert_eq!(
        get(&cidr, &format!("http://127.0.0.1:{port}/text")).ok(),
        json!("hello")
    );

    // An operator grant names it too (in this workspace).
    let granted = fetcher(&declared, "[policy]\nallow = [\"net.http:*\"]\n");
    get(&granted, &format!("http://127.0.0.1:{port}/text")).err_contains(&["non-public"]);
    let g = granted.run(&["grant", "p", &format!("net.http:127.0.0.1:{port}")]);
    assert_eq!(g.status, 0, "{}", g.stderr);
    assert_eq!(
        get(&granted, &format!("http://127.0.0.1:{port}/text")).ok(),
        json!("hello")
    );
    assert_eq!(server.hits(), 4);
}

/// A host-name rule never vouches for where the name points: `localhost`
/// allowed by name still needs its address named.
#[test]
fn a_name_resolving_to_loopback_needs_the_address_named() {
    let server = Counting::start();
    let port = server.port;
    let ws = fetcher(
        &format!("\"localhost:{port}\", \"127.0.0.1:{port}\", \"[::1]:{port}\""),
        &format!("[policy]\nallow = [\"net.http:localhost:{port}\"]\n"),
    );
    get(&ws, &format!("http://localhost:{port}/text")).err_contains(&["non-public"]);
    assert_eq!(server.hits(), 0);
    let named = ws.policy(&format!(
        "[policy]\nallow = [\"net.http:localhost:{port}\", \"net.http:127.0.0.1:{port}\"]\n"
    ));
    assert_eq!(
        get(&named, &format!("http://localhost:{port}/text")).ok(),
        json!("hello")
    );
    assert_eq!(server.hits(), 1);
}

/// A redirect from a named address to another loopback port is checked
/// again, hop by hop: the second server is never contacted.
#[test]
fn a_redirect_to_an_unnamed_loopback_port_is_refused_before_connecting() {
    let entry = Counting::start();
    let inner = Counting::start();
    let (a, b) = (entry.port, inner.port);
    let ws = fetcher(
        &format!("\"*\", \"127.0.0.1:{a}\", \"127.0.0.1:{b}\""),
        &format!("[policy]\nallow = [\"net.http:*\", \"net.http:127.0.0.1:{a}\"]\n"),
    );
    let c = get(
        &ws,
        &format!("http://127.0.0.1:{a}/to?http://127.0.0.1:{b}/text"),
    );
    c.err_contains(&["non-public", &format!("127.0.0.1:{b}")]);
    assert_eq!(entry.hits(), 1, "the first hop is allowed");
    assert_eq!(inner.hits(), 0, "the redirect target was reached");
    // The same redirect through a name (localhost): refused too.
    let c = get(
        &ws,
        &format!("http://127.0.0.1:{a}/to?http://localhost:{b}/text"),
    );
    assert_ne!(c.status, 0, "{}", c.stdout);
    assert_eq!(inner.hits(), 0);
}

/// The other special ranges, declared explicitly under `net.http:*`: the
/// metadata service, private, shared (100.64/10) and unique-local
/// addresses are refused by the policy before any connection is tried.
#[test]
fn metadata_private_shared_and_unique_local_need_the_policy_too() {
    let ws = fetcher(
        "\"*\", \"169.254.169.254\", \"10.0.0.1\", \"192.168.1.1\", \"100.64.0.1\", \"[fd00::1]\", \"[fe80::1]\"",
        "[policy]\nallow = [\"net.http:*\"]\ndefault = \"allow\"\n",
    );
    for (url, kind) in [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://0xa9fea9fe/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://100.64.0.1/", "shared"),
        ("http://[fd00::1]/", "unique-local"),
        ("http://[fe80::1]/", "link-local"),
    ] {
        get(&ws, url).err_contains(&["non-public", kind]);
    }
    // The audit log records each as a denial by the address rule.
    let audit = ws.run(&["audit", "--limit", "20"]);
    assert!(
        audit.stdout.contains("the address rule"),
        "{}",
        audit.stdout
    );
}

/// The built-in `web` skill declares `net.http:*` and its manifest cannot
/// be edited: its declaration is keel's own, so the operator's policy alone
/// (naming the address) lets it reach a local server; `*` in the policy
/// still never does. A user's skill declaring only `*` still needs its
/// manifest to name the address.
#[test]
fn the_built_in_web_skill_reaches_a_local_address_by_policy_alone() {
    let server = Counting::start();
    let port = server.port;
    let url = format!("http://127.0.0.1:{port}/text");
    let fetch = |ws: &Ws| ws.call("web.fetch", json!({ "url": url }));

    // `[skills]` in the text keeps the built-ins (see `Ws::policy`).
    let star = Ws::new().policy("[skills]\nbuiltin = true\n\n[policy]\nallow = [\"net.http:*\"]\n");
    fetch(&star).err_contains(&["non-public", &format!("net.http:127.0.0.1:{port}")]);
    assert_eq!(server.hits(), 0, "`*` reached a local address");

    let named = Ws::new().policy(&format!(
        "[skills]\nbuiltin = true\n\n[policy]\n[policy.skills.web]\nallow = [\"net.http:127.0.0.1:{port}\", \"net.http:localhost:{port}\"]\n"
    ));
    let r = fetch(&named).ok();
    assert_eq!(r["status"], 200, "{r}");
    assert!(
        r["text"].as_str().is_some_and(|t| t.contains("hello")),
        "{r}"
    );
    // `localhost`, allowed by name, resolves to the named address (and
    // perhaps ::1, not named: left out, not an error).
    let r = named
        .call(
            "web.fetch",
            json!({ "url": format!("http://localhost:{port}/text") }),
        )
        .ok();
    assert_eq!(r["status"], 200, "{r}");
    let hits = server.hits();
    assert!(hits >= 2, "{hits}");
    // Another port is not named.
    named
        .call(
            "web.fetch",
            json!({ "url": format!("http://127.0.0.1:{}/text", port.wrapping_add(1).max(1)) }),
        )
        .err_contains(&["net.http"]);

    // A user's skill with the same policy naming the address, declaring
    // only `*`: refused, never connected.
    let user = fetcher(
        "\"*\"",
        &format!("[policy]\n[policy.skills.p]\nallow = [\"net.http:127.0.0.1:{port}\"]\n"),
    );
    get(&user, &url).err_contains(&["non-public"]);
    assert_eq!(server.hits(), hits, "a user's `*` reached the server");
}
