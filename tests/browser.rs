//! The web console: its files and headers over a real socket, and the
//! console itself driven in a real headless Chromium (Debian's `chromium`,
//! through `playwright-core` from npm) against the real `keel serve` with a
//! fake model. The browser steps are in `tests/browser/console.mjs`; this
//! file starts keel, runs the script with `node`, and restarts keel when the
//! script asks (`keel:stop`, `keel:start` on its standard output).
//!
//! The browser test fails — it never skips — when Chromium or the npm
//! package is missing, and says how to install them (`scripts/test` does
//! both).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Ws;
use common::agent::{NOTES, NOTES_SRC, model_table};
use common::gateway::{Serve, raw_request};
use common::model::{FakeModel, Reply, Wire};
use serde_json::json;

/// The whole browser script may take this long.
const SCRIPT_LIMIT: Duration = Duration::from_secs(300);

const ECHO: &str = r#"
[skill]
name = "echo"
version = "0.2.0"
description = "Says back what it is given"
entry = "main.luau"
[[tools]]
name = "say"
description = "Say the text back"
parameters = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }
"#;

const ECHO_SRC: &str = r#"
local M = {}
function M.say(args)
  return { said = args.text }
end
return M
"#;

/// The first answer: every construct the renderer knows, and a link it
/// must not make.
const MARKDOWN: &str = "Here is **bold**, *italic* and `keel serve`.\n\n\
- one\n- two\n\n\
1. first\n2. second\n\n\
```rust\nfn main() {}\n```\n\n\
See [the docs](https://example.com/docs) and [not a link](javascript:window.__pwned=1).";

/// Model text an attacker would like to see run.
const XSS: &str = "Sure: <img src=x onerror=\"window.__pwned=2\"> and <script>window.__pwned=3</script> \
and <a href=\"javascript:window.__pwned=4\">click</a> and ![x](javascript:window.__pwned=5)";

/// An answer keel is stopped in the middle of (its first delta, then a
/// hold far longer than it takes to send the stop), and restarted.
const SLOW: &str = "Hello there: this answer was cut by a restart and resumed.";

fn console_ws(model: &FakeModel) -> Ws {
    Ws::new()
        .skill("notes", NOTES, &[("main.luau", NOTES_SRC)])
        .skill("echo", ECHO, &[("main.luau", ECHO_SRC)])
        .policy(&format!(
            "[policy]\nask = [\"kv\"]\n\n{}\n[agent]\nactive_skills = [\"notes\", \"echo\"]\n",
            model_table("main", model)
        ))
}

#[test]
fn console_files_are_served_with_strict_headers_and_nothing_else_is() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = console_ws(&model);
    let gw = Serve::start(&ws);
    let host = gw.addr.to_string();
    let get = |path: &str| raw_request(gw.addr, "GET", path, &[("Host", &host)], None);

    // The page and its files need no token: they hold no data.
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let r = get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        let csp = r.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: CSP lacks {directive}: {csp}"
            );
        }
        assert!(!csp.contains("unsafe-"), "{path}: {csp}");
        assert!(r.header("x-request-id").is_some());
    }
    let page = get("/").body;
    assert!(page.contains("<script src=\"/assets/app.js\""), "{page}");
    assert!(!page.contains(&gw.token), "the page holds no token");

    // Anything else under /assets is a JSON 404, however it is spelled.
    for path in [
        "/assets/",
        "/assets/nope.js",
        "/assets/APP.JS",
        "/assets/app.js.map",
        "/assets/../keel.toml",
        "/assets/..%2fkeel.toml",
        "/assets/%2e%2e%2fkeel.toml",
        "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/assets/app.js/",
        "/assets/app.js%00.css",
        "/assets/index.html",
        "/assets//etc/passwd",
        "/assets/.%2e/.%2e/Cargo.toml",
    ] {
        let r = get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "not_found", "{path}");
        assert!(!r.body.contains("[policy]"), "{path} leaked a file");
    }
    // Only GET is public: a POST to the page needs the token, and with it
    // is the wrong method.
    let post = raw_request(gw.addr, "POST", "/", &[("Host", &host)], Some("{}"));
    assert_eq!(post.status, 401, "{}", post.body);
    assert_eq!(gw.send("POST", "/", &[], Some("{}")).status, 405);
    // A foreign page cannot load them as its own (the guard's origin check
    // applies here too), nor under another Host (DNS rebinding).
    let foreign = raw_request(
        gw.addr,
        "GET",
        "/assets/app.js",
        &[("Host", &host), ("Origin", "http://evil.example")],
        None,
    );
    assert_eq!(foreign.status, 403);
    let rebound = raw_request(gw.addr, "GET", "/", &[("Host", "evil.example")], None);
    assert_eq!(rebound.status, 403);
}

/// What the browser needs: node, Chromium, and `playwright-core` from
/// npm. Fails (never skips) with the command that installs what is
/// missing.
struct Browser {
    node: String,
    chromium: PathBuf,
    modules: PathBuf,
}

fn browser() -> Browser {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let node = std::env::var("KEEL_NODE").unwrap_or_else(|_| "node".into());
    let node_ok = Command::new(&node)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        node_ok,
        "`{node}` does not run: install Node.js 20 or later (Debian: apt-get install nodejs npm), or set KEEL_NODE"
    );
    let chromium = std::env::var_os("KEEL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "no Chromium at {}: apt-get install chromium (or set KEEL_CHROMIUM to a Chromium binary)",
        chromium.display()
    );
    let modules = std::env::var_os("KEEL_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/browser/node_modules"));
    assert!(
        modules.join("playwright-core/package.json").exists(),
        "playwright-core is not installed in {}: run scripts/browser-deps (or the tests with scripts/test)",
        modules.display()
    );
    Browser {
        node,
        chromium,
        modules,
    }
}

