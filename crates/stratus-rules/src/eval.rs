//! The evaluator: a walk over the tree (whose height the parser bounded),
//! with a work budget, caps on what it builds, and a per-evaluation cache
//! of looked-up documents.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use serde_json::Value;

use crate::parse::{Expr, Func, Kind, Op, Root};
use crate::value::{Num, Shape, TWO_63, Val, norm, owned};
use crate::{Env, Looked, Lookup, MAX_BUILT, MAX_COMBINATIONS, MAX_LOOKUPS, MAX_STEPS, Verdict};

/// Work is counted in units: a step (one expression evaluated) is 256,
/// one element or entry handled by a built-in is 16, one byte is 1.
const STEP: u64 = 256;
const ELEM: u64 = 16;
const BUDGET: u64 = MAX_STEPS as u64 * STEP;
/// How deep a value may nest for equality, `string()` and owned lookups
/// (as deep as `serde_json` parses by default).
const MAX_VALUE_DEPTH: usize = 128;

/// Why evaluation of an expression did not give a value.
enum Stop {
    /// An error: a missing field, a type mismatch…; `||` and `&&` may
    /// absorb it.
    Err(String),
    /// A document to fetch first; absorbed like an error, but it wins
    /// over errors wherever fetching could still make the rule true.
    Need(String),
    /// A bound was exceeded: never absorbed.
    Abort(String),
}

type R<'a> = Result<Val<'a>, Stop>;

fn err<T>(message: String) -> Result<T, Stop> {
    Err(Stop::Err(message))
}

/// A field the query fixes to several values, met during one run.
struct Choice<'a> {
    key: &'a str,
    idx: usize,
    count: usize,
}

/// Query implication's state: the fixed fields, and the combination of
/// their values this run uses (a depth-first walk over the fields the rule
/// actually reads, in the order it reads them).
struct Fixed<'a> {
    map: &'a BTreeMap<String, Vec<Value>>,
    choices: Vec<Choice<'a>>,
    cursor: usize,
    assigned: Vec<(&'a str, usize)>,
}

/// What the sides of a `&&` or `||` gave that was not a bool.
#[derive(Default)]
struct Absorbed {
    error: Option<String>,
    need: Option<String>,
    unknown: Option<Rc<str>>,
}

enum Fetch<'a> {
    Found(Val<'a>),
    Missing,
    Pending,
}

struct Eval<'a> {
    src: &'a str,
    root: &'a Expr,
    env: Env<'a>,
    lookup: &'a dyn Lookup,
    fixed: Option<Fixed<'a>>,
    work: u64,
    fetched: Vec<(String, Fetch<'a>)>,
    /// The conjunct that made a top-level `&&` false.
    false_at: Option<&'a Expr>,
}

pub(crate) fn evaluate<'a>(
    src: &'a str,
    root: &'a Expr,
    env: Env<'a>,
    lookup: &'a dyn Lookup,
) -> Verdict {
    Eval::new(src, root, env, lookup, None).run()
}

pub(crate) fn implied<'a>(
    src: &'a str,
    root: &'a Expr,
    env: Env<'a>,
    fixed: &'a BTreeMap<String, Vec<Value>>,
    lookup: &'a dyn Lookup,
) -> Verdict {
    if let Some((field, _)) = fixed.iter().find(|(_, v)| v.is_empty()) {
        return Verdict::Deny(format!("the query's filter on `{field}` lists no values"));
    }
    let fixed = Fixed {
        map: fixed,
        choices: Vec::new(),
        cursor: 0,
        assigned: Vec::new(),
    };
    let mut ev = Eval::new(src, root, env, lookup, Some(fixed));
    let mut runs = 0;
    loop {
        runs += 1;
        if let Some(fx) = &mut ev.fixed {
            fx.cursor = 0;
            fx.assigned.clear();
        }
        match ev.run() {
            Verdict::Allow => {}
            Verdict::Deny(why) => {
                let at = ev.combination();
                return Verdict::Deny(if at.is_empty() {
                    why
                } else {
                    format!("for {at}: {why}")
                });
            }
            need => return need,
        }
        let Some(fx) = &mut ev.fixed else {
            return Verdict::Allow;
        };
        loop {
            match fx.choices.last_mut() {
                None => return Verdict::Allow,
                Some(c) if c.idx + 1 < c.count => {
                    c.idx += 1;
                    break;
                }
                Some(_) => {
                    fx.choices.pop();
                }
            }
        }
        if runs >= MAX_COMBINATIONS {
            return Verdict::Deny(format!(
                "the query's `in` filters make more than {MAX_COMBINATIONS} combinations of values for the read rule to check; narrow the query"
            ));
        }
    }
}

fn unknown_reason(path: &str) -> String {
    if path.is_empty() {
        "the read rule uses the whole document (`doc`), which no query filter can pin down".into()
    } else {
        format!("the query must filter on `{path}` (==) for the read rule to hold")
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A string for a message, cut short.
fn short(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(57).collect::<String>())
    } else {
        s.to_owned()
    }
}

