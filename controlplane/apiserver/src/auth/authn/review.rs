//! TokenReview (`POST tokenreviews`): authenticates `spec.token` for `spec.audiences` with the
//! same chain as requests and reports the user, as upstream's tokenreview storage.

use serde_json::{json, Value};

use super::{Authenticator, AuthnError};
use crate::status::ApiError;

/// Serves one TokenReview.
pub async fn serve(authn: &Authenticator, body: &Value) -> Result<Value, ApiError> {
    let spec = &body["spec"];
    let token = spec["token"].as_str().unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::BadRequest(
            "token is required for TokenReview in authentication.k8s.io".into(),
        ));
    }
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let status = match authn.review(token, &audiences).await {
        Ok(Some((user, auds))) => json!({
            "authenticated": true,
            "user": user,
            "audiences": auds,
        }),
        Ok(None) => json!({"authenticated": false, "user": {}}),
        Err(AuthnError::Invalid(why)) => json!({"authenticated": false, "user": {}, "error": why}),
        Err(e) => json!({"authenticated": false, "user": {}, "error": e.to_string()}),
    };
    let mut metadata = body["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["creationTimestamp"] = json!(crate::defaults::now_rfc3339());
    Ok(json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }))
}
