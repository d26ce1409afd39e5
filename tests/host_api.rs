//! Every host namespace, from Luau and from Rhai: each works when granted
//! and is refused, with a clear message, when not.

mod common;

use std::collections::BTreeMap;

use common::{TestServer, Ws, runtime};
use serde_json::{Value, json};

fn manifest(name: &str, entry: &str, caps: &str) -> String {
    format!(
        r#"
[skill]
name = "{name}"
version = "1.0.0"
description = "exercises the host API"
entry = "{entry}"
[capabilities]
{caps}
[[tools]]
name = "all"
description = "calls every namespace"
parameters = {{ type = "object", properties = {{ url = {{ type = "string" }} }}, required = ["url"] }}
[[tools]]
name = "denied"
description = "tries one effect"
parameters = {{ type = "object", properties = {{ what = {{ type = "string" }}, url = {{ type = "string" }} }}, required = ["what"] }}
[[tools]]
name = "echo"
description = "returns its arguments"
[[tools]]
name = "shapes"
description = "encodes tables of each shape"
[[tools]]
name = "probe"
description = "makes one badly formed host call and returns its error"
"#
    )
}

const LUAU: &str = r#"
local M = {}
function M.all(a)
  keel.fs.mkdir("./data/sub")
  keel.fs.write("./data/sub/f.txt", "one")
  keel.fs.append("./data/sub/f.txt", "+two")
  local text = keel.fs.read("./data/sub/f.txt")
  local listed = keel.fs.list("./data/sub")
  local existed = keel.fs.exists("./data/sub/f.txt")
  local removed = keel.fs.remove("./data/sub/f.txt")
  local gone = not keel.fs.exists("./data/sub/f.txt")
  keel.kv.set("k", { n = 1, list = { 1, 2, 3 } })
  local kv = keel.kv.get("k")
  local keys = keel.kv.list()
  local deleted = keel.kv.delete("k")
  local missing = keel.kv.get("k")
  local res = keel.http.request{ method = "GET", url = a.url .. "/text" }
  local js = keel.http.get_json(a.url .. "/json")
  local run = keel.exec.run{ "echo", "hi there" }
  local home = keel.env.get("KEEL_TEST_VAR")
  local enc = keel.json.encode({ a = 1 })
  local dec = keel.json.decode('{"b": [true, null, 2]}')
  local t = keel.time.now()
  keel.time.sleep(1)
  keel.log.info("all done", { n = 1 })
  local echoed = keel.tools.call("lua.echo", { x = 1 })
  return {
    text = text, names = listed[1].name, existed = existed, removed = removed, gone = gone,
    kv = kv, keys = keys, deleted = deleted, missing = missing == nil,
    status = res.status, body = res.body, json_ok = js.ok,
    out = run.stdout, code = run.status, env = home,
    enc = enc, dec = dec, time_ok = t > 1700000000, echoed = echoed,
  }
end
function M.denied(a)
  local w = a.what
  if w == "fs" then return keel.fs.read("./other/x.txt") end
  if w == "fswrite" then return keel.fs.write("./data/x.txt", "no") end
  if w == "kv" then return keel.kv.get("x") end
  if w == "http" then return keel.http.request{ url = a.url .. "/text" } end
  if w == "exec" then return keel.exec.run{ "ls" } end
  if w == "env" then return keel.env.get("PATH") end
  if w == "tools" then return keel.tools.call("rhai.echo", {}) end
  if w == "catch" then
    local ok, err = pcall(keel.fs.read, "./other/x.txt")
    return { ok = ok, err = err }
  end
  error("unknown case " .. w)
