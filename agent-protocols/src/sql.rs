//! SQL text helpers shared by the PostgreSQL and MySQL parsers: literal redaction, operation
//! and table extraction.
//!
//! All work is bounded: only the first [`MAX_SQL`] bytes of a statement are looked at; a
//! sanitized text cut there ends with [`TRUNCATION_MARK`]. Comments are always stripped (they may
//! carry data) and whitespace runs become one space.

use std::sync::Arc;

/// Bytes of SQL text examined; the rest is dropped (and the output says so).
pub const MAX_SQL: usize = 8 * 1024;
/// Appended to sanitized text when the input was longer than [`MAX_SQL`].
pub const TRUNCATION_MARK: &str = " ...";

/// Lexical rules that differ between servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `"x"` is an identifier, `$tag$..$tag$` is a string, `E'..'` has backslash escapes.
    Postgres,
    /// `"x"` is a string (default sql_mode), backslash escapes in all strings, `` `x` `` identifiers.
    Mysql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Keyword or bare identifier.
    Word,
    /// `"x"` (PostgreSQL) or `` `x` ``: kept as written.
    QuotedIdent,
    /// A literal: string, number, dollar-quoted body.
    Literal,
    /// `$1`, `?`, `:name`: kept as written.
    Param,
    /// Anything else, one byte (or a multi-byte UTF-8 char).
    Punct,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    /// Whitespace or a comment separated this token from the previous one.
    space_before: bool,
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    dialect: Dialect,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl<'a> Lexer<'a> {
    fn new(s: &'a [u8], dialect: Dialect) -> Self {
        Self { s, pos: 0, dialect }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.s.get(i).copied()
    }

    /// Skips whitespace and comments; true when anything was skipped.
    fn skip_space(&mut self) -> bool {
        let start = self.pos;
        loop {
            match (self.at(self.pos), self.at(self.pos + 1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.pos += 1,
                (Some(b'-'), Some(b'-')) => self.skip_line(),
                (Some(b'#'), _) if self.dialect == Dialect::Mysql => self.skip_line(),
                (Some(b'/'), Some(b'*')) => self.skip_block_comment(),
                _ => break,
            }
        }
        self.pos > start
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.at(self.pos) {
            self.pos += 1;
            if b == b'\n' {
                break;
            }
        }
    }

    fn skip_block_comment(&mut self) {
        // PostgreSQL nests block comments; MySQL does not, but nested ones are rare there.
        let mut depth = 0usize;
        while self.pos < self.s.len() {
            match (self.at(self.pos), self.at(self.pos + 1)) {
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    self.pos += 2;
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return;
                    }
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Skips a quoted run starting at the opening quote; `''` doubles always escape, backslash
    /// escapes only when `backslash` is set.
    fn skip_quoted(&mut self, q: u8, backslash: bool) {
        self.pos += 1;
        while let Some(b) = self.at(self.pos) {
            if backslash && b == b'\\' {
                self.pos += 2;
                continue;
            }
            self.pos += 1;
            if b == q {
                if self.at(self.pos) == Some(q) {
                    self.pos += 1;
                    continue;
                }
                return;
            }
        }
        self.pos = self.s.len();
    }

    /// `$tag$ ... $tag$` at `self.pos`; false (nothing consumed) when it is not one.
    fn try_dollar_quote(&mut self) -> bool {
        let start = self.pos;
        let mut i = start + 1;
        while let Some(b) = self.at(i) {
            if b == b'$' {
                break;
            }
            if !(b.is_ascii_alphanumeric() || b == b'_') || b.is_ascii_digit() && i == start + 1 {
                return false;
            }
            i += 1;
        }
        if self.at(i) != Some(b'$') {
            return false;
        }
        let tag = &self.s[start..=i];
        let body = i + 1;
        let end = self
            .s
            .get(body..)
            .and_then(|rest| rest.windows(tag.len()).position(|w| w == tag))
            .map_or(self.s.len(), |p| body + p + tag.len());
        self.pos = end;
        true
    }

    fn skip_number(&mut self) {
        let s = self.s;
        if self.at(self.pos) == Some(b'0')
            && matches!(
                self.at(self.pos + 1),
                Some(b'x' | b'X' | b'b' | b'B' | b'o' | b'O')
            )
            && self.at(self.pos + 2).is_some_and(|b| b.is_ascii_hexdigit())
        {
            self.pos += 2;
            while self
                .at(self.pos)
                .is_some_and(|b| b.is_ascii_hexdigit() || b == b'_')
            {
                self.pos += 1;
            }
            return;
        }
        while self.pos < s.len() {
            let b = s[self.pos];
            if b.is_ascii_digit() || b == b'.' || b == b'_' {
                self.pos += 1;
            } else if (b == b'e' || b == b'E')
                && (self.at(self.pos + 1).is_some_and(|c| c.is_ascii_digit())
                    || matches!(self.at(self.pos + 1), Some(b'+' | b'-'))
                        && self.at(self.pos + 2).is_some_and(|c| c.is_ascii_digit()))
            {
                self.pos += 2;
            } else {
                break;
            }
        }
    }

    fn next_token(&mut self) -> Option<Token> {
        let space_before = self.skip_space();
        let start = self.pos;
        let b = self.at(start)?;
        let next = self.at(start + 1);
        let pg = self.dialect == Dialect::Postgres;
        let kind = match b {
            b'\'' => {
                self.skip_quoted(b'\'', !pg);
                Kind::Literal
            }
            b'"' if pg => {
                self.skip_quoted(b'"', false);
                Kind::QuotedIdent
            }
            b'"' => {
                self.skip_quoted(b'"', true);
                Kind::Literal
            }
            b'`' => {
                self.skip_quoted(b'`', false);
                Kind::QuotedIdent
            }
            // E'..', B'..', X'..', N'..' string prefixes.
            b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if next == Some(b'\'') => {
                self.pos += 1;
                let bs = !pg || matches!(b, b'e' | b'E');
                self.skip_quoted(b'\'', bs);
                Kind::Literal
            }
            b'u' | b'U' if pg && next == Some(b'&') && self.at(start + 2) == Some(b'\'') => {
                self.pos += 2;
                self.skip_quoted(b'\'', false);
                Kind::Literal
            }
            b'$' if pg && next.is_some_and(|c| c.is_ascii_digit()) => {
                self.pos += 1;
                while self.at(self.pos).is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                Kind::Param
            }
            b'$' if pg && self.try_dollar_quote() => Kind::Literal,
            b'?' => {
                self.pos += 1;
                Kind::Param
            }
            b':' if next.is_some_and(is_ident_start) => {
                self.pos += 1;
                while self.at(self.pos).is_some_and(is_ident_char) {
                    self.pos += 1;
                }
                Kind::Param
            }
            b'0'..=b'9' => {
                self.skip_number();
                Kind::Literal
            }
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => {
                self.skip_number();
                Kind::Literal
            }
            _ if is_ident_start(b) => {
                while self.at(self.pos).is_some_and(is_ident_char) {
                    self.pos += 1;
                }
                Kind::Word
            }
            _ => {
                self.pos += 1;
                Kind::Punct
            }
        };
        Some(Token {
            kind,
            start,
            end: self.pos.min(self.s.len()),
            space_before,
        })
    }
}

/// The first `MAX_SQL` bytes, cut at a char boundary; true when something was cut.
fn bounded(sql: &str) -> (&str, bool) {
    if sql.len() <= MAX_SQL {
        return (sql, false);
    }
    let mut cut = MAX_SQL;
    while !sql.is_char_boundary(cut) {
        cut -= 1;
    }
    (&sql[..cut], true)
}

fn text<'a>(s: &'a str, t: &Token) -> &'a str {
    s.get(t.start..t.end).unwrap_or("")
}

/// Replaces every literal (strings, numbers incl. a leading unary minus, dollar-quoted bodies)
/// with `?`, keeps identifiers and placeholders, strips comments, collapses whitespace and
/// collapses `IN (?, ?, ...)` to `IN (?)`.
pub fn sanitize(sql: &str, dialect: Dialect) -> String {
    let (s, truncated) = bounded(sql);
    let mut lx = Lexer::new(s.as_bytes(), dialect);
    let mut out = String::with_capacity(s.len().min(1024));
    // Kind and text of the last emitted token, for telling a sign from a subtraction.
    let mut prev: Option<(Kind, usize, usize)> = None;
    let mut pending_minus: Option<Token> = None;

    while let Some(t) = lx.next_token() {
        let tx = text(s, &t);
        // A '-' right after an operator, '(' or ',' (or at the start) is a sign.
        if t.kind == Kind::Punct && tx == "-" && pending_minus.is_none() {
            let unary = match prev {
                None => true,
                Some((Kind::Punct, a, b)) => out.get(a..b).is_some_and(|p| p != ")"),
                Some((Kind::Word, a, b)) => out.get(a..b).is_some_and(is_keyword_before_value),
                _ => false,
            };
            if unary {
                pending_minus = Some(t);
                continue;
            }
        }
        if let Some(m) = pending_minus.take() {
            if t.kind == Kind::Literal && !t.space_before {
                // "-5": the sign belongs to the literal.
                push_token(&mut out, m.space_before, "?");
                let p = out.len();
                prev = Some((Kind::Literal, p - 1, p));
                continue;
            }
            push_token(&mut out, m.space_before, "-");
        }
        let emitted = if t.kind == Kind::Literal { "?" } else { tx };
        push_token(&mut out, t.space_before, emitted);
        let p = out.len();
        prev = Some((t.kind, p - emitted.len(), p));
    }
    if let Some(m) = pending_minus {
        push_token(&mut out, m.space_before, "-");
    }
    let mut out = collapse_in_lists(out);
    if truncated {
        out.push_str(TRUNCATION_MARK);
    }
    out
}

/// `IN (?, ?, ?)` -> `IN (?)` on already normalized output (", " separators, no space after
/// "(").
fn collapse_in_lists(out: String) -> String {
    let b = out.as_bytes();
    let mut res = String::with_capacity(out.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 4 <= b.len() {
        let at_in = b
            .get(i..i + 4)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"in ("))
            && (i == 0 || b.get(i - 1).is_some_and(|&c| !is_ident_char(c)));
        if !at_in {
            i += 1;
            continue;
        }
        let list = i + 4;
        let mut j = list;
        let mut n = 0;
        while b.get(j) == Some(&b'?') {
            n += 1;
            j += 1;
            if b.get(j..j + 2) == Some(b", ") && b.get(j + 2) == Some(&b'?') {
                j += 2;
            } else {
                break;
            }
        }
        if n >= 2 && b.get(j) == Some(&b')') {
            res.push_str(out.get(copied..list).unwrap_or(""));
            res.push('?');
            copied = j;
        }
        i = j.max(i + 1);
    }
    res.push_str(out.get(copied..).unwrap_or(""));
    res
}

