//! Lexer and parser of the T-SQL subset (see the crate docs for the grammar).

use crate::error::SqlError;
use crate::types::{parse_decimal_literal, SqlType, Value};

/// A lexical token with its byte span in the batch text.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Bare word (keyword or identifier), as written.
    Word(String),
    /// `[bracketed]` or `"quoted"` identifier (never a keyword).
    Quoted(String),
    /// `@name` or `@@name`, lowercased with the `@`.
    Var(String),
    /// Number literal text.
    Num(String),
    /// `'..'` or `N'..'`.
    Str(String),
    /// Punctuation or operator.
    Sym(&'static str),
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, SqlError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, what: &str| SqlError::new(102, format!("Incorrect syntax near '{}' ({what}) in: {}", &src[at..].chars().take(20).collect::<String>(), src.trim()));
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            match src[i + 2..].find("*/") {
                Some(e) => i = i + 2 + e + 2,
                None => return Err(err(i, "unterminated comment")),
            }
        } else if c == b'\'' || ((c == b'N' || c == b'n') && b.get(i + 1) == Some(&b'\'')) {
            i += if c == b'\'' { 1 } else { 2 };
            let mut s = String::new();
            loop {
                match src[i..].find('\'') {
                    None => return Err(err(start, "unterminated string")),
                    Some(e) => {
                        s.push_str(&src[i..i + e]);
                        i += e + 1;
                        if b.get(i) == Some(&b'\'') {
                            s.push('\'');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            out.push((Tok::Str(s), start));
        } else if c == b'[' {
            let mut s = String::new();
            i += 1;
            loop {
                match src[i..].find(']') {
                    None => return Err(err(start, "unterminated [identifier]")),
                    Some(e) => {
                        s.push_str(&src[i..i + e]);
                        i += e + 1;
                        if b.get(i) == Some(&b']') {
                            s.push(']');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            out.push((Tok::Quoted(s), start));
        } else if c == b'"' {
            match src[i + 1..].find('"') {
                None => return Err(err(start, "unterminated \"identifier\"")),
                Some(e) => {
                    out.push((Tok::Quoted(src[i + 1..i + 1 + e].to_string()), start));
                    i += e + 2;
                }
            }
        } else if c == b'@' {
            i += 1;
            while i < b.len() && (b[i] == b'@' || b[i] == b'_' || b[i] == b'#' || b[i] == b'$' || b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            out.push((Tok::Var(src[start..i].to_ascii_lowercase()), start));
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            out.push((Tok::Num(src[start..i].to_string()), start));
        } else if c == b'_' || c == b'#' || c.is_ascii_alphabetic() || c >= 0x80 {
            while i < b.len() && (b[i] == b'_' || b[i] == b'#' || b[i] == b'$' || b[i].is_ascii_alphanumeric() || b[i] >= 0x80) {
                i += 1;
            }
            out.push((Tok::Word(src[start..i].to_string()), start));
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let sym: &'static str = match two {
                "<>" => "<>",
                "!=" => "<>",
                "<=" => "<=",
                ">=" => ">=",
                _ => match c {
                    b'(' => "(",
                    b')' => ")",
                    b',' => ",",
                    b'.' => ".",
                    b';' => ";",
                    b'*' => "*",
                    b'=' => "=",
                    b'<' => "<",
                    b'>' => ">",
                    b'+' => "+",
                    b'-' => "-",
                    b'/' => "/",
                    _ => return Err(err(i, "unexpected character")),
                },
            };
            i += if sym.len() == 2 || two == "!=" { 2 } else { 1 };
            out.push((Tok::Sym(sym), start));
        }
    }
    Ok(out)
}

/// A possibly qualified object name `[db.][schema.]name`.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjName {
    /// Database part.
    pub db: Option<String>,
    /// Schema part (default dbo).
    pub schema: Option<String>,
    /// Object name.
    pub name: String,
}

impl std::fmt::Display for ObjName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(d) = &self.db {
            write!(f, "{d}.")?;
        }
        write!(f, "{}.{}", self.schema.as_deref().unwrap_or("dbo"), self.name)
    }
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    /// COUNT(*) / COUNT(col).
    Count,
    /// COUNT_BIG(*).
    CountBig,
    /// MIN.
    Min,
    /// MAX.
    Max,
    /// SUM.
    Sum,
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Column reference (last part of a qualified name).
    Col(String),
    /// `@var`, `@Pn` or `@@name` (lowercase).
    Var(String),
    /// Literal.
    Lit(Value),
    /// Scalar function call (name uppercased).
    Func(String, Vec<Expr>),
    /// Aggregate; `None` argument is `*`.
    Agg(Agg, Option<Box<Expr>>),
    /// Binary arithmetic `+ - * /`.
    Bin(Box<Expr>, &'static str, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    /// CAST(expr AS type).
    Cast(Box<Expr>, SqlType),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A search condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// AND.
    And(Box<Cond>, Box<Cond>),
    /// OR.
    Or(Box<Cond>, Box<Cond>),
    /// NOT.
    Not(Box<Cond>),
    /// Comparison.
    Cmp(Expr, CmpOp, Expr),
    /// IS [NOT] NULL (bool = negated).
    IsNull(Expr, bool),
    /// [NOT] IN (list).
    In(Expr, Vec<Expr>, bool),
    /// BETWEEN a AND b.
    Between(Expr, Expr, Expr),
    /// [NOT] EXISTS (SELECT ...).
    Exists(Box<Select>, bool),
}

/// One SELECT list item.
#[derive(Debug, Clone, PartialEq)]
pub enum SelItem {
    /// `*`
    Star,
    /// Expression with optional alias.
    Expr(Expr, Option<String>),
    /// `@v = expr`: assigns instead of returning a column (evaluated once per row, in order).
    Assign(String, Expr),
}

/// A SELECT statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// TOP (n).
    pub top: Option<Expr>,
    /// Select list.
    pub items: Vec<SelItem>,
    /// FROM table.
    pub from: Option<ObjName>,
    /// WHERE.
    pub filter: Option<Cond>,
    /// ORDER BY (expr, descending).
    pub order: Vec<(Expr, bool)>,
}

/// A column definition in CREATE TABLE.
#[derive(Debug, Clone, PartialEq)]
pub struct ColDef {
    /// Name.
    pub name: String,
    /// Type.
    pub ty: SqlType,
    /// NULL allowed.
    pub nullable: bool,
    /// IDENTITY.
    pub identity: bool,
    /// DEFAULT expression.
    pub default: Option<Expr>,
    /// PRIMARY KEY or UNIQUE on the column.
    pub unique: bool,
}

/// A statement of the subset.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// SELECT.
    Select(Select),
    /// INSERT [INTO] t [(cols)] [OUTPUT INSERTED.x, ...] VALUES (...), ...
    Insert {
        /// Target.
        table: ObjName,
        /// Column list (empty = all non-identity columns).
        cols: Vec<String>,
        /// OUTPUT INSERTED items (`None` name = INSERTED.*).
        output: Vec<(Option<String>, Option<String>)>,
        /// VALUES rows.
        rows: Vec<Vec<Expr>>,
    },
    /// UPDATE t SET c = e, ... [WHERE]
    Update {
        /// Target.
        table: ObjName,
        /// Assignments.
        sets: Vec<(String, Expr)>,
        /// WHERE.
        filter: Option<Cond>,
    },
    /// DELETE [FROM] t [WHERE]
    Delete {
        /// Target.
        table: ObjName,
        /// WHERE.
        filter: Option<Cond>,
    },
    /// BEGIN TRAN[SACTION]
    Begin,
    /// COMMIT [TRAN[SACTION]]
    Commit,
    /// ROLLBACK [TRAN[SACTION]]
    Rollback,
    /// IF cond stmt [ELSE stmt]
    If(Cond, Vec<Stmt>, Vec<Stmt>),
    /// BEGIN ... END
    Block(Vec<Stmt>),
    /// CREATE TABLE
    CreateTable {
        /// Name.
        table: ObjName,
        /// Columns.
        cols: Vec<ColDef>,
        /// Table-level PRIMARY KEY/UNIQUE column lists.
        uniques: Vec<Vec<String>>,
    },
    /// TRUNCATE TABLE t: every row gone, IDENTITY back at its seed, the same object.
    Truncate {
        /// Table.
        table: ObjName,
    },
    /// DROP TABLE [IF EXISTS] t
    DropTable {
        /// Table.
        table: ObjName,
        /// IF EXISTS: no error when there is none.
        if_exists: bool,
    },
    /// CREATE [UNIQUE] INDEX name ON t (cols): UNIQUE adds a constraint, otherwise a no-op.
    CreateIndex {
        /// UNIQUE.
        unique: bool,
        /// Table.
        table: ObjName,
        /// Columns.
        cols: Vec<String>,
    },
    /// DECLARE @v type [= e], ...
    Declare(Vec<(String, SqlType, Option<Expr>)>),
    /// SET @v = e
    SetVar(String, Expr),
    /// SET NOCOUNT ON|OFF (other SET options are accepted and ignored).
    SetNoCount(bool),
    /// EXEC [@ret =] proc [@name =] e, ...
    Exec {
        /// Variable receiving the return status.
        ret: Option<String>,
        /// Procedure name (last part, lowercase).
        proc: String,
        /// Arguments.
        args: Vec<(Option<String>, Expr)>,
    },
    /// INSERT BULK t (col type, ...) [WITH (...)]
    InsertBulk {
        /// Target.
        table: ObjName,
        /// Column names as listed.
        cols: Vec<String>,
        /// Their declared types (`Err`: a type name the server does not know).
        types: Vec<Result<SqlType, String>>,
    },
    /// Accepted and ignored (SET options other than NOCOUNT).
    Noop,
    /// PRINT e: an INFO message (number 0, class 0) with the value as text.
    Print(Expr),
    /// USE db: the session's database changes (ENVCHANGE 1 and INFO 5701).
    Use(String),
    /// `EXEC (string expression)`: dynamic SQL, run as its own batch (no outer variables).
    ExecDynamic(Expr),
    /// SET FMTONLY ON|OFF: while on, a SELECT sends its COLMETADATA and no rows, and DML is
    /// not run (what FreeTDS' bcp asks before a bulk load).
    SetFmtOnly(bool),
}

/// A parsed statement with its source text (for messages and fault matching).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The statement.
    pub stmt: Stmt,
    /// Its text.
    pub text: String,
}

struct P<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    i: usize,
}

