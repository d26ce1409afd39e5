//! Typed host arguments: a script's positional arguments, read into one
//! serde struct per host function.
//!
//! Scripts call host functions positionally (`keel.fs.write(path, content)`)
//! and the [`HostFn::params`](super::HostFn::params) declaration names each
//! position. [`Args::parse`] presents the values to serde as a map keyed by
//! those names, so a host function's arguments are a plain
//! `#[derive(Deserialize)]` struct whose field names are its parameter
//! names, and each options table is a nested struct with
//! `#[serde(deny_unknown_fields)]`: an unknown option key is an error with a
//! "did you mean", never silently ignored. The positional API scripts see is
//! unchanged; only how Rust reads it is typed.
//!
//! Errors name the parameter (and the option inside it) and what was
//! expected, in the scripts' words (`nil`, `number`, `table`), e.g.
//! `opts.timeout_ms: expected a positive number of milliseconds, got string`;
//! the binding puts the function's full name in front. A nil argument is
//! passed as JSON null, so an `Option` field reads it as absent and a
//! required field says it got `nil`.
//!
//! Zero-parameter functions (`time.now`) never call [`Args::parse`]: the
//! hot path of the cheapest host call pays nothing for this.

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde_json::Value;

use super::{HostError, Param};

/// Arguments as JSON values, in the order of the function's parameters.
pub struct Args {
    pub values: Vec<Value>,
    /// The function's declared parameters: the names [`Args::parse`] reads
    /// the values under.
    pub params: &'static [Param],
}

impl Args {
    pub fn new(params: &'static [Param], values: Vec<Value>) -> Self {
        Args { values, params }
    }

    /// Reads the arguments into `T`, whose fields are the parameter names.
    /// Strings can be borrowed (`&'a str`), as reading by index did.
    ///
    /// ```ignore
    /// #[derive(Deserialize)]
    /// struct WriteArgs<'a> { path: &'a str, content: &'a str }
    /// let WriteArgs { path, content } = args.parse()?;
    /// ```
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, HostError> {
        match T::deserialize(self.positional()) {
            Ok(v) => Ok(v),
            // Only on error is the same input read again, tracking the
            // path to what was wrong (`opts.timeout_ms`): tracking it on
            // every call would allocate each key and cost more than the
            // parse itself.
            Err(first) => Err(HostError::BadArgument(
                match serde_path_to_error::deserialize::<_, T>(self.positional()) {
                    Err(e) => describe(&e.path().to_string(), e.inner()),
                    Ok(_) => describe("", &first),
                },
            )),
        }
    }

    fn positional(&self) -> Positional<'_> {
        Positional {
            names: self.params.iter(),
            values: self.values.iter(),
            pending: None,
        }
    }
}

/// The positional values as a map from parameter name to value.
struct Positional<'a> {
    names: std::slice::Iter<'static, Param>,
    values: std::slice::Iter<'a, Value>,
    pending: Option<&'a Value>,
}

impl<'de> de::Deserializer<'de> for Positional<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for Positional<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        // Trailing optional parameters the script left out are simply absent.
        match (self.names.next(), self.values.next()) {
            (Some(param), Some(value)) => {
                self.pending = Some(value);
                seed.deserialize(param.name.into_deserializer()).map(Some)
            }
            _ => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.pending.take() {
            Some(v) => seed.deserialize(v),
            None => seed.deserialize(&Value::Null),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.values.len().min(self.names.len()))
    }
}

/// A serde message rewritten for a script author: where, and what was
/// expected, in Luau/Rhai words. serde's wordings for these errors
/// (`de::Error::invalid_type`, `unknown_field`, `missing_field`) are stable.
fn describe(path: &str, e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let top = path.is_empty() || path == ".";
    let at = if top {
        String::new()
    } else {
        format!("{path}: ")
    };
    if let Some(rest) = msg
        .strip_prefix("invalid type: ")
        .or_else(|| msg.strip_prefix("invalid value: "))
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        let expected = script_expected(expected);
        let got = script_word(got);
        return if top {
            format!("expected {expected}, got {got}")
        } else {
            format!("`{path}` must be {expected}, got {got}")
        };
    }
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let known = expected.split('`').skip(1).step_by(2);
        let hint = crate::capability::did_you_mean(field, known)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        // The path ends at the unknown field itself: name its table.
        let table = path
            .strip_suffix(field)
            .map_or(path, |p| p.strip_suffix('.').unwrap_or(p));
        let at = if table.is_empty() || table == "." {
            String::new()
        } else {
            format!("{table}: ")
        };
        return format!("{at}unknown field `{field}`{hint}{expected}");
    }
    if let Some(rest) = msg.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        return match top {
            true => format!("`{field}` is missing"),
            false => format!("`{path}.{field}` is missing"),
        };
    }
    // Messages of keel's own checks (`must be a table…`) read on from the path.
    if !top && msg.starts_with("must ") {
        return format!("`{path}` {msg}");
    }
    format!("{at}{msg}")
}

/// serde's name for what it expected, as a script author would say it.
fn script_expected(expected: &str) -> String {
    match expected {
        "f32" | "f64" | "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" => {
            "a number".to_string()
        }
        "a borrowed string" => "a string".to_string(),
        "a map" => "a table".to_string(),
        "a sequence" => "a list".to_string(),
        e if e.starts_with("struct ") => "a table of options".to_string(),
        e => e.to_string(),
    }
}

/// serde's name for an unexpected value, as a script author would say it.
/// String contents are left out: they are the script's own data and may
/// hold anything.
fn script_word(got: &str) -> String {
    let kind = got.split(' ').next().unwrap_or(got);
    match kind {
        "null" | "unit" => "nil".to_string(),
        "integer" | "floating" => match got.split_once('`') {
            Some((_, n)) => format!("number {}", n.trim_end_matches('`')),
            None => "number".to_string(),
        },
        "boolean" => "boolean".to_string(),
        "string" => "string".to_string(),
        "map" => "table".to_string(),
        "sequence" => "list".to_string(),
        _ => got.to_string(),
    }
}

/// A number of milliseconds for an option such as `timeout_ms`: positive
/// and finite; anything beyond a day is capped (the call's deadline caps it
/// sooner anyway).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Millis(pub std::time::Duration);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Millis;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a positive number of milliseconds")
            }
            fn visit_f64<E: de::Error>(self, ms: f64) -> Result<Millis, E> {
                if ms.is_finite() && ms >= 1.0 {
                    let ms = ms.min(86_400_000.0) as u64;
                    Ok(Millis(std::time::Duration::from_millis(ms)))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(ms), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Millis, E> {
                self.visit_f64(ms as f64)
            }
            fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Millis, E> {
                self.visit_f64(ms as f64)
            }
        }
        d.deserialize_any(V)
    }
}
