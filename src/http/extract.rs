//! Extractors that answer with problems: JSON bodies (415, 413, 400; a JSON object only), ids in the path (400), query
//! strings (400) and the `Idempotency-Key` header (400).

use std::ops::RangeInclusive;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use orchestrator_events::{CommandId, SessionId, VmId};
use serde::de::DeserializeOwned;

use super::errors::ApiError;
use super::state::AppState;

/// The header whose value becomes the command id.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A JSON body of type `T` (`Content-Type: application/json`).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// A JSON body that may be left out: an empty body, with or without a content type, is
/// `T::default()`.
#[derive(Debug, Clone)]
pub struct OptionalJson<T>(pub T);

/// Whether a request's `Content-Type` is JSON: `application/json` or `application/<something>+json`,
/// parameters (`; charset=utf-8`) aside.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let base = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    base == "application/json" || (base.starts_with("application/") && base.ends_with("+json"))
}

/// Reads a JSON body; `None` when it is empty and `optional`.
async fn read_json<T: DeserializeOwned>(
    req: Request,
    state: &AppState,
    optional: bool,
) -> Result<Option<T>, ApiError> {
    let json = is_json_content_type(req.headers());
    if !optional && !json {
        // Refused before the body is read.
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: state.body_limit(),
            }
        } else {
            ApiError::Malformed(format!(
                "the body could not be read: {}",
                rejection.body_text()
            ))
        }
    })?;
    json_body(json, &bytes, optional)
}

/// What a body that was read becomes: `None` when it is empty (or blank) and `optional`; else 415
/// `unsupported_content_type` unless `json` (the `Content-Type` is JSON, see
/// [`is_json_content_type`]), 400 `malformed_request` unless it is one JSON object of type `T`
/// and nothing after it. [`ApiJson`] and [`OptionalJson`] answer with this; the fuzz target
/// `http_bodies` calls it directly.
pub fn json_body<T: DeserializeOwned>(
    json: bool,
    bytes: &[u8],
    optional: bool,
) -> Result<Option<T>, ApiError> {
    if optional && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    require_object(bytes)?;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    deserialize_all(de).map(Some)
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        read_json(req, state, false)
            .await?
            .map(ApiJson)
            .ok_or_else(|| ApiError::Malformed("a body is required".into()))
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Ok(OptionalJson(
            read_json(req, state, true).await?.unwrap_or_default(),
        ))
    }
}

/// A number of a request body checked against its range. serde reads it as an `i64`, so that
/// any integer out of the range (negative, too large for the command's type) is the same 422
/// `invalid_argument` naming the field, as the writer answers for 0; only a value that is not an
/// integer at all is 400.
pub fn in_range<T: TryFrom<i64>>(
    field: &str,
    value: i64,
    range: RangeInclusive<i64>,
) -> Result<T, ApiError> {
    let out = || ApiError::InvalidArgument {
        field: field.into(),
        reason: format!("must be {} to {}", range.start(), range.end()),
    };
    if !range.contains(&value) {
        return Err(out());
    }
    T::try_from(value).map_err(|_| out())
}

/// Every request body the bridge reads is a JSON object (the OpenAPI document's `type: object`).
/// serde would read a struct from an array too (`["vm-1", 2, {}]` as a `RegisterVmBody`), so any
/// other JSON value is refused here, for every route at once, before it is deserialised.
fn require_object(bytes: &[u8]) -> Result<(), ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(ApiError::Malformed("the body must be a JSON object".into())),
    }
}

/// Deserialises one value and refuses trailing bytes.
fn deserialize_all<'de, T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, ApiError> {
    let value = T::deserialize(&mut *de).map_err(|e| ApiError::Malformed(json_error(&e)))?;
    de.end().map_err(|e| ApiError::Malformed(json_error(&e)))?;
    Ok(value)
}

fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => format!("the body is not valid JSON: {e}"),
        Category::Data => format!("the body does not fit the request's shape: {e}"),
        Category::Io => "the body could not be read".into(),
    }
}

/// A session id from the path.
#[derive(Debug, Clone)]
pub struct SessionPath(pub SessionId);

impl FromRequestParts<AppState> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::Malformed(e.body_text()))?;
        SessionId::parse(raw)
            .map(SessionPath)
            .map_err(|e| ApiError::Malformed(e.to_string()))
    }
}

/// A VM id from the path.
#[derive(Debug, Clone)]
pub struct VmPath(pub VmId);

impl FromRequestParts<AppState> for VmPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::Malformed(e.body_text()))?;
        VmId::parse(raw)
            .map(VmPath)
            .map_err(|e| ApiError::Malformed(e.to_string()))
    }
}

/// A query string of type `T`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::Malformed(e.body_text()))
    }
}

/// The `Idempotency-Key` header, validated as a command id.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<CommandId>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(IdempotencyKey(None));
        };
        let text = value
            .to_str()
            .map_err(|_| ApiError::Malformed("Idempotency-Key must be printable ASCII".into()))?;
        CommandId::parse(text)
            .map(|id| IdempotencyKey(Some(id)))
            .map_err(|e| ApiError::Malformed(format!("Idempotency-Key: {e}")))
    }
}
