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

/// Deserializes `T` from `v`, naming the field of a type error (never the
/// value: see [`without_values`]).
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, AppError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = without_values(&e.into_inner().to_string());
        let msg: String = if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        };
        AppError::Validation(msg.chars().take(200).collect())
    })
}

/// serde's message for a type error without the value it refused. serde
/// quotes that value (`invalid type: string "ghp_…", expected struct …`),
/// and the values of these bodies are passwords and GitHub tokens: the 422
/// answer and the log keep only the kind of value, what was expected (from
/// our own types), and our own field names.
fn without_values(msg: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            // The expected part is last, and comes from our types; the value
            // before it may itself contain ", expected ".
            if let Some((got, expected)) = rest.rsplit_once(", expected ") {
                let kind = got.split(['"', '`']).next().unwrap_or("").trim();
                return format!("{prefix}{kind}, expected {expected}");
            }
        }
    }
    let quotes_nothing = !msg.contains(['"', '`', '\'']);
    if msg.starts_with("missing field `") || quotes_nothing {
        return msg.to_string();
    }
    "a value of the wrong type or form".to_string()
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

    /// A value of the wrong type is never quoted back: it may be a password
    /// or a GitHub token sent in the wrong shape.
    #[test]
    fn type_errors_never_quote_the_value() {
        use crate::models::{ConfigureRequest, LoginRequest};
        let token = "ghp_0123456789abcdefABCDEF0123456789abcd";
        let cases = [
            (
                from_value::<ConfigureRequest>(json!(token)).unwrap_err(),
                "invalid type: string, expected struct ConfigureRequest",
            ),
            (
                from_value::<LoginRequest>(json!({"username": "jake", "password": 12345678}))
                    .unwrap_err(),
                "password: invalid type: integer, expected a string",
            ),
            (
                from_value::<ConfigureRequest>(json!({"token": [token]})).unwrap_err(),
                "token: invalid type: sequence, expected a string",
            ),
            (
                from_value::<ConfigureRequest>(json!({"token": {"x, expected y": token}}))
                    .unwrap_err(),
                "token: invalid type: map, expected a string",
            ),
        ];
        for (e, want) in cases {
            let msg = e.to_string();
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
            assert!(
                !msg.contains("ghp_") && !msg.contains("12345678"),
                "{msg:?}"
            );
        }
        assert_eq!(
            without_values("invalid type: string \"a, expected b\", expected a string"),
            "invalid type: string, expected a string"
        );
        assert_eq!(
            without_values("something `quoted` we do not know"),
            "a value of the wrong type or form"
        );
        assert_eq!(
            without_values("missing field `password`"),
            "missing field `password`"
        );
    }
}
