//! Who holds perfcopy's application locks in a MonitoringDB, for the message of a run they
//! stop: `dbo.PerfcopyLocks` (Resource, Holder, SinceUTC), one row per lock a run holds.
//!
//! The lock itself is `sp_getapplock` on the holder's own session (released by SQL Server when
//! the session ends, also when perfcopy is killed); the row only names the holder. It is
//! created when a run starts writing (never by a run that is refused); before that, a run
//! writes its rows only if the table exists, and removes them when it lets go.

use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::mssql::{ConnSpec, SqlClient};
use crate::sink::lock_holder;

use super::query_rows;

const LOCKS_DDL: &str = "IF OBJECT_ID(N'dbo.PerfcopyLocks', N'U') IS NULL CREATE TABLE dbo.PerfcopyLocks (\
    Resource NVARCHAR(255) NOT NULL PRIMARY KEY, \
    Holder NVARCHAR(400) NOT NULL, \
    SinceUTC DATETIME2(3) NOT NULL)";

async fn table_exists(conn: &ConnSpec, client: &mut SqlClient) -> Result<bool> {
    Ok(super::user_tables_exist(conn, client, &["dbo.PerfcopyLocks"]).await?[0])
}

/// The holder a lock's row names, if it has one.
pub(super) async fn holder(conn: &ConnSpec, client: &mut SqlClient, resource: &str) -> Result<Option<String>> {
    if !table_exists(conn, client).await? {
        return Ok(None);
    }
    let rows = query_rows(conn, client, "SELECT Holder FROM dbo.PerfcopyLocks WHERE Resource = @P1", &[&resource]).await?;
    Ok(rows.first().and_then(|r| r.try_get::<&str, _>(0).ok().flatten()).map(str::to_string))
}

/// Writes (replaces) the rows of `resources`; creates the table first when `create`.
pub(super) async fn name_holder(conn: &ConnSpec, client: &mut SqlClient, resources: &[String], create: bool) -> Result<()> {
    if create {
        client.execute(LOCKS_DDL, &[]).await.map_err(|e| conn.sql_error("creating dbo.PerfcopyLocks", e))?;
    } else if !table_exists(conn, client).await? {
        return Ok(());
    }
    let me = lock_holder();
    for r in resources {
        client
            .execute("DELETE FROM dbo.PerfcopyLocks WHERE Resource = @P1", &[&r.as_str()])
            .await
            .map_err(|e| conn.sql_error("naming this run in dbo.PerfcopyLocks", e))?;
        client
            .execute("INSERT INTO dbo.PerfcopyLocks (Resource, Holder, SinceUTC) VALUES (@P1, @P2, SYSUTCDATETIME())", &[&r.as_str(), &me.as_str()])
            .await
            .map_err(|e| conn.sql_error("naming this run in dbo.PerfcopyLocks", e))?;
    }
    Ok(())
}

/// Application locks held on their own session until dropped; their rows go with them.
pub(super) struct AppLocks {
    rt: tokio::runtime::Runtime,
    client: Option<SqlClient>,
    conn: ConnSpec,
    resources: Vec<String>,
    held: Arc<Mutex<Vec<String>>>,
}

impl AppLocks {
    /// `resources` taken on `client`'s session: named where dbo.PerfcopyLocks exists, and
    /// remembered in `held` so the run names them all once it writes.
    pub(super) fn held(rt: tokio::runtime::Runtime, mut client: SqlClient, conn: ConnSpec, resources: Vec<String>, held: Arc<Mutex<Vec<String>>>) -> Result<AppLocks> {
        rt.block_on(name_holder(&conn, &mut client, &resources, false))?;
        if let Ok(mut h) = held.lock() {
            h.extend(resources.iter().cloned());
        }
        Ok(AppLocks { rt, client: Some(client), conn, resources, held })
    }
}

impl Drop for AppLocks {
    fn drop(&mut self) {
        if let Ok(mut h) = self.held.lock() {
            h.retain(|r| !self.resources.contains(r));
        }
        if let Some(mut client) = self.client.take() {
            let (conn, resources) = (&self.conn, &self.resources);
            // Best effort: a row left behind only names a holder that is gone.
            let _ = self.rt.block_on(async {
                if table_exists(conn, &mut client).await.unwrap_or(false) {
                    for r in resources {
                        let _ = client.execute("DELETE FROM dbo.PerfcopyLocks WHERE Resource = @P1", &[&r.as_str()]).await;
                    }
                }
                client.close().await
            });
        }
    }
}
