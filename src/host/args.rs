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
            Some(v) => seed.deserialize(Argument(v)),
            None => seed.deserialize(Argument(&Value::Null)),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.values.len().min(self.names.len()))
    }
}

/// One argument: read as JSON, except where a table of options is wanted.
/// A Luau `{}` arrives as an empty list and means "no options", and a
/// non-empty list is never an options table (serde would read a struct
/// from a list by position and complain about `opts[0]`).
struct Argument<'a>(&'a Value);

impl<'de> de::Deserializer<'de> for Argument<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) if items.is_empty() => visitor.visit_map(NoEntries),
            Value::Array(_) => Err(de::Error::invalid_type(
                de::Unexpected::Seq,
                &"a table of options",
            )),
            v => v.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_str(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_string(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_f64(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_bool(visitor)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 char
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map identifier ignored_any
    }
}

/// An options table with nothing in it.
struct NoEntries;

impl<'de> MapAccess<'de> for NoEntries {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        _: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("an empty table has no values"))
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
                if ms < 1 {
                    return Err(E::invalid_value(de::Unexpected::Signed(ms), &self));
                }
                self.visit_f64(ms as f64)
            }
            fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Millis, E> {
                self.visit_f64(ms as f64)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::host::{opt, p};

    const PARAMS: &[Param] = &[p("path", "string"), opt("opts", "{ n: number? }")];

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Probe<'a> {
        path: &'a str,
        opts: Option<ProbeOptions>,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct ProbeOptions {
        n: Option<f64>,
        timeout_ms: Option<Millis>,
    }

    fn parse(values: Vec<Value>) -> Result<Option<ProbeOptions>, String> {
        let args = Args::new(PARAMS, values);
        match args.parse::<Probe>() {
            Ok(p) => Ok(p.opts),
            Err(HostError::BadArgument(m)) => Err(m),
            Err(other) => panic!("not a BadArgument: {other:?}"),
        }
    }

    #[test]
    fn values_are_read_by_parameter_name_and_absent_options_are_none() {
        assert_eq!(parse(vec![json!("x")]), Ok(None));
        let args = Args::new(PARAMS, vec![json!("a/b.txt")]);
        assert_eq!(args.parse::<Probe>().map(|p| p.path).ok(), Some("a/b.txt"));
        assert_eq!(parse(vec![json!("x"), json!(null)]), Ok(None));
        // A Luau `{}` arrives as an empty list: no options set.
        assert_eq!(
            parse(vec![json!("x"), json!([])]),
            Ok(Some(ProbeOptions::default()))
        );
        assert_eq!(
            parse(vec![json!("x"), json!({ "n": 2, "timeout_ms": 1.5 })]),
            Ok(Some(ProbeOptions {
                n: Some(2.0),
                timeout_ms: Some(Millis(std::time::Duration::from_millis(1))),
            }))
        );
    }

    #[test]
    fn errors_say_where_and_what_was_expected_in_script_words() {
        let err = |values: Vec<Value>| parse(values).expect_err("must fail");
        assert_eq!(err(vec![json!(null)]), "`path` must be a string, got nil");
        assert_eq!(err(vec![json!(3)]), "`path` must be a string, got number 3");
        assert_eq!(err(vec![json!({})]), "`path` must be a string, got table");
        assert_eq!(
            err(vec![json!("x"), json!({ "n": "2" })]),
            "`opts.n` must be a number, got string"
        );
        assert_eq!(
            err(vec![json!("x"), json!({ "timeout_ms": -1 })]),
            "`opts.timeout_ms` must be a positive number of milliseconds, got number -1"
        );
        assert_eq!(
            err(vec![json!("x"), json!("fast")]),
            "`opts` must be a table of options, got string"
        );
        assert_eq!(
            err(vec![json!("x"), json!({ "tiemout_ms": 5 })]),
            "opts: unknown field `tiemout_ms` (did you mean `timeout_ms`?), expected `n` or `timeout_ms`"
        );
        assert_eq!(
            err(vec![json!("x"), json!(["a"])]),
            "`opts` must be a table of options, got list"
        );
        // No suggestion when nothing is close.
        assert_eq!(
            err(vec![json!("x"), json!({ "zzzzzzzz": 5 })]),
            "opts: unknown field `zzzzzzzz`, expected `n` or `timeout_ms`"
        );
        // Script data in a string is never echoed back.
        let m = err(vec![json!("x"), json!({ "n": "SECRET" })]);
        assert!(!m.contains("SECRET"), "{m}");
    }

    /// Every shape a script can pass, at every position: the answer is a
    /// value or a `BadArgument`, never a panic or another error.
    #[test]
    fn any_value_in_any_position_is_parsed_or_refused() {
        let mut deep = json!(1);
        for _ in 0..64 {
            deep = json!({ "n": [deep] });
        }
        let shapes = [
            json!(null),
            json!(true),
            json!(0),
            json!(-1),
            json!(1.5e300),
            json!(u64::MAX),
            json!(""),
            json!("x"),
            json!("\u{0}\r\n\u{1b}[2J"),
            json!([]),
            json!([null]),
            json!(["x", 1, {}]),
            json!({}),
            json!({ "n": null }),
            json!({ "n": [] }),
            json!({ "1": "x", "n": 2 }),
            json!({ "": 1 }),
            deep,
        ];
        for a in &shapes {
            for b in &shapes {
                let _ = parse(vec![a.clone(), b.clone()]);
                let _ = parse(vec![json!("x"), a.clone(), b.clone()]);
            }
            let _ = parse(vec![a.clone()]);
        }
    }
}
