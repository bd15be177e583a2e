//! Properties: for random sources (random overlaps, conflicting copies, case variants of
//! names, rows out of time order) and random server maps, a copy into a fresh stage equals the
//! independent model (`common::expected`), whatever `--batch-rows`, `--readers` and
//! `--writers` are; and copying the same sources again (split differently) adds nothing.
//! Drives the library (`run_copy`) directly: a case takes milliseconds.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use perfcopy::pipeline::copy::{run_copy, CopyOptions};
use perfcopy::pipeline::progress::{Progress, ProgressMode};
use perfcopy::pipeline::Cancel;
use perfcopy::sink::stage::{Stage, StageOptions};
use perfcopy::source::{open_sources, SourceInput};
use perfcopy::transform::remap::ServerIdMap;
use perfcopy::transform::Window;
use proptest::prelude::*;

const NAMES: [&str; 5] = ["SQL01", "sql01", "SQL02", "HOST\\INST", "Überserver"];

/// One source: (name index, start offset in 5-minute steps, rows, seed) series, plus copies of
/// an earlier source's rows (with every `every`-th value changed), plus a reversal flag.
#[derive(Debug, Clone)]
struct SourceGen {
    series: Vec<(usize, i64, usize, u64)>,
    copy_from: Option<(usize, usize)>,
    reverse: bool,
}

fn source_gen() -> impl Strategy<Value = SourceGen> {
    (prop::collection::vec((0..NAMES.len(), 0i64..40, 1usize..30, any::<u64>()), 1..3), prop::option::of((0usize..3, 0usize..5)), any::<bool>())
        .prop_map(|(series, copy_from, reverse)| SourceGen { series, copy_from, reverse })
}

fn build(gens: &[SourceGen]) -> Vec<Vec<SrcRow>> {
    let mut out: Vec<Vec<SrcRow>> = Vec::new();
    for (i, g) in gens.iter().enumerate() {
        let mut rows = Vec::new();
        let mut next_id = 1;
        for &(n, start, count, seed) in &g.series {
            rows.extend(series(NAMES[n], T0 + start * MIN5, count, next_id, seed % 1000));
            next_id += count as i64;
        }
        if let Some((from, every)) = g.copy_from {
            if i > 0 {
                let earlier = out[from % i].clone();
                rows.extend(copy_rows(&earlier, next_id, every, None));
            }
        }
        if g.reverse {
            rows.reverse();
        }
        out.push(rows);
    }
    out
}

fn copy(sources: &[std::path::PathBuf], stage: &Path, map: Option<&Path>, batch_rows: usize, readers: usize, writers: usize) {
    let inputs: Vec<SourceInput> = sources.iter().map(|p| SourceInput::Path(p.clone())).collect();
    let srcs = open_sources(&inputs, 1).unwrap();
    let target = Stage::new(stage, StageOptions { zstd_level: 1, row_group_rows: 64, batch_rows }, true);
    let opts = CopyOptions {
        children: Default::default(),
        server_map: map.map(|m| ServerIdMap::from_csv(m).unwrap()),
        register_servers: true,
        window: Window::default(),
        readers,
        writers,
        batch_rows,
        queue_depth: 1,
        dry_run: false,
        rescan: false,
    };
    run_copy(&srcs, &target, &opts, &Progress::new(ProgressMode::Off), &Cancel::new()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn stage_equals_the_model_for_any_sources_map_and_split(
        gens in prop::collection::vec(source_gen(), 1..4),
        // Server map: for each name, maybe an ID (small range, so several names share one).
        map_ids in prop::collection::vec(prop::option::of(1i32..4), NAMES.len()),
        split in (1usize..40, 1usize..4, 1usize..4),
        resplit in (1usize..40, 1usize..4),
    ) {
        let t = tempfile::tempdir().unwrap();
        let sources = build(&gens);
        let files: Vec<_> = sources.iter().enumerate().map(|(i, rows)| {
            let p = t.path().join(format!("s{i}.parquet"));
            write_source(&p, rows, &SourceOpts { row_group_rows: 7, ..Default::default() });
            p
        }).collect();
        // Case variants of one name must agree in the map (names match case-insensitively).
        let mut entries: BTreeMap<String, (String, i32)> = BTreeMap::new();
        for (n, id) in NAMES.iter().zip(&map_ids) {
            if let Some(id) = id {
                entries.entry(fold(n)).or_insert((n.to_string(), *id));
            }
        }
        let map_path = t.path().join("map.csv");
        let pairs: Vec<(&str, i32)> = entries.values().map(|(n, id)| (n.as_str(), *id)).collect();
        write_map(&map_path, &pairs);
        let known = name_map(&pairs);
        let mut model_map = known.clone();
        model_map.extend(registered(&known, &sources).into_iter().map(|(n, id)| (fold(&n), id)));
        let want = expected(&sources, &model_map, Win::default(), &BTreeMap::new());

        let stage = t.path().join("stage");
        copy(&files, &stage, Some(&map_path), split.0, split.1, split.2);
        let got = by_key(&read_stage(&stage));
        prop_assert_eq!(&got, &want.stage, "split {:?}", split);
        // The registry holds exactly the registered names with the model's IDs.
        let reg_path = stage.join("servers.csv");
        let reg: BTreeMap<String, i32> = if reg_path.exists() { read_registry(&reg_path) } else { BTreeMap::new() }.into_iter().map(|(n, id)| (fold(&n), id)).collect();
        for (n, id) in registered(&known, &sources) {
            prop_assert_eq!(reg.get(&fold(&n)), Some(&id), "registered ID of {}", n);
        }

        // Again, split differently: nothing added, nothing changed.
        copy(&files, &stage, Some(&map_path), resplit.0, resplit.1, 2);
        prop_assert_eq!(by_key(&read_stage(&stage)), want.stage);
    }
}
