//! Contract section 2, auth: signup, login, throttling, refresh rotation, logout, tokens.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn signup_validates_and_keeps_usernames_unique() {
    let n = TestNode::start().await;
    let s = n.signup("alice").await;
    assert_eq!(s["user"]["username"], "alice");
    assert_eq!(s["user"]["display_name"], "alice");
    assert_eq!(s["expires_in"], 900);
    assert!(s["refresh_token"].as_str().unwrap().len() >= 32);

    let (status, body) = n.post("/api/auth/signup", None, json!({"username":"alice","password":"password123"})).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "conflict");

    for bad in ["ab", "UPPER", "has space", "x".repeat(33).as_str(), "émile", ""] {
        let (status, body) = n.post("/api/auth/signup", None, json!({"username": bad, "password":"password123"})).await;
        assert_eq!(status, 400, "username {bad:?}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    for bad in ["short", &"p".repeat(257)] {
        let (status, _) = n.post("/api/auth/signup", None, json!({"username":"bob","password": bad})).await;
        assert_eq!(status, 400);
    }
    let (status, _) =
        n.post("/api/auth/signup", None, json!({"username":"bob","password":"password123","display_name":""})).await;
    assert_eq!(status, 400);
    let (status, _) = n.post("/api/auth/signup", None, json!({"username":"bob","password":12345678})).await;
    assert_eq!(status, 400, "wrong type");
    let (status, body) = n
        .post("/api/auth/signup", None, json!({"username":"bob.b-1_x","password":"password123","display_name":"Bob B"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["display_name"], "Bob B");
}

#[tokio::test]
async fn login_answers_the_same_for_unknown_users_and_wrong_passwords() {
    let n = TestNode::start().await;
    n.signup("alice").await;
    let (status, body) = n.post("/api/auth/login", None, json!({"username":"alice","password":"password123"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["username"], "alice");
    let (s1, wrong) = n.post("/api/auth/login", None, json!({"username":"alice","password":"nope-nope"})).await;
    let (s2, unknown) = n.post("/api/auth/login", None, json!({"username":"nobody","password":"nope-nope"})).await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong, unknown);
}

#[tokio::test]
async fn login_is_throttled_per_username_and_per_address() {
    let n = TestNode::start_with(|c| {
        c.login_failures_per_user = 3;
        c.login_failures_per_addr = 6;
    })
    .await;
    n.signup("alice").await;
    for _ in 0..3 {
        let (s, _) = n.post("/api/auth/login", None, json!({"username":"alice","password":"wrong-password"})).await;
        assert_eq!(s, 401);
    }
    // Throttled now, even with the right password.
    let r = n
        .http
        .post(n.url("/api/auth/login"))
        .json(&json!({"username":"alice","password":"password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    // Per address: failures spread over other usernames also block this client address.
    for i in 0..3 {
        let (s, _) =
            n.post("/api/auth/login", None, json!({"username": format!("ghost{i}"),"password":"wrong-password"})).await;
        assert_eq!(s, 401);
    }
    n.signup("carol").await;
    let (s, _) = n.post("/api/auth/login", None, json!({"username":"carol","password":"password123"})).await;
    assert_eq!(s, 429, "the address is throttled across usernames");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_is_refused() {
    let n = TestNode::start().await;
    let s = n.signup("alice").await;
    let first = s["refresh_token"].as_str().unwrap();
    let (status, rotated) = n.post("/api/auth/refresh", None, json!({"refresh_token": first})).await;
    assert_eq!(status, 200);
    let second = rotated["refresh_token"].as_str().unwrap();
    assert_ne!(first, second);
    let (status, me) = n.get("/api/users/me", tok(&rotated)).await;
    assert_eq!((status, me["username"].as_str()), (200, Some("alice")));

    // Reusing the first token is refused, and (a replay means theft) revokes the rotated one.
    let (status, body) = n.post("/api/auth/refresh", None, json!({"refresh_token": first})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = n.post("/api/auth/refresh", None, json!({"refresh_token": second})).await;
    assert_eq!(status, 401);
    let (status, _) = n.post("/api/auth/refresh", None, json!({"refresh_token": "garbage"})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let n = TestNode::start().await;
    let s = n.signup("alice").await;
    let (status, _) = n.post("/api/auth/logout", Some(tok(&s)), json!({"refresh_token": s["refresh_token"]})).await;
    assert_eq!(status, 204);
    let (status, _) = n.post("/api/auth/refresh", None, json!({"refresh_token": s["refresh_token"]})).await;
    assert_eq!(status, 401);

    // Without a body, every refresh token of the user stops working.
    let (_, a) = n.post("/api/auth/login", None, json!({"username":"alice","password":"password123"})).await;
    let (_, b) = n.post("/api/auth/login", None, json!({"username":"alice","password":"password123"})).await;
    let r = n.http.post(n.url("/api/auth/logout")).bearer_auth(tok(&a)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    for t in [&a, &b] {
        let (status, _) = n.post("/api/auth/refresh", None, json!({"refresh_token": t["refresh_token"]})).await;
        assert_eq!(status, 401);
    }
    let (status, _) = n.post("/api/auth/logout", None, json!({})).await;
    assert_eq!(status, 401, "logout needs a bearer token");
}

fn mint(sub: &str, iss: &str, exp_offset: i64, alg: Algorithm, secret: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({"sub": sub, "iss": iss, "iat": now, "exp": now + exp_offset});
    encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// The claims of `token` under an `{"alg":"none"}` header and no signature.
fn alg_none(token: &str) -> String {
    let claims = token.split('.').nth(1).unwrap();
    format!("{}.{claims}.", b64(r#"{"alg":"none","typ":"JWT"}"#))
}

/// `token` with its header replaced by `header` and its (HMAC) signature kept: key confusion,
/// a token that claims an asymmetric algorithm while carrying a signature made with the secret.
fn with_header(token: &str, header: &str) -> String {
    let mut parts = token.split('.');
    let (_, claims, sig) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
    format!("{}.{claims}.{sig}", b64(header))
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn bad_tokens_are_refused_on_the_api_and_the_gateway() {
    let n = TestNode::start().await;
    let s = n.signup("alice").await;
    let id = uid(&s);
    let good = mint(id, "rookery", 60, Algorithm::HS256, JWT_SECRET);
    assert_eq!(n.get("/api/users/me", &good).await.0, 200, "a well-formed token works");
    let bad = [
        mint(id, "rookery", -5, Algorithm::HS256, JWT_SECRET),
        mint(id, "someone-else", 60, Algorithm::HS256, JWT_SECRET),
        mint(id, "rookery", 60, Algorithm::HS384, JWT_SECRET),
        mint(id, "rookery", 60, Algorithm::HS256, "another-secret-another-secret-xxxxx"),
        "garbage".to_string(),
        alg_none(&good),
        alg_none(&good).replace(&b64(r#"{"alg":"none","typ":"JWT"}"#), &b64(r#"{"alg":"None","typ":"JWT"}"#)),
        format!("{}.", &good[..good.rfind('.').unwrap()]),
        with_header(&good, r#"{"alg":"RS256","typ":"JWT"}"#),
        with_header(&good, r#"{"alg":"ES256","typ":"JWT"}"#),
        with_header(&good, r#"{"alg":"PS256","typ":"JWT"}"#),
        with_header(&good, r#"{"alg":"EdDSA","typ":"JWT"}"#),
        with_header(&good, r#"{"alg":"HS256","typ":"JWT","jwk":{"kty":"oct","k":"AAAA"}}"#),
        mint(id, "rookery", 60, Algorithm::HS512, JWT_SECRET),
        mint(id, "rookery", 60, Algorithm::HS256, ""),
    ];
    for t in &bad {
        let (status, body) = n.get("/api/users/me", t).await;
        assert_eq!(status, 401, "token {t}");
        assert_eq!(body["error"]["code"], "unauthorized");
        let err = n.ws_raw(t).await.err().expect("upgrade refused");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 401),
            other => panic!("expected HTTP 401, got {other}"),
        }
    }
    let r = n.http.get(n.url("/api/users/me")).send().await.unwrap();
    assert_eq!(r.status(), 401, "missing token");
    let r = n.http.get(n.url("/ws")).send().await.unwrap();
    assert_eq!(r.status(), 401, "missing token on /ws");
    // ?token= works for browsers.
    let url = format!("{}/ws?token={}", n.ws_base, tok(&s));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::StreamExt;
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("\"op\":\"hello\""));
}

#[tokio::test]
async fn a_token_that_expires_during_a_connection_closes_it_with_4001() {
    let n = TestNode::start().await;
    let s = n.signup("alice").await;
    let short = mint(uid(&s), "rookery", 1, Algorithm::HS256, JWT_SECRET);
    let mut ws = n.ws_raw(&short).await.unwrap();
    ws.expect_op("hello").await;
    assert_eq!(ws.expect_close().await, 4001);
}

#[tokio::test]
async fn profiles_read_and_update() {
    let n = TestNode::start().await;
    let a = n.signup("alice").await;
    let b = n.signup("bob").await;
    let (status, u) = n.patch("/api/users/me", tok(&a), json!({"display_name":"Alice A"})).await;
    assert_eq!((status, u["display_name"].as_str()), (200, Some("Alice A")));
    let (status, u) = n.get(&format!("/api/users/{}", uid(&a)), tok(&b)).await;
    assert_eq!((status, u["display_name"].as_str()), (200, Some("Alice A")));
    assert!(u.get("password_hash").is_none());
    assert_eq!(n.get("/api/users/nope", tok(&b)).await.0, 404);
    assert_eq!(n.patch("/api/users/me", tok(&a), json!({"display_name":""})).await.0, 400);
}

#[tokio::test]
async fn users_are_found_by_username_or_display_name_prefix_page_by_page() {
    let n = TestNode::start().await;
    let me = n.signup("searcher").await;
    for i in 0..5 {
        let (s, _) = n
            .post(
                "/api/auth/signup",
                None,
                json!({"username": format!("match{i}"), "password":"password123", "display_name": format!("Zed {i}")}),
            )
            .await;
        assert_eq!(s, 201);
    }
    let (status, page) = n.get("/api/users?q=match&limit=3", tok(&me)).await;
    assert_eq!(status, 200);
    assert_eq!(page["users"].as_array().unwrap().len(), 3);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, rest) = n.get(&format!("/api/users?q=match&limit=3&cursor={cursor}"), tok(&me)).await;
    assert_eq!(rest["users"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    let (_, by_display) = n.get("/api/users?q=zed%203", tok(&me)).await;
    assert_eq!(by_display["users"][0]["username"], "match3");
    assert!(by_display["users"][0].get("password_hash").is_none());
    assert_eq!(n.get("/api/users?q=", tok(&me)).await.0, 400);
    assert_eq!(n.get("/api/users?q=x&limit=101", tok(&me)).await.0, 400);
    assert_eq!(n.http.get(n.url("/api/users?q=match")).send().await.unwrap().status(), 401);
}
