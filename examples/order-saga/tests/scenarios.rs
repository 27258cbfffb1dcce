//! The example's scenarios through the same code path as `cargo run -p order-saga`: a dtx in
//! process, the three services on loopback, real SQLite files (and PostgreSQL when
//! `DTX_TEST_POSTGRES_URL` is set, as `.ci/run` does).

use order_saga::{Config, run_scenarios};

fn assert_all_passed(report: &order_saga::Report) {
    let text = report.render();
    println!("{text}");
    assert_eq!(report.scenarios.len(), 7, "every scenario ran");
    assert_eq!(report.failed(), 0, "some scenario failed:\n{text}");
    assert!(text.trim_end().ends_with("7 passed, 0 failed"), "the report's last line:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_holds_on_sqlite() {
    let report = run_scenarios(Config::default()).await.expect("the example starts");
    assert_all_passed(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_holds_on_postgres() {
    let test = "order-saga on PostgreSQL";
    let Some(url) = dtx_store_postgres::testing::fresh_database(test).await else {
        assert!(std::env::var_os("CI").is_none(), "{test}: CI must set DTX_TEST_POSTGRES_URL");
        return;
    };
    // Fewer concurrent orders: the point here is the same invariants on another database.
    let config =
        Config { postgres_url: Some(url), concurrent_orders: 60, bulk_stock: 20, ..Config::default() };
    let report = run_scenarios(config).await.expect("the example starts");
    assert_all_passed(&report);
}
