//! Several `ferry serve` processes on one PostgreSQL database: what one
//! node does, the others see. Runs when `FERRY_TEST_DATABASE_URL` names a
//! PostgreSQL server (the CI stage on PostgreSQL sets it); skipped
//! otherwise, unless `FERRY_REQUIRE_POSTGRES=1`.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

/// Two nodes on one fresh database, or `None` (skipped) without PostgreSQL.
fn two_nodes() -> Option<(Server, Server)> {
    if std::env::var("FERRY_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        let a = Server::start();
        let url = a.database_url().expect("on PostgreSQL").to_owned();
        let b = Server::start_with(&[("FERRY_DATABASE_URL", &url)]);
        return Some((a, b));
    }
    assert!(
        std::env::var("FERRY_REQUIRE_POSTGRES").as_deref() != Ok("1"),
        "FERRY_REQUIRE_POSTGRES=1 but FERRY_TEST_DATABASE_URL is not set"
    );
    eprintln!("FERRY_TEST_DATABASE_URL is not set: skipped");
    None
}

#[tokio::test]
async fn a_token_revoked_on_one_node_is_refused_by_another_within_1_s() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let (st, t) = call(
        &a,
        Method::POST,
        "/v1/admin/users/alice/tokens",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let (tok, id) = (t["token"].as_str().unwrap(), t["id"].as_str().unwrap());
    // Node b knows (and caches) both of alice's tokens.
    for token in [alice.as_str(), tok] {
        let (st, me) = call(&b, Method::GET, "/v1/me", Some(token), None).await;
        assert_eq!((st, me["user"].clone()), (StatusCode::OK, json!("alice")));
    }
    let (st, v) = call(
        &a,
        Method::DELETE,
        &format!("/v1/admin/tokens/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let revoked = Instant::now();
    loop {
        let (st, v) = call(&b, Method::GET, "/v1/me", Some(tok), None).await;
        if st == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(st, StatusCode::OK, "{v}");
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "node b still accepts the token revoked on node a after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other token still works on both.
    for n in [&a, &b] {
        let (st, _) = call(n, Method::GET, "/v1/me", Some(&alice), None).await;
        assert_eq!(st, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_signed_upload_url_from_one_node_is_accepted_by_another() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let v = create_session(&a, &alice, json!({"path": "s.bin", "size": 10})).await;
    let url = v["uploads"][0]["url"].as_str().unwrap();
    let (_, query) = url.split_once('?').unwrap();
    let id = v["uploads"][0]["id"].as_str().unwrap();
    // Without a token: the signature alone grants the upload, on node b.
    let (st, parts) = call(
        &b,
        Method::GET,
        &format!("/v1/uploads/{id}/parts?{query}"),
        None,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{parts}");
    // A signature node b would make with a key of its own is refused.
    let forged = format!("/v1/uploads/{id}/parts?sig={}", "0".repeat(64));
    let (st, _) = call(&b, Method::GET, &forged, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn nodes_sharing_a_database_share_the_admin_and_its_token() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    // One admin, created by the first node; a user made on one node signs
    // in on the other.
    let bob = user(&b, "bob").await;
    let (st, me) = call(&a, Method::GET, "/v1/me", Some(&bob), None).await;
    assert_eq!(
        (st, me["user"].clone()),
        (StatusCode::OK, json!("bob")),
        "{me}"
    );
    let (st, users) = call(
        &a,
        Method::POST,
        "/v1/admin/users",
        Some(ADMIN),
        Some(json!({"name": "bob"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "a user is created once: {users}");
}
