//! `keel.env`: environment variables the skill was granted.
//!
//! Values come from the environment the kernel was given at start, never
//! from the live process. The audit log records the variable's name only.

use serde::Deserialize;
use serde_json::Value;

use super::{Args, CallCtx, HostError, HostFn, p};
use crate::capability::{CapabilityKind, Target};

pub const FUNCTIONS: &[HostFn] = &[HostFn {
    namespace: "env",
    name: "get",
    params: &[p("name", "string")],
    returns: "string?",
    capability: Some(CapabilityKind::Env),
    doc: "Reads an environment variable; nil when it is not set.",
    luau_example: r#"local home = keel.env.get("HOME")"#,
    rhai_example: r#"let home = keel::env::get("HOME");"#,
    call: get,
}];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs<'a> {
    name: &'a str,
}

fn get(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let GetArgs { name } = args.parse()?;
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(HostError::BadArgument(format!(
            "env.get: {name:?} is not a variable name"
        )));
    }
    ctx.check(CapabilityKind::Env, Target::Name(name))?;
    Ok(ctx
        .kernel
        .env()
        .get(name)
        .map(|v| Value::String(v.clone()))
        .unwrap_or(Value::Null))
}
