//! The provider's client of rim's admin API, and how its failures become Terraform diagnostics.
//!
//! Every call is one HTTP request with the admin key as bearer token. rim answers errors as
//! `{"error": kind, "message": ...}` with a precise status; [`ApiError`] keeps both, so a resource
//! can treat "not found" as "gone" (a read removes it from state, a delete is done) and everything
//! else becomes an error diagnostic that quotes the control plane's message, says what was being
//! done and, for the statuses an operator can act on, what to do about it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use tf_provider::Diagnostics;

/// Longest a single call to the control plane may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed call to the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status, or `None` when no answer came (unreachable, timed out, unreadable answer).
    pub status: Option<u16>,
    /// What went wrong, in the control plane's words when it answered.
    pub message: String,
}

impl ApiError {
    /// Whether the addressed object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// Records the failure of `action` (e.g. `creating region "fra"`) as an error diagnostic.
    pub fn report(&self, diags: &mut Diagnostics, action: &str) {
        let hint = match self.status {
            None => {
                " Check the provider's `endpoint` (or RIM_ENDPOINT) and that rim control is running."
            }
            Some(401) => {
                " The admin key was not accepted: check `admin_key` (or RIM_ADMIN_KEY) against rim control's admin key."
            }
            Some(403) => " The key lacks the admin scope: the provider needs an admin key.",
            Some(503) => {
                " The control plane's store or bus is unavailable; nothing was changed, so retrying is safe."
            }
            _ => "",
        };
        let status = self
            .status
            .map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}"));
        diags.root_error(
            format!("rim: {action} failed"),
            format!("{} ({status}).{hint}", self.message),
        );
    }
}

/// A region as the admin API answers it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Region {
    /// Unique name.
    pub name: String,
    /// Centre latitude.
    pub latitude: f64,
    /// Centre longitude.
    pub longitude: f64,
    /// The bus topic of the region; absent for buses without topics (rim dev's in-process bus).
    #[serde(default)]
    pub topic: Option<String>,
}

/// How fast a key may push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained pushes per second.
    pub per_second: u32,
    /// Pushes at once after a quiet period.
    pub burst: u32,
}

/// An API key as the admin API lists it (the secret only in [`NewKey`]'s answer).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ApiKey {
    /// Key id (`key_...`).
    pub id: String,
    /// Name given at creation.
    pub name: String,
    /// Scopes (`push`, `read`, `admin`).
    pub scopes: Vec<String>,
    /// Set once revoked.
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// Target kinds the key may push to, when limited (absent on control planes without limits).
    #[serde(default)]
    pub target_kinds: Option<Vec<String>>,
    /// The key's rate limit, if any.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// A key to create.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewKey {
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Target kinds it may push to; `None`: every kind (and the field is not sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_kinds: Option<Vec<String>>,
    /// Pushes per second; `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<u32>,
    /// Burst; `None`: the control plane's default (the rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_burst: Option<u32>,
}

/// A created key: its view and the secret, which the control plane shows this once.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CreatedKey {
    /// The key as listed.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret (bearer token) of the key.
    pub secret: String,
}

/// An edge node as `/v1/nodes` lists it (the fields the data source exposes).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Node {
    /// Node id.
    pub id: String,
    /// Region it serves.
    pub region: String,
    /// `active`, `draining` or `dead`.
    pub state: String,
    /// Whether an admin drained it (lasts across restarts until undrained).
    #[serde(default)]
    pub drained_by_admin: bool,
    /// Host name clients use.
    pub hostname: String,
    /// Addresses clients use.
    pub addresses: Vec<String>,
    /// TCP port (0 when not listening).
    pub tcp_port: u16,
    /// WebSocket port.
    pub ws_port: u16,
    /// WebSocket-over-TLS port.
    pub wss_port: u16,
    /// Location latitude.
    pub latitude: f64,
    /// Location longitude.
    pub longitude: f64,
    /// Connections at the last heartbeat.
    pub connection_count: u64,
}

