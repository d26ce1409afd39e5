//! The built-in skills, called through the real binary: each does its job
//! when the policy allows it and is refused when it does not.

mod common;

use common::{TestServer, Ws};
use serde_json::json;

fn ws(policy: &str) -> Ws {
    // `[skills]` present: the built-in skills are on.
    Ws::new().policy(&format!("[skills]\nbuiltin = true\n\n{policy}"))
}

#[test]
fn builtins_are_listed_and_pass_check() {
    let ws = ws("");
    let out = ws.run(&["tools", "--json"]);
    let tools: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for want in [
        "calc.evaluate",
        "files.read",
        "files.list",
        "files.search",
        "git.status",
        "git.diff",
        "git.log",
        "shell.run",
        "web.fetch",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let out = ws.run(&["check"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
}

#[test]
fn calc_evaluates_without_running_code() {
    let ws = ws("");
    assert_eq!(
        ws.call(
            "calc.evaluate",
            json!({"expression": "(2 + 3) * 4 ^ 2 / sqrt(16)"})
        )
        .ok(),
        json!(20)
    );
    assert_eq!(
        ws.call("calc.evaluate", json!({"expression": "2 ^ 3 ^ 2"}))
            .ok(),
        json!(512)
    );
    ws.call("calc.evaluate", json!({"expression": "1 + )"}))
        .err_contains(&["unexpected `)`"]);
    ws.call(
        "calc.evaluate",
        json!({"expression": "keel::fs::read(\"x\")"}),
    )
    .err_contains(&["calc.evaluate"]);
}

#[test]
fn files_read_list_and_search_the_workspace() {
    let ws = ws("[policy]\nallow = [\"fs.read:.\"]\n")
        .file("docs/a.md", "alpha\nNeedle here\n")
        .file("docs/b.txt", "nothing\n");
    let r = ws.call("files.read", json!({"path": "docs/a.md"})).ok();
    assert_eq!(r["text"], "alpha\nNeedle here\n");
    let r = ws.call("files.list", json!({"path": "docs"})).ok();
    assert_eq!(r["count"], 2, "{r}");
    let r = ws
        .call("files.search", json!({"pattern": "needle", "path": "docs"}))
        .ok();
    assert_eq!(r["matches"][0]["line"], 2, "{r}");
    assert!(
        r["matches"][0]["file"].as_str().unwrap().ends_with("a.md"),
        "{r}"
    );
    // Without the policy allowing it, refused (default is ask, nobody answers).
    let ws2 = ws.policy("[skills]\nbuiltin = true\n");
    ws2.call("files.read", json!({"path": "docs/a.md"}))
        .err_contains(&["needs approval", "keel grant files"]);
}

#[test]
fn shell_runs_an_allowed_program_only() {
    let ws = ws("[policy]\nallow = [\"exec:echo\", \"fs.read:.\"]\n");
    let r = ws
        .call(
            "shell.run",
            json!({"program": "echo", "args": ["a; b", "$(c)"]}),
        )
        .ok();
    assert_eq!(r["stdout"], "a; b $(c)\n", "{r}");
    ws.call("shell.run", json!({"program": "ls", "args": []}))
        .err_contains(&["`exec` on `ls`"]);
}

#[test]
fn git_reports_status_and_log_of_a_real_repository() {
    let ws = ws("[policy]\nallow = [\"exec:git\", \"fs.read:.\"]\n").file("tracked.txt", "one\n");
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(&ws.root)
            .env("GIT_AUTHOR_NAME", "T")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "T")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git")
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "tracked.txt"]);
    git(&["commit", "-q", "-m", "first commit"]);
    ws.write("tracked.txt", "two\n");
    let r = ws.call("git.status", json!({})).ok();
    assert_eq!(r["branch"], "main", "{r}");
    assert_eq!(r["clean"], false, "{r}");
    let r = ws.call("git.log", json!({"max_count": 5})).ok();
    assert_eq!(r["commits"][0]["subject"], "first commit", "{r}");
    let r = ws.call("git.diff", json!({})).ok();
    assert!(r["text"].as_str().unwrap().contains("+two"), "{r}");
}

#[test]
fn web_fetch_turns_html_into_text() {
    let server = TestServer::start();
    // The built-in web skill declares `*`; its declaration is keel's own,
    // so the policy naming the test server's address is enough for it to
    // reach loopback (a user's skill would have to name it too).
    let host = format!("127.0.0.1:{}", server.port);
    let ws = Ws::new().policy(&format!(
        "[skills]\nbuiltin = true\npaths = []\n[policy]\nallow = [\"net.http:{host}\"]\n"
    ));
    let r = ws
        .call("web.fetch", json!({"url": server.url("/page")}))
        .ok();
    assert_eq!(r["status"], 200, "{r}");
    let text = r["text"].as_str().unwrap();
    assert!(
        text.contains("Hello") && text.contains("Fish & chips"),
        "{text}"
    );
    assert!(
        !text.contains("steal()") && !text.contains("color"),
        "{text}"
    );
    // `*` in the policy never reaches loopback, built-in or not.
    let star = Ws::new()
        .policy("[skills]\nbuiltin = true\npaths = []\n[policy]\nallow = [\"net.http:*\"]\n");
    star.call("web.fetch", json!({"url": server.url("/page")}))
        .err_contains(&["non-public"]);
}