#[test]
fn the_console_works_in_a_real_browser() {
    let browser = browser();
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            // "Show me some markdown"
            Reply::text(MARKDOWN),
            // "remember milk\nplease": a call that needs an approval.
            Reply::tool("notes__add", json!({"text": "milk"})),
            Reply::text("Noted: **milk**. It is the first note."),
            // "echo something nasty": HTML through a tool and the answer.
            Reply::tool(
                "echo__say",
                json!({"text": "<img src=x onerror=\"window.__pwned=6\">"}),
            ),
            Reply::text(XSS),
            // "hello again", in a new session.
            Reply::text("Hi again."),
            // "quick 1" … "quick 6", sent faster than they are answered.
            // The first holds, so the others wait in the lane meanwhile.
            Reply::Stall {
                text: "Answer 1.".into(),
                hold_ms: 1500,
            },
            Reply::text("Answer 2."),
            Reply::text("Answer 3."),
            Reply::text("Answer 4."),
            Reply::text("Answer 5."),
            Reply::text("Answer 6."),
            // "a slow one": keel is stopped during the hold and restarted.
            Reply::Stall {
                text: SLOW.into(),
                hold_ms: 5000,
            },
            // "still there?", after keel restarted.
            Reply::text("Back after the restart."),
        ],
    );
    let ws = console_ws(&model);
    let mut gw = Some(Serve::start(&ws));
    let addr = gw.as_ref().map(|g| g.addr.to_string()).unwrap_or_default();
    let token = gw.as_ref().map(|g| g.token.clone()).unwrap_or_default();
    let shots = ws.path(".shots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.mjs");
    let mut cmd = Command::new(&browser.node);
    cmd.arg(&script)
        .env("KEEL_URL", format!("http://{addr}/"))
        .env("KEEL_TOKEN", &token)
        .env("KEEL_WORKSPACE", &ws.root)
        .env("KEEL_SHOTS", &shots)
        .env("KEEL_SLOW_ANSWER", SLOW)
        .env("KEEL_CHROMIUM", &browser.chromium)
        .env("KEEL_NODE_MODULES", &browser.modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe; nothing else runs here.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut node = cmd.spawn().expect("start node");
    let mut to_node = node.stdin.take().expect("node's stdin");
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let out = node.stdout.take().expect("node's stdout");
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if out_tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = out_tx.send(None);
    });
    let err = node.stderr.take().expect("node's stderr");
    let (err_tx, err_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if err_tx.send(line).is_err() {
                return;
            }
        }
    });

    let deadline = Instant::now() + SCRIPT_LIMIT;
    let mut said = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(line)) => {
                let answer = match line.as_str() {
                    "keel:stop" => {
                        if let Some(g) = gw.take() {
                            let status = g.terminate(Duration::from_secs(30));
                            assert!(status.success(), "keel serve exited with {status}");
                        }
                        Some("ok")
                    }
                    "keel:start" => {
                        gw = Some(Serve::start_at(&ws, &addr, &[]));
                        Some("ok")
                    }
                    _ => None,
                };
                if let Some(a) = answer {
                    writeln!(to_node, "{a}").expect("answer node");
                }
                eprintln!("{line}");
                said.push(line);
            }
            Ok(None) => break,
            Err(_) => {
                // SAFETY: kill(2) on our own child; SIGTERM lets Playwright
                // close the browser it started.
                unsafe { libc::kill(node.id() as i32, libc::SIGTERM) };
                let _ = node.wait();
                let errors: Vec<String> = err_rx.try_iter().collect();
                panic!(
                    "the browser script did not finish within {SCRIPT_LIMIT:?}; it said:\n{}\n{}",
                    said.join("\n"),
                    errors.join("\n")
                );
            }
        }
    }
    let status = node.wait().expect("wait for node");
    let errors: Vec<String> = err_rx.try_iter().collect();
    assert!(
        status.success(),
        "the browser script failed ({status}); screenshots in {}:\n{}\n--- stderr:\n{}",
        shots.display(),
        said.join("\n"),
        errors.join("\n")
    );
    assert_eq!(
        said.last().map(String::as_str),
        Some("all steps passed"),
        "{said:#?}"
    );
    // The screenshot is a real PNG of a real page.
    let png = std::fs::read(shots.join("console.png")).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 20_000, "a suspiciously small screenshot");
    // Refresh docs/console.png (the README shows it) when asked to.
    if let Some(to) = std::env::var_os("KEEL_CONSOLE_SCREENSHOT") {
        std::fs::write(&to, &png).expect("write KEEL_CONSOLE_SCREENSHOT");
    }
    // All the pages, for a look (KEEL_CONSOLE_SHOTS=DIR).
    if let Some(dir) = std::env::var_os("KEEL_CONSOLE_SHOTS") {
        for e in std::fs::read_dir(&shots)
            .expect("the screenshots")
            .flatten()
        {
            let _ = std::fs::copy(e.path(), Path::new(&dir).join(e.file_name()));
        }
    }
    // The approval was answered in the browser, and the gate logged it.
    let gw = gw.expect("keel serve runs again after the restart");
    let audit = gw.get("/v1/audit?limit=0").expect(200);
    let logged = audit.as_array().into_iter().flatten().any(|r| {
        r["skill"] == "notes"
            && r["capability"]
                .as_str()
                .is_some_and(|c| c.starts_with("kv"))
    });
    assert!(
        logged,
        "no kv decision for notes in the audit log: {audit:#}"
    );
    assert_eq!(model.remaining(), 0, "every scripted reply was asked for");
    assert!(model.refusals().is_empty(), "{:?}", model.refusals());
}