/// Parses a batch into statements.
pub fn parse_batch(src: &str) -> Result<Vec<Parsed>, SqlError> {
    let mut p = P { src, toks: lex(src)?, i: 0 };
    let mut out = Vec::new();
    loop {
        while p.eat_sym(";") {}
        if p.i >= p.toks.len() {
            break;
        }
        let start = p.toks[p.i].1;
        let stmt = p.stmt()?;
        let end = p.toks.get(p.i).map(|t| t.1).unwrap_or(src.len());
        out.push(Parsed { stmt, text: src[start..end].trim().trim_end_matches(';').trim().to_string() });
    }
    Ok(out)
}

const STMT_WORDS: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "ROLLBACK", "IF", "ELSE", "END", "DECLARE", "SET", "EXEC", "EXECUTE", "CREATE", "DROP", "TRUNCATE", "PRINT", "USE"];

impl<'a> P<'a> {
    fn err(&self, what: &str) -> SqlError {
        let at = self.toks.get(self.i).map(|t| t.1).unwrap_or(self.src.len());
        let near: String = self.src[at..].chars().take(30).collect();
        SqlError::new(102, format!("Incorrect syntax near '{near}': {what}. tds-test-server supports a T-SQL subset only; statement: {}", self.src.trim()))
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.0)
    }
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn peek_kw_at(&self, off: usize, kw: &str) -> bool {
        matches!(self.toks.get(self.i + off).map(|t| &t.0), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.peek_kw(kw) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn kw(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.err(&format!("expected {kw}")))
        }
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn sym(&mut self, s: &str) -> Result<(), SqlError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.err(&format!("expected '{s}'")))
        }
    }
    fn ident(&mut self) -> Result<String, SqlError> {
        match self.peek().cloned() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => {
                self.i += 1;
                Ok(w)
            }
            _ => Err(self.err("expected an identifier")),
        }
    }
    fn at_stmt_end(&self) -> bool {
        match self.peek() {
            None => true,
            Some(Tok::Sym(";")) => true,
            Some(Tok::Word(w)) => STMT_WORDS.iter().any(|k| w.eq_ignore_ascii_case(k)),
            _ => false,
        }
    }

    fn obj_name(&mut self) -> Result<ObjName, SqlError> {
        let mut parts = vec![self.ident()?];
        while self.eat_sym(".") {
            if self.eat_sym(".") {
                parts.push("dbo".into());
            }
            parts.push(self.ident()?);
        }
        Ok(match parts.len() {
            1 => ObjName { db: None, schema: None, name: parts.remove(0) },
            2 => ObjName { db: None, schema: Some(parts.remove(0)), name: parts.remove(0) },
            3 => ObjName { db: Some(parts.remove(0)), schema: Some(parts.remove(0)), name: parts.remove(0) },
            _ => return Err(self.err("object names have at most 3 parts here")),
        })
    }

    fn stmt(&mut self) -> Result<Stmt, SqlError> {
        if self.eat_kw("SELECT") {
            return Ok(Stmt::Select(self.select_body()?));
        }
        if self.eat_kw("INSERT") {
            if self.eat_kw("BULK") {
                let table = self.obj_name()?;
                let mut cols = Vec::new();
                let mut types = Vec::new();
                if self.eat_sym("(") {
                    loop {
                        cols.push(self.ident()?);
                        // The declared type; an unknown one is kept by name (error 2715 at run time).
                        let at = self.i;
                        types.push(match self.sql_type() {
                            Ok(t) => Ok(t),
                            Err(_) => {
                                self.i = at;
                                Err(self.ident().unwrap_or_default())
                            }
                        });
                        // Skip the rest (COLLATE ..., NULL, NOT NULL) up to the next top-level ',' or ')'.
                        let mut depth = 0;
                        loop {
                            match self.peek() {
                                None => return Err(self.err("unterminated INSERT BULK column list")),
                                Some(Tok::Sym("(")) => depth += 1,
                                Some(Tok::Sym(")")) if depth == 0 => break,
                                Some(Tok::Sym(")")) => depth -= 1,
                                Some(Tok::Sym(",")) if depth == 0 => break,
                                _ => {}
                            }
                            self.i += 1;
                        }
                        if !self.eat_sym(",") {
                            break;
                        }
                    }
                    self.sym(")")?;
                }
                if self.eat_kw("WITH") {
                    self.skip_parens()?;
                }
                return Ok(Stmt::InsertBulk { table, cols, types });
            }
            self.eat_kw("INTO");
            let table = self.obj_name()?;
            let mut cols = Vec::new();
            if self.eat_sym("(") {
                cols = self.ident_list()?;
            }
            let mut output = Vec::new();
            if self.eat_kw("OUTPUT") {
                loop {
                    self.kw("INSERTED")?;
                    self.sym(".")?;
                    let name = if self.eat_sym("*") { None } else { Some(self.ident()?) };
                    let alias = if self.eat_kw("AS") { Some(self.ident()?) } else { None };
                    output.push((name, alias));
                    if !self.eat_sym(",") {
                        break;
                    }
                }
            }
            let mut rows = Vec::new();
            if self.eat_kw("DEFAULT") {
                self.kw("VALUES")?;
                rows.push(Vec::new());
            } else {
                self.kw("VALUES")?;
                loop {
                    self.sym("(")?;
                    let mut row = vec![self.expr()?];
                    while self.eat_sym(",") {
                        row.push(self.expr()?);
                    }
                    self.sym(")")?;
                    rows.push(row);
                    if !self.eat_sym(",") {
                        break;
                    }
                }
            }
            return Ok(Stmt::Insert { table, cols, output, rows });
        }
        if self.eat_kw("UPDATE") {
            let table = self.obj_name()?;
            self.kw("SET")?;
            let mut sets = Vec::new();
            loop {
                let c = self.col_ref()?;
                self.sym("=")?;
                sets.push((c, self.expr()?));
                if !self.eat_sym(",") {
                    break;
                }
            }
            let filter = if self.eat_kw("WHERE") { Some(self.cond()?) } else { None };
            return Ok(Stmt::Update { table, sets, filter });
        }
        if self.eat_kw("DELETE") {
            self.eat_kw("FROM");
            let table = self.obj_name()?;
            let filter = if self.eat_kw("WHERE") { Some(self.cond()?) } else { None };
            return Ok(Stmt::Delete { table, filter });
        }
        if self.eat_kw("BEGIN") {
            if self.eat_kw("TRAN") || self.eat_kw("TRANSACTION") {
                self.opt_tx_name();
                return Ok(Stmt::Begin);
            }
            let mut body = Vec::new();
            loop {
                while self.eat_sym(";") {}
                if self.eat_kw("END") {
                    break;
                }
                if self.peek().is_none() {
                    return Err(self.err("BEGIN without END"));
                }
                body.push(self.stmt()?);
            }
            return Ok(Stmt::Block(body));
        }
        if self.eat_kw("COMMIT") {
            if self.eat_kw("TRAN") || self.eat_kw("TRANSACTION") || self.eat_kw("WORK") {
                self.opt_tx_name();
            }
            return Ok(Stmt::Commit);
        }
        if self.eat_kw("ROLLBACK") {
            if self.eat_kw("TRAN") || self.eat_kw("TRANSACTION") || self.eat_kw("WORK") {
                self.opt_tx_name();
            }
            return Ok(Stmt::Rollback);
        }
        if self.eat_kw("IF") {
            let c = self.cond()?;
            let then = vec![self.stmt()?];
            while self.peek() == Some(&Tok::Sym(";")) && self.peek_kw_at(1, "ELSE") {
                self.i += 1;
            }
            let els = if self.eat_kw("ELSE") { vec![self.stmt()?] } else { Vec::new() };
            return Ok(Stmt::If(c, then, els));
        }
        if self.eat_kw("DECLARE") {
            let mut vars = Vec::new();
            loop {
                let v = match self.peek().cloned() {
                    Some(Tok::Var(v)) => v,
                    _ => return Err(self.err("expected @variable")),
                };
                self.i += 1;
                self.eat_kw("AS");
                let t = self.sql_type()?;
                let init = if self.eat_sym("=") { Some(self.expr()?) } else { None };
                vars.push((v, t, init));
                if !self.eat_sym(",") {
                    break;
                }
            }
            return Ok(Stmt::Declare(vars));
        }
        if self.eat_kw("SET") {
            if let Some(Tok::Var(v)) = self.peek().cloned() {
                self.i += 1;
                self.sym("=")?;
                return Ok(Stmt::SetVar(v, self.expr()?));
            }
            if self.eat_kw("FMTONLY") {
                let on = self.eat_kw("ON");
                if !on {
                    self.kw("OFF")?;
                }
                return Ok(Stmt::SetFmtOnly(on));
            }
            if self.eat_kw("NOCOUNT") {
                let on = self.eat_kw("ON");
                if !on {
                    self.kw("OFF")?;
                }
                return Ok(Stmt::SetNoCount(on));
            }
            // SET XACT_ABORT ON, SET TRANSACTION ISOLATION LEVEL ..., SET LOCK_TIMEOUT n, ...
            while !self.at_stmt_end() || self.peek_kw("ON") || self.peek_kw("OFF") {
                if self.peek().is_none() {
                    break;
                }
                self.i += 1;
            }
            return Ok(Stmt::Noop);
        }
        if self.eat_kw("EXEC") || self.eat_kw("EXECUTE") {
            let mut ret = None;
            if let (Some(Tok::Var(v)), Some(Tok::Sym("="))) = (self.peek().cloned(), self.toks.get(self.i + 1).map(|t| t.0.clone())) {
                ret = Some(v);
                self.i += 2;
            }
            if ret.is_none() && self.eat_sym("(") {
                let e = self.expr()?;
                self.sym(")")?;
                return Ok(Stmt::ExecDynamic(e));
            }
            let proc = self.obj_name()?.name.to_ascii_lowercase();
            let mut args = Vec::new();
            if !self.at_stmt_end() {
                loop {
                    let mut name = None;
                    if let (Some(Tok::Var(v)), Some(Tok::Sym("="))) = (self.peek().cloned(), self.toks.get(self.i + 1).map(|t| t.0.clone())) {
                        name = Some(v);
                        self.i += 2;
                    }
                    args.push((name, self.expr()?));
                    self.eat_kw("OUTPUT");
                    if !self.eat_sym(",") {
                        break;
                    }
                }
            }
            return Ok(Stmt::Exec { ret, proc, args });
        }
        if self.eat_kw("PRINT") {
            return Ok(Stmt::Print(self.expr()?));
        }
        if self.eat_kw("USE") {
            return Ok(Stmt::Use(self.ident()?));
        }
        if self.eat_kw("TRUNCATE") {
            self.kw("TABLE")?;
            return Ok(Stmt::Truncate { table: self.obj_name()? });
        }
        if self.eat_kw("DROP") {
            self.kw("TABLE")?;
            let if_exists = if self.eat_kw("IF") {
                self.kw("EXISTS")?;
                true
            } else {
                false
            };
            let table = self.obj_name()?;
            return Ok(Stmt::DropTable { table, if_exists });
        }
        if self.eat_kw("CREATE") {
            let unique = self.eat_kw("UNIQUE");
            self.eat_kw("CLUSTERED");
            self.eat_kw("NONCLUSTERED");
            if self.eat_kw("INDEX") {
                self.ident()?;
                self.kw("ON")?;
                let table = self.obj_name()?;
                self.sym("(")?;
                let cols = self.order_ident_list()?;
                if self.eat_kw("INCLUDE") {
                    self.skip_parens()?;
                }
                if self.eat_kw("WITH") {
                    self.skip_parens()?;
                }
                return Ok(Stmt::CreateIndex { unique, table, cols });
            }
            self.kw("TABLE")?;
            return self.create_table();
        }
        Err(self.err("unsupported statement"))
    }

    fn opt_tx_name(&mut self) {
        if matches!(self.peek(), Some(Tok::Word(w)) if !STMT_WORDS.iter().any(|k| w.eq_ignore_ascii_case(k))) || matches!(self.peek(), Some(Tok::Quoted(_))) {
            self.i += 1;
        }
    }

    fn skip_parens(&mut self) -> Result<(), SqlError> {
        self.sym("(")?;
        let mut depth = 1;
        while depth > 0 {
            match self.peek() {
                None => return Err(self.err("unbalanced parentheses")),
                Some(Tok::Sym("(")) => depth += 1,
                Some(Tok::Sym(")")) => depth -= 1,
                _ => {}
            }
            self.i += 1;
        }
        Ok(())
    }

    fn ident_list(&mut self) -> Result<Vec<String>, SqlError> {
        let mut v = vec![self.col_ref()?];
        while self.eat_sym(",") {
            v.push(self.col_ref()?);
        }
        self.sym(")")?;
        Ok(v)
    }

    fn order_ident_list(&mut self) -> Result<Vec<String>, SqlError> {
        let mut v = Vec::new();
        loop {
            v.push(self.ident()?);
            let _ = self.eat_kw("ASC") || self.eat_kw("DESC");
            if !self.eat_sym(",") {
                break;
            }
        }
        self.sym(")")?;
        Ok(v)
    }

    fn col_ref(&mut self) -> Result<String, SqlError> {
        let mut name = self.ident()?;
        while self.eat_sym(".") {
            name = self.ident()?;
        }
        Ok(name)
    }

    fn sql_type(&mut self) -> Result<SqlType, SqlError> {
        let name = self.ident()?.to_ascii_lowercase();
        let args = |p: &mut Self| -> Result<Vec<Option<u32>>, SqlError> {
            let mut v = Vec::new();
            if p.eat_sym("(") {
                loop {
                    if p.eat_kw("MAX") {
                        v.push(None);
                    } else {
                        match p.peek().cloned() {
                            Some(Tok::Num(n)) => {
                                p.i += 1;
                                v.push(Some(n.parse().map_err(|_| p.err("bad type length"))?));
                            }
                            _ => return Err(p.err("expected a type length")),
                        }
                    }
                    if !p.eat_sym(",") {
                        break;
                    }
                }
                p.sym(")")?;
            }
            Ok(v)
        };
        let a = args(self)?;
        let len = |d: u16| -> Option<u16> {
            match a.first() {
                None => Some(d),
                Some(None) => None,
                Some(Some(n)) => Some((*n).min(8000) as u16),
            }
        };
        let t = match name.as_str() {
            "tinyint" => SqlType::TinyInt,
            "smallint" => SqlType::SmallInt,
            "int" | "integer" => SqlType::Int,
            "bigint" => SqlType::BigInt,
            "bit" => SqlType::Bit,
            "decimal" | "numeric" | "dec" => {
                let p = a.first().copied().flatten().unwrap_or(18).clamp(1, 38) as u8;
                let s = a.get(1).copied().flatten().unwrap_or(0).min(p as u32) as u8;
                if name == "numeric" {
                    SqlType::Numeric { precision: p, scale: s }
                } else {
                    SqlType::Decimal { precision: p, scale: s }
                }
            }
            "nvarchar" | "nchar" => SqlType::NVarChar(len(1)),
            "varchar" | "char" => SqlType::varchar(len(1)),
            "sysname" => SqlType::NVarChar(Some(128)),
            "datetime2" => SqlType::DateTime2(a.first().copied().flatten().unwrap_or(7).min(7) as u8),
            "datetime" => SqlType::DateTime,
            "binary" => SqlType::Binary(len(1).ok_or_else(|| self.err("BINARY(MAX) is not a type"))?),
            "varbinary" => SqlType::VarBinary(len(1)),
            "xml" => SqlType::Xml,
            "float" => SqlType::Float,
            "sql_variant" => SqlType::SqlVariant,
            "uniqueidentifier" => SqlType::UniqueIdentifier,
            other => return Err(self.err(&format!("unsupported type {other}"))),
        };
        // COLLATE sets a VARCHAR's collation (its code page); NVARCHAR keeps UTF-16 whatever
        // the collation; other types have none (error 447).
        if self.eat_kw("COLLATE") {
            let cname = self.ident()?;
            let coll = crate::collation::Collation::from_name(&cname).ok_or_else(|| SqlError::new(448, format!("Invalid collation '{cname}'.")))?;
            return match t {
                SqlType::VarChar(n, _) => Ok(SqlType::VarChar(n, coll)),
                SqlType::NVarChar(_) => Ok(t),
                _ => Err(SqlError::new(447, format!("Expression type {} is invalid for COLLATE clause.", t.sql_name()))),
            };
        }
        Ok(t)
    }

    fn create_table(&mut self) -> Result<Stmt, SqlError> {
        let table = self.obj_name()?;
        self.sym("(")?;
        let mut cols = Vec::new();
        let mut uniques = Vec::new();
        loop {
            if self.eat_kw("CONSTRAINT") {
                self.ident()?;
            }
            if self.eat_kw("PRIMARY") || self.peek_kw("UNIQUE") {
                self.eat_kw("KEY");
                self.eat_kw("UNIQUE");
                let _ = self.eat_kw("CLUSTERED") || self.eat_kw("NONCLUSTERED");
                self.sym("(")?;
                uniques.push(self.order_ident_list()?);
            } else if self.eat_kw("FOREIGN") || self.eat_kw("CHECK") || self.peek_kw("INDEX") {
                // Table-level FOREIGN KEY (...) REFERENCES t (...), CHECK (...), INDEX ix (...): accepted, not enforced.
                while !matches!(self.peek(), Some(Tok::Sym(",")) | Some(Tok::Sym(")")) | None) {
                    if matches!(self.peek(), Some(Tok::Sym("("))) {
                        self.skip_parens()?;
                    } else {
                        self.i += 1;
                    }
                }
            } else {
                cols.push(self.col_def()?);
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        self.sym(")")?;
        Ok(Stmt::CreateTable { table, cols, uniques })
    }

    fn col_def(&mut self) -> Result<ColDef, SqlError> {
        let name = self.ident()?;
        let ty = self.sql_type()?;
        let mut c = ColDef { name, ty, nullable: true, identity: false, default: None, unique: false };
        let mut explicit_null = false;
        loop {
            if self.eat_kw("IDENTITY") {
                c.identity = true;
                if self.peek() == Some(&Tok::Sym("(")) {
                    self.skip_parens()?;
                }
            } else if self.eat_kw("NOT") {
                self.kw("NULL")?;
                c.nullable = false;
            } else if self.eat_kw("NULL") {
                explicit_null = true;
            } else if self.eat_kw("CONSTRAINT") {
                self.ident()?;
            } else if self.eat_kw("DEFAULT") {
                c.default = Some(self.expr()?);
            } else if self.eat_kw("PRIMARY") {
                self.kw("KEY")?;
                let _ = self.eat_kw("CLUSTERED") || self.eat_kw("NONCLUSTERED");
                c.unique = true;
                c.nullable = false;
            } else if self.eat_kw("UNIQUE") {
                let _ = self.eat_kw("CLUSTERED") || self.eat_kw("NONCLUSTERED");
                c.unique = true;
            } else if self.eat_kw("REFERENCES") {
                self.obj_name()?;
                if self.peek() == Some(&Tok::Sym("(")) {
                    self.skip_parens()?;
                }
            } else {
                break;
            }
        }
        if c.identity && !explicit_null {
            c.nullable = false;
        }
        Ok(c)
    }

    fn select_body(&mut self) -> Result<Select, SqlError> {
        self.eat_kw("ALL");
        let mut top = None;
        if self.eat_kw("TOP") {
            if self.eat_sym("(") {
                top = Some(self.expr()?);
                self.sym(")")?;
            } else {
                top = Some(self.primary()?);
            }
        }
        let mut items = Vec::new();
        loop {
            if self.eat_sym("*") {
                items.push(SelItem::Star);
            } else if let (Some(Tok::Var(v)), Some(Tok::Sym("="))) = (self.peek().cloned(), self.toks.get(self.i + 1).map(|t| t.0.clone())) {
                self.i += 2;
                items.push(SelItem::Assign(v, self.expr()?));
            } else {
                let e = self.expr()?;
                let alias = if self.eat_kw("AS") {
                    Some(self.ident_or_str()?)
                } else if matches!(self.peek(), Some(Tok::Quoted(_))) || matches!(self.peek(), Some(Tok::Word(w)) if !["FROM", "WHERE", "ORDER"].iter().any(|k| w.eq_ignore_ascii_case(k)) && !STMT_WORDS.iter().any(|k| w.eq_ignore_ascii_case(k))) {
                    Some(self.ident()?)
                } else {
                    None
                };
                items.push(SelItem::Expr(e, alias));
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        let from = if self.eat_kw("FROM") {
            let t = self.obj_name()?;
            if self.eat_kw("WITH") {
                self.skip_parens()?; // table hints such as WITH (NOLOCK)
            }
            Some(t)
        } else {
            None
        };
        let filter = if self.eat_kw("WHERE") { Some(self.cond()?) } else { None };
        let mut order = Vec::new();
        if self.eat_kw("ORDER") {
            self.kw("BY")?;
            loop {
                let e = self.expr()?;
                let desc = if self.eat_kw("DESC") {
                    true
                } else {
                    self.eat_kw("ASC");
                    false
                };
                order.push((e, desc));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        if self.eat_kw("OPTION") {
            self.skip_parens()?;
        }
        Ok(Select { top, items, from, filter, order })
    }

    fn ident_or_str(&mut self) -> Result<String, SqlError> {
        if let Some(Tok::Str(s)) = self.peek().cloned() {
            self.i += 1;
            return Ok(s);
        }
        self.ident()
    }

    fn cond(&mut self) -> Result<Cond, SqlError> {
        let mut c = self.cond_and()?;
        while self.eat_kw("OR") {
            c = Cond::Or(Box::new(c), Box::new(self.cond_and()?));
        }
        Ok(c)
    }

    fn cond_and(&mut self) -> Result<Cond, SqlError> {
        let mut c = self.cond_not()?;
        while self.eat_kw("AND") {
            c = Cond::And(Box::new(c), Box::new(self.cond_not()?));
        }
        Ok(c)
    }

    fn cond_not(&mut self) -> Result<Cond, SqlError> {
        if self.eat_kw("NOT") {
            if self.peek_kw("EXISTS") {
                if let Cond::Exists(s, _) = self.cond_not()? {
                    return Ok(Cond::Exists(s, true));
                }
            }
            return Ok(Cond::Not(Box::new(self.cond_not()?)));
        }
        if self.eat_kw("EXISTS") {
            self.sym("(")?;
            self.kw("SELECT")?;
            let s = self.select_body()?;
            self.sym(")")?;
            return Ok(Cond::Exists(Box::new(s), false));
        }
        // A parenthesised condition, unless it is a parenthesised expression: try the condition first.
        if self.peek() == Some(&Tok::Sym("(")) {
            let save = self.i;
            self.i += 1;
            if let Ok(c) = self.cond() {
                if self.eat_sym(")") {
                    return Ok(c);
                }
            }
            self.i = save;
        }
        let e = self.expr()?;
        if self.eat_kw("IS") {
            let neg = self.eat_kw("NOT");
            self.kw("NULL")?;
            return Ok(Cond::IsNull(e, neg));
        }
        let neg = self.eat_kw("NOT");
        if self.eat_kw("IN") {
            self.sym("(")?;
            let mut list = vec![self.expr()?];
            while self.eat_sym(",") {
                list.push(self.expr()?);
            }
            self.sym(")")?;
            return Ok(Cond::In(e, list, neg));
        }
        if self.eat_kw("BETWEEN") {
            let lo = self.expr()?;
            self.kw("AND")?;
            let hi = self.expr()?;
            let c = Cond::Between(e, lo, hi);
            return Ok(if neg { Cond::Not(Box::new(c)) } else { c });
        }
        if neg {
            return Err(self.err("expected IN or BETWEEN after NOT"));
        }
        let op = match self.peek() {
            Some(Tok::Sym("=")) => CmpOp::Eq,
            Some(Tok::Sym("<>")) => CmpOp::Ne,
            Some(Tok::Sym("<")) => CmpOp::Lt,
            Some(Tok::Sym("<=")) => CmpOp::Le,
            Some(Tok::Sym(">")) => CmpOp::Gt,
            Some(Tok::Sym(">=")) => CmpOp::Ge,
            _ => return Err(self.err("expected a comparison operator")),
        };
        self.i += 1;
        Ok(Cond::Cmp(e, op, self.expr()?))
    }

    fn expr(&mut self) -> Result<Expr, SqlError> {
        let mut e = self.term()?;
        loop {
            let op = if self.eat_sym("+") {
                "+"
            } else if self.eat_sym("-") {
                "-"
            } else {
                break;
            };
            e = Expr::Bin(Box::new(e), op, Box::new(self.term()?));
        }
        Ok(e)
    }

    fn term(&mut self) -> Result<Expr, SqlError> {
        let mut e = self.primary()?;
        loop {
            let op = if self.eat_sym("*") {
                "*"
            } else if self.eat_sym("/") {
                "/"
            } else {
                break;
            };
            e = Expr::Bin(Box::new(e), op, Box::new(self.primary()?));
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let t = self.peek().cloned().ok_or_else(|| self.err("expected an expression"))?;
        self.i += 1;
        match t {
            Tok::Sym("-") => Ok(Expr::Neg(Box::new(self.primary()?))),
            Tok::Sym("(") => {
                let e = self.expr()?;
                self.sym(")")?;
                Ok(e)
            }
            Tok::Num(n) => {
                if n.contains('.') {
                    parse_decimal_literal(&n).map(Expr::Lit).ok_or_else(|| self.err("bad number"))
                } else if let Ok(i) = n.parse::<i64>() {
                    Ok(Expr::Lit(Value::Int(i)))
                } else {
                    parse_decimal_literal(&n).map(Expr::Lit).ok_or_else(|| self.err("bad number"))
                }
            }
            Tok::Str(s) => Ok(Expr::Lit(Value::Str(s))),
            Tok::Var(v) => Ok(Expr::Var(v)),
            Tok::Quoted(q) => {
                let mut name = q;
                while self.eat_sym(".") {
                    name = self.ident()?;
                }
                Ok(Expr::Col(name))
            }
            Tok::Word(w) => {
                let up = w.to_ascii_uppercase();
                if up == "NULL" {
                    return Ok(Expr::Lit(Value::Null));
                }
                if self.eat_sym("(") {
                    let agg = match up.as_str() {
                        "COUNT" => Some(Agg::Count),
                        "COUNT_BIG" => Some(Agg::CountBig),
                        "MIN" => Some(Agg::Min),
                        "MAX" => Some(Agg::Max),
                        "SUM" => Some(Agg::Sum),
                        _ => None,
                    };
                    if let Some(a) = agg {
                        let arg = if self.eat_sym("*") { None } else { Some(Box::new(self.expr()?)) };
                        self.sym(")")?;
                        return Ok(Expr::Agg(a, arg));
                    }
                    if up == "CAST" || up == "CONVERT" {
                        let (e, t) = if up == "CAST" {
                            let e = self.expr()?;
                            self.kw("AS")?;
                            (e, self.sql_type()?)
                        } else {
                            let t = self.sql_type()?;
                            self.sym(",")?;
                            let e = self.expr()?;
                            if self.eat_sym(",") {
                                self.expr()?; // style, ignored
                            }
                            (e, t)
                        };
                        self.sym(")")?;
                        return Ok(Expr::Cast(Box::new(e), t));
                    }
                    let mut args = Vec::new();
                    if !self.eat_sym(")") {
                        loop {
                            args.push(self.expr()?);
                            if !self.eat_sym(",") {
                                break;
                            }
                        }
                        self.sym(")")?;
                    }
                    return Ok(Expr::Func(up, args));
                }
                let mut name = w;
                while self.eat_sym(".") {
                    name = self.ident()?;
                }
                Ok(Expr::Col(name))
            }
            _ => {
                self.i -= 1;
                Err(self.err("expected an expression"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keyset_page_and_applock_batch() {
        let b = parse_batch("SELECT TOP (@P1) [PerfSnapshotRunID], SnapshotUTC FROM [dbo].[PerfSnapshotRun] WHERE PerfSnapshotRunID > @P2 AND ServerID IS NOT NULL ORDER BY PerfSnapshotRunID ASC").unwrap();
        let Stmt::Select(s) = &b[0].stmt else { panic!() };
        assert_eq!(s.top, Some(Expr::Var("@p1".into())));
        assert_eq!(s.from.as_ref().unwrap().name, "PerfSnapshotRun");
        assert_eq!(s.order, vec![(Expr::Col("PerfSnapshotRunID".into()), false)]);
        let b = parse_batch("DECLARE @r int; EXEC @r = sp_getapplock @Resource = @P1, @LockMode = 'Exclusive', @LockOwner = 'Session', @LockTimeout = @P2; SELECT @r AS result;").unwrap();
        assert_eq!(b.len(), 3);
        assert!(matches!(&b[1].stmt, Stmt::Exec { ret: Some(r), proc, args } if r == "@r" && proc == "sp_getapplock" && args.len() == 4));
        assert_eq!(b[1].text, "EXEC @r = sp_getapplock @Resource = @P1, @LockMode = 'Exclusive', @LockOwner = 'Session', @LockTimeout = @P2");
    }

    #[test]
    fn parses_if_create_table_and_insert_bulk() {
        let b = parse_batch("IF OBJECT_ID(N'dbo.DBAToolsSyncLog', N'U') IS NULL CREATE TABLE dbo.DBAToolsSyncLog (SyncLogID INT IDENTITY(1,1) NOT NULL PRIMARY KEY, SyncStatus VARCHAR(50) NOT NULL, CreatedUTC DATETIME2 NOT NULL DEFAULT GETUTCDATE())").unwrap();
        let Stmt::If(_, then, _) = &b[0].stmt else { panic!() };
        let Stmt::CreateTable { cols, .. } = &then[0] else { panic!() };
        assert_eq!(cols[0].ty, SqlType::Int);
        assert!(cols[0].identity && !cols[0].nullable && cols[0].unique);
        assert_eq!(cols[2].ty, SqlType::DateTime2(7));
        let b = parse_batch("INSERT BULK dbo.T ([a] int, [b] decimal(9,4), [c] nvarchar(256)) WITH (TABLOCK, ORDER(a ASC))").unwrap();
        assert_eq!(b[0].stmt, Stmt::InsertBulk { table: ObjName { db: None, schema: Some("dbo".into()), name: "T".into() }, cols: vec!["a".into(), "b".into(), "c".into()], types: vec![Ok(SqlType::Int), Ok(SqlType::Decimal { precision: 9, scale: 4 }), Ok(SqlType::NVarChar(Some(256)))] });
        let b = parse_batch("INSERT BULK t ([x] numeric(5,1) NOT NULL, [y] datetime, [z] nvarchar(8) COLLATE Latin1_General_CI_AS, [w] geography)").unwrap();
        let Stmt::InsertBulk { types, .. } = &b[0].stmt else { panic!() };
        assert_eq!(types, &[Ok(SqlType::Numeric { precision: 5, scale: 1 }), Ok(SqlType::DateTime), Ok(SqlType::NVarChar(Some(8))), Err("geography".to_string())]);
    }

    #[test]
    fn parses_the_child_tables_types_and_collations() {
        let b = parse_batch("CREATE TABLE dbo.C (a BINARY(8) NULL, b VARBINARY(64), c VARBINARY(MAX), d XML NULL, e SQL_VARIANT, f VARCHAR(50) COLLATE Cyrillic_General_CI_AS NOT NULL, g VARCHAR(MAX) COLLATE Greek_CI_AS, h FLOAT, i NVARCHAR(10) COLLATE Latin1_General_CI_AS)").unwrap();
        let Stmt::CreateTable { cols, .. } = &b[0].stmt else { panic!() };
        let cyrillic = crate::collation::Collation::from_name("Cyrillic_General_CI_AS").unwrap();
        let greek = crate::collation::Collation::from_name("Greek_CI_AS").unwrap();
        let types: Vec<SqlType> = cols.iter().map(|c| c.ty).collect();
        assert_eq!(types, [SqlType::Binary(8), SqlType::VarBinary(Some(64)), SqlType::VarBinary(None), SqlType::Xml, SqlType::SqlVariant, SqlType::VarChar(Some(50), cyrillic), SqlType::VarChar(None, greek), SqlType::Float, SqlType::NVarChar(Some(10))]);
        assert!(!cols[5].nullable);
        // SQL Server's errors: an unknown collation 448, COLLATE on a type without one 447.
        assert_eq!(parse_batch("CREATE TABLE t (a VARCHAR(5) COLLATE Klingon_CI_AS)").unwrap_err().number, 448);
        assert_eq!(parse_batch("CREATE TABLE t (a INT COLLATE Greek_CI_AS)").unwrap_err().number, 447);
    }
}
