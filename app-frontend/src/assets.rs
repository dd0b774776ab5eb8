//! Static files, embedded in the binary (no working-directory assumptions)
//! and served under a content-hashed name (`/static/app.<hash>.css`) with a
//! one-year immutable cache: a new build changes the name, never the file.

use std::collections::HashMap;
use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use sha2::{Digest, Sha256};

use crate::errors::AppError;

/// The stylesheet built by `build-css.sh` (Tailwind CLI), committed.
const APP_CSS: &[u8] = include_bytes!("../static/app.css");
/// Our own small script (progressive enhancement only).
const APP_JS: &[u8] = include_bytes!("../static/app.js");

struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
}

/// Hashed URLs of the embedded files.
pub struct Assets {
    /// URL of the stylesheet.
    pub css_url: String,
    /// URL of the script.
    pub js_url: String,
    by_name: HashMap<String, Asset>,
}

fn hashed(stem: &str, ext: &str, bytes: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(bytes));
    format!("{stem}.{}.{ext}", &digest[..12])
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let css = hashed("app", "css", APP_CSS);
    let js = hashed("app", "js", APP_JS);
    let mut by_name = HashMap::new();
    by_name.insert(
        css.clone(),
        Asset {
            bytes: APP_CSS,
            content_type: "text/css; charset=utf-8",
        },
    );
    by_name.insert(
        js.clone(),
        Asset {
            bytes: APP_JS,
            content_type: "text/javascript; charset=utf-8",
        },
    );
    Assets {
        css_url: format!("/static/{css}"),
        js_url: format!("/static/{js}"),
        by_name,
    }
});

/// The embedded assets.
pub fn assets() -> &'static Assets {
    &ASSETS
}

/// `GET /static/{name}`: only the current hashed names exist.
pub async fn serve(name: web::Path<String>) -> Result<HttpResponse, AppError> {
    let a = assets()
        .by_name
        .get(name.as_str())
        .ok_or(AppError::NotFound)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, a.content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(a.bytes))
}
