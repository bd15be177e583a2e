//! Raw flags -> one validated plan, which opens what it names: the sources and the target of a
//! copy or verify, the generated sources and the target of a bench. Every cross-flag check
//! lives here; nothing deeper in the pipeline re-checks a flag.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use std::path::{Path, PathBuf};

use crate::cli::{CopyArgs, GenerateArgs, SourceArgs, StatusArgs, TableArgs, TargetArgs, VerifyArgs};
use std::sync::Arc;

use crate::defaults;
use crate::error::{Error, Result};
use crate::mssql::{ConnSpec, Role};
use crate::pipeline::copy::{ChildOptions, CopyOptions};
use crate::pipeline::status::StatusOptions;
use crate::pipeline::verify::VerifyOptions;
use crate::sink::mssql::scratch::ScratchTable;
use crate::sink::mssql::{BulkOptions, MonitoringDb};
use crate::sink::null::NullTarget;
use crate::sink::stage::{Stage, StageOptions};
use crate::sink::Target;
use crate::source::synthetic::{SyntheticSource, SyntheticSpec};
use crate::source::{open_sources, Source, SourceInput, SourceSpec};
use crate::transform::remap::ServerIdMap;
use crate::transform::Window;

fn usage(flag: &str, message: impl Into<String>) -> Error {
    Error::Usage { flag: flag.into(), message: message.into() }
}

/// Parses an ISO 8601 time as UTC milliseconds: a date, a date-time without zone (taken as
/// UTC), or a date-time with `Z` or an offset. Sub-millisecond digits are refused (SnapshotUTC
/// is DATETIME2(3)).
pub fn parse_utc_ms(flag: &str, text: &str) -> Result<i64> {
    let t = text.trim();
    let parsed: Option<DateTime<Utc>> = DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
                .map(|n| n.and_utc())
        })
        .or_else(|| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|n| n.and_utc()));
    let dt = parsed.ok_or_else(|| usage(flag, format!("'{text}' is not an ISO 8601 UTC time (e.g. 2024-01-31 or 2024-01-31T06:00:00Z)")))?;
    if dt.timestamp_subsec_nanos() % 1_000_000 != 0 {
        return Err(usage(flag, format!("'{text}' has sub-millisecond digits; SnapshotUTC has millisecond precision")));
    }
    Ok(dt.timestamp_millis())
}

/// The `--config` file. Unknown keys are an error (a typo must not silently drop a setting).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub target: Option<TargetConfig>,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub options: OptionsConfig,
}

/// `[target]`: a MonitoringDB connection or a stage directory.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub connection: Option<String>,
    pub stage: Option<PathBuf>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// An Entra ID (Azure AD) access token instead of a password: the variable holding it.
    pub access_token_env: Option<String>,
    /// The same, from a file.
    pub access_token_file: Option<PathBuf>,
}

/// `[[source]]`: a DBATools connection or a Parquet path.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub connection: Option<String>,
    pub path: Option<PathBuf>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub access_token_env: Option<String>,
    pub access_token_file: Option<PathBuf>,
}

/// Where a connection's secret comes from (config keys of `[target]` and `[[source]]`).
#[derive(Debug, Default, Clone, Copy)]
struct Secrets<'a> {
    password_env: Option<&'a String>,
    password_file: Option<&'a PathBuf>,
    access_token_env: Option<&'a String>,
    access_token_file: Option<&'a PathBuf>,
}

impl TargetConfig {
    fn secrets(&self) -> Secrets<'_> {
        Secrets {
            password_env: self.password_env.as_ref(),
            password_file: self.password_file.as_ref(),
            access_token_env: self.access_token_env.as_ref(),
            access_token_file: self.access_token_file.as_ref(),
        }
    }
}

impl SourceConfig {
    fn secrets(&self) -> Secrets<'_> {
        Secrets {
            password_env: self.password_env.as_ref(),
            password_file: self.password_file.as_ref(),
            access_token_env: self.access_token_env.as_ref(),
            access_token_file: self.access_token_file.as_ref(),
        }
    }
}