/// Where an HTTPDNS client is, for [`Client::dns`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DnsQuery {
    /// Client coordinates (both or neither).
    pub location: Option<(f64, f64)>,
    /// Region named outright.
    pub region: Option<String>,
    /// `web`, `android`, `ios`, ...
    pub platform: Option<String>,
}

/// The HTTPDNS answer (goim's shape) plus the ids of the ranked nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsAnswer {
    /// Hosts or addresses to try, best first.
    pub nodes: Vec<String>,
    /// Ids of the eligible nodes, best first.
    pub node_ids: Vec<String>,
    /// TCP port of the listed nodes (0: none).
    pub tcp_port: u16,
    /// WebSocket port (0: none).
    pub ws_port: u16,
    /// WebSocket-over-TLS port (0: none).
    pub wss_port: u16,
    /// Why `nodes` is empty, when it is.
    pub reason: Option<String>,
}

/// A client of one control plane with one admin key.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    admin_key: String,
}

/// `segment` escaped for use as one URL path segment.
fn path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of the control plane at `endpoint` (`http://` or `https://`).
    pub fn new(endpoint: &str, admin_key: &str) -> Result<Self, String> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            ));
        }
        // Harmless when already installed; reqwest's rustls needs a process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|err| format!("building the HTTP client: {err}"))?;
        Ok(Self {
            http,
            base: endpoint.trim_end_matches('/').to_owned(),
            admin_key: admin_key.to_owned(),
        })
    }

    /// Sends a request; answers the body parsed as `T` (`()` for 204 answers use [`Client::send`]).
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        let text = self.send(method, path, body).await?;
        serde_json::from_str(&text).map_err(|err| ApiError {
            status: None,
            message: format!("unreadable answer from {path}: {err}"),
        })
    }

    /// Sends a request; answers the body text of a 2xx answer, or the error.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<String, ApiError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| ApiError {
            status: None,
            message: format!("cannot reach rim control at {}: {err}", self.base),
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|err| ApiError {
            status: Some(status),
            message: format!("reading the answer: {err}"),
        })?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|body| body["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        Err(ApiError {
            status: Some(status),
            message,
        })
    }

    /// One region; `Ok(None)` if it does not exist.
    pub async fn region(&self, name: &str) -> Result<Option<Region>, ApiError> {
        let path = format!("/v1/admin/regions/{}", path_segment(name));
        match self.call(reqwest::Method::GET, &path, None).await {
            Ok(region) => Ok(Some(region)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Creates a region (409 if the name is taken).
    pub async fn create_region(
        &self,
        name: &str,
        latitude: f64,
        longitude: f64,
    ) -> Result<Region, ApiError> {
        let body = json!({"name": name, "latitude": latitude, "longitude": longitude});
        self.call(reqwest::Method::POST, "/v1/admin/regions", Some(&body))
            .await
    }

    /// Moves a region (creates it if absent).
    pub async fn put_region(
        &self,
        name: &str,
        latitude: f64,
        longitude: f64,
    ) -> Result<Region, ApiError> {
        let body = json!({"latitude": latitude, "longitude": longitude});
        let path = format!("/v1/admin/regions/{}", path_segment(name));
        self.call(reqwest::Method::PUT, &path, Some(&body)).await
    }

    /// Deletes a region (409 while live nodes serve it, 404 if absent).
    pub async fn delete_region(&self, name: &str) -> Result<(), ApiError> {
        let path = format!("/v1/admin/regions/{}", path_segment(name));
        self.send(reqwest::Method::DELETE, &path, None)
            .await
            .map(drop)
    }

    /// One API key (never its secret); `Ok(None)` if it does not exist.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, ApiError> {
        let path = format!("/v1/admin/api-keys/{}", path_segment(id));
        match self.call(reqwest::Method::GET, &path, None).await {
            Ok(key) => Ok(Some(key)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Creates an API key; the answer holds its secret.
    pub async fn create_api_key(&self, key: &NewKey) -> Result<CreatedKey, ApiError> {
        let body = serde_json::to_value(key).map_err(|err| ApiError {
            status: None,
            message: format!("encoding the key: {err}"),
        })?;
        self.call(reqwest::Method::POST, "/v1/admin/api-keys", Some(&body))
            .await
    }

    /// Revokes an API key (404 if absent).
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), ApiError> {
        let path = format!("/v1/admin/api-keys/{}", path_segment(id));
        self.send(reqwest::Method::DELETE, &path, None)
            .await
            .map(drop)
    }

    /// Drains (`true`) or undrains (`false`) a node (404 if unknown).
    pub async fn set_drained(&self, node_id: &str, drained: bool) -> Result<(), ApiError> {
        let verb = if drained { "drain" } else { "undrain" };
        let path = format!("/v1/admin/nodes/{}/{verb}", path_segment(node_id));
        self.send(reqwest::Method::POST, &path, None)
            .await
            .map(drop)
    }

    /// Every node the control plane knows, by id.
    pub async fn nodes(&self) -> Result<Vec<Node>, ApiError> {
        #[derive(Deserialize)]
        struct Nodes {
            nodes: Vec<Node>,
        }
        let answer: Nodes = self.call(reqwest::Method::GET, "/v1/nodes", None).await?;
        Ok(answer.nodes)
    }

    /// The HTTPDNS answer for a client.
    pub async fn dns(&self, query: &DnsQuery) -> Result<DnsAnswer, ApiError> {
        let mut params = Vec::new();
        if let Some((lat, lon)) = query.location {
            params.push(format!("lat={lat}"));
            params.push(format!("lon={lon}"));
        }
        if let Some(region) = &query.region {
            params.push(format!("region={}", path_segment(region)));
        }
        if let Some(platform) = &query.platform {
            params.push(format!("platform={}", path_segment(platform)));
        }
        let path = format!("/v1/dns?{}", params.join("&"));
        let body: Value = self.call(reqwest::Method::GET, &path, None).await?;
        let answer = &body["answer"];
        let strings = |value: &Value, field: &str| -> Vec<String> {
            value
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| {
                            if field.is_empty() {
                                item.as_str()
                            } else {
                                item[field].as_str()
                            }
                        })
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let port = |name: &str| {
            answer[name]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0)
        };
        Ok(DnsAnswer {
            nodes: strings(&answer["nodes"], ""),
            node_ids: strings(&body["ranked"], "node_id"),
            tcp_port: port("tcp_port"),
            ws_port: port("ws_port"),
            wss_port: port("wss_port"),
            reason: match &answer["reason"] {
                Value::Null => None,
                Value::String(reason) => Some(reason.clone()),
                other => Some(other.to_string()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("us-west_1.a~"), "us-west_1.a~");
        assert_eq!(path_segment("a/b c?"), "a%2Fb%20c%3F");
    }

    #[test]
    fn endpoints_need_a_scheme() {
        let err = Client::new("localhost:3100", "k").unwrap_err();
        assert_eq!(
            err,
            "endpoint \"localhost:3100\" must start with http:// or https://"
        );
        assert!(Client::new("https://rim.example.com/", "k").is_ok());
    }

    #[test]
    fn errors_become_diagnostics_with_the_control_planes_message_and_a_hint() {
        let cases = [
            (
                Some(409),
                "region \"fra\" already exists",
                "region \"fra\" already exists (HTTP 409).",
            ),
            (
                Some(401),
                "unknown API key",
                "unknown API key (HTTP 401). The admin key was not accepted: check `admin_key` (or RIM_ADMIN_KEY) against rim control's admin key.",
            ),
            (
                None,
                "cannot reach rim control at http://127.0.0.1:1",
                "cannot reach rim control at http://127.0.0.1:1 (no answer). Check the provider's `endpoint` (or RIM_ENDPOINT) and that rim control is running.",
            ),
        ];
        for (status, message, detail) in cases {
            let mut diags = Diagnostics::default();
            ApiError {
                status,
                message: message.into(),
            }
            .report(&mut diags, "creating region \"fra\"");
            assert_eq!(diags.errors.len(), 1);
            assert_eq!(
                diags.errors[0].summary,
                "rim: creating region \"fra\" failed"
            );
            assert!(
                diags.errors[0].detail.starts_with(detail),
                "{}",
                diags.errors[0].detail
            );
        }
    }
}
