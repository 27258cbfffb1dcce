//! The scenarios, each with its invariant checked against the three databases, run through
//! the real services, a real dtx and real HTTP / gRPC calls on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dtx_client::Client;
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;

use crate::coordinator::{Embedded, Endpoints};
use crate::db::Db;
use crate::hooks::{Event, Hooks};
use crate::inventory::{InventoryService, Stock};
use crate::order::{Mode, OrderConfig, PlaceOrder, Placed};
use crate::report::{Report, ScenarioReport};
use crate::serve::{self, Running};
use crate::{Error, coupon, order};

/// What to run against.
#[derive(Debug, Clone)]
pub struct Config {
    /// A running dtx; `None` starts one in this process.
    pub dtx: Option<Endpoints>,
    /// A PostgreSQL URL for the services' databases (each service in a schema of its own);
    /// `None`: a SQLite file per service.
    pub postgres_url: Option<String>,
    /// Where the SQLite files go; `None`: a temporary directory.
    pub data_dir: Option<PathBuf>,
    /// Orders placed at once in the concurrency scenario.
    pub concurrent_orders: usize,
    /// Stock of the item they all want.
    pub bulk_stock: i64,
    /// How long the inventory service stays down in the outage scenario.
    pub outage: Duration,
    /// The transactions' retry interval; `None`: the coordinator's (the embedded one retries
    /// after 0.25 s; a standalone dtx after 10 s unless told otherwise, so 1 s is set then).
    pub retry_interval: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dtx: None,
            postgres_url: None,
            data_dir: None,
            concurrent_orders: 200,
            bulk_stock: 50,
            outage: Duration::from_secs(3),
            retry_interval: None,
        }
    }
}

/// How long one transaction may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The services and the coordinator of one run.
struct Env {
    hooks: Hooks,
    order_db: Db,
    inventory_db: Db,
    coupon_db: Db,
    order: Running,
    coupon: Running,
    inventory: Option<Running>,
    inventory_addr: SocketAddr,
    order_url: String,
    coupon_url: String,
    http: reqwest::Client,
    dtx: Client,
    /// Prefix of this run's SKUs and coupon codes, so runs sharing a database stay apart.
    tag: String,
    /// This run's orders (for the final state).
    gids: Vec<String>,
    embedded: Option<Embedded>,
    _dir: Option<TempDir>,
}

/// Starts dtx (unless `config.dtx` names one) and the three services, runs every scenario,
/// and reports. An `Err` means the run could not start; a scenario that fails is in the
/// report.
pub async fn run_scenarios(config: Config) -> Result<Report, Error> {
    let mut env = Env::start(&config).await?;
    let mut report = Report::default();
    type Scenario = for<'a> fn(
        &'a mut Env,
        &'a Config,
        &'a mut ScenarioReport,
    ) -> futures::future::BoxFuture<'a, Result<(), Error>>;
    let scenarios: [(&str, Scenario); 7] = [
        ("1. happy path", |e, c, r| Box::pin(happy_path(e, c, r))),
        ("2. coupon already used: rollback", |e, c, r| Box::pin(coupon_used(e, c, r))),
        ("3. out of stock: rollback", |e, c, r| Box::pin(out_of_stock(e, c, r))),
        ("4. inventory down mid-saga, retried until it is back", |e, c, r| Box::pin(outage(e, c, r))),
        ("5. duplicate delivery: committed, then answered 500", |e, c, r| Box::pin(duplicate(e, c, r))),
        ("6. TCC: confirm path and cancel path", |e, c, r| Box::pin(tcc(e, c, r))),
        ("7. concurrent orders for scarce stock", |e, c, r| Box::pin(concurrent(e, c, r))),
    ];
    for (name, run) in scenarios {
        let mut r = ScenarioReport::new(name);
        let started = Instant::now();
        if let Err(e) = run(&mut env, &config, &mut r).await {
            r.error = Some(e.to_string());
        }
        r.millis = started.elapsed().as_millis();
        tracing::info!(scenario = name, passed = r.passed(), "scenario done");
        report.scenarios.push(r);
    }
    report.final_state = env.final_state().await?;
    env.stop().await;
    Ok(report)
}

