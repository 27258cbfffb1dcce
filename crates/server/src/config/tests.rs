use super::*;

#[test]
fn defaults_follow_dtm() {
    let c = Config::default();
    assert_eq!(c.database_url.expose(), "sqlite://dtx.db");
    assert_eq!(c.http_listen.port(), 36789);
    assert_eq!(c.grpc_listen.port(), 36790);
    assert_eq!(c.engine.retry.retry_interval, Duration::from_secs(10));
    assert_eq!(c.engine.request_timeout, Duration::from_secs(3));
    assert_eq!(c.engine.timeout_to_fail, Duration::from_secs(35));
}

#[test]
fn one_source_of_defaults() {
    // The engine's defaults are the configuration's defaults.
    let (c, e) = (Config::default(), EngineOptions::default());
    assert_eq!(c.engine.retry, e.retry);
    assert_eq!(
        (c.engine.request_timeout, c.engine.timeout_to_fail, c.engine.lease, c.engine.poll_interval),
        (e.request_timeout, e.timeout_to_fail, e.lease, e.poll_interval)
    );
    assert_eq!(
        (c.engine.claim_batch, c.engine.max_concurrent_rounds, c.engine.max_steps),
        (e.claim_batch, e.max_concurrent_rounds, e.max_steps)
    );
    assert_eq!(c.engine.health, e.health);
    assert_eq!(c.engine.limits, e.limits);
    assert_eq!(
        (c.engine.max_outbound_calls, c.engine.max_outbound_calls_per_host, c.engine.grpc_channel_cache),
        (e.max_outbound_calls, e.max_outbound_calls_per_host, e.grpc_channel_cache)
    );
    assert_eq!((c.engine.shed_after, c.engine.shutdown_grace), (e.shed_after, e.shutdown_grace));
    // The printed default file is those defaults, and reads back to the same configuration.
    let text = default_toml();
    assert!(text.contains("retry_interval = \"10s\"") && text.contains("backoff_cap = \"1h\""), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("defaults.toml");
    std::fs::write(&path, &text).unwrap();
    let from_file = Settings { config: Some(path), ..Default::default() }.resolve().unwrap();
    assert_eq!(format!("{from_file:?}"), format!("{c:?}"));
}

#[test]
fn host_health_settings() {
    let h = Config::default().engine.health.unwrap();
    assert_eq!(
        (h.failure_threshold, h.probe_interval, h.probe_cap),
        (5, Duration::from_secs(1), Duration::from_secs(5))
    );
    assert!(h.probe_cap < Config::default().engine.retry.max_interval / 10, "well below the backoff cap");
    let off = Settings { host_health: Some(false), ..Default::default() }.resolve().unwrap();
    assert_eq!(off.engine.health, None);
    let set = Settings {
        host_failure_threshold: Some(2),
        host_probe_interval: Some("500ms".into()),
        host_probe_cap: Some("4s".into()),
        host_resume_burst: Some(7),
        host_resume_rate: Some(2.5),
        ..Default::default()
    };
    let h = set.resolve().unwrap().engine.health.unwrap();
    assert_eq!(
        (h.failure_threshold, h.probe_interval, h.probe_cap),
        (2, Duration::from_millis(500), Duration::from_secs(4))
    );
    assert_eq!((h.resume_burst, h.resume_rate), (7, 2.5));
    let bad = |s: Settings| s.resolve().unwrap_err().to_string();
    assert!(
        bad(Settings { host_failure_threshold: Some(0), ..Default::default() })
            .contains("--host-failure-threshold")
    );
    assert!(
        bad(Settings { host_probe_cap: Some("500ms".into()), ..Default::default() })
            .contains("--host-probe-cap")
    );
    // Probe spacing is clamped to the backoff cap (a short cap does not refuse the defaults).
    let clamped = |s: Settings| s.resolve().unwrap().engine.health.unwrap();
    let h = clamped(Settings {
        host_probe_cap: Some("2h".into()),
        host_probe_interval: Some("1s".into()),
        backoff_cap: Some("10m".into()),
        ..Default::default()
    });
    assert_eq!((h.probe_interval, h.probe_cap), (Duration::from_secs(1), Duration::from_secs(600)));
    let h = clamped(Settings { backoff_cap: Some("500ms".into()), ..Default::default() });
    assert_eq!((h.probe_interval, h.probe_cap), (Duration::from_millis(500), Duration::from_millis(500)));
    assert!(
        bad(Settings { host_resume_rate: Some(0.0), ..Default::default() }).contains("--host-resume-rate")
    );
    assert!(
        bad(Settings { host_resume_burst: Some(0), ..Default::default() }).contains("--host-resume-burst")
    );
}

#[test]
fn the_database_password_never_shows_in_debug_output() {
    let url = "postgres://dtx:hunter2@db.internal:5432/dtx";
    let s = Settings { database_url: Some(url.into()), ..Default::default() };
    assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
    let c = s.resolve().unwrap();
    let shown = format!("{c:?} {}", c.database_url);
    assert!(!shown.contains("hunter2") && shown.contains("db.internal"), "{shown}");
    assert_eq!(c.database_url.expose(), url, "the store still gets the real URL");
}

#[test]
fn flags_beat_the_file_which_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dtx.toml");
    std::fs::write(&path, "retry_interval = \"2s\"\nlease = \"4s\"\n").unwrap();
    let s = Settings { config: Some(path), lease: Some("7s".into()), ..Default::default() };
    let c = s.resolve().unwrap();
    assert_eq!(c.engine.retry.retry_interval, Duration::from_secs(2));
    assert_eq!(c.engine.lease, Duration::from_secs(7));
}

