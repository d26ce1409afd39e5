//! Programs a skill runs are confined by the skill's grants (issue 9,
//! Security 5): each test attacks the sandbox the way a skill would, through
//! the real `keel` binary, with real processes.
#![cfg(target_os = "linux")]

mod common;

use common::Ws;
use serde_json::{Value, json};

/// A skill `x` with one tool `run` that runs its `argv` and returns the
/// result, declaring `caps` (TOML lines) and allowed by the policy for
/// exactly those.
fn ws(caps: &str, allow: &[&str]) -> Ws {
    let manifest = format!(
        r#"[skill]
name = "x"
version = "1.0.0"
entry = "main.luau"
[capabilities]
{caps}
[[tools]]
name = "run"
description = "runs argv"
parameters = {{ type = "object", properties = {{ argv = {{ type = "array" }}, timeout_ms = {{ type = "number" }} }}, required = ["argv"] }}
"#
    );
    let allow = allow
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ws::new()
        .skill(
            "x",
            &manifest,
            &[(
                "main.luau",
                r#"local M = {}
function M.run(a) return keel.exec.run(a.argv, { timeout_ms = a.timeout_ms }) end
return M"#,
            )],
        )
        .policy(&format!(
            "[policy]\ndefault = \"deny\"\nallow = [{allow}]\n"
        ))
}

