//! Backend-specific checks; the behaviour of the `Store` contract is covered by the shared
//! conformance suite in `tests/conformance.rs`.

use sqlx::Row;

use super::*;

async fn open_in(dir: &tempfile::TempDir, opts: SqliteOptions) -> SqliteStore {
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    SqliteStore::open(&url, opts).await.expect("open")
}

async fn pragma(store: &SqliteStore, sql: &'static str) -> String {
    let row = sqlx::query(sql).fetch_one(&store.inner.reads).await.expect("pragma");
    match row.try_get::<String, _>(0) {
        Ok(s) => s,
        Err(_) => row.try_get::<i64, _>(0).expect("pragma value").to_string(),
    }
}

#[tokio::test]
async fn open_creates_a_wal_database_and_reopens_it() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    assert_eq!(pragma(&store, "PRAGMA journal_mode").await, "wal");
    drop(store);
    // Migrations already applied: a second open is a no-op for the schema.
    let again = open_in(&dir, SqliteOptions::default()).await;
    assert_eq!(again.load("x").await.expect("load"), None);
}

#[tokio::test]
async fn writes_are_refused_on_the_read_pool() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    let result = sqlx::query("DELETE FROM trans_global").execute(&store.inner.reads).await;
    assert!(result.is_err(), "query_only must reject writes on readers");
}

#[tokio::test]
async fn in_memory_is_rejected() {
    let result = SqliteStore::open("sqlite::memory:", SqliteOptions::default()).await;
    assert!(matches!(result, Err(Error::Internal(_))));
}

/// The query plan of `sql` with these integer arguments: its `detail` lines.
async fn plan(store: &SqliteStore, sql: &str, args: &[i64]) -> Vec<String> {
    let sql = format!("EXPLAIN QUERY PLAN {sql}");
    let query = args.iter().fold(sqlx::query(sqlx::AssertSqlSafe(sql)), |q, a| q.bind(*a));
    let rows = query.fetch_all(&store.inner.reads).await.expect("explain");
    rows.iter().map(|r| r.try_get::<String, _>("detail").expect("detail")).collect()
}

/// The unfinished counts (every metrics scrape) read the due index, never the whole table.
#[tokio::test]
async fn unfinished_counts_scan_the_partial_index() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    let plan = plan(&store, crate::conn::SQL.unfinished_counts.text, &[1]).await;
    assert!(plan.iter().any(|d| d.contains("USING INDEX trans_global_due")), "plan: {plan:?}");
}

#[tokio::test]
async fn claim_due_scans_the_partial_index() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    // SQLite claims in two statements; the first one finds the due rows.
    let plan = plan(&store, crate::conn::CLAIM_DUE_PICK.text, &[1, 10]).await;
    assert!(plan.iter().any(|d| d.contains("trans_global_due")), "plan: {plan:?}");
}

#[tokio::test]
async fn reset_cron_time_scans_the_partial_index() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    let plan = plan(&store, crate::conn::SQL.reset_cron_time.text, &[1, 1, 1, 10]).await;
    assert!(plan.iter().any(|d| d.contains("trans_global_due")), "plan: {plan:?}");
}

/// The opcodes of `text`, compiled on a connection with the writer's functions (ADR 26).
fn opcodes(dir: &tempfile::TempDir, text: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.path().join("t.db")).expect("open");
    crate::functions::register(&conn).expect("functions");
    let mut stmt = conn.prepare(&format!("EXPLAIN {text}")).expect("explain");
    // Unbound parameters are NULL: EXPLAIN only compiles.
    let mut rows = stmt.raw_query();
    let mut ops = Vec::new();
    while let Some(row) = rows.next().expect("row") {
        ops.push(row.get::<_, String>(1).expect("opcode"));
    }
    ops
}

