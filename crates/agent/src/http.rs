//! The agent's local HTTP endpoints: `/healthz` (alive), `/readyz` (lease held and dataplane programmed),
//! `/metrics` (Prometheus text), `/status` (JSON, what `weftctl status` shows).
//!
//! The listener is passed in, so tests bind port 0.
use crate::metrics::Metrics;
use crate::status::SharedStatus;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    status: SharedStatus,
    metrics: Arc<Metrics>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    status: SharedStatus,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status_json))
        .with_state(AppState { status, metrics });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let st = s.status.read().expect("status lock").clone();
    if st.ready {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let why = st.last_error.unwrap_or_else(|| "starting".into());
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"))
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.encode())
}

async fn status_json(State(s): State<AppState>) -> impl IntoResponse {
    let st = s.status.read().expect("status lock").clone();
    axum::Json(st)
}
