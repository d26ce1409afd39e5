//! Rhai, with its limits.
//!
//! Each state has its own `Engine` built with `Engine::new_raw()` (no file
//! module resolver, no `print` to stdout) plus the standard packages, the
//! `keel::…` host modules and a module resolver that reaches only the skill's
//! own files (`import "./util" as util;`) and its declared dependencies
//! (`import "text" as text;`). Operation, call-depth, string, array and map
//! limits are set from the skill's [`Limits`]; the wall-clock deadline and
//! sticky kills come from the [`CallGuard`] through `on_progress`, whose
//! termination `try`/`catch` cannot intercept.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, Weak};

use rhai::packages::{Package, StandardPackage};
use rhai::{
    AST, CallFnOptions, Dynamic, Engine, EvalAltResult, FuncRegistration, Module, ModuleResolver,
    NativeCallContext, Position, Scope, Shared,
};
use serde_json::Value;

use super::{CallGuard, Instance, LimitKind, ScriptError, panic_message};
use crate::config::Limits;
use crate::host::{self, Args, CallCtx, HostError, HostFn};
use crate::skill::{Language, LoadedSkill};

/// The name the loaded entry module is registered under.
const SKILL_MODULE: &str = "__skill";

/// A Rhai engine state for one skill version.
pub struct RhaiInstance {
    engine: Engine,
    /// Forwarders from tool names to the entry module's functions.
    ast: AST,
    scope: Scope<'static>,
    guard: Arc<CallGuard>,
    limits: Limits,
    broken: bool,
}

/// JSON → Rhai. `null` becomes `()`.
pub fn to_dynamic(v: &Value) -> Result<Dynamic, String> {
    rhai::serde::to_dynamic(v).map_err(|e| e.to_string())
}

/// Rhai → JSON.
pub fn from_dynamic(v: &Dynamic) -> Result<Value, String> {
    rhai::serde::from_dynamic::<Value>(v).map_err(|e| e.to_string())
}

fn source_name(skill: &LoadedSkill, rel: &str) -> String {
    skill.source.display_path(rel)
}

/// A script-facing message with `file:line:` in front when known: the
/// innermost error, in the innermost script that has a name.
fn error_message(e: &EvalAltResult) -> String {
    render_error(e, None)
}

fn render_error(e: &EvalAltResult, src: Option<&str>) -> String {
    match e {
        EvalAltResult::ErrorInFunctionCall(_, s, inner, _) => {
            render_error(inner, if s.is_empty() { src } else { Some(s) })
        }
        EvalAltResult::ErrorInModule(_, inner, _) => render_error(inner, src),
        other => {
            let msg = match other {
                EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
                _ => {
                    let s = other.to_string();
                    // Rhai appends " (line N, position M)"; keel puts it in front.
                    match s.rfind(" (line ") {
                        Some(i) => s[..i].to_string(),
                        None => s,
                    }
                }
            };
            match (other.position().line(), src) {
                (Some(line), Some(src)) => format!("{src}:{line}: {msg}"),
                (Some(line), None) => format!("line {line}: {msg}"),
                _ => msg,
            }
        }
    }
}

/// The sandbox limit an error stands for, by its variant (never by its
/// text: a script may `throw` any words it likes).
fn limit_of(e: &EvalAltResult) -> Option<LimitKind> {
    match e {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
        | EvalAltResult::ErrorInModule(_, inner, _) => limit_of(inner),
        EvalAltResult::ErrorTooManyOperations(_) => Some(LimitKind::Operations),
        EvalAltResult::ErrorStackOverflow(_) => Some(LimitKind::CallDepth),
        EvalAltResult::ErrorDataTooLarge(..) => Some(LimitKind::Memory),
        _ => None,
    }
}

/// Like [`error_message`], for errors in the script `src` itself.
fn with_source(src: &str, e: &EvalAltResult) -> String {
    let msg = render_error(e, Some(src));
    if msg.contains(src) {
        msg
    } else {
        format!("{src}: {msg}")
    }
}