/// `[options]`: defaults for flags (flags given on the command line win).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsConfig {
    pub server_map: Option<PathBuf>,
    pub register_servers: Option<bool>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub readers: Option<usize>,
    pub batch_rows: Option<usize>,
}

fn config_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Config { path: path.to_path_buf(), message: message.into() }
}

/// Reads and parses a config file; relative paths in it are relative to the file.
pub fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let mut cfg: ConfigFile = toml::from_str(&text).map_err(|e| config_err(path, e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if let Some(t) = cfg.target.as_mut() {
        t.stage.as_mut().map(rel);
        t.password_file.as_mut().map(rel);
        t.access_token_file.as_mut().map(rel);
    }
    for s in &mut cfg.sources {
        s.path.as_mut().map(rel);
        s.password_file.as_mut().map(rel);
        s.access_token_file.as_mut().map(rel);
    }
    cfg.options.server_map.as_mut().map(rel);
    Ok(cfg)
}

/// A secret from an environment variable or a file (trailing newline removed); `kind` names
/// the config keys (`password`, `access_token`). Messages name the variable or file, never the
/// value.
fn secret(what: &str, kind: &str, env: Option<&String>, file: Option<&PathBuf>) -> Result<Option<String>> {
    match (env, file) {
        (Some(_), Some(_)) => Err(usage(what, format!("give {kind}_env or {kind}_file, not both"))),
        (Some(var), None) => std::env::var(var)
            .map(Some)
            .map_err(|_| usage(what, format!("environment variable '{var}' ({kind}_env) is not set"))),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map(|p| Some(p.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| usage(what, format!("cannot read {kind}_file '{}': {e}", f.display()))),
        (None, None) => Ok(None),
    }
}

fn connection(role: Role, what: &str, text: &str, secrets: Secrets<'_>, packet_size: Option<u32>) -> Result<ConnSpec> {
    let mut spec = ConnSpec::parse(role, what, text)?;
    let password = secret(what, "password", secrets.password_env, secrets.password_file)?;
    let token = secret(what, "access_token", secrets.access_token_env, secrets.access_token_file)?;
    match (password, token) {
        (Some(_), Some(_)) => return Err(usage(what, "give a password or an access token, not both")),
        (Some(pw), None) => spec = spec.with_password(what, &pw)?,
        (None, Some(t)) => spec = spec.with_access_token(&t),
        (None, None) => {}
    }
    if let Some(n) = packet_size {
        spec.set_packet_size(n);
    }
    Ok(spec)
}

/// Where a copy or verify writes or looks.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    Stage(PathBuf),
    MonitoringDb(ConnSpec),
}

impl TargetSpec {
    /// Opens the target: a stage (created at the first commit when `create` is set) or a
    /// MonitoringDB (connected when the copy starts).
    fn open(&self, stage: StageOptions, bulk: BulkOptions, create: bool) -> Box<dyn Target> {
        match self {
            TargetSpec::Stage(dir) => Box::new(Stage::new(dir, stage, create)),
            TargetSpec::MonitoringDb(conn) => Box::new(MonitoringDb::new(conn.clone(), bulk)),
        }
    }
}

/// Validated source-side settings shared by copy and verify.
pub struct SourcePlan {
    pub inputs: Vec<SourceInput>,
    pub server_map: Option<ServerIdMap>,
    pub window: Window,
    pub readers: usize,
    pub batch_rows: usize,
    pub split: usize,
    pub register_servers: bool,
    pub target: TargetSpec,
}

impl SourcePlan {
    /// Opens every source (Parquet files are checked, SQL Server sources are discovered).
    pub fn open_sources(&self) -> Result<Vec<Box<dyn Source>>> {
        open_sources(&self.inputs, self.split)
    }
}

fn source_plan(a: &SourceArgs, t: &TargetArgs, packet_size: Option<u32>) -> Result<SourcePlan> {
    let cfg = match &a.config {
        Some(p) => read_config(p)?,
        None => ConfigFile::default(),
    };
    let o = &cfg.options;
    let since_text = a.since.clone().or_else(|| o.since.clone());
    let until_text = a.until.clone().or_else(|| o.until.clone());
    let since = since_text.as_deref().map(|t| parse_utc_ms("--since", t)).transpose()?;
    let until = until_text.as_deref().map(|t| parse_utc_ms("--until", t)).transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(usage(
                "--since",
                format!("--since ({}) must be before --until ({})", since_text.as_deref().unwrap_or(""), until_text.as_deref().unwrap_or("")),
            ));
        }
    }
    let batch_rows = a.batch_rows.or(o.batch_rows).unwrap_or(defaults::BATCH_ROWS);
    if batch_rows == 0 {
        return Err(usage("--batch-rows", "must be at least 1"));
    }
    let readers = a.readers.or(o.readers).unwrap_or_else(defaults::threads);
    if readers == 0 {
        return Err(usage("--readers", "must be at least 1"));
    }
    if a.source_connections == 0 {
        return Err(usage("--source-connections", "must be at least 1"));
    }
    if let Some(n) = packet_size {
        if !(512..=32_767).contains(&n) {
            return Err(usage("--packet-size", format!("{n} is outside 512..32767")));
        }
    }
    let map_path = a.server_map.clone().or_else(|| o.server_map.clone());
    let server_map = map_path.as_deref().map(ServerIdMap::from_csv).transpose()?;

    let mut inputs = Vec::new();
    for (i, s) in cfg.sources.iter().enumerate() {
        let what = format!("[[source]] #{} in --config", i + 1);
        inputs.push(match (&s.connection, &s.path) {
            (Some(c), None) => SourceInput::Sql(connection(Role::Source, &what, c, s.secrets(), packet_size)?),
            (None, Some(p)) => SourceInput::Path(p.clone()),
            _ => return Err(usage(&what, "needs exactly one of connection or path")),
        });
    }
    for f in &a.from {
        inputs.push(match SourceSpec::parse(f) {
            SourceSpec::Path(p) => SourceInput::Path(p),
            SourceSpec::Connection(c) => SourceInput::Sql(connection(Role::Source, "--from", &c, Secrets::default(), packet_size)?),
        });
    }
    if inputs.is_empty() {
        return Err(usage("--from", "no sources given (--from, or [[source]] in --config)"));
    }

    let cfg_target = cfg.target.unwrap_or_default();
    let target = match (&t.stage, &t.to) {
        (Some(dir), None) => TargetSpec::Stage(dir.clone()),
        (None, Some(c)) => TargetSpec::MonitoringDb(connection(Role::Target, "--to", c, cfg_target.secrets(), packet_size)?),
        (Some(_), Some(_)) => return Err(usage("--to", "give --stage or --to, not both")),
        (None, None) => match (&cfg_target.stage, &cfg_target.connection) {
            (Some(dir), None) => TargetSpec::Stage(dir.clone()),
            (None, Some(c)) => TargetSpec::MonitoringDb(connection(Role::Target, "[target] in --config", c, cfg_target.secrets(), packet_size)?),
            (Some(_), Some(_)) => return Err(usage("[target] in --config", "give stage or connection, not both")),
            (None, None) => return Err(usage("--stage", "no target: give --stage DIR or --to CONNECTION (or [target] in --config)")),
        },
    };
    if let TargetSpec::Stage(dir) = &target {
        if dir.exists() && !dir.is_dir() {
            return Err(usage("--stage", format!("'{}' exists and is not a directory", dir.display())));
        }
    }
    Ok(SourcePlan {
        inputs,
        server_map,
        window: Window { since, until },
        readers,
        batch_rows,
        split: a.source_connections,
        register_servers: o.register_servers.unwrap_or(false),
        target,
    })
}

