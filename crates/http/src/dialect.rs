//! One mechanism that keeps every answer under a dialect's prefix in that
//! dialect's format, whoever produced it: the framework's rejections
//! (a path segment that is not UTF-8, a bad query string, a body over the
//! limit or not JSON, a refused WebSocket upgrade), and its `404`/`405`.
//!
//! A dialect's error types mark their responses ([`rendered`]); each
//! dialect router is wrapped by [`with_errors`] with its renderer, which
//! re-renders every error response that is not marked and is the
//! framework's (plain text or empty), keeping its status and message.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

/// Marks a response as rendered in a dialect's format.
#[derive(Clone, Copy, Debug)]
pub struct Rendered;

/// Marks `resp` as rendered in its dialect's format.
pub fn rendered(mut resp: Response) -> Response {
    resp.extensions_mut().insert(Rendered);
    resp
}

/// Renders an error in a dialect's format from the request's headers (a
/// mount may serve two protocols), a status and a message.
pub type Renderer = fn(&HeaderMap, StatusCode, String) -> Response;

/// Wraps a dialect's router: framework answers in the dialect's format
/// (see the module doc). Call it on the finished router of the dialect.
pub fn with_errors(router: axum::Router, render: Renderer) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(render, rerender))
}

/// A snake_case code for a status: `method_not_allowed`, `not_found`, …
pub fn status_code_name(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace([' ', '-'], "_")
}

/// Most bytes of a framework's message kept.
const MESSAGE_LIMIT: usize = 4096;

async fn rerender(
    axum::extract::State(render): axum::extract::State<Renderer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers().clone();
    if let Err((status, message)) = strict_utf8(req.uri()) {
        return rendered(render(&headers, status, message));
    }
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp.extensions().get::<Rendered>().is_some()
    {
        return resp;
    }
    let framework = match resp.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.as_bytes().starts_with(b"text/plain"),
    };
    if !framework {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MESSAGE_LIMIT)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut out = render(&headers, status, message);
    // Headers the framework set (`Allow` on a 405, …) stay.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && !out.headers().contains_key(name)
        {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered(out)
}

/// Most bytes of a form-urlencoded body (a control request's fields).
const FORM_LIMIT: usize = 1 << 20;

/// `s` with its `%XX` escapes decoded.
fn percent_decoded(s: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Whether `s`, percent-decoded, is UTF-8. (Splitting a query or form at
/// its literal `&` and `=` cannot make valid UTF-8 invalid, so the whole
/// string stands for each of its names and values.)
pub fn decodes_to_utf8(s: &[u8]) -> bool {
    std::str::from_utf8(&percent_decoded(s)).is_ok()
}

/// Refuses, before any handler decodes it lossily (U+FFFD), a request
/// whose path or query is not UTF-8 once decoded. (A form body is checked
/// by [`utf8_form`] in the handler that reads a form: elsewhere a body
/// labelled form-urlencoded is a file's bytes.)
fn strict_utf8(uri: &axum::http::Uri) -> Result<(), (StatusCode, String)> {
    if !decodes_to_utf8(uri.path().as_bytes()) {
        return Err((
            StatusCode::BAD_REQUEST,
            "the request path is not UTF-8 once percent-decoded".into(),
        ));
    }
    if !decodes_to_utf8(uri.query().unwrap_or_default().as_bytes()) {
        return Err((
            StatusCode::BAD_REQUEST,
            "the query string is not UTF-8 once percent-decoded".into(),
        ));
    }
    Ok(())
}

/// Refuses a form-urlencoded body that is not UTF-8 once percent-decoded,
/// before a form extractor decodes it lossily; other bodies pass as they
/// are. For the handlers that read a form (`axum::Form` from the result).
pub async fn utf8_form(
    req: axum::extract::Request,
) -> Result<axum::extract::Request, (StatusCode, String)> {
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a form body may hold at most {FORM_LIMIT} bytes"),
        )
    })?;
    if !decodes_to_utf8(&bytes) {
        return Err((
            StatusCode::BAD_REQUEST,
            "the form body is not UTF-8 once percent-decoded".into(),
        ));
    }
    Ok(axum::extract::Request::from_parts(parts, Body::from(bytes)))
}

/// A dialect's answer for a path under its prefix that names no route.
pub async fn no_route() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_checked_after_percent_decoding() {
        assert!(decodes_to_utf8(b"path=a%20b%E2%9C%93&x=1"));
        assert!(decodes_to_utf8(b"100%"));
        assert!(!decodes_to_utf8(b"path=a%FFb"));
        assert!(!decodes_to_utf8(b"path=%E2%9C"));
    }
}