impl Env {
    async fn start(config: &Config) -> Result<Env, Error> {
        let embedded = match &config.dtx {
            Some(_) => None,
            None => Some(Embedded::start().await?),
        };
        let endpoints = match (&config.dtx, &embedded) {
            (Some(e), _) => e.clone(),
            (None, Some(e)) => e.endpoints().clone(),
            (None, None) => return Err(Error::Runner("no coordinator".into())),
        };
        let (dir, dbs) = match &config.postgres_url {
            Some(url) => {
                let (o, i, c) = (
                    Db::connect(url, Some("order_saga_order")).await?,
                    Db::connect(url, Some("order_saga_inventory")).await?,
                    Db::connect(url, Some("order_saga_coupon")).await?,
                );
                (None, (o, i, c))
            }
            None => {
                let (dir, path) = match &config.data_dir {
                    Some(p) => {
                        std::fs::create_dir_all(p)?;
                        (None, p.clone())
                    }
                    None => {
                        let d = tempfile::tempdir()?;
                        let p = d.path().to_owned();
                        (Some(d), p)
                    }
                };
                let url = |name: &str| format!("sqlite://{}", path.join(name).display());
                let dbs = (
                    Db::connect(&url("order.db"), None).await?,
                    Db::connect(&url("inventory.db"), None).await?,
                    Db::connect(&url("coupon.db"), None).await?,
                );
                (dir, dbs)
            }
        };
        let (order_db, inventory_db, coupon_db) = dbs;
        let hooks = Hooks::default();

        // Scenario 4 stops inventory and starts it again on the same address.
        let inventory_listener = restartable_listener().await?;
        let inventory_addr = inventory_listener.local_addr()?;
        let service = InventoryService::new(inventory_db.clone(), hooks.clone()).await?;
        let inventory = serve::grpc(inventory_listener, service.into_server())?;

        let coupon_listener = TcpListener::bind("127.0.0.1:0").await?;
        let coupon_url = format!("http://{}", coupon_listener.local_addr()?);
        let coupon = serve::http(coupon_listener, coupon::router(coupon_db.clone(), hooks.clone()).await?)?;

        let order_listener = TcpListener::bind("127.0.0.1:0").await?;
        let order_url = format!("http://{}", order_listener.local_addr()?);
        let retry_interval = config.retry_interval.or(config.dtx.as_ref().map(|_| Duration::from_secs(1)));
        let order_config = OrderConfig {
            dtx_grpc: endpoints.grpc.clone(),
            public_url: order_url.clone(),
            inventory: inventory_addr.to_string(),
            coupon_url: coupon_url.clone(),
            retry_interval,
        };
        let order =
            serve::http(order_listener, order::router(order_db.clone(), hooks.clone(), order_config).await?)?;

        let http = reqwest::Client::builder().no_proxy().build()?;
        let dtx = Client::http_with(http.clone(), &endpoints.http)?;
        let tag = dtx.new_gid().await?.chars().take(4).collect::<String>().to_lowercase();
        Ok(Env {
            hooks,
            order_db,
            inventory_db,
            coupon_db,
            order,
            coupon,
            inventory: Some(inventory),
            inventory_addr,
            order_url,
            coupon_url,
            http,
            dtx,
            tag,
            gids: Vec::new(),
            embedded,
            _dir: dir,
        })
    }

