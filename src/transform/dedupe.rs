//! Deduplication on (SnapshotUTC, ServerID) with state only where keys can collide.
//!
//! Three steps, driven by the pipeline:
//! 1. [`OverlapPlanner`] sees every key once (the cheap key-only pass) and tracks, per target
//!    server and UTC day, which sources (and whether the target) hold rows there, and whether
//!    each source's rows of a server come in strictly increasing time order. A day is *hot* when
//!    two sources, or a source and the target, meet in it, or when a source's rows of that
//!    server were not strictly increasing (it may repeat a key within itself). Only hot days can
//!    hold duplicates.
//! 2. [`Winners`] sees the full rows of hot days only, from every source and from the target,
//!    and keeps for each hot key the surviving row and a hash of its values.
//! 3. The copy pass keeps a row when it is not in a hot day, or when it is its key's survivor.
//!
//! **Survivor rule** (deterministic, whatever the readers or timing): a row already in the
//! target always survives (the target is never rewritten). Otherwise the row from the source
//! given first on the command line wins (a directory's files count in name order), and within
//! a source the row with the lowest `PerfSnapshotRunID`; rows tying on both keep the first in
//! the source's order. A dropped row whose values (every copied column except ServerName, which
//! may differ between aliases) differ from the survivor's is counted as a conflict.

use ahash::{AHashMap as HashMap, AHashSet as HashSet};
use std::hash::{BuildHasher, Hasher};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type, Int32Type, TimestampMillisecondType};

use crate::schema::MS_PER_DAY;

/// Rank of the target's own rows: ranks below every source.
pub const TARGET_RANK: u32 = 0;

/// A (target ServerID, UTC day) bucket.
pub type Day = (i32, i64);

/// UTC day number of a SnapshotUTC in ms.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

#[derive(Debug, Clone, Copy)]
struct Touch {
    first: u32,
    multi: bool,
}

/// Step 1: which days can hold duplicates.
#[derive(Debug, Default)]
pub struct OverlapPlanner {
    touches: HashMap<Day, Touch>,
    last_ts: HashMap<(u32, i32), i64>,
    unsorted: HashSet<(u32, i32)>,
}

impl OverlapPlanner {
    /// An empty planner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records keys of source `rank` (or the target, [`TARGET_RANK`]) in the order read.
    pub fn observe(&mut self, rank: u32, server_ids: &[i32], snapshot_ms: &[i64]) {
        let mut prev_day: Option<Day> = None;
        for (&server, &ts) in server_ids.iter().zip(snapshot_ms) {
            if rank != TARGET_RANK {
                let last = self.last_ts.entry((rank, server)).or_insert(i64::MIN);
                if ts <= *last {
                    self.unsorted.insert((rank, server));
                }
                *last = ts;
            }
            let day = (server, day_of(ts));
            if prev_day == Some(day) {
                continue;
            }
            prev_day = Some(day);
            self.touches
                .entry(day)
                .and_modify(|t| t.multi |= t.first != rank)
                .or_insert(Touch { first: rank, multi: false });
        }
    }

    /// Merges another planner (sources are observed in parallel, each into its own planner).
    pub fn merge(&mut self, other: OverlapPlanner) {
        for (day, t) in other.touches {
            self.touches
                .entry(day)
                .and_modify(|mine| mine.multi |= t.multi || mine.first != t.first)
                .or_insert(t);
        }
        self.unsorted.extend(other.unsorted);
        // last_ts is per rank, and each rank is observed by one planner only.
        self.last_ts.extend(other.last_ts);
    }

    /// Re-keys a planner built on provisional groups (server names) onto target ServerIDs.
    /// Where several groups land on one key (aliases of one server), the day is marked as
    /// touched more than once: aliases may repeat each other's keys.
    pub fn regroup(self, to_id: impl Fn(i32) -> i32) -> OverlapPlanner {
        let mut out = OverlapPlanner::new();
        for ((group, day), t) in self.touches {
            let key = (to_id(group), day);
            out.touches
                .entry(key)
                .and_modify(|mine| mine.multi = true)
                .or_insert(t);
        }
        out.unsorted = self.unsorted.into_iter().map(|(r, g)| (r, to_id(g))).collect();
        out
    }

