//! `keel.kv`: a key-value namespace per skill, in SQLite.
//!
//! Values are any JSON-shaped value. The namespace is the skill's name, so
//! every version of a skill shares its data, and no skill can reach another's.
//! Each skill's data (keys plus values) is bounded by `limits.kv_mb`
//! (64 MiB by default); the store checks the bound and writes in one
//! transaction.

use serde::Deserialize;
use serde_json::Value;

use super::{Args, CallCtx, HostError, HostFn, opt, p};
use crate::capability::{CapabilityKind, Target};

pub const FUNCTIONS: &[HostFn] = &[
    HostFn {
        namespace: "kv",
        name: "get",
        params: &[p("key", "string")],
        returns: "any",
        capability: Some(CapabilityKind::Kv),
        doc: "Reads a value; nil (Rhai: `()`) when the key is missing.",
        luau_example: r#"local n = keel.kv.get("count") or 0"#,
        rhai_example: r#"let n = keel::kv::get("count") ?? 0;"#,
        call: get,
    },
    HostFn {
        namespace: "kv",
        name: "set",
        params: &[p("key", "string"), p("value", "any")],
        returns: "nil",
        capability: Some(CapabilityKind::Kv),
        doc: "Stores a JSON-shaped value (at most 1 MiB as JSON; a skill keeps at most `limits.kv_mb`, 64 MiB by default, in all). Setting nil deletes the key.",
        luau_example: r#"keel.kv.set("count", n + 1)"#,
        rhai_example: r#"keel::kv::set("count", n + 1);"#,
        call: set,
    },
    HostFn {
        namespace: "kv",
        name: "delete",
        params: &[p("key", "string")],
        returns: "boolean",
        capability: Some(CapabilityKind::Kv),
        doc: "Deletes a key; returns whether it existed.",
        luau_example: r#"keel.kv.delete("count")"#,
        rhai_example: r#"keel::kv::delete("count");"#,
        call: delete,
    },
    HostFn {
        namespace: "kv",
        name: "list",
        params: &[opt("prefix", "string")],
        returns: "{string}",
        capability: Some(CapabilityKind::Kv),
        doc: "Lists keys, sorted, optionally only those starting with a prefix.",
        luau_example: r#"for _, k in keel.kv.list("note:") do print(k) end"#,
        rhai_example: r#"for k in keel::kv::list("note:") { print(k); }"#,
        call: list,
    },
];

/// `kv.get`, `kv.delete`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyArgs<'a> {
    key: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetArgs<'a> {
    key: &'a str,
    /// Any JSON-shaped value; nil deletes the key.
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs<'a> {
    #[serde(borrow)]
    prefix: Option<&'a str>,
}

fn store_err(e: crate::store::StoreError) -> HostError {
    HostError::Failed(format!("kv: {e}"))
}

fn get(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let KeyArgs { key } = args.parse()?;
    ctx.check(CapabilityKind::Kv, Target::None)?;
    match ctx
        .kernel
        .skill_kv(&ctx.skill.name)
        .get(key)
        .map_err(store_err)?
    {
        None => Ok(Value::Null),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            HostError::Failed(format!("kv.get {key:?}: stored value is not JSON: {e}"))
        }),
    }
}

fn set(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let SetArgs { key, value } = args.parse()?;
    ctx.check(CapabilityKind::Kv, Target::None)?;
    let kv = ctx.kernel.skill_kv(&ctx.skill.name);
    if value.is_null() {
        kv.delete(key).map_err(store_err)?;
    } else {
        let text = serde_json::to_string(&value).map_err(|e| {
            HostError::BadArgument(format!("kv.set: value is not JSON-shaped: {e}"))
        })?;
        kv.set(key, &text).map_err(store_err)?;
    }
    Ok(Value::Null)
}

fn delete(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let KeyArgs { key } = args.parse()?;
    ctx.check(CapabilityKind::Kv, Target::None)?;
    let existed = ctx
        .kernel
        .skill_kv(&ctx.skill.name)
        .delete(key)
        .map_err(store_err)?;
    Ok(Value::Bool(existed))
}

fn list(ctx: &CallCtx, args: Args) -> Result<Value, HostError> {
    let ListArgs { prefix } = args.parse()?;
    let prefix = prefix.unwrap_or("");
    ctx.check(CapabilityKind::Kv, Target::None)?;
    let keys = ctx
        .kernel
        .skill_kv(&ctx.skill.name)
        .list(prefix)
        .map_err(store_err)?;
    Ok(Value::Array(keys.into_iter().map(Value::String).collect()))
}