fn is_keyword_before_value(w: &str) -> bool {
    [
        "SELECT", "WHERE", "AND", "OR", "NOT", "VALUES", "SET", "LIMIT", "OFFSET", "THEN", "ELSE",
        "WHEN", "RETURN", "BY", "IN", "IS", "LIKE", "BETWEEN", "CASE", "ON", "INTERVAL",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(w))
}

fn push_token(out: &mut String, space_before: bool, tok: &str) {
    let glue = out.ends_with(['(', '.']) || tok == ")" || tok == "," || tok == "." || tok == ";";
    let after_comma = out.ends_with(',') && tok != ")";
    if !out.is_empty() && (space_before && !glue || after_comma) {
        out.push(' ');
    }
    out.push_str(tok);
}

/// Words and punctuation at paren depth, for the statement-shape helpers.
struct Shape<'a> {
    s: &'a str,
    toks: Vec<(Token, u32)>,
}

/// Tokens of the first statement (up to a top-level `;`), at most this many.
const MAX_TOKENS: usize = 2048;

impl<'a> Shape<'a> {
    fn new(sql: &'a str, dialect: Dialect) -> Self {
        let (s, _) = bounded(sql);
        let mut lx = Lexer::new(s.as_bytes(), dialect);
        let mut toks = Vec::new();
        let mut depth: u32 = 0;
        while let Some(t) = lx.next_token() {
            let tx = text(s, &t);
            if t.kind == Kind::Punct {
                match tx {
                    "(" => {
                        toks.push((t, depth));
                        depth += 1;
                        continue;
                    }
                    ")" => depth = depth.saturating_sub(1),
                    ";" if depth == 0 => break,
                    _ => {}
                }
            }
            toks.push((t, depth));
            if toks.len() >= MAX_TOKENS {
                break;
            }
        }
        Self { s, toks }
    }