impl<'a> Eval<'a> {
    fn new(
        src: &'a str,
        root: &'a Expr,
        env: Env<'a>,
        lookup: &'a dyn Lookup,
        fixed: Option<Fixed<'a>>,
    ) -> Self {
        Eval {
            src,
            root,
            env,
            lookup,
            fixed,
            work: 0,
            fetched: Vec::new(),
            false_at: None,
        }
    }

    fn run(&mut self) -> Verdict {
        self.work = 0;
        self.false_at = None;
        match self.eval(self.root) {
            Ok(Val::Bool(true)) => Verdict::Allow,
            Ok(Val::Bool(false)) => {
                let at = self.false_at.unwrap_or(self.root);
                Verdict::Deny(format!("`{}` is false", self.snip(at)))
            }
            Ok(Val::Unknown(path)) => Verdict::Deny(unknown_reason(&path)),
            Ok(v) => Verdict::Deny(format!(
                "the rule must come out true or false, but it gave {}",
                v.describe()
            )),
            Err(Stop::Err(why) | Stop::Abort(why)) => Verdict::Deny(why),
            Err(Stop::Need(path)) => Verdict::Need(path),
        }
    }

    /// The values this run took for fields the query fixes to several.
    fn combination(&self) -> String {
        let Some(fx) = &self.fixed else {
            return String::new();
        };
        fx.assigned
            .iter()
            .map(|(key, idx)| {
                let v = &fx.map[*key][*idx];
                format!("{key} == {}", short(&v.to_string()))
            })
            .collect::<Vec<_>>()
            .join(" and ")
    }