impl RhaiInstance {
    pub fn new(skill: &Arc<LoadedSkill>) -> Result<Self, ScriptError> {
        let limits = skill.limits;
        let guard = Arc::new(CallGuard::new(limits.memory_bytes));
        let mut engine = build_engine(skill, &guard, &limits);
        let entry = skill.entry_key();
        let display = source_name(skill, &entry);
        let src = skill
            .source
            .files
            .get(&entry)
            .ok_or_else(|| ScriptError::Load {
                message: format!("{display}: entry script is missing"),
            })?;
        // Imports are resolved now and embedded in the AST, so tool
        // functions can use `text::upper` when called later on their own.
        let mut ast = engine
            .compile_into_self_contained(&Scope::new(), &**src)
            .map_err(|e| ScriptError::Compile {
                message: with_source(&display, &e),
            })?;
        ast.set_source(display.clone());
        for t in &skill.manifest.tools {
            if !ast
                .iter_functions()
                .any(|f| f.name == t.name && f.params.len() == 1)
            {
                return Err(ScriptError::Load {
                    message: format!(
                        "{display}: tool `{}` is declared in the manifest, but the script has no `fn {}(args)`",
                        t.name, t.name
                    ),
                });
            }
        }
        // Load phase: top-level statements (imports included) run once,
        // under the limits, with no CallCtx. Evaluating the script as a
        // module encapsulates its imports with its functions, so a tool
        // function still sees `text::upper` when it is called on its own.
        guard.arm(
            std::time::Instant::now() + limits.timeout,
            limits.max_operations,
        );
        let run = catch_unwind(AssertUnwindSafe(|| {
            Module::eval_ast_as_new(Scope::new(), &ast, &engine)
        }));
        let module = match run {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                if let Some(kind) = guard.killed() {
                    return Err(ScriptError::Limit {
                        kind,
                        message: format!("while loading: {}", kind.describe(&limits)),
                    });
                }
                return Err(ScriptError::Load {
                    message: with_source(&display, &e),
                });
            }
            Err(p) => {
                return Err(ScriptError::Load {
                    message: format!("panic while loading: {}", panic_message(&*p)),
                });
            }
        };
        engine.register_static_module(SKILL_MODULE, module.into());
        // One forwarding function per tool: `fn add(args) { __skill::add(args) }`.
        let dispatch: String = skill
            .manifest
            .tools
            .iter()
            .map(|t| format!("fn {0}(args) {{ {SKILL_MODULE}::{0}(args) }}\n", t.name))
            .collect();
        let dispatch = engine.compile(&dispatch).map_err(|e| ScriptError::Load {
            message: format!("{display}: {e}"),
        })?;
        Ok(Self {
            engine,
            ast: dispatch,
            scope: Scope::new(),
            guard,
            limits,
            broken: false,
        })
    }
}

