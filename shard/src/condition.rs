//! The condition language of views, search and snapshots, parsed
//! into a tree and evaluated against any record that can name its fields.
//!
//! Grammar (keywords are case-insensitive):
//!
//! ```text
//! condition  := or
//! or         := and ( OR and )*
//! and        := not ( AND not )*
//! not        := NOT not | primary
//! primary    := '(' condition ')' | predicate
//! predicate  := operand ( cmp literal | [NOT] IN '(' literal (',' literal)* ')'
//!                       | [NOT] LIKE string | IS [NOT] NULL )
//! cmp        := '=' | '!=' | '<>' | '<' | '<=' | '>' | '>='
//! operand    := identifier          -- an interaction field or, if not one, a property key
//! literal    := string | integer
//! string     := '...' with '' for a quote
//! integer    := -?[0-9]+
//! identifier := [A-Za-z_][A-Za-z0-9_.-]*  |  "any text" (a property key with other characters)
//! ```
//!
//! Semantics: a comparison, IN or LIKE on a missing value or on a value of
//! the other type (a string against an integer) is false, and so is its NOT
//! form (`x != 1` is false when x is missing: use `x IS NULL OR x != 1`).
//! LIKE takes `%` (any run) and `_` (one character). Order clauses are
//! `operand [ASC|DESC] (, operand [ASC|DESC])*`.

use std::fmt;

/// A value read from a record for a condition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scalar<'a> {
    Int(i64),
    Str(&'a str),
}

/// A literal written in a condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Literal {
    Int(i64),
    Str(String),
}

impl Literal {
    fn as_scalar(&self) -> Scalar<'_> {
        match self {
            Literal::Int(i) => Scalar::Int(*i),
            Literal::Str(s) => Scalar::Str(s),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Compare { operand: String, cmp: Cmp, value: Literal },
    In { operand: String, values: Vec<Literal>, negated: bool },
    Like { operand: String, pattern: String, negated: bool },
    IsNull { operand: String, negated: bool },
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
}

/// A parse error: where (byte offset in the text) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.offset + 1, self.message)
    }
}

/// Longest condition text accepted, and deepest nesting: bounds for input
/// that comes from clients.
pub const MAX_CONDITION_LEN: usize = 8192;
pub const MAX_DEPTH: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let err = |offset, message: &str| ParseError { offset, message: message.to_string() };
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' | b')' | b',' => {
                out.push((
                    start,
                    [Token::LParen, Token::RParen, Token::Comma][b"(),".iter().position(|&x| x == c).unwrap()].clone(),
                ));
                i += 1;
            }
            b'=' => {
                out.push((start, Token::Op("=")));
                i += 1;
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                out.push((start, Token::Op("!=")));
                i += 2;
            }
            b'<' | b'>' => {
                let two = b.get(i + 1).copied();
                let op = match (c, two) {
                    (b'<', Some(b'=')) => "<=",
                    (b'<', Some(b'>')) => "!=",
                    (b'>', Some(b'=')) => ">=",
                    (b'<', _) => "<",
                    _ => ">",
                };
                i += if op.len() == 2 || (c == b'<' && two == Some(b'>')) { 2 } else { 1 };
                out.push((start, Token::Op(op)));
            }
            b'\'' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(err(start, "unterminated string")),
                        Some(b'\'') if b.get(i + 1) == Some(&b'\'') => {
                            s.push(b'\'');
                            i += 2;
                        }
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(&x) => {
                            s.push(x);
                            i += 1;
                        }
                    }
                }
                out.push((start, Token::Str(String::from_utf8(s).expect("slices of a str at quote boundaries"))));
            }
            b'"' => {
                let end = text[i + 1..].find('"').ok_or_else(|| err(start, "unterminated quoted name"))?;
                let name = &text[i + 1..i + 1 + end];
                if name.is_empty() {
                    return Err(err(start, "empty quoted name"));
                }
                out.push((start, Token::Ident(name.to_string())));
                i += end + 2;
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let n: i64 = text[start..i].parse().map_err(|_| err(start, "not an integer (or out of range)"))?;
                out.push((start, Token::Int(n)));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'.' | b'-')) {
                    i += 1;
                }
                out.push((start, Token::Ident(text[start..i].to_string())));
            }
            _ => return Err(err(start, &format!("unexpected character '{}'", text[start..].chars().next().unwrap()))),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
    depth: usize,
}

fn is_kw(t: Option<&Token>, kw: &str) -> bool {
    matches!(t, Some(Token::Ident(s)) if s.eq_ignore_ascii_case(kw))
}

