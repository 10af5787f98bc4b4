//! Reading what callers send, within bounds: query strings with repeated or comma-separated
//! parameters, and request bodies with a size limit.
//!
//! goim's query arrays are repeated parameters (`mids=1&mids=2`); comma-separated values
//! (`mids=1,2`) are accepted too. Every malformed value is a 400 naming the parameter; a body over
//! its limit is a 413 naming the limit, detected from `Content-Length` before reading when possible
//! and while reading otherwise, so an oversized body is never buffered whole.

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::convert::Infallible;
use std::str::FromStr;

/// The decoded query string of a request, in order.
#[derive(Clone, Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes a raw query string.
    pub fn parse(raw: &str) -> Self {
        Params(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The query string of a request's `parts` (empty if it has none).
    pub fn of(parts: &Parts) -> Self {
        parts.uri.query().map(Params::parse).unwrap_or_default()
    }

    /// The first value of a parameter, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a required parameter (400 if absent or empty).
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::BadRequest(format!("query parameter `{name}` is required")))
    }

    /// A parameter parsed as a number or other value (400 if it does not parse).
    pub fn parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| parse_value(name, v))
            .transpose()
    }

    /// A required parsed parameter.
    pub fn required_parsed<T: FromStr>(&self, name: &str) -> Result<T, ApiError> {
        parse_value(name, self.required(name)?)
    }

    /// Every value of a list parameter: repeated, comma-separated, or both; empty items dropped.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// A list parameter with each item parsed (400 naming the first bad item).
    pub fn parsed_list<T: FromStr>(&self, name: &str) -> Result<Vec<T>, ApiError> {
        self.list(name)
            .into_iter()
            .map(|v| parse_value(name, v))
            .collect()
    }
}

/// Parses one value of parameter `name`.
fn parse_value<T: FromStr>(name: &str, value: &str) -> Result<T, ApiError> {
    value.trim().parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "query parameter `{name}` has an invalid value {value:?}"
        ))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Params::of(parts))
    }
}

/// Reads a whole body of at most `limit` bytes: 413 if the declared `Content-Length` exceeds it
/// (before reading anything) or if more arrives; 400 if the body breaks off.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "request body larger than the limit of {limit} bytes"
        ))
    };
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {error}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_accept_repeated_and_comma_separated_values() {
        let params = Params::parse("mids=1&mids=2,3&mids=&keys=a%2Cb&x=1");
        assert_eq!(params.parsed_list::<i64>("mids").unwrap(), vec![1, 2, 3]);
        // An encoded comma is still a separator once decoded (goim keys never contain commas).
        assert_eq!(params.list("keys"), vec!["a", "b"]);
        assert!(params.list("absent").is_empty());
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let params = Params::parse("limit=-1x&mids=1,zz");
        let error = params
            .required_parsed::<i64>("limit")
            .unwrap_err()
            .to_string();
        assert!(error.contains("`limit`"), "{error}");
        let error = params.parsed_list::<i64>("mids").unwrap_err().to_string();
        assert!(error.contains("\"zz\""), "{error}");
        assert!(params.required("type").is_err());
        assert_eq!(params.parsed::<i32>("speed").unwrap(), None);
    }
}