    /// Target servers and days seen from sources (not only from the target).
    pub fn source_days(&self) -> impl Iterator<Item = Day> + '_ {
        self.touches.iter().filter(|(_, t)| t.multi || t.first != TARGET_RANK).map(|(d, _)| *d)
    }

    /// The days that can hold duplicates.
    pub fn hot_days(&self) -> HashSet<Day> {
        self.touches
            .iter()
            .filter(|(&(server, _), t)| t.multi || self.unsorted.contains(&(t.first, server)))
            .filter(|(_, t)| t.multi || t.first != TARGET_RANK)
            .map(|(d, _)| *d)
            .collect()
    }
}

/// Half-open ms ranges covering a set of days (consecutive days merged), for source pruning.
pub fn day_ranges(days: impl IntoIterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut d: Vec<i64> = days.into_iter().collect();
    d.sort_unstable();
    d.dedup();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for day in d {
        match out.last_mut() {
            Some((_, end)) if *end == day * MS_PER_DAY => *end += MS_PER_DAY,
            _ => out.push((day * MS_PER_DAY, (day + 1) * MS_PER_DAY)),
        }
    }
    out
}

/// The survivor of one hot key (24 bytes: this is the bulk of the dedupe state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Winner {
    pub run_id: i64,
    pub hash: u64,
    pub rank: u32,
    /// Set by the copy pass once the survivor has been kept, so a second row tying on
    /// (rank, run_id) is dropped.
    pub taken: bool,
}

impl Winner {
    fn beats(&self, other: &Winner) -> bool {
        (self.rank, self.run_id) < (other.rank, other.run_id)
    }
}

/// Step 2 and 3: the survivor of every hot key, per server then SnapshotUTC.
#[derive(Debug, Default)]
pub struct Winners {
    map: HashMap<i32, HashMap<i64, Winner>>,
    len: usize,
    /// When child tables move: per hot key, the best source row (rank, run ID) and whether the
    /// copy pass has seen it. For a key the target holds, that row's children may complete the
    /// target's run (see [`Verdict::Drop`]'s `complete`).
    best_source: Option<HashMap<(i32, i64), (u32, i64, bool)>>,
}

/// What the copy pass decides for one hot row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Dropped: the survivor is elsewhere. `in_target`: the survivor is a row already in the
    /// target; `other_source`: it is a row of another source of this run (durable only once
    /// that source's batch is); `conflict`: values differ from the survivor's. `complete`: the
    /// survivor is the target's and this is the best source row of the key (the one that
    /// would have survived without the target; set only when the set tracks it, see
    /// [`Winners::tracking_sources`]): its children may complete the target's run.
    Drop { in_target: bool, other_source: bool, conflict: bool, complete: bool },
}

impl Winners {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set that also tracks each hot key's best source row (for child tables).
    pub fn tracking_sources() -> Self {
        Winners { best_source: Some(HashMap::new()), ..Self::default() }
    }

    /// Number of hot keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no keys are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offers a row of a hot day (step 2). Rows of one source must be offered in the
    /// source's own order; sources may interleave.
    pub fn offer(&mut self, server: i32, ts: i64, rank: u32, run_id: i64, hash: u64) {
        if let Some(best) = self.best_source.as_mut().filter(|_| rank != TARGET_RANK) {
            best.entry((server, ts)).and_modify(|b| if (rank, run_id) < (b.0, b.1) { *b = (rank, run_id, false) }).or_insert((rank, run_id, false));
        }
        let cand = Winner { rank, run_id, hash, taken: false };
        let mut added = false;
        self.map
            .entry(server)
            .or_default()
            .entry(ts)
            .and_modify(|w| {
                if cand.beats(w) {
                    *w = cand;
                }
            })
            .or_insert_with(|| {
                added = true;
                cand
            });
        self.len += added as usize;
    }

