//! The fake's HTTP face: the slice of the Kubernetes REST API that weft calls, in the wire format of a real API
//! server (kind/apiVersion, `Status` bodies with reason and code, list `metadata.resourceVersion`, watch
//! events as newline-delimited JSON in a chunked body), plus `/admin/*` endpoints for tests and the lab.
//!
//! Watches: `?watch=true&resourceVersion=N` replays history after N then streams live events; with no
//! resourceVersion (or "0") it starts with a synthetic ADDED per existing object, as the real server does.
//! A resourceVersion older than the kept history gets HTTP 200 and one `ERROR` event with a 410 `Expired`
//! Status, exactly what kube-apiserver sends. `allowWatchBookmarks=true` adds BOOKMARK events every
//! `bookmark_interval`; `timeoutSeconds` (capped by `max_watch`) ends the stream cleanly.
//!
//! Subresources: only `status`, of the resources that have one (Networks), for get and patch.
//!
//! Anything the fake does not implement (selectors, PUT, dryRun, other subresources, unknown types) is refused
//! loudly rather than half-served, so a new call in the store shows up as a failing test.
use super::state::{ApiError, Cluster, PatchKind};
use super::{parse_documents, resources, FakeOptions};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub(crate) struct Server {
    pub cluster: Arc<Cluster>,
    pub opts: FakeOptions,
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error(e: &ApiError) -> Response {
    json_response(e.code, &e.status_json())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) async fn handle(
    axum::extract::State(s): axum::extract::State<Arc<Server>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if path == "/healthz" || path == "/readyz" || path == "/livez" {
        return "ok".into_response();
    }
    if let Some(cmd) = path.strip_prefix("/admin/") {
        return admin(&s, &method, cmd, &body);
    }
    let Some(t) = resources::parse_path(&path) else {
        return error(&ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    };
    // The one subresource served: `status` of a resource that has it (get and patch).
    let status = match t.subresource.as_deref() {
        None => false,
        Some("status") if t.resource.status_subresource && matches!(method, Method::GET | Method::PATCH) => true,
        Some(_) => {
            return error(&ApiError::new(404, "NotFound", "fake apiserver: this subresource is not implemented"))
        }
    };
    let q = query(&uri);
    for unsupported in ["labelSelector", "fieldSelector", "dryRun", "continue"] {
        if q.get(unsupported).is_some_and(|v| !v.is_empty()) {
            let msg = format!("fake apiserver: {unsupported} is not implemented");
            return error(&ApiError::new(400, "BadRequest", msg));
        }
    }
    let ns = t.namespace.as_deref();
    let res = t.resource;
    let verb = match (&method, &t.name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        (&Method::GET, None) => "list",
        (&Method::POST, None) => "create",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        _ => {
            let msg = format!("fake apiserver: {method} {path} is not implemented");
            return error(&ApiError::new(405, "MethodNotAllowed", msg));
        }
    };
    if let Err(e) = s.cluster.authorize(res, status.then_some("status"), verb, ns) {
        return error(&e);
    }
    let name = t.name.as_deref().unwrap_or_default();
    let parsed = || -> Result<Value, ApiError> {
        serde_json::from_slice(&body).map_err(|e| ApiError::new(400, "BadRequest", format!("invalid JSON body: {e}")))
    };
    let result = match verb {
        "get" => s.cluster.get(res, ns, name),
        "list" => {
            let (items, rv) = s.cluster.list(res, ns);
            // A real server omits kind/apiVersion on list items.
            let items: Vec<Value> = items
                .into_iter()
                .map(|mut o| {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                    o
                })
                .collect();
            Ok(json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(),
                      "metadata": {"resourceVersion": rv.to_string()}, "items": items}))
        }
        "watch" => return watch(&s, res, ns, &q),
        "create" => parsed().and_then(|obj| s.cluster.create(res, ns, obj)),
        "patch" => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let kind = match ct.split(';').next().unwrap_or_default().trim() {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/json-patch+json" => PatchKind::Json,
                other => {
                    let msg = format!("fake apiserver: patch type {other:?} is not implemented");
                    return error(&ApiError::new(415, "UnsupportedMediaType", msg));
                }
            };
            if status {
                parsed().and_then(|p| s.cluster.patch_status(res, ns, name, kind, &p))
            } else {
                parsed().and_then(|p| s.cluster.patch(res, ns, name, kind, &p))
            }
        }
        "delete" => {
            let opts: Value =
                if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or_default() };
            s.cluster.delete(res, ns, name, opts.get("preconditions"))
        }
        _ => unreachable!("every verb is matched above"),
    };
    match result {
        Ok(v) => json_response(if verb == "create" { 201 } else { 200 }, &v),
        Err(e) => error(&e),
    }
}

