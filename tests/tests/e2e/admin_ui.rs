//! The admin web UI in a real headless Chromium (Debian's `chromium` + `chromium-driver`),
//! driven over WebDriver (fantoccini) against an in-process dtx with an admin token: ask for the
//! token, list, filter, open a detail, press "Retry now", see the status change. Screenshots go
//! to `target/tmp/admin-ui/` (the path is printed). Without chromedriver the browser test
//! prints SKIPPED, except under `CI=true`, where it fails (`.ci/run` installs it).
//!
//! Also: the admin token guards the admin calls over plain HTTP (401, nothing changed).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dtx_tests::{Participant, Reply, Saga, TestServer, eventually, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const TOKEN: &str = "ui-test-token-123";

fn chromedriver() -> Option<PathBuf> {
    let found = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromedriver is missing under CI=true: install Debian's chromium and chromium-driver (.ci/run does)"
        );
        eprintln!(
            "SKIPPED the admin UI browser test: no chromedriver (apt-get install chromium chromium-driver)"
        );
    }
    found
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: tokio::process::Child,
    port: u16,
}

impl Driver {
    async fn start(bin: &Path) -> Driver {
        let port = free_port();
        let child = tokio::process::Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let d = Driver { child, port };
        eventually(Duration::from_secs(10), "chromedriver to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", d.port)).await.ok().map(|_| ())
        })
        .await;
        d
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut options = json!({"args": args});
    if Path::new("/usr/bin/chromium").is_file() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

struct Shots {
    dir: PathBuf,
    n: usize,
}