    fn word(&self, i: usize) -> Option<&'a str> {
        let (t, _) = self.toks.get(i)?;
        (t.kind == Kind::Word).then(|| text(self.s, t))
    }

    fn is(&self, i: usize, kw: &str) -> bool {
        self.word(i).is_some_and(|w| w.eq_ignore_ascii_case(kw))
    }

    fn punct(&self, i: usize) -> Option<&'a str> {
        let (t, _) = self.toks.get(i)?;
        (t.kind == Kind::Punct).then(|| text(self.s, t))
    }

    fn depth(&self, i: usize) -> u32 {
        self.toks.get(i).map_or(0, |(_, d)| *d)
    }

    /// First index of a word (any depth) matching `kw`.
    fn count_word(&self, kw: &str) -> usize {
        (0..self.toks.len()).filter(|&i| self.is(i, kw)).count()
    }

    /// Index of the main statement keyword (skipping leading parens and a WITH clause).
    fn main_keyword(&self) -> Option<usize> {
        let mut i = 0;
        while self.punct(i) == Some("(") {
            i += 1;
        }
        self.word(i)?;
        if !self.is(i, "WITH") {
            return Some(i);
        }
        let base = self.depth(i);
        (i + 1..self.toks.len()).find(|&j| {
            self.depth(j) == base
                && [
                    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE",
                ]
                .iter()
                .any(|k| self.is(j, k))
        })
    }

    /// A possibly schema-qualified table name starting at `i`: (name without quotes, next index).
    fn table_name(&self, mut i: usize) -> Option<(String, usize)> {
        let mut name = String::new();
        loop {
            let (t, _) = self.toks.get(i)?;
            let part = match t.kind {
                Kind::Word => text(self.s, t),
                Kind::QuotedIdent => {
                    let q = text(self.s, t);
                    q.get(1..q.len().saturating_sub(1)).unwrap_or("")
                }
                _ => return None,
            };
            if part.is_empty() {
                return None;
            }
            name.push_str(part);
            i += 1;
            if self.punct(i) == Some(".") {
                name.push('.');
                i += 1;
                continue;
            }
            return Some((name, i));
        }
    }

    /// After a table name at `i`: an optional alias, then the end of the table list. None when
    /// another table follows (`,`, JOIN, a subquery).
    fn single_table_end(&self, mut i: usize) -> Option<()> {
        if self.is(i, "AS") {
            i += 1;
            self.word(i).or_else(|| self.quoted(i))?;
            i += 1;
        } else if let Some(w) = self.word(i)
            && !is_clause_keyword(w)
        {
            i += 1;
        } else if self.quoted(i).is_some() {
            i += 1;
        }
        match self.toks.get(i) {
            None => Some(()),
            Some(_) => match self.word(i) {
                Some(w) if is_clause_keyword(w) => Some(()),
                _ => match self.punct(i) {
                    Some(";") | Some(")") => Some(()),
                    _ => None,
                },
            },
        }
    }

    fn quoted(&self, i: usize) -> Option<&'a str> {
        let (t, _) = self.toks.get(i)?;
        (t.kind == Kind::QuotedIdent).then(|| text(self.s, t))
    }
}

