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
"#;

fn caps(port: u16, tools: &str) -> String {
    format!(
        "\"fs.read\" = [\"./data\"]\n\"fs.write\" = [\"./data\"]\n\"kv\" = true\n\"net.http\" = [\"127.0.0.1:{port}\"]\n\"exec\" = [\"echo\"]\n\"env\" = [\"KEEL_TEST_VAR\"]\n\"tools.call\" = [\"{tools}\"]\n"
    )
}

fn setup(server: &TestServer) -> Ws {
    let port = server.port;
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
    fn approve(&self, request: &keel::kernel::gate::ApprovalRequest) -> bool {
        self.asked.lock().unwrap().push(format!(
            "{} {} {} {}",
            request.skill, request.tool, request.capability, request.target
        ));
        self.answer
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
            assert!(e.contains("the request was not approved"), "{e}");
        }
    }
    let log: Vec<String> = k
        .store()
        .audit_log(10)
        .unwrap()
        .into_iter()
        .map(|r| r.decision)
        .collect();
    assert_eq!(&log[..2], ["ask", "allow"], "both answers are audited");
}