impl Shots {
    async fn take(&mut self, c: &Client, name: &str) {
        self.n += 1;
        let png = c.screenshot().await.expect("screenshot");
        let path = self.dir.join(format!("{:02}-{name}.png", self.n));
        std::fs::write(&path, png).expect("save the screenshot");
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.expect(css).text().await.expect("text")
}

/// The gids of the list's rows.
async fn rows(c: &Client) -> Vec<String> {
    let mut gids = Vec::new();
    for row in c.find_all(Locator::Css("tr.tx-row")).await.expect("rows") {
        gids.push(row.attr("data-gid").await.expect("attr").unwrap_or_default());
    }
    gids
}

fn saga(p: &Participant, gid: &str, action: &str) -> serde_json::Value {
    Saga::new(gid).step(p.url(action), p.url("/Undo"), "{}").json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_ui_lists_filters_shows_and_retries_in_a_real_browser() {
    let Some(bin) = chromedriver() else {
        return;
    };
    // The scheduler is stepped by the test (`cron`): time is the test's.
    let s = TestServer::spawn(|c| c.admin_token = Some(TOKEN.into())).await;
    let p = Participant::spawn().await;
    p.script("/Flaky", [Reply::error()]);
    for (gid, action) in [("ui-stuck", "/Flaky"), ("ui-done", "/Ok"), ("other-done", "/Ok")] {
        let (code, reply) = s.submit(&saga(&p, gid, action)).await;
        assert_eq!(code, 200, "{reply}");
    }
    s.wait_status("ui-done", "succeed").await;
    s.wait_status("other-done", "succeed").await;
    // The engine's clock is frozen: ui-stuck waits for its retry until someone says "now".
    let stuck = s.wait_idle("ui-stuck").await;
    assert_eq!(stuck["transaction"]["status"], "submitted", "{stuck}");

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-ui");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let mut shots = Shots { dir: dir.clone(), n: 0 };
    let profile = tempfile::tempdir().expect("profile dir");
    let driver = Driver::start(&bin).await;
    let c = browser(&driver, profile.path()).await;
    let result = async {
        c.goto(&format!("{}/admin", s.root_url())).await.expect("open /admin");
        // The admin calls answer 401: the UI asks for the token once.
        let input = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#token-input"))
            .await
            .expect("token form");
        shots.take(&c, "token").await;
        input.send_keys(TOKEN).await.expect("type the token");
        c.find(Locator::Css("#token-save")).await.expect("save").click().await.expect("click save");
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("tr.tx-row"))
            .await
            .expect("the list");
        let mut all = rows(&c).await;
        all.sort();
        assert_eq!(all, ["other-done", "ui-done", "ui-stuck"]);
        let counts = text(&c, "#counts").await;
        assert!(counts.contains("succeed 2") && counts.contains("submitted 1"), "{counts}");
        shots.take(&c, "list").await;

        // Filter: gid prefix "ui-" and status submitted.
        c.find(Locator::Css("#filter-gid")).await.expect("gid").send_keys("ui-").await.expect("type");
        c.find(Locator::Css("#filter-status"))
            .await
            .expect("status")
            .select_by_value("submitted")
            .await
            .expect("select");
        c.find(Locator::Css("#apply")).await.expect("apply").click().await.expect("click");
        eventually(Duration::from_secs(10), "the filtered list", || async {
            (rows(&c).await == ["ui-stuck"]).then_some(())
        })
        .await;
        shots.take(&c, "filtered").await;

        // Detail.
        c.find(Locator::Css("tr.tx-row[data-gid='ui-stuck'] a"))
            .await
            .expect("row")
            .click()
            .await
            .expect("open");
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#detail-status"))
            .await
            .expect("detail");
        assert_eq!(text(&c, "#detail-status").await, "submitted");
        let branches = text(&c, "#branches").await;
        assert!(
            branches.contains("/Flaky") && branches.contains("500"),
            "attempts, last error and URL: {branches}"
        );
        assert!(text(&c, "#saga-graph").await.contains("step 01"));
        assert!(text(&c, "#raw-json").await.contains("\"gid\": \"ui-stuck\""));
        shots.take(&c, "detail").await;

        // Retry now: due at once, the scheduler's next pass retries, the participant answers OK.
        c.find(Locator::Css("#retry-now")).await.expect("retry").click().await.expect("click retry");
        eventually(Duration::from_secs(15), "the status to change to succeed", || async {
            s.cron().await;
            let _ = c.find(Locator::Css("#refresh")).await.ok()?.click().await;
            tokio::time::sleep(Duration::from_millis(150)).await;
            let status = c.find(Locator::Css("#detail-status")).await.ok()?.text().await.ok()?;
            (status == "succeed").then_some(())
        })
        .await;
        shots.take(&c, "retried").await;
    }
    .await;
    c.close().await.expect("close the browser");
    let () = result;
    assert_eq!(p.calls_for("/Flaky").len(), 2, "one failed call, one retry");
    eprintln!("admin UI screenshots: {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_the_admin_calls_and_nothing_changes_without_it() {
    let s = TestServer::spawn(|c| c.admin_token = Some(TOKEN.into())).await;
    let p = Participant::spawn().await;
    p.script("/Slow", [Reply::ongoing()]);
    s.submit(&saga(&p, "guarded", "/Slow")).await;
    s.wait_idle("guarded").await;
    let root = s.root_url().to_owned();
    let http = s.http();
    let stop = |token: Option<&str>| {
        let mut req = http.post(format!("{root}/api/dtmsvr/forceStop")).json(&json!({"gid": "guarded"}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.expect("forceStop").status().as_u16() }
    };
    assert_eq!(stop(None).await, 401);
    assert_eq!(stop(Some("wrong-token-123")).await, 401);
    assert_eq!(s.status("guarded").await, "submitted", "nothing changed");
    for path in ["/api/dtmsvr/all", "/api/dtmsvr/scanKV?cat=topics", "/api/admin/counts"] {
        let code = http.get(format!("{root}{path}")).send().await.expect("GET").status().as_u16();
        assert_eq!(code, 401, "{path}");
    }
    let code =
        http.delete(format!("{root}/api/dtmsvr/topic/t")).send().await.expect("DELETE").status().as_u16();
    assert_eq!(code, 401);
    // Not admin calls: the SDKs' own, the UI's page.
    assert_eq!(
        http.get(format!("{root}/api/dtmsvr/query?gid=guarded")).send().await.expect("q").status(),
        200
    );
    assert_eq!(http.get(format!("{root}/admin")).send().await.expect("ui").status(), 200);
    let counts: serde_json::Value = http
        .get(format!("{root}/api/admin/counts"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("counts")
        .json()
        .await
        .expect("json");
    assert_eq!(counts["counts"]["submitted"], 1, "{counts}");
    assert_eq!(stop(Some(TOKEN)).await, 200);
    assert_eq!(s.status("guarded").await, "failed");
}
