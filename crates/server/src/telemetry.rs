//! Log output for the binary (libraries only emit events), and the optional OTLP span export.
//!
//! Without `--otlp-endpoint` only the log layer is installed: no OpenTelemetry layer, no span
//! export hook in the engine, no extra span per participant call. With it, an
//! OpenTelemetry layer exports the engine's `round` and `participant_call` spans over OTLP/gRPC
//! (batched, on the SDK's own thread), and [`OtelSpans`] links them to the trace context each
//! transaction stored (crate `dtx_engine::trace_context`).

use std::str::FromStr;

use dtx_engine::trace_context::SpanExport;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// The OTLP exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot export spans to {endpoint}: {message}")]
pub struct Error {
    endpoint: String,
    message: String,
}

/// What [`start`] installed; [`Telemetry::shutdown`] flushes the spans not yet exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// The engine's span export hook: `Some` only while spans are exported.
    /// Exports what is still buffered and stops the exporter.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // Blocking (it waits for the last export): off the async worker threads.
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "span export did not shut down cleanly");
            }
        }
    }
}

/// Installs the global subscriber: level from `RUST_LOG` (default `info`), pretty or JSON lines.
pub fn init(format: LogFormat) {
    // Without an endpoint nothing can fail.
    let _ = start(format, None);
}

/// [`init`], plus span export to the OTLP/gRPC collector at `otlp_endpoint` when given.
/// Must run inside the Tokio runtime (the exporter's channel lives on it).
pub fn start(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Telemetry, Error> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let provider = otlp_endpoint.map(provider).transpose()?;
    // Only dtx's spans are exported (not every event or dependency span): the rounds and the
    // participant calls, whatever RUST_LOG says about the logs.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(p.tracer("dtx")).with_filter(
            tracing_subscriber::filter::filter_fn(|m| m.is_span() && m.target().starts_with("dtx_engine")),
        )
    });
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init();
    Ok(Telemetry { provider })
}

fn provider(endpoint: &str) -> Result<SdkTracerProvider, Error> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| Error { endpoint: endpoint.to_owned(), message: e.to_string() })?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still apply; the name defaults to `dtx`.
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("dtx");
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

/// The engine's [`SpanExport`] over `tracing-opentelemetry`.
#[derive(Debug, Clone, Copy)]
pub struct OtelSpans;

impl SpanExport for OtelSpans {
    fn set_parent(&self, span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
        if let Some(remote) = remote_context(traceparent, tracestate) {
            // Fails only when the span is not exported (filtered out): nothing to link then.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
    }

    fn traceparent_of(&self, span: &tracing::Span) -> Option<String> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid()
            .then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
    }
}

/// The remote parent a valid `traceparent` names (the engine stores only valid ones).
fn remote_context(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(traceparent.get(3..35)?).ok()?;
    let span_id = SpanId::from_hex(traceparent.get(36..52)?).ok()?;
    let flags = u8::from_str_radix(traceparent.get(53..55)?, 16).ok()?;
    let state = tracestate.and_then(|s| TraceState::from_str(s).ok()).unwrap_or_default();
    Some(SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_traceparent_becomes_the_remote_parent() {
        let sc =
            remote_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Some("a=b")).unwrap();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "a=b");
        assert!(remote_context("garbage", None).is_none());
    }
}
