//! The barrier's SQL per database, and the sqlx calls that run it.

use std::future::Future;

use sqlx::AssertSqlSafe;

use crate::Error;

/// Which SQL dialect.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: `INSERT OR IGNORE`, no schemas.
    Sqlite,
    /// PostgreSQL: `ON CONFLICT DO NOTHING`, `$n` placeholders, the table in a schema.
    Postgres,
    /// MySQL / MariaDB: `INSERT IGNORE`, the table in a database of its own.
    MySql,
}

mod private {
    pub trait Sealed {}
}

/// A database the barrier runs on: [`sqlx::Sqlite`] (feature `sqlite`), [`sqlx::Postgres`]
/// (`postgres`), [`sqlx::MySql`] (`mysql`). Sealed: the SQL differs per database.
pub trait BarrierDatabase: sqlx::Database + private::Sealed {
    /// The table DTM's SDKs use: `dtm_barrier.barrier` (PostgreSQL: schema `dtm_barrier`;
    /// MySQL: database `dtm_barrier`). SQLite has no schemas: `dtm_barrier` in the business
    /// database itself (an attached file would not share the business transaction).
    const DEFAULT_TABLE: &'static str;
    #[doc(hidden)]
    const DIALECT: Dialect;
    #[doc(hidden)]
    fn insert_ignore<'a>(
        conn: &'a mut Self::Connection,
        sql: &'a str,
        row: [&'a str; 6],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a;
    #[doc(hidden)]
    fn select_reason<'a>(
        conn: &'a mut Self::Connection,
        sql: &'a str,
        key: [&'a str; 4],
    ) -> impl Future<Output = Result<Option<String>, sqlx::Error>> + Send + 'a;
    #[doc(hidden)]
    fn execute<'a>(
        conn: &'a mut Self::Connection,
        sql: &'a str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;
    #[doc(hidden)]
    fn delete_batch<'a>(
        conn: &'a mut Self::Connection,
        sql: &'a str,
        age_secs: i64,
        limit: i64,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a;
}

macro_rules! barrier_database {
    ($feature:literal, $db:ty, $dialect:expr, $table:literal, $age:ty, $age_of:expr) => {
        #[cfg(feature = $feature)]
        impl private::Sealed for $db {}

        #[cfg(feature = $feature)]
        impl BarrierDatabase for $db {
            const DEFAULT_TABLE: &'static str = $table;
            const DIALECT: Dialect = $dialect;

            fn insert_ignore<'a>(
                conn: &'a mut Self::Connection,
                sql: &'a str,
                row: [&'a str; 6],
            ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a {
                async move {
                    let mut q = sqlx::query::<$db>(AssertSqlSafe(sql));
                    for v in row {
                        q = q.bind(v);
                    }
                    Ok(q.execute(conn).await?.rows_affected())
                }
            }

            fn select_reason<'a>(
                conn: &'a mut Self::Connection,
                sql: &'a str,
                key: [&'a str; 4],
            ) -> impl Future<Output = Result<Option<String>, sqlx::Error>> + Send + 'a {
                async move {
                    let mut q = sqlx::query_scalar::<$db, String>(AssertSqlSafe(sql));
                    for v in key {
                        q = q.bind(v);
                    }
                    q.fetch_optional(conn).await
                }
            }

            fn execute<'a>(
                conn: &'a mut Self::Connection,
                sql: &'a str,
            ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
                async move { sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(drop) }
            }

            fn delete_batch<'a>(
                conn: &'a mut Self::Connection,
                sql: &'a str,
                age_secs: i64,
                limit: i64,
            ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a {
                async move {
                    let age: $age = $age_of(age_secs);
                    let r =
                        sqlx::query::<$db>(AssertSqlSafe(sql)).bind(age).bind(limit).execute(conn).await?;
                    Ok(r.rows_affected())
                }
            }
        }
    };
}

barrier_database!("sqlite", sqlx::Sqlite, Dialect::Sqlite, "dtm_barrier", String, |s: i64| format!(
    "-{s} seconds"
));
barrier_database!("postgres", sqlx::Postgres, Dialect::Postgres, "dtm_barrier.barrier", f64, |s: i64| s
    as f64);
barrier_database!("mysql", sqlx::MySql, Dialect::MySql, "dtm_barrier.barrier", i64, |s: i64| s);

/// A barrier table name: `table` or `schema.table` (SQLite: `table` only), letters, digits
/// and `_`. It is written into SQL text, hence the strict check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarrierTable(String);

