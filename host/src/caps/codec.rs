//! WIT values in MessagePack, for component calls that cross hosts.
//!
//! Encoding follows the value's WIT type (both ends know it: the caller from its import, the
//! target from its export), so the bytes are plain MessagePack another language can read:
//!
//! | WIT | MessagePack |
//! |---|---|
//! | bool, integers, f32, f64 | bool, int, float32, float64 |
//! | char, string | str |
//! | `list<u8>` | bin |
//! | other lists, tuples | array |
//! | record | map of field name to value |
//! | variant | map of one case name to its payload (nil without one) |
//! | enum | str (the case) |
//! | flags | array of the set flags' names |
//! | option | nil for none; the value for some (wrapped in a one-element array when the payload is itself an option) |
//! | result | map `{"ok": v}` or `{"err": v}` (nil without payload) |
//!
//! Resources, futures and streams cannot cross hosts; decoding checks every value against the
//! type, so a malformed payload is refused with the path to the faulty part.

use rmpv::Value;
use wasmtime::component::{Type, Val};

/// A value that does not fit its type, with where in the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct CodecError {
    /// Where, e.g. `$.items[2].name`.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

fn err<T>(path: &str, problem: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError {
        path: path.to_string(),
        problem: problem.into(),
    })
}

/// Whether values of `ty` can cross hosts (no resources, futures or streams inside).
pub fn crossable(ty: &Type) -> bool {
    match ty {
        Type::List(l) => crossable(&l.ty()),
        Type::Record(r) => r.fields().all(|f| crossable(&f.ty)),
        Type::Tuple(t) => t.types().all(|t| crossable(&t)),
        Type::Variant(v) => v.cases().all(|c| c.ty.as_ref().is_none_or(crossable)),
        Type::Option(o) => crossable(&o.ty()),
        Type::Result(r) => {
            r.ok().as_ref().is_none_or(crossable) && r.err().as_ref().is_none_or(crossable)
        }
        Type::Own(_)
        | Type::Borrow(_)
        | Type::Future(_)
        | Type::Stream(_)
        | Type::ErrorContext
        | Type::Map(_)
        | Type::FixedLengthList(_) => false,
        _ => true,
    }
}

/// Encodes `val` of type `ty`.
pub fn encode(val: &Val, ty: &Type) -> Result<Value, CodecError> {
    encode_at(val, ty, "$")
}

fn encode_at(val: &Val, ty: &Type, path: &str) -> Result<Value, CodecError> {
    Ok(match (val, ty) {
        (Val::Bool(b), _) => Value::Boolean(*b),
        (Val::S8(n), _) => Value::from(*n),
        (Val::U8(n), _) => Value::from(*n),
        (Val::S16(n), _) => Value::from(*n),
        (Val::U16(n), _) => Value::from(*n),
        (Val::S32(n), _) => Value::from(*n),
        (Val::U32(n), _) => Value::from(*n),
        (Val::S64(n), _) => Value::from(*n),
        (Val::U64(n), _) => Value::from(*n),
        (Val::Float32(f), _) => Value::F32(*f),
        (Val::Float64(f), _) => Value::F64(*f),
        (Val::Char(c), _) => Value::from(c.to_string()),
        (Val::String(s), _) => Value::from(s.as_str()),
        (Val::List(items), Type::List(l)) => {
            let inner = l.ty();
            if matches!(inner, Type::U8) {
                let bytes = items
                    .iter()
                    .map(|v| match v {
                        Val::U8(b) => Ok(*b),
                        _ => err(path, "a list<u8> holds a value that is not a u8"),
                    })
                    .collect::<Result<Vec<u8>, _>>()?;
                Value::Binary(bytes)
            } else {
                Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| encode_at(v, &inner, &format!("{path}[{i}]")))
                        .collect::<Result<_, _>>()?,
                )
            }
        }
        (Val::Record(fields), Type::Record(r)) => {
            let mut out = Vec::with_capacity(fields.len());
            for ((name, v), field) in fields.iter().zip(r.fields()) {
                out.push((
                    Value::from(name.as_str()),
                    encode_at(v, &field.ty, &format!("{path}.{name}"))?,
                ));
            }
            Value::Map(out)
        }
        (Val::Tuple(items), Type::Tuple(t)) => Value::Array(
            items
                .iter()
                .zip(t.types())
                .enumerate()
                .map(|(i, (v, ty))| encode_at(v, &ty, &format!("{path}.{i}")))
                .collect::<Result<_, _>>()?,
        ),
        (Val::Variant(case, payload), Type::Variant(v)) => {
            let ty = v.cases().find(|c| c.name == case).and_then(|c| c.ty);
            let payload = match (payload, ty) {
                (Some(p), Some(ty)) => encode_at(p, &ty, &format!("{path}.{case}"))?,
                _ => Value::Nil,
            };
            Value::Map(vec![(Value::from(case.as_str()), payload)])
        }
        (Val::Enum(case), _) => Value::from(case.as_str()),
        (Val::Flags(names), _) => {
            Value::Array(names.iter().map(|n| Value::from(n.as_str())).collect())
        }
        (Val::Option(None), _) => Value::Nil,
        (Val::Option(Some(v)), Type::Option(o)) => {
            let inner = o.ty();
            let encoded = encode_at(v, &inner, path)?;
            if matches!(inner, Type::Option(_)) {
                Value::Array(vec![encoded])
            } else {
                encoded
            }
        }
        (Val::Result(r), Type::Result(rt)) => {
            let (case, payload, ty) = match r {
                Ok(p) => ("ok", p, rt.ok()),
                Err(p) => ("err", p, rt.err()),
            };
            let payload = match (payload, ty) {
                (Some(p), Some(ty)) => encode_at(p, &ty, &format!("{path}.{case}"))?,
                _ => Value::Nil,
            };
            Value::Map(vec![(Value::from(case), payload)])
        }
        (v, ty) => return err(path, format!("cannot send {v:?} as {ty:?} to another host")),
    })
}