#[test]
fn bad_values_name_the_setting() {
    let cases = [
        Settings { retry_interval: Some("soon".into()), ..Default::default() },
        Settings { lease: Some("0s".into()), ..Default::default() },
        Settings { log_format: Some("xml".into()), ..Default::default() },
        Settings { http_listen: Some("nowhere".into()), ..Default::default() },
        Settings { database_url: Some("oracle://x".into()), ..Default::default() },
        Settings { claim_batch: Some(0), ..Default::default() },
        Settings { max_request_timeout: Some("0s".into()), ..Default::default() },
        Settings { max_outbound_calls_per_host: Some(0), ..Default::default() },
        Settings { http_header_timeout: Some("never".into()), ..Default::default() },
        Settings { shed_after: Some("0s".into()), ..Default::default() },
        Settings { store_timeout: Some("never".into()), ..Default::default() },
        Settings { max_queued_writes: Some(0), ..Default::default() },
        Settings { max_connections: Some(0), ..Default::default() },
        Settings { shutdown_grace: Some("0".into()), ..Default::default() },
    ];
    let names = [
        "--retry-interval",
        "--lease",
        "--log-format",
        "--http-listen",
        "--database-url",
        "--claim-batch",
        "--max-request-timeout",
        "--max-outbound-calls-per-host",
        "--http-header-timeout",
        "--shed-after",
        "--store-timeout",
        "--max-queued-writes",
        "--max-connections",
        "--shutdown-grace",
    ];
    for (s, name) in cases.into_iter().zip(names) {
        let e = s.resolve().unwrap_err().to_string();
        assert!(e.contains(name), "{e} should name {name}");
    }
}

#[test]
fn the_backend_comes_from_the_url_scheme() {
    assert_eq!(backend_of("sqlite://dtx.db"), Some(Backend::Sqlite));
    assert_eq!(backend_of("postgres://u:p@h/db"), Some(Backend::Postgres));
    assert_eq!(backend_of("postgresql://h/db"), Some(Backend::Postgres));
    assert_eq!(backend_of("mysql://u:p@h:3306/db"), Some(Backend::MySql));
    assert_eq!(backend_of("oracle://h/db"), None);
    let s = Settings { database_url: Some("postgresql://u@h/db".into()), ..Default::default() };
    assert_eq!(s.resolve().unwrap().database_url.expose(), "postgresql://u@h/db");
    let s = Settings { database_url: Some("redis://u:secret@h/0".into()), ..Default::default() };
    let e = s.resolve().unwrap_err().to_string();
    assert!(e.contains("postgres://") && !e.contains("secret"), "{e}");
    let s = Settings { postgres_pool_size: Some(0), ..Default::default() };
    assert!(s.resolve().unwrap_err().to_string().contains("--postgres-pool-size"));
    let s = Settings { mysql_pool_size: Some(0), ..Default::default() };
    assert!(s.resolve().unwrap_err().to_string().contains("--mysql-pool-size"));
}

#[test]
fn otlp_endpoint_is_off_by_default_and_checked() {
    assert_eq!(Config::default().otlp_endpoint, None);
    let s = Settings { otlp_endpoint: Some("http://127.0.0.1:4317".into()), ..Default::default() };
    assert_eq!(s.resolve().unwrap().otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
    let s = Settings { otlp_endpoint: Some(" ".into()), ..Default::default() };
    assert_eq!(s.resolve().unwrap().otlp_endpoint, None);
    for bad in ["collector:4317", "https://collector:4317", "http://"] {
        let s = Settings { otlp_endpoint: Some(bad.into()), ..Default::default() };
        assert!(s.resolve().unwrap_err().to_string().contains("--otlp-endpoint"), "{bad}");
    }
}

#[test]
fn retention_defaults_to_a_week_and_zero_keeps_everything() {
    assert_eq!(Config::default().retention.keep, Duration::from_secs(7 * 24 * 3600));
    let s = Settings { retention: Some("0".into()), ..Default::default() };
    assert!(s.resolve().unwrap().retention.keep.is_zero());
    let s = Settings { retention: Some("36h".into()), ..Default::default() };
    assert_eq!(s.resolve().unwrap().retention.keep, Duration::from_secs(36 * 3600));
    let s = Settings { retention: Some("forever".into()), ..Default::default() };
    assert!(s.resolve().unwrap_err().to_string().contains("--retention"));
}

#[test]
fn unknown_keys_in_the_file_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dtx.toml");
    std::fs::write(&path, "retry_intervall = \"2s\"\n").unwrap();
    let e = Settings { config: Some(path), ..Default::default() }.resolve().unwrap_err();
    assert!(e.to_string().contains("retry_intervall"));
}
