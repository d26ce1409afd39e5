//! Luau through mlua, sandboxed.
//!
//! A state is built with Luau's sandbox on (no `io`, no `os.execute`, no
//! bytecode loading, read-only globals and metatables), and with these doors
//! closed before the sandbox seals the globals:
//! - `require` is replaced by one that reaches only the skill's own files
//!   (`require("./util")`) and its declared dependencies (`require("text")`);
//!   mlua's own `require` would read any file relative to the working dir.
//! - `getfenv`/`setfenv`/`loadstring` are removed: no call can reach another
//!   module's environment or compile text at run time.
//! - `print` goes to the log (stdout belongs to the CLI's JSON output).
//! - `pcall`/`xpcall` are replaced by wrappers that re-raise sandbox kills,
//!   memory errors and host panics, so those cannot be swallowed.
//!
//! Every module gets its own environment table (reads fall through to the
//! sealed globals), holding its own `require` bound to its own skill, so a
//! dependency's code resolves *its* dependencies, not its caller's.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};

use mlua::{
    Error as LuaError, Function, Lua, LuaOptions, LuaSerdeExt, MultiValue, StdLib, Table,
    Value as LuaValue, VmState,
};
use serde_json::Value;

use super::{CallGuard, Instance, LimitKind, ScriptError, panic_message};
use crate::config::Limits;
use crate::host::{self, Args, CallCtx, HostError, HostFn};
use crate::skill::{Language, LoadedSkill};

/// A Luau engine state for one skill version.
pub struct LuaInstance {
    lua: Lua,
    module: Table,
    guard: Arc<CallGuard>,
    limits: Limits,
    broken: bool,
}

/// The error value an interrupt raises; carries which limit it was.
#[derive(Debug)]
struct LimitHit(LimitKind);

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sandbox limit reached: {:?}", self.0)
    }
}
impl std::error::Error for LimitHit {}

fn limit_error(kind: LimitKind) -> LuaError {
    LuaError::external(LimitHit(kind))
}

fn json_options() -> mlua::serde::ser::Options {
    mlua::serde::ser::Options::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
}

/// JSON → Lua. `null` becomes `nil`. Scalars skip serde (host calls
/// return them most often, and each serde pass takes the state's lock).
pub fn to_lua(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    match v {
        Value::Null => Ok(LuaValue::Nil),
        Value::Bool(b) => Ok(LuaValue::Boolean(*b)),
        Value::Number(n) => Ok(match n.as_i64() {
            Some(i) => LuaValue::Integer(i),
            None => LuaValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        }),
        _ => lua.to_value_with(v, json_options()),
    }
}

/// How deep mixed tables may nest inside each other (a table holding
/// itself would otherwise recurse forever).
const MAX_MIXED_DEPTH: usize = 32;

/// Whether a table has list items *and* other keys (`{ "ls", cwd = "x" }`).
/// mlua reads such a table as its list part only and drops the rest without
/// a word, so an option written there would be silently ignored. A list
/// keel made (`json.decode("[]")`, with the array metatable) is a list.
fn is_mixed(t: &mlua::Table) -> bool {
    let len = t.raw_len();
    len > 0 && t.metatable().is_none() && t.pairs::<LuaValue, LuaValue>().count() > len
}

/// A mixed table as a map with keys "1", "2", … and its named keys.
fn mixed_table(lua: &Lua, t: mlua::Table, depth: usize) -> Result<Value, String> {
    if depth >= MAX_MIXED_DEPTH {
        return Err("tables nest too deeply (or a table holds itself)".into());
    }
    let mut out = serde_json::Map::new();
    for pair in t.pairs::<LuaValue, LuaValue>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let key = match k {
            LuaValue::Integer(i) => i.to_string(),
            LuaValue::Number(n) if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 => {
                (n as i64).to_string()
            }
            LuaValue::Number(n) => n.to_string(),
            LuaValue::String(s) => s
                .to_str()
                .map_err(|_| "a table key is not valid UTF-8".to_string())?
                .to_string(),
            other => {
                return Err(format!(
                    "a table key must be a string or a number, got {}",
                    other.type_name()
                ));
            }
        };
        let value = match v {
            LuaValue::Table(inner) if is_mixed(&inner) => mixed_table(lua, inner, depth + 1)?,
            other => from_lua(lua, other)?,
        };
        out.insert(key, value);
    }
    Ok(Value::Object(out))
}

