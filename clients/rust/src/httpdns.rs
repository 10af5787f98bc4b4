//! Asking rim's HTTPDNS where to connect.
//!
//! The control plane answers `GET /v1/dns` with `{"answer": {...}, ...}` and goim's route
//! `GET /goim/nodes/weighted` with `{"code": 0, "data": {...}}`; both carry goim's answer: the
//! `nodes` to try, best first, and the `tcp_port` they listen on. An empty answer (no eligible
//! edge) is an error with the answer's reason, never a made-up address. HTTPS needs a rustls
//! crypto provider installed in the process (a [`crate::Session`] with an HTTPDNS URL installs
//! ring if the program has none).

use crate::error::ClientError;
use serde_json::Value;
use std::time::Duration;

/// How long HTTPDNS may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The edge addresses (`host:port`) of an HTTPDNS answer at `url`, best first.
pub async fn resolve(http: &reqwest::Client, url: &str) -> Result<Vec<String>, ClientError> {
    let failed = |why: String| ClientError::Httpdns(format!("{url}: {why}"));
    let response = http
        .get(url)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|err| failed(err.to_string()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|err| failed(err.to_string()))?;
    if !status.is_success() {
        return Err(failed(format!("answered {status}")));
    }
    let json: Value =
        serde_json::from_slice(&body).map_err(|err| failed(format!("not JSON: {err}")))?;
    addresses(&json).map_err(failed)
}

/// The `host:port` list of an answer document (either route's shape).
pub fn addresses(document: &Value) -> Result<Vec<String>, String> {
    let answer = document
        .get("answer")
        .or_else(|| document.get("data"))
        .unwrap_or(document);
    let port = answer
        .get("tcp_port")
        .and_then(Value::as_u64)
        .filter(|port| (1..=u64::from(u16::MAX)).contains(port));
    let hosts: Vec<&str> = answer
        .get("nodes")
        .and_then(Value::as_array)
        .map(|nodes| nodes.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match port {
        Some(port) if !hosts.is_empty() => Ok(hosts
            .iter()
            .map(|host| match host.contains(':') {
                true => format!("[{host}]:{port}"),
                false => format!("{host}:{port}"),
            })
            .collect()),
        _ => Err(match answer.get("reason") {
            Some(reason) => format!("no edge to connect to: {reason}"),
            None => "the answer names no edge with a TCP port".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_routes_shapes_give_host_and_port() {
        let v1 = json!({"answer": {"nodes": ["10.0.0.1", "::1"], "tcp_port": 3101}, "ranked": []});
        assert_eq!(
            addresses(&v1).unwrap(),
            vec!["10.0.0.1:3101".to_owned(), "[::1]:3101".to_owned()]
        );
        let goim = json!({"code": 0, "data": {"nodes": ["edge.example.com"], "tcp_port": 7001}});
        assert_eq!(addresses(&goim).unwrap(), vec!["edge.example.com:7001"]);
    }

    #[test]
    fn an_empty_answer_is_an_error_with_its_reason() {
        let empty = json!({"answer": {"nodes": [], "reason": {"message": "all drained"}}});
        let error = addresses(&empty).unwrap_err();
        assert!(error.contains("all drained"), "{error}");
        assert!(addresses(&json!({"answer": {"nodes": ["h"]}})).is_err());
    }
}