#[tokio::test]
async fn the_writes_of_a_round_build_no_ephemeral_tables() {
    // ADR 16: a partial index's predicate with an IN list of three constants was compiled into
    // an ephemeral b-tree per evaluation, twice per save. Creates, saves and stops of rows
    // under the due index evaluate it; none may open an ephemeral table. (A claim does, for
    // its RETURNING rows, which SQLite buffers in one.)
    let dir = tempfile::tempdir().expect("dir");
    let _store = open_in(&dir, SqliteOptions::default()).await;
    let sql = &crate::conn::SQL;
    for (name, text) in [
        ("create", crate::conn::CREATE_PACKED.text),
        ("save", sql.save.text),
        ("save with branches", crate::conn::SAVE_PACKED.text),
        ("renew", sql.renew.text),
        ("renew with branches", crate::conn::RENEW_PACKED.text),
        ("claim_save", crate::conn::CLAIM_SAVE.text),
        ("claim_save with branches", crate::conn::CLAIM_SAVE_PACKED.text),
        ("register", crate::conn::REGISTER_TOUCH.text),
        ("force_stop", sql.force_stop.text),
    ] {
        let ops = opcodes(&dir, text);
        assert!(ops.iter().any(|o| o == "IdxInsert" || o == "Insert"), "{name} writes: {ops:?}");
        assert!(!ops.iter().any(|o| o == "OpenEphemeral"), "{name} opens an ephemeral table: {ops:?}");
    }
}

#[tokio::test]
async fn a_lease_renewal_rewrites_no_index_entry() {
    // SQLite deletes and re-inserts the entry of every index whose column a SET names, even
    // when the value is the same; the renewal before each later call of a round names none of
    // the due or held indexes' columns (only `update_time`, whose partial index holds finished
    // rows, so its entry is only checked). Its branches (ADR 26) are in no index either.
    let dir = tempfile::tempdir().expect("dir");
    let _store = open_in(&dir, SqliteOptions::default()).await;
    let sql = &crate::conn::SQL;
    let index_writes =
        |text: &str| opcodes(&dir, text).iter().filter(|o| *o == "IdxInsert" || *o == "IdxDelete").count();
    let save = index_writes(sql.save.text);
    assert!(save >= 6, "the full save writes the due, held and finished indexes: {save}");
    for renew in [sql.renew.text, crate::conn::RENEW_PACKED.text] {
        let n = index_writes(renew);
        assert!(n <= 2, "the renewal writes only the finished index's (skipped) entry: {n} in {renew}");
    }
}

/// The packed statements are the shared ones plus the branches: the create's one more
/// column and value, each save's `dtx_apply` before its WHERE.
#[test]
fn packed_statements_extend_the_shared_ones() {
    let create = crate::conn::CREATE_PACKED.text;
    assert!(create.contains("lease_until, branches) VALUES") && create.ends_with(", ?19)"), "{create}");
    for (packed, param) in [
        (crate::conn::SAVE_PACKED.text, "?15"),
        (crate::conn::RENEW_PACKED.text, "?6"),
        (crate::conn::CLAIM_SAVE_PACKED.text, "?16"),
    ] {
        let set = format!(", branches = dtx_apply(branches, {param}) WHERE ");
        assert!(packed.ends_with(" AND branches <> x''"), "{packed}");
        assert!(packed.contains(&set), "{packed}");
    }
}

#[tokio::test]
async fn the_rebuild_without_autoincrement_keeps_rows_ids_and_indexes() {
    // A database migrated up to the version before the rebuild (ADR 18), with rows in it.
    let dir = tempfile::tempdir().expect("dir");
    let old_migrations = tempfile::tempdir().expect("dir");
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/sqlite");
    for entry in std::fs::read_dir(&all).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_owned();
        if name.as_str() < "20261208000000" {
            std::fs::copy(&path, old_migrations.path().join(&name)).expect("copy");
        }
    }
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let opts = url.parse::<sqlx::sqlite::SqliteConnectOptions>().expect("url").create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.expect("pool");
    sqlx::migrate::Migrator::new(old_migrations.path()).await.expect("old").run(&pool).await.expect("run");
    for gid in ["a", "b", "c"] {
        sqlx::query(
            "INSERT INTO trans_global (gid, trans_type, status, create_time, update_time, \
             next_cron_time, next_cron_interval) VALUES (?1, 'saga', 'submitted', 1, 1, 1, 1000)",
        )
        .bind(gid)
        .execute(&pool)
        .await
        .expect("insert");
    }
    sqlx::query(
        "INSERT INTO trans_branch_op (gid, branch_id, op, url, payload, status, create_time, \
         update_time) VALUES ('a', '01', 'action', 'http://x/a', X'00', 'prepared', 1, 1)",
    )
    .execute(&pool)
    .await
    .expect("branch");
    sqlx::query("DELETE FROM trans_global WHERE gid = 'c'").execute(&pool).await.expect("delete");
    pool.close().await;

    let store = open_in(&dir, SqliteOptions::default()).await;
    let reads = &store.inner.reads;
    let ids: Vec<(String, i64)> =
        sqlx::query_as("SELECT gid, id FROM trans_global ORDER BY id").fetch_all(reads).await.expect("ids");
    assert_eq!(ids, [("a".to_owned(), 1), ("b".to_owned(), 2)]);
    let loaded = store.load("a").await.expect("load").expect("a");
    assert_eq!(loaded.branches.len(), 1);
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT sql FROM sqlite_master WHERE name IN ('trans_global', 'trans_branch_op')")
            .fetch_all(reads)
            .await
            .expect("schema");
    assert_eq!(tables.len(), 2);
    assert!(tables.iter().all(|(sql,)| !sql.contains("AUTOINCREMENT")), "{tables:?}");
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'trans_global' \
         AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(reads)
    .await
    .expect("indexes");
    let names: Vec<&str> = indexes.iter().map(|(n,)| n.as_str()).collect();
    assert_eq!(
        names,
        ["trans_global_create_time", "trans_global_due", "trans_global_finished", "trans_global_held"]
    );
    // The next row takes the next id after the largest one left (no sequence row remembers 3).
    store.create(dtx_store::testsuite::saga("n")).await.expect("create");
    let (id,): (i64,) =
        sqlx::query_as("SELECT id FROM trans_global WHERE gid = 'n'").fetch_one(reads).await.expect("id");
    assert_eq!(id, 3);
}