fn watch(s: &Server, res: resources::Resource, ns: Option<&str>, q: &HashMap<String, String>) -> Response {
    let start = q.get("resourceVersion").cloned().unwrap_or_default();
    let start = match start.as_str() {
        "" | "0" => None,
        v => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let msg = format!("fake apiserver: resourceVersion {v:?} is not a number");
                return error(&ApiError::new(400, "BadRequest", msg));
            }
        },
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let mut timeout = Duration::from_secs(q.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    if let Some(max) = s.opts.max_watch {
        timeout = timeout.min(max);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let task = WatchTask {
        cluster: s.cluster.clone(),
        res,
        ns: ns.map(str::to_string),
        bookmark_interval: bookmarks.then_some(s.opts.bookmark_interval),
        timeout,
        tx,
    };
    tokio::spawn(task.run(start));
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("static response parts")
}

struct WatchTask {
    cluster: Arc<Cluster>,
    res: resources::Resource,
    ns: Option<String>,
    bookmark_interval: Option<Duration>,
    timeout: Duration,
    tx: mpsc::Sender<Bytes>,
}

impl WatchTask {
    async fn send(&self, ty: &str, object: Value) -> bool {
        let line = format!("{}\n", json!({"type": ty, "object": object}));
        self.tx.send(Bytes::from(line)).await.is_ok()
    }

    async fn run(self, start: Option<u64>) {
        // Subscribe before reading state, so no change between the read and the wait is missed.
        let (mut changed, mut closing) = self.cluster.subscribe();
        closing.borrow_and_update();
        let ns = self.ns.as_deref();
        let mut cursor = match start {
            Some(rv) => rv,
            None => {
                let (items, rv) = self.cluster.list(self.res, ns);
                for o in items {
                    if !self.send("ADDED", o).await {
                        return;
                    }
                }
                rv
            }
        };
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let period = self.bookmark_interval.unwrap_or(Duration::from_secs(3600));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            changed.borrow_and_update();
            match self.cluster.events_after(self.res, ns, cursor) {
                Err(e) => {
                    self.send("ERROR", e.status_json()).await;
                    return;
                }
                Ok((events, rv)) => {
                    for e in events {
                        if !self.send(e.kind.as_str(), e.object).await {
                            return;
                        }
                    }
                    cursor = rv;
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = closing.changed() => return,
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
                _ = tick.tick(), if self.bookmark_interval.is_some() => {
                    let obj = json!({"kind": self.res.kind, "apiVersion": self.res.api_version(),
                                     "metadata": {"resourceVersion": cursor.to_string()}});
                    if !self.send("BOOKMARK", obj).await {
                        return;
                    }
                }
            }
        }
    }
}

fn admin(s: &Server, method: &Method, cmd: &str, body: &[u8]) -> Response {
    let bad = |m: String| error(&ApiError::new(400, "BadRequest", m));
    let c = &s.cluster;
    match (method, cmd) {
        (&Method::POST, "apply") => {
            let docs = match parse_documents(body) {
                Ok(d) => d,
                Err(e) => return bad(e),
            };
            let mut out = Vec::new();
            for d in docs {
                match c.apply(d) {
                    Ok(v) => out.push(v),
                    Err(e) => return error(&e),
                }
            }
            json_response(200, &json!({"items": out}))
        }
        (&Method::POST, "delete") => {
            let v: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad(e.to_string()),
            };
            let kind = v["kind"].as_str().unwrap_or_default();
            let name = v["name"].as_str().unwrap_or_default();
            match c.remove(kind, v["namespace"].as_str(), name) {
                Ok(v) => json_response(200, &v),
                Err(e) => error(&e),
            }
        }
        (&Method::POST, "compact") => {
            c.compact();
            json_response(200, &json!({"compactedTo": c.resource_version()}))
        }
        (&Method::POST, "close-watches") => {
            c.close_watches();
            json_response(200, &json!({}))
        }
        (&Method::POST, "deny") => {
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            let (g, r, verb) = (v["group"].as_str(), v["resource"].as_str(), v["verb"].as_str());
            match (g, r, verb) {
                (Some(g), Some(r), Some(verb)) => {
                    c.deny(g, r, verb);
                    json_response(200, &json!({}))
                }
                _ => bad("deny needs {\"group\",\"resource\",\"verb\"}".into()),
            }
        }
        (&Method::GET, "requests") => {
            let reqs: Vec<Value> = c
                .requests()
                .into_iter()
                .map(|r| json!({"group": r.group, "resource": r.resource, "verb": r.verb, "namespace": r.namespace}))
                .collect();
            json_response(200, &json!({"items": reqs}))
        }
        _ => error(&ApiError::new(404, "NotFound", format!("fake apiserver: no admin command {method} {cmd}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        let u: Uri = "/api/v1/nodes?watch=true&resourceVersion=12&labelSelector=a%3Db%2Cc".parse().unwrap();
        let q = query(&u);
        assert_eq!(q["watch"], "true");
        assert_eq!(q["resourceVersion"], "12");
        assert_eq!(q["labelSelector"], "a=b,c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
