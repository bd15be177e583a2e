//! Which child tables a copy moves: every table of the sources with a PerfSnapshotRunID column
//! that the target has too (or only those `--tables` names; none with `--runs-only`). A table's
//! description is the first source's that has it; every other source's table of that name must
//! match it by column name and type, and the target's must take every value.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::pipeline::progress::Progress;
use crate::schema::{ChildTable, Column, SqlType};
use crate::sink::{ChildTableState, Target};
use crate::source::Source;

/// Which child tables to move (from `--tables`, `--runs-only`, `--create-missing-tables`).
#[derive(Debug, Clone, Default)]
pub struct ChildOptions {
    /// Move PerfSnapshotRun only.
    pub runs_only: bool,
    /// Only these tables (case-insensitive names); `None`: every child table.
    pub tables: Option<Vec<String>>,
    /// Create a child table the target lacks from the source's columns (otherwise a table
    /// named in `--tables` that the target lacks is an error, and other ones are skipped with
    /// a message).
    pub create_missing: bool,
}

/// The child tables the copy moves, checked against every source and the target, and the
/// sources' child tables it leaves because the target lacks them (not named in `--tables`).
pub fn plan(sources: &[Box<dyn Source>], target: &dyn Target, opts: &ChildOptions, dry_run: bool, progress: &Progress) -> Result<(Vec<ChildTable>, Vec<String>)> {
    if opts.runs_only {
        return Ok((Vec::new(), Vec::new()));
    }
    let flag = |m: String| Error::Usage { flag: "--tables".into(), message: m };
    let mut tables: BTreeMap<String, ChildTable> = BTreeMap::new();
    for s in sources {
        for t in s.child_tables() {
            tables.entry(t.name.to_ascii_lowercase()).or_insert(*t);
        }
    }
    let wanted = |name: &str| opts.tables.as_ref().is_none_or(|names| names.iter().any(|n| n.eq_ignore_ascii_case(name)));
    if let Some(names) = &opts.tables {
        for n in names {
            let unreadable = sources.iter().flat_map(|s| s.unreadable_child_tables().iter().map(move |u| (s, u))).find(|(_, (t, _))| t.eq_ignore_ascii_case(n));
            if !tables.contains_key(&n.to_ascii_lowercase()) && unreadable.is_none() {
                return Err(flag(format!("no source has a child table '{n}' (a table with a PerfSnapshotRunID column)")));
            }
        }
    }
    for s in sources {
        if let Some((t, why)) = s.unreadable_child_tables().iter().find(|(t, _)| wanted(t)) {
            return Err(Error::Source { source_label: s.label().to_string(), message: format!("table dbo.{t}: {why}; leave it out with --tables, or --runs-only") });
        }
    }
    let chosen: Vec<ChildTable> = tables.into_values().filter(|t| wanted(t.name)).map(|t| undeclared_where_any_source_is(t, sources)).collect();
    for t in &chosen {
        for s in sources {
            if let Some(theirs) = s.child_tables().iter().find(|o| o.name.eq_ignore_ascii_case(t.name)) {
                matches(t, theirs).map_err(|m| Error::Source { source_label: s.label().to_string(), message: format!("table dbo.{}: {m}", t.name) })?;
            }
        }
    }
    let states = target.child_tables(&chosen)?;
    let mut out = Vec::with_capacity(chosen.len());
    let mut skipped = Vec::new();
    for (t, state) in chosen.into_iter().zip(states) {
        match state {
            ChildTableState::Ready => out.push(t),
            ChildTableState::Missing if opts.create_missing => {
                if !dry_run {
                    target.create_child_table(&t)?;
                    progress.message(&format!("{}: created {} from the source's columns", target.label(), t.sql_name()));
                }
                out.push(t);
            }
            ChildTableState::Missing if opts.tables.is_some() => {
                return Err(Error::Target { target: target.label().to_string(), message: format!("has no table {} (add --create-missing-tables to create it from the source's columns)", t.sql_name()) });
            }
            ChildTableState::Missing => {
                progress.message(&format!("{}: has no table {}; its rows are not copied (--create-missing-tables creates it)", target.label(), t.sql_name()));
                skipped.push(t.name.to_string());
            }
        }
    }
    Ok((out, skipped))
}

/// Whether `t` is text (of a declared length or not), so text of undeclared length may stand
/// for it.
fn is_text(t: SqlType) -> bool {
    matches!(t, SqlType::NVarChar(_) | SqlType::NVarCharMax | SqlType::VarChar(_) | SqlType::VarCharMax | SqlType::Text)
}

/// `t` with each text column that some source's table of that name holds as text of
/// undeclared length (an export without perfcopy's metadata) undeclared too: the copy then
/// declares no length it cannot vouch for, and the target checks each value as it loads.
fn undeclared_where_any_source_is(t: ChildTable, sources: &[Box<dyn Source>]) -> ChildTable {
    let theirs: Vec<&ChildTable> = sources.iter().filter_map(|s| s.child_tables().iter().find(|o| o.name.eq_ignore_ascii_case(t.name))).collect();
    let undeclared = |c: &Column| is_text(c.sql) && c.sql != SqlType::Text && theirs.iter().any(|o| o.values.iter().any(|v| v.name.eq_ignore_ascii_case(c.name) && v.sql == SqlType::Text));
    if !t.values.iter().any(undeclared) {
        return t;
    }
    let values: Vec<Column> = t.values.iter().map(|c| if undeclared(c) { Column { sql: SqlType::Text, collation: None, ..*c } } else { *c }).collect();
    ChildTable { values: Box::leak(values.into_boxed_slice()), ..t }
}

/// A column's type as the messages name it.
fn type_name(t: SqlType) -> String {
    if t == SqlType::Text {
        "text of undeclared length (no perfcopy.sql_type metadata)".into()
    } else {
        t.sql_name()
    }
}

/// Whether a source's table `theirs` fits the description `ours`: no column the description
/// lacks (it would be lost), each of its columns of the same type, and a column it lacks
/// only where the description allows NULL (it is read as NULL).
fn matches(ours: &ChildTable, theirs: &ChildTable) -> std::result::Result<(), String> {
    for c in theirs.values {
        if !ours.values.iter().any(|o| o.name.eq_ignore_ascii_case(c.name)) {
            return Err(format!("column {} is not in the first source's table of that name (its values would be lost)", c.name));
        }
    }
    for o in ours.values {
        match theirs.values.iter().find(|c| c.name.eq_ignore_ascii_case(o.name)) {
            // Text of undeclared length stands for any text (the description is undeclared then).
            Some(c) if c.sql != o.sql && !(o.sql == SqlType::Text && is_text(c.sql)) => {
                return Err(format!("column {} is {}, another source's is {}", c.name, type_name(c.sql), type_name(o.sql)))
            }
            Some(_) => {}
            None if o.nullable => {}
            None => return Err(format!("has no column {} (NOT NULL in another source's table)", o.name)),
        }
    }
    Ok(())
}
