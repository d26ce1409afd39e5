//! One command layer: each command the CLI and the console share prints the
//! same text both ways, for the same state. Drives the real binary twice per
//! command — `keel X` and the console fed `/X` from a pipe — over a
//! workspace with something in every listing: a skill that loads, one that
//! does not compile, an instructions skill, one that runs programs, grants,
//! an audit log and a session with a run (made by `keel ask` against a fake
//! model). The console names its own commands in advice (`/grant` for
//! `keel grant`); that is the only difference allowed.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::Ws;
use common::agent::notes_ws;
use common::model::{FakeModel, Reply, Wire};
use serde_json::{Value, json};

/// What a run of the binary printed.
struct Out {
    status: i32,
    stdout: String,
    stderr: String,
}

fn run(ws: &Ws, args: &[&str], stdin: &str) -> Out {
    let mut child = ws
        .keel()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("keel exits");
    Out {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `keel ARGS`.
fn cli(ws: &Ws, args: &[&str]) -> Out {
    run(ws, args, "")
}

/// What the piped console printed for `lines`, after what it printed for
/// `setup` alone (its banner, a `/session switch`).
fn console(ws: &Ws, setup: &str, lines: &str) -> Out {
    let before = run(ws, &[], setup);
    assert_eq!(before.status, 0, "console setup failed: {}", before.stderr);
    let all = run(ws, &[], &format!("{setup}{lines}"));
    let stdout = all
        .stdout
        .strip_prefix(before.stdout.as_str())
        .unwrap_or_else(|| {
            panic!(
                "the console's output does not start with its setup's:\n{}\n---\n{}",
                before.stdout, all.stdout
            )
        })
        .to_string();
    Out {
        status: all.status,
        stdout,
        stderr: all.stderr,
    }
}

/// The CLI's text as the console words its advice: every command both
/// have, named `/NAME` instead of `keel NAME` (the console's rendering of
/// a typed command reference; this list is the test's own, so a command
/// that the console names differently shows up as a difference).
fn in_console_words(cli_text: &str) -> String {
    const BOTH: &[&str] = &[
        "skills",
        "tools",
        "call",
        "check",
        "grants",
        "grant",
        "revoke",
        "audit",
        "sessions",
        "runs",
        "approvals",
        "approve",
    ];
    let mut out = cli_text.to_string();
    for name in BOTH {
        out = out.replace(&format!("`keel {name}"), &format!("`/{name}"));
        // The skills listing's "(and 2 more problems: keel check)".
        out = out.replace(&format!(": keel {name})"), &format!(": /{name})"));
    }
    out
}

const BROKEN: &str = r#"
[skill]
name = "broken"
version = "0.1.0"
description = "Does not compile"
entry = "main.luau"
[[tools]]
name = "go"
description = "Never runs"
"#;

const RUNNER: &str = r#"
[skill]
name = "runner"
version = "0.1.0"
description = "Runs git"
entry = "main.luau"
[capabilities]
exec = ["git"]
[[tools]]
name = "status"
description = "git status"
parameters = { type = "object", properties = { short = { type = "boolean" } } }
"#;

fn workspace(model: &FakeModel) -> Ws {
    notes_ws(model, "")
        .skill("broken", BROKEN, &[("main.luau", "local M = {\nreturn M\n")])
        .skill(
            "runner",
            RUNNER,
            &[("main.luau", "return { status = function() return 1 end }\n")],
        )
        .file(
            "skills/guide/SKILL.md",
            "---\nname: guide\ndescription: How to write notes well.\nallowed-tools: Bash(git:*)\n---\nWrite short notes.\n",
        )
        .file("skills/guide/reference.md", "More.\n")
}

#[test]
fn the_console_and_the_cli_print_the_same_text_for_each_shared_command() {
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("notes__add", json!({"text": "milk"})),
            Reply::text("Noted."),
        ],
    );
    let ws = workspace(&model);
    // State in every listing: a run that called a tool (audit entries), a
    // grant, a direct call.
    let asked = cli(&ws, &["ask", "remember milk"]);
    assert_eq!(asked.status, 0, "{}", asked.stderr);
    let granted = cli(&ws, &["grant", "runner", "exec:git"]);
    assert_eq!(granted.status, 0, "{}", granted.stderr);
    let sessions: Value =
        serde_json::from_str(&cli(&ws, &["sessions", "--json"]).stdout).expect("sessions JSON");
    let session = sessions[0]["id"].as_str().expect("a session").to_string();

    let switch = format!("/session switch {session}\n");
    let cases: [(&[&str], &str, &str); 9] = [
        (&["skills"], "", "/skills\n"),
        (&["check"], "", "/check\n"),
        (&["check", "skills/notes"], "", "/check skills/notes\n"),
        (&["tools"], "", "/tools\n"),
        (&["grants"], "", "/grants\n"),
        (&["audit", "--limit", "5"], "", "/audit 5\n"),
        (&["audit", "--limit", "0"], "", "/audit 0\n"),
        (&["sessions"], "", "/sessions\n"),
        (&["runs", &session], &switch, "/runs\n"),
    ];
    for (args, setup, line) in cases {
        let c = cli(&ws, args);
        let k = console(&ws, setup, line);
        assert!(
            !c.stdout.trim().is_empty(),
            "keel {args:?} printed nothing: {}",
            c.stderr
        );
        assert_eq!(
            k.stdout,
            in_console_words(&c.stdout),
            "`keel {}` and the console's `{}` differ",
            args.join(" "),
            line.trim()
        );
        // The same exit status: a listing that found problems (a skill
        // that does not compile) fails in the piped console as in the CLI.
        assert_eq!(k.status, c.status, "{line}: {}", k.stderr);
        // `--json` too: the same document, byte for byte.
        let mut json_args = args.to_vec();
        json_args.push("--json");
        let c = cli(&ws, &json_args);
        let k = console(&ws, setup, &format!("{} --json\n", line.trim()));
        serde_json::from_str::<Value>(&c.stdout)
            .unwrap_or_else(|e| panic!("keel {json_args:?}: not JSON ({e}): {}", c.stdout));
        assert_eq!(k.stdout, c.stdout, "{line} --json");
        assert_eq!(k.status, c.status, "{line} --json: {}", k.stderr);
    }
    // Which of them found problems: the broken skill, in both front ends.
    for (args, line, status) in [
        (&["skills"][..], "/skills\n", 1),
        (&["check"][..], "/check\n", 1),
        (&["check", "skills/notes"][..], "/check skills/notes\n", 0),
        (&["tools"][..], "/tools\n", 0),
    ] {
        assert_eq!(cli(&ws, args).status, status, "keel {args:?}");
        assert_eq!(console(&ws, "", line).status, status, "{line}");
    }
    // A failed listing does not stop the console: the next command runs,
    // and the status still says one failed.
    let k = console(&ws, "", "/check\n/tools\n");
    assert_eq!(k.status, 1);
    assert!(k.stdout.contains("notes.add(text: string)"), "{}", k.stdout);
    assert!(cli(&ws, &["check"]).stdout.contains("ok notes@1.0.0"));
    assert!(cli(&ws, &["check"]).stdout.contains("1 problem\n"));
    assert_eq!(cli(&ws, &["check", "skills/notes"]).status, 0);
    // A path that is not there fails alike; one outside the skill folders
    // is checked by the CLI and refused by the console, saying how.
    let c = cli(&ws, &["check", "skills/nope"]);
    let k = console(&ws, "", "/check skills/nope\n");
    assert_eq!((c.status, k.status), (1, 1));
    let reason = c.stderr.strip_prefix("keel: ").expect("keel: prefix");
    assert!(reason.contains("skills/nope does not exist"), "{reason}");
    assert_eq!(k.stderr, format!("error: {reason}"));
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("x")).unwrap();
    std::fs::write(
        outside.path().join("x/SKILL.md"),
        "---\nname: x\ndescription: Outside.\n---\nBody.\n",
    )
    .unwrap();
    let there = outside.path().join("x");
    let there = there.to_str().unwrap();
    assert_eq!(cli(&ws, &["check", there]).status, 0);
    let k = console(&ws, "", &format!("/check {there}\n"));
    assert_eq!(k.status, 1);
    assert!(
        k.stderr.contains("outside this workspace's skill folders")
            && k.stderr.contains(&format!("`keel check {there}`")),
        "{}",
        k.stderr
    );

    // The listings hold what the workspace has, so the comparison above
    // compared something.
    let skills = cli(&ws, &["skills"]);
    for want in [
        "notes@1.0.0",
        "FAILED broken",
        "guide",
        "allowed-tools",
        "runner@0.1.0",
        "programs run by skills",
    ] {
        assert!(
            skills.stdout.contains(want),
            "lacks {want:?}:\n{}",
            skills.stdout
        );
    }
    assert_eq!(skills.status, 1, "a skill failed to load: exit 1");
    assert!(
        cli(&ws, &["audit"])
            .stdout
            .contains("notes@1.0.0 notes.add kv"),
        "the run's tool call is in the audit log"
    );
    assert!(cli(&ws, &["runs", &session]).stdout.contains("  done"));
}

