//! Long generated values of the synthetic child tables (issue 14): statement and batch text
//! (NVARCHAR(MAX)), showplan and deadlock-graph XML (XML), and hash/handle bytes
//! (BINARY/VARBINARY). Each is a pure function of its arguments, so the tables that use them
//! stay deterministic.
//!
//! The XML is written as SQL Server's `xml` type gives it back (no declaration, no whitespace
//! between elements, attributes in double quotes, `<`, `>`, `&` and `"` as entities in
//! attribute values, empty elements as `<X />`), so a value stored into an XML column and read
//! back is the same text.

use crate::source::synthetic::mix;

const STATEMENT_PARTS: [&str; 6] = [
    "SELECT o.OrderID, o.CustomerID, c.Name, SUM(l.Quantity * l.Price) AS Total ",
    "FROM dbo.Orders AS o JOIN dbo.Customers AS c ON c.CustomerID = o.CustomerID ",
    "JOIN dbo.OrderLines AS l ON l.OrderID = o.OrderID WHERE o.OrderDate >= @from ",
    "AND c.Region = N'Zürich – Nord' /* Kunde ÄÖÜ */ ",
    "GROUP BY o.OrderID, o.CustomerID, c.Name HAVING SUM(l.Quantity) > 10 ",
    "UNION ALL SELECT 0, 0, N'東京', 0 ",
];

/// A statement text of about `len` characters, from the parts above (starting at `at`).
/// PerfSnapshotWorkload's StatementText: its bytes are pinned by tests, so it stays as it is.
pub fn statement(len: usize, at: u64) -> String {
    let mut s = String::with_capacity(len + 80);
    let mut k = at as usize;
    while s.chars().count() < len {
        s.push_str(STATEMENT_PARTS[k % STATEMENT_PARTS.len()]);
        k += 1;
    }
    s.chars().take(len).collect()
}

/// Pieces of a module or ad-hoc batch as `sys.dm_exec_sql_text` shows it: a procedure header,
/// comments, temp tables, a MERGE, dynamic SQL; some non-ASCII.
const BATCH_PARTS: [&str; 10] = [
    "CREATE PROCEDURE dbo.usp_RefreshOrderSummary @from DATETIME2(3), @to DATETIME2(3) AS\r\nBEGIN\r\n    SET NOCOUNT ON;\r\n",
    "    -- Tagesabschluss für Filiale Köln/Düsseldorf; see ticket #4711\r\n",
    "    CREATE TABLE #o (OrderID INT NOT NULL PRIMARY KEY, Total DECIMAL(18,2) NULL, Region NVARCHAR(60) NULL);\r\n",
    "    INSERT INTO #o (OrderID, Total, Region)\r\n    SELECT o.OrderID, SUM(l.Quantity * l.Price), c.Region\r\n    FROM dbo.Orders AS o WITH (NOLOCK)\r\n    JOIN dbo.OrderLines AS l ON l.OrderID = o.OrderID\r\n    JOIN dbo.Customers AS c ON c.CustomerID = o.CustomerID\r\n    WHERE o.OrderDate >= @from AND o.OrderDate < @to\r\n    GROUP BY o.OrderID, c.Region;\r\n",
    "    MERGE dbo.OrderSummary AS t USING #o AS s ON t.OrderID = s.OrderID\r\n    WHEN MATCHED AND t.Total <> s.Total THEN UPDATE SET t.Total = s.Total, t.ModifiedUTC = SYSUTCDATETIME()\r\n    WHEN NOT MATCHED BY TARGET THEN INSERT (OrderID, Total, Region) VALUES (s.OrderID, s.Total, s.Region);\r\n",
    "    /* 顧客の集計: 東京・大阪 */ UPDATE STATISTICS dbo.OrderSummary WITH SAMPLE 10 PERCENT;\r\n",
    "    DECLARE @sql NVARCHAR(MAX) = N'SELECT TOP (@n) * FROM dbo.OrderSummary WHERE Region = @r ORDER BY Total DESC';\r\n    EXEC sys.sp_executesql @sql, N'@n INT, @r NVARCHAR(60)', @n = 100, @r = N'Zürich – Nord';\r\n",
    "    IF @@ROWCOUNT = 0 RAISERROR(N'Keine Zeilen für %s', 10, 1, N'Łódź') WITH NOWAIT;\r\n",
    "    SELECT s.Region, COUNT_BIG(*) AS Orders, AVG(s.Total) AS AvgTotal FROM dbo.OrderSummary AS s GROUP BY s.Region OPTION (RECOMPILE, MAXDOP 4);\r\n",
    "    DROP TABLE #o;\r\nEND\r\n",
];

