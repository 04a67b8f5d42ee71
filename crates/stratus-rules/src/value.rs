//! Values during evaluation. Whatever comes from the caller (the `Env`,
//! looked-up documents it lends, the query's fixed values) is borrowed,
//! never copied: `Str`, `JList` and `JMap` point into the caller's JSON.
//! What a rule builds (`+`, literals, `keys()`, …) is owned and cheap to
//! clone (`Rc`).

use std::cmp::Ordering;
use std::rc::Rc;

use serde_json::{Map, Number, Value};

/// 2^63, exactly, as a float.
pub(crate) const TWO_63: f64 = 9_223_372_036_854_775_808.0;

/// A number: JSON integers stay exact, anything else is a finite float.
/// `1 == 1.0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Num {
    I(i64),
    F(f64),
}

impl Num {
    pub(crate) fn of(n: &Number) -> Num {
        match n.as_i64() {
            Some(i) => Num::I(i),
            None => Num::F(n.as_f64().unwrap_or(0.0)),
        }
    }

    pub(crate) fn of_u64(n: u64) -> Num {
        match i64::try_from(n) {
            Ok(i) => Num::I(i),
            Err(_) => Num::F(n as f64),
        }
    }

    fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }

    /// The number as an integer, when it is a whole number in range.
    pub(crate) fn whole(self) -> Option<i64> {
        match self {
            Num::I(i) => Some(i),
            Num::F(f) if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) => Some(f as i64),
            Num::F(_) => None,
        }
    }

    /// Numeric order, exact between integers and floats.
    pub(crate) fn order(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::I(a), Num::I(b)) => a.cmp(&b),
            (Num::F(a), Num::F(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
            (Num::I(a), Num::F(b)) => int_float(a, b),
            (Num::F(a), Num::I(b)) => int_float(b, a).reverse(),
        }
    }

    pub(crate) fn plus(self, o: Num) -> Result<Num, &'static str> {
        match (self, o) {
            (Num::I(a), Num::I(b)) => a.checked_add(b).map(Num::I).ok_or(OVERFLOW),
            _ => float(self.f() + o.f()),
        }
    }

    pub(crate) fn minus(self, o: Num) -> Result<Num, &'static str> {
        match (self, o) {
            (Num::I(a), Num::I(b)) => a.checked_sub(b).map(Num::I).ok_or(OVERFLOW),
            _ => float(self.f() - o.f()),
        }
    }

    pub(crate) fn times(self, o: Num) -> Result<Num, &'static str> {
        match (self, o) {
            (Num::I(a), Num::I(b)) => a.checked_mul(b).map(Num::I).ok_or(OVERFLOW),
            _ => float(self.f() * o.f()),
        }
    }

    /// Division: exact (an integer) when two integers divide evenly, else
    /// a decimal: `7 / 2 == 3.5`.
    pub(crate) fn divide(self, o: Num) -> Result<Num, &'static str> {
        if o.f() == 0.0 {
            return Err("division by zero");
        }
        if let (Num::I(a), Num::I(b)) = (self, o)
            && a.checked_rem(b) == Some(0)
            && let Some(q) = a.checked_div(b)
        {
            return Ok(Num::I(q));
        }
        float(self.f() / o.f())
    }

    /// The remainder, with the sign of the dividend (as in C, Rust, JS).
    pub(crate) fn modulo(self, o: Num) -> Result<Num, &'static str> {
        if o.f() == 0.0 {
            return Err("division by zero");
        }
        match (self, o) {
            (Num::I(a), Num::I(b)) => Ok(Num::I(a.checked_rem(b).unwrap_or(0))),
            _ => float(self.f() % o.f()),
        }
    }

    pub(crate) fn negate(self) -> Result<Num, &'static str> {
        match self {
            Num::I(i) => i.checked_neg().map(Num::I).ok_or(OVERFLOW),
            Num::F(f) => Ok(Num::F(-f)),
        }
    }

    /// The text `string()` gives: `5`, `-3`, `2.5`, `0.1` (never `5.0`,
    /// never an exponent).
    pub(crate) fn text(self) -> String {
        match self {
            Num::I(i) => i.to_string(),
            Num::F(f) => f.to_string(),
        }
    }
}

const OVERFLOW: &str = "integer overflow (integers are 64-bit)";

fn float(f: f64) -> Result<Num, &'static str> {
    if f.is_finite() {
        Ok(Num::F(f))
    } else {
        Err("number out of range")
    }
}

