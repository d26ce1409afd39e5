//! The gateway's error shape and request bodies.
//!
//! Every error is `{"error": {"code": "...", "message": "..."}}` with the
//! matching status; the message says what to fix. Bodies are read up to
//! `[gateway] max_body_bytes` and parsed into typed structs whose errors
//! name the field (`field `text`: expected a string`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 401 with nothing about why: a wrong token and a missing one look
    /// the same to whoever is guessing.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the gateway's token as `Authorization: Bearer TOKEN` (`keel token` prints it)",
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store error in the gateway");
        let status = match e {
            crate::store::StoreError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, "store", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keel\""),
            );
        }
        r
    }
}

/// Reads a JSON body of at most `limit` bytes into `T`. An empty body
/// reads as `{}` (for routes whose fields are all optional).
pub async fn json_body<T: DeserializeOwned>(
    body: axum::body::Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        // The only error with a length-limit source is the limit.
        let too_big = std::error::Error::source(&e)
            .is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_big {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is over {limit} bytes; send less, or raise [gateway] max_body_bytes"
                ),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    parse_json(bytes)
}

/// Parses `bytes` as `T`, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("the body is not valid JSON: {inner}")
        } else if path == "." {
            format!("{inner}")
        } else {
            format!("field `{path}`: {inner}")
        };
        ApiError::bad_request(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Msg {
        text: String,
    }

    #[test]
    fn body_errors_name_the_field() {
        let e = parse_json::<Msg>(br#"{"text": 5}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.starts_with("field `text`: invalid type"),
            "{}",
            e.message
        );
        let e = parse_json::<Msg>(b"{}").unwrap_err();
        assert!(e.message.contains("missing field `text`"), "{}", e.message);
        let e = parse_json::<Msg>(b"{\"text\": ").unwrap_err();
        assert!(
            e.message.starts_with("the body is not valid JSON"),
            "{}",
            e.message
        );
        let e = parse_json::<Msg>(br#"{"text": "a", "txet": 1}"#).unwrap_err();
        assert!(e.message.contains("unknown field `txet`"), "{}", e.message);
    }
}
