//! Tokens. The whole source (at most [`crate::MAX_SOURCE_BYTES`]) is cut
//! into tokens up front; nothing here recurses.

use crate::ParseError;
use crate::value::Num;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum T {
    Num(Num),
    Str(String),
    /// A word: a name, a keyword (`null`, `true`, `false`, `in`) or a
    /// function; the parser tells them apart.
    Ident,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Dot,
    Colon,
    Question,
    Not,
    Minus,
    Plus,
    Star,
    Slash,
    Percent,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Eof,
}

#[derive(Clone, Debug)]
pub(crate) struct Tok {
    pub t: T,
    pub start: usize,
    pub end: usize,
}

pub(crate) fn lex(src: &str) -> Result<Vec<Tok>, ParseError> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let next = b.get(i + 1).copied();
        let (t, len) = match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => (T::LParen, 1),
            b')' => (T::RParen, 1),
            b'[' => (T::LBracket, 1),
            b']' => (T::RBracket, 1),
            b'{' => (T::LBrace, 1),
            b'}' => (T::RBrace, 1),
            b',' => (T::Comma, 1),
            b'.' => (T::Dot, 1),
            b':' => (T::Colon, 1),
            b'?' => (T::Question, 1),
            b'+' => (T::Plus, 1),
            b'-' => (T::Minus, 1),
            b'*' => (T::Star, 1),
            b'/' => (T::Slash, 1),
            b'%' => (T::Percent, 1),
            b'=' | b'!' if next == Some(b'=') && b.get(i + 2) == Some(&b'=') => {
                let op = &src[i..i + 3];
                return Err(ParseError::new(
                    src,
                    i,
                    format!("'{op}' is not an operator; compare with '{}'", &op[..2]),
                ));
            }
            b'=' if next == Some(b'=') => (T::Eq, 2),
            b'=' => {
                return Err(ParseError::new(
                    src,
                    i,
                    "'=' is not an operator here; compare with '=='",
                ));
            }
            b'!' if next == Some(b'=') => (T::Ne, 2),
            b'!' => (T::Not, 1),
            b'<' if next == Some(b'=') => (T::Le, 2),
            b'<' => (T::Lt, 1),
            b'>' if next == Some(b'=') => (T::Ge, 2),
            b'>' => (T::Gt, 1),
            b'&' if next == Some(b'&') => (T::And, 2),
            b'&' => {
                return Err(ParseError::new(
                    src,
                    i,
                    "a single '&' is not an operator; write '&&' for \"and\"",
                ));
            }
            b'|' if next == Some(b'|') => (T::Or, 2),
            b'|' => {
                return Err(ParseError::new(
                    src,
                    i,
                    "a single '|' is not an operator; write '||' for \"or\"",
                ));
            }
            b'\'' | b'"' => {
                let (s, end) = string(src, i)?;
                (T::Str(s), end - i)
            }
            b'0'..=b'9' => {
                let (n, end) = number(src, i)?;
                (T::Num(n), end - i)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let len = b[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                (T::Ident, len)
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(ParseError::new(
                    src,
                    i,
                    format!("unexpected character '{ch}'"),
                ));
            }
        };
        i += len;
        toks.push(Tok { t, start, end: i });
    }
    toks.push(Tok {
        t: T::Eof,
        start: b.len(),
        end: b.len(),
    });
    Ok(toks)
}

/// A string literal starting at `start` (its quote); returns its value and
/// the offset just past the closing quote.
fn string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    let quote = char::from(src.as_bytes()[start]);
    let unterminated = || {
        ParseError::new(
            src,
            start,
            format!("unterminated string: the {quote} that opens it is never closed"),
        )
    };
    let mut out = String::new();
    let mut chars = src[start + 1..]
        .char_indices()
        .map(|(o, c)| (o + start + 1, c));
    loop {
        let Some((at, c)) = chars.next() else {
            return Err(unterminated());
        };
        if c == quote {
            return Ok((out, at + 1));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else {
            return Err(unterminated());
        };
        match e {
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'u' => {
                let mut code = hex4(src, at, &mut chars)?;
                if (0xD800..0xDC00).contains(&code) {
                    // A high surrogate: a low one must follow, as \uXXXX.
                    let low = match (chars.next(), chars.next()) {
                        (Some((_, '\\')), Some((_, 'u'))) => hex4(src, at, &mut chars)?,
                        _ => 0,
                    };
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(ParseError::new(
                            src,
                            at,
                            format!(
                                "'\\u{code:04X}' is half of a surrogate pair; the other half must follow as '\\uXXXX'"
                            ),
                        ));
                    }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                }
                match char::from_u32(code) {
                    Some(c) => out.push(c),
                    None => {
                        return Err(ParseError::new(
                            src,
                            at,
                            format!(
                                "'\\u{code:04X}' is not a character on its own (a lone surrogate)"
                            ),
                        ));
                    }
                }
            }
            other => {
                return Err(ParseError::new(
                    src,
                    at,
                    format!(
                        "unknown escape '\\{other}' in a string; the escapes are \\\\ \\' \\\" \\n \\r \\t and \\uXXXX"
                    ),
                ));
            }
        }
    }
}

fn hex4(
    src: &str,
    at: usize,
    chars: &mut impl Iterator<Item = (usize, char)>,
) -> Result<u32, ParseError> {
    let mut code = 0;
    for _ in 0..4 {
        match chars.next().and_then(|(_, c)| c.to_digit(16)) {
            Some(d) => code = code * 16 + d,
            None => {
                return Err(ParseError::new(
                    src,
                    at,
                    "'\\u' must be followed by exactly four hex digits, as in '\\u00e9'",
                ));
            }
        }
    }
    Ok(code)
}

/// A number literal: digits, an optional fraction, an optional exponent.
fn number(src: &str, start: usize) -> Result<(Num, usize), ParseError> {
    let b = src.as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = start + digits(start);
    let mut whole = true;
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1 + digits(i + 1);
        whole = false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
        if b.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
            i += 1 + sign + digits(i + 1 + sign);
            whole = false;
        }
    }
    let text = &src[start..i];
    if whole && let Ok(n) = text.parse::<i64>() {
        return Ok((Num::I(n), i));
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok((Num::F(f), i)),
        _ => Err(ParseError::new(
            src,
            start,
            format!("the number {text} is out of range"),
        )),
    }
}
