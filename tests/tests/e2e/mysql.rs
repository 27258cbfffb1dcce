//! dtx on MySQL / MariaDB, end to end: representative saga, TCC and message cases of the
//! in-process suites on a fresh MariaDB database each, three `dtx` processes sharing one
//! database with one killed and one restarted, and a database outage under a running node (on a
//! throwaway server of the test's own).
//!
//! Skipped, with a notice, unless `DTX_TEST_MYSQL_URL` is set (`bash .ci/run` sets it); a
//! failure instead under `CI=true`. Needs the `dtx` binary next to the test binaries.

use std::sync::Arc;

use dtx_store_mysql::testing::{self, Server};
use dtx_store_mysql::{MySqlOptions, MySqlStore};
use dtx_tests::TestServer;

use crate::postgres_outage::{Outage, outage_loses_nothing_acknowledged};
use crate::{msg, postgres_nodes, saga, tcc};

/// An in-process server on a fresh MySQL database, or `None` (skipped).
async fn server(test: &str) -> Option<TestServer> {
    let url = testing::fresh_database(test).await?;
    Some(TestServer::spawn(|c| c.database_url = url.into()).await)
}

macro_rules! on_mysql {
    ($($name:ident => $scenario:path;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(s) = server(stringify!($name)).await else { return };
            $scenario(&s).await;
        }
    )*};
}

on_mysql! {
    saga_succeeds => saga::saga_normal_succeeds_and_calls_participants_like_dtm_on;
    saga_rolls_back => saga::saga_rollback_compensates_in_reverse_order_including_the_failed_step_on;
    tcc_confirms => tcc::tcc_normal_confirms_newest_first_one_at_a_time_on;
    tcc_idempotency => tcc::prepare_submit_and_abort_follow_dtm_idempotency_rules_on;
    msg_prepare_then_submit => msg::prepare_then_submit_runs_the_actions_in_order_on;
    msg_submit_without_prepare => msg::submit_without_prepare_runs_the_actions_on;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_mariadb_survive_a_kill_and_a_restart() {
    let Some(db_url) =
        testing::fresh_database("three_nodes_on_one_mariadb_survive_a_kill_and_a_restart").await
    else {
        return;
    };
    let store =
        MySqlStore::open(&db_url, MySqlOptions::with_pool_size(2)).await.expect("open the shared database");
    postgres_nodes::three_nodes_survive_a_kill_and_a_restart(&db_url, 600, Arc::new(store)).await;
}

impl Outage for Server {
    fn url(&self) -> String {
        Server::url(self)
    }
    async fn stop(&mut self) {
        Server::stop(self).await.expect("stop mariadb");
    }
    async fn start(&mut self) {
        self.start_again().await.expect("start mariadb again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_mariadb_outage_loses_nothing_acknowledged() {
    let Some(mut server) = Server::start("a_ten_second_mariadb_outage_loses_nothing_acknowledged").await
    else {
        return;
    };
    outage_loses_nothing_acknowledged(&mut server, "MySQL").await;
}