/// A validated copy.
pub struct CopyPlan {
    pub sources: SourcePlan,
    pub copy: CopyOptions,
    pub stage: StageOptions,
    pub bulk: BulkOptions,
}

impl CopyPlan {
    /// Opens the target the copy writes to.
    pub fn open_target(&self) -> Box<dyn Target> {
        self.sources.target.open(self.stage.clone(), self.bulk.clone(), true)
    }
}

/// Validates `copy` flags (and the config file).
pub fn copy_plan(a: &CopyArgs) -> Result<CopyPlan> {
    let sources = source_plan(&a.src, &a.target, a.packet_size)?;
    let writers = a.writers.unwrap_or_else(defaults::threads);
    if writers == 0 {
        return Err(usage("--writers", "must be at least 1"));
    }
    if a.queue_depth == 0 {
        return Err(usage("--queue-depth", "must be at least 1"));
    }
    if !(1..=22).contains(&a.zstd_level) {
        return Err(usage("--zstd-level", "must be between 1 and 22"));
    }
    if a.row_group_rows == 0 {
        return Err(usage("--row-group-rows", "must be at least 1"));
    }
    if a.retries == 0 {
        return Err(usage("--retries", "must be at least 1"));
    }
    Ok(CopyPlan {
        copy: CopyOptions {
            server_map: sources.server_map.clone(),
            register_servers: a.register_servers || sources.register_servers,
            window: sources.window,
            readers: sources.readers,
            writers,
            batch_rows: sources.batch_rows,
            queue_depth: a.queue_depth,
            dry_run: a.dry_run,
            rescan: a.rescan,
            children: ChildOptions { create_missing: a.create_missing_tables, ..child_options(&a.tables) },
        },
        stage: StageOptions { zstd_level: a.zstd_level, row_group_rows: a.row_group_rows, batch_rows: sources.batch_rows },
        bulk: BulkOptions { tablock: !a.no_tablock, order_hint: a.order_hint, retries: a.retries, ..Default::default() },
        sources,
    })
}

