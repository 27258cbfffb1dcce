//! `order-saga`: runs the example's scenarios (the default), or one of its services alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use order_saga::coordinator::Endpoints;
use order_saga::db::Db;
use order_saga::inventory::InventoryService;
use order_saga::order::OrderConfig;
use order_saga::{Config, Hooks, coupon, order, run_scenarios, serve};
use tokio::net::TcpListener;

/// The order / inventory / coupon example of dtx.
#[derive(Debug, Parser)]
#[command(name = "order-saga", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start dtx (unless --dtx) and the three services, run the scenarios, print the report
    /// (the default). Exits with 1 if any scenario fails.
    Run(RunArgs),
    /// Run the order service alone (HTTP: POST /api/orders, and its branches).
    Order(OrderArgs),
    /// Run the inventory service alone (gRPC: inventory.Inventory).
    Inventory(InventoryArgs),
    /// Run the coupon service alone (HTTP branches).
    Coupon(CouponArgs),
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// A running dtx's HTTP address (http://host:36789); default: start one in this process
    /// with a temporary SQLite store.
    #[arg(long)]
    dtx: Option<String>,
    /// That dtx's gRPC address (default: the --dtx host, port 36790).
    #[arg(long)]
    dtx_grpc: Option<String>,
    /// PostgreSQL for the three services (each in a schema of its own); default: one SQLite
    /// file each.
    #[arg(long)]
    database_url: Option<String>,
    /// Directory for the SQLite files (default: a temporary directory, removed at the end).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Orders placed at once in scenario 7.
    #[arg(long, default_value_t = 200)]
    orders: usize,
    /// Stock they compete for in scenario 7.
    #[arg(long, default_value_t = 50)]
    stock: i64,
}

#[derive(Debug, Clone, Args)]
struct OrderArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// The order database: sqlite://order.db or postgres://...
    #[arg(long, default_value = "sqlite://order.db")]
    database_url: String,
    /// dtx's gRPC address.
    #[arg(long, default_value = "127.0.0.1:36790")]
    dtx_grpc: String,
    /// This service's URL as dtx reaches it (default: http://<listen>).
    #[arg(long)]
    public_url: Option<String>,
    /// The inventory service (gRPC host:port).
    #[arg(long, default_value = "127.0.0.1:8082")]
    inventory: String,
    /// The coupon service's URL.
    #[arg(long, default_value = "http://127.0.0.1:8083")]
    coupon_url: String,
    /// The transactions' retry interval (seconds; default: the coordinator's).
    #[arg(long)]
    retry_interval: Option<u64>,
}

#[derive(Debug, Clone, Args)]
struct InventoryArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    /// The inventory database: sqlite://inventory.db or postgres://...
    #[arg(long, default_value = "sqlite://inventory.db")]
    database_url: String,
    /// Set the stock of a SKU at start (repeatable): --stock lamp=10
    #[arg(long, value_parser = parse_stock)]
    stock: Vec<(String, i64)>,
}

#[derive(Debug, Clone, Args)]
struct CouponArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8083")]
    listen: SocketAddr,
    /// The coupon database: sqlite://coupon.db or postgres://...
    #[arg(long, default_value = "sqlite://coupon.db")]
    database_url: String,
    /// Create (or reset) an available coupon at start (repeatable).
    #[arg(long)]
    coupon: Vec<String>,
}

fn parse_stock(v: &str) -> Result<(String, i64), String> {
    let (sku, qty) = v.split_once('=').ok_or("expected SKU=QTY")?;
    let qty = qty.parse().map_err(|e| format!("{qty}: {e}"))?;
    Ok((sku.to_owned(), qty))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,order_saga=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let result = match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Order(args)) => order_service(args).await.map(|()| ExitCode::SUCCESS),
        Some(Command::Inventory(args)) => inventory_service(args).await.map(|()| ExitCode::SUCCESS),
        Some(Command::Coupon(args)) => coupon_service(args).await.map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("order-saga: {e:#}");
        ExitCode::from(2)
    })
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let dtx = match &args.dtx {
        Some(url) => Some(Endpoints::external(url, args.dtx_grpc.as_deref())?),
        None => None,
    };
    let config = Config {
        dtx,
        postgres_url: args.database_url,
        data_dir: args.data_dir,
        concurrent_orders: args.orders,
        bulk_stock: args.stock,
        ..Config::default()
    };
    let report = run_scenarios(config).await.context("starting the example")?;
    print!("{}", report.render());
    Ok(if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn order_service(args: OrderArgs) -> anyhow::Result<()> {
    let db = Db::connect(&args.database_url, None).await?;
    let listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let config = OrderConfig {
        dtx_grpc: args.dtx_grpc,
        public_url: args.public_url.unwrap_or_else(|| format!("http://{}", args.listen)),
        inventory: args.inventory,
        coupon_url: args.coupon_url.trim_end_matches('/').to_owned(),
        retry_interval: args.retry_interval.map(Duration::from_secs),
    };
    let running = serve::http(listener, order::router(db, Hooks::default(), config).await?)?;
    tracing::info!(addr = %running.addr(), "order service listening");
    wait_and_stop(running).await
}

async fn inventory_service(args: InventoryArgs) -> anyhow::Result<()> {
    let db = Db::connect(&args.database_url, None).await?;
    let service = InventoryService::new(db.clone(), Hooks::default()).await?;
    for (sku, qty) in &args.stock {
        InventoryService::seed(&db, sku, *qty).await?;
    }
    let listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let running = serve::grpc(listener, service.into_server())?;
    tracing::info!(addr = %running.addr(), "inventory service listening (gRPC)");
    wait_and_stop(running).await
}

async fn coupon_service(args: CouponArgs) -> anyhow::Result<()> {
    let db = Db::connect(&args.database_url, None).await?;
    let router = coupon::router(db.clone(), Hooks::default()).await?;
    for code in &args.coupon {
        coupon::seed(&db, code).await?;
    }
    let listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let running = serve::http(listener, router)?;
    tracing::info!(addr = %running.addr(), "coupon service listening");
    wait_and_stop(running).await
}

async fn wait_and_stop(running: serve::Running) -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    running.stop().await;
    Ok(())
}