fn is_clause_keyword(w: &str) -> bool {
    [
        "WHERE",
        "GROUP",
        "ORDER",
        "LIMIT",
        "OFFSET",
        "HAVING",
        "FOR",
        "WINDOW",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "SET",
        "VALUES",
        "RETURNING",
        "ON",
        "FETCH",
        "LOCK",
        "DEFAULT",
        "SELECT",
        "OVERRIDING",
        "PARTITION",
        "INTO",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(w))
}

/// The statement's operation: its first keyword upper-cased (`SELECT`, `INSERT`, `BEGIN`, ...);
/// for `WITH ...` the main statement's keyword when found, else `WITH`.
pub fn operation(sql: &str, dialect: Dialect) -> Option<String> {
    operation_of(&Shape::new(sql, dialect))
}

fn operation_of(sh: &Shape<'_>) -> Option<String> {
    let i = sh.main_keyword().or_else(|| {
        let first = (0..sh.toks.len()).find(|&i| sh.punct(i) != Some("("))?;
        sh.word(first).map(|_| first)
    })?;
    sh.word(i).map(|w| w.to_ascii_uppercase())
}

/// The one table a SELECT/INSERT/UPDATE/DELETE names (schema-qualified as written, quotes
/// removed); None with joins, several tables, subqueries or other statements.
pub fn collection(sql: &str, dialect: Dialect) -> Option<String> {
    collection_of(&Shape::new(sql, dialect))
}

