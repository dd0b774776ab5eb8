//! [`ValidJson`]: a JSON body whose type errors name the field.
//!
//! actix's `Json<T>` reports "invalid type: integer `5`, expected a string"
//! without saying where. This extractor lets `Json<Value>` check the
//! content type, size and syntax (the `JsonConfig` in `configure`), then
//! deserializes `T` with `serde_path_to_error`, so a 422 says
//! "username: invalid type: …".

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::errors::AppError;

/// A deserialized JSON body.
#[derive(Debug)]
pub struct ValidJson<T>(pub T);

impl<T> ValidJson<T> {
    /// The body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Deserializes `T` from `v`, naming the field of a type error.
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, AppError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let msg: String = if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        };
        AppError::Validation(msg.chars().take(200).collect())
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for ValidJson<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<Value>::from_request(req, payload);
        Box::pin(async move {
            let v = json.await?.into_inner();
            Ok(ValidJson(from_value(v)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::RegisterRequest;
    use serde_json::json;

    #[test]
    fn type_errors_name_the_field() {
        let e = from_value::<RegisterRequest>(json!({"username": 5, "password": "x"})).unwrap_err();
        assert!(e.to_string().contains("username: invalid type"), "{e}");
        let e = from_value::<RegisterRequest>(json!({"username": "abc"})).unwrap_err();
        assert!(e.to_string().contains("missing field `password`"), "{e}");
        let e = from_value::<RegisterRequest>(json!([1, 2])).unwrap_err();
        assert!(e.to_string().contains("validation failed"), "{e}");
    }
}