impl BarrierTable {
    /// Checks a table name.
    ///
    /// ```
    /// use dtx_client::barrier::BarrierTable;
    /// assert!(BarrierTable::new("dtm_barrier.barrier").is_ok());
    /// assert!(BarrierTable::new("barrier; drop table x").is_err());
    /// ```
    pub fn new(name: &str) -> Result<BarrierTable, Error> {
        let parts: Vec<&str> = name.split('.').collect();
        let ok = parts.len() <= 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.len() <= 64
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !p.starts_with(|c: char| c.is_ascii_digit())
            });
        if ok {
            Ok(BarrierTable(name.to_owned()))
        } else {
            Err(Error::InvalidInput(format!("bad barrier table name {name:?}")))
        }
    }

    /// The default table of `DB` ([`BarrierDatabase::DEFAULT_TABLE`]).
    pub fn default_for<DB: BarrierDatabase>() -> BarrierTable {
        BarrierTable(DB::DEFAULT_TABLE.to_owned())
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// `(schema, table)`.
    fn split(&self) -> (Option<&str>, &str) {
        match self.0.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, &self.0),
        }
    }

    pub(crate) fn insert_sql(&self, d: Dialect) -> String {
        let t = &self.0;
        let cols = "(trans_type, gid, branch_id, op, barrier_id, reason)";
        match d {
            Dialect::Sqlite => format!("INSERT OR IGNORE INTO {t}{cols} VALUES (?, ?, ?, ?, ?, ?)"),
            Dialect::MySql => format!("INSERT IGNORE INTO {t}{cols} VALUES (?, ?, ?, ?, ?, ?)"),
            // A conflict target by columns works with DTM's own table (constraint uniq_barrier)
            // and with any other unique index on these columns.
            Dialect::Postgres => format!(
                "INSERT INTO {t}{cols} VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (gid, branch_id, op, barrier_id) DO NOTHING"
            ),
        }
    }

    pub(crate) fn select_reason_sql(&self, d: Dialect) -> String {
        let t = &self.0;
        match d {
            Dialect::Postgres => {
                format!(
                    "SELECT reason FROM {t} WHERE gid = $1 AND branch_id = $2 AND op = $3 AND barrier_id = $4"
                )
            }
            _ => format!(
                "SELECT reason FROM {t} WHERE gid = ? AND branch_id = ? AND op = ? AND barrier_id = ?"
            ),
        }
    }

    pub(crate) fn delete_batch_sql(&self, d: Dialect) -> String {
        let t = &self.0;
        match d {
            Dialect::Sqlite => format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE create_time < datetime('now', ?) ORDER BY id LIMIT ?)"
            ),
            Dialect::Postgres => format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE create_time < now() - make_interval(secs => $1) ORDER BY id LIMIT $2)"
            ),
            Dialect::MySql => {
                format!("DELETE FROM {t} WHERE create_time < now() - INTERVAL ? SECOND ORDER BY id LIMIT ?")
            }
        }
    }

    /// The statements creating this table (and its schema / database) in `d`, each idempotent.
    pub(crate) fn ddl(&self, d: Dialect) -> Result<Vec<String>, Error> {
        let t = &self.0;
        let (schema, short) = self.split();
        let cols = "  trans_type varchar(45) DEFAULT '',
  gid varchar(128) DEFAULT '',
  branch_id varchar(128) DEFAULT '',
  op varchar(45) DEFAULT '',
  barrier_id varchar(45) DEFAULT '',
  reason varchar(45) DEFAULT '',";
        let mut out = Vec::new();
        match d {
            Dialect::Sqlite => {
                if schema.is_some() {
                    return Err(Error::InvalidInput(format!(
                        "SQLite has no schemas: the barrier table {t} must be a plain name"
                    )));
                }
                out.push(format!(
                    "CREATE TABLE IF NOT EXISTS {t} (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
{cols}
  create_time datetime DEFAULT CURRENT_TIMESTAMP,
  update_time datetime DEFAULT CURRENT_TIMESTAMP,
  UNIQUE (gid, branch_id, op, barrier_id)
)"
                ));
                out.push(format!("CREATE INDEX IF NOT EXISTS {short}_create_time ON {t} (create_time)"));
                out.push(format!("CREATE INDEX IF NOT EXISTS {short}_update_time ON {t} (update_time)"));
            }
            Dialect::Postgres => {
                if let Some(s) = schema {
                    out.push(format!("CREATE SCHEMA IF NOT EXISTS {s}"));
                }
                out.push(format!("CREATE SEQUENCE IF NOT EXISTS {t}_seq"));
                out.push(format!(
                    "CREATE TABLE IF NOT EXISTS {t} (
  id bigint NOT NULL DEFAULT nextval('{t}_seq'),
{cols}
  create_time timestamp(0) with time zone DEFAULT now(),
  update_time timestamp(0) with time zone DEFAULT now(),
  PRIMARY KEY (id),
  CONSTRAINT uniq_{short} UNIQUE (gid, branch_id, op, barrier_id)
)"
                ));
                out.push(format!("CREATE INDEX IF NOT EXISTS {short}_create_time ON {t} (create_time)"));
                out.push(format!("CREATE INDEX IF NOT EXISTS {short}_update_time ON {t} (update_time)"));
            }
            Dialect::MySql => {
                if let Some(s) = schema {
                    out.push(format!("CREATE DATABASE IF NOT EXISTS {s}"));
                }
                out.push(format!(
                    "CREATE TABLE IF NOT EXISTS {t} (
  id bigint(22) PRIMARY KEY AUTO_INCREMENT,
{cols}
  create_time datetime DEFAULT now(),
  update_time datetime DEFAULT now(),
  KEY (create_time),
  KEY (update_time),
  UNIQUE KEY (gid, branch_id, op, barrier_id)
)"
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DDL files shipped with the crate are exactly what `create_table` runs for the
    /// default names.
    #[test]
    fn shipped_ddl_matches_the_helper() {
        for (d, table, file) in [
            (Dialect::Sqlite, "dtm_barrier", include_str!("../../sql/barrier.sqlite.sql")),
            (Dialect::Postgres, "dtm_barrier.barrier", include_str!("../../sql/barrier.postgres.sql")),
            (Dialect::MySql, "dtm_barrier.barrier", include_str!("../../sql/barrier.mysql.sql")),
        ] {
            let ddl = BarrierTable::new(table).unwrap().ddl(d).unwrap();
            let body: String = file.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>().join("\n");
            assert_eq!(body.trim(), format!("{};", ddl.join(";\n")), "{d:?}");
        }
    }

    #[test]
    fn table_names_are_checked() {
        for bad in ["", "a.b.c", "a;b", "1a", "a b", ".a"] {
            assert!(BarrierTable::new(bad).is_err(), "{bad}");
        }
        assert!(BarrierTable::new("x.y").unwrap().ddl(Dialect::Sqlite).is_err());
    }
}