#[test]
fn grant_and_revoke_say_the_same_in_both_and_fail_the_same_way() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = workspace(&model);
    // From the same state each time: grant, then revoke, by the CLI; then
    // the same by the console.
    let c_grant = cli(&ws, &["grant", "notes", "exec:git"]);
    let c_again = cli(&ws, &["grant", "notes", "exec:git"]);
    let c_revoke = cli(&ws, &["revoke", "notes", "exec:git"]);
    let k = console(
        &ws,
        "",
        "/grant notes exec:git\n/grant notes exec:git\n/revoke notes exec:git\n",
    );
    assert_eq!(c_grant.status, 0, "{}", c_grant.stderr);
    assert!(
        c_grant
            .stdout
            .starts_with("granted notes exec:git in workspace ")
    );
    assert!(
        c_again
            .stdout
            .starts_with("already granted: notes exec:git")
    );
    assert_eq!(c_revoke.stdout, "revoked notes exec:git\n");
    assert_eq!(
        k.stdout,
        format!("{}{}{}", c_grant.stdout, c_again.stdout, c_revoke.stdout)
    );
    assert_eq!(k.status, 0, "{}", k.stderr);

    // Revoking what is not granted fails both ways, with the same reason;
    // a capability that does not parse too.
    for (args, line) in [
        (
            &["revoke", "notes", "exec:git"][..],
            "/revoke notes exec:git\n",
        ),
        (
            &["grant", "notes", "fs.teleport"][..],
            "/grant notes fs.teleport\n",
        ),
        (&["grant", "No/Such", "kv"][..], "/grant No/Such kv\n"),
    ] {
        let c = cli(&ws, args);
        let k = console(&ws, "", line);
        assert_eq!(c.status, 1, "{args:?}: {}", c.stdout);
        assert_eq!(k.status, 1, "{line}: {}", k.stdout);
        assert!(
            c.stdout.is_empty() && k.stdout.is_empty(),
            "{}{}",
            c.stdout,
            k.stdout
        );
        let reason = c
            .stderr
            .strip_prefix("keel: ")
            .unwrap_or_else(|| panic!("{:?}", c.stderr));
        assert_eq!(k.stderr, format!("error: {}", in_console_words(reason)));
    }
    assert!(
        cli(&ws, &["grants"]).stdout.starts_with("no grants"),
        "the failures changed nothing"
    );

    // A grant for a skill not loaded: the same note (standard error in the
    // CLI, before the answer in the console) and the same answer.
    let c = cli(&ws, &["grant", "ghost", "kv"]);
    let _ = cli(&ws, &["revoke", "ghost", "kv"]);
    let k = console(&ws, "", "/grant ghost kv\n");
    assert_eq!(
        c.stderr,
        format!("note: {}", c.stderr.trim_start_matches("note: "))
    );
    assert!(
        c.stderr.contains("no skill named `ghost` is loaded"),
        "{}",
        c.stderr
    );
    assert_eq!(k.stdout, format!("{}{}", c.stderr, c.stdout));
}

