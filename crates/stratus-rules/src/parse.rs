//! The parser: precedence climbing over the tokens, with its recursion
//! bounded. Every nested construct (parentheses, a list, a map, call
//! arguments, an index, the branches of `?:`) goes through
//! [`Parser::expr`], which counts its depth; and every node records its
//! height, refused past [`MAX_DEPTH`]. Chains that do not nest (`a && b &&
//! c`, `!!x`, `a.b.c`) are parsed by loops, and `&&` / `||` chains become
//! one node each, so a long conjunction costs no depth.
//!
//! The functions on the recursive path keep their stack frames small (a
//! debug build's frames hold every temporary): messages are formatted in
//! closures or in functions of their own, called only on the way out.

use crate::lex::{T, Tok, lex};
use crate::value::Num;
use crate::{MAX_DEPTH, MAX_SOURCE_BYTES, ParseError};

#[derive(Clone, Debug)]
pub(crate) struct Expr {
    pub kind: Kind,
    /// Byte offsets of the expression's source.
    pub start: usize,
    pub end: usize,
    height: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Num(Num),
    Str(Box<str>),
    Root(Root),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Member(Box<Expr>, Box<str>),
    Index(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Root {
    Auth,
    Doc,
    Request,
    Resource,
}

impl Root {
    const ALL: [Root; 4] = [Root::Auth, Root::Doc, Root::Request, Root::Resource];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Root::Auth => "auth",
            Root::Doc => "doc",
            Root::Request => "request",
            Root::Resource => "resource",
        }
    }