/// Lua → JSON, with a message that says what could not be converted.
pub fn from_lua(lua: &Lua, v: LuaValue) -> Result<Value, String> {
    match v {
        LuaValue::Nil => Ok(Value::Null),
        LuaValue::Boolean(b) => Ok(Value::Bool(b)),
        LuaValue::Integer(i) => Ok(Value::from(i)),
        // Luau numbers are doubles; whole ones become JSON integers, as
        // mlua's own conversion does.
        LuaValue::Number(n) if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 => {
            Ok(Value::from(n as i64))
        }
        LuaValue::String(s) => match s.to_str() {
            Ok(text) => Ok(Value::String(text.to_string())),
            Err(_) => Err("string is not valid UTF-8".into()),
        },
        LuaValue::Table(t) if is_mixed(&t) => mixed_table(lua, t, 0),
        other => lua.from_value::<Value>(other).map_err(|e| e.to_string()),
    }
}

fn root_cause(e: &LuaError) -> &LuaError {
    match e {
        LuaError::CallbackError { cause, .. } => root_cause(cause),
        LuaError::WithContext { cause, .. } => root_cause(cause),
        other => other,
    }
}

fn is_memory_error(e: &LuaError) -> bool {
    matches!(root_cause(e), LuaError::MemoryError(_))
}

/// The first `file:line` in a Luau traceback that points into a script.
fn location_from_traceback(tb: &str) -> Option<String> {
    tb.lines().find_map(|l| {
        let l = l.trim();
        if l.starts_with('[') || l.is_empty() || l.starts_with("stack traceback") {
            return None;
        }
        let (file, rest) = l.split_once(':')?;
        let line: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        (!line.is_empty()).then(|| format!("{file}:{line}"))
    })
}

