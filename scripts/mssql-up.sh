#!/usr/bin/env bash
# Starts SQL Server 2022 in Docker, creates DBATools and MonitoringDB with the SCHEMA.md DDL
# (scripts/sql/*.sql), and prints the PERFCOPY_TEST_MSSQL value for tests/mssql_real.rs.
#
#   MSSQL_SA_PASSWORD='Str0ng!Passw0rd' scripts/mssql-up.sh
# Env: MSSQL_SA_PASSWORD (required), MSSQL_CONTAINER (default perfcopy-mssql), MSSQL_PORT (1433).
set -euo pipefail

: "${MSSQL_SA_PASSWORD:?set MSSQL_SA_PASSWORD (8+ chars, upper, lower, digit, symbol)}"
name="${MSSQL_CONTAINER:-perfcopy-mssql}"
port="${MSSQL_PORT:-1433}"
sql_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/sql"
sqlcmd=(docker exec -e SQLCMDPASSWORD="$MSSQL_SA_PASSWORD" "$name" /opt/mssql-tools18/bin/sqlcmd -S localhost -U sa -C -b)

if ! docker ps --format '{{.Names}}' | grep -qx "$name"; then
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker run -d --name "$name" -e ACCEPT_EULA=Y -e MSSQL_SA_PASSWORD="$MSSQL_SA_PASSWORD" \
        -p "$port:1433" mcr.microsoft.com/mssql/server:2022-latest >/dev/null
fi

echo "waiting for SQL Server in container $name ..." >&2
for i in $(seq 1 60); do
    if "${sqlcmd[@]}" -Q "SELECT 1" >/dev/null 2>&1; then
        break
    fi
    if [ "$i" -eq 60 ]; then
        echo "SQL Server did not answer within 120 s; see: docker logs $name" >&2
        exit 1
    fi
    sleep 2
done

docker cp "$sql_dir/." "$name:/tmp/perfcopy-sql"
for db in DBATools MonitoringDB; do
    "${sqlcmd[@]}" -Q "IF DB_ID(N'$db') IS NULL CREATE DATABASE [$db]"
done
if [ "$("${sqlcmd[@]}" -h -1 -W -Q "SET NOCOUNT ON; SELECT COUNT(*) FROM DBATools.sys.tables WHERE name = 'PerfSnapshotRun'")" = "0" ]; then
    "${sqlcmd[@]}" -d DBATools -i /tmp/perfcopy-sql/dbatools.sql
fi
if [ "$("${sqlcmd[@]}" -h -1 -W -Q "SET NOCOUNT ON; SELECT COUNT(*) FROM MonitoringDB.sys.tables WHERE name = 'Servers'")" = "0" ]; then
    "${sqlcmd[@]}" -d MonitoringDB -i /tmp/perfcopy-sql/monitoringdb.sql
fi
"${sqlcmd[@]}" -d MonitoringDB -i /tmp/perfcopy-sql/synclog.sql

echo "SQL Server 2022 is up in container $name with DBATools and MonitoringDB. Run the real-server tests with:" >&2
echo "export PERFCOPY_TEST_MSSQL='Server=tcp:127.0.0.1,$port;Database=master;User Id=sa;Password=$MSSQL_SA_PASSWORD;TrustServerCertificate=true'"
