//! [`sqlx_conn!`](crate::sqlx_conn): the [`Conn`](super::Conn) of a sqlx driver, written once
//! for every backend that uses sqlx (as a macro: `dtx-store` does not depend on sqlx).

/// Defines `$name`, a pooled sqlx connection of database `$db` (rows `$row`) that runs the
/// shared statements, mapping driver errors with `$map(what, sqlx::Error) -> dtx_store::Error`.
/// The defining crate depends on `sqlx`. An optional last argument `{ ... }` holds the
/// backend's overrides of provided [`Conn`](super::Conn) methods. Fields: `conn` (the pooled connection), `clock`
/// ([`ClockSource`](crate::sql::ClockSource)) and `sql` (the rendered statements).
#[macro_export]
macro_rules! sqlx_conn {
    ($name:ident, $db:ty, $row:ty, $map:path) => {
        $crate::sqlx_conn!($name, $db, $row, $map, {});
    };
    ($name:ident, $db:ty, $row:ty, $map:path, { $($overrides:tt)* }) => {
        /// A pooled connection running the shared statements of `dtx_store::sql`.
        pub(crate) struct $name {
            pub(crate) conn: sqlx::pool::PoolConnection<$db>,
            pub(crate) clock: $crate::sql::ClockSource,
            pub(crate) sql: &'static $crate::sql::Statements,
        }

        impl $name {
            /// The statement with its arguments bound in placeholder order.
            fn query<'q>(
                sql: &$crate::sql::Sql,
                args: &[$crate::sql::Arg<'q>],
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                let mut query = sqlx::query(sql.text);
                for arg in sql.bound(args) {
                    query = match arg {
                        $crate::sql::Arg::Int(v) => query.bind(v),
                        $crate::sql::Arg::Text(v) => query.bind(v),
                        $crate::sql::Arg::Bool(v) => query.bind(v),
                        $crate::sql::Arg::Blob(v) => query.bind(v),
                    };
                }
                query
            }
        }

        /// A result row, read through the shared decoding.
        struct SqlxRow<'a>(&'a $row);

        impl SqlxRow<'_> {
            fn get<'r, T>(&'r self, column: &'static str) -> $crate::Result<T>
            where
                T: sqlx::Decode<'r, $db> + sqlx::Type<$db>,
            {
                sqlx::Row::try_get(self.0, column).map_err(|e| $map("decode row", e))
            }
        }

        impl $crate::rows::Columns for SqlxRow<'_> {
            fn text(&self, column: &'static str) -> $crate::Result<String> {
                self.get(column)
            }
            fn opt_text(&self, column: &'static str) -> $crate::Result<Option<String>> {
                self.get(column)
            }
            fn int(&self, column: &'static str) -> $crate::Result<i64> {
                self.get(column)
            }
            fn opt_int(&self, column: &'static str) -> $crate::Result<Option<i64>> {
                self.get(column)
            }
            fn blob(&self, column: &'static str) -> $crate::Result<Vec<u8>> {
                self.get(column)
            }
        }

        impl $crate::sql::Conn for $name {
            fn sql(&self) -> &'static $crate::sql::Statements {
                self.sql
            }

            fn fixed(&self, now: dtx_core::Timestamp) -> Option<i64> {
                self.clock.fixed(now)
            }

            async fn execute(
                &mut self,
                sql: &$crate::sql::Sql,
                args: &[$crate::sql::Arg<'_>],
                what: &'static str,
            ) -> $crate::Result<u64> {
                $crate::sql::count_statements(1);
                let done = Self::query(sql, args).execute(&mut *self.conn).await.map_err(|e| $map(what, e))?;
                Ok(done.rows_affected())
            }

            async fn fetch<T: Send>(
                &mut self,
                sql: &$crate::sql::Sql,
                args: &[$crate::sql::Arg<'_>],
                what: &'static str,
                decode: $crate::sql::Decode<T>,
            ) -> $crate::Result<Vec<T>> {
                $crate::sql::count_statements(1);
                let rows = Self::query(sql, args).fetch_all(&mut *self.conn).await.map_err(|e| $map(what, e))?;
                rows.iter().map(|row| decode(&SqlxRow(row))).collect()
            }

            async fn control(&mut self, sql: &'static str) -> $crate::Result<()> {
                // Simple queries: nothing to prepare, one round trip each.
                $crate::sql::count_statements(1);
                sqlx::raw_sql(sql).execute(&mut *self.conn).await.map(|_| ()).map_err(|e| $map("transaction control", e))
            }

            $($overrides)*
        }
    };
}
