//! `perfcopy bench`: the real pipeline on generated rows into a throwaway target, reported per
//! stage.

use std::sync::Arc;

use crate::cli::BenchArgs;
use crate::config::{self, BenchTarget};
use crate::error::Result;
use crate::pipeline::bench::BenchReport;
use crate::pipeline::copy::run_copy;
use crate::pipeline::progress::Progress;
use crate::pipeline::Cancel;
use crate::sink::null::NullTarget;

pub(super) fn run(a: &BenchArgs, cancel: &Cancel) -> Result<()> {
    let plan = config::bench_plan(a)?;
    let sources = plan.open_sources();
    let null = Arc::new(NullTarget::new());
    let target = plan.open_target(&null);
    let progress = Progress::new(a.progress);
    let report = run_copy(&sources, target.as_ref(), &plan.copy, &progress, cancel)?;
    let label = match plan.target {
        BenchTarget::Null => "null".to_string(),
        _ => report.target.clone(),
    };
    let encoded = if matches!(plan.target, BenchTarget::Null) { null.child_meters().snapshot() } else { Default::default() };
    let out = BenchReport::new(&plan.spec, label, &report, null.encoded_bytes()).with_children(&report, &plan.generated.snapshot(), &encoded);
    out.print_human();
    if a.json {
        super::print_json(&out)?;
    }
    Ok(())
}