const SH: &str = r#"
[skill]
name = "sh"
version = "1.0.0"
description = "Runs programs"
entry = "main.luau"
[capabilities]
exec = ["*"]
[[tools]]
name = "run"
description = "Run a program"
parameters = { type = "object", properties = { argv = { type = "array", items = { type = "string" } } }, required = ["argv"] }
"#;

/// An approval waiting in one process (a run of the agent in this test)
/// is listed alike by `keel approvals` and `/approvals`, answered by the
/// console's `/approve` (the run goes on), and answering again says the
/// same both ways.
#[test]
fn approvals_and_approve_are_the_same_in_both() {
    use std::time::Duration;
    let model = FakeModel::scripted(
        Wire::OpenAi,
        vec![
            Reply::tool("sh__run", json!({"argv": ["true"]})),
            Reply::text("Ran it."),
        ],
    );
    let ws = Ws::new()
        .skill(
            "sh",
            SH,
            &[(
                "main.luau",
                "return { run = function(a) return keel.exec.run(a.argv).status end }\n",
            )],
        )
        .policy(&format!(
            "[policy]\nask = [\"exec:*\"]\n\n{}",
            common::agent::model_table("main", &model)
        ));
    let rt = common::runtime();
    let env = std::env::vars().filter(|(k, _)| k == "PATH").collect();
    let kernel = ws.kernel_with_env(&rt, env);
    let agent = keel::agent::Agent::new(kernel.clone()).expect("agent");
    let session = agent.new_session("t").expect("session");
    let _g = rt.enter();
    let mut handle = agent.submit(&session.id, "run true").expect("submit");
    let approval = common::agent::next_approval(&rt, &mut handle, Duration::from_secs(90));

    for (args, line) in [
        (&["approvals"][..], "/approvals\n"),
        (&["approvals", "--all"][..], "/approvals --all\n"),
        (&["approvals", "--json"][..], "/approvals --json\n"),
    ] {
        let c = cli(&ws, args);
        let k = console(&ws, "", line);
        assert!(c.stdout.contains(&approval.id), "{args:?}: {}", c.stdout);
        assert_eq!(k.stdout, c.stdout, "{line}");
    }

    let k = console(&ws, "", &format!("/approve {} yes\n", approval.id));
    assert_eq!(k.status, 0, "{}", k.stderr);
    assert!(k.stdout.starts_with("answered "), "{}", k.stdout);
    let outcome = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(90), handle.wait())
            .await
            .expect("the run did not go on after the console's answer (guard: 90 s)")
    });
    assert_eq!(outcome.state, "done", "{outcome:?}");
    let c = cli(&ws, &["approve", &approval.id, "yes"]);
    assert_eq!(c.status, 0, "{}", c.stderr);
    assert_eq!(
        k.stdout,
        c.stdout.replacen("already answered", "answered", 1)
    );
    let again = console(&ws, "", &format!("/approve {} yes\n", approval.id));
    assert_eq!(again.stdout, c.stdout);

    // A different answer now, and a bad one, fail alike.
    for answer in ["no", "maybe"] {
        let c = cli(&ws, &["approve", &approval.id, answer]);
        let k = console(&ws, "", &format!("/approve {} {answer}\n", approval.id));
        assert_eq!((c.status, k.status), (1, 1), "{answer}");
        let reason = c.stderr.strip_prefix("keel: ").expect("keel: prefix");
        assert_eq!(k.stderr, format!("error: {reason}"), "{answer}");
    }
}