/// A validated verify.
pub struct VerifyPlan {
    pub sources: SourcePlan,
    pub verify: VerifyOptions,
}

impl VerifyPlan {
    /// Opens the target verify reads (a stage is only read, never created).
    pub fn open_target(&self) -> Box<dyn Target> {
        let stage = StageOptions { batch_rows: self.verify.batch_rows, ..StageOptions::default() };
        self.sources.target.open(stage, BulkOptions::default(), false)
    }
}

/// Validates `verify` flags (and the config file).
pub fn verify_plan(a: &VerifyArgs) -> Result<VerifyPlan> {
    let sources = source_plan(&a.src, &a.target, None)?;
    if let TargetSpec::Stage(dir) = &sources.target {
        if !dir.is_dir() {
            return Err(usage("--stage", format!("'{}' is not a stage directory", dir.display())));
        }
    }
    Ok(VerifyPlan {
        verify: VerifyOptions {
            server_map: sources.server_map.clone(),
            window: sources.window,
            readers: sources.readers,
            batch_rows: sources.batch_rows,
            children: child_options(&a.tables),
            values: a.values,
        },
        sources,
    })
}

/// A validated `status`.
pub struct StatusPlan {
    pub sources: SourcePlan,
    pub status: StatusOptions,
}

impl StatusPlan {
    /// Opens the target status reads (a stage is only read, never created).
    pub fn open_target(&self) -> Box<dyn Target> {
        self.sources.target.open(StageOptions::default(), BulkOptions::default(), false)
    }
}