fn run(ws: &Ws, argv: &[&str]) -> Value {
    ws.call("x.run", json!({ "argv": argv })).ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Waits (bounded) until `pid` is gone; zombies of other parents count as
/// gone only once reaped, so this also catches "killed but never reaped".
fn gone_eventually(pid: i32) -> bool {
    for _ in 0..2000 {
        if !alive(pid) || is_zombie(pid) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn git_repo(ws: &Ws) {
    let st = std::process::Command::new("git")
        .args(["init", "-q", "repo"])
        .current_dir(&ws.root)
        .status()
        .expect("git init");
    assert!(st.success());
}

#[test]
fn git_alias_cannot_run_an_injected_command() {
    let ws = ws(
        "\"exec\" = [\"git\"]\n\"fs.read\" = [\"./repo\"]\n\"fs.write\" = [\"./repo\"]",
        &["exec:git", "fs.read:./repo", "fs.write:./repo"],
    );
    git_repo(&ws);
    let marker = ws.path("repo/pwned");
    let r = run(
        &ws,
        &[
            "git",
            "-C",
            ws.path("repo").to_str().unwrap(),
            "-c",
            &format!("alias.x=!touch {}; echo ran", marker.display()),
            "x",
        ],
    );
    assert_eq!(r["success"], false, "{r}");
    assert!(!marker.exists(), "the injected command ran: {r}");
    assert!(!r["stdout"].as_str().unwrap().contains("ran"), "{r}");
}

#[test]
fn git_upload_pack_cannot_run_an_injected_command() {
    let ws = ws(
        "\"exec\" = [\"git\"]\n\"fs.read\" = [\"./repo\"]",
        &["exec:git", "fs.read:./repo"],
    );
    git_repo(&ws);
    let marker = ws.path("pwned");
    let r = run(
        &ws,
        &[
            "git",
            "ls-remote",
            &format!("--upload-pack=touch {}; false", marker.display()),
            ws.path("repo").to_str().unwrap(),
        ],
    );
    assert_eq!(r["success"], false, "{r}");
    assert!(!marker.exists(), "the injected command ran: {r}");
}

#[test]
fn a_granted_cat_cannot_read_keels_environ() {
    let ws = ws(
        "\"exec\" = [\"cat\", \"sh\"]\n\"fs.read\" = [\"./box\"]",
        &["exec:cat", "exec:sh", "fs.read:./box"],
    );
    std::fs::create_dir_all(ws.path("box")).unwrap();
    let pid_file = ws.path("box/pid");
    // The child learns keel's host pid from a file the test writes once
    // keel is running (a skill could learn it the same way from anything
    // it may read); it waits for the file with a bounded loop.
    let script = format!(
        "i=0; while [ ! -s {f} ] && [ $i -lt 2000000 ]; do i=$((i+1)); done; \
         p=$(cat {f}); cat /proc/$p/environ; cat /proc/$p/cmdline; echo done",
        f = pid_file.display()
    );
    let secret = "sk-this-must-not-leak-0123456789";
    let child = ws
        .keel()
        .env("OPENAI_TEST_SECRET_KEY", secret)
        .args([
            "call",
            "x.run",
            &json!({ "argv": ["sh", "-c", script] }).to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("keel");
    std::fs::write(&pid_file, child.id().to_string()).unwrap();
    let out = child.wait_with_output().expect("keel");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(&stdout).expect("json result");
    assert!(!stdout.contains(secret), "{stdout}");
    assert!(r["stdout"].as_str().unwrap().contains("done"), "{r}");
    // Not merely scrubbed: the child cannot open keel's /proc files at all.
    let stderr = r["stderr"].as_str().unwrap();
    assert!(
        stderr.matches("Permission denied").count() >= 2,
        "keel's /proc files were readable: {r}"
    );
}

#[test]
fn keels_own_environ_block_is_scrubbed() {
    // A process outside any sandbox, as the same user (root here), reads
    // keel's /proc/PID/environ while keel runs a program.
    let ws = ws("\"exec\" = [\"sleep\"]", &["exec:sleep"]);
    let secret = "sk-scrub-me-9876543210";
    // The program outlives the test unless killed: keel is still running
    // when its environ is read (checked below), whatever the machine's pace.
    let tag = format!("304.{}", std::process::id());
    let mut child = ws
        .keel()
        .env("OPENAI_TEST_SECRET_KEY", secret)
        .args([
            "call",
            "x.run",
            &json!({ "argv": ["sleep", &tag] }).to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("keel");
    let pid = child.id();
    // Wait (bounded) until keel has started its program, i.e. is past
    // start-up; then its environ must be blank.
    let mut seen_child = false;
    for _ in 0..2000 {
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let any_threads_children = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten().any(|t| {
                    std::fs::read_to_string(t.path().join("children"))
                        .is_ok_and(|c| !c.trim().is_empty())
                })
            })
            .unwrap_or(false);
        if !kids.trim().is_empty() || any_threads_children {
            seen_child = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(seen_child, "keel never started its program");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    let text = String::from_utf8_lossy(&environ);
    assert!(!text.contains(secret), "keel's environ shows the key");
    assert!(
        !text.contains("KEEL_DATA_DIR="),
        "the block was not scrubbed"
    );
    // A zombie's environ reads empty: the read above proves something only
    // if keel was still running after it.
    let pid = i32::try_from(pid).expect("pid");
    assert!(
        alive(pid) && !is_zombie(pid),
        "keel ended before its environ was read"
    );
    child.kill().expect("kill keel");
    let _ = child.wait();
    let wanted = format!("sleep\0{tag}\0").into_bytes();
    let left: Vec<i32> = pids_with_cmdline(&wanted)
        .into_iter()
        .filter(|p| !gone_eventually(*p))
        .collect();
    for p in &left {
        // SAFETY: cleaning up what this test started.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
}

#[test]
fn a_granted_cat_cannot_read_outside_its_grants() {
    let ws = ws(
        "\"exec\" = [\"cat\"]\n\"fs.read\" = [\"./pub\"]",
        &["exec:cat", "fs.read:./pub"],
    )
    .file("pub/ok.txt", "public")
    .file("secret/key.txt", "private");
    let ok = run(&ws, &["cat", ws.path("pub/ok.txt").to_str().unwrap()]);
    assert_eq!(ok["stdout"], "public", "{ok}");
    for target in [
        ws.path("secret/key.txt"),
        ws.path("keel.toml"),
        ws.path("skills/x/main.luau"),
        ws.data_dir().join("keel.db"),
        "/etc/shadow".into(),
    ] {
        let r = run(&ws, &["cat", target.to_str().unwrap()]);
        assert_eq!(
            r["success"],
            false,
            "{} was readable: {r}",
            target.display()
        );
        assert!(
            r["stderr"].as_str().unwrap().contains("Permission denied"),
            "{r}"
        );
    }
}

#[test]
fn keels_control_plane_is_cut_out_of_a_granted_workspace() {
    // fs.write:. covers keel.toml, the data dir and the skills folder; the
    // child must reach none of them, but still the rest of the workspace.
    let ws = ws(
        "\"exec\" = [\"sh\", \"cat\", \"touch\"]\n\"fs.read\" = [\".\"]\n\"fs.write\" = [\".\"]",
        &[
            "exec:sh",
            "exec:cat",
            "exec:touch",
            "fs.read:.",
            "fs.write:.",
        ],
    )
    .file("work/a.txt", "a");
    std::fs::create_dir_all(ws.data_dir()).unwrap();
    let before = std::fs::read_to_string(ws.path("keel.toml")).unwrap();
    let script = format!(
        "echo 'default = \"allow\"' > {toml}; touch {data}/planted; touch {skills}/planted; touch {work}/new; cat {work}/a.txt",
        toml = ws.path("keel.toml").display(),
        data = ws.data_dir().display(),
        skills = ws.path("skills").display(),
        work = ws.path("work").display(),
    );
    let r = run(&ws, &["sh", "-c", &script]);
    assert_eq!(
        std::fs::read_to_string(ws.path("keel.toml")).unwrap(),
        before
    );
    assert!(!ws.data_dir().join("planted").exists());
    assert!(!ws.path("skills/planted").exists());
    assert!(ws.path("work/new").exists(), "{r}");
    assert!(r["stdout"].as_str().unwrap().ends_with('a'), "{r}");
}

#[test]
fn no_net_http_means_no_tcp_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ws = ws("\"exec\" = [\"sh\"]", &["exec:sh"]);
    // bash's /dev/tcp is not in every sh; use the shell only to show the
    // connect failing with a program that has a connect: none is needed —
    // `exec 3<>/dev/tcp` is bash-only, so probe with bash if present.
    let shell = if std::path::Path::new("/bin/bash").exists() {
        "bash"
    } else {
        return;
    };
    let ws = ws.policy(&format!(
        "[policy]\ndefault = \"deny\"\nallow = [\"exec:{shell}\", \"exec:sh\"]\n"
    ));
    ws.write(
        "skills/x/skill.toml",
        &std::fs::read_to_string(ws.path("skills/x/skill.toml"))
            .unwrap()
            .replace(
                "\"exec\" = [\"sh\"]",
                &format!("\"exec\" = [\"{shell}\", \"sh\"]"),
            ),
    );
    listener.set_nonblocking(true).unwrap();
    let r = run(
        &ws,
        &[
            shell,
            "-c",
            &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected || echo refused"),
        ],
    );
    assert!(r["stdout"].as_str().unwrap().contains("refused"), "{r}");
    assert!(listener.accept().is_err(), "a connection arrived");
}

#[test]
fn background_and_setsid_grandchildren_do_not_outlive_the_call() {
    let ws = ws(
        "\"exec\" = [\"sh\", \"sleep\", \"setsid\"]",
        &["exec:sh", "exec:sleep", "exec:setsid"],
    );
    // Inside the child's PID namespace `$!` is a namespace pid, meaningless
    // on the host, so each grandchild gets a unique command line and the
    // test finds it on the host by that.
    let me = std::process::id();
    let bg = format!("300.{me}");
    let sid = format!("301.{me}");
    for script in [
        format!("sleep {bg} & echo started"),
        format!("setsid sleep {sid} & echo started"),
        format!("setsid sh -c 'sleep {sid}' </dev/null >/dev/null 2>&1 & echo started"),
    ] {
        let r = run(&ws, &["sh", "-c", &script]);
        assert_eq!(r["stdout"], "started\n", "{r}");
    }
    let wanted = [
        format!("sleep\0{bg}\0").into_bytes(),
        format!("sleep\0{sid}\0").into_bytes(),
    ];
    let leftovers: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            wanted.contains(&cmd)
        })
        .filter(|pid| !gone_eventually(*pid))
        .collect();
    assert!(
        leftovers.is_empty(),
        "grandchildren survived: {leftovers:?}"
    );
}

#[test]
fn a_cancelled_or_timed_out_call_kills_the_whole_group() {
    let ws = ws("\"exec\" = [\"sh\", \"sleep\"]", &["exec:sh", "exec:sleep"]);
    let me = std::process::id();
    let tag = format!("302.{me}");
    let r = ws.call(
        "x.run",
        json!({ "argv": ["sh", "-c", format!("sleep {tag} & sleep {tag}")], "timeout_ms": 300 }),
    );
    r.err_contains(&["timed out"]);
    let wanted = format!("sleep\0{tag}\0").into_bytes();
    let left: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default() == wanted)
        .filter(|pid| !gone_eventually(*pid))
        .collect();
    assert!(left.is_empty(), "survived the timeout: {left:?}");
}

fn pids_with_cmdline(wanted: &[u8]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default() == wanted)
        .collect()
}

#[test]
fn programs_die_with_a_killed_keel() {
    let ws = ws(
        "\"exec\" = [\"sh\", \"sleep\", \"setsid\"]",
        &["exec:sh", "exec:sleep", "exec:setsid"],
    );
    let tag = format!("303.{}", std::process::id());
    let mut keel = ws
        .keel()
        .args([
            "call",
            "x.run",
            &json!({ "argv": ["sh", "-c", format!("setsid sleep {tag} & sleep {tag}")], "timeout_ms": 60000 })
                .to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("keel");
    let wanted = format!("sleep\0{tag}\0").into_bytes();
    let mut found = Vec::new();
    for _ in 0..4000 {
        found = pids_with_cmdline(&wanted);
        if found.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(found.len(), 2, "the program never started");
    keel.kill().expect("kill -9 keel");
    let _ = keel.wait();
    let left: Vec<i32> = found.into_iter().filter(|p| !gone_eventually(*p)).collect();
    for p in &left {
        // SAFETY: cleaning up what this test started.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "outlived keel: {left:?}");
}

/// A skill `name` whose tool `runs` runs each argv of `argvs` in turn, in
/// one call (so in one keel process), and returns every result.
fn skill_running(ws: Ws, name: &str, caps: &str) -> Ws {
    let manifest = format!(
        r#"[skill]
name = "{name}"
version = "1.0.0"
entry = "main.luau"
[capabilities]
{caps}
[[tools]]
name = "runs"
description = "runs each argv in turn"
parameters = {{ type = "object", properties = {{ argvs = {{ type = "array" }} }}, required = ["argvs"] }}
"#
    );
    ws.skill(
        name,
        &manifest,
        &[(
            "main.luau",
            r#"local M = {}
function M.runs(a)
  local out = {}
  for i, argv in ipairs(a.argvs) do out[i] = keel.exec.run(argv) end
  return out
end
return M"#,
        )],
    )
}

/// The namespace `kind` (`net`, `user`) of process `pid`, as the kernel
/// names it (`net:[4026532282]`).
fn ns_of(pid: &str, kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|l| l.display().to_string())
}

/// Waits (bounded) for exactly one process with this command line.
fn the_process(wanted: &[u8]) -> i32 {
    for _ in 0..4000 {
        if let [pid] = pids_with_cmdline(wanted)[..] {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!(
        "never saw exactly one `{}`",
        String::from_utf8_lossy(wanted).replace('\0', " ")
    );
}

#[test]
fn two_skills_without_net_http_never_share_a_network_namespace() {
    // Skills x and y, neither with net.http, run programs at the same time
    // in one keel (in process); the test reads each program's namespaces
    // from outside, by the unique command line it runs.
    let caps = "\"exec\" = [\"sleep\"]";
    let ws = skill_running(skill_running(Ws::new(), "x", caps), "y", caps)
        .policy("[policy]\ndefault = \"deny\"\nallow = [\"exec:sleep\"]\n");
    let rt = common::runtime();
    let env = std::env::vars().filter(|(k, _)| k == "PATH").collect();
    let kernel = ws.kernel_with_env(&rt, env);
    let me = std::process::id();
    let tags = [
        ("x", format!("310.{me}")),
        ("x", format!("311.{me}")),
        ("y", format!("312.{me}")),
    ];
    let calls: Vec<_> = tags
        .iter()
        .map(|(skill, tag)| {
            let k = kernel.clone();
            let tool = format!("{skill}.runs");
            let args = json!({ "argvs": [["sleep", tag]] });
            rt.spawn(async move { k.call_tool(&tool, args).await })
        })
        .collect();
    let pids: Vec<i32> = tags
        .iter()
        .map(|(_, tag)| the_process(format!("sleep\0{tag}\0").as_bytes()))
        .collect();
    let ns = |i: usize, kind: &str| ns_of(&pids[i].to_string(), kind).expect("program's ns");
    let (x1, x2, y) = (ns(0, "net"), ns(1, "net"), ns(2, "net"));
    let (user1, user2) = (ns(0, "user"), ns(1, "user"));
    let host = ns_of("self", "net").expect("own ns");
    for pid in &pids {
        // SAFETY: the test's own programs; the calls report the kill.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    for call in calls {
        let r = rt.block_on(call).expect("join").expect("call");
        assert_eq!(r[0]["signal"], 9, "{r}");
    }
    assert_ne!(x1, y, "skills x and y shared a network namespace");
    assert!(
        x1 != host && y != host,
        "a program ran in keel's network namespace"
    );
    // By design (the sandbox's module docs): one skill's programs share
    // one, and each exec still has a user namespace of its own.
    assert_eq!(x1, x2);
    assert_ne!(user1, user2);
}

#[test]
fn a_program_cannot_change_the_network_its_skills_later_programs_get() {
    // The attack on a shared namespace: one program sets up loopback (to
    // leave a listener, or state, for the next program of the skill). It
    // must hold no capability there, and the next program finds it as it
    // was: `lo` down, nothing reachable.
    let Some(ip) = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.exists())
        .and_then(|p| p.canonicalize().ok())
    else {
        eprintln!("skipped: needs iproute2's `ip`");
        return;
    };
    let Ok(bash) = std::path::Path::new("/bin/bash").canonicalize() else {
        eprintln!("skipped: needs bash for /dev/udp");
        return;
    };
    let (ip, bash) = (ip.display().to_string(), bash.display().to_string());
    let ws = skill_running(Ws::new(), "x", &format!("\"exec\" = [{ip:?}, {bash:?}]")).policy(
        &format!("[policy]\ndefault = \"deny\"\nallow = [\"exec:{ip}\", \"exec:{bash}\"]\n"),
    );
    let r = ws
        .call(
            "x.runs",
            json!({ "argvs": [
                [ip, "link", "set", "lo", "up"],
                [ip, "addr", "add", "10.9.9.9/32", "dev", "lo"],
                [ip, "-o", "link", "show", "lo"],
                [ip, "-o", "addr", "show", "dev", "lo"],
                [bash, "-c", "echo hi > /dev/udp/127.0.0.1/9 && echo sent"],
            ] }),
        )
        .ok();
    for i in 0..2 {
        assert_eq!(r[i]["success"], false, "a program changed the network: {r}");
        assert!(
            r[i]["stderr"]
                .as_str()
                .unwrap_or("")
                .contains("Operation not permitted"),
            "{r}"
        );
    }
    let link = r[2]["stdout"].as_str().unwrap_or("");
    assert!(link.contains("lo:") && link.contains("DOWN"), "{r}");
    assert!(!link.contains("LOWER_UP"), "{r}");
    assert!(
        !r[3]["stdout"].as_str().unwrap_or("").contains("10.9.9.9"),
        "{r}"
    );
    assert_eq!(r[4]["success"], false, "{r}");
    assert!(
        !r[4]["stdout"].as_str().unwrap_or("").contains("sent"),
        "{r}"
    );
}

#[test]
fn nothing_stays_in_a_skills_network_namespace_after_keel_is_killed() {
    // keel holds the skill's namespaces by descriptors, not by a process:
    // once keel is killed, no process on the host is left in the network
    // namespace its program ran in, and the program never held keel's
    // namespace descriptors.
    let ws = skill_running(Ws::new(), "x", "\"exec\" = [\"sleep\"]")
        .policy("[policy]\ndefault = \"deny\"\nallow = [\"exec:sleep\"]\n");
    let tag = format!("313.{}", std::process::id());
    let mut keel = ws
        .keel()
        .args([
            "call",
            "x.runs",
            &json!({ "argvs": [["sleep", tag]] }).to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("keel");
    let pid = the_process(format!("sleep\0{tag}\0").as_bytes());
    let net = ns_of(&pid.to_string(), "net").expect("program's ns");
    assert_ne!(Some(&net), ns_of("self", "net").as_ref());
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("program's fds")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert!(
        !fds.iter()
            .any(|l| l.starts_with("net:") || l.starts_with("user:")),
        "the program holds namespace descriptors: {fds:?}"
    );
    keel.kill().expect("kill -9 keel");
    let _ = keel.wait();
    let in_ns = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| ns_of(&p.to_string(), "net").as_ref() == Some(&net))
            .filter(|p| !is_zombie(*p))
            .collect()
    };
    let mut left = in_ns();
    for _ in 0..2000 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        left = in_ns();
    }
    for p in &left {
        // SAFETY: cleaning up what this test started.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    assert!(
        left.is_empty(),
        "left in the skill's network namespace: {left:?}"
    );
}

#[test]
fn the_programs_own_exit_code_and_signal_come_through_the_namespace() {
    // The program is pid 2 of its namespace (init is pid 1), so it can
    // signal itself; keel reports what the program did, not its helpers.
    let ws = ws("\"exec\" = [\"sh\"]", &["exec:sh"]);
    let r = run(&ws, &["sh", "-c", "echo out; exit 7"]);
    assert_eq!(
        (r["status"].clone(), r["stdout"].clone()),
        (json!(7), json!("out\n")),
        "{r}"
    );
    let r = run(&ws, &["sh", "-c", "kill -TERM $$; sleep 5"]);
    assert_eq!(
        (r["status"].clone(), r["signal"].clone()),
        (json!(-1), json!(15)),
        "{r}"
    );
    let r = run(&ws, &["sh", "-c", "echo $$"]);
    assert_eq!(r["stdout"], "2\n", "{r}");
}