end
function M.echo(a) return a end
-- One badly formed call per case (see `BAD_CALLS`).
local bad = {
  exec_unknown = function(a) return keel.exec.run({ "echo", "x" }, { timeot_ms = 5 }) end,
  exec_inline_unknown = function(a) return keel.exec.run{ "echo", "x", stdn = "in" } end,
  exec_type = function(a) return keel.exec.run({ "echo", "x" }, { cwd = 5 }) end,
  exec_opts_type = function(a) return keel.exec.run({ "echo", "x" }, "fast") end,
  exec_missing = function(a) return keel.exec.run(nil) end,
  http_unknown = function(a) return keel.http.get(a.url .. "/text", { header = { a = "b" } }) end,
  http_request_unknown = function(a) return keel.http.request{ url = a.url .. "/text", methd = "POST" } end,
  http_type = function(a) return keel.http.get_json(a.url .. "/json", { timeout_ms = "5" }) end,
  http_header_type = function(a) return keel.http.post_json(a.url .. "/json", {}, { headers = { x = true } }) end,
  http_missing = function(a) return keel.http.request{ method = "GET" } end,
  llm_unknown = function(a) return keel.llm.complete("q", { max_token = 5 }) end,
  llm_type = function(a) return keel.llm.complete("q", { system = 1 }) end,
  fs_type = function(a) return keel.fs.write("./data/typed.txt", 5) end,
  fs_missing = function(a) return keel.fs.read(nil) end,
  kv_type = function(a) return keel.kv.get({ "k" }) end,
  time_type = function(a) return keel.time.sleep("10") end,
  json_type = function(a) return keel.json.encode({}, "yes") end,
  tools_type = function(a) return keel.tools.call(7) end,
}
function M.shapes(a)
  local t = { 1, k = "v" }
  t.self = t
  local ok, err = pcall(keel.json.encode, t)
  return {
    empty = keel.json.encode({}),
    list = keel.json.encode({ 1, 2 }),
    decoded = keel.json.encode(keel.json.decode("[]")),
    mixed = keel.json.encode({ "a", "b", k = { 1, n = 2 } }),
    cycle = tostring(err),
  }
end
function M.probe(a)
  local ok, err = pcall(bad[a.what], a)
  if ok then return { ok = true } end
  return { ok = false, err = tostring(err) }
end
return M
"#;