/// Batch text (QueryStats' and QueryPlans' SqlText) of exactly `len` characters, from the
/// pieces above (starting at `at`).
pub fn batch_text(len: usize, at: u64) -> String {
    let mut s = String::with_capacity(len * 2 + 200);
    let mut k = at as usize;
    let mut chars = 0;
    while chars < len {
        let p = BATCH_PARTS[k % BATCH_PARTS.len()];
        s.push_str(p);
        chars += p.chars().count();
        k += 1;
    }
    s.chars().take(len).collect()
}

/// `n` deterministic bytes from stream `(seed, stream, a, b)`.
pub fn bytes(n: usize, seed: u64, stream: u64, a: u64, b: u64) -> Vec<u8> {
    (0..n.div_ceil(8) as u64).flat_map(|w| mix(seed, stream, a, b.wrapping_mul(64).wrapping_add(w)).to_le_bytes()).take(n).collect()
}

/// `v` as an XML attribute value (SQL Server's entities).
fn attr(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 16);
    for c in v.chars() {
        match c {
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '&' => s.push_str("&amp;"),
            '"' => s.push_str("&quot;"),
            '\r' => s.push_str("&#xD;"),
            '\n' => s.push_str("&#xA;"),
            c => s.push(c),
        }
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

const OPERATORS: [(&str, &str); 6] = [
    ("Hash Match", "Aggregate"),
    ("Nested Loops", "Inner Join"),
    ("Clustered Index Seek", "Clustered Index Seek"),
    ("Index Scan", "Index Scan"),
    ("Sort", "Sort"),
    ("Parallelism", "Gather Streams"),
];

/// A showplan (QueryPlanXML) for `sql` with `operators` operator nodes, nested as a real
/// plan's RelOp tree; `r` picks costs and row estimates.
pub fn showplan_xml(sql: &str, operators: usize, query_hash: &[u8], plan_hash: &[u8], r: u64) -> String {
    let mut s = String::with_capacity(600 + operators * 420 + sql.len() * 2);
    s.push_str("<ShowPlanXML xmlns=\"http://schemas.microsoft.com/sqlserver/2004/07/showplan\" Version=\"1.564\" Build=\"16.0.4135.4\">");
    s.push_str("<BatchSequence><Batch><Statements>");
    s.push_str(&format!(
        "<StmtSimple StatementText=\"{}\" StatementId=\"1\" StatementCompId=\"{}\" StatementType=\"SELECT\" StatementSubTreeCost=\"{}.{:04}\" StatementEstRows=\"{}\" QueryHash=\"0x{}\" QueryPlanHash=\"0x{}\" RetrievedFromCache=\"true\">",
        attr(sql),
        r % 40 + 1,
        r % 900,
        r % 10_000,
        r % 1_000_000,
        hex(query_hash),
        hex(plan_hash)
    ));
    s.push_str(&format!(
        "<QueryPlan DegreeOfParallelism=\"{}\" MemoryGrant=\"{}\" CachedPlanSize=\"{}\" CompileTime=\"{}\" CompileCPU=\"{}\" CompileMemory=\"{}\">",
        r % 8 + 1,
        r % 65_536,
        r % 512 + 16,
        r % 200,
        r % 150,
        r % 4_096
    ));
    s.push_str(&format!("<MemoryGrantInfo SerialRequiredMemory=\"512\" SerialDesiredMemory=\"{}\" GrantedMemory=\"{}\" MaxUsedMemory=\"{}\" />", r % 9_000 + 512, r % 9_000, r % 4_000));
    for n in 0..operators {
        let (physical, logical) = OPERATORS[(r as usize + n) % OPERATORS.len()];
        let v = mix(r, n as u64, 0, 0);
        s.push_str(&format!(
            "<RelOp NodeId=\"{n}\" PhysicalOp=\"{physical}\" LogicalOp=\"{logical}\" EstimateRows=\"{}.{:02}\" EstimateIO=\"0.{:06}\" EstimateCPU=\"0.{:06}\" AvgRowSize=\"{}\" EstimatedTotalSubtreeCost=\"{}.{:04}\" Parallel=\"{}\" EstimateRebinds=\"0\" EstimateRewinds=\"0\" EstimatedExecutionMode=\"Row\">",
            v % 100_000,
            v % 100,
            v % 1_000_000,
            (v >> 20) % 1_000_000,
            v % 200 + 9,
            v % 500,
            (v >> 8) % 10_000,
            (v >> 3) % 2
        ));
        s.push_str(&format!(
            "<OutputList><ColumnReference Database=\"[SalesDB]\" Schema=\"[dbo]\" Table=\"[Orders]\" Alias=\"[o]\" Column=\"OrderID\" /><ColumnReference Database=\"[SalesDB]\" Schema=\"[dbo]\" Table=\"[Customers]\" Alias=\"[c]\" Column=\"Region\" /></OutputList><RunTimeInformation><RunTimeCountersPerThread Thread=\"0\" ActualRows=\"{}\" ActualExecutions=\"1\" /></RunTimeInformation>",
            v % 50_000
        ));
    }
    for _ in 0..operators {
        s.push_str("</RelOp>");
    }
    s.push_str("</QueryPlan></StmtSimple></Statements></Batch></BatchSequence></ShowPlanXML>");
    s
}

/// A deadlock graph (DeadlockXML, as the system_health session reports it) of `processes`
/// sessions in a cycle, the first the victim; `r` picks ids and times.
pub fn deadlock_xml(processes: usize, victim_session: i64, database: &str, object: &str, at_iso: &str, r: u64) -> String {
    let processes = processes.max(2);
    let mut s = String::with_capacity(400 + processes * 900);
    s.push_str(&format!("<deadlock><victim-list><victimProcess id=\"process{:x}\" /></victim-list><process-list>", r % 0xFFFF_FFFF));
    for p in 0..processes {
        let v = mix(r, p as u64, 1, 0);
        let spid = if p == 0 { victim_session } else { 51 + (v % 900) as i64 };
        s.push_str(&format!(
            "<process id=\"process{:x}\" taskpriority=\"0\" logused=\"{}\" waitresource=\"KEY: 7:{} ({:012x})\" waittime=\"{}\" ownerId=\"{}\" transactionname=\"user_transaction\" lasttranstarted=\"{at_iso}\" XDES=\"0x{:x}\" lockMode=\"U\" schedulerid=\"{}\" kpid=\"{}\" status=\"suspended\" spid=\"{spid}\" sbid=\"0\" ecid=\"0\" priority=\"0\" trancount=\"2\" lastbatchstarted=\"{at_iso}\" clientapp=\"Zahlungsdienst – Core\" hostname=\"APP-{:03}\" loginname=\"CORP\\svc_app\" isolationlevel=\"read committed (2)\" xactid=\"{}\" currentdb=\"7\" currentdbname=\"{}\" lockTimeout=\"4294967295\">",
            (r + p as u64) % 0xFFFF_FFFF,
            v % 10_000,
            72_057_594_000_000_000u64 + v % 1_000_000,
            v % 0xFFFF_FFFF_FFFF,
            v % 5_000,
            v % 100_000_000,
            v % 0xFFFF_FFFF_FFFF,
            v % 8 + 1,
            v % 30_000,
            v % 40,
            v % 100_000_000,
            attr(database)
        ));
        s.push_str(&format!(
            "<executionStack><frame procname=\"{}.dbo.usp_ApplyPayment\" line=\"{}\" stmtstart=\"{}\" stmtend=\"{}\" sqlhandle=\"0x{:016x}{:016x}\">UPDATE dbo.Accounts SET Balance = Balance - @amount WHERE AccountID = @id</frame></executionStack><inputbuf>EXEC dbo.usp_ApplyPayment @id = {}, @amount = {}.{:02}</inputbuf></process>",
            attr(database),
            v % 300 + 1,
            v % 4_000 * 2,
            v % 4_000 * 2 + 180,
            v,
            v.rotate_left(17),
            v % 1_000_000,
            v % 10_000,
            v % 100
        ));
    }
    s.push_str("</process-list><resource-list>");
    for p in 0..processes {
        let v = mix(r, p as u64, 2, 0);
        let (owner, waiter) = (p, (p + 1) % processes);
        s.push_str(&format!(
            "<keylock hobtid=\"{}\" dbid=\"7\" objectname=\"{}\" indexname=\"PK_Accounts\" id=\"lock{:x}\" mode=\"X\" associatedObjectId=\"{}\"><owner-list><owner id=\"process{:x}\" mode=\"X\" /></owner-list><waiter-list><waiter id=\"process{:x}\" mode=\"U\" requestType=\"wait\" /></waiter-list></keylock>",
            72_057_594_000_000_000u64 + v % 1_000_000,
            attr(object),
            v % 0xFFFF_FFFF_FFFF,
            72_057_594_000_000_000u64 + v % 1_000_000,
            (r + owner as u64) % 0xFFFF_FFFF,
            (r + waiter as u64) % 0xFFFF_FFFF
        ));
    }
    s.push_str("</resource-list></deadlock>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_have_their_length_and_are_deterministic() {
        for len in [0, 1, 99, 4_001, 12_345] {
            assert_eq!(batch_text(len, 3).chars().count(), len);
            assert_eq!(statement(len, 3).chars().count(), len);
        }
        assert_eq!(batch_text(5_000, 7), batch_text(5_000, 7));
        assert_ne!(batch_text(5_000, 7), batch_text(5_000, 8));
        assert!(!batch_text(20_000, 0).is_ascii(), "some non-ASCII text");
        assert_eq!(bytes(64, 1, 2, 3, 4).len(), 64);
        assert_eq!(bytes(8, 1, 2, 3, 4), bytes(8, 1, 2, 3, 4));
        assert_ne!(bytes(8, 1, 2, 3, 4), bytes(8, 1, 2, 3, 5));
    }

    #[test]
    fn xml_is_balanced_and_escapes_attribute_text() {
        let plan = showplan_xml("SELECT 1 WHERE a < b AND c > \"d\" & e", 6, &[1; 8], &[2; 8], 42);
        assert!(plan.starts_with("<ShowPlanXML") && plan.ends_with("</ShowPlanXML>"));
        assert_eq!(plan.matches("<RelOp ").count(), 6);
        assert_eq!(plan.matches("</RelOp>").count(), 6);
        assert!(plan.contains("a &lt; b AND c &gt; &quot;d&quot; &amp; e"));
        assert!(!plan.contains("\n"));
        let graph = deadlock_xml(3, 77, "SalesDB", "dbo.Accounts", "2024-01-01T00:00:00.123", 9);
        assert_eq!(graph.matches("<process ").count(), 3);
        assert_eq!(graph.matches("<keylock ").count(), 3);
        assert!(graph.contains("spid=\"77\""));
        assert!(graph.starts_with("<deadlock>") && graph.ends_with("</deadlock>"));
    }
}