fn collection_of(sh: &Shape<'_>) -> Option<String> {
    let k = sh.main_keyword()?;
    let op = sh.word(k)?.to_ascii_uppercase();
    if sh.count_word("JOIN") > 0 {
        return None;
    }
    let selects = sh.count_word("SELECT");
    match op.as_str() {
        "SELECT" => {
            if selects != 1 || sh.count_word("FROM") != 1 || sh.is(0, "WITH") {
                return None;
            }
            let from =
                (k..sh.toks.len()).find(|&i| sh.is(i, "FROM") && sh.depth(i) == sh.depth(k))?;
            let (name, next) = sh.table_name(from + 1)?;
            sh.single_table_end(next)?;
            Some(name)
        }
        "INSERT" | "REPLACE" => {
            if selects != 0 {
                return None;
            }
            let mut i = k + 1;
            while ["IGNORE", "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY"]
                .iter()
                .any(|w| sh.is(i, w))
            {
                i += 1;
            }
            if sh.is(i, "INTO") {
                i += 1;
            }
            let (name, next) = sh.table_name(i)?;
            match sh.punct(next) {
                Some("(") | Some(";") | None => {}
                _ => {
                    if sh.toks.get(next).is_some() {
                        sh.single_table_end(next)?;
                    }
                }
            }
            Some(name)
        }
        "UPDATE" => {
            if selects != 0 || sh.count_word("FROM") != 0 {
                return None;
            }
            let mut i = k + 1;
            while ["ONLY", "LOW_PRIORITY", "IGNORE"]
                .iter()
                .any(|w| sh.is(i, w))
            {
                i += 1;
            }
            let (name, next) = sh.table_name(i)?;
            sh.single_table_end(next)?;
            Some(name)
        }
        "DELETE" => {
            if selects != 0 || sh.count_word("USING") != 0 {
                return None;
            }
            let mut i = k + 1;
            while ["LOW_PRIORITY", "QUICK", "IGNORE"]
                .iter()
                .any(|w| sh.is(i, w))
            {
                i += 1;
            }
            if !sh.is(i, "FROM") {
                return None;
            }
            if sh.is(i + 1, "ONLY") {
                i += 1;
            }
            let (name, next) = sh.table_name(i + 1)?;
            sh.single_table_end(next)?;
            Some(name)
        }
        _ => None,
    }
}

/// Span-name style summary: `"{op} {table}"`, or the operation alone.
pub fn summary(operation: &str, collection: Option<&str>) -> String {
    match collection {
        Some(t) => format!("{operation} {t}"),
        None => operation.to_string(),
    }
}

/// Number of statements in a `;`-separated text (top level, ignoring a trailing `;`), bounded
/// like everything here.
pub fn statement_count(sql: &str, dialect: Dialect) -> u32 {
    let (s, _) = bounded(sql);
    let mut lx = Lexer::new(s.as_bytes(), dialect);
    let mut count = 0u32;
    let mut in_stmt = false;
    let mut depth = 0u32;
    while let Some(t) = lx.next_token() {
        let tx = text(s, &t);
        if t.kind == Kind::Punct {
            match tx {
                "(" => depth += 1,
                ")" => depth = depth.saturating_sub(1),
                ";" if depth == 0 => {
                    in_stmt = false;
                    continue;
                }
                _ => {}
            }
        }
        if !in_stmt {
            in_stmt = true;
            count = count.saturating_add(1);
        }
    }
    count
}

/// One statement text analysed once (at parse time) and shared by every record that uses it,
/// e.g. every execution of a prepared statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Analyzed {
    /// The text as sent, cut a little past [`MAX_SQL`] (so the sanitized form still says it was
    /// cut).
    pub raw: Box<str>,
    pub sanitized: Arc<str>,
    pub operation: Option<Arc<str>>,
    pub collection: Option<Arc<str>>,
    /// Top-level statements in the text.
    pub statements: u32,
}

impl Analyzed {
    /// Analyses raw bytes from the wire (decoded lossily as UTF-8, bounded).
    pub fn new(bytes: &[u8], dialect: Dialect) -> Self {
        Self::with_cache(bytes, dialect, &mut ShapeCache::default())
    }

    /// [`Analyzed::new`], taking the statement's shape (operation, collection, statement
    /// count) from `cache` when a statement with the same sanitized text was analysed before.
    pub fn with_cache(bytes: &[u8], dialect: Dialect, cache: &mut ShapeCache) -> Self {
        let cut = bytes.get(..MAX_SQL + 4).unwrap_or(bytes);
        let raw = String::from_utf8_lossy(cut);
        let sanitized = sanitize(&raw, dialect);
        let shaped = cache.get_or_insert_with(&sanitized, || {
            let shape = Shape::new(&raw, dialect);
            Shaped {
                operation: operation_of(&shape).map(Arc::from),
                collection: collection_of(&shape).map(Arc::from),
                statements: statement_count(&raw, dialect),
            }
        });
        Self {
            sanitized: sanitized.into(),
            operation: shaped.operation,
            collection: shaped.collection,
            statements: shaped.statements,
            raw: raw.into(),
        }
    }
}