    /// An expression's source, whitespace collapsed, cut short.
    fn snip(&self, e: &Expr) -> String {
        let text = self.src.get(e.start..e.end).unwrap_or_default();
        short(&text.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    fn charge(&mut self, units: u64) -> Result<(), Stop> {
        self.work = self.work.saturating_add(units);
        if self.work > BUDGET {
            Err(self.over_budget())
        } else {
            Ok(())
        }
    }

    fn charge_bytes(&mut self, n: usize) -> Result<(), Stop> {
        self.charge(n as u64)
    }

    fn charge_elems(&mut self, n: usize) -> Result<(), Stop> {
        self.charge((n as u64).saturating_mul(ELEM))
    }

    /// An expression's value; never `Partial`.
    fn eval(&mut self, e: &'a Expr) -> R<'a> {
        match self.place(e) {
            Ok(Val::Partial(path)) => Ok(Val::Unknown(path)),
            other => other,
        }
    }

    // The functions from here to `and` and `or` are the recursive path:
    // each evaluates its operands and hands them to a function of its own
    // (marked `inline(never)`) for the work and the messages, so that
    // their stack frames stay small.

    /// An expression's value, `Partial` allowed: what member and index
    /// access start from.
    fn place(&mut self, e: &'a Expr) -> R<'a> {
        self.work += STEP;
        if self.work > BUDGET {
            return Err(self.over_budget());
        }
        match &e.kind {
            Kind::Null => Ok(Val::Null),
            Kind::Bool(b) => Ok(Val::Bool(*b)),
            Kind::Num(n) => Ok(Val::Num(*n)),
            Kind::Str(s) => Ok(Val::Str(s)),
            Kind::Root(r) => Ok(self.root_val(*r)),
            Kind::List(xs) => self.list(xs),
            Kind::Map(entries) => self.map_literal(entries),
            Kind::Member(obj, name) => self.member(obj, name),
            Kind::Index(obj, index) => self.index(obj, index),
            Kind::Not(x) => self.not(x),
            Kind::Neg(x) => self.neg(e, x),
            Kind::Bin(op, l, r) => self.binary(e, *op, l, r),
            Kind::And(xs) => self.and(e, xs),
            Kind::Or(xs) => self.or(xs),
            Kind::Cond(c, a, b) => self.cond(c, a, b),
            Kind::Call(f, args) => self.call(*f, args),
        }
    }

    fn list(&mut self, xs: &'a [Expr]) -> R<'a> {
        let mut out = Vec::with_capacity(xs.len());
        for x in xs {
            match self.eval(x) {
                Ok(Val::Unknown(u)) => return Ok(Val::Unknown(u)),
                Ok(v) => out.push(v),
                Err(stop) => return Err(stop),
            }
        }
        Ok(Val::List(out.into()))
    }

    fn map_literal(&mut self, entries: &'a [(Expr, Expr)]) -> R<'a> {
        let mut out: Vec<(Rc<str>, Val<'a>)> = Vec::with_capacity(entries.len());
        let mut unknown = None;
        for (k, v) in entries {
            let key = self.eval(k)?;
            let val = self.eval(v)?;
            self.entry(&mut out, &mut unknown, k, key, val)?;
        }
        Ok(match unknown {
            Some(u) => Val::Unknown(u),
            None => Val::Map(out.into()),
        })
    }

    fn member(&mut self, obj: &'a Expr, name: &'a str) -> R<'a> {
        if let Kind::Root(Root::Request) = obj.kind {
            return self.request_field(name);
        }
        let o = self.place(obj)?;
        self.field(obj, o, name)
    }

    fn index(&mut self, obj: &'a Expr, index: &'a Expr) -> R<'a> {
        let o = self.place(obj)?;
        let k = self.eval(index)?;
        self.element(obj, index, o, k)
    }

    fn not(&mut self, x: &'a Expr) -> R<'a> {
        let v = self.eval(x)?;
        self.not_of(x, v)
    }

    fn neg(&mut self, e: &'a Expr, x: &'a Expr) -> R<'a> {
        let v = self.eval(x)?;
        self.neg_of(e, x, v)
    }

    fn binary(&mut self, e: &'a Expr, op: Op, l: &'a Expr, r: &'a Expr) -> R<'a> {
        let a = self.eval(l)?;
        let b = self.eval(r)?;
        self.apply(e, op, l, r, a, b)
    }

    fn cond(&mut self, c: &'a Expr, a: &'a Expr, b: &'a Expr) -> R<'a> {
        match self.eval(c)? {
            Val::Bool(true) => self.eval(a),
            Val::Bool(false) => self.eval(b),
            v => self.cond_of(c, v),
        }
    }

    fn call(&mut self, f: Func, args: &'a [Expr]) -> R<'a> {
        let x = &args[0];
        let a = if f == Func::Has {
            self.place(x)?
        } else {
            self.eval(x)?
        };
        let b = match args.get(1) {
            Some(y) => self.eval(y)?,
            None => Val::Null,
        };
        self.apply_call(f, args, a, b)
    }

    /// `a && b && …`: false if any side is false, even if another
    /// errored; else an error, a fetch still needed, or an unknown, in
    /// that order; else true.
    fn and(&mut self, e: &'a Expr, xs: &'a [Expr]) -> R<'a> {
        let mut acc = Absorbed::default();
        for x in xs {
            match self.eval(x) {
                Ok(Val::Bool(true)) => {}
                Ok(Val::Bool(false)) => {
                    if std::ptr::eq(e, self.root) {
                        self.false_at = Some(x);
                    }
                    return Ok(Val::Bool(false));
                }
                other => self.absorb(&mut acc, "&&", x, other)?,
            }
        }
        match acc {
            Absorbed {
                error: Some(why), ..
            } => Err(Stop::Err(why)),
            Absorbed {
                need: Some(path), ..
            } => Err(Stop::Need(path)),
            Absorbed {
                unknown: Some(u), ..
            } => Ok(Val::Unknown(u)),
            _ => Ok(Val::Bool(true)),
        }
    }

    /// `a || b || …`: true if any side is true, even if another errored;
    /// else a fetch still needed, an unknown, or an error, in that order;
    /// else false.
    fn or(&mut self, xs: &'a [Expr]) -> R<'a> {
        let mut acc = Absorbed::default();
        for x in xs {
            match self.eval(x) {
                Ok(Val::Bool(true)) => return Ok(Val::Bool(true)),
                Ok(Val::Bool(false)) => {}
                other => self.absorb(&mut acc, "||", x, other)?,
            }
        }
        match acc {
            Absorbed {
                need: Some(path), ..
            } => Err(Stop::Need(path)),
            Absorbed {
                unknown: Some(u), ..
            } => Ok(Val::Unknown(u)),
            Absorbed {
                error: Some(why), ..
            } => Err(Stop::Err(why)),
            _ => Ok(Val::Bool(false)),
        }
    }

    // ------------------------------------------------------------ leaves

    #[inline(never)]
    fn over_budget(&self) -> Stop {
        Stop::Abort(format!(
            "the rule exceeded its evaluation budget of {MAX_STEPS} steps"
        ))
    }

    /// Keeps what a side of `&&` / `||` gave that is not a bool: the
    /// first error, fetch and unknown. A bound exceeded stops all.
    #[inline(never)]
    fn absorb(&self, acc: &mut Absorbed, op: &str, x: &Expr, got: R<'a>) -> Result<(), Stop> {
        match got {
            Ok(Val::Unknown(u)) => {
                acc.unknown.get_or_insert(u);
            }
            Ok(v) => {
                if acc.error.is_none() {
                    acc.error = Some(format!(
                        "'{op}' needs true or false on each side, but `{}` is {}",
                        self.snip(x),
                        v.describe()
                    ));
                }
            }
            Err(Stop::Err(why)) => {
                acc.error.get_or_insert(why);
            }
            Err(Stop::Need(path)) => {
                acc.need.get_or_insert(path);
            }
            Err(abort) => return Err(abort),
        }
        Ok(())
    }

    #[inline(never)]
    fn not_of(&self, x: &Expr, v: Val<'a>) -> R<'a> {
        match v {
            Val::Bool(b) => Ok(Val::Bool(!b)),
            Val::Unknown(u) => Ok(Val::Unknown(u)),
            v => err(format!(
                "'!' needs true or false, but `{}` is {}",
                self.snip(x),
                v.describe()
            )),
        }
    }

    #[inline(never)]
    fn neg_of(&self, e: &Expr, x: &Expr, v: Val<'a>) -> R<'a> {
        match v {
            Val::Num(n) => match n.negate() {
                Ok(n) => Ok(Val::Num(n)),
                Err(why) => err(format!("{why} in `{}`", self.snip(e))),
            },
            Val::Unknown(u) => Ok(Val::Unknown(u)),
            v => err(format!(
                "'-' needs a number, but `{}` is {}",
                self.snip(x),
                v.describe()
            )),
        }
    }

    #[inline(never)]
    fn cond_of(&self, c: &Expr, v: Val<'a>) -> R<'a> {
        match v {
            Val::Unknown(u) => Ok(Val::Unknown(u)),
            v => err(format!(
                "the condition before '?' must be true or false, but `{}` is {}",
                self.snip(c),
                v.describe()
            )),
        }
    }

    fn root_val(&self, root: Root) -> Val<'a> {
        match root {
            Root::Auth => self.env.auth.map_or(Val::Null, norm),
            Root::Doc if self.fixed.is_some() => Val::Partial(Rc::from("")),
            Root::Doc => self.env.doc.map_or(Val::Null, norm),
            Root::Resource => self.env.resource.map_or(Val::Null, norm),
            Root::Request => {
                let r = self.env.request;
                let mut es: Vec<(Rc<str>, Val<'a>)> = vec![
                    (Rc::from("doc"), r.doc.map_or(Val::Null, norm)),
                    (Rc::from("time"), Val::Num(Num::I(r.time))),
                ];
                if let Some(size) = r.size {
                    es.push((Rc::from("size"), Val::Num(Num::of_u64(size))));
                }
                if let Some(id) = r.id {
                    es.push((Rc::from("id"), Val::Str(id)));
                }
                Val::Map(es.into())
            }
        }
    }

    /// `request.<name>`, without building the `request` map.
    fn request_field(&self, name: &str) -> R<'a> {
        let r = self.env.request;
        match (name, r.size, r.id) {
            ("doc", _, _) => Ok(r.doc.map_or(Val::Null, norm)),
            ("time", _, _) => Ok(Val::Num(Num::I(r.time))),
            ("size", Some(size), _) => Ok(Val::Num(Num::of_u64(size))),
            ("id", _, Some(id)) => Ok(Val::Str(id)),
            (_, size, id) => {
                let mut has = vec!["doc", "time"];
                has.extend(size.map(|_| "size"));
                has.extend(id.map(|_| "id"));
                let last = has.pop().unwrap_or_default();
                err(format!(
                    "`request` has no field `{name}`; it has {} and {last}",
                    has.join(", ")
                ))
            }
        }
    }

    /// A field of a partly known `doc`: the query's value when it fixes
    /// the field, `Partial` when it fixes fields below it, else `Unknown`.
    fn partial_field(&mut self, prefix: &str, name: &str) -> Val<'a> {
        let path = join(prefix, name);
        let Some(fx) = &mut self.fixed else {
            return Val::Unknown(path.into());
        };
        let map = fx.map;
        if let Some((key, values)) = map.get_key_value(path.as_str()) {
            let idx = if values.len() == 1 {
                0
            } else if let Some((_, idx)) = fx.assigned.iter().find(|(k, _)| *k == key.as_str()) {
                *idx
            } else {
                let idx = match fx.choices.get(fx.cursor) {
                    Some(c) => {
                        // Evaluation is deterministic: a replay meets the
                        // same fields in the same order.
                        debug_assert_eq!(c.key, key.as_str());
                        c.idx.min(values.len() - 1)
                    }
                    None => {
                        fx.choices.push(Choice {
                            key,
                            idx: 0,
                            count: values.len(),
                        });
                        0
                    }
                };
                fx.cursor += 1;
                fx.assigned.push((key, idx));
                idx
            };
            return norm(&values[idx]);
        }
        if fixes_below(map, &path) {
            Val::Partial(path.into())
        } else {
            Val::Unknown(path.into())
        }
    }

    /// `obj.name`, where `o` is the value of `obj`.
    #[inline(never)]
    fn field(&mut self, obj: &Expr, o: Val<'a>, name: &str) -> R<'a> {
        match &o {
            Val::Partial(prefix) => return Ok(self.partial_field(prefix, name)),
            Val::Unknown(u) => return Ok(Val::Unknown(u.clone())),
            _ => {}
        }
        match o.shape() {
            Shape::Map(m) => match m.get(name) {
                Some(v) => Ok(v),
                None => err(format!("`{}` has no field `{name}`", self.snip(obj))),
            },
            Shape::Null => err(format!(
                "`{}` is null{}, so it has no field `{name}`",
                self.snip(obj),
                if matches!(obj.kind, Kind::Root(Root::Auth)) {
                    " (not signed in)"
                } else {
                    ""
                }
            )),
            _ => err(format!(
                "`{}` is {}, not a map, so it has no field `{name}`",
                self.snip(obj),
                o.describe()
            )),
        }
    }

    /// `obj[index]`, where `o` and `k` are their values.
    #[inline(never)]
    fn element(&mut self, obj: &Expr, index: &Expr, o: Val<'a>, k: Val<'a>) -> R<'a> {
        if let Val::Unknown(u) = k {
            return Ok(Val::Unknown(u));
        }
        match &o {
            Val::Partial(prefix) => {
                return Ok(match k.shape() {
                    Shape::Str(s) => self.partial_field(prefix, s),
                    _ => Val::Unknown(prefix.clone()),
                });
            }
            Val::Unknown(u) => return Ok(Val::Unknown(u.clone())),
            _ => {}
        }
        match (o.shape(), k.shape()) {
            (Shape::List(l), Shape::Num(n)) => {
                let len = l.len();
                let Some(i) = n.whole() else {
                    return err(format!(
                        "a list index must be a whole number, but `{}` is {}",
                        self.snip(index),
                        n.text()
                    ));
                };
                match usize::try_from(i) {
                    Ok(i) if i < len => Ok(l.get(i).unwrap_or(Val::Null)),
                    _ => err(format!(
                        "index {i} is out of range for `{}`, which has {}",
                        self.snip(obj),
                        match len {
                            1 => "1 element".to_owned(),
                            n => format!("{n} elements"),
                        }
                    )),
                }
            }
            (Shape::List(_), _) => err(format!(
                "a list index must be a number, but `{}` is {}",
                self.snip(index),
                k.describe()
            )),
            (Shape::Map(m), Shape::Str(s)) => match m.get(s) {
                Some(v) => Ok(v),
                None => err(format!("`{}` has no field `{}`", self.snip(obj), short(s))),
            },
            (Shape::Map(_), _) => err(format!(
                "a map key must be a string, but `{}` is {}",
                self.snip(index),
                k.describe()
            )),
            _ => err(format!(
                "`{}` is {}; only lists and maps can be indexed",
                self.snip(obj),
                o.describe()
            )),
        }
    }

    /// One entry of a map literal.
    #[inline(never)]
    fn entry(
        &mut self,
        out: &mut Vec<(Rc<str>, Val<'a>)>,
        unknown: &mut Option<Rc<str>>,
        k: &Expr,
        key: Val<'a>,
        val: Val<'a>,
    ) -> Result<(), Stop> {
        match (&key, &val) {
            (Val::Unknown(u), _) | (_, Val::Unknown(u)) => {
                unknown.get_or_insert(u.clone());
                return Ok(());
            }
            _ => {}
        }
        let Shape::Str(s) = key.shape() else {
            return err(format!(
                "map keys must be strings, but `{}` is {}",
                self.snip(k),
                key.describe()
            ));
        };
        self.charge(out.len() as u64)?;
        if out.iter().any(|(k2, _)| &**k2 == s) {
            return err(format!("the key '{}' appears twice in a map", short(s)));
        }
        out.push((Rc::from(s), val));
        Ok(())
    }

    /// `l op r`, where `a` and `b` are their values.
    #[inline(never)]
    fn apply(&mut self, e: &Expr, op: Op, l: &Expr, r: &Expr, a: Val<'a>, b: Val<'a>) -> R<'a> {
        if let Val::Unknown(u) = a {
            return Ok(Val::Unknown(u));
        }
        if let Val::Unknown(u) = b {
            return Ok(Val::Unknown(u));
        }
        let arith = match op {
            Op::Eq => return Ok(Val::Bool(self.equal(&a, &b, 0)?)),
            Op::Ne => return Ok(Val::Bool(!self.equal(&a, &b, 0)?)),
            Op::In => return Ok(Val::Bool(self.contains(r, &b, l, &a)?)),
            Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                let ord = match (a.shape(), b.shape()) {
                    (Shape::Num(x), Shape::Num(y)) => x.order(y),
                    (Shape::Str(x), Shape::Str(y)) => {
                        self.charge_bytes(x.len().min(y.len()))?;
                        x.cmp(y)
                    }
                    _ => {
                        return err(format!(
                            "'{}' orders two numbers or two strings, but `{}` is {} and `{}` is {}",
                            op.symbol(),
                            self.snip(l),
                            a.describe(),
                            self.snip(r),
                            b.describe()
                        ));
                    }
                };
                return Ok(Val::Bool(match op {
                    Op::Lt => ord.is_lt(),
                    Op::Le => ord.is_le(),
                    Op::Gt => ord.is_gt(),
                    _ => ord.is_ge(),
                }));
            }
            Op::Add => return self.add(l, r, &a, &b),
            Op::Sub => Num::minus,
            Op::Mul => Num::times,
            Op::Div => Num::divide,
            Op::Mod => Num::modulo,
        };
        match (a.shape(), b.shape()) {
            (Shape::Num(x), Shape::Num(y)) => match arith(x, y) {
                Ok(n) => Ok(Val::Num(n)),
                Err(why) => err(format!("{why} in `{}`", self.snip(e))),
            },
            _ => err(format!(
                "'{}' needs two numbers, but `{}` is {} and `{}` is {}",
                op.symbol(),
                self.snip(l),
                a.describe(),
                self.snip(r),
                b.describe()
            )),
        }
    }

    fn add(&mut self, l: &Expr, r: &Expr, a: &Val<'a>, b: &Val<'a>) -> R<'a> {
        match (a.shape(), b.shape()) {
            (Shape::Num(x), Shape::Num(y)) => match x.plus(y) {
                Ok(n) => Ok(Val::Num(n)),
                Err(why) => err(format!("{why} in `{} + {}`", self.snip(l), self.snip(r))),
            },
            (Shape::Str(x), Shape::Str(y)) => {
                let n = x.len() + y.len();
                if n > MAX_BUILT {
                    return Err(Stop::Abort(format!(
                        "a string built with '+' would be {n} bytes long; at most {MAX_BUILT} are allowed"
                    )));
                }
                self.charge_bytes(n)?;
                let mut s = String::with_capacity(n);
                s.push_str(x);
                s.push_str(y);
                Ok(Val::OStr(s.into()))
            }
            (Shape::List(x), Shape::List(y)) => {
                let n = x.len() + y.len();
                if n > MAX_BUILT {
                    return Err(Stop::Abort(format!(
                        "a list built with '+' would have {n} elements; at most {MAX_BUILT} are allowed"
                    )));
                }
                self.charge_elems(n)?;
                let mut v = Vec::with_capacity(n);
                x.push_all(&mut v);
                y.push_all(&mut v);
                Ok(Val::List(v.into()))
            }
            (sa, sb) => {
                let convert = matches!(
                    (sa, sb),
                    (Shape::Str(_), Shape::Num(_) | Shape::Bool(_) | Shape::Null)
                        | (Shape::Num(_) | Shape::Bool(_) | Shape::Null, Shape::Str(_))
                );
                err(format!(
                    "'+' adds two numbers or joins two strings or two lists, but `{}` is {} and `{}` is {}{}",
                    self.snip(l),
                    a.describe(),
                    self.snip(r),
                    b.describe(),
                    if convert {
                        " (convert with string(…) first)"
                    } else {
                        ""
                    }
                ))
            }
        }
    }

    /// `item in c`, `contains(c, item)`.
    fn contains(
        &mut self,
        ce: &Expr,
        c: &Val<'a>,
        ie: &Expr,
        item: &Val<'a>,
    ) -> Result<bool, Stop> {
        match c.shape() {
            Shape::List(l) => {
                for i in 0..l.len() {
                    let x = l.get(i).unwrap_or(Val::Null);
                    if self.equal(item, &x, 0)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Shape::Map(m) => match item.shape() {
                Shape::Str(k) => Ok(m.has(k)),
                _ => err(format!(
                    "a map's keys are strings, but `{}` is {}",
                    self.snip(ie),
                    item.describe()
                )),
            },
            Shape::Str(s) => match item.shape() {
                Shape::Str(sub) => {
                    self.charge_bytes(s.len())?;
                    Ok(s.contains(sub))
                }
                _ => err(format!(
                    "only a string can be found in a string, but `{}` is {}",
                    self.snip(ie),
                    item.describe()
                )),
            },
            _ => err(format!(
                "'in' and contains() look in a list, a map or a string, but `{}` is {}",
                self.snip(ce),
                c.describe()
            )),
        }
    }

    /// Deep equality: numbers by value (`1 == 1.0`), lists element by
    /// element, maps by their keys and values; values of different types
    /// are unequal.
    fn equal(&mut self, a: &Val<'a>, b: &Val<'a>, depth: usize) -> Result<bool, Stop> {
        self.charge(ELEM)?;
        if depth > MAX_VALUE_DEPTH {
            return err("the values compared nest too deeply".into());
        }
        Ok(match (a.shape(), b.shape()) {
            (Shape::Null, Shape::Null) => true,
            (Shape::Bool(x), Shape::Bool(y)) => x == y,
            (Shape::Num(x), Shape::Num(y)) => x.order(y).is_eq(),
            (Shape::Str(x), Shape::Str(y)) => {
                self.charge_bytes(x.len().min(y.len()))?;
                x == y
            }
            (Shape::List(x), Shape::List(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for i in 0..x.len() {
                    let (p, q) = (x.get(i).unwrap_or(Val::Null), y.get(i).unwrap_or(Val::Null));
                    if !self.equal(&p, &q, depth + 1)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Shape::Map(x), Shape::Map(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (k, v) in x.entries() {
                    match y.get(k) {
                        Some(w) if self.equal(&v, &w, depth + 1)? => {}
                        _ => return Ok(false),
                    }
                }
                true
            }
            _ => false,
        })
    }

    /// `f(args…)`, where `a` and `b` are the values of the arguments
    /// (`b` null when there is one).
    #[inline(never)]
    fn apply_call(&mut self, f: Func, args: &[Expr], a: Val<'a>, b: Val<'a>) -> R<'a> {
        let x = &args[0];
        if f == Func::Has {
            return self.has(x, &args[1], a, b);
        }
        if let Val::Unknown(u) = a {
            return Ok(Val::Unknown(u));
        }
        if let Val::Unknown(u) = b {
            return Ok(Val::Unknown(u));
        }
        let name = f.name();
        match f {
            Func::Size => match a.shape() {
                Shape::Str(s) => {
                    self.charge_bytes(s.len())?;
                    Ok(Val::Num(Num::of_u64(s.chars().count() as u64)))
                }
                Shape::List(l) => Ok(Val::Num(Num::of_u64(l.len() as u64))),
                Shape::Map(m) => Ok(Val::Num(Num::of_u64(m.len() as u64))),
                _ => err(format!(
                    "size(…) measures a string, a list or a map, but `{}` is {}",
                    self.snip(x),
                    a.describe()
                )),
            },
            Func::Changed => self.changed(x, &a),
            Func::Get => Ok(self.fetch(x, &a, name)?.unwrap_or(Val::Null)),
            Func::Exists => Ok(Val::Bool(self.fetch(x, &a, name)?.is_some())),
            Func::StartsWith | Func::EndsWith => match (a.shape(), b.shape()) {
                (Shape::Str(s), Shape::Str(p)) => {
                    self.charge_bytes(p.len())?;
                    Ok(Val::Bool(if f == Func::StartsWith {
                        s.starts_with(p)
                    } else {
                        s.ends_with(p)
                    }))
                }
                _ => err(format!(
                    "{name}(…) needs two strings, but `{}` is {} and `{}` is {}",
                    self.snip(x),
                    a.describe(),
                    self.snip(&args[1]),
                    b.describe()
                )),
            },
            Func::Contains => Ok(Val::Bool(self.contains(x, &a, &args[1], &b)?)),
            Func::Lower | Func::Upper => {
                let Shape::Str(s) = a.shape() else {
                    return err(format!(
                        "{name}(…) needs a string, but `{}` is {}",
                        self.snip(x),
                        a.describe()
                    ));
                };
                self.charge_bytes(s.len())?;
                if s.len() > MAX_BUILT {
                    return Err(self.too_long(name));
                }
                let t = if f == Func::Lower {
                    s.to_lowercase()
                } else {
                    s.to_uppercase()
                };
                if t.len() > MAX_BUILT {
                    return Err(self.too_long(name));
                }
                Ok(Val::OStr(t.into()))
            }
            Func::Type => Ok(Val::Str(a.type_name())),
            Func::Keys => match a.shape() {
                Shape::Map(m) => {
                    self.charge_elems(m.len())?;
                    Ok(Val::List(m.keys().into()))
                }
                _ => err(format!(
                    "keys(…) needs a map, but `{}` is {}",
                    self.snip(x),
                    a.describe()
                )),
            },
            Func::Int => match a.shape() {
                Shape::Num(Num::I(i)) => Ok(Val::Num(Num::I(i))),
                Shape::Num(Num::F(f)) => {
                    let t = f.trunc();
                    if (-TWO_63..TWO_63).contains(&t) {
                        Ok(Val::Num(Num::I(t as i64)))
                    } else {
                        err(format!(
                            "int(…): `{}` is too large for an integer",
                            self.snip(x)
                        ))
                    }
                }
                Shape::Str(s) => match s.parse::<i64>() {
                    Ok(i) => Ok(Val::Num(Num::I(i))),
                    Err(_) => err(format!("int(…) cannot read '{}' as an integer", short(s))),
                },
                _ => err(format!(
                    "int(…) converts a number or a string, but `{}` is {}",
                    self.snip(x),
                    a.describe()
                )),
            },
            Func::String => match a.shape() {
                Shape::Str(_) => Ok(a),
                Shape::Num(n) => Ok(Val::OStr(n.text().into())),
                Shape::Bool(b) => Ok(Val::Str(if b { "true" } else { "false" })),
                Shape::Null => Ok(Val::Str("null")),
                _ => {
                    let mut out = String::new();
                    self.write_json(&a, &mut out, 0)?;
                    Ok(Val::OStr(out.into()))
                }
            },
            Func::Has => unreachable!("has() is handled above"),
        }
    }

    fn too_long(&self, name: &str) -> Stop {
        Stop::Abort(format!(
            "{name}(…) would build a string of more than {MAX_BUILT} bytes; at most {MAX_BUILT} are allowed"
        ))
    }

    /// `has(map, key)`: whether the map has the key.
    fn has(&mut self, m: &Expr, k: &Expr, map: Val<'a>, key: Val<'a>) -> R<'a> {
        if let Val::Unknown(u) = key {
            return Ok(Val::Unknown(u));
        }
        let Shape::Str(name) = key.shape() else {
            return err(format!(
                "has(…) needs a string key, but `{}` is {}",
                self.snip(k),
                key.describe()
            ));
        };
        match &map {
            Val::Partial(prefix) => {
                // A field the query fixes is present in every document it
                // returns.
                let path = join(prefix, name);
                let fixed = self.fixed.as_ref().map(|fx| fx.map);
                return Ok(match fixed {
                    Some(f) if f.contains_key(&path) || fixes_below(f, &path) => Val::Bool(true),
                    _ => Val::Unknown(path.into()),
                });
            }
            Val::Unknown(u) => return Ok(Val::Unknown(u.clone())),
            _ => {}
        }
        match map.shape() {
            Shape::Map(o) => Ok(Val::Bool(o.has(name))),
            _ => err(format!(
                "has(…) looks in a map, but `{}` is {}",
                self.snip(m),
                map.describe()
            )),
        }
    }

    /// `changed(path)`: whether `request.doc` and `doc` differ at a dotted
    /// field path; a field present on one side only has changed.
    fn changed(&mut self, x: &Expr, path: &Val<'a>) -> R<'a> {
        let Shape::Str(p) = path.shape() else {
            return err(format!(
                "changed(…) takes a field path such as 'owner' or 'address.city', but `{}` is {}",
                self.snip(x),
                path.describe()
            ));
        };
        if p.split('.').any(str::is_empty) {
            return err(format!(
                "changed(…) takes a field path such as 'owner' or 'address.city', not '{}'",
                short(p)
            ));
        }
        let new = self.env.request.doc.map_or(Val::Null, norm);
        let old = self.root_val(Root::Doc);
        let new = self.navigate(new, p);
        let old = self.navigate(old, p);
        match (new, old) {
            (Some(Val::Unknown(u)), _) | (_, Some(Val::Unknown(u))) => Ok(Val::Unknown(u)),
            (None, None) => Ok(Val::Bool(false)),
            (Some(a), Some(b)) => Ok(Val::Bool(!self.equal(&a, &b, 0)?)),
            _ => Ok(Val::Bool(true)),
        }
    }

    /// The value at a dotted path, `None` when absent (a missing field, or
    /// something on the way that is not a map).
    fn navigate(&mut self, mut v: Val<'a>, path: &str) -> Option<Val<'a>> {
        for seg in path.split('.') {
            v = match v {
                Val::Partial(prefix) => self.partial_field(&prefix, seg),
                Val::Unknown(u) => return Some(Val::Unknown(u)),
                other => match other.shape() {
                    Shape::Map(m) => m.get(seg)?,
                    _ => return None,
                },
            };
        }
        Some(match v {
            Val::Partial(p) => Val::Unknown(p),
            v => v,
        })
    }

    /// `get(path)` / `exists(path)`: the document at 'collection/id', or
    /// `None` when there is none.
    fn fetch(&mut self, x: &Expr, path: &Val<'a>, name: &str) -> Result<Option<Val<'a>>, Stop> {
        let Shape::Str(p) = path.shape() else {
            return err(format!(
                "{name}(…) takes a path such as 'users/alice', but `{}` is {}",
                self.snip(x),
                path.describe()
            ));
        };
        let mut parts = p.split('/');
        let valid = matches!(
            (parts.next(), parts.next(), parts.next()),
            (Some(c), Some(id), None) if !c.is_empty() && !id.is_empty()
        );
        if !valid {
            return err(format!(
                "{name}(…) takes a path 'collection/id', but `{}` is '{}'",
                self.snip(x),
                short(p)
            ));
        }
        let at = match self.fetched.iter().position(|(q, _)| q == p) {
            Some(at) => at,
            None => {
                if self.fetched.len() >= MAX_LOOKUPS {
                    return Err(Stop::Abort(format!(
                        "the rule reads more than {MAX_LOOKUPS} documents with get() and exists()"
                    )));
                }
                let lookup: &'a dyn Lookup = self.lookup;
                let fetch = match lookup.lookup(p) {
                    Looked::Found(Cow::Borrowed(v)) => Fetch::Found(norm(v)),
                    Looked::Found(Cow::Owned(v)) => match owned(v, MAX_VALUE_DEPTH) {
                        Some(v) => Fetch::Found(v),
                        None => {
                            return err(format!("the document '{}' nests too deeply", short(p)));
                        }
                    },
                    Looked::Missing => Fetch::Missing,
                    Looked::NotFetched => Fetch::Pending,
                };
                self.fetched.push((p.to_owned(), fetch));
                self.fetched.len() - 1
            }
        };
        match &self.fetched[at].1 {
            Fetch::Found(v) => Ok(Some(v.clone())),
            Fetch::Missing => Ok(None),
            Fetch::Pending => Err(Stop::Need(p.to_owned())),
        }
    }

    /// JSON text for `string()` of a list or a map, capped.
    fn write_json(&mut self, v: &Val<'a>, out: &mut String, depth: usize) -> Result<(), Stop> {
        self.charge(ELEM)?;
        if depth > MAX_VALUE_DEPTH {
            return err("the value nests too deeply for string(…)".into());
        }
        let before = out.len();
        match v.shape() {
            Shape::Null | Shape::Unknown => out.push_str("null"),
            Shape::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Shape::Num(n) => out.push_str(&n.text()),
            Shape::Str(s) => {
                if out.len() + s.len() > MAX_BUILT {
                    return Err(self.too_long("string"));
                }
                out.push_str(&Value::from(s).to_string());
            }
            Shape::List(l) => {
                out.push('[');
                for i in 0..l.len() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write_json(&l.get(i).unwrap_or(Val::Null), out, depth + 1)?;
                }
                out.push(']');
            }
            Shape::Map(m) => {
                out.push('{');
                for (i, (k, x)) in m.entries().into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if out.len() + k.len() > MAX_BUILT {
                        return Err(self.too_long("string"));
                    }
                    out.push_str(&Value::from(k).to_string());
                    out.push(':');
                    self.write_json(&x, out, depth + 1)?;
                }
                out.push('}');
            }
        }
        if out.len() > MAX_BUILT {
            return Err(self.too_long("string"));
        }
        self.charge_bytes(out.len() - before.min(out.len()))
    }
}

/// Whether the query fixes a field below `path` (`address.city` below
/// `address`).
fn fixes_below(map: &BTreeMap<String, Vec<Value>>, path: &str) -> bool {
    let prefix = format!("{path}.");
    map.range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}
