//! The calls the web console makes, against a real `ferry serve`: users,
//! limits, tokens, spaces and members for admins; moving files and
//! folders; sessions with their uploads; the live activity figures.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn put_file(s: &Server, tok: &str, space: &str, path: &str, data: &[u8]) -> StatusCode {
    put(
        s,
        &format!("/v1/spaces/{space}/files/{path}"),
        Some(tok),
        &[],
        data.to_vec(),
    )
    .await
    .0
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn admins_change_limits_tokens_and_members_and_they_take_effect_at_once() {
    let s = Server::start();
    let bob = user(&s, "bob").await;

    // Users, listed with usage; only for admins.
    assert_eq!(
        put_file(&s, &bob, "bob", "a.bin", &[7; 300]).await,
        StatusCode::CREATED
    );
    let (st, v) = call(&s, Method::GET, "/v1/admin/users", Some(ADMIN), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let row = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(row["used_bytes"], 300, "{row}");
    assert_eq!(row["quota_bytes"], Value::Null, "{row}");
    assert_eq!(row["open_sessions"], 0, "{row}");
    let (st, v) = call(&s, Method::GET, "/v1/admin/users", Some(&bob), None).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{v}"
    );

    // A quota set now holds now (the user was cached before).
    let (st, v) = call(&s, Method::GET, "/v1/me", Some(&bob), None).await;
    assert_eq!(
        (st, &v["quota_bytes"]),
        (StatusCode::OK, &Value::Null),
        "{v}"
    );
    let (st, v) = call(
        &s,
        Method::PATCH,
        "/v1/admin/users/bob",
        Some(ADMIN),
        Some(json!({"quota_bytes": 1000})),
    )
    .await;
    assert_eq!(
        (st, &v["quota_bytes"]),
        (StatusCode::OK, &json!(1000)),
        "{v}"
    );
    let (_, v) = call(&s, Method::GET, "/v1/me", Some(&bob), None).await;
    assert_eq!(v["quota_bytes"], 1000, "{v}");
    assert_eq!(
        put_file(&s, &bob, "bob", "big.bin", &[1; 800]).await,
        StatusCode::INSUFFICIENT_STORAGE
    );
    // Absent fields stay; null goes back to the default.
    let (st, v) = call(
        &s,
        Method::PATCH,
        "/v1/admin/users/bob",
        Some(ADMIN),
        Some(json!({"max_open_sessions": 2})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["quota_bytes"], &v["max_open_sessions"]),
        (&json!(1000), &json!(2))
    );
    let (st, v) = call(
        &s,
        Method::PATCH,
        "/v1/admin/users/bob",
        Some(ADMIN),
        Some(json!({"quota_bytes": null})),
    )
    .await;
    assert_eq!(
        (st, &v["quota_bytes"]),
        (StatusCode::OK, &Value::Null),
        "{v}"
    );
    assert_eq!(
        put_file(&s, &bob, "bob", "big.bin", &[1; 800]).await,
        StatusCode::CREATED
    );
    for (body, status, code) in [
        (
            json!({"quota_bytes": "lots"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"quota_bytes": -1}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"admin": true}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let (st, v) = call(
            &s,
            Method::PATCH,
            "/v1/admin/users/bob",
            Some(ADMIN),
            Some(body.clone()),
        )
        .await;
        assert_eq!((st, error_code(&v)), (status, code), "{body}: {v}");
    }
    let (st, v) = call(
        &s,
        Method::PATCH,
        "/v1/admin/users/nobody",
        Some(ADMIN),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{v}"
    );

    // Tokens: listed without secrets, revoked ones refused at once.
    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/admin/users/bob/tokens",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (second_id, second) = (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    );
    let (st, v) = call(
        &s,
        Method::GET,
        "/v1/admin/users/bob/tokens",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let toks = v["tokens"].as_array().unwrap();
    assert_eq!(toks.len(), 2, "{v}");
    assert!(
        !v.to_string().contains(&second),
        "a listing shows no secret"
    );
    assert_eq!(
        call(&s, Method::GET, "/v1/me", Some(&second), None).await.0,
        StatusCode::OK
    );
    let (st, _) = call(
        &s,
        Method::DELETE,
        &format!("/v1/admin/tokens/{second_id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&s, Method::GET, "/v1/me", Some(&second), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, v) = call(
        &s,
        Method::GET,
        "/v1/admin/users/bob/tokens",
        Some(ADMIN),
        None,
    )
    .await;
    let revoked: Vec<bool> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["revoked"].as_bool().unwrap())
        .collect();
    assert_eq!(revoked.iter().filter(|r| **r).count(), 1, "{v}");
    let (st, v) = call(
        &s,
        Method::GET,
        "/v1/admin/users/nobody/tokens",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    // Members: access follows each change at once.
    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/admin/spaces",
        Some(ADMIN),
        Some(json!({"name": "team"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(
        put_file(&s, ADMIN, "team", "doc.txt", b"hello").await,
        StatusCode::CREATED
    );
    let list = "/v1/spaces/team/list/";
    assert_eq!(
        call(&s, Method::GET, list, Some(&bob), None).await.0,
        StatusCode::FORBIDDEN
    );
    let member = "/v1/admin/spaces/team/members/bob";
    let (st, v) = call(
        &s,
        Method::PUT,
        member,
        Some(ADMIN),
        Some(json!({"access": "read"})),
    )
    .await;
    assert_eq!(
        (st, &v["members"]["bob"]),
        (StatusCode::OK, &json!("read")),
        "{v}"
    );
    assert_eq!(
        call(&s, Method::GET, list, Some(&bob), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        put_file(&s, &bob, "team", "b.txt", b"x").await,
        StatusCode::FORBIDDEN
    );
    let (_, me) = call(&s, Method::GET, "/v1/me", Some(&bob), None).await;
    let spaces = me["spaces"].as_array().unwrap();
    assert!(
        spaces.contains(&json!({"name": "bob", "access": "owner"})),
        "{me}"
    );
    assert!(
        spaces.contains(&json!({"name": "team", "access": "read"})),
        "{me}"
    );
    assert_eq!(spaces.len(), 2, "no other space shows: {me}");
    let (st, _) = call(
        &s,
        Method::PUT,
        member,
        Some(ADMIN),
        Some(json!({"access": "write"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        put_file(&s, &bob, "team", "b.txt", b"x").await,
        StatusCode::CREATED
    );
    let (st, v) = call(&s, Method::DELETE, member, Some(ADMIN), None).await;
    assert_eq!((st, &v["members"]), (StatusCode::OK, &json!({})), "{v}");
    assert_eq!(
        call(&s, Method::GET, list, Some(&bob), None).await.0,
        StatusCode::FORBIDDEN
    );
    let (st, v) = call(&s, Method::GET, "/v1/admin/spaces", Some(ADMIN), None).await;
    assert_eq!(st, StatusCode::OK);
    let names: Vec<&str> = v["spaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "bob", "team"], "{v}");
    for (path, body, status) in [
        (member, json!({"access": "admin"}), StatusCode::BAD_REQUEST),
        (
            "/v1/admin/spaces/nospace/members/bob",
            json!({"access": "read"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/admin/spaces/team/members/nobody",
            json!({"access": "read"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (st, v) = call(&s, Method::PUT, path, Some(ADMIN), Some(body)).await;
        assert_eq!(st, status, "{path}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    assert_eq!(
        call(
            &s,
            Method::PUT,
            member,
            Some(&bob),
            Some(json!({"access": "write"}))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn moving_a_file_or_a_folder_renames_it_everywhere_and_never_overwrites() {
    let s = Server::start();
    let tok = user(&s, "mo").await;
    let files = [
        ("a.txt", 11u64),
        ("dir/x.bin", 12),
        ("dir/sub/y.bin", 13),
        ("other/z.bin", 14),
    ];
    for (path, seed) in files {
        let data = random_bytes(1000 + seed as usize, seed);
        assert_eq!(
            put_file(&s, &tok, "mo", path, &data).await,
            StatusCode::CREATED
        );
    }
    let mv = |from: &str, to: &str| json!({"from": from, "to": to});
    let on_disk = |p: &str| s.data.join("spaces/mo").join(p).exists();
    let local = s.database_url().is_none() && s.data.join("spaces").exists();

    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/spaces/mo/move",
        Some(&tok),
        Some(mv("a.txt", "new/b.txt")),
    )
    .await;
    assert_eq!((st, &v["moved"]), (StatusCode::OK, &json!(1)), "{v}");
    let (st, got) = download(&s, &tok, "mo", "new/b.txt").await;
    assert_eq!((st, got), (StatusCode::OK, random_bytes(1011, 11)));
    assert_eq!(
        download(&s, &tok, "mo", "a.txt").await.0,
        StatusCode::NOT_FOUND
    );
    if local {
        assert!(
            on_disk("new/b.txt") && !on_disk("a.txt"),
            "the disk follows"
        );
    }

    // A folder: every file below it, the structure kept.
    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/spaces/mo/move",
        Some(&tok),
        Some(mv("dir", "d2")),
    )
    .await;
    assert_eq!((st, &v["moved"]), (StatusCode::OK, &json!(2)), "{v}");
    assert_eq!(
        download(&s, &tok, "mo", "d2/sub/y.bin").await.1,
        random_bytes(1013, 13)
    );
    let (_, v) = call(&s, Method::GET, "/v1/spaces/mo/list/", Some(&tok), None).await;
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["d2", "new", "other"], "{v}");
    if local {
        assert!(on_disk("d2/x.bin") && !on_disk("dir/x.bin"));
    }

    // Refusals leave everything where it was.
    for (body, status, code) in [
        (
            mv("d2/x.bin", "other/z.bin"),
            StatusCode::CONFLICT,
            "already_exists",
        ),
        (mv("d2", "other"), StatusCode::CONFLICT, "already_exists"),
        (
            mv("d2/x.bin", "new/b.txt/in"),
            StatusCode::CONFLICT,
            "already_exists",
        ),
        (
            mv("d2", "d2/deeper"),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (mv("nothing", "x"), StatusCode::NOT_FOUND, "not_found"),
        (
            mv("d2/x.bin", "../up"),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            json!({"from": "d2"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let (st, v) = call(
            &s,
            Method::POST,
            "/v1/spaces/mo/move",
            Some(&tok),
            Some(body.clone()),
        )
        .await;
        assert_eq!((st, error_code(&v)), (status, code), "{body}: {v}");
        assert!(
            !v.to_string().contains(s.data.to_str().unwrap()),
            "no internal path: {v}"
        );
    }
    assert_eq!(
        download(&s, &tok, "mo", "d2/x.bin").await.1,
        random_bytes(1012, 12)
    );
    assert_eq!(
        download(&s, &tok, "mo", "other/z.bin").await.1,
        random_bytes(1014, 14)
    );
    if local {
        assert!(!on_disk("other/z.bin/..") && !on_disk("new/b.txt/in"));
    }

    // Only writers move.
    let eve = user(&s, "eve").await;
    let (st, _) = call(
        &s,
        Method::POST,
        "/v1/spaces/mo/move",
        Some(&eve),
        Some(mv("d2", "d3")),
    )
    .await;
    assert!(
        matches!(st, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{st}"
    );
    assert_eq!(download(&s, &tok, "mo", "d2/x.bin").await.0, StatusCode::OK);
}

#[tokio::test]
async fn sessions_list_with_their_uploads_missing_ranges_and_the_activity_of_the_node() {
    let s = Server::start();
    let tok = user(&s, "sam").await;
    let v = create_session(
        &s,
        &tok,
        json!({"path": "half.bin", "size": 2 * 1024 * 1024, "part_size": 1024 * 1024}),
    )
    .await;
    let uid = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    let (st, _) = part(&s, &tok, &uid, 1, random_bytes(1024 * 1024, 3)).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = call(
        &s,
        Method::GET,
        "/v1/sessions?state=open&uploads=true",
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let up = &v["sessions"][0]["uploads"][0];
    assert_eq!(up["received_bytes"], 1024 * 1024, "{v}");
    assert_eq!(
        up["missing"],
        json!([[1024 * 1024, 2 * 1024 * 1024 - 1]]),
        "{v}"
    );
    let (_, v) = call(&s, Method::GET, "/v1/sessions?state=open", Some(&tok), None).await;
    assert!(
        v["sessions"][0].get("uploads").is_none_or(Value::is_null),
        "{v}"
    );

    // The second that received the part shows it; only admins see it.
    let t0 = Instant::now();
    let (received, committed) = loop {
        let (st, v) = call(&s, Method::GET, "/v1/admin/activity", Some(ADMIN), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let sum = |k: &str| {
            v["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x[k].as_u64().unwrap())
                .sum::<u64>()
        };
        if sum("bytes_received") >= 1024 * 1024 || t0.elapsed() > Duration::from_secs(10) {
            break (sum("bytes_received"), sum("files_committed"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(received >= 1024 * 1024, "{received}");
    assert_eq!(committed, 0);
    let (st, v) = call(&s, Method::GET, "/v1/admin/activity", Some(&tok), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
}