    /// Decides a hot row in the copy pass (step 3).
    pub fn decide(&mut self, server: i32, ts: i64, rank: u32, run_id: i64, hash: u64) -> Verdict {
        let per_server = self.map.entry(server).or_default();
        match per_server.get_mut(&ts) {
            // Not offered in step 2: the key appeared after planning (a source that grew
            // between passes). Keep the first row seen and record it.
            None => {
                per_server.insert(ts, Winner { rank, run_id, hash, taken: true });
                self.len += 1;
                Verdict::Keep
            }
            Some(w) if w.rank == rank && w.run_id == run_id && !w.taken => {
                w.taken = true;
                Verdict::Keep
            }
            Some(w) => {
                let in_target = w.rank == TARGET_RANK;
                let complete = in_target
                    && self.best_source.as_mut().and_then(|b| b.get_mut(&(server, ts))).is_some_and(|b| {
                        let first = b.0 == rank && b.1 == run_id && !b.2;
                        b.2 |= first;
                        first
                    });
                Verdict::Drop { in_target, other_source: !in_target && w.rank != rank, conflict: w.hash != hash, complete }
            }
        }
    }
}

/// Hashes the value columns `cols` of the rows `rows` of a batch (for conflict detection).
pub fn row_hashes(batch: &RecordBatch, cols: &[usize], rows: &[usize]) -> Vec<u64> {
    let state = ahash::RandomState::with_seeds(1, 2, 3, 4);
    let mut hashers: Vec<ahash::AHasher> = rows.iter().map(|_| state.build_hasher()).collect();
    for &c in cols {
        let a = batch.column(c);
        for (h, &r) in hashers.iter_mut().zip(rows) {
            if a.is_null(r) {
                h.write_u8(0);
                continue;
            }
            h.write_u8(1);
            match a.data_type() {
                DataType::Utf8 => h.write(a.as_string::<i32>().value(r).as_bytes()),
                DataType::Int32 => h.write_i32(a.as_primitive::<Int32Type>().value(r)),
                DataType::Int64 => h.write_i64(a.as_primitive::<arrow::datatypes::Int64Type>().value(r)),
                DataType::Decimal128(_, _) => h.write_i128(a.as_primitive::<Decimal128Type>().value(r)),
                DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _) => h.write_i64(a.as_primitive::<TimestampMillisecondType>().value(r)),
                DataType::Boolean => h.write_u8(a.as_boolean().value(r) as u8),
                DataType::Int16 => h.write_i16(a.as_primitive::<arrow::datatypes::Int16Type>().value(r)),
                DataType::UInt8 => h.write_u8(a.as_primitive::<arrow::datatypes::UInt8Type>().value(r)),
                DataType::Binary => h.write(a.as_binary::<i32>().value(r)),
                DataType::LargeUtf8 => h.write(a.as_string::<i64>().value(r).as_bytes()),
                DataType::FixedSizeBinary(_) => h.write(a.as_fixed_size_binary().value(r)),
                // Anything else by its display text (exact for every type arrow prints).
                _ => match arrow::util::display::ArrayFormatter::try_new(a.as_ref(), &Default::default()) {
                    Ok(f) => h.write(f.value(r).to_string().as_bytes()),
                    Err(_) => h.write(format!("{:?}", a.slice(r, 1)).as_bytes()),
                },
            }
            // Separates columns so ("ab","c") and ("a","bc") differ.
            h.write_u8(0xff);
        }
    }
    hashers.into_iter().map(|h| h.finish()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MS_PER_DAY;

    #[test]
    fn a_day_is_hot_only_where_sources_or_the_target_meet() {
        let mut p = OverlapPlanner::new();
        p.observe(1, &[1, 1, 1], &[0, DAY, 2 * DAY]);
        p.observe(2, &[1, 1], &[2 * DAY + 5, 3 * DAY]); // meets source 1 on day 2
        p.observe(2, &[2], &[0]); // other server: no overlap
        p.observe(TARGET_RANK, &[1, 2], &[3 * DAY + 9, 9 * DAY]); // meets source 2 on day 3
        let hot = p.hot_days();
        let mut hot: Vec<_> = hot.into_iter().collect();
        hot.sort();
        assert_eq!(hot, vec![(1, 2), (1, 3)]);
    }

    #[test]
    fn unsorted_source_makes_all_its_days_hot() {
        let mut p = OverlapPlanner::new();
        p.observe(1, &[1, 1, 1], &[0, 3 * DAY, 3 * DAY]); // repeats a key
        p.observe(2, &[2, 2], &[5, 6]);
        let hot = p.hot_days();
        assert!(hot.contains(&(1, 0)) && hot.contains(&(1, 3)));
        assert!(!hot.contains(&(2, 0)));
    }

    #[test]
    fn merge_detects_overlap_between_planners() {
        let mut a = OverlapPlanner::new();
        a.observe(1, &[4], &[10]);
        let mut b = OverlapPlanner::new();
        b.observe(2, &[4], &[20]);
        a.merge(b);
        assert_eq!(a.hot_days().into_iter().collect::<Vec<_>>(), vec![(4, 0)]);
    }

    #[test]
    fn the_best_source_row_of_a_key_the_target_holds_may_complete_it_once() {
        let mut w = Winners::tracking_sources();
        w.offer(1, 100, 2, 5, 11);
        w.offer(1, 100, 1, 9, 22);
        w.offer(1, 100, TARGET_RANK, 0, 22);
        let drop = |complete| Verdict::Drop { in_target: true, other_source: false, conflict: false, complete };
        assert_eq!(w.decide(1, 100, 2, 5, 22), drop(false), "not the best source row");
        assert_eq!(w.decide(1, 100, 1, 9, 22), drop(true));
        assert_eq!(w.decide(1, 100, 1, 9, 22), drop(false), "only once");
        // Without tracking, nothing completes.
        let mut plain = Winners::new();
        plain.offer(1, 100, 1, 9, 22);
        plain.offer(1, 100, TARGET_RANK, 0, 22);
        assert_eq!(plain.decide(1, 100, 1, 9, 22), drop(false));
    }

    #[test]
    fn survivor_rule_target_then_rank_then_run_id() {
        let mut w = Winners::new();
        w.offer(1, 100, 2, 5, 11);
        w.offer(1, 100, 1, 9, 22);
        w.offer(1, 100, 1, 7, 33);
        assert_eq!(w.decide(1, 100, 2, 5, 11), Verdict::Drop { in_target: false, other_source: true, conflict: true, complete: false });
        assert_eq!(w.decide(1, 100, 1, 7, 33), Verdict::Keep);
        // A second row tying on (rank, run_id) is dropped, not kept twice.
        assert_eq!(w.decide(1, 100, 1, 7, 33), Verdict::Drop { in_target: false, other_source: false, conflict: false, complete: false });
        w.offer(1, 200, 3, 1, 1);
        w.offer(1, 200, TARGET_RANK, 0, 1);
        assert_eq!(w.decide(1, 200, 3, 1, 1), Verdict::Drop { in_target: true, other_source: false, conflict: false, complete: false });
    }

    #[test]
    fn aliases_of_one_server_make_their_shared_days_hot() {
        let mut p = OverlapPlanner::new();
        p.observe(1, &[10], &[5]); // group 10: "OLDNAME"
        p.observe(1, &[11], &[DAY + 5]); // group 11: "NEWNAME", another day
        p.observe(1, &[11], &[DAY + 6]);
        p.observe(1, &[12], &[2 * DAY]); // group 12: another server
        let p = p.regroup(|g| if g == 12 { 2 } else { 1 });
        assert!(p.hot_days().is_empty());
        let mut q = OverlapPlanner::new();
        q.observe(1, &[10], &[5]);
        q.observe(1, &[11], &[6]); // same day under the other alias
        let q = q.regroup(|_| 1);
        assert_eq!(q.hot_days().into_iter().collect::<Vec<_>>(), vec![(1, 0)]);
    }

    #[test]
    fn day_ranges_merge_consecutive_days() {
        assert_eq!(day_ranges([3, 1, 2, 7]), vec![(DAY, 4 * DAY), (7 * DAY, 8 * DAY)]);
        assert_eq!(day_ranges([-1]), vec![(-DAY, 0)]);
    }
}