impl Instance for RhaiInstance {
    fn call(&mut self, tool: &str, args: Value, ctx: &CallCtx) -> Result<Value, ScriptError> {
        self.guard.enter(ctx, self.limits.max_operations);
        let result = catch_unwind(AssertUnwindSafe(|| -> Result<Value, ScriptError> {
            let arg = to_dynamic(&args).map_err(|message| ScriptError::Runtime { message })?;
            let out = self
                .engine
                .call_fn_with_options::<Dynamic>(
                    CallFnOptions::new().eval_ast(false).rewind_scope(true),
                    &mut self.scope,
                    &self.ast,
                    tool,
                    (arg,),
                )
                .map_err(|e| match limit_of(&e) {
                    // Rhai's own limits end the call like the guard's do.
                    Some(kind) => ScriptError::Limit {
                        kind,
                        message: format!("{} ({})", kind.describe(&self.limits), error_message(&e)),
                    },
                    None => ScriptError::Runtime {
                        message: error_message(&e),
                    },
                })?;
            from_dynamic(&out).map_err(|e| ScriptError::Result {
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
        0
    }

    fn reusable(&self) -> bool {
        !self.broken
    }
}

fn build_engine(skill: &Arc<LoadedSkill>, guard: &Arc<CallGuard>, limits: &Limits) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(StandardPackage::new().as_shared_module());
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_depth);
    engine.set_max_expr_depths(256, 128);
    // Rhai has no allocator hook: the call's memory is counted by keel's
    // allocator (see `script::memory`) and checked in `on_progress`. The
    // data limits below bound what one operation can allocate between two
    // checks.
    let bytes = limits.memory_bytes;
    engine.set_max_string_size(bytes / 4);
    engine.set_max_array_size((bytes / 64).max(1024));
    engine.set_max_map_size((bytes / 128).max(1024));
    engine.set_max_modules(256);
    // `eval` compiles text at run time, as Luau's removed `loadstring` would.
    engine.disable_symbol("eval");
    // `call` is a reserved word in Rhai (function-pointer calls), but the
    // host API's contract is `keel::tools::call(...)`. After `::` it can
    // only be a path segment, so the tokenizer hands it on as a name there.
    let after_path = std::sync::atomic::AtomicBool::new(false);
    #[allow(deprecated)] // volatile, not deprecated (see its docs)
    engine.on_parse_token(move |token, _, _| {
        use std::sync::atomic::Ordering::Relaxed;
        let was_path = after_path.swap(matches!(token, rhai::Token::DoubleColon), Relaxed);
        match token {
            rhai::Token::Reserved(name) if was_path && name.as_str() == "call" => {
                rhai::Token::Identifier(name)
            }
            other => other,
        }
    });
    let g = guard.clone();
    engine.on_progress(move |_| match g.tick() {
        Ok(()) => None,
        Err(kind) => Some(Dynamic::from(format!("{kind:?}"))),
    });
    let log_guard = guard.clone();
    engine.on_print(move |s| {
        let skill = log_guard
            .context()
            .as_ref()
            .map(|c| c.skill.name.clone())
            .unwrap_or_default();
        tracing::info!(skill = %skill, "{s}");
    });
    engine.on_debug(|s, _, _| tracing::debug!("{s}"));

    let mut keel = Module::new();
    for (ns, fns) in host::namespaces() {
        let mut m = Module::new();
        for f in fns {
            register(&mut m, f, guard);
        }
        keel.set_sub_module(ns, m);
    }
    engine.register_static_module("keel", keel.into());
    engine.set_module_resolver(SkillResolver {
        root: Arc::downgrade(skill),
        cache: Mutex::new(HashMap::new()),
    });
    engine
}

/// Calls a host function from Rhai with the current call's context.
fn invoke(
    f: &'static HostFn,
    guard: &CallGuard,
    at: &NativeCallContext,
    args: &[Dynamic],
) -> Result<Dynamic, Box<EvalAltResult>> {
    // Built only on error paths: the fast path allocates nothing. Errors
    // name the script and line of the call, as Luau's do.
    let full = || {
        let pos = at.call_position();
        match (at.call_source(), pos.line()) {
            (Some(src), Some(line)) => format!("{src}:{line}: keel::{}::{}", f.namespace, f.name),
            _ => format!("keel::{}::{}", f.namespace, f.name),
        }
    };
    let rt = |msg: String| -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorRuntime(msg.into(), Position::NONE))
    };
    let mut values = Vec::with_capacity(args.len());
    for (i, a) in args.iter().enumerate() {
        values.push(from_dynamic(a).map_err(|e| {
            rt(format!(
                "{}: argument {} cannot be passed: {e}",
                full(),
                i + 1
            ))
        })?);
    }
    let held = guard.context();
    let Some(ctx) = held.as_ref() else {
        return Err(rt(format!(
            "{} is not available while the skill loads; call it from a tool function",
            full()
        )));
    };
    let out = catch_unwind(AssertUnwindSafe(|| {
        (f.call)(ctx, Args::new(f.params, values))
    }));
    // A host function that gave up waiting says `Deadline` for both
    // reasons; the call's context knows which it was.
    let stop = if ctx.cancelled() {
        LimitKind::Cancelled
    } else {
        LimitKind::Deadline
    };
    drop(held);
    match out {
        Ok(Ok(v)) => to_dynamic(&v).map_err(|e| rt(format!("{}: {e}", full()))),
        Ok(Err(HostError::Deadline)) => {
            guard.kill(stop);
            Err(Box::new(EvalAltResult::ErrorTerminated(
                Dynamic::from(format!("{stop:?}")),
                Position::NONE,
            )))
        }
        Ok(Err(e)) => Err(rt(format!("{}: {e}", full()))),
        Err(p) => {
            tracing::error!(function = %full(), panic = %panic_message(&*p), "host function panicked");
            guard.kill(LimitKind::HostPanic);
            Err(Box::new(EvalAltResult::ErrorTerminated(
                Dynamic::from("HostPanic"),
                Position::NONE,
            )))
        }
    }
}

/// Registers `f` once per arity it accepts.
fn register(m: &mut Module, f: &'static HostFn, guard: &Arc<CallGuard>) {
    for arity in f.min_args()..=f.params.len() {
        let g = guard.clone();
        let reg = FuncRegistration::new(f.name);
        match arity {
            0 => {
                reg.set_into_module(m, move |at: NativeCallContext| invoke(f, &g, &at, &[]));
            }
            1 => {
                reg.set_into_module(m, move |at: NativeCallContext, a: Dynamic| {
                    invoke(f, &g, &at, &[a])
                });
            }
            2 => {
                reg.set_into_module(m, move |at: NativeCallContext, a: Dynamic, b: Dynamic| {
                    invoke(f, &g, &at, &[a, b])
                });
            }
            3 => {
                reg.set_into_module(
                    m,
                    move |at: NativeCallContext, a: Dynamic, b: Dynamic, d: Dynamic| {
                        invoke(f, &g, &at, &[a, b, d])
                    },
                );
            }
            // No host function takes more than three parameters: more than
            // two take an options table (see CONVENTIONS.md).
            _ => {}
        }
    }
}

/// Resolves `import` to the skill's own files and its dependencies only.
///
/// It holds its skill *weakly*: the engine lives in the skill version's own
/// pool, so a strong reference would be a cycle that keeps every reloaded
/// version (engines, sources, ASTs) alive forever.
struct SkillResolver {
    root: Weak<LoadedSkill>,
    cache: Mutex<HashMap<String, Shared<Module>>>,
}

impl SkillResolver {
    /// The skill whose source is importing (by the AST's source name).
    fn importer(&self, source: Option<&str>) -> Option<Arc<LoadedSkill>> {
        let root = self.root.upgrade()?;
        let Some(src) = source else {
            return Some(root);
        };
        let found = root.closure().into_iter().find(|s| {
            s.source
                .files
                .keys()
                .any(|rel| s.source.display_path(rel) == src)
        });
        Some(found.unwrap_or(root))
    }
}

impl ModuleResolver for SkillResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let fail = |msg: String| {
            Box::new(EvalAltResult::ErrorInModule(
                path.to_string(),
                Box::new(EvalAltResult::ErrorRuntime(msg.into(), pos)),
                pos,
            ))
        };
        let Some(importer) = self.importer(source) else {
            return Err(fail(format!(
                "import \"{path}\": this version of the skill has been unloaded"
            )));
        };
        let (skill, rel) = importer
            .resolve_module(path, Language::Rhai)
            .map_err(|e| fail(format!("import \"{path}\": {e}")))?;
        let display = source_name(&skill, &rel);
        if let Some(m) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&display)
        {
            return Ok(m.clone());
        }
        let src = skill
            .source
            .files
            .get(&rel)
            .ok_or_else(|| fail(format!("{display}: missing")))?;
        let mut ast = engine
            .compile_into_self_contained(&Scope::new(), &**src)
            .map_err(|e| fail(with_source(&display, &e)))?;
        ast.set_source(display.clone());
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| fail(with_source(&display, &e)))?;
        let module: Shared<Module> = module.into();
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(display, module.clone());
        Ok(module)
    }
}