/// Validates `status` flags (and the config file).
pub fn status_plan(a: &StatusArgs) -> Result<StatusPlan> {
    let sources = source_plan(&a.src, &a.target, None)?;
    if let TargetSpec::Stage(dir) = &sources.target {
        if !dir.is_dir() {
            return Err(usage("--stage", format!("'{}' is not a stage directory", dir.display())));
        }
    }
    if a.src.since.is_some() || a.src.until.is_some() {
        return Err(usage(if a.src.since.is_some() { "--since" } else { "--until" }, "status looks at whole sources; it takes no time window"));
    }
    let max_lag = match &a.max_lag {
        None => None,
        Some(t) => Some(humantime::parse_duration(t.trim()).map_err(|e| usage("--max-lag", format!("'{t}' is not a duration such as 15m, 2h or 1d: {e}")))?),
    };
    Ok(StatusPlan {
        status: StatusOptions { server_map: sources.server_map.clone(), readers: sources.readers, batch_rows: sources.batch_rows, max_lag, max_lag_rows: a.max_lag_rows },
        sources,
    })
}

/// Which child tables, from `--tables` and `--runs-only`.
fn child_options(a: &TableArgs) -> ChildOptions {
    ChildOptions {
        runs_only: a.runs_only,
        tables: a.tables.as_ref().map(|t| t.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect()),
        create_missing: false,
    }
}

/// Where a benchmark writes.
pub enum BenchTarget {
    Null,
    Stage(PathBuf),
    MonitoringDb(ConnSpec),
}

/// A validated benchmark.
pub struct BenchPlan {
    pub spec: SyntheticSpec,
    /// The child tables generated with the runs (none: the run-table benchmark).
    pub children: crate::source::synthetic_children::ChildrenSpec,
    /// CPU time spent generating each child table.
    pub generated: Arc<crate::source::synthetic::TableMeters>,
    pub target: BenchTarget,
    pub copy: CopyOptions,
    pub bulk: BulkOptions,
}

impl BenchPlan {
    /// The generated sources, one per simulated server.
    pub fn open_sources(&self) -> Vec<Box<dyn Source>> {
        SyntheticSource::with_children(self.spec.clone(), self.children.clone(), self.generated.clone()).into_iter().map(|s| Box::new(s) as Box<dyn Source>).collect()
    }

    /// The target the benchmark writes to; `null` is the null target whose encoded bytes the
    /// report shows. A MonitoringDB is written through a scratch table, never its
    /// PerfSnapshotRun.
    pub fn open_target(&self, null: &Arc<NullTarget>) -> Box<dyn Target> {
        match &self.target {
            BenchTarget::Null => Box::new(null.clone()),
            BenchTarget::Stage(dir) => Box::new(Stage::new(dir, StageOptions::default(), true)),
            BenchTarget::MonitoringDb(conn) => Box::new(ScratchTable::new(conn.clone(), self.bulk.clone())),
        }
    }
}

/// Validates `bench` flags.
pub fn bench_plan(a: &crate::cli::BenchArgs) -> Result<BenchPlan> {
    let spec = generate_spec(&GenerateArgs { out: PathBuf::new(), servers: a.servers, rows: a.rows, overlap: a.overlap, seed: a.seed, child_tables: Some("none".into()), children_scale: 1.0 })?;
    let target = if a.to.eq_ignore_ascii_case("null") {
        BenchTarget::Null
    } else {
        match SourceSpec::parse(&a.to) {
            SourceSpec::Connection(c) => {
                let t = match &a.config {
                    Some(p) => read_config(p)?.target.unwrap_or_default(),
                    None => TargetConfig::default(),
                };
                if let Some(n) = a.packet_size {
                    if !(512..=32_767).contains(&n) {
                        return Err(usage("--packet-size", format!("{n} is outside 512..32767")));
                    }
                }
                BenchTarget::MonitoringDb(connection(Role::Target, "--to", &c, t.secrets(), a.packet_size)?)
            }
            SourceSpec::Path(p) => {
                let occupied = p.exists() && std::fs::read_dir(&p).map(|mut d| d.next().is_some()).unwrap_or(true);
                if occupied {
                    return Err(usage("--to", format!("'{}' exists; bench writes a fresh stage (give a new directory)", p.display())));
                }
                BenchTarget::Stage(p)
            }
        }
    };
    for (flag, v) in [("--batch-rows", a.batch_rows), ("--queue-depth", a.queue_depth)] {
        if v == 0 {
            return Err(usage(flag, "must be at least 1"));
        }
    }
    let children = children_spec(&a.child_tables, a.children_scale)?;
    let readers = a.readers.unwrap_or_else(defaults::threads);
    let writers = a.writers.unwrap_or_else(defaults::threads);
    if readers == 0 || writers == 0 {
        return Err(usage(if readers == 0 { "--readers" } else { "--writers" }, "must be at least 1"));
    }
    // The generated names get IDs 1..=servers, so no registry is written.
    let mut map = ServerIdMap::new();
    for i in 0..a.servers {
        map.insert(&crate::source::synthetic::server_name(i), i as i32 + 1).map_err(|m| usage("--servers", m))?;
    }
    let runs_only = children.tables.is_empty();
    Ok(BenchPlan {
        spec,
        children,
        generated: Default::default(),
        target,
        copy: CopyOptions {
            server_map: Some(map),
            register_servers: false,
            window: Window::default(),
            readers,
            writers,
            batch_rows: a.batch_rows,
            queue_depth: a.queue_depth,
            dry_run: false,
            rescan: false,
            children: ChildOptions { runs_only, ..Default::default() },
        },
        bulk: BulkOptions { tablock: !a.no_tablock, ..Default::default() },
    })
}