#[tokio::test]
async fn normal_synchronous_is_accepted() {
    let dir = tempfile::tempdir().expect("dir");
    let opts = SqliteOptions { synchronous: Synchronous::Normal, max_batch: 1, read_pool_size: 1 };
    let store = open_in(&dir, opts).await;
    store.create(dtx_store::testsuite::saga("n")).await.expect("create");
    assert!(store.load("n").await.expect("load").is_some());
}

#[test]
fn synchronous_parses_case_insensitively() {
    assert_eq!("FULL".parse::<Synchronous>(), Ok(Synchronous::Full));
    assert_eq!("normal".parse::<Synchronous>(), Ok(Synchronous::Normal));
    assert!("off".parse::<Synchronous>().is_err());
    assert_eq!(SqliteOptions::default().synchronous, Synchronous::Full);
}

/// A transaction's branches are packed in its row (ADR 26): every branch lands as given, with
/// ids ascending in the order given. A branch given twice is named, and nothing of the
/// transaction is written.
#[tokio::test]
async fn branches_are_packed_in_their_row_in_order() {
    use dtx_core::{Branch, Op};
    use dtx_store::testsuite::{T0, get, put, saga};
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    let row = |i: usize, op: Op| {
        let id = format!("{i:02}");
        Branch::new(
            id.clone(),
            op,
            format!("http://svc/{id}/{op}"),
            format!("{{\"n\":{i}}}").into_bytes(),
            T0,
        )
    };
    let mut tx = saga("many");
    tx.branches = (1..=10).flat_map(|i| [row(i, Op::Compensate), row(i, Op::Action)]).collect();
    put(&store, tx.clone()).await;
    let stored = get(&store, "many").await;
    assert_eq!(stored.branches.len(), 20);
    let ids: Vec<i64> = stored.branches.iter().map(|b| b.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascend in the order given: {ids:?}");
    for (got, want) in stored.branches.iter().zip(&tx.branches) {
        assert_eq!(*got, Branch { id: got.id, ..want.clone() });
    }

    let mut dup = saga("dup");
    dup.branches = vec![row(1, Op::Compensate), row(1, Op::Action), row(2, Op::Action), row(1, Op::Action)];
    match store.create(dup).await {
        Err(Error::Conflict(m)) => assert!(m.contains("branch 01/action"), "names the row: {m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.load("dup").await.expect("load"), None, "nothing of it written");
}

/// A claim and its save are one write (ADR 22): a save the writer refuses takes the claim
/// back with it, where the two writes of the trait's default would leave the row leased.
#[tokio::test]
async fn a_claim_and_its_save_are_one_write() {
    use dtx_core::{BranchStatus, GlobalStatus, Op};
    use dtx_store::testsuite::{at, get, put, saga_with};
    use dtx_store::{BranchUpdate, LeaseChange, ThenSave};
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    put(&store, saga_with("one", GlobalStatus::Prepared, at(1000), None)).await;
    let refused = ThenSave(std::sync::Arc::new(|l: &Loaded| {
        Some(Save {
            gid: l.global.gid.clone(),
            owner: "me".to_owned(),
            now: at(10),
            branches: vec![BranchUpdate {
                id: 0,
                branch_id: "99".to_owned(),
                op: Op::Action,
                status: BranchStatus::Prepared,
                attempts: 1,
                last_error: String::new(),
                finish_time: None,
            }],
            status: None,
            lease: LeaseChange::Renew { lease_until: at(40) },
        })
    }));
    let result = store.claim_then("one", "me", at(10), at(30), refused).await;
    assert!(matches!(result, Err(Error::NotFound(_))), "{result:?}");
    let row = get(&store, "one").await.global;
    assert_eq!((row.owner, row.lease_until), (None, None), "the claim was rolled back with its save");
}

/// A registration naming a branch the transaction has is refused whole, naming it (ADR 26:
/// `dtx_append` refuses, as the row layout's unique key did); the transaction is unchanged.
#[tokio::test]
async fn a_registered_duplicate_is_named_and_nothing_added() {
    use dtx_core::{Branch, GlobalStatus, Op, TransType};
    use dtx_store::Expect;
    use dtx_store::testsuite::{T0, at, get, put, saga_with};
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    put(&store, saga_with("dups", GlobalStatus::Prepared, at(0), None)).await;
    let before = get(&store, "dups").await;
    let row =
        |id: &str| Branch::new(id.to_owned(), Op::Action, format!("http://svc/{id}"), b"{}".to_vec(), T0);
    let expect = Expect { trans_type: TransType::Saga, default_timeout: std::time::Duration::ZERO };
    // The stored "01"/action comes after three new branches.
    let added = vec![row("03"), row("04"), row("05"), row("01")];
    match store.add_branches("dups", expect, added, at(5)).await {
        Err(Error::Conflict(m)) => assert!(m.contains("branch 01/action"), "names the stored row: {m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(get(&store, "dups").await, before, "nothing of it written");
    // The next registration goes in whole, after the branches there.
    store.add_branches("dups", expect, vec![row("03"), row("04")], at(6)).await.expect("add");
    let after = get(&store, "dups").await.branches;
    assert_eq!(after.len(), before.branches.len() + 2);
    assert_eq!(after[..before.branches.len()], before.branches[..]);
    let ids: Vec<i64> = after.iter().map(|b| b.id).collect();
    assert_eq!(ids, (1..=after.len() as i64).collect::<Vec<_>>());
    // The same, given twice in one registration.
    match store.add_branches("dups", expect, vec![row("06"), row("06")], at(7)).await {
        Err(Error::Conflict(m)) => assert!(m.contains("branch 06/action of dups"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// A registration's touch is also its check (ADR 25): it matches exactly when the check would
/// let the rows in, so the check's read runs only for a registration it refuses.
#[tokio::test]
async fn a_registration_checks_in_its_touch() {
    use dtx_core::{Branch, GlobalStatus, Op, TransType};
    use dtx_store::Expect;
    use dtx_store::sql::Conn;
    use dtx_store::testsuite::{T0, at, put, saga_with};
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    let prepared = |gid: &str, own: u64, owner: Option<(&str, u64)>| {
        let mut tx = saga_with(gid, GlobalStatus::Prepared, at(0), owner.map(|(o, l)| (o, at(l))));
        tx.global.trans_type = TransType::Tcc;
        tx.global.create_time = T0;
        tx.global.options.timeout_to_fail = own;
        tx.branches.clear();
        tx
    };
    put(&store, prepared("open", 0, None)).await;
    put(&store, prepared("own-3s", 3, None)).await;
    put(&store, prepared("leased", 0, Some(("node", 8)))).await;
    put(&store, prepared("no-options", 0, None)).await;
    let mut submitted = prepared("submitted", 0, None);
    submitted.global.status = GlobalStatus::Submitted;
    put(&store, submitted).await;
    put(&store, saga_with("saga", GlobalStatus::Prepared, at(0), None)).await;
    drop(store);

    let mut conn = rusqlite::Connection::open(dir.path().join("t.db")).expect("open");
    crate::functions::register(&conn).expect("functions");
    conn.execute("UPDATE trans_global SET options = '' WHERE gid = 'no-options'", []).expect("options");
    let mut names = crate::conn::Names::default();
    let tcc = Expect { trans_type: TransType::Tcc, default_timeout: Duration::from_secs(10) };
    let mut try_at = |gid: &str, expect: Expect, secs: u64| {
        let row = Branch::new(format!("b{secs}"), Op::Confirm, "http://svc/c".to_owned(), b"{}".to_vec(), T0);
        let mut lite = crate::conn::Lite { conn: &mut conn, names: &mut names };
        crate::conn::now(lite.try_register_branches(gid, &expect, &[row], at(secs))).expect("register")
    };
    // The server's timeout (10 s) for a row without its own; the boundary is timed out.
    assert!(try_at("open", tcc, 9));
    assert!(!try_at("open", tcc, 10));
    assert!(try_at("no-options", tcc, 9));
    assert!(!try_at("no-options", tcc, 10));
    // The row's own timeout wins over the server's.
    assert!(try_at("own-3s", tcc, 2));
    assert!(!try_at("own-3s", tcc, 3));
    // No timeout at all when neither has one.
    let none = Expect { default_timeout: Duration::ZERO, ..tcc };
    assert!(try_at("open", none, 100_000));
    // A running lease refuses; an expired one does not.
    assert!(!try_at("leased", tcc, 7));
    assert!(!try_at("leased", tcc, 8), "a lease ending now is still running");
    assert!(try_at("leased", none, 9));
    // Another status, another mode, an unknown gid.
    assert!(!try_at("submitted", tcc, 1));
    assert!(!try_at("saga", tcc, 1));
    assert!(!try_at("ghost", tcc, 1));

    let stored = |gid: &str| -> (i64, i64) {
        let (time, packed): (i64, Vec<u8>) = conn
            .query_row("SELECT update_time, branches FROM trans_global WHERE gid = ?1", [gid], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("row");
        (time, dtx_store::packed::decode(&packed).expect("packed").len() as i64)
    };
    // Each registration that matched touched the row and added its row; the others nothing.
    assert_eq!(stored("open"), (at(100_000).as_millis(), 2));
    assert_eq!(stored("own-3s"), (at(2).as_millis(), 1));
    assert_eq!(stored("leased"), (at(9).as_millis(), 1));
    assert_eq!(stored("submitted").1, 0);
}

/// The claim and its save's global half are one UPDATE here (ADR 25): a release decided on the
/// picked row leaves it unowned, and a save fenced by another owner (which no decision makes)
/// still fails as fenced, taking the claim back with it.
#[tokio::test]
async fn a_claim_takes_the_row_in_its_save() {
    use dtx_core::GlobalStatus;
    use dtx_store::testsuite::{at, get, put, saga_with};
    use dtx_store::{LeaseChange, StatusChange, ThenSave};
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    put(&store, saga_with("release", GlobalStatus::Prepared, at(1000), None)).await;
    put(&store, saga_with("foreign", GlobalStatus::Prepared, at(1000), None)).await;
    let decide = |owner: &'static str, lease: LeaseChange| {
        ThenSave(std::sync::Arc::new(move |l: &Loaded| {
            Some(Save {
                gid: l.global.gid.clone(),
                owner: owner.to_owned(),
                now: at(10),
                branches: Vec::new(),
                status: Some(StatusChange {
                    to: GlobalStatus::Aborting,
                    rollback_reason: None,
                    result: None,
                }),
                lease: lease.clone(),
            })
        }))
    };
    let release = LeaseChange::Release {
        next_cron_time: at(50),
        next_cron_interval: std::time::Duration::from_secs(5),
    };
    let c =
        store.claim_then("release", "me", at(10), at(30), decide("me", release)).await.expect("claim_then");
    assert!(c.expect("claimable").saved);
    let row = get(&store, "release").await.global;
    assert_eq!((row.status, row.owner, row.lease_until), (GlobalStatus::Aborting, None, None));
    assert_eq!(row.next_cron_time, at(50));

    let renew = LeaseChange::Renew { lease_until: at(40) };
    let fenced = store.claim_then("foreign", "me", at(10), at(30), decide("other", renew)).await;
    assert!(matches!(fenced, Err(Error::Fenced { .. })), "{fenced:?}");
    let row = get(&store, "foreign").await.global;
    assert_eq!((row.status, row.owner, row.lease_until), (GlobalStatus::Prepared, None, None));
}

/// A branch is found by its id (its position, ADR 26) when that id names it, else by its
/// key; an update whose key the transaction lacks is refused, and nothing of the save written.
#[tokio::test]
async fn a_branch_is_found_by_its_position_or_its_key() {
    use dtx_core::{BranchStatus, GlobalStatus, Op};
    use dtx_store::testsuite::{at, get, put, saga_with};
    use dtx_store::{BranchUpdate, LeaseChange};
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    put(&store, saga_with("mine", GlobalStatus::Submitted, at(0), Some(("me", at(60))))).await;
    let mine = get(&store, "mine").await;
    let action = mine.branches.iter().find(|b| b.op == Op::Action).expect("an action branch");
    let save = |id: i64, op: Op, attempts: u32| Save {
        gid: "mine".to_owned(),
        owner: "me".to_owned(),
        now: at(5),
        branches: vec![BranchUpdate {
            id,
            branch_id: action.branch_id.clone(),
            op,
            status: BranchStatus::Succeed,
            attempts,
            last_error: String::new(),
            finish_time: Some(at(5)),
        }],
        status: None,
        lease: LeaseChange::Renew { lease_until: at(70) },
    };
    // A key the transaction lacks: refused, the lease not renewed either.
    let wrong = store.save(save(action.id, Op::Confirm, 1)).await;
    assert!(matches!(wrong, Err(Error::NotFound(_))), "{wrong:?}");
    assert_eq!(get(&store, "mine").await, mine);
    // By its id; then by its key, under an id naming another branch and under none.
    for (id, attempts) in [(action.id, 1), (action.id + 1, 2), (0, 3)] {
        store.save(save(id, Op::Action, attempts)).await.expect("save");
        let now = get(&store, "mine").await;
        let row = now.branches.iter().find(|b| b.id == action.id).expect("branch");
        assert_eq!(
            (row.status, row.attempts, row.finish_time),
            (BranchStatus::Succeed, attempts, Some(at(5)))
        );
        let others =
            |l: &Loaded| l.branches.iter().filter(|b| b.id != action.id).cloned().collect::<Vec<_>>();
        assert_eq!(others(&now), others(&mine), "id {id} changed another branch");
        assert_eq!(now.global.lease_until, Some(at(70)));
    }
}

/// Branch rows of a database written before ADR 26 (an empty `branches` value) are still
/// the transaction's branches: read (alone and in a batch claim), saved, registered to, and
/// purged with it.
#[tokio::test]
async fn branch_rows_of_an_older_database_stay_rows() {
    use dtx_core::{Branch, BranchStatus, GlobalStatus, Op, TransType};
    use dtx_store::testsuite::{T0, at, get};
    use dtx_store::{BranchUpdate, Expect, LeaseChange};
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    put_two(&store).await;
    drop(store);
    {
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).expect("open");
        conn.execute_batch(
            "UPDATE trans_global SET branches = x'', status = 'prepared', trans_type = 'tcc'; \
             INSERT INTO trans_branch_op VALUES (7, 'b', '01', 'confirm', 'http://x/b1', x'00ff', 'succeed', 2, 'e', 1, 2, 3); \
             INSERT INTO trans_branch_op VALUES (9, 'a', '02', 'confirm', 'http://x/a2', x'74657874', 'prepared', 0, '', 1, 1, NULL); \
             INSERT INTO trans_branch_op VALUES (8, 'a', '01', 'confirm', 'http://x/a1', x'', 'prepared', 0, '', 1, 1, NULL);",
        )
        .expect("old rows");
    }
    let store = open_in(&dir, SqliteOptions::default()).await;
    let a = get(&store, "a").await.branches;
    let keys: Vec<(i64, &str)> = a.iter().map(|b| (b.id, b.branch_id.as_str())).collect();
    assert_eq!(keys, [(8, "01"), (9, "02")]);
    assert_eq!(a[1].payload, b"text");
    let b = get(&store, "b").await.branches;
    assert_eq!(
        (b[0].payload.as_slice(), b[0].attempts, b[0].finish_time),
        (&[0, 255][..], 2, Some(dtx_core::Timestamp(3)))
    );

    // A registration adds rows.
    let expect = Expect { trans_type: TransType::Tcc, default_timeout: std::time::Duration::ZERO };
    let row = Branch::new("03".to_owned(), Op::Confirm, "http://x/a3".to_owned(), b"{}".to_vec(), T0);
    store.add_branches("a", expect, vec![row.clone()], at(5)).await.expect("register");
    match store.add_branches("a", expect, vec![row], at(6)).await {
        Err(Error::Conflict(m)) => assert!(m.contains("03/confirm"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let a = get(&store, "a").await;
    assert_eq!(a.branches.len(), 3);
    assert_eq!(a.global.update_time, at(5));

    // A claim of both, then a save of each: the rows change, by id or by key.
    let claimed = store.claim_due("me", at(100), at(160), 10).await.expect("claim");
    let counts: Vec<(String, usize)> =
        claimed.iter().map(|l| (l.global.gid.clone(), l.branches.len())).collect();
    assert!(counts.contains(&("a".to_owned(), 3)) && counts.contains(&("b".to_owned(), 1)), "{counts:?}");
    for (gid, id, branch) in [("a", 9, "02"), ("a", 0, "03"), ("b", 4, "01")] {
        let save = Save {
            gid: gid.to_owned(),
            owner: "me".to_owned(),
            now: at(101),
            branches: vec![BranchUpdate {
                id,
                branch_id: branch.to_owned(),
                op: Op::Confirm,
                status: BranchStatus::Succeed,
                attempts: 1,
                last_error: String::new(),
                finish_time: Some(at(101)),
            }],
            status: Some(dtx_store::StatusChange {
                to: GlobalStatus::Submitted,
                rollback_reason: None,
                result: None,
            }),
            lease: LeaseChange::Renew { lease_until: at(170) },
        };
        store.save(save).await.unwrap_or_else(|e| panic!("save {gid}/{branch}: {e}"));
        let now = get(&store, gid).await;
        let b = now.branches.iter().find(|b| b.branch_id == branch).expect("branch");
        assert_eq!((b.status, b.update_time), (BranchStatus::Succeed, at(101)), "{gid}/{branch}");
    }
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM trans_branch_op")
        .fetch_one(&store.inner.reads)
        .await
        .expect("rows");
    assert_eq!(left, 4, "they stayed rows");
}

/// A transaction whose packed branches would exceed the limit keeps them in rows (ADR 26):
/// a large create goes to rows at once, and a registration that would overflow moves the
/// packed branches into rows first, in order. Either way, every branch reads back as given.
#[tokio::test]
async fn large_transactions_keep_their_branches_in_rows() {
    use dtx_core::{Branch, BranchStatus, GlobalStatus, Op, TransType};
    use dtx_store::testsuite::{T0, at, get, put, saga, saga_with};
    use dtx_store::{BranchUpdate, Expect, LeaseChange};
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    let rows = |gid: &str| {
        let reads = store.inner.reads.clone();
        let gid = gid.to_owned();
        async move {
            let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM trans_branch_op WHERE gid = ?1")
                .bind(gid)
                .fetch_one(&reads)
                .await
                .expect("rows");
            n
        }
    };
    let branch = |i: usize, op: Op, size: usize| {
        Branch::new(format!("{i:02}"), op, format!("http://svc/{i}"), vec![b'p'; size], T0)
    };

    // Small: packed, no rows. Large: rows.
    put(&store, saga("small")).await;
    assert_eq!(rows("small").await, 0);
    let mut large = saga_with("large", GlobalStatus::Submitted, at(0), Some(("me", at(60))));
    large.branches =
        (1..=4).flat_map(|i| [branch(i, Op::Compensate, 300), branch(i, Op::Action, 300)]).collect();
    let created = store.create_returning_ids(large.clone()).await.expect("create");
    assert_eq!((created.tx.global, created.tx.branches), (large.global.clone(), large.branches.clone()));
    let ids = created.ids;
    assert_eq!(rows("large").await, 8);
    let stored = get(&store, "large").await.branches;
    assert_eq!(stored.iter().map(|b| b.id).collect::<Vec<_>>(), ids);
    for (got, want) in stored.iter().zip(&large.branches) {
        assert_eq!(*got, Branch { id: got.id, ..want.clone() });
    }
    let save = Save {
        gid: "large".to_owned(),
        owner: "me".to_owned(),
        now: at(5),
        branches: vec![BranchUpdate {
            id: ids[1],
            branch_id: "01".to_owned(),
            op: Op::Action,
            status: BranchStatus::Succeed,
            attempts: 1,
            last_error: String::new(),
            finish_time: Some(at(5)),
        }],
        status: None,
        lease: LeaseChange::Renew { lease_until: at(60) },
    };
    store.save(save).await.expect("save");
    assert_eq!(get(&store, "large").await.branches[1].status, BranchStatus::Succeed);

    // A TCC registered to branch by branch: packed, until the next one would not fit.
    let mut tcc = saga_with("tcc", GlobalStatus::Prepared, at(0), None);
    tcc.global.trans_type = TransType::Tcc;
    tcc.branches.clear();
    put(&store, tcc).await;
    let expect = Expect { trans_type: TransType::Tcc, default_timeout: std::time::Duration::ZERO };
    let mut added = Vec::new();
    for i in 1..=8 {
        let two = vec![branch(i, Op::Confirm, 200), branch(i, Op::Cancel, 200)];
        store.add_branches("tcc", expect, two.clone(), at(i as u64)).await.expect("register");
        added.extend(two);
        let now = get(&store, "tcc").await;
        assert_eq!(now.global.update_time, at(i as u64));
        assert_eq!(now.branches.len(), added.len());
        for (got, want) in now.branches.iter().zip(&added) {
            assert_eq!(*got, Branch { id: got.id, ..want.clone() }, "after registration {i}");
        }
        let n = rows("tcc").await;
        assert!(n == 0 || n == added.len() as i64, "all packed or all rows: {n}");
    }
    assert_eq!(rows("tcc").await, 16, "the registrations outgrew the packed value");
    match store.add_branches("tcc", expect, vec![branch(1, Op::Confirm, 1)], at(20)).await {
        Err(Error::Conflict(m)) => assert!(m.contains("01/confirm"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Its submit: the claim, the save decided on it and its branch result, one request.
    let confirm = get(&store, "tcc").await.branches[15].clone();
    let submit = dtx_store::ThenSave(std::sync::Arc::new(move |l: &Loaded| {
        Some(Save {
            gid: l.global.gid.clone(),
            owner: "me".to_owned(),
            now: at(30),
            branches: vec![BranchUpdate {
                id: confirm.id,
                branch_id: confirm.branch_id.clone(),
                op: confirm.op,
                status: BranchStatus::Prepared,
                attempts: 1,
                last_error: String::new(),
                finish_time: None,
            }],
            status: Some(dtx_store::StatusChange {
                to: GlobalStatus::Submitted,
                rollback_reason: None,
                result: None,
            }),
            lease: LeaseChange::Renew { lease_until: at(90) },
        })
    }));
    let claimed = store.claim_then("tcc", "me", at(30), at(90), submit).await.expect("claim_then");
    assert!(claimed.expect("claimable").saved);
    let now = get(&store, "tcc").await;
    assert_eq!((now.global.status, now.global.owner.as_deref()), (GlobalStatus::Submitted, Some("me")));
    assert_eq!(now.branches[15].attempts, 1);
}

/// Two transactions, "a" and "b", without branches.
async fn put_two(store: &SqliteStore) {
    use dtx_store::testsuite::{put, saga};
    for gid in ["a", "b"] {
        let mut tx = saga(gid);
        tx.branches.clear();
        put(store, tx).await;
    }
}

/// A create answers with its branch rows' ids, in the order given (ADR 25): the ids the rows
/// have when read back, also for more rows than one INSERT takes and after other inserts.
#[tokio::test]
async fn a_create_returns_its_branch_row_ids() {
    use dtx_core::{Branch, Op};
    use dtx_store::testsuite::{T0, get, saga};
    let dir = tempfile::tempdir().expect("dir");
    let store = open_in(&dir, SqliteOptions::default()).await;
    for (gid, rows) in [("four", 4_usize), ("twenty", 20), ("one", 1), ("none", 0)] {
        let mut tx = saga(gid);
        tx.branches = (0..rows)
            .map(|i| {
                Branch::new(format!("{i:02}"), Op::Action, "http://svc/a".to_owned(), b"{}".to_vec(), T0)
            })
            .collect();
        let ids = store.create_returning_ids(tx.clone()).await.expect("create").ids;
        let stored = get(&store, gid).await.branches;
        let by_key: Vec<i64> = tx
            .branches
            .iter()
            .map(|b| stored.iter().find(|s| s.branch_id == b.branch_id).expect("stored row").id)
            .collect();
        assert_eq!(ids, by_key, "{gid}");
    }
}
