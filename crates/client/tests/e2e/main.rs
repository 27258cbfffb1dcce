//! dtx-client's tests, one binary: the barrier on SQLite, PostgreSQL and MySQL (real servers:
//! `DTX_TEST_POSTGRES_URL`, `DTX_TEST_MYSQL_URL`, set by `.ci/run`), and end-to-end flows
//! against a real dtx in process with axum and tonic participants written with the SDK, and XA
//! on real prepared transactions (PostgreSQL, MySQL / MariaDB).

mod bank;
mod barrier;
mod db;
mod flows;
mod tls;
mod xa;