const RHAI: &str = r#"
fn all(a) {
  keel::fs::mkdir("./data/sub");
  keel::fs::write("./data/sub/f.txt", "one");
  keel::fs::append("./data/sub/f.txt", "+two");
  let text = keel::fs::read("./data/sub/f.txt");
  let listed = keel::fs::list("./data/sub");
  let existed = keel::fs::exists("./data/sub/f.txt");
  let removed = keel::fs::remove("./data/sub/f.txt");
  let gone = !keel::fs::exists("./data/sub/f.txt");
  keel::kv::set("k", #{ n: 1, list: [1, 2, 3] });
  let kv = keel::kv::get("k");
  let keys = keel::kv::list();
  let deleted = keel::kv::delete("k");
  let missing = keel::kv::get("k");
  let res = keel::http::request(#{ method: "GET", url: a.url + "/text" });
  let js = keel::http::get_json(a.url + "/json");
  let run = keel::exec::run(["echo", "hi there"]);
  let home = keel::env::get("KEEL_TEST_VAR");
  let enc = keel::json::encode(#{ a: 1 });
  let dec = keel::json::decode("{\"b\": [true, null, 2]}");
  let t = keel::time::now();
  keel::time::sleep(1);
  keel::log::info("all done", #{ n: 1 });
  let echoed = keel::tools::call("rhai.echo", #{ x: 1 });
  #{
    text: text, names: listed[0].name, existed: existed, removed: removed, gone: gone,
    kv: kv, keys: keys, deleted: deleted, missing: missing == (),
    status: res.status, body: res.body, json_ok: js.ok,
    out: run.stdout, code: run.status, env: home,
    enc: enc, dec: dec, time_ok: t > 1700000000.0, echoed: echoed,
  }
}
fn denied(a) {
  switch a.what {
    "fs" => keel::fs::read("./other/x.txt"),
    "fswrite" => keel::fs::write("./data/x.txt", "no"),
    "kv" => keel::kv::get("x"),
    "http" => keel::http::request(#{ url: a.url + "/text" }),
    "exec" => keel::exec::run(["ls"]),
    "env" => keel::env::get("PATH"),
    "tools" => keel::tools::call("lua.echo", #{}),
    "catch" => catch_it(),
    _ => throw "unknown case"
  }
}
fn catch_it() {
  try { keel::fs::read("./other/x.txt"); return #{ ok: true }; }
  catch (e) { return #{ ok: false, err: e }; }
}
fn echo(a) { a }
fn shapes(a) { #{} }
fn probe(a) {
  try { bad_call(a); return #{ ok: true }; } catch (e) { return #{ ok: false, err: `${e}` }; }
}
// One badly formed call per case (see `BAD_CALLS`).
fn bad_call(a) {
  switch a.what {
    "exec_unknown" => keel::exec::run(["echo", "x"], #{ timeot_ms: 5 }),
    "exec_type" => keel::exec::run(["echo", "x"], #{ cwd: 5 }),
    "exec_opts_type" => keel::exec::run(["echo", "x"], "fast"),
    "exec_missing" => keel::exec::run(()),
    "http_unknown" => keel::http::get(a.url + "/text", #{ header: #{ a: "b" } }),
    "http_request_unknown" => keel::http::request(#{ url: a.url + "/text", methd: "POST" }),
    "http_type" => keel::http::get_json(a.url + "/json", #{ timeout_ms: "5" }),
    "http_header_type" => keel::http::post_json(a.url + "/json", #{}, #{ headers: #{ x: true } }),
    "http_missing" => keel::http::request(#{ method: "GET" }),
    "llm_unknown" => keel::llm::complete("q", #{ max_token: 5 }),
    "llm_type" => keel::llm::complete("q", #{ system: 1 }),
    "fs_type" => keel::fs::write("./data/typed.txt", 5),
    "fs_missing" => keel::fs::read(()),
    "kv_type" => keel::kv::get(["k"]),
    "time_type" => keel::time::sleep("10"),
    "json_type" => keel::json::encode(#{}, "yes"),
    "tools_type" => keel::tools::call(7),
    _ => throw "unknown case"
  }
}
"#;

fn caps(port: u16, tools: &str) -> String {
    format!(
        "\"fs.read\" = [\"./data\"]\n\"fs.write\" = [\"./data\"]\n\"kv\" = true\n\"net.http\" = [\"127.0.0.1:{port}\"]\n\"exec\" = [\"echo\"]\n\"env\" = [\"KEEL_TEST_VAR\"]\n\"tools.call\" = [\"{tools}\"]\n"
    )
}

fn setup(server: &TestServer) -> Ws {
    setup_port(server.port)
}

fn setup_port(port: u16) -> Ws {
    Ws::new()
        .skill("lua", &manifest("lua", "main.luau", &caps(port, "lua.echo")), &[("main.luau", LUAU)])
        .skill("rhai", &manifest("rhai", "main.rhai", &caps(port, "rhai.echo")), &[("main.rhai", RHAI)])
        .file("other/x.txt", "secret")
        .policy(&format!(
            "[policy]\ndefault = \"deny\"\nallow = [\"fs.read:./data\", \"fs.write:./data\", \"kv\", \"net.http:127.0.0.1:{port}\", \"exec:echo\", \"env:KEEL_TEST_VAR\", \"tools.call:*\"]\n"
        ))
}

fn call(
    k: &keel::Kernel,
    rt: &tokio::runtime::Runtime,
    tool: &str,
    args: Value,
) -> Result<Value, String> {
    rt.block_on(k.call_tool(tool, args))
        .map_err(|e| e.to_string())
}

#[test]
fn every_namespace_works_from_both_languages() {
    let server = TestServer::start();
    let ws = setup(&server);
    let rt = runtime();
    let mut env = BTreeMap::new();
    env.insert("KEEL_TEST_VAR".to_string(), "visible".to_string());
    env.insert(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_default(),
    );
    let k = ws.kernel_with_env(&rt, env);
    for skill in ["lua", "rhai"] {
        let r = call(
            &k,
            &rt,
            &format!("{skill}.all"),
            json!({"url": server.url("")}),
        )
        .unwrap_or_else(|e| panic!("{skill}: {e}"));
        assert_eq!(r["text"], "one+two", "{skill}");
        assert_eq!(r["names"], "f.txt", "{skill}");
        assert_eq!(
            (
                r["existed"].clone(),
                r["removed"].clone(),
                r["gone"].clone()
            ),
            (json!(true), json!(true), json!(true)),
            "{skill}"
        );
        assert_eq!(r["kv"], json!({"n": 1, "list": [1, 2, 3]}), "{skill}");
        assert_eq!(r["keys"], json!(["k"]), "{skill}");
        assert_eq!(
            (r["deleted"].clone(), r["missing"].clone()),
            (json!(true), json!(true)),
            "{skill}"
        );
        assert_eq!(
            (r["status"].clone(), r["body"].clone()),
            (json!(200), json!("hello")),
            "{skill}"
        );
        assert_eq!(r["json_ok"], true, "{skill}");
        assert_eq!(
            (r["out"].clone(), r["code"].clone()),
            (json!("hi there\n"), json!(0)),
            "{skill}"
        );
        assert_eq!(r["env"], "visible", "{skill}");
        assert_eq!(r["enc"], "{\"a\":1}", "{skill}");
        assert_eq!(r["dec"]["b"][0], true, "{skill}");
        assert_eq!(r["time_ok"], true, "{skill}");
        assert_eq!(r["echoed"], json!({"x": 1}), "{skill}");
    }
}

#[test]
fn every_namespace_is_refused_without_its_capability() {
    let server = TestServer::start();
    let other = TestServer::start();
    let ws = setup(&server);
    let rt = runtime();
    let k = ws.kernel(&rt);
    // fswrite: declared, but the policy only allows fs.write under ./data —
    // use a skill-level deny to show the policy side.
    let cases = [
        (
            "fs",
            vec!["did not declare `fs.read`", "other/x.txt", "[capabilities]"],
        ),
        ("kv", vec![]),
        ("http", vec!["127.0.0.1", "net.http"]),
        ("exec", vec!["did not declare `exec` for `ls`"]),
        ("env", vec!["did not declare `env` for `PATH`"]),
    ];
    for skill in ["lua", "rhai"] {
        for (what, fragments) in &cases {
            let url = if *what == "http" {
                other.url("")
            } else {
                server.url("")
            };
            let r = call(
                &k,
                &rt,
                &format!("{skill}.denied"),
                json!({"what": what, "url": url}),
            );
            if *what == "kv" {
                // kv is declared and allowed: it works (the control case).
                assert_eq!(r, Ok(Value::Null), "{skill} kv");
                continue;
            }
            let e = r.expect_err(&format!("{skill}: {what} must be refused"));
            for f in fragments {
                assert!(e.contains(f), "{skill} {what}: {e} lacks {f}");
            }
        }
        // tools.call for a tool the skill did not declare.
        let e = call(
            &k,
            &rt,
            &format!("{skill}.denied"),
            json!({"what": "tools"}),
        )
        .expect_err("tools");
        assert!(e.contains("did not declare `tools.call`"), "{skill}: {e}");
        // A denial is an ordinary, catchable script error.
        let r = call(
            &k,
            &rt,
            &format!("{skill}.denied"),
            json!({"what": "catch"}),
        )
        .expect("catch");
        assert_eq!(r["ok"], false, "{skill}");
        assert!(
            r["err"].as_str().unwrap_or("").contains("fs.read"),
            "{skill}: {r}"
        );
    }
    // Policy side: declared but denied.
    let ws2 = ws.policy(&format!(
        "[policy]\ndefault = \"deny\"\nallow = [\"fs.read:./data\", \"fs.write:./data\", \"net.http:127.0.0.1:{}\"]\ndeny = [\"kv\"]\n",
        server.port
    ));
    let k2 = ws2.kernel(&rt);
    for skill in ["lua", "rhai"] {
        let e = call(&k2, &rt, &format!("{skill}.denied"), json!({"what": "kv"}))
            .expect_err("kv denied");
        assert!(
            e.contains("`kv`") && e.contains("policy deny `kv`"),
            "{skill}: {e}"
        );
    }
}

#[test]
fn values_round_trip_between_json_and_both_languages() {
    let server = TestServer::start();
    let ws = setup(&server);
    let rt = runtime();
    let k = ws.kernel(&rt);
    let v = json!({"s": "x", "i": 3, "f": 1.5, "b": true, "arr": [1, "two", false], "obj": {"nested": [1]}});
    for skill in ["lua", "rhai"] {
        let r = call(&k, &rt, &format!("{skill}.echo"), v.clone()).expect("echo");
        assert_eq!(r, v, "{skill}");
    }
}

/// Answers every approval request with a fixed answer, and counts them.
struct FixedApprover {
    answer: bool,
    asked: std::sync::Mutex<Vec<String>>,
}

impl keel::kernel::gate::Approver for FixedApprover {
    fn approve(
        &self,
        request: &keel::kernel::gate::ApprovalRequest,
    ) -> keel::kernel::gate::AskOutcome {
        self.asked.lock().unwrap().push(format!(
            "{} {} {} {}",
            request.skill, request.tool, request.capability, request.target
        ));
        if self.answer {
            keel::kernel::gate::AskOutcome::Approved
        } else {
            keel::kernel::gate::AskOutcome::Denied
        }
    }
}

#[test]
fn ask_goes_to_an_attached_approver() {
    let server = TestServer::start();
    let ws = setup(&server)
        .policy("[policy]\ndefault = \"ask\"\nallow = [\"fs.read:./data\", \"fs.write:./data\"]\n");
    let rt = runtime();
    let k = ws.kernel(&rt);
    for answer in [true, false] {
        let approver = std::sync::Arc::new(FixedApprover {
            answer,
            asked: Default::default(),
        });
        k.gate().set_approver(Some(approver.clone()));
        let r = call(&k, &rt, "lua.denied", json!({"what": "kv"}));
        assert_eq!(
            approver.asked.lock().unwrap().as_slice(),
            ["lua lua.denied kv "],
            "the request names skill, tool and capability"
        );
        if answer {
            assert_eq!(r, Ok(Value::Null));
        } else {
            let e = r.expect_err("refused");
            assert!(e.contains("the request was denied"), "{e}");
        }
    }
    let log: Vec<String> = k
        .store()
        .audit_log(10)
        .unwrap()
        .into_iter()
        .map(|r| r.decision)
        .collect();
    assert_eq!(
        &log[..2],
        ["ask:denied", "ask:approved"],
        "both answers are audited with how they ended"
    );
}

/// Badly formed calls, each in both languages: (case, the function's name,
/// what the message must say after it). Luau-only cases are marked.
const BAD_CALLS: &[(&str, &str, &str)] = &[
    (
        "exec_unknown",
        "exec.run",
        "opts: unknown field `timeot_ms` (did you mean `timeout_ms`?), expected one of `cwd`, `stdin`, `timeout_ms`",
    ),
    (
        "exec_inline_unknown",
        "exec.run",
        "argv: unknown field `stdn` (did you mean `stdin`?)",
    ),
    (
        "exec_type",
        "exec.run",
        "`opts.cwd` must be a string, got number 5",
    ),
    (
        "exec_opts_type",
        "exec.run",
        "`opts` must be a table of options, got string",
    ),
    (
        "exec_missing",
        "exec.run",
        "argv: expected a list of strings",
    ),
    (
        "http_unknown",
        "http.get",
        "opts: unknown field `header` (did you mean `headers`?), expected `headers` or `timeout_ms`",
    ),
    (
        "http_request_unknown",
        "http.request",
        "opts: unknown field `methd` (did you mean `method`?)",
    ),
    (
        "http_type",
        "http.get_json",
        "`opts.timeout_ms` must be a positive number of milliseconds, got string",
    ),
    (
        "http_header_type",
        "http.post_json",
        "opts.headers: the value of `x` must be a string, got boolean",
    ),
    ("http_missing", "http.request", "`opts.url` is required"),
    (
        "llm_unknown",
        "llm.complete",
        "options: unknown field `max_token` (did you mean `max_tokens`?), expected one of `system`, `max_tokens`, `temperature`",
    ),
    (
        "llm_type",
        "llm.complete",
        "`options.system` must be a string, got number 1",
    ),
    (
        "fs_type",
        "fs.write",
        "`content` must be a string, got number 5",
    ),
    ("fs_missing", "fs.read", "`path` must be a string, got nil"),
    ("kv_type", "kv.get", "`key` must be a string, got list"),
    (
        "time_type",
        "time.sleep",
        "`ms` must be a number, got string",
    ),
    (
        "json_type",
        "json.encode",
        "`pretty` must be a boolean, got string",
    ),
    (
        "tools_type",
        "tools.call",
        "`name` must be a string, got number 7",
    ),
];

/// Every namespace's arguments are typed: an unknown option, a wrong type
/// or a missing argument is a catchable error naming the function, the
/// parameter and what was expected, and nothing happens — no program runs,
/// no request reaches the server (a listener that must stay without a
/// connection), no file is written.
#[test]
fn bad_arguments_are_refused_before_any_effect_in_both_languages() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let ws = setup_port(port);
    let rt = runtime();
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_default(),
    );
    let k = ws.kernel_with_env(&rt, env);
    let url = format!("http://127.0.0.1:{port}");
    for skill in ["lua", "rhai"] {
        for (what, function, expected) in BAD_CALLS {
            if skill == "rhai" && *what == "exec_inline_unknown" {
                // Rhai has no table that is both a list and a map.
                continue;
            }
            let r = call(
                &k,
                &rt,
                &format!("{skill}.probe"),
                json!({"what": what, "url": url}),
            )
            .unwrap_or_else(|e| panic!("{skill} {what}: the error was not catchable: {e}"));
            assert_eq!(r["ok"], false, "{skill} {what}: the call succeeded");
            let err = r["err"].as_str().unwrap_or_default();
            let name = match skill {
                "lua" => format!("keel.{function}: "),
                _ => format!("keel::{}: ", function.replace('.', "::")),
            };
            assert!(
                err.contains(&format!("{name}{expected}")),
                "{skill} {what}: {err:?} should say {name}{expected}"
            );
        }
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a badly formed http call connected to the server"
    );
    assert!(
        !ws.root.join("data/typed.txt").exists(),
        "a badly formed fs.write created its file"
    );
}

/// A Luau table with list items and named keys reaches the host whole (as
/// keys "1", "2", … and the names): nothing in it is silently dropped. Other
/// shapes are as before: `{}` is an object, a list a list.
#[test]
fn mixed_luau_tables_reach_the_host_whole() {
    let server = TestServer::start();
    let ws = setup(&server);
    let rt = runtime();
    let k = ws.kernel(&rt);
    let r = call(&k, &rt, "lua.shapes", json!({})).expect("shapes");
    assert_eq!(r["empty"], "{}");
    assert_eq!(r["list"], "[1,2]");
    assert_eq!(r["decoded"], "[]");
    let mixed: Value = serde_json::from_str(r["mixed"].as_str().unwrap()).unwrap();
    assert_eq!(
        mixed,
        json!({ "1": "a", "2": "b", "k": { "1": 1, "n": 2 } })
    );
    let cycle = r["cycle"].as_str().unwrap();
    assert!(cycle.contains("nest too deeply"), "{cycle}");
}