    fn by_name(name: &str) -> Option<Root> {
        Root::ALL.into_iter().find(|r| r.name() == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl Op {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
            Op::Mod => "%",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Size,
    Changed,
    Get,
    Exists,
    StartsWith,
    EndsWith,
    Contains,
    Lower,
    Upper,
    Type,
    Has,
    Keys,
    Int,
    String,
}

impl Func {
    const ALL: [Func; 14] = [
        Func::Size,
        Func::Changed,
        Func::Get,
        Func::Exists,
        Func::StartsWith,
        Func::EndsWith,
        Func::Contains,
        Func::Lower,
        Func::Upper,
        Func::Type,
        Func::Has,
        Func::Keys,
        Func::Int,
        Func::String,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Func::Size => "size",
            Func::Changed => "changed",
            Func::Get => "get",
            Func::Exists => "exists",
            Func::StartsWith => "starts_with",
            Func::EndsWith => "ends_with",
            Func::Contains => "contains",
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Type => "type",
            Func::Has => "has",
            Func::Keys => "keys",
            Func::Int => "int",
            Func::String => "string",
        }
    }

    fn arity(self) -> usize {
        match self {
            Func::StartsWith | Func::EndsWith | Func::Contains | Func::Has => 2,
            _ => 1,
        }
    }

    /// Whether `x.f(…)` may stand for `f(x, …)`: not for the functions
    /// whose argument is a path rather than a value.
    fn method(self) -> bool {
        !matches!(self, Func::Changed | Func::Get | Func::Exists)
    }

    fn by_name(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == name)
    }

    fn list() -> String {
        Func::ALL.map(Func::name).join(", ")
    }
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn given(n: usize) -> String {
    match n {
        1 => "1 was given".to_owned(),
        n => format!("{n} were given"),
    }
}

type P<T> = Result<T, ParseError>;

/// Binding strengths of the infix operators.
const OR: u8 = 1;
const AND: u8 = 2;
const CMP: u8 = 3;
const ADD: u8 = 4;
const MUL: u8 = 5;

#[derive(Clone, Copy)]
enum Infix {
    Or,
    And,
    Bin(Op),
}

pub(crate) fn parse(src: &str, roots: &[&str]) -> P<Expr> {
    if src.len() > MAX_SOURCE_BYTES {
        return Err(ParseError::new(
            src,
            0,
            format!(
                "the rule is {} bytes long; a rule may be at most {MAX_SOURCE_BYTES} bytes",
                src.len()
            ),
        ));
    }
    let toks = lex(src)?;
    let allowed = Root::ALL
        .into_iter()
        .filter(|r| roots.contains(&r.name()))
        .collect();
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
        allowed,
    };
    if p.peek().t == T::Eof {
        return Err(p.error_at(
            0,
            "the rule is empty; write an expression such as `auth != null`",
        ));
    }
    let e = p.expr()?;
    if p.peek().t != T::Eof {
        return Err(p.trailing());
    }
    Ok(e)
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Tok>,
    pos: usize,
    /// How many `expr` calls are active.
    depth: usize,
    allowed: Vec<Root>,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos]
    }

    fn bump(&mut self) {
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, t: &T) -> bool {
        if self.peek().t == *t {
            self.bump();
            true
        } else {
            false
        }
    }

    /// The end of the last token taken.
    fn last_end(&self) -> usize {
        self.toks[self.pos.saturating_sub(1)].end
    }

    fn text(&self, tok: &Tok) -> &str {
        &self.src[tok.start..tok.end]
    }

    fn text_at(&self, i: usize) -> &str {
        self.text(&self.toks[i])
    }

    // ------------------------------------------------ the recursive path

    #[inline(never)]
    fn expr(&mut self) -> P<Expr> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.too_deep(self.peek().start));
        }
        let e = match self.binary(OR) {
            Ok(c) if self.peek().t == T::Question => self.ternary(c),
            other => other,
        };
        self.depth -= 1;
        e
    }

    /// `c ? a : b`, after `c`.
    #[inline(never)]
    fn ternary(&mut self, c: Expr) -> P<Expr> {
        let q = self.peek().start;
        self.bump();
        let a = self.expr()?;
        if !self.eat(&T::Colon) {
            return Err(self.expected(|p| format!("expected ':' for the '?' at {}", p.place(q))));
        }
        let b = self.expr()?;
        self.cond_node(c, a, b)
    }

    /// Operands joined by infix operators binding at least `min`.
    #[inline(never)]
    fn binary(&mut self, min: u8) -> P<Expr> {
        let mut l = self.operand()?;
        let mut compared = false;
        while let Some((op, strength)) = self.infix() {
            if strength < min {
                break;
            }
            if compared && strength == CMP {
                return Err(self.chained());
            }
            self.bump();
            let r = self.binary(strength + 1)?;
            l = self.combine(op, l, r)?;
            compared = strength == CMP;
        }
        Ok(l)
    }

    /// Prefix operators, a primary, and its suffixes (`.name`,
    /// `.f(…)`, `[i]`).
    #[inline(never)]
    fn operand(&mut self) -> P<Expr> {
        let first = self.pos;
        while matches!(self.peek().t, T::Not | T::Minus) {
            self.bump();
        }
        let last = self.pos;
        let mut e = self.primary()?;
        while matches!(self.peek().t, T::Dot | T::LBracket) {
            e = self.suffix(e)?;
        }
        if first == last {
            Ok(e)
        } else {
            self.prefix(e, first, last)
        }
    }

    #[inline(never)]
    fn suffix(&mut self, e: Expr) -> P<Expr> {
        if self.peek().t == T::LBracket {
            let open = self.peek().start;
            self.bump();
            let index = self.expr()?;
            if !self.eat(&T::RBracket) {
                return Err(self
                    .expected(|p| format!("expected ']' to close the '[' at {}", p.place(open))));
            }
            return self.index_node(e, index);
        }
        self.bump();
        if self.peek().t != T::Ident {
            return Err(self.expected(|_| "expected a field or method name after '.'".into()));
        }
        let name = self.pos;
        self.bump();
        if self.peek().t != T::LParen {
            return self.member_node(e, name);
        }
        let f = self.method(name)?;
        self.bump();
        let args = self.args(f, Some(e))?;
        self.call_node(f, args, name, true)
    }

    /// The arguments of a call, after its '(', after `receiver` for a
    /// method.
    #[inline(never)]
    fn args(&mut self, f: Func, receiver: Option<Expr>) -> P<Vec<Expr>> {
        let mut out: Vec<Expr> = receiver.into_iter().collect();
        if self.eat(&T::RParen) {
            return Ok(out);
        }
        loop {
            out.push(self.expr()?);
            if self.eat(&T::Comma) {
                continue;
            }
            if self.eat(&T::RParen) {
                return Ok(out);
            }
            return Err(
                self.expected(|_| format!("expected ')' after the arguments of {}(…)", f.name()))
            );
        }
    }

    #[inline(never)]
    fn primary(&mut self) -> P<Expr> {
        let at = self.pos;
        match self.peek().t {
            T::Num(_) | T::Str(_) => {
                self.bump();
                self.literal(at)
            }
            T::Ident => {
                self.bump();
                if self.peek().t == T::LParen {
                    self.call(at)
                } else {
                    self.name(at)
                }
            }
            T::LParen => self.paren(),
            T::LBracket => self.list(),
            T::LBrace => self.map(),
            _ => Err(self.no_expression()),
        }
    }

    /// `f(…)`; `at` is the name.
    #[inline(never)]
    fn call(&mut self, at: usize) -> P<Expr> {
        let f = self.function(at)?;
        self.bump();
        let args = self.args(f, None)?;
        self.call_node(f, args, at, false)
    }

    #[inline(never)]
    fn paren(&mut self) -> P<Expr> {
        let open = self.peek().start;
        self.bump();
        let e = self.expr()?;
        if !self.eat(&T::RParen) {
            return Err(
                self.expected(|p| format!("expected ')' to close the '(' at {}", p.place(open)))
            );
        }
        Ok(self.reparen(e, open))
    }

    #[inline(never)]
    fn list(&mut self) -> P<Expr> {
        let open = self.peek().start;
        self.bump();
        let mut xs = Vec::new();
        loop {
            if self.eat(&T::RBracket) {
                break;
            }
            xs.push(self.expr()?);
            if self.eat(&T::Comma) {
                continue;
            }
            if self.eat(&T::RBracket) {
                break;
            }
            return Err(self.expected(|p| {
                format!(
                    "expected ',' or ']' in the list opened at {}",
                    p.place(open)
                )
            }));
        }
        self.node(Kind::List(xs), open, self.last_end())
    }

    #[inline(never)]
    fn map(&mut self) -> P<Expr> {
        let open = self.peek().start;
        self.bump();
        let mut es = Vec::new();
        loop {
            if self.eat(&T::RBrace) {
                break;
            }
            if let Some(e) = self.bare_key() {
                return Err(e);
            }
            let k = self.expr()?;
            if !self.eat(&T::Colon) {
                return Err(self.expected(|_| "expected ':' after the map key".into()));
            }
            let v = self.expr()?;
            es.push((k, v));
            if self.eat(&T::Comma) {
                continue;
            }
            if self.eat(&T::RBrace) {
                break;
            }
            return Err(self.expected(|p| {
                format!(
                    "expected ',' or '}}' in the map opened at {}",
                    p.place(open)
                )
            }));
        }
        self.node(Kind::Map(es), open, self.last_end())
    }

    // ---------------------------------------- leaves: nodes and messages

    fn infix(&self) -> Option<(Infix, u8)> {
        let tok = self.peek();
        let bin = |op| Some((Infix::Bin(op), CMP));
        match tok.t {
            T::Or => Some((Infix::Or, OR)),
            T::And => Some((Infix::And, AND)),
            T::Eq => bin(Op::Eq),
            T::Ne => bin(Op::Ne),
            T::Lt => bin(Op::Lt),
            T::Le => bin(Op::Le),
            T::Gt => bin(Op::Gt),
            T::Ge => bin(Op::Ge),
            T::Ident if self.text(tok) == "in" => bin(Op::In),
            T::Plus => Some((Infix::Bin(Op::Add), ADD)),
            T::Minus => Some((Infix::Bin(Op::Sub), ADD)),
            T::Star => Some((Infix::Bin(Op::Mul), MUL)),
            T::Slash => Some((Infix::Bin(Op::Div), MUL)),
            T::Percent => Some((Infix::Bin(Op::Mod), MUL)),
            _ => None,
        }
    }

    /// A node, refused when it would make the tree too tall.
    #[inline(never)]
    fn node(&self, kind: Kind, start: usize, end: usize) -> P<Expr> {
        fn h(e: &Expr) -> usize {
            e.height
        }
        let below = match &kind {
            Kind::Null | Kind::Bool(_) | Kind::Num(_) | Kind::Str(_) | Kind::Root(_) => 0,
            Kind::List(xs) | Kind::And(xs) | Kind::Or(xs) | Kind::Call(_, xs) => {
                xs.iter().map(h).max().unwrap_or(0)
            }
            Kind::Map(es) => es.iter().map(|(k, v)| h(k).max(h(v))).max().unwrap_or(0),
            Kind::Member(x, _) | Kind::Not(x) | Kind::Neg(x) => h(x),
            Kind::Index(a, b) | Kind::Bin(_, a, b) => h(a).max(h(b)),
            Kind::Cond(a, b, c) => h(a).max(h(b)).max(h(c)),
        };
        if below + 1 > MAX_DEPTH {
            return Err(self.too_deep(start));
        }
        Ok(Expr {
            kind,
            start,
            end,
            height: below + 1,
        })
    }

    /// `l op r`; a chain of `&&` (`||`) is one node.
    #[inline(never)]
    fn combine(&self, op: Infix, l: Expr, r: Expr) -> P<Expr> {
        let (start, end) = (l.start, r.end);
        let kind = match (op, l.kind) {
            (Infix::Bin(op), kind) => Kind::Bin(op, Box::new(Expr { kind, ..l }), Box::new(r)),
            (Infix::And, Kind::And(mut xs)) => {
                xs.push(r);
                Kind::And(xs)
            }
            (Infix::And, kind) => Kind::And(vec![Expr { kind, ..l }, r]),
            (Infix::Or, Kind::Or(mut xs)) => {
                xs.push(r);
                Kind::Or(xs)
            }
            (Infix::Or, kind) => Kind::Or(vec![Expr { kind, ..l }, r]),
        };
        self.node(kind, start, end)
    }

    #[inline(never)]
    fn cond_node(&self, c: Expr, a: Expr, b: Expr) -> P<Expr> {
        let (start, end) = (c.start, b.end);
        self.node(
            Kind::Cond(Box::new(c), Box::new(a), Box::new(b)),
            start,
            end,
        )
    }

    #[inline(never)]
    fn index_node(&self, e: Expr, index: Expr) -> P<Expr> {
        let start = e.start;
        self.node(
            Kind::Index(Box::new(e), Box::new(index)),
            start,
            self.last_end(),
        )
    }

    #[inline(never)]
    fn member_node(&self, e: Expr, name: usize) -> P<Expr> {
        let start = e.start;
        let end = self.toks[name].end;
        let kind = Kind::Member(Box::new(e), self.text_at(name).into());
        self.node(kind, start, end)
    }

    /// The expression in parentheses, its source now including them.
    #[inline(never)]
    fn reparen(&self, mut e: Expr, open: usize) -> Expr {
        e.start = open;
        e.end = self.last_end();
        e
    }

    /// Prefix operators, the tokens `first..last`, applied to `e`.
    #[inline(never)]
    fn prefix(&self, mut e: Expr, first: usize, last: usize) -> P<Expr> {
        for i in (first..last).rev() {
            let not = self.toks[i].t == T::Not;
            let start = self.toks[i].start;
            let end = e.end;
            e = match e.kind {
                // `-5` is a literal.
                Kind::Num(n) if !not => Expr {
                    kind: Kind::Num(match n {
                        Num::I(i) => Num::I(i.wrapping_neg()),
                        Num::F(f) => Num::F(-f),
                    }),
                    start,
                    end,
                    height: e.height,
                },
                kind => {
                    let inner = Box::new(Expr { kind, ..e });
                    let kind = if not {
                        Kind::Not(inner)
                    } else {
                        Kind::Neg(inner)
                    };
                    self.node(kind, start, end)?
                }
            };
        }
        Ok(e)
    }

    #[inline(never)]
    fn literal(&self, at: usize) -> P<Expr> {
        let tok = &self.toks[at];
        let kind = match &tok.t {
            T::Num(n) => Kind::Num(*n),
            T::Str(s) => Kind::Str(s.as_str().into()),
            _ => Kind::Null,
        };
        self.node(kind, tok.start, tok.end)
    }

    /// A name not followed by '(': a literal keyword or a variable.
    #[inline(never)]
    fn name(&self, at: usize) -> P<Expr> {
        let tok = &self.toks[at];
        let (start, end) = (tok.start, tok.end);
        let name = self.text(tok);
        match name {
            "null" => return self.node(Kind::Null, start, end),
            "true" => return self.node(Kind::Bool(true), start, end),
            "false" => return self.node(Kind::Bool(false), start, end),
            "in" => return Err(self.error_at(start, "expected an expression, found `in`")),
            _ => {}
        }
        if Func::by_name(name).is_some() {
            return Err(self.error_at(
                start,
                format!("`{name}` is a function: call it as {name}(…)"),
            ));
        }
        let can_use = match self.allowed.as_slice() {
            [] => "no variables".to_owned(),
            roots => roots
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(", "),
        };
        match Root::by_name(name) {
            Some(root) if self.allowed.contains(&root) => self.node(Kind::Root(root), start, end),
            Some(_) => Err(self.error_at(
                start,
                format!("`{name}` is not available in this rule; it can use {can_use}"),
            )),
            None => Err(self.error_at(
                start,
                match self.hint(tok) {
                    Some(hint) => hint,
                    None => format!("unknown name `{name}`; this rule can use {can_use}"),
                },
            )),
        }
    }

    /// The function a name followed by '(' calls.
    #[inline(never)]
    fn function(&self, at: usize) -> P<Func> {
        let name = self.text_at(at);
        Func::by_name(name).ok_or_else(|| {
            self.error_at(
                self.toks[at].start,
                format!(
                    "unknown function `{name}`; the functions are {}",
                    Func::list()
                ),
            )
        })
    }

    /// The function `.name(` calls.
    #[inline(never)]
    fn method(&self, at: usize) -> P<Func> {
        let name = self.text_at(at);
        let start = self.toks[at].start;
        match Func::by_name(name) {
            Some(f) if f.method() => Ok(f),
            Some(_) => Err(self.error_at(
                start,
                format!("{name}(…) cannot be called as a method; write {name}(…)"),
            )),
            None => Err(self.error_at(
                start,
                format!(
                    "unknown method `{name}`; the functions are {}",
                    Func::list()
                ),
            )),
        }
    }

    /// A call, its arguments counted; `at` is the function's name.
    #[inline(never)]
    fn call_node(&self, f: Func, args: Vec<Expr>, at: usize, method: bool) -> P<Expr> {
        let name = f.name();
        let start = if method {
            args[0].start
        } else {
            self.toks[at].start
        };
        if args.len() != f.arity() {
            let message = if method {
                format!(
                    "`.{name}(…)` takes {} besides the value it is called on, but {}",
                    plural(f.arity() - 1, "argument"),
                    given(args.len() - 1)
                )
            } else {
                format!(
                    "{name}(…) takes {}, but {}",
                    plural(f.arity(), "argument"),
                    given(args.len())
                )
            };
            return Err(self.error_at(self.toks[at].start, message));
        }
        self.node(Kind::Call(f, args), start, self.last_end())
    }

    /// A map key written as a bare name (`{owner: 1}`), refused.
    #[inline(never)]
    fn bare_key(&self) -> Option<ParseError> {
        let key = self.peek();
        let next = &self.toks[(self.pos + 1).min(self.toks.len() - 1)];
        let name = self.text(key);
        (key.t == T::Ident && next.t == T::Colon && Root::by_name(name).is_none()).then(|| {
            self.error_at(
                key.start,
                format!("map keys are strings: write '{name}' in quotes"),
            )
        })
    }

    fn describe(&self, tok: &Tok) -> String {
        match &tok.t {
            T::Eof => "the end of the rule".into(),
            T::Str(_) => "a string".into(),
            T::Num(_) => format!("the number {}", self.text(tok)),
            T::Ident => format!("`{}`", self.text(tok)),
            _ => format!("'{}'", self.text(tok)),
        }
    }

    /// Where an offset is, for messages that point back: "column 7".
    fn place(&self, offset: usize) -> String {
        let e = ParseError::new(self.src, offset, String::new());
        if e.line > 1 {
            format!("line {}, column {}", e.line, e.column)
        } else {
            format!("column {}", e.column)
        }
    }

    fn hint(&self, tok: &Tok) -> Option<String> {
        let (word, op) = match self.text(tok) {
            "and" => ("and", "&&"),
            "or" => ("or", "||"),
            "not" => ("not", "!"),
            _ => return None,
        };
        (tok.t == T::Ident).then(|| format!("`{word}` is not an operator; write '{op}'"))
    }

    fn error_at(&self, offset: usize, message: impl Into<String>) -> ParseError {
        ParseError::new(self.src, offset, message)
    }

    /// "expected …" at the current token, saying what was found instead.
    #[inline(never)]
    fn expected(&self, what: impl FnOnce(&Self) -> String) -> ParseError {
        let tok = self.peek();
        let mut message = format!("{}, found {}", what(self), self.describe(tok));
        if let Some(hint) = self.hint(tok) {
            message = format!("{message} ({hint})");
        }
        self.error_at(tok.start, message)
    }

    #[inline(never)]
    fn no_expression(&self) -> ParseError {
        let tok = self.peek();
        let message = match self.hint(tok) {
            Some(hint) => hint,
            None => format!("expected an expression, found {}", self.describe(tok)),
        };
        self.error_at(tok.start, message)
    }

    #[inline(never)]
    fn chained(&self) -> ParseError {
        self.error_at(
            self.peek().start,
            "comparisons cannot be chained: write `a < b && b < c`, or add parentheses",
        )
    }

    #[inline(never)]
    fn too_deep(&self, offset: usize) -> ParseError {
        self.error_at(
            offset,
            format!("the rule nests more than {MAX_DEPTH} levels deep; simplify it"),
        )
    }

    #[inline(never)]
    fn trailing(&self) -> ParseError {
        let tok = self.peek();
        let message = match self.hint(tok) {
            Some(hint) => hint,
            None => format!(
                "expected an operator or the end of the rule, found {}",
                self.describe(tok)
            ),
        };
        self.error_at(tok.start, message)
    }
}