/// The shape of a statement: what [`Analyzed`] finds beyond the sanitized text.
#[derive(Debug, Clone, PartialEq)]
struct Shaped {
    operation: Option<Arc<str>>,
    collection: Option<Arc<str>>,
    statements: u32,
}

/// Shapes of the statements a connection sent recently, keyed by a hash of their sanitized
/// text. The shape depends only on that text (literals, comments and spacing do not change
/// it), and a connection mostly repeats a few statements with new literals, so each is lexed
/// once for its shape instead of twice more per execution (the shape analysis was a fifth of
/// the agent's CPU under pgbench). Small and cleared when full: memory stays bounded per
/// connection.
#[derive(Debug, Default)]
pub struct ShapeCache {
    shapes: Vec<(u64, Shaped)>,
    hasher: std::hash::RandomState,
}

/// Shapes kept per connection.
const SHAPE_CACHE_SIZE: usize = 16;

impl ShapeCache {
    fn get_or_insert_with(&mut self, sanitized: &str, make: impl FnOnce() -> Shaped) -> Shaped {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one(sanitized);
        if let Some((_, s)) = self.shapes.iter().find(|(k, _)| *k == key) {
            return s.clone();
        }
        let s = make();
        if self.shapes.len() >= SHAPE_CACHE_SIZE {
            self.shapes.clear();
        }
        self.shapes.push((key, s.clone()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: Dialect = Dialect::Postgres;
    const MY: Dialect = Dialect::Mysql;

    #[test]
    fn sanitize_cases() {
        let cases: &[(&str, Dialect, &str)] = &[
            ("SELECT 1", PG, "SELECT ?"),
            (
                "select * from t where a = 42",
                PG,
                "select * from t where a = ?",
            ),
            (
                "SELECT * FROM t WHERE a = -42",
                PG,
                "SELECT * FROM t WHERE a = ?",
            ),
            ("SELECT a-1 FROM t", PG, "SELECT a-? FROM t"),
            ("SELECT a - 1 FROM t", PG, "SELECT a - ? FROM t"),
            ("SELECT 3.14, 1e10, 2.5E-3, .5", PG, "SELECT ?, ?, ?, ?"),
            ("SELECT 0xFF, 0x1a", MY, "SELECT ?, ?"),
            ("SELECT 'abc'", PG, "SELECT ?"),
            ("SELECT 'it''s'", PG, "SELECT ?"),
            ("SELECT 'a\\'b' , 1", MY, "SELECT ?, ?"),
            ("SELECT E'a\\'b', 2", PG, "SELECT ?, ?"),
            ("SELECT $$it's$$, $tag$ a $$ b $tag$", PG, "SELECT ?, ?"),
            (
                "SELECT \"Col\" FROM \"My Table\" WHERE x = 'y'",
                PG,
                "SELECT \"Col\" FROM \"My Table\" WHERE x = ?",
            ),
            ("SELECT \"secret\" FROM t", MY, "SELECT ? FROM t"),
            (
                "SELECT `c` FROM `t` WHERE id=7",
                MY,
                "SELECT `c` FROM `t` WHERE id=?",
            ),
            ("SELECT 1 -- comment 'x'\n, 2", PG, "SELECT ?, ?"),
            ("SELECT /* 'x' */ 1", PG, "SELECT ?"),
            ("SELECT /* a /* nested */ b */ 1", PG, "SELECT ?"),
            ("SELECT 1 # mysql comment", MY, "SELECT ?"),
            (
                "SELECT * FROM t WHERE id IN (1, 2, 3)",
                PG,
                "SELECT * FROM t WHERE id IN (?)",
            ),
            (
                "SELECT * FROM t WHERE id IN (1,2,3) AND b IN ('x','y')",
                PG,
                "SELECT * FROM t WHERE id IN (?) AND b IN (?)",
            ),
            (
                "SELECT * FROM t WHERE id in (-1, 2)",
                PG,
                "SELECT * FROM t WHERE id in (?)",
            ),
            (
                "SELECT * FROM t WHERE id IN (a, 2)",
                PG,
                "SELECT * FROM t WHERE id IN (a, ?)",
            ),
            (
                "SELECT * FROM t WHERE id IN (1, a)",
                PG,
                "SELECT * FROM t WHERE id IN (?, a)",
            ),
            (
                "SELECT * FROM t WHERE id IN ($1, $2)",
                PG,
                "SELECT * FROM t WHERE id IN ($1, $2)",
            ),
            (
                "INSERT INTO t (a, b) VALUES (1, 'x')",
                PG,
                "INSERT INTO t (a, b) VALUES (?, ?)",
            ),
            (
                "UPDATE t SET a = $1 WHERE b = $2",
                PG,
                "UPDATE t SET a = $1 WHERE b = $2",
            ),
            ("SELECT ? , :name", MY, "SELECT ?, :name"),
            (
                "SELECT col1, t2.col FROM s.t2",
                PG,
                "SELECT col1, t2.col FROM s.t2",
            ),
            ("SELECT x'0F', b'101', N'abc'", MY, "SELECT ?, ?, ?"),
            ("  SELECT\n\t1  ", PG, "SELECT ?"),
            ("SELECT 'unterminated", PG, "SELECT ?"),
            ("SELECT $$unterminated", PG, "SELECT ?"),
            ("SELECT price * -1", PG, "SELECT price * ?"),
            ("SELECT f(-1)", PG, "SELECT f(?)"),
            ("SELECT 1; SELECT 2", PG, "SELECT ?; SELECT ?"),
            ("SELECT abc123, x1 FROM t1", PG, "SELECT abc123, x1 FROM t1"),
            ("SELECT 'é', 'ü'", PG, "SELECT ?, ?"),
            ("SELECT U&'d\\0061t'", PG, "SELECT ?"),
            ("SELECT -", PG, "SELECT -"),
        ];
        for (i, (inp, d, want)) in cases.iter().enumerate() {
            assert_eq!(sanitize(inp, *d), *want, "case {i}: {inp}");
        }
    }

    #[test]
    fn sanitize_truncates() {
        let long = format!("SELECT {} FROM t", "a, ".repeat(5000));
        let s = sanitize(&long, PG);
        assert!(s.ends_with(TRUNCATION_MARK));
        assert!(s.len() <= MAX_SQL + TRUNCATION_MARK.len());
        // A multi-byte char straddling the cut does not panic.
        let long = "é".repeat(MAX_SQL);
        assert!(sanitize(&long, PG).ends_with(TRUNCATION_MARK));
    }

    #[test]
    fn operation_cases() {
        let cases: &[(&str, Option<&str>)] = &[
            ("select 1", Some("SELECT")),
            ("  insert into t values (1)", Some("INSERT")),
            ("Update t set a=1", Some("UPDATE")),
            ("DELETE FROM t", Some("DELETE")),
            ("create table x (a int)", Some("CREATE")),
            ("BEGIN", Some("BEGIN")),
            ("commit", Some("COMMIT")),
            ("/* hi */ SELECT 1", Some("SELECT")),
            ("(SELECT 1) UNION (SELECT 2)", Some("SELECT")),
            ("WITH x AS (SELECT 1) SELECT * FROM x", Some("SELECT")),
            (
                "WITH x AS (SELECT 1), y AS (SELECT 2) INSERT INTO t SELECT * FROM x",
                Some("INSERT"),
            ),
            (
                "WITH RECURSIVE r(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM r) DELETE FROM t",
                Some("DELETE"),
            ),
            ("WITH x AS (SELECT 1", Some("WITH")),
            ("", None),
            ("   ", None),
            ("123", None),
            ("SET search_path = public", Some("SET")),
        ];
        for (inp, want) in cases {
            assert_eq!(operation(inp, PG).as_deref(), *want, "{inp}");
        }
    }

    #[test]
    fn collection_cases() {
        let cases: &[(&str, Dialect, Option<&str>)] = &[
            ("SELECT * FROM users", PG, Some("users")),
            ("SELECT * FROM users WHERE id = 1", PG, Some("users")),
            (
                "SELECT * FROM public.users u WHERE u.id = 1",
                PG,
                Some("public.users"),
            ),
            ("SELECT * FROM users AS u ORDER BY id", PG, Some("users")),
            ("SELECT * FROM \"Users\" LIMIT 1", PG, Some("Users")),
            ("SELECT * FROM `db`.`t`", MY, Some("db.t")),
            ("SELECT count(*) FROM t;", PG, Some("t")),
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
                PG,
                Some("pgbench_accounts"),
            ),
            ("SELECT * FROM a, b", PG, None),
            ("SELECT * FROM a JOIN b ON a.id = b.id", PG, None),
            ("SELECT * FROM a LEFT OUTER JOIN b USING (id)", PG, None),
            ("SELECT * FROM (SELECT 1) s", PG, None),
            ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", PG, None),
            ("SELECT 1", PG, None),
            ("SELECT now()", PG, None),
            ("INSERT INTO t VALUES (1)", PG, Some("t")),
            ("INSERT INTO s.t (a, b) VALUES (1, 2)", PG, Some("s.t")),
            ("INSERT t (a) VALUES (1)", MY, Some("t")),
            ("INSERT IGNORE INTO t (a) VALUES (1)", MY, Some("t")),
            ("INSERT INTO t SELECT * FROM u", PG, None),
            (
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, CURRENT_TIMESTAMP)",
                PG,
                Some("pgbench_history"),
            ),
            ("REPLACE INTO t VALUES (1)", MY, Some("t")),
            ("UPDATE t SET a = 1 WHERE b = 2", PG, Some("t")),
            ("UPDATE ONLY s.t SET a = 1", PG, Some("s.t")),
            ("UPDATE t SET a = u.b FROM u WHERE t.id = u.id", PG, None),
            ("UPDATE t, u SET t.a = 1", MY, None),
            ("DELETE FROM t WHERE id = 1", PG, Some("t")),
            ("DELETE FROM t", PG, Some("t")),
            ("DELETE FROM t USING u WHERE t.id = u.id", PG, None),
            ("DELETE t FROM t JOIN u", MY, None),
            ("WITH x AS (SELECT 1) SELECT * FROM x", PG, None),
            ("CREATE TABLE t (a int)", PG, None),
            ("BEGIN", PG, None),
            ("", PG, None),
        ];
        for (inp, d, want) in cases {
            assert_eq!(collection(inp, *d).as_deref(), *want, "{inp}");
        }
    }

    #[test]
    fn summary_and_count() {
        assert_eq!(summary("SELECT", Some("t")), "SELECT t");
        assert_eq!(summary("BEGIN", None), "BEGIN");
        assert_eq!(statement_count("SELECT 1; SELECT 2;", PG), 2);
        assert_eq!(statement_count("SELECT ';'", PG), 1);
        assert_eq!(statement_count("", PG), 0);
        assert_eq!(
            statement_count("BEGIN; UPDATE t SET a = (1); COMMIT", PG),
            3
        );
    }

    #[test]
    fn analyzed() {
        let a = Analyzed::new(b"UPDATE t SET a = 5 WHERE id = 'x'", PG);
        assert_eq!(&*a.raw, "UPDATE t SET a = 5 WHERE id = 'x'");
        assert_eq!(&*a.sanitized, "UPDATE t SET a = ? WHERE id = ?");
        assert_eq!(a.operation.as_deref(), Some("UPDATE"));
        assert_eq!(a.collection.as_deref(), Some("t"));
        assert_eq!(a.statements, 1);
        let a = Analyzed::new(b"SELECT '\\xff\\xfe'", MY);
        assert_eq!(&*a.sanitized, "SELECT ?");
        let a = Analyzed::new(&[b'S', 0xff, b' ', b'1'], PG);
        assert_eq!(&*a.sanitized, "S\u{fffd} ?");
        // Long input: raw is cut just past MAX_SQL, sanitized says it was cut.
        let long = format!("SELECT {}", "1, ".repeat(5000));
        let a = Analyzed::new(long.as_bytes(), PG);
        assert!(a.raw.len() <= MAX_SQL + 4);
        assert!(a.sanitized.ends_with(TRUNCATION_MARK));
    }

    /// A cached shape gives exactly what a fresh analysis gives, for statements that differ
    /// only in literals, comments and spacing, and across the cache being cleared when full.
    #[test]
    fn cached_shapes_match_fresh_analysis() {
        let texts: Vec<String> = (0..3)
            .flat_map(|n| {
                [
                    format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n}"),
                    format!("select  abalance from pgbench_accounts where aid={n} -- c{n}"),
                    format!("/* {n} */ UPDATE t SET a = '{n};x' WHERE id IN ({n}, {n})"),
                    format!("INSERT INTO \"Order\" (a) VALUES ($${n}; $$); SELECT {n}"),
                    format!("WITH x AS (SELECT {n}) DELETE FROM y USING x"),
                    format!("SELECT * FROM t{n}"),
                ]
            })
            .chain((0..40).map(|n| format!("SELECT c FROM table_{n} WHERE k = {n}")))
            .collect();
        for dialect in [PG, MY] {
            let mut cache = ShapeCache::default();
            for _ in 0..2 {
                for t in &texts {
                    let cached = Analyzed::with_cache(t.as_bytes(), dialect, &mut cache);
                    assert_eq!(cached, Analyzed::new(t.as_bytes(), dialect), "{t}");
                }
            }
            assert!(cache.shapes.len() <= SHAPE_CACHE_SIZE);
        }
    }
}