    async fn stop(self) {
        self.order.stop().await;
        self.coupon.stop().await;
        if let Some(i) = self.inventory {
            i.stop().await;
        }
        if let Some(e) = self.embedded {
            e.stop().await;
        }
        for db in [&self.order_db, &self.inventory_db, &self.coupon_db] {
            db.close().await;
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// Seeds `sku` with `qty` available and returns its full name.
    async fn stock(&self, sku: &str, qty: i64) -> Result<String, Error> {
        let sku = self.key(sku);
        InventoryService::seed(&self.inventory_db, &sku, qty).await?;
        Ok(sku)
    }

    /// Seeds an available coupon and returns its full code.
    async fn coupon(&self, code: &str) -> Result<String, Error> {
        let code = self.key(code).to_uppercase();
        coupon::seed(&self.coupon_db, &code).await?;
        Ok(code)
    }

    /// Places an order through the order service's HTTP API, as a client would.
    async fn place(&mut self, sku: &str, qty: i64, coupon: &str, mode: Mode) -> Result<Placed, Error> {
        let placed = place(&self.http, &self.order_url, sku, qty, coupon, mode).await?;
        self.gids.push(placed.order_id.clone());
        Ok(placed)
    }

    /// Waits until `gid` is finished (succeeded or failed, no round running); its `query`.
    async fn settle(&self, gid: &str) -> Result<Value, Error> {
        settle(&self.dtx, gid).await
    }

    async fn stock_of(&self, sku: &str) -> Result<Stock, Error> {
        InventoryService::all(&self.inventory_db)
            .await?
            .into_iter()
            .find(|s| s.sku == sku)
            .ok_or_else(|| Error::Runner(format!("no stock row {sku}")))
    }

    async fn coupon_of(&self, code: &str) -> Result<coupon::Coupon, Error> {
        coupon::all(&self.coupon_db)
            .await?
            .into_iter()
            .find(|c| c.code == code)
            .ok_or_else(|| Error::Runner(format!("no coupon {code}")))
    }

    async fn order_status(&self, id: &str) -> Result<String, Error> {
        order::all(&self.order_db)
            .await?
            .into_iter()
            .find(|o| o.id == id)
            .map(|o| o.status)
            .ok_or_else(|| Error::Runner(format!("no order {id}")))
    }

    async fn shipments_of(&self, id: &str) -> Result<i64, Error> {
        Ok(order::shipments(&self.order_db)
            .await?
            .into_iter()
            .find(|(o, _)| o == id)
            .map(|(_, n)| n)
            .unwrap_or(0))
    }

    /// A URL as a service name.
    fn short(&self, url: &str) -> String {
        let inv = self.inventory_addr.to_string();
        if url.is_empty() {
            "(no compensation: the pivot)".to_owned()
        } else if let Some(rest) = url.strip_prefix(&self.order_url) {
            format!("order {rest}")
        } else if let Some(rest) = url.strip_prefix(&self.coupon_url) {
            format!("coupon {rest}")
        } else if let Some(rest) = url.strip_prefix(&inv) {
            format!("inventory gRPC {rest}")
        } else {
            url.to_owned()
        }
    }

    /// The branch timeline from dtx's `query` and the calls as the services saw them.
    fn timeline(&self, r: &mut ScenarioReport, label: &str, q: &Value) {
        let t = &q["transaction"];
        let reason = t["rollback_reason"].as_str().map(|s| format!(" ({s})")).unwrap_or_default();
        r.note(format!(
            "{label}: {} {} {}{reason}",
            t["trans_type"].as_str().unwrap_or("?"),
            t["gid"].as_str().unwrap_or("?"),
            t["status"].as_str().unwrap_or("?"),
        ));
        r.note("  branches (dtx query, by finish time):");
        for b in sorted_branches(q) {
            r.note(format!(
                "    {:<12} {} {:<10} {:<9} attempts={} {}",
                b["finish_time"].as_str().map(|t| t.get(11..23).unwrap_or(t)).unwrap_or("-"),
                b["branch_id"].as_str().unwrap_or("?"),
                b["op"].as_str().unwrap_or("?"),
                b["status"].as_str().unwrap_or("?"),
                b["attempts"],
                self.short(b["url"].as_str().unwrap_or("")),
            ));
        }
        r.note("  calls (as the services handled them):");
        for e in self.hooks.journal.of(t["gid"].as_str().unwrap_or_default()) {
            r.note(format!("    #{:<5} {:<18} {} {:<10} {}", e.seq, e.step, e.branch_id, e.op, e.outcome));
        }
    }

    /// Common checks of a confirmed saga order: confirmed, stock taken once, coupon used,
    /// shipping notified once and after every other branch.
    async fn check_confirmed(
        &self,
        r: &mut ScenarioReport,
        q: &Value,
        id: &str,
        sku: &str,
        coupon: &str,
        expect: (i64, i64),
    ) -> Result<(), Error> {
        r.expect_eq("dtx: transaction status", status(q), "succeed".into());
        r.expect_eq("order db: order status", self.order_status(id).await?, "confirmed".into());
        let s = self.stock_of(sku).await?;
        r.expect_eq(
            "inventory db: (available, reserved, frozen)",
            (s.available, s.reserved, s.frozen),
            (expect.0, expect.1, 0),
        );
        let c = self.coupon_of(coupon).await?;
        r.expect_eq(
            "coupon db: coupon (status, order)",
            (c.status, c.order_id),
            ("used".into(), id.to_owned()),
        );
        r.expect_eq("order db: shipping notifications", self.shipments_of(id).await?, 1);
        let events = self.hooks.journal.of(id);
        check_shipping_last(r, q, &events);
        Ok(())
    }
}

/// Places an order through the order service's HTTP API.
async fn place(
    http: &reqwest::Client,
    order_url: &str,
    sku: &str,
    qty: i64,
    coupon: &str,
    mode: Mode,
) -> Result<Placed, Error> {
    let body = PlaceOrder { sku: sku.to_owned(), qty, coupon: coupon.to_owned(), mode };
    let resp = http.post(format!("{order_url}/api/orders")).json(&body).send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        return Err(Error::Runner(format!("POST /api/orders answered {status}: {text}")));
    }
    serde_json::from_str(&text).map_err(|e| Error::Runner(format!("POST /api/orders answered {text}: {e}")))
}

/// Waits until `gid` is finished (succeeded or failed, no round running); its `query`.
async fn settle(dtx: &Client, gid: &str) -> Result<Value, Error> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let q = dtx.query(gid).await?;
        if let Some(q) = &q {
            let t = &q["transaction"];
            if matches!(t["status"].as_str(), Some("succeed" | "failed")) && t.get("owner").is_none() {
                return Ok(q.clone());
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Runner(format!(
                "{gid} did not finish within {SETTLE_TIMEOUT:?}; last query: {}",
                q.unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(q: &Value) -> String {
    q["transaction"]["status"].as_str().unwrap_or_default().to_owned()
}

/// Branches ordered by finish time (unfinished last), then by row id.
fn sorted_branches(q: &Value) -> Vec<&Value> {
    let mut bs: Vec<&Value> = q["branches"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    bs.sort_by_key(|b| (b["finish_time"].as_str().unwrap_or("~").to_owned(), b["id"].as_i64().unwrap_or(0)));
    bs
}

/// The branch whose URL ends with `suffix` and whose op is `op`.
fn branch<'a>(q: &'a Value, suffix: &str, op: &str) -> Option<&'a Value> {
    q["branches"]
        .as_array()?
        .iter()
        .find(|b| b["op"] == op && b["url"].as_str().is_some_and(|u| u.ends_with(suffix)))
}

/// Shipping was notified exactly once, after every other branch call (the services' journal)
/// and finished last among the actions (dtx's timeline).
fn check_shipping_last(r: &mut ScenarioReport, q: &Value, events: &[Event]) {
    let ship: Vec<&Event> = events.iter().filter(|e| e.step == "shipping.notify").collect();
    r.expect_eq("journal: shipping notify calls that ran", ship.iter().filter(|e| e.ran()).count(), 1);
    let last_other = events.iter().filter(|e| e.step != "shipping.notify").map(|e| e.seq).max().unwrap_or(0);
    let first_ship = ship.iter().map(|e| e.seq).min().unwrap_or(0);
    r.check(
        "journal: shipping called after every other branch call",
        first_ship > last_other,
        format!("shipping call #{first_ship}, last other call #{last_other}"),
    );
    let finish = |b: &Value| b["finish_time"].as_str().unwrap_or_default().to_owned();
    let ship_done = branch(q, "/api/shipping/notify", "action").map(finish).unwrap_or_default();
    let others_done = q["branches"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|b| {
                    b["op"] == "action" && !b["url"].as_str().unwrap_or("").ends_with("/api/shipping/notify")
                })
                .map(finish)
                .max()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    r.check(
        "dtx timeline: shipping (listed first) finished after every other action",
        !ship_done.is_empty() && ship_done >= others_done,
        format!("shipping {ship_done}, other actions by {others_done}"),
    );
}

async fn happy_path(env: &mut Env, _c: &Config, r: &mut ScenarioReport) -> Result<(), Error> {
    let sku = env.stock("lamp", 10).await?;
    let coupon = env.coupon("welcome").await?;
    let placed = env.place(&sku, 2, &coupon, Mode::Saga).await?;
    r.expect_eq("order service: first round outcome", placed.outcome.as_str(), "succeeded");
    let q = env.settle(&placed.order_id).await?;
    env.check_confirmed(r, &q, &placed.order_id, &sku, &coupon, (8, 2)).await?;
    env.timeline(r, "saga", &q);
    Ok(())
}

async fn coupon_used(env: &mut Env, _c: &Config, r: &mut ScenarioReport) -> Result<(), Error> {
    let sku = env.stock("desk", 10).await?;
    let coupon = env.key("spent").to_uppercase();
    coupon::seed_used(&env.coupon_db, &coupon).await?;
    let placed = env.place(&sku, 1, &coupon, Mode::Saga).await?;
    r.expect_eq("order service: first round outcome", placed.outcome.as_str(), "failed");
    let q = env.settle(&placed.order_id).await?;
    let id = &placed.order_id;
    r.expect_eq("dtx: transaction status", status(&q), "failed".into());
    r.expect_eq("order db: order status", env.order_status(id).await?, "cancelled".into());
    let s = env.stock_of(&sku).await?;
    r.expect_eq(
        "inventory db: stock released (available, reserved, frozen)",
        (s.available, s.reserved, s.frozen),
        (10, 0, 0),
    );
    let c = env.coupon_of(&coupon).await?;
    r.expect_eq(
        "coupon db: coupon untouched (status, order)",
        (c.status, c.order_id),
        ("used".into(), "someone-else".into()),
    );
    r.expect_eq("order db: shipping notifications", env.shipments_of(id).await?, 0);
    let events = env.hooks.journal.of(id);
    r.expect_eq("journal: shipping calls", events.iter().filter(|e| e.step == "shipping.notify").count(), 0);
    r.expect_eq(
        "journal: inventory releases that ran",
        events.iter().filter(|e| e.step == "inventory.release" && e.ran()).count(),
        1,
    );
    env.timeline(r, "saga", &q);
    Ok(())
}

async fn out_of_stock(env: &mut Env, _c: &Config, r: &mut ScenarioReport) -> Result<(), Error> {
    let sku = env.stock("sofa", 1).await?;
    let coupon = env.coupon("sofa").await?;
    let placed = env.place(&sku, 3, &coupon, Mode::Saga).await?;
    r.expect_eq("order service: first round outcome", placed.outcome.as_str(), "failed");
    let q = env.settle(&placed.order_id).await?;
    let id = &placed.order_id;
    r.expect_eq("dtx: transaction status", status(&q), "failed".into());
    r.expect_eq("order db: order status", env.order_status(id).await?, "cancelled".into());
    let s = env.stock_of(&sku).await?;
    r.expect_eq(
        "inventory db: nothing reserved (available, reserved, frozen)",
        (s.available, s.reserved, s.frozen),
        (1, 0, 0),
    );
    let c = env.coupon_of(&coupon).await?;
    r.expect_eq("coupon db: coupon still available", c.status, "available".into());
    r.expect_eq("order db: shipping notifications", env.shipments_of(id).await?, 0);
    let events = env.hooks.journal.of(id);
    r.expect_eq(
        "journal: coupon calls (never reached)",
        events.iter().filter(|e| e.step.starts_with("coupon.")).count(),
        0,
    );
    env.timeline(r, "saga", &q);
    Ok(())
}

async fn outage(env: &mut Env, c: &Config, r: &mut ScenarioReport) -> Result<(), Error> {
    let sku = env.stock("chair", 10).await?;
    let coupon = env.coupon("chair").await?;
    if let Some(inv) = env.inventory.take() {
        inv.stop().await;
    }
    r.note(format!("inventory stopped ({})", env.inventory_addr));
    let placed = env.place(&sku, 4, &coupon, Mode::Saga).await?;
    let id = placed.order_id.clone();
    r.expect_eq(
        "order service: first round outcome (inventory unreachable)",
        placed.outcome.as_str(),
        "ongoing",
    );
    // Mid-saga: the order step is done, the inventory step keeps failing while it is down.
    tokio::time::sleep(c.outage).await;
    let q = env.dtx.query(&id).await?.unwrap_or_default();
    let order_step =
        branch(&q, "/api/order/confirm", "action").map(|b| b["status"].clone()).unwrap_or_default();
    let inv = branch(&q, "/Reserve", "action").cloned().unwrap_or_default();
    r.check(
        "while down: order step succeeded, inventory step retried, saga unfinished",
        order_step == "succeed"
            && inv["status"] == "prepared"
            && inv["attempts"].as_u64().unwrap_or(0) >= 2
            && status(&q) == "submitted",
        format!(
            "order step {order_step}, inventory {} after {} attempts, saga {}",
            inv["status"],
            inv["attempts"],
            status(&q)
        ),
    );
    let listener = rebind(env.inventory_addr).await?;
    let service = InventoryService::new(env.inventory_db.clone(), env.hooks.clone()).await?;
    env.inventory = Some(serve::grpc(listener, service.into_server())?);
    r.note(format!("inventory started again on {} after {:?}", env.inventory_addr, c.outage));
    let q = env.settle(&id).await?;
    env.check_confirmed(r, &q, &id, &sku, &coupon, (6, 4)).await?;
    env.timeline(r, "saga", &q);
    Ok(())
}

async fn duplicate(env: &mut Env, _c: &Config, r: &mut ScenarioReport) -> Result<(), Error> {
    let sku = env.stock("shelf", 10).await?;
    let coupon = env.coupon("shelf").await?;
    env.hooks.faults.arm("inventory.reserve", &sku);
    env.hooks.faults.arm("coupon.use", &coupon);
    r.note("armed: inventory Reserve and coupon use commit, then answer an error once");
    let placed = env.place(&sku, 3, &coupon, Mode::Saga).await?;
    let id = placed.order_id.clone();
    let q = env.settle(&id).await?;
    env.check_confirmed(r, &q, &id, &sku, &coupon, (7, 3)).await?;
    let events = env.hooks.journal.of(&id);
    for step in ["inventory.reserve", "coupon.use"] {
        let calls: Vec<&Event> = events.iter().filter(|e| e.step == step).collect();
        let ran = calls.iter().filter(|e| e.ran()).count();
        r.check(
            format!("journal: {step} delivered twice or more, business ran once"),
            calls.len() >= 2 && ran == 1,
            format!("{} calls, {ran} ran", calls.len()),
        );
    }
    env.timeline(r, "saga", &q);
    Ok(())
}

async fn tcc(env: &mut Env, _c: &Config, r: &mut ScenarioReport) -> Result<(), Error> {
    // Confirm path.
    let sku = env.stock("bed", 5).await?;
    let coupon = env.coupon("bed").await?;
    let placed = env.place(&sku, 2, &coupon, Mode::Tcc).await?;
    let id = placed.order_id.clone();
    r.expect_eq("confirm path: first round outcome", placed.outcome.as_str(), "succeeded");
    let q = env.settle(&id).await?;
    r.expect_eq("confirm path: dtx status", status(&q), "succeed".into());
    r.expect_eq("confirm path: order db status", env.order_status(&id).await?, "confirmed".into());
    let s = env.stock_of(&sku).await?;
    r.expect_eq(
        "confirm path: inventory (available, reserved, frozen)",
        (s.available, s.reserved, s.frozen),
        (3, 2, 0),
    );
    let c = env.coupon_of(&coupon).await?;
    r.expect_eq("confirm path: coupon (status, order)", (c.status, c.order_id), ("used".into(), id.clone()));
    let confirms = env.hooks.journal.of(&id).iter().filter(|e| e.op == "confirm" && e.ran()).count();
    r.expect_eq("confirm path: confirms that ran", confirms, 3);
    env.timeline(r, "TCC confirm", &q);

    // Cancel path: the coupon's try succeeds, the inventory's try refuses (1 left, 3 wanted).
    let sku = env.stock("lamp-tcc", 1).await?;
    let coupon = env.coupon("lamp-tcc").await?;
    let placed = env.place(&sku, 3, &coupon, Mode::Tcc).await?;
    let id = placed.order_id.clone();
    r.expect_eq("cancel path: first round outcome", placed.outcome.as_str(), "failed");
    let q = env.settle(&id).await?;
    r.expect_eq("cancel path: dtx status", status(&q), "failed".into());
    r.expect_eq("cancel path: order db status", env.order_status(&id).await?, "cancelled".into());
    let s = env.stock_of(&sku).await?;
    r.expect_eq(
        "cancel path: inventory (available, reserved, frozen)",
        (s.available, s.reserved, s.frozen),
        (1, 0, 0),
    );
    let c = env.coupon_of(&coupon).await?;
    r.expect_eq("cancel path: coupon reserved by the try, released by cancel", c.status, "available".into());
    let events = env.hooks.journal.of(&id);
    let cancelled = |step: &str| events.iter().any(|e| e.step == step && e.ran());
    r.check(
        "cancel path: coupon cancel ran, inventory cancel skipped (its try never took effect)",
        cancelled("coupon.cancel") && !cancelled("inventory.cancel"),
        format!(
            "coupon.cancel ran: {}, inventory.cancel ran: {}",
            cancelled("coupon.cancel"),
            cancelled("inventory.cancel")
        ),
    );
    env.timeline(r, "TCC cancel", &q);
    Ok(())
}

async fn concurrent(env: &mut Env, c: &Config, r: &mut ScenarioReport) -> Result<(), Error> {
    let n = c.concurrent_orders;
    let stock = c.bulk_stock;
    let sku = env.stock("gadget", stock).await?;
    let mut coupons = Vec::with_capacity(n);
    for i in 0..n {
        coupons.push(env.coupon(&format!("bulk-{i:03}")).await?);
    }
    let started = Instant::now();
    let placed = futures::future::join_all(
        coupons.iter().map(|code| place(&env.http, &env.order_url, &sku, 1, code, Mode::Saga)),
    )
    .await;
    let placed: Vec<Placed> = placed.into_iter().collect::<Result<_, _>>()?;
    let ids: Vec<String> = placed.iter().map(|p| p.order_id.clone()).collect();
    let queries = futures::future::join_all(ids.iter().map(|id| settle(&env.dtx, id))).await;
    let queries: Vec<Value> = queries.into_iter().collect::<Result<_, _>>()?;
    r.note(format!("{n} orders placed at once and settled in {} ms", started.elapsed().as_millis()));
    env.gids.extend(ids.iter().cloned());

    let orders: Vec<order::Order> =
        order::all(&env.order_db).await?.into_iter().filter(|o| o.sku == sku).collect();
    let count = |st: &str| orders.iter().filter(|o| o.status == st).count();
    let confirmed: Vec<&order::Order> = orders.iter().filter(|o| o.status == "confirmed").collect();
    let expected = usize::try_from(stock).unwrap_or(0).min(n);
    r.expect_eq(
        "order db: (confirmed, cancelled, pending)",
        (count("confirmed"), count("cancelled"), count("pending")),
        (expected, n - expected, 0),
    );
    let succeeded = queries.iter().filter(|q| status(q) == "succeed").count();
    r.expect_eq("dtx: succeeded sagas", succeeded, expected);
    let s = env.stock_of(&sku).await?;
    let sold: i64 = confirmed.iter().map(|o| o.qty).sum();
    r.check("inventory db: no oversell (available >= 0)", s.available >= 0, s.available);
    r.expect_eq("inventory db: available + reserved = initial", s.available + s.reserved, stock);
    r.expect_eq("inventory db: reserved = quantity of confirmed orders", s.reserved, sold);
    r.expect_eq("inventory db: frozen", s.frozen, 0);
    let all_coupons = coupon::all(&env.coupon_db).await?;
    let used: Vec<&coupon::Coupon> =
        all_coupons.iter().filter(|c| coupons.contains(&c.code) && c.status == "used").collect();
    let every_used_once = used
        .iter()
        .all(|c| confirmed.iter().filter(|o| o.coupon == c.code && o.id == c.order_id).count() == 1);
    r.check(
        "coupon db: every used coupon is held by exactly one confirmed order, and vice versa",
        every_used_once && used.len() == confirmed.len(),
        format!("{} used, {} confirmed orders", used.len(), confirmed.len()),
    );
    let shipments = order::shipments(&env.order_db).await?;
    let shipped_ok = confirmed.iter().all(|o| shipments.iter().any(|(id, k)| id == &o.id && *k == 1))
        && shipments.iter().filter(|(id, _)| ids.contains(id)).count() == confirmed.len();
    r.check(
        "order db: one shipping notification per confirmed order, none for cancelled ones",
        shipped_ok,
        format!("{} notified", confirmed.len()),
    );
    if let Some(q) = queries.iter().find(|q| status(q) == "succeed") {
        env.timeline(r, "one confirmed order", q);
    }
    if let Some(q) = queries.iter().find(|q| status(q) == "failed") {
        env.timeline(r, "one cancelled order", q);
    }
    Ok(())
}

impl Env {
    /// The final stock, coupons and orders of this run.
    async fn final_state(&self) -> Result<Vec<String>, Error> {
        let mut out = vec!["stock (inventory db):".to_owned()];
        for s in InventoryService::all(&self.inventory_db)
            .await?
            .into_iter()
            .filter(|s| s.sku.starts_with(&self.tag))
        {
            out.push(format!(
                "  {:<16} available={:<3} reserved={:<3} frozen={}",
                s.sku, s.available, s.reserved, s.frozen
            ));
        }
        out.push("coupons (coupon db):".to_owned());
        let prefix = self.tag.to_uppercase();
        let bulk = format!("{prefix}-BULK-");
        let coupons: Vec<coupon::Coupon> =
            coupon::all(&self.coupon_db).await?.into_iter().filter(|c| c.code.starts_with(&prefix)).collect();
        for c in coupons.iter().filter(|c| !c.code.starts_with(&bulk)) {
            out.push(format!("  {:<16} {:<9} {}", c.code, c.status, c.order_id));
        }
        let bulk_used = coupons.iter().filter(|c| c.code.starts_with(&bulk) && c.status == "used").count();
        let bulk_all = coupons.iter().filter(|c| c.code.starts_with(&bulk)).count();
        out.push(format!("  {bulk}*: {bulk_used} of {bulk_all} used"));
        out.push("orders (order db):".to_owned());
        let mut orders: Vec<order::Order> =
            order::all(&self.order_db).await?.into_iter().filter(|o| self.gids.contains(&o.id)).collect();
        orders.sort_by_key(|o| self.gids.iter().position(|g| g == &o.id));
        let gadget = self.key("gadget");
        for o in orders.iter().filter(|o| o.sku != gadget) {
            out.push(format!(
                "  {} {:<4} {:<16} x{} {:<16} {}",
                o.id, o.mode, o.sku, o.qty, o.coupon, o.status
            ));
        }
        let bulk: Vec<&order::Order> = orders.iter().filter(|o| o.sku == gadget).collect();
        let by = |st: &str| bulk.iter().filter(|o| o.status == st).count();
        out.push(format!(
            "  {} orders of {gadget}: {} confirmed, {} cancelled, {} pending",
            bulk.len(),
            by("confirmed"),
            by("cancelled"),
            by("pending")
        ));
        Ok(out)
    }
}

/// A loopback listener on a port below the kernel's ephemeral range, so that while the service
/// is stopped no outgoing connection of this or another process can be given its port (with
/// port 0 the port comes from that range, and a busy machine reuses it quickly).
async fn restartable_listener() -> Result<TcpListener, Error> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let first_ephemeral: u32 = range.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(32768);
    let (lo, hi) = (10_000u32, first_ephemeral.min(65_535));
    if hi > lo + 100 {
        // A spread-out start, so parallel runs do not all try the same ports first.
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        for k in 0..200u32 {
            let port = lo + (seed.wrapping_add(k.wrapping_mul(7919))) % (hi - lo);
            let Ok(port) = u16::try_from(port) else { continue };
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
                return Ok(l);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0").await?)
}

/// Binds `addr` again, retrying for a few seconds while the old socket's port is still held.
async fn rebind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