/// Decodes a value of type `ty`.
pub fn decode(value: &Value, ty: &Type) -> Result<Val, CodecError> {
    decode_at(value, ty, "$")
}

fn int<T: TryFrom<i64> + TryFrom<u64>>(
    value: &Value,
    path: &str,
    what: &str,
) -> Result<T, CodecError> {
    let n = match value {
        Value::Integer(n) => n,
        other => return err(path, format!("expected {what}, found {}", kind(other))),
    };
    let converted = match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => T::try_from(u).ok(),
        (None, Some(i)) => T::try_from(i).ok(),
        _ => None,
    };
    converted.map_or_else(|| err(path, format!("{n} does not fit {what}")), Ok)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Boolean(_) => "a bool",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "bytes",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension value",
    }
}

fn text<'a>(value: &'a Value, path: &str) -> Result<&'a str, CodecError> {
    match value {
        Value::String(s) => s
            .as_str()
            .map_or_else(|| err(path, "a string that is not UTF-8"), Ok),
        other => err(path, format!("expected a string, found {}", kind(other))),
    }
}

/// The one `(key, value)` of a single-entry map.
fn single<'a>(value: &'a Value, path: &str) -> Result<(&'a str, &'a Value), CodecError> {
    match value {
        Value::Map(entries) if entries.len() == 1 => {
            Ok((text(&entries[0].0, path)?, &entries[0].1))
        }
        other => err(
            path,
            format!("expected a map with one entry, found {}", kind(other)),
        ),
    }
}

fn decode_at(value: &Value, ty: &Type, path: &str) -> Result<Val, CodecError> {
    Ok(match ty {
        Type::Bool => match value {
            Value::Boolean(b) => Val::Bool(*b),
            other => return err(path, format!("expected a bool, found {}", kind(other))),
        },
        Type::S8 => Val::S8(int(value, path, "s8")?),
        Type::U8 => Val::U8(int(value, path, "u8")?),
        Type::S16 => Val::S16(int(value, path, "s16")?),
        Type::U16 => Val::U16(int(value, path, "u16")?),
        Type::S32 => Val::S32(int(value, path, "s32")?),
        Type::U32 => Val::U32(int(value, path, "u32")?),
        Type::S64 => Val::S64(int(value, path, "s64")?),
        Type::U64 => Val::U64(int(value, path, "u64")?),
        Type::Float32 => match value {
            Value::F32(f) => Val::Float32(*f),
            other => return err(path, format!("expected a float32, found {}", kind(other))),
        },
        Type::Float64 => match value {
            Value::F64(f) => Val::Float64(*f),
            Value::F32(f) => Val::Float64(f64::from(*f)),
            other => return err(path, format!("expected a float64, found {}", kind(other))),
        },
        Type::Char => decode_char(value, path)?,
        Type::String => Val::String(text(value, path)?.to_string()),
        Type::List(l) => decode_list(value, &l.ty(), path)?,
        Type::Record(r) => decode_record(value, r, path)?,
        Type::Tuple(t) => decode_tuple(value, t, path)?,
        Type::Variant(v) => {
            let (case, payload) = single(value, path)?;
            let Some(c) = v.cases().find(|c| c.name == case) else {
                return err(path, format!("`{case}` is not a case of this variant"));
            };
            Val::Variant(case.to_string(), decode_payload(payload, c.ty, path, case)?)
        }
        Type::Enum(e) => {
            let case = text(value, path)?;
            if !e.names().any(|n| n == case) {
                return err(path, format!("`{case}` is not a case of this enum"));
            }
            Val::Enum(case.to_string())
        }
        Type::Flags(f) => decode_flags(value, f, path)?,
        Type::Option(o) => decode_option(value, &o.ty(), path)?,
        Type::Result(r) => decode_result(value, r, path)?,
        other => return err(path, format!("{other:?} values cannot cross hosts")),
    })
}