/// `keel call` and `/call` are one implementation: the same result (the
/// CLI as one line of JSON, the console pretty with its time), the same
/// errors in each front end's words, the same exit status; `keel check
/// --json` and `/check --json` are the same report, with each problem's
/// file and line.
#[test]
fn call_and_check_json_are_the_same_in_both() {
    let model = FakeModel::scripted(Wire::OpenAi, vec![]);
    let ws = workspace(&model);

    let c = cli(&ws, &["call", "notes.add", r#"{"text": "milk"}"#]);
    let k = console(&ws, "", "/call notes.add {\"text\": \"eggs\"}\n");
    assert_eq!((c.status, k.status), (0, 0), "{}{}", c.stderr, k.stderr);
    let c_value: Value = serde_json::from_str(&c.stdout).expect("keel call prints JSON");
    assert_eq!(c.stdout.lines().count(), 1, "{}", c.stdout);
    let (pretty, time) = k
        .stdout
        .rsplit_once("\n(")
        .unwrap_or_else(|| panic!("no time line: {}", k.stdout));
    assert!(time.ends_with(" ms)\n"), "{time}");
    let k_value: Value = serde_json::from_str(pretty).expect("the console shows JSON");
    // Each call appended its note: the same shape of result.
    assert_eq!(
        c_value.as_object().map(|o| o.keys().collect::<Vec<_>>()),
        k_value.as_object().map(|o| o.keys().collect::<Vec<_>>()),
        "{c_value} vs {k_value}"
    );

    // Failures, each both ways: no such tool, a tool whose skill does not
    // compile, arguments that are not JSON, arguments the schema refuses.
    for (args, line) in [
        (&["call", "notes.ad"][..], "/call notes.ad\n"),
        (&["call", "broken.go"][..], "/call broken.go\n"),
        (
            &["call", "notes.add", "{\"text\": 1}"][..],
            "/call notes.add {\"text\": 1}\n",
        ),
    ] {
        let c = cli(&ws, args);
        let k = console(&ws, "", line);
        assert_eq!((c.status, k.status), (1, 1), "{line}");
        assert!(
            c.stdout.is_empty() && k.stdout.is_empty(),
            "{}{}",
            c.stdout,
            k.stdout
        );
        let reason = c
            .stderr
            .strip_prefix("keel: ")
            .unwrap_or_else(|| panic!("{:?}", c.stderr));
        assert_eq!(
            k.stderr,
            format!("error: {}", in_console_words(reason)),
            "{line}"
        );
    }
    let k = console(&ws, "", "/call notes.ad\n");
    assert!(
        k.stderr.contains("did you mean `notes.add`") && k.stderr.ends_with("see `/tools`\n"),
        "{}",
        k.stderr
    );
    assert!(
        cli(&ws, &["call", "notes.ad"])
            .stderr
            .ends_with("see `keel tools`\n"),
        "the CLI names its own command"
    );
    // Bad JSON: the CLI's message and the console's parse error agree.
    let c = cli(&ws, &["call", "notes.add", "{bad"]);
    let k = console(&ws, "", "/call notes.add {bad\n");
    assert_eq!((c.status, k.status), (1, 1));
    let reason = c.stderr.strip_prefix("keel: ").expect("keel: prefix");
    assert!(
        reason.starts_with("arguments are not valid JSON ("),
        "{reason}"
    );
    assert_eq!(k.stderr, reason);

    // check --json: one report, the compile error with file and line.
    let c = cli(&ws, &["check", "--json"]);
    let k = console(&ws, "", "/check --json\n");
    assert_eq!(k.stdout, c.stdout);
    assert_eq!((c.status, k.status), (1, 1));
    let report: Value = serde_json::from_str(&c.stdout).expect("check --json is JSON");
    let problems = report["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{report:#}");
    let p = &problems[0];
    assert_eq!(p["skill"], "broken@0.1.0");
    assert!(
        p["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("skills/broken/main.luau")),
        "{p}"
    );
    assert!(p["line"].as_u64().is_some_and(|l| l >= 1), "{p}");
    assert!(!p["message"].as_str().unwrap_or("").is_empty(), "{p}");
    let skills = report["skills"].as_array().expect("skills");
    assert_eq!(report["checked"].as_u64(), Some(skills.len() as u64));
    let broken = skills
        .iter()
        .find(|s| s["skill"] == "broken@0.1.0")
        .expect("the broken skill is listed");
    assert_eq!(broken["ok"], false);
    let runner = skills
        .iter()
        .find(|s| s["skill"] == "runner@0.1.0")
        .expect("runner");
    assert_eq!(runner["capabilities"][0]["capability"], "exec:git");
    assert!(
        ["allow", "ask", "deny"]
            .contains(&runner["capabilities"][0]["decision"].as_str().unwrap_or("")),
        "{runner}"
    );
    // One skill that is fine: exit 0 both ways, no problems.
    let c = cli(&ws, &["check", "skills/notes", "--json"]);
    assert_eq!(c.status, 0, "{}", c.stderr);
    let report: Value = serde_json::from_str(&c.stdout).unwrap();
    assert_eq!(report["problems"], json!([]));
    assert_eq!(report["checked"], 1);
}