const KEYWORDS: [&str; 9] = ["and", "or", "not", "in", "like", "is", "null", "asc", "desc"];

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }
    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map(|(o, _)| *o).unwrap_or(self.end)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { offset: self.offset(), message: message.into() })
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Condition, ParseError> {
        let mut left = self.and()?;
        while self.eat_kw("or") {
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ParseError> {
        let mut left = self.not()?;
        while self.eat_kw("and") {
            left = Condition::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Condition, ParseError> {
        if self.eat_kw("not") {
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(format!("nested deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<Condition, ParseError> {
        if self.peek() == Some(&Token::LParen) {
            self.pos += 1;
            self.enter()?;
            let c = self.or()?;
            self.depth -= 1;
            if self.next() != Some(Token::RParen) {
                self.pos -= 1;
                return self.err("expected ')'");
            }
            return Ok(c);
        }
        let operand = self.operand()?;
        self.predicate(operand)
    }

    fn operand(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(Token::Ident(s)) if !KEYWORDS.iter().any(|k| s.eq_ignore_ascii_case(k)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => self.err("expected a field or property name"),
        }
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Literal::Str(s)),
            Some(Token::Int(i)) => Ok(Literal::Int(i)),
            _ => {
                self.pos -= 1;
                self.err("expected a 'string' or an integer")
            }
        }
    }

    fn predicate(&mut self, operand: String) -> Result<Condition, ParseError> {
        if let Some(Token::Op(op)) = self.peek().cloned() {
            self.pos += 1;
            let cmp = match op {
                "=" => Cmp::Eq,
                "!=" => Cmp::Ne,
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                ">" => Cmp::Gt,
                _ => Cmp::Ge,
            };
            return Ok(Condition::Compare { operand, cmp, value: self.literal()? });
        }
        if self.eat_kw("is") {
            let negated = self.eat_kw("not");
            if !self.eat_kw("null") {
                return self.err("expected NULL after IS");
            }
            return Ok(Condition::IsNull { operand, negated });
        }
        let negated = self.eat_kw("not");
        if self.eat_kw("in") {
            if self.next() != Some(Token::LParen) {
                self.pos -= 1;
                return self.err("expected '(' after IN");
            }
            let mut values = vec![self.literal()?];
            loop {
                match self.next() {
                    Some(Token::Comma) => values.push(self.literal()?),
                    Some(Token::RParen) => break,
                    _ => {
                        self.pos -= 1;
                        return self.err("expected ',' or ')' in the IN list");
                    }
                }
            }
            return Ok(Condition::In { operand, values, negated });
        }
        if self.eat_kw("like") {
            return match self.next() {
                Some(Token::Str(pattern)) => Ok(Condition::Like { operand, pattern, negated }),
                _ => {
                    self.pos -= 1;
                    self.err("expected a 'pattern' after LIKE")
                }
            };
        }
        self.err(format!("expected a comparison, IN, LIKE or IS NULL after '{operand}'"))
    }
}

impl Condition {
    /// Parses a condition.
    pub fn parse(text: &str) -> Result<Condition, ParseError> {
        if text.len() > MAX_CONDITION_LEN {
            return Err(ParseError { offset: 0, message: format!("longer than {MAX_CONDITION_LEN} bytes") });
        }
        let mut p = Parser { tokens: tokenize(text)?, pos: 0, end: text.len(), depth: 0 };
        if p.tokens.is_empty() {
            return p.err("empty condition");
        }
        let c = p.or()?;
        if p.pos < p.tokens.len() {
            return p.err("unexpected text after the condition");
        }
        Ok(c)
    }

    /// Evaluates against a record: `get` returns the value of a field or
    /// property by name, or `None` when it has none.
    pub fn eval<'a>(&self, get: &impl Fn(&str) -> Option<Scalar<'a>>) -> bool {
        match self {
            Condition::Compare { operand, cmp, value } => match get(operand) {
                Some(v) => same_type(&v, &value.as_scalar()) && compare(&v, *cmp, &value.as_scalar()),
                None => false,
            },
            Condition::In { operand, values, negated } => match get(operand) {
                Some(v) => {
                    let typed: Vec<_> = values.iter().map(Literal::as_scalar).filter(|l| same_type(&v, l)).collect();
                    if typed.is_empty() {
                        return false;
                    }
                    typed.contains(&v) != *negated
                }
                None => false,
            },
            Condition::Like { operand, pattern, negated } => match get(operand) {
                Some(Scalar::Str(s)) => like(s.as_bytes(), pattern.as_bytes()) != *negated,
                _ => false,
            },
            Condition::IsNull { operand, negated } => get(operand).is_none() != *negated,
            Condition::And(a, b) => a.eval(get) && b.eval(get),
            Condition::Or(a, b) => a.eval(get) || b.eval(get),
            Condition::Not(c) => !c.eval(get),
        }
    }
}

fn same_type(a: &Scalar<'_>, b: &Scalar<'_>) -> bool {
    matches!((a, b), (Scalar::Int(_), Scalar::Int(_)) | (Scalar::Str(_), Scalar::Str(_)))
}

fn compare(a: &Scalar<'_>, cmp: Cmp, b: &Scalar<'_>) -> bool {
    match cmp {
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
    }
}

/// SQL LIKE on bytes: `%` any run, `_` one byte. Iterative with one
/// backtrack point, so it is linear-ish and cannot blow the stack.
fn like(s: &[u8], p: &[u8]) -> bool {
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'_' || p[pi] == s[si]) && p[pi] != b'%' {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == b'%' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'%')
}

/// One key of an order clause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderKey {
    pub operand: String,
    pub descending: bool,
}

/// Parses `priority DESC, submitted_at ASC`.
pub fn parse_order(text: &str) -> Result<Vec<OrderKey>, ParseError> {
    let mut p = Parser { tokens: tokenize(text)?, pos: 0, end: text.len(), depth: 0 };
    let mut keys = Vec::new();
    loop {
        let operand = p.operand()?;
        let descending = if p.eat_kw("desc") {
            true
        } else {
            p.eat_kw("asc");
            false
        };
        keys.push(OrderKey { operand, descending });
        match p.next() {
            None => return Ok(keys),
            Some(Token::Comma) => continue,
            Some(_) => {
                p.pos -= 1;
                return p.err("expected ',' or the end of the order");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> Option<Scalar<'static>> {
        match name {
            "media_type" => Some(Scalar::Str("chat")),
            "priority" => Some(Scalar::Int(5)),
            "lang" => Some(Scalar::Str("en-GB")),
            "it's" => Some(Scalar::Str("x")),
            _ => None,
        }
    }

    #[test]
    fn valid_expressions_parse_and_evaluate() {
        let table: &[(&str, bool)] = &[
            ("media_type = 'chat'", true),
            ("media_type = 'email'", false),
            ("priority >= 5", true),
            ("priority > 5", false),
            ("priority <> 4", true),
            ("priority != 5", false),
            ("priority < -1", false),
            ("media_type = 'chat' AND priority >= 5 AND lang = 'en-GB'", true),
            ("media_type = 'email' OR priority = 5", true),
            ("NOT media_type = 'email'", true),
            ("not (media_type = 'chat' and priority = 1)", true),
            ("priority IN (1, 5, 9)", true),
            ("priority NOT IN (1, 5)", false),
            ("media_type in ('sms','chat')", true),
            ("lang LIKE 'en%'", true),
            ("lang LIKE 'e_-__'", true),
            ("lang NOT LIKE '%US'", true),
            ("lang LIKE 'fr%'", false),
            ("missing IS NULL", true),
            ("lang IS NOT NULL", true),
            ("missing = 'x'", false),
            ("missing != 'x'", false),
            ("priority = '5'", false),
            ("\"it's\" = 'x'", true),
            ("(((priority = 5)))", true),
            ("media_type = 'it''s'", false),
            ("a = 1 OR b = 2 AND priority = 5", false),
        ];
        for (text, expected) in table {
            let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.eval(&record), *expected, "{text}");
        }
    }

    #[test]
    fn invalid_expressions_are_refused_with_a_position() {
        let table: &[(&str, usize)] = &[
            ("", 1),
            ("priority", 9),
            ("priority =", 11),
            ("= 5", 1),
            ("priority = 5 AND", 17),
            ("priority == 5", 11),
            ("(priority = 5", 14),
            ("priority = 5)", 13),
            ("media_type = 'chat", 14),
            ("priority IN ()", 14),
            ("priority IN (1 2)", 16),
            ("lang LIKE 5", 11),
            ("lang IS 5", 9),
            ("priority = 99999999999999999999", 12),
            ("priority = 5 # x", 14),
            ("and = 1", 1),
        ];
        for (text, at) in table {
            let e = Condition::parse(text).expect_err(text);
            assert_eq!(e.offset + 1, *at, "{text}: {e}");
        }
        let deep = format!("{}priority = 1{}", "(".repeat(40), ")".repeat(40));
        assert!(Condition::parse(&deep).unwrap_err().message.contains("nested"));
        assert!(Condition::parse(&"x".repeat(MAX_CONDITION_LEN + 1)).is_err());
    }

    #[test]
    fn order_clauses_parse() {
        assert_eq!(
            parse_order("priority DESC, submitted_at").unwrap(),
            vec![
                OrderKey { operand: "priority".into(), descending: true },
                OrderKey { operand: "submitted_at".into(), descending: false }
            ]
        );
        assert!(parse_order("priority DOWN").is_err());
        assert!(parse_order("").is_err());
    }

    #[test]
    fn like_matches_sql_semantics() {
        for (s, p, m) in [
            ("abc", "a%", true),
            ("abc", "%c", true),
            ("abc", "a_c", true),
            ("abc", "%", true),
            ("", "%", true),
            ("abc", "ab", false),
            ("aXbXc", "a%b%c", true),
            ("ac", "a_c", false),
        ] {
            assert_eq!(like(s.as_bytes(), p.as_bytes()), m, "{s} LIKE {p}");
        }
    }
}
