//! Bad-input tables (issue 11, G): per dialect, malformed headers, ranges,
//! digests, paths and bodies answer the exact status in the dialect's
//! error format, and leave the user's sessions and files as they were.
//! (Framework-level rejections — invalid UTF-8, duplicated query
//! parameters, unknown routes — have their own tables.)

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Format {
    /// `{"error":{"code","message"}}` with this code (native, Graph).
    Error(&'static str),
    /// tus 1.0: text/plain.
    Text,
    /// IETF draft: application/problem+json.
    Problem,
    /// Box: `{"type":"error","code"}` with this code.
    Box(&'static str),
    /// Vault: `{"responseStatus":"FAILURE","errors":[{"type"}]}` with this type.
    Vault(&'static str),
    /// FastAPI: `{"detail": …}`.
    Detail,
}

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    format: Format,
    bare_auth: bool,
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    status: u16,
    format: Format,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        headers: vec![],
        body: vec![],
        status,
        format,
        bare_auth: false,
    }
}

impl Case {
    fn h(mut self, k: &'static str, v: impl Into<String>) -> Case {
        self.headers.push((k, v.into()));
        self
    }
    fn body(mut self, b: impl AsRef<[u8]>) -> Case {
        self.body = b.as_ref().to_vec();
        self
    }
    fn json(self, b: &str) -> Case {
        self.h("content-type", "application/json").body(b)
    }
    fn form(mut self, b: &str) -> Case {
        self.bare_auth = true;
        self.h("content-type", "application/x-www-form-urlencoded")
            .body(b)
    }
}

fn format_ok(f: Format, text: &str, ctype: &str) -> bool {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match f {
        Format::Error(code) => v["error"]["code"] == code && v["error"]["message"].is_string(),
        Format::Text => ctype.starts_with("text/plain") && !text.trim().is_empty(),
        Format::Problem => ctype.starts_with("application/problem+json") && v["title"].is_string(),
        Format::Box(code) => v["type"] == "error" && v["code"] == code,
        Format::Vault(t) => v["responseStatus"] == "FAILURE" && v["errors"][0]["type"] == t,
        Format::Detail => !v["detail"].is_null(),
    }
}

async fn snapshot(s: &Server, tok: &str) -> Value {
    let (_, list) = call(s, Method::GET, "/v1/sessions", Some(tok), None).await;
    let mut out = Vec::new();
    for sess in list["sessions"].as_array().unwrap() {
        let id = sess["id"].as_str().unwrap();
        out.push(
            call(
                s,
                Method::GET,
                &format!("/v1/sessions/{id}"),
                Some(tok),
                None,
            )
            .await
            .1,
        );
    }
    let (_, files) = call(s, Method::GET, "/v1/spaces/ines/list/", Some(tok), None).await;
    json!({"sessions": out, "files": files})
}

#[tokio::test]
async fn malformed_headers_ranges_digests_paths_and_bodies_answer_each_dialects_error() {
    let s = Server::start();
    let tok = user(&s, "ines").await;
    let c = http();
    // One live upload per dialect, each with a byte or more received.
    let native = create_session(&s, &tok, json!({"path": "bad/n.bin", "size": 10})).await;
    let nu = native["uploads"][0]["id"].as_str().unwrap().to_owned();
    let done = create_session(&s, &tok, json!({"path": "bad/file.bin", "size": 4})).await;
    let du = done["uploads"][0]["id"].as_str().unwrap();
    assert_eq!(part(&s, &tok, du, 1, b"data").await.0, StatusCode::OK);
    let ds = done["id"].as_str().unwrap();
    assert_eq!(
        call(
            &s,
            Method::POST,
            &format!("/v1/sessions/{ds}/commit"),
            Some(&tok),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let tus = c
        .post(format!("{}/tus/", s.url))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    let tus_path = tus.headers()["location"].to_str().unwrap().to_owned();
    let tus_path = format!("/tus/{}", tus_path.rsplit('/').next().unwrap());
    let g: Value = c
        .post(format!(
            "{}/v1.0/me/drive/root:/bad/g.bin:/createUploadSession",
            s.url
        ))
        .bearer_auth(&tok)
        .json(&json!({"item": {"fileSize": 10}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let graph = g["uploadUrl"].as_str().unwrap().to_owned();
    let (_, bx) = call(
        &s,
        Method::POST,
        "/api/2.0/files/upload_sessions",
        Some(&tok),
        Some(json!({"folder_id": "0", "file_name": "b.bin", "file_size": 10})),
    )
    .await;
    let bx = format!(
        "/api/2.0/files/upload_sessions/{}",
        bx["id"].as_str().unwrap()
    );
    let vault = "/api/v25.1/services/file_staging/upload";
    let ws = "/api/v1/workspaces/ines/upload_sessions";
    let (_, dsess) = call(&s, Method::POST, ws, Some(&tok), Some(json!({}))).await;
    let dsess = format!("{ws}/{}", dsess["session_id"].as_str().unwrap());

    use Format::*;
    let put = Method::PUT;
    let post = Method::POST;
    let nu_part = format!("/v1/uploads/{nu}/parts/1");
    let ten = "0123456789";
    let cases = vec![
        // native
        case(
            "Content-Digest not wrapped in colons",
            put.clone(),
            &nu_part,
            400,
            Error("invalid_header"),
        )
        .h("content-digest", "sha-256=abc")
        .body(ten),
        case(
            "Content-Digest of the wrong length",
            put.clone(),
            &nu_part,
            400,
            Error("invalid_header"),
        )
        .h("content-digest", "sha-256=:AAAA:")
        .body(ten),
        case(
            "Content-MD5 not base64",
            put.clone(),
            &nu_part,
            400,
            Error("invalid_header"),
        )
        .h("content-md5", "!!!")
        .body(ten),
        case(
            "Content-MD5 that does not match",
            put.clone(),
            &nu_part,
            422,
            Error("digest_mismatch"),
        )
        .h("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")
        .body(ten),
        case(
            "part number 0",
            put.clone(),
            format!("/v1/uploads/{nu}/parts/0"),
            416,
            Error("range_not_satisfiable"),
        )
        .body(ten),
        case(
            "part number not a number",
            put.clone(),
            format!("/v1/uploads/{nu}/parts/x"),
            400,
            Error("invalid_range"),
        )
        .body(ten),
        case(
            "a path with ..",
            post.clone(),
            "/v1/sessions",
            400,
            Error("invalid_path"),
        )
        .json(r#"{"path":"a/../../etc","size":1}"#),
        case(
            "a negative size",
            post.clone(),
            "/v1/sessions",
            400,
            Error("invalid_body"),
        )
        .json(r#"{"path":"a","size":-1}"#),
        case(
            "a size that is a string",
            post.clone(),
            "/v1/sessions",
            400,
            Error("invalid_body"),
        )
        .json(r#"{"path":"a","size":"ten"}"#),
        case(
            "a body that is not JSON",
            post.clone(),
            "/v1/sessions",
            400,
            Error("invalid_body"),
        )
        .json("{\"path\":"),
        case(
            "an unknown conflict policy",
            post.clone(),
            "/v1/sessions",
            400,
            Error("invalid_body"),
        )
        .json(r#"{"path":"a","size":1,"conflict":"maybe"}"#),
        case(
            "a Range past the end",
            Method::GET,
            "/v1/spaces/ines/files/bad/file.bin",
            416,
            Error("range_not_satisfiable"),
        )
        .h("range", "bytes=100-"),
        // tus 1.0
        case(
            "Upload-Offset not a number",
            Method::PATCH,
            &tus_path,
            400,
            Text,
        )
        .h("tus-resumable", "1.0.0")
        .h("upload-offset", "x")
        .h("content-type", "application/offset+octet-stream")
        .body(ten),
        case(
            "Upload-Offset not where the upload is",
            Method::PATCH,
            &tus_path,
            409,
            Text,
        )
        .h("tus-resumable", "1.0.0")
        .h("upload-offset", "5")
        .h("content-type", "application/offset+octet-stream")
        .body(ten),
        case(
            "a PATCH that is not offset+octet-stream",
            Method::PATCH,
            &tus_path,
            415,
            Text,
        )
        .h("tus-resumable", "1.0.0")
        .h("upload-offset", "0")
        .h("content-type", "text/plain")
        .body(ten),
        case(
            "Upload-Checksum with an unknown algorithm",
            Method::PATCH,
            &tus_path,
            400,
            Text,
        )
        .h("tus-resumable", "1.0.0")
        .h("upload-offset", "0")
        .h("content-type", "application/offset+octet-stream")
        .h("upload-checksum", "crc32 AAAA")
        .body(ten),
        case(
            "Upload-Checksum that does not match",
            Method::PATCH,
            &tus_path,
            460,
            Text,
        )
        .h("tus-resumable", "1.0.0")
        .h("upload-offset", "0")
        .h("content-type", "application/offset+octet-stream")
        .h("upload-checksum", "sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .body(ten),
        case("Upload-Length negative", post.clone(), "/tus/", 400, Text)
            .h("tus-resumable", "1.0.0")
            .h("upload-length", "-1"),
        case(
            "Upload-Metadata not base64",
            post.clone(),
            "/tus/",
            400,
            Text,
        )
        .h("tus-resumable", "1.0.0")
        .h("upload-length", "1")
        .h("upload-metadata", "filename !!!"),
        case(
            "Upload-Concat neither partial nor final",
            post.clone(),
            "/tus/",
            400,
            Text,
        )
        .h("tus-resumable", "1.0.0")
        .h("upload-length", "1")
        .h("upload-concat", "sometimes"),
        case("a filename with ..", post.clone(), "/tus/", 400, Text)
            .h("tus-resumable", "1.0.0")
            .h("upload-length", "1")
            .h("upload-metadata", "filename Li4vLi4vZXRj"),
        // IETF draft
        case(
            "draft offset not where the upload is",
            Method::PATCH,
            &tus_path,
            409,
            Problem,
        )
        .h("upload-draft-interop-version", "8")
        .h("upload-offset", "5")
        .h("upload-complete", "?0")
        .h("content-type", "application/partial-upload")
        .body(ten),
        // Graph
        case(
            "a Content-Range whose last byte comes first",
            put.clone(),
            &graph,
            400,
            Error("invalidRequest"),
        )
        .h("content-range", "bytes 5-1/10")
        .body(ten),
        case(
            "a Content-Range with another total",
            put.clone(),
            &graph,
            416,
            Error("invalidRange"),
        )
        .h("content-range", "bytes 0-9/11")
        .body(ten),
        case(
            "a Content-Range that is not bytes",
            put.clone(),
            &graph,
            400,
            Error("invalidRequest"),
        )
        .h("content-range", "items 0-9/10")
        .body(ten),
        case(
            "a createUploadSession body that is not JSON",
            post.clone(),
            "/v1.0/me/drive/root:/bad/x.bin:/createUploadSession",
            400,
            Error("invalidRequest"),
        )
        .json("{"),
        case(
            "a Graph path with a NUL",
            post.clone(),
            "/v1.0/me/drive/root:/a%00b:/createUploadSession",
            400,
            Error("invalidRequest"),
        )
        .json("{}"),
        // Box
        case(
            "a Box part without digest",
            put.clone(),
            &bx,
            400,
            Box("missing_digest"),
        )
        .h("content-range", "bytes 0-9/10")
        .body(ten),
        case(
            "a Box digest with sha1= instead of sha=",
            put.clone(),
            &bx,
            400,
            Box("bad_digest"),
        )
        .h("content-range", "bytes 0-9/10")
        .h("digest", "sha1=h9YHjiF4bQtk2Sbu3emVHM1jaX4=")
        .body(ten),
        case(
            "a Box part whose SHA-1 does not match",
            put.clone(),
            &bx,
            400,
            Box("bad_digest"),
        )
        .h("content-range", "bytes 0-9/10")
        .h("digest", "sha=AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .body(ten),
        case(
            "a Box Content-Range that is malformed",
            put.clone(),
            &bx,
            400,
            Box("bad_request"),
        )
        .h("content-range", "bytes x-y/10")
        .h("digest", "sha=h9YHjiF4bQtk2Sbu3emVHM1jaX4=")
        .body(ten),
        case(
            "a Box creation with a negative size",
            post.clone(),
            "/api/2.0/files/upload_sessions",
            400,
            Box("invalid_file_size"),
        )
        .json(r#"{"folder_id":"0","file_name":"z.bin","file_size":-1}"#),
        case(
            "a Box creation without a name",
            post.clone(),
            "/api/2.0/files/upload_sessions",
            400,
            Box("missing_file_name"),
        )
        .json(r#"{"folder_id":"0","file_size":1}"#),
        case(
            "a Box body that is not JSON",
            post.clone(),
            "/api/2.0/files/upload_sessions",
            400,
            Box("bad_request"),
        )
        .json("{"),
        // Vault
        case(
            "a Vault size that is not a number",
            post.clone(),
            vault,
            400,
            Vault("INVALID_DATA"),
        )
        .form("path=%2Fz.bin&size=ten"),
        case(
            "a Vault creation without path",
            post.clone(),
            vault,
            400,
            Vault("PARAMETER_REQUIRED"),
        )
        .form("size=10"),
        // deepset
        case(
            "a deepset body that is not JSON",
            post.clone(),
            ws,
            422,
            Detail,
        )
        .json("{"),
        case(
            "a deepset status that does not exist",
            put.clone(),
            &dsess,
            422,
            Detail,
        )
        .json(r#"{"status":"SOMETIMES"}"#),
    ];
    let before = snapshot(&s, &tok).await;
    let mut failures = Vec::new();
    for k in &cases {
        let mut rb = c.request(k.method.clone(), s.url_of(&k.path));
        rb = if k.bare_auth {
            rb.header("authorization", &tok)
        } else {
            rb.bearer_auth(&tok)
        };
        for (h, v) in &k.headers {
            rb = rb.header(*h, v);
        }
        let resp = rb.body(k.body.clone()).send().await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await.unwrap();
        if status != k.status || !format_ok(k.format, &text, &ctype) {
            failures.push(format!(
                "{}: wanted {} {:?}, got {status} {ctype} {text}",
                k.what, k.status, k.format
            ));
        }
        if text.contains(&*s.data.to_string_lossy()) {
            failures.push(format!("{}: reveals the data path: {text}", k.what));
        }
    }
    let after = snapshot(&s, &tok).await;
    assert_eq!(before, after, "bad input changed nothing");
    eprintln!(
        "bad-input tables: {} cases, {} failures",
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn a_tus_patch_whose_content_type_only_starts_with_offset_octet_stream_answers_415() {
    let s = Server::start();
    let tok = user(&s, "ines").await;
    let c = http();
    let r = c
        .post(format!("{}/tus/", s.url))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let r = c
        .patch(format!("{}/tus/{loc}", s.url))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-streamx")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (st, list) = call(&s, Method::GET, "/v1/spaces/ines/list/", Some(&tok), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["entries"], json!([]), "nothing was written");
}
