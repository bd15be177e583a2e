//! ServerID remap: the target decides a server's ID, looked up by `ServerName`.
//!
//! Names are matched case-insensitively (SQL Server's default collations are case-insensitive,
//! and `dbo.Servers.ServerName` is UNIQUE under them). Several names may map to one ID (a
//! renamed server). Lookups go first to the `--server-map` file, then to the target's registry
//! (`DIR/servers.csv` for a stage, `dbo.Servers` for MonitoringDB).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int32Array};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// Case-folded form of a server name, the key names are matched on.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// ServerName -> target ServerID.
#[derive(Debug, Clone, Default)]
pub struct ServerIdMap {
    ids: HashMap<String, i32>,
    /// Names as first spelled, for messages and registry files.
    spelled: HashMap<String, String>,
}

impl ServerIdMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a `ServerName,ServerID` CSV (header required). A name given twice with different
    /// IDs is an error naming the file and line.
    pub fn from_csv(path: &Path) -> Result<ServerIdMap> {
        let err = |message: String| Error::ServerMap { path: path.to_path_buf(), message };
        let file = std::fs::File::open(path).map_err(Error::io(path))?;
        let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(std::io::BufReader::new(file));
        let headers = rdr.headers().map_err(|e| err(e.to_string()))?.clone();
        let col = |want: &str| headers.iter().position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(want));
        let (Some(name_col), Some(id_col)) = (col("ServerName"), col("ServerID")) else {
            return Err(err(format!(
                "header must be 'ServerName,ServerID' (found '{}')",
                headers.iter().collect::<Vec<_>>().join(",")
            )));
        };
        let mut map = ServerIdMap::new();
        for (i, rec) in rdr.records().enumerate() {
            let line = i + 2;
            let rec = rec.map_err(|e| err(format!("line {line}: {e}")))?;
            let name = rec.get(name_col).unwrap_or("");
            let id_text = rec.get(id_col).unwrap_or("");
            if name.is_empty() {
                return Err(err(format!("line {line}: empty ServerName")));
            }
            let id: i32 = id_text
                .parse()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| err(format!("line {line}: ServerID '{id_text}' is not a positive INT")))?;
            map.insert(name, id).map_err(|m| err(format!("line {line}: {m}")))?;
        }
        Ok(map)
    }

    /// Adds a name; the same name (case-insensitively) with another ID is refused.
    pub fn insert(&mut self, name: &str, id: i32) -> std::result::Result<(), String> {
        let key = fold(name);
        match self.ids.get(&key) {
            Some(&old) if old != id => Err(format!("server '{name}' is mapped to both {old} and {id}")),
            Some(_) => Ok(()),
            None => {
                self.ids.insert(key.clone(), id);
                self.spelled.insert(key, name.to_string());
                Ok(())
            }
        }
    }

    /// The ID of a name, if known.
    pub fn get(&self, name: &str) -> Option<i32> {
        self.ids.get(&fold(name)).copied()
    }

    /// The highest ID known (0 when empty).
    pub fn max_id(&self) -> i32 {
        self.ids.values().copied().max().unwrap_or(0)
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// (name as spelled, id), sorted by id then name.
    pub fn entries(&self) -> Vec<(String, i32)> {
        let mut v: Vec<_> = self.ids.iter().map(|(k, &id)| (self.spelled[k].clone(), id)).collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Lookup through `first`, then `second`.
    pub fn layered(first: &ServerIdMap, second: &ServerIdMap) -> ServerIdMap {
        let mut out = second.clone();
        for (k, &id) in &first.ids {
            out.ids.insert(k.clone(), id);
            out.spelled.insert(k.clone(), first.spelled[k].clone());
        }
        out
    }

    /// Gives each unknown name the next ID after the highest known, in name order (as an
    /// IDENTITY column would when they are inserted in that order). Returns the new entries.
    pub fn register(&mut self, unknown: &BTreeSet<String>) -> Vec<(String, i32)> {
        let mut next = self.max_id();
        let mut added = Vec::new();
        for name in unknown {
            if self.get(name).is_some() {
                continue;
            }
            next += 1;
            self.ids.insert(fold(name), next);
            self.spelled.insert(fold(name), name.clone());
            added.push((name.clone(), next));
        }
        added
    }

    /// Target ServerIDs for a batch's ServerName column; names not in the map are collected
    /// into `unknown` and get ID 0 (callers refuse to write when any are unknown).
    pub fn ids_for(&self, names: &dyn Array, unknown: &mut BTreeSet<String>) -> Int32Array {
        let names = names.as_string::<i32>();
        let mut out = Vec::with_capacity(names.len());
        // Names repeat in long runs: look each run up once.
        let mut last: Option<(&str, i32)> = None;
        for i in 0..names.len() {
            let name = names.value(i);
            let id = match last {
                Some((n, id)) if n == name => id,
                _ => {
                    let id = self.get(name).unwrap_or_else(|| {
                        unknown.insert(name.to_string());
                        0
                    });
                    last = Some((name, id));
                    id
                }
            };
            out.push(id);
        }
        Int32Array::from(out)
    }

    /// Writes the map as `ServerName,ServerID` CSV, atomically (temporary file, then rename).
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("csv.tmp");
        {
            let file = std::fs::File::create(&tmp).map_err(Error::write(&tmp))?;
            let mut w = csv::Writer::from_writer(file);
            let io = |e: csv::Error| Error::Write { path: tmp.clone(), source: std::io::Error::other(e) };
            w.write_record(["ServerName", "ServerID"]).map_err(io)?;
            for (name, id) in self.entries() {
                w.write_record([name, id.to_string()]).map_err(io)?;
            }
            let file = w.into_inner().map_err(|e| Error::Write { path: tmp.clone(), source: std::io::Error::other(e.to_string()) })?;
            file.sync_all().map_err(Error::write(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(Error::write(path))
    }
}

/// Shared, read-only map used by the pipeline's workers.
pub type SharedServerIdMap = Arc<ServerIdMap>;

/// The target ServerID column for a canonical source batch.
pub fn target_ids(map: &ServerIdMap, batch: &RecordBatch, name_col: usize) -> Result<Int32Array> {
    let mut unknown = BTreeSet::new();
    let ids = map.ids_for(batch.column(name_col).as_ref(), &mut unknown);
    if unknown.is_empty() {
        Ok(ids)
    } else {
        Err(Error::UnknownServers { names: unknown.into_iter().collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    #[test]
    fn csv_map_with_aliases_and_case_insensitive_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("map.csv");
        std::fs::write(&p, "ServerName,ServerID\nSQL01,3\nSQL01-OLD,3\n\"HOST\\INST, the one\",7\nZürich,9\n").unwrap();
        let m = ServerIdMap::from_csv(&p).unwrap();
        assert_eq!(m.get("sql01"), Some(3));
        assert_eq!(m.get("SQL01-old"), Some(3));
        assert_eq!(m.get("HOST\\INST, the one"), Some(7));
        assert_eq!(m.get("ZÜRICH"), Some(9));
        assert_eq!(m.get("nope"), None);
        assert_eq!(m.max_id(), 9);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("map.csv");
        std::fs::write(&p, "ServerName,ServerID\nA,1\nA,2\n").unwrap();
        let e = ServerIdMap::from_csv(&p).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("map.csv"), "{e}");
        std::fs::write(&p, "Name,ID\nA,1\n").unwrap();
        assert!(ServerIdMap::from_csv(&p).unwrap_err().to_string().contains("header"));
        std::fs::write(&p, "ServerName,ServerID\nA,x\n").unwrap();
        assert!(ServerIdMap::from_csv(&p).unwrap_err().to_string().contains("line 2"));
    }

    #[test]
    fn register_assigns_ids_after_the_highest_in_name_order() {
        let mut m = ServerIdMap::new();
        m.insert("A", 5).unwrap();
        m.insert("B", 2).unwrap();
        let unknown: BTreeSet<String> = ["Zeta", "Alpha", "Mid"].iter().map(|s| s.to_string()).collect();
        let added = m.register(&unknown);
        assert_eq!(added, vec![("Alpha".into(), 6), ("Mid".into(), 7), ("Zeta".into(), 8)]);
    }

    #[test]
    fn ids_for_collects_every_unknown_name() {
        let mut m = ServerIdMap::new();
        m.insert("A", 1).unwrap();
        let names = StringArray::from(vec!["A", "A", "X", "a", "Y", "X"]);
        let mut unknown = BTreeSet::new();
        let ids = m.ids_for(&names, &mut unknown);
        assert_eq!(ids.values().to_vec(), vec![1, 1, 0, 1, 0, 0]);
        assert_eq!(unknown.into_iter().collect::<Vec<_>>(), vec!["X".to_string(), "Y".to_string()]);
    }

    #[test]
    fn csv_round_trip_keeps_names_with_commas_quotes_and_backslashes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("servers.csv");
        let mut m = ServerIdMap::new();
        for (i, n) in ["a,b", "q\"uote", "HOST\\INST", "東京"].iter().enumerate() {
            m.insert(n, i as i32 + 1).unwrap();
        }
        m.write_csv(&p).unwrap();
        let back = ServerIdMap::from_csv(&p).unwrap();
        assert_eq!(back.entries(), m.entries());
    }
}