fn int_float(i: i64, f: f64) -> Ordering {
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    match i.cmp(&(t as i64)) {
        // Same whole part: the fraction decides.
        Ordering::Equal => 0.0.partial_cmp(&(f - t)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

/// A value. `Unknown` (a `doc` field the query does not fix, named by its
/// dotted path, "" for the whole document) and `Partial` (the part of
/// `doc` above fixed fields) only occur in query implication; `Partial`
/// never leaves member and index access (see `Eval::eval`).
#[derive(Clone, Debug)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(&'a str),
    OStr(Rc<str>),
    JList(&'a [Value]),
    List(Rc<[Val<'a>]>),
    JMap(&'a Map<String, Value>),
    Map(Rc<[(Rc<str>, Val<'a>)]>),
    Unknown(Rc<str>),
    Partial(Rc<str>),
}

/// A borrowed JSON value as a `Val`, without copying anything.
pub(crate) fn norm(v: &Value) -> Val<'_> {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(Num::of(n)),
        Value::String(s) => Val::Str(s),
        Value::Array(a) => Val::JList(a),
        Value::Object(m) => Val::JMap(m),
    }
}

/// An owned JSON value (a looked-up document the caller did not lend) as
/// a `Val`; `None` when it nests deeper than `max_depth`.
pub(crate) fn owned(v: Value, max_depth: usize) -> Option<Val<'static>> {
    if max_depth == 0 {
        return None;
    }
    Some(match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(b),
        Value::Number(n) => Val::Num(Num::of(&n)),
        Value::String(s) => Val::OStr(s.into()),
        Value::Array(a) => Val::List(
            a.into_iter()
                .map(|x| owned(x, max_depth - 1))
                .collect::<Option<Vec<_>>>()?
                .into(),
        ),
        Value::Object(m) => Val::Map(
            m.into_iter()
                .map(|(k, x)| Some((Rc::from(k), owned(x, max_depth - 1)?)))
                .collect::<Option<Vec<_>>>()?
                .into(),
        ),
    })
}

/// What a value is, with its JSON and built forms unified.
pub(crate) enum Shape<'v, 'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(&'v str),
    List(Seq<'v, 'a>),
    Map(Obj<'v, 'a>),
    Unknown,
}

impl<'a> Val<'a> {
    pub(crate) fn shape(&self) -> Shape<'_, 'a> {
        match self {
            Val::Null => Shape::Null,
            Val::Bool(b) => Shape::Bool(*b),
            Val::Num(n) => Shape::Num(*n),
            Val::Str(s) => Shape::Str(s),
            Val::OStr(s) => Shape::Str(s),
            Val::JList(l) => Shape::List(Seq::J(l)),
            Val::List(l) => Shape::List(Seq::V(l)),
            Val::JMap(m) => Shape::Map(Obj::J(m)),
            Val::Map(m) => Shape::Map(Obj::V(m)),
            Val::Unknown(_) | Val::Partial(_) => Shape::Unknown,
        }
    }

    /// The name `type()` gives.
    pub(crate) fn type_name(&self) -> &'static str {
        match self.shape() {
            Shape::Null => "null",
            Shape::Bool(_) => "bool",
            Shape::Num(_) => "number",
            Shape::Str(_) => "string",
            Shape::List(_) => "list",
            Shape::Map(_) => "map",
            Shape::Unknown => "unknown",
        }
    }

    /// The kind of value, for messages: "a number", "null".
    pub(crate) fn describe(&self) -> &'static str {
        match self.shape() {
            Shape::Null => "null",
            Shape::Bool(_) => "a bool",
            Shape::Num(_) => "a number",
            Shape::Str(_) => "a string",
            Shape::List(_) => "a list",
            Shape::Map(_) => "a map",
            Shape::Unknown => "not known",
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Seq<'v, 'a> {
    J(&'a [Value]),
    V(&'v [Val<'a>]),
}

impl<'a> Seq<'_, 'a> {
    pub(crate) fn len(self) -> usize {
        match self {
            Seq::J(s) => s.len(),
            Seq::V(s) => s.len(),
        }
    }

    pub(crate) fn get(self, i: usize) -> Option<Val<'a>> {
        match self {
            Seq::J(s) => s.get(i).map(norm),
            Seq::V(s) => s.get(i).cloned(),
        }
    }

    pub(crate) fn push_all(self, out: &mut Vec<Val<'a>>) {
        match self {
            Seq::J(s) => out.extend(s.iter().map(norm)),
            Seq::V(s) => out.extend(s.iter().cloned()),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Obj<'v, 'a> {
    J(&'a Map<String, Value>),
    V(&'v [(Rc<str>, Val<'a>)]),
}

impl<'v, 'a> Obj<'v, 'a> {
    pub(crate) fn len(self) -> usize {
        match self {
            Obj::J(m) => m.len(),
            Obj::V(m) => m.len(),
        }
    }

    pub(crate) fn get(self, key: &str) -> Option<Val<'a>> {
        match self {
            Obj::J(m) => m.get(key).map(norm),
            Obj::V(m) => m.iter().find(|(k, _)| &**k == key).map(|(_, v)| v.clone()),
        }
    }

    pub(crate) fn has(self, key: &str) -> bool {
        match self {
            Obj::J(m) => m.contains_key(key),
            Obj::V(m) => m.iter().any(|(k, _)| &**k == key),
        }
    }

    /// The entries, in the map's own order.
    pub(crate) fn entries(self) -> Vec<(&'v str, Val<'a>)> {
        match self {
            Obj::J(m) => m.iter().map(|(k, v)| (k.as_str(), norm(v))).collect(),
            Obj::V(m) => m.iter().map(|(k, v)| (&**k, v.clone())).collect(),
        }
    }

    /// The keys, as string values, in the map's own order.
    pub(crate) fn keys(self) -> Vec<Val<'a>> {
        match self {
            Obj::J(m) => m.keys().map(|k| Val::Str(k)).collect(),
            Obj::V(m) => m.iter().map(|(k, _)| Val::OStr(k.clone())).collect(),
        }
    }
}
