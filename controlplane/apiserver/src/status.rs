//! API errors as Kubernetes `Status` objects with the upstream reasons and codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use kennel_store::StoreError;

/// One field-level cause of an `Invalid` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, ...
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// JSON path of the field, e.g. `spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: field.into(),
        }
    }

    /// A field has a bad value.
    pub fn invalid(field: impl Into<String>, value: &str, why: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"{value}\": {}", why.into()),
            field: field.into(),
        }
    }
}

/// Every error an API request can end with; each maps to one HTTP status and `Status.reason`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 NotFound.
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// Plural resource, e.g. `pods` (with group suffix for non-core).
        resource: String,
        /// Object name.
        name: String,
    },
    /// 409 AlreadyExists.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// Plural resource.
        resource: String,
        /// Object name.
        name: String,
    },
    /// 409 Conflict on a stale resourceVersion.
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict {
        /// Plural resource.
        resource: String,
        /// Object name.
        name: String,
        /// Why.
        message: String,
    },
    /// 422 Invalid with causes.
    #[error("{kind} \"{name}\" is invalid: {}", causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>().join(", "))]
    Invalid {
        /// Kind, e.g. `Pod`.
        kind: String,
        /// Object name.
        name: String,
        /// The failing fields.
        causes: Vec<Cause>,
    },
    /// 400 BadRequest.
    #[error("{0}")]
    BadRequest(String),
    /// 401 Unauthorized.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403 Forbidden.
    #[error("{0}")]
    Forbidden(String),
    /// 405 MethodNotAllowed.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 406 NotAcceptable.
    #[error("only the following media types are accepted: {0}")]
    NotAcceptable(String),
    /// 410 Expired (Gone).
    #[error("{0}")]
    Gone(String),
    /// 413 RequestEntityTooLarge.
    #[error("Request entity too large: limit is {0} bytes")]
    TooLarge(usize),
    /// 415 UnsupportedMediaType.
    #[error(
        "the body of the request was in an unknown format - accepted media types include: {0}"
    )]
    UnsupportedMediaType(String),
    /// 404 for an unknown path or resource.
    #[error("the server could not find the requested resource")]
    UnknownResource,
    /// 500 InternalError (store failures).
    #[error("{0}")]
    Internal(String),
    /// 504 Timeout (e.g. conflicts kept happening).
    #[error("{0}")]
    Timeout(String),
}

impl ApiError {
    /// HTTP status code.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::UnknownResource => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::UnknownResource => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::Gone(_) => "Expired",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Internal(_) => "InternalError",
            ApiError::Timeout(_) => "Timeout",
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut details = json!({});
        match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
                details = json!({"name": name, "group": group, "kind": kind});
            }
            ApiError::Invalid { kind, name, causes } => {
                details = json!({
                    "name": name,
                    "kind": kind,
                    "causes": causes.iter().map(|c| json!({
                        "reason": c.reason, "message": c.message, "field": c.field
                    })).collect::<Vec<_>>(),
                });
            }
            _ => {}
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if details != json!({}) {
            status["details"] = details;
        }
        status
    }

    /// Maps a store error for `resource`/`name` to its API error.
    pub fn from_store(e: StoreError, resource: &str, name: &str) -> Self {
        match e {
            StoreError::AlreadyExists(_) => ApiError::AlreadyExists {
                resource: resource.into(),
                name: name.into(),
            },
            StoreError::NotFound(_) => ApiError::NotFound {
                resource: resource.into(),
                name: name.into(),
            },
            StoreError::Conflict { .. } => ApiError::Conflict {
                resource: resource.into(),
                name: name.into(),
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
            },
            StoreError::Compacted { requested, .. } => {
                ApiError::Gone(format!("too old resource version: {requested}"))
            }
            StoreError::BadContinue => ApiError::BadRequest("invalid continue token".into()),
            StoreError::FutureRevision(r) => {
                ApiError::Timeout(format!("Too large resource version: {r}"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let mut resp = (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.status().to_string(),
        )
            .into_response();
        if code == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// A `Status` with `status: Success`.
pub fn success(details: Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