/// Validates `generate` flags.
pub fn generate_spec(a: &GenerateArgs) -> Result<SyntheticSpec> {
    if a.servers == 0 {
        return Err(usage("--servers", "must be at least 1"));
    }
    if !(0.0..=1.0).contains(&a.overlap) {
        return Err(usage("--overlap", format!("{} is not a fraction between 0 and 1", a.overlap)));
    }
    Ok(SyntheticSpec { servers: a.servers, rows: a.rows, overlap: a.overlap, seed: a.seed })
}

/// The child tables `perfcopy generate` writes (`--child-tables`, `--children-scale`).
pub fn generate_children(a: &GenerateArgs) -> Result<crate::source::synthetic_children::ChildrenSpec> {
    children_spec(a.child_tables.as_deref().unwrap_or("all"), a.children_scale)
}

/// The generated child tables of `--child-tables all|none|LIST` at `--children-scale`.
fn children_spec(list: &str, scale: f64) -> Result<crate::source::synthetic_children::ChildrenSpec> {
    use crate::source::synthetic_children::{by_name, ChildrenSpec, ALL};
    if !(0.0..=10.0).contains(&scale) {
        return Err(usage("--children-scale", format!("{scale} is not between 0 and 10")));
    }
    let tables = match list.trim() {
        l if l.eq_ignore_ascii_case("all") => ALL.to_vec(),
        l if l.eq_ignore_ascii_case("none") => Vec::new(),
        list => {
            let mut tables = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let t = by_name(name).ok_or_else(|| {
                    usage("--child-tables", format!("'{name}' is not a table generate writes (one of {}, or all, or none)", ALL.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")))
                })?;
                if !tables.iter().any(|x: &crate::schema::ChildTable| x.name == t.name) {
                    tables.push(t);
                }
            }
            if tables.is_empty() {
                return Err(usage("--child-tables", "the list is empty; write none for no child tables"));
            }
            tables
        }
    };
    Ok(ChildrenSpec { tables, scale })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iso_times_as_utc_ms() {
        assert_eq!(parse_utc_ms("--since", "1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_utc_ms("--since", "1970-01-01T00:00:01Z").unwrap(), 1_000);
        assert_eq!(parse_utc_ms("--since", "1970-01-01T00:00:01.250").unwrap(), 1_250);
        assert_eq!(parse_utc_ms("--since", "1970-01-01T02:00:00+02:00").unwrap(), 0);
        assert!(parse_utc_ms("--since", "yesterday").unwrap_err().to_string().contains("--since"));
        assert!(parse_utc_ms("--until", "1970-01-01T00:00:00.0001Z").unwrap_err().to_string().contains("sub-millisecond"));
    }
}
