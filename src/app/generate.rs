//! `perfcopy generate`: synthetic DBATools exports, one Parquet file per server, with child
//! tables beside it (see [`crate::source::synthetic_children`]).

use crate::cli::GenerateArgs;
use crate::config;
use crate::error::Result;
use crate::pipeline::human::wrap;
use crate::pipeline::progress::{Progress, ProgressMode};
use crate::source::synthetic::write_parquet_sources_with_children;

pub(super) fn run(a: &GenerateArgs) -> Result<()> {
    let spec = config::generate_spec(a)?;
    let children = config::generate_children(a)?;
    let progress = Progress::new(ProgressMode::Auto);
    let bar = progress.phase("generate", Some(spec.plan().iter().map(|p| p.rows()).sum()));
    let paths = write_parquet_sources_with_children(&spec, &children, &a.out, |n| bar.inc(n as u64))?;
    bar.finish();
    if children.tables.is_empty() {
        eprintln!("{}", wrap(&format!("wrote {} source files to {}", paths.len(), a.out.display()), 4));
    } else {
        let text = format!("wrote {} source files to {}, each with {} child tables in <name>/<Table>.parquet", paths.len(), a.out.display(), children.tables.len());
        eprintln!("{}", wrap(&text, 4));
    }
    Ok(())
}