/// A script-facing message: `file:line: message`, without the traceback.
pub fn error_message(e: &LuaError) -> String {
    match e {
        LuaError::CallbackError { traceback, cause } => {
            let msg = error_message(cause);
            match location_from_traceback(traceback) {
                // Errors raised by `error()` already carry their position.
                Some(loc) if !msg.starts_with(&loc) => format!("{loc}: {msg}"),
                _ => msg,
            }
        }
        // Lua appends a traceback to runtime errors; the first line is the
        // message (with its `file:line:`).
        LuaError::RuntimeError(s) => match s.find("\nstack traceback:") {
            Some(i) => s[..i].to_string(),
            None => s.clone(),
        },
        LuaError::SyntaxError { message, .. } => message.clone(),
        LuaError::MemoryError(_) => "not enough memory".into(),
        LuaError::WithContext { context, cause } => format!("{context}: {}", error_message(cause)),
        LuaError::ExternalError(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

impl LuaInstance {
    pub fn new(skill: &Arc<LoadedSkill>) -> Result<Self, ScriptError> {
        let limits = skill.limits;
        let load_err = |e: LuaError| ScriptError::Load {
            message: error_message(&e),
        };
        let lua = Lua::new_with(StdLib::ALL_SAFE, LuaOptions::default()).map_err(load_err)?;
        let guard = Arc::new(CallGuard::new(limits.memory_bytes));
        install_sandbox(&lua, &guard, &limits).map_err(load_err)?;
        lua.set_memory_limit(limits.memory_bytes)
            .map_err(load_err)?;

        // The load phase runs under the same limits as a call, with no
        // CallCtx: host functions refuse, so top-level code has no effects.
        guard.arm(
            std::time::Instant::now() + limits.timeout,
            limits.max_operations,
        );
        let entry = skill.entry_key();
        let loaded = catch_unwind(AssertUnwindSafe(|| load_module(&lua, skill, &entry)));
        let module = match loaded {
            Ok(Ok(LuaValue::Table(t))) => t,
            Ok(Ok(other)) => {
                return Err(ScriptError::Load {
                    message: format!(
                        "{}: the entry script must return a table of tool functions (`local M = {{}} ... return M`), but it returned {}",
                        skill.source.display_path(&entry),
                        other.type_name()
                    ),
                });
            }
            Ok(Err(e)) => {
                if let Some(kind) = guard.killed() {
                    return Err(ScriptError::Limit {
                        kind,
                        message: format!("while loading: {}", kind.describe(&limits)),
                    });
                }
                return Err(classify_load_error(&e));
            }
            Err(p) => {
                return Err(ScriptError::Load {
                    message: format!("panic while loading: {}", panic_message(&*p)),
                });
            }
        };
        for t in &skill.manifest.tools {
            match module.raw_get::<LuaValue>(t.name.as_str()) {
                Ok(LuaValue::Function(_)) => {}
                _ => {
                    return Err(ScriptError::Load {
                        message: format!(
                            "{}: tool `{}` is declared in the manifest, but the module has no function `{}` (add `function M.{}(args) ... end`)",
                            skill.source.display_path(&entry),
                            t.name,
                            t.name,
                            t.name
                        ),
                    });
                }
            }
        }
        Ok(Self {
            lua,
            module,
            guard,
            limits,
            broken: false,
        })
    }
}

fn classify_load_error(e: &LuaError) -> ScriptError {
    match root_cause(e) {
        LuaError::SyntaxError { message, .. } => ScriptError::Compile {
            message: message.clone(),
        },
        _ => ScriptError::Load {
            message: error_message(e),
        },
    }
}

impl Instance for LuaInstance {
    fn call(&mut self, tool: &str, args: Value, ctx: &CallCtx) -> Result<Value, ScriptError> {
        self.guard.enter(ctx, self.limits.max_operations);
        let result = catch_unwind(AssertUnwindSafe(|| -> Result<Value, ScriptError> {
            let f: Function = self
                .module
                .raw_get(tool)
                .map_err(|e| ScriptError::Runtime {
                    message: error_message(&e),
                })?;
            let argv = to_lua(&self.lua, &args).map_err(|e| ScriptError::Runtime {
                message: error_message(&e),
            })?;
            let out = f.call::<LuaValue>(argv).map_err(|e| {
                if is_memory_error(&e) {
                    self.guard.kill(LimitKind::Memory);
                }
                ScriptError::Runtime {
                    message: error_message(&e),
                }
            })?;
            from_lua(&self.lua, out).map_err(|e| ScriptError::Result {
                message: format!("the tool's result cannot be turned into JSON: {e}"),
            })
        }));
        self.guard.leave();
        if let Some(kind) = self.guard.killed() {
            self.broken = true;
            return Err(ScriptError::Limit {
                kind,
                message: kind.describe(&self.limits),
            });
        }
        match result {
            Ok(r) => r,
            Err(p) => {
                self.broken = true;
                Err(ScriptError::Limit {
                    kind: LimitKind::HostPanic,
                    message: format!("engine panicked: {}", panic_message(&*p)),
                })
            }
        }
    }

    fn memory_used(&self) -> usize {
        self.lua.used_memory()
    }

    fn reusable(&self) -> bool {
        !self.broken
    }
}

/// Closes the doors, installs `keel`, and seals the globals.
fn install_sandbox(lua: &Lua, guard: &Arc<CallGuard>, limits: &Limits) -> mlua::Result<()> {
    let g = guard.clone();
    let max_depth = limits.max_call_depth;
    lua.set_interrupt(move |lua| {
        if let Err(k) = g.tick() {
            return Err(limit_error(k));
        }
        // Depth is checked at the clock's cadence: a runaway recursion
        // overshoots by at most that many frames before it is stopped.
        if g.clock_due() && lua.inspect_stack(max_depth, |_| ()).is_some() {
            g.kill(LimitKind::CallDepth);
            return Err(limit_error(LimitKind::CallDepth));
        }
        Ok(VmState::Continue)
    });

    let globals = lua.globals();
    for name in [
        "require",
        "getfenv",
        "setfenv",
        "loadstring",
        "load",
        "dofile",
        "loadfile",
    ] {
        globals.raw_set(name, LuaValue::Nil)?;
    }
    let g = guard.clone();
    globals.raw_set(
        "print",
        lua.create_function(move |_, args: MultiValue| {
            let parts: Vec<String> = args
                .iter()
                .map(|v| v.to_string().unwrap_or_else(|_| v.type_name().to_string()))
                .collect();
            let skill = g
                .context()
                .as_ref()
                .map(|c| c.skill.name.clone())
                .unwrap_or_default();
            tracing::info!(skill = %skill, "{}", parts.join("\t"));
            Ok(())
        })?,
    )?;

    let g = guard.clone();
    globals.raw_set(
        "pcall",
        lua.create_function(move |lua, (f, args): (LuaValue, MultiValue)| {
            protected_call(lua, &g, f, args, None)
        })?,
    )?;
    let g = guard.clone();
    globals.raw_set(
        "xpcall",
        lua.create_function(
            move |lua, (f, handler, args): (LuaValue, Function, MultiValue)| {
                protected_call(lua, &g, f, args, Some(handler))
            },
        )?,
    )?;
    // `coroutine.resume` catches errors like `pcall` does; same treatment.
    let g = guard.clone();
    let coroutine: Table = globals.raw_get("coroutine")?;
    coroutine.raw_set(
        "resume",
        lua.create_function(move |lua, (co, args): (mlua::Thread, MultiValue)| {
            match co.resume::<MultiValue>(args) {
                Ok(mut rets) => {
                    rets.push_front(LuaValue::Boolean(true));
                    Ok(rets)
                }
                Err(e) => {
                    if is_memory_error(&e) {
                        g.kill(LimitKind::Memory);
                    }
                    if let Some(kind) = g.killed() {
                        return Err(limit_error(kind));
                    }
                    let msg = LuaValue::String(lua.create_string(error_message(&e))?);
                    Ok(MultiValue::from_iter([LuaValue::Boolean(false), msg]))
                }
            }
        })?,
    )?;

    let keel = lua.create_table()?;
    for (ns, fns) in host::namespaces() {
        let t = lua.create_table()?;
        for f in fns {
            t.raw_set(f.name, bind(lua, guard, f)?)?;
        }
        keel.raw_set(ns, t)?;
    }
    globals.raw_set("keel", keel)?;
    lua.sandbox(true)
}

/// `pcall`/`xpcall` that let sandbox kills through.
fn protected_call(
    lua: &Lua,
    guard: &CallGuard,
    f: LuaValue,
    args: MultiValue,
    handler: Option<Function>,
) -> mlua::Result<MultiValue> {
    let result = match f {
        LuaValue::Function(func) => func.call::<MultiValue>(args),
        other => Err(LuaError::RuntimeError(format!(
            "attempt to call a {} value",
            other.type_name()
        ))),
    };
    match result {
        Ok(mut rets) => {
            rets.push_front(LuaValue::Boolean(true));
            Ok(rets)
        }
        Err(e) => {
            if is_memory_error(&e) {
                guard.kill(LimitKind::Memory);
            }
            if let Some(kind) = guard.killed() {
                return Err(limit_error(kind));
            }
            let msg = LuaValue::String(lua.create_string(error_message(&e))?);
            let value = match handler {
                Some(h) => match h.call::<LuaValue>(msg) {
                    Ok(v) => v,
                    Err(e2) => {
                        if let Some(kind) = guard.killed() {
                            return Err(limit_error(kind));
                        }
                        LuaValue::String(lua.create_string(error_message(&e2))?)
                    }
                },
                None => msg,
            };
            Ok(MultiValue::from_iter([LuaValue::Boolean(false), value]))
        }
    }
}

/// Binds one host function: convert arguments, find the call's context, call,
/// convert the result. Panics and deadline expiry become sandbox kills.
fn bind(lua: &Lua, guard: &Arc<CallGuard>, f: &'static HostFn) -> mlua::Result<Function> {
    let g = guard.clone();
    lua.create_function(move |lua, args: MultiValue| {
        // Built only on error paths: the fast path allocates nothing.
        let full = || format!("keel.{}.{}", f.namespace, f.name);
        if args.len() < f.min_args() || args.len() > f.params.len() {
            let sig: Vec<String> = f
                .params
                .iter()
                .map(|p| format!("{}{}: {}", p.name, if p.optional { "?" } else { "" }, p.ty))
                .collect();
            return Err(LuaError::RuntimeError(format!(
                "{} takes ({}) but got {} argument(s)",
                full(),
                sig.join(", "),
                args.len()
            )));
        }
        let mut values = Vec::with_capacity(args.len());
        for (i, v) in args.into_iter().enumerate() {
            values.push(from_lua(lua, v).map_err(|e| {
                LuaError::RuntimeError(format!("{}: argument {} cannot be passed: {e}", full(), i + 1))
            })?);
        }
        let held = g.context();
        let Some(ctx) = held.as_ref() else {
            return Err(LuaError::RuntimeError(format!(
                "{} is not available while the skill loads; call it from a tool function",
                full()
            )));
        };
        let out = catch_unwind(AssertUnwindSafe(|| (f.call)(ctx, Args::new(f.params, values))));
        // A host function that gave up waiting says `Deadline` for both
        // reasons; the call's context knows which it was.
        let stop = if ctx.cancelled() {
            LimitKind::Cancelled
        } else {
            LimitKind::Deadline
        };
        drop(held);
        match out {
            Ok(Ok(v)) => to_lua(lua, &v),
            Ok(Err(HostError::Deadline)) => {
                g.kill(stop);
                Err(limit_error(stop))
            }
            Ok(Err(e)) => Err(LuaError::RuntimeError(format!("{}: {e}", full()))),
            Err(p) => {
                tracing::error!(function = %full(), panic = %panic_message(&*p), "host function panicked");
                g.kill(LimitKind::HostPanic);
                Err(limit_error(LimitKind::HostPanic))
            }
        }
    })
}

const LOADED_KEY: &str = "keel.loaded";

/// What a script file that is (or looks like) precompiled bytecode gets.
const BYTECODE_REFUSED: &str = "this file is precompiled bytecode (it starts with a control byte), not Luau source; keel loads Luau source text only, because Luau does not verify bytecode — put the source file here instead";

/// Whether `src` would be taken for bytecode: Luau's loader treats a first
/// byte below `\t`, or a version byte up to 11 (`\t` is version 9)
/// followed by a types-version byte 1–3, as bytecode; `\x1b` is PUC Lua's
/// signature. No Luau source starts with a control character other than
/// white space, so refusing those costs nothing. The text-mode pin in
/// [`load_text`] is the gate; this check only makes the message clear.
fn looks_like_bytecode(src: &[u8]) -> bool {
    src.iter()
        .take(2)
        .any(|&b| b.is_ascii_control() && !b.is_ascii_whitespace())
}

/// A chunk of Luau *source*: the mode is pinned to text, so the loader
/// refuses bytecode whatever its first bytes are (mlua would otherwise
/// detect it and hand it to Luau's unverified bytecode loader). This is the
/// only way keel compiles script text.
fn load_text<'a>(lua: &'a Lua, src: &'a [u8], display: &str) -> mlua::chunk::Chunk<'a> {
    lua.load(src)
        .set_name(format!("@{display}"))
        .set_mode(mlua::chunk::ChunkMode::Text)
}

/// Loads (once per state) a module of `skill`: its file `rel`, in a fresh
/// environment whose `require` is bound to `skill`.
fn load_module(lua: &Lua, skill: &Arc<LoadedSkill>, rel: &str) -> mlua::Result<LuaValue> {
    let loaded: Table = match lua.named_registry_value::<LuaValue>(LOADED_KEY)? {
        LuaValue::Table(t) => t,
        _ => {
            let t = lua.create_table()?;
            lua.set_named_registry_value(LOADED_KEY, &t)?;
            t
        }
    };
    let key = format!("{}/{rel}", skill.id);
    match loaded.raw_get::<LuaValue>(key.as_str())? {
        LuaValue::Nil => {}
        LuaValue::Boolean(false) => {
            return Err(LuaError::RuntimeError(format!(
                "require cycle: `{rel}` of skill `{}` is still loading",
                skill.id
            )));
        }
        v => return Ok(v),
    }
    let Some(src) = skill.source.files.get(rel) else {
        return Err(LuaError::RuntimeError(format!(
            "skill `{}` has no file `{rel}`",
            skill.id
        )));
    };
    let display = skill.source.display_path(rel);
    if looks_like_bytecode(src.as_bytes()) {
        return Err(LuaError::SyntaxError {
            message: format!("{display}: {BYTECODE_REFUSED}"),
            incomplete_input: false,
        });
    }
    loaded.raw_set(key.as_str(), false)?;
    let env = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.raw_set("__index", lua.globals())?;
    env.set_metatable(Some(meta))?;
    env.raw_set("require", require_fn(lua, Arc::downgrade(skill))?)?;
    let value = load_text(lua, src.as_bytes(), &display)
        .set_environment(env)
        .call::<LuaValue>(());
    let value = match value {
        Ok(v) => v,
        Err(e) => {
            loaded.raw_set(key.as_str(), LuaValue::Nil)?;
            return Err(e);
        }
    };
    // A module that returns nothing is still loaded (as `true`).
    let stored = if value.is_nil() {
        LuaValue::Boolean(true)
    } else {
        value.clone()
    };
    loaded.raw_set(key.as_str(), stored.clone())?;
    Ok(stored)
}

/// `require` for one module's environment. It holds its skill *weakly*: the
/// engine state lives in the skill version's own pool, so a strong reference
/// here would keep every reloaded version alive forever (a reference cycle).
/// During a call the caller holds the version, so the upgrade succeeds.
fn require_fn(lua: &Lua, skill: Weak<LoadedSkill>) -> mlua::Result<Function> {
    lua.create_function(move |lua, name: String| {
        let skill = skill.upgrade().ok_or_else(|| {
            LuaError::RuntimeError(format!(
                "require(\"{name}\"): this version of the skill has been unloaded"
            ))
        })?;
        let (owner, rel) = skill
            .resolve_module(&name, Language::Luau)
            .map_err(|e| LuaError::RuntimeError(format!("require(\"{name}\"): {e}")))?;
        load_module(lua, &owner, &rel)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::kernel::Kernel;

    fn boom(_: &CallCtx, _: Args) -> Result<Value, HostError> {
        panic!("host bug")
    }

    static PANICS: HostFn = HostFn {
        namespace: "test",
        name: "boom",
        params: &[],
        returns: "nil",
        capability: None,
        doc: "panics",
        luau_example: "keel.test.boom()",
        rhai_example: "keel::test::boom()",
        call: boom,
    };

    #[test]
    fn real_luau_bytecode_is_refused_by_the_text_only_loader() {
        let lua = Lua::new();
        let bytecode = mlua::chunk::Compiler::new()
            .compile("return 41 + 1")
            .unwrap();
        // The bytes are real bytecode: an unpinned load runs them.
        assert_eq!(lua.load(&bytecode[..]).eval::<i64>().unwrap(), 42);
        assert!(looks_like_bytecode(&bytecode), "{:?}", &bytecode[..8]);
        let e = load_text(&lua, &bytecode, "x.luau")
            .into_function()
            .unwrap_err()
            .to_string();
        assert!(e.contains("binary chunk"), "{e}");
        // Source still loads.
        assert_eq!(
            load_text(&lua, b"return 41 + 1", "x.luau")
                .call::<i64>(())
                .unwrap(),
            42
        );
    }

    #[test]
    fn a_host_panic_is_the_calls_error_and_pcall_cannot_swallow_it() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kernel = Kernel::builder(Config::default_for(dir.path()))
            .in_memory()
            .runtime(rt.handle().clone())
            .build()
            .unwrap();
        let lua = Lua::new();
        let guard = Arc::new(CallGuard::default());
        let limits = Limits::default();
        install_sandbox(&lua, &guard, &limits).unwrap();
        let ctx = CallCtx {
            kernel: crate::host::CallKernel::new(kernel),
            skill: Arc::new(crate::skill::SkillInfo {
                name: "t".into(),
                version: semver::Version::new(1, 0, 0),
                origin: crate::skill::Origin::Builtin("t".into()),
                declared: vec![],
                pending: vec![],
            }),
            tool: "t.x".into(),
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(5),
            depth: 0,
            paused_ns: Default::default(),
            run: None,
        };
        guard.enter(&ctx, u64::MAX);
        // The sealed globals cannot take a new function; a chunk
        // environment can.
        let f = lua
            .load("local ok = pcall(keel_boom) return ok")
            .set_environment({
                let env = lua.create_table().unwrap();
                env.raw_set("pcall", lua.globals().get::<LuaValue>("pcall").unwrap())
                    .unwrap();
                env.raw_set("keel_boom", bind(&lua, &guard, &PANICS).unwrap())
                    .unwrap();
                env
            })
            .into_function()
            .unwrap();
        let r = f.call::<LuaValue>(());
        assert!(r.is_err(), "pcall swallowed a host panic: {r:?}");
        assert_eq!(guard.killed(), Some(LimitKind::HostPanic));
    }
}
