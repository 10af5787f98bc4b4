//! The demo page `rim dev` serves at its control plane's `/`: a newcomer's first working client
//! (HTTPDNS, WebSocket, auth, rooms, pushes through the REST API) with nothing to install or build.
//!
//! The page (`demo/`) and the JavaScript client (`clients/js/`) are compiled into the binary and
//! served as they are, the client under `/demo/rim/`, so the page imports it as ES modules.
//! `GET /dev/token?mid=&room=` gives the page what it authenticates with: the goim auth JSON of that
//! user, which the edge of `rim dev` trusts in its insecure mode. When the edge verifies clients
//! (JWT keys or the auth webhook) only the business can vouch for a user, so the route answers 404
//! and says why; it never hands out a secret.

use axum::Json;
use axum::Router;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rim_edge::EdgeConfig;
use rim_edge::config::AuthMode;
use rim_edgelink::LinkConfig;
use serde_json::json;
use std::collections::HashMap;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The page's files and the client's entry point: `(URL path, content type, content)`.
const PAGE: [(&str, &str, &str); 4] = [
    ("/", HTML, include_str!("../demo/index.html")),
    ("/demo/demo.css", CSS, include_str!("../demo/demo.css")),
    ("/demo/demo.js", JS, include_str!("../demo/demo.js")),
    (
        "/demo/rim/index.js",
        JS,
        include_str!("../clients/js/index.js"),
    ),
];

/// `(URL path, content type, content)` of modules of `clients/js/src/`, served under `/demo/rim/src/`.
macro_rules! client_modules {
    ($($name:literal),* $(,)?) => {
        [$((
            concat!("/demo/rim/src/", $name),
            JS,
            include_str!(concat!("../clients/js/src/", $name)),
        )),*]
    };
}

/// The JavaScript client's modules (every `.js` of `clients/js/src/`; a test keeps the list whole).
const CLIENT_MODULES: [(&str, &str, &str); 7] = client_modules!(
    "backoff.js",
    "client.js",
    "durable.js",
    "emitter.js",
    "heartbeat.js",
    "httpdns.js",
    "protocol.js",
);

/// The business op the development token subscribes to (goim's default business op).
const DEMO_OPERATION: i32 = 1000;

/// Routes of the demo page, merged into the control plane of `rim dev`; `edge` and `link` are the
/// embedded edge's settings, which decide whether `/dev/token` can answer.
pub fn router(edge: &EdgeConfig, link: &LinkConfig) -> Router {
    let refusal = token_refusal(edge, link);
    let router = Router::new().route(
        "/dev/token",
        get(
            move |Query(params): Query<HashMap<String, String>>| async move {
                dev_token(refusal, &params)
            },
        ),
    );
    PAGE.into_iter()
        .chain(CLIENT_MODULES)
        .fold(router, |router, (path, content_type, content)| {
            router.route(
                path,
                get(move || async move {
                    (
                        [
                            (header::CONTENT_TYPE, content_type),
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        content,
                    )
                }),
            )
        })
}

/// Why `/dev/token` cannot answer with this edge, or `None` when the edge trusts the goim JSON.
fn token_refusal(edge: &EdgeConfig, link: &LinkConfig) -> Option<&'static str> {
    if link.edge_auth_webhook {
        Some(
            "the edge authenticates clients through the auth webhook (--edge-auth-webhook): \
             rim dev cannot vouch for a user; your business backend decides who may connect",
        )
    } else if edge.edge_auth != AuthMode::Insecure {
        Some(
            "the edge verifies signed tokens (--edge-jwt-keys): rim dev does not make them up; \
             sign a JWT for the user with your key (claims mid, room, accepts)",
        )
    } else {
        None
    }
}

/// `GET /dev/token?mid=&room=`: the goim auth JSON for user `mid` in `room` (default: no room).
fn dev_token(refusal: Option<&'static str>, params: &HashMap<String, String>) -> Response {
    let error = |status: StatusCode, message: String| {
        (status, Json(json!({ "error": message }))).into_response()
    };
    if let Some(reason) = refusal {
        return error(
            StatusCode::NOT_FOUND,
            format!("no development tokens: {reason}"),
        );
    }
    let mid = params.get("mid").map(String::as_str).unwrap_or_default();
    let Some(mid) = mid.parse::<i64>().ok().filter(|mid| *mid > 0) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("mid must be a positive integer user id, not {mid:?}"),
        );
    };
    let room = params.get("room").map(String::as_str).unwrap_or_default();
    Json(json!({
        "mid": mid,
        // Empty: the edge gives each connection its own key, so two tabs of one user both stay.
        "key": "",
        "room_id": room,
        "platform": "web",
        "accepts": [DEMO_OPERATION],
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new module in `clients/js/src/` must be served too, or the page fails to import it.
    #[test]
    fn every_client_module_is_served() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js/src");
        for entry in std::fs::read_dir(dir).expect("clients/js/src") {
            let name = entry.expect("directory entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".js") {
                let path = format!("/demo/rim/src/{name}");
                assert!(
                    CLIENT_MODULES.iter().any(|(served, ..)| *served == path),
                    "{path} is not served by src/demo.rs"
                );
            }
        }
    }

    async fn answer(refusal: Option<&'static str>, query: &[(&str, &str)]) -> (StatusCode, String) {
        let params = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let response = dev_token(refusal, &params);
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn token_is_the_goim_auth_json() {
        let (status, body) = answer(None, &[("mid", "42"), ("room", "live://7")]).await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            json,
            json!({"mid": 42, "key": "", "room_id": "live://7", "platform": "web", "accepts": [1000]})
        );
    }

    #[tokio::test]
    async fn bad_mid_is_refused() {
        for mid in ["", "0", "-3", "abc", "99999999999999999999"] {
            let (status, body) = answer(None, &[("mid", mid)]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{mid}: {body}");
            assert!(body.contains("positive integer"), "{body}");
        }
    }

    #[tokio::test]
    async fn no_token_when_the_edge_verifies_clients() {
        let mut edge = EdgeConfig::local().expect("edge config");
        let mut link = LinkConfig::local().expect("link config");
        edge.edge_auth = AuthMode::Jwt;
        let refusal = token_refusal(&edge, &link);
        let (status, body) = answer(refusal, &[("mid", "42")]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("--edge-jwt-keys"), "{body}");
        link.edge_auth_webhook = true;
        let (status, body) = answer(token_refusal(&edge, &link), &[("mid", "42")]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("webhook"), "{body}");
        edge.edge_auth = AuthMode::Insecure;
        link.edge_auth_webhook = false;
        assert_eq!(token_refusal(&edge, &link), None);
    }
}