fn decode_char(value: &Value, path: &str) -> Result<Val, CodecError> {
    let s = text(value, path)?;
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(Val::Char(c)),
        _ => err(path, format!("expected one character, found {s:?}")),
    }
}

fn decode_list(value: &Value, inner: &Type, path: &str) -> Result<Val, CodecError> {
    match value {
        Value::Binary(bytes) if matches!(inner, Type::U8) => {
            Ok(Val::List(bytes.iter().map(|b| Val::U8(*b)).collect()))
        }
        Value::Array(items) => Ok(Val::List(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| decode_at(v, inner, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        )),
        other => err(path, format!("expected a list, found {}", kind(other))),
    }
}

fn decode_record(
    value: &Value,
    r: &wasmtime::component::types::Record,
    path: &str,
) -> Result<Val, CodecError> {
    let Value::Map(entries) = value else {
        return err(
            path,
            format!("expected a record (map), found {}", kind(value)),
        );
    };
    let mut fields = Vec::new();
    for field in r.fields() {
        let found = entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(field.name))
            .map(|(_, v)| v);
        let here = format!("{path}.{}", field.name);
        let v = match found {
            Some(v) => decode_at(v, &field.ty, &here)?,
            // An absent optional field is none, so a newer record can add options.
            None if matches!(field.ty, Type::Option(_)) => Val::Option(None),
            None => return err(&here, "missing field"),
        };
        fields.push((field.name.to_string(), v));
    }
    Ok(Val::Record(fields))
}

fn decode_tuple(
    value: &Value,
    t: &wasmtime::component::types::Tuple,
    path: &str,
) -> Result<Val, CodecError> {
    let Value::Array(items) = value else {
        return err(
            path,
            format!("expected a tuple (array), found {}", kind(value)),
        );
    };
    let types: Vec<Type> = t.types().collect();
    if items.len() != types.len() {
        return err(
            path,
            format!("expected {} elements, found {}", types.len(), items.len()),
        );
    }
    Ok(Val::Tuple(
        items
            .iter()
            .zip(&types)
            .enumerate()
            .map(|(i, (v, ty))| decode_at(v, ty, &format!("{path}.{i}")))
            .collect::<Result<_, _>>()?,
    ))
}

/// The payload of a variant's or result's `case`, when the case has one.
fn decode_payload(
    payload: &Value,
    ty: Option<Type>,
    path: &str,
    case: &str,
) -> Result<Option<Box<Val>>, CodecError> {
    ty.map(|ty| decode_at(payload, &ty, &format!("{path}.{case}")).map(Box::new))
        .transpose()
}

fn decode_flags(
    value: &Value,
    f: &wasmtime::component::types::Flags,
    path: &str,
) -> Result<Val, CodecError> {
    let Value::Array(items) = value else {
        return err(
            path,
            format!("expected flags (array), found {}", kind(value)),
        );
    };
    let mut set = Vec::new();
    for item in items {
        let name = text(item, path)?;
        if !f.names().any(|n| n == name) {
            return err(path, format!("`{name}` is not one of these flags"));
        }
        set.push(name.to_string());
    }
    Ok(Val::Flags(set))
}

fn decode_option(value: &Value, inner: &Type, path: &str) -> Result<Val, CodecError> {
    Ok(match value {
        Value::Nil => Val::Option(None),
        Value::Array(items) if matches!(inner, Type::Option(_)) => match items.as_slice() {
            [one] => Val::Option(Some(Box::new(decode_at(one, inner, path)?))),
            _ => return err(path, "expected a one-element array around a nested option"),
        },
        v => Val::Option(Some(Box::new(decode_at(v, inner, path)?))),
    })
}

fn decode_result(
    value: &Value,
    r: &wasmtime::component::types::ResultType,
    path: &str,
) -> Result<Val, CodecError> {
    let (case, payload) = single(value, path)?;
    let ty = match case {
        "ok" => r.ok(),
        "err" => r.err(),
        other => return err(path, format!("expected `ok` or `err`, found `{other}`")),
    };
    let payload = decode_payload(payload, ty, path, case)?;
    Ok(Val::Result(if case == "ok" {
        Ok(payload)
    } else {
        Err(payload)
    }))
}
