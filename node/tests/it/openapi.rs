//! The OpenAPI document at `/api/openapi.json`: served without a token, OpenAPI 3.x, naming
//! exactly the routes of the API (and the node routing exactly what it names), and real answers
//! valid against the schemas it gives for them. Also the answers to inputs that once escaped the
//! API's error shape.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

/// Every route of the API (contract section 2), with `/ws` and the document itself.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/api/openapi.json"),
    ("post", "/api/auth/signup"),
    ("post", "/api/auth/login"),
    ("post", "/api/auth/refresh"),
    ("post", "/api/auth/logout"),
    ("get", "/api/users"),
    ("get", "/api/users/me"),
    ("patch", "/api/users/me"),
    ("delete", "/api/users/me"),
    ("get", "/api/users/{id}"),
    ("post", "/api/conversations"),
    ("get", "/api/conversations"),
    ("get", "/api/conversations/{id}"),
    ("patch", "/api/conversations/{id}"),
    ("post", "/api/conversations/{id}/members"),
    ("delete", "/api/conversations/{id}/members/{user_id}"),
    ("get", "/api/conversations/{id}/messages"),
    ("post", "/api/conversations/{id}/messages"),
    ("patch", "/api/conversations/{id}/messages/{msg_id}"),
    ("delete", "/api/conversations/{id}/messages/{msg_id}"),
    ("post", "/api/attachments"),
    ("get", "/api/attachments/{id}"),
    ("get", "/ws"),
];

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

async fn document(n: &TestNode) -> Value {
    let r = n.http.get(n.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// The (method, path) pairs the document names.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(*method).is_some() {
                ops.insert((method.to_string(), path.clone()));
            }
        }
    }
    ops
}

/// `path` with every `{param}` replaced by `value`.
fn fill(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[rest.find('}').unwrap() + 1..];
    }
    out.push_str(rest);
    out
}

/// A JSON pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A validator of the JSON body the document gives for `status` of `method path`.
fn response_schema(doc: &Value, method: &str, path: &str, status: u16) -> jsonschema::Validator {
    let mut pointer = format!("/paths/{}/{method}/responses/{status}", escape(path));
    let response = doc.pointer(&pointer).unwrap_or_else(|| panic!("{method} {path} documents no {status}"));
    if let Some(r) = response.get("$ref") {
        pointer = r.as_str().unwrap().trim_start_matches('#').to_string();
    }
    pointer.push_str("/content/application~1json/schema");
    assert!(doc.pointer(&pointer).is_some(), "{method} {path} {status} has no JSON body");
    // As a URI fragment, the braces of path templates are percent-encoded.
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    let mut schema = doc.clone();
    schema["$ref"] = json!(format!("#{fragment}"));
    jsonschema::validator_for(&schema).unwrap()
}

/// Asserts that `body`, answered with `status` to `method path`, is valid against its schema.
fn assert_conforms(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let schema = response_schema(doc, method, path, status);
    let errors: Vec<String> = schema.iter_errors(body).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{method} {path} {status}: {errors:?}\n{body}");
}

#[tokio::test]
async fn the_document_is_served_without_a_token_and_is_openapi_3() {
    let n = TestNode::start().await;
    let doc = document(&n).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "Rookery HTTP API");
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!((bearer["type"].as_str(), bearer["scheme"].as_str()), (Some("http"), Some("bearer")));
    // Every operation id is unique, and every security requirement names a declared scheme.
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()), "{method} {path}: duplicate id");
        for requirement in op["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(doc["components"]["securitySchemes"].get(scheme).is_some(), "{method} {path}: {scheme}");
            }
        }
    }
}

#[tokio::test]
async fn the_document_names_every_route_and_the_node_routes_what_it_names() {
    let n = TestNode::start().await;
    let a = n.signup("alice").await;
    let doc = document(&n).await;
    let expected: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(operations(&doc), expected);

    // Each named operation is routed (no 404 "no such route", no 405), and every other method
    // on a named path is a 405 with `Allow`: the router has no route the document omits there.
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    for path in paths {
        for method in METHODS {
            let url = n.url(&fill(path, "x"));
            let r = n
                .http
                .request(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), &url)
                .bearer_auth(tok(&a))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if expected.contains(&(method.to_string(), path.to_string())) {
                assert_ne!(status, 405, "{method} {path}");
                assert_ne!(body["error"]["message"], "no such route", "{method} {path}");
            } else {
                assert_eq!(status, 405, "{method} {path} is routed but not documented");
                assert!(allow.is_some(), "{method} {path}: 405 without Allow");
                assert_eq!(body["error"]["code"], "bad_request", "{method} {path}");
            }
        }
    }
}

/// Every operation that takes a bearer token documents the answers of the token check (401,
/// 403 banned) and of the store (503); every write also the write limit (429); every JSON body
/// 400 and 413.
#[tokio::test]
async fn every_operation_documents_the_answers_of_its_extractors() {
    let n = TestNode::start().await;
    let doc = document(&n).await;
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let responses = op["responses"].as_object().unwrap();
        let has = |s: &str| responses.contains_key(s);
        let bearer = op["security"].as_array().is_some_and(|r| r.iter().any(|r| r.get("bearer").is_some()));
        if bearer && path != "/ws" {
            assert!(has("401") && has("403") && has("503"), "{method} {path}: {:?}", responses.keys());
            if method != "get" {
                assert!(has("429"), "{method} {path}: the write limit");
            }
        }
        if op["requestBody"]["content"].get("application/json").is_some() {
            assert!(has("400") && has("413"), "{method} {path}: a JSON body");
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let content = match response.get("$ref") {
                    Some(r) => &doc.pointer(&r.as_str().unwrap()[1..]).unwrap()["content"],
                    None => &response["content"],
                };
                assert!(content.get("application/json").is_some(), "{method} {path} {status}: not the error body");
            }
        }
    }
}

#[tokio::test]
async fn real_answers_are_valid_against_their_schemas() {
    let n = TestNode::start().await;
    let doc = document(&n).await;

    let (s, session) = n.post("/api/auth/signup", None, json!({"username":"alice","password":"password123"})).await;
    assert_conforms(&doc, "post", "/api/auth/signup", s, &session);
    let b = n.signup("bob").await;
    let token = tok(&session);

    let (s, body) = n.post("/api/auth/login", None, json!({"username":"alice","password":"password123"})).await;
    assert_conforms(&doc, "post", "/api/auth/login", s, &body);
    let (s, body) = n.post("/api/auth/login", None, json!({"username":"alice","password":"wrong-password"})).await;
    assert_eq!(s, 401);
    assert_conforms(&doc, "post", "/api/auth/login", s, &body);
    let (s, body) = n.post("/api/auth/refresh", None, json!({"refresh_token": session["refresh_token"]})).await;
    assert_conforms(&doc, "post", "/api/auth/refresh", s, &body);

    let (s, body) = n.get("/healthz", token).await;
    assert_conforms(&doc, "get", "/healthz", s, &body);
    let (s, body) = n.get("/readyz", token).await;
    assert_conforms(&doc, "get", "/readyz", s, &body);
    let (s, body) = n.get("/api/users/me", token).await;
    assert_conforms(&doc, "get", "/api/users/me", s, &body);
    let (s, body) = n.patch("/api/users/me", token, json!({"display_name":"Alice A"})).await;
    assert_conforms(&doc, "patch", "/api/users/me", s, &body);
    let (s, body) = n.get(&format!("/api/users/{}", uid(&b)), token).await;
    assert_conforms(&doc, "get", "/api/users/{id}", s, &body);
    let (s, body) = n.get("/api/users?q=b&limit=1", token).await;
    assert_conforms(&doc, "get", "/api/users", s, &body);
    let (s, body) = n.get("/api/users/missing", token).await;
    assert_eq!(s, 404);
    assert_conforms(&doc, "get", "/api/users/{id}", s, &body);
    let (s, body) = n.get("/api/users/me", "not-a-token").await;
    assert_eq!(s, 401);
    assert_conforms(&doc, "get", "/api/users/me", s, &body);

    let (s, conv) =
        n.post("/api/conversations", Some(token), json!({"kind":"group","title":"team","members":[uid(&b)]})).await;
    assert_conforms(&doc, "post", "/api/conversations", s, &conv);
    let (s, direct) = n.post("/api/conversations", Some(token), json!({"kind":"direct","members":[uid(&b)]})).await;
    assert_eq!(s, 201);
    assert_conforms(&doc, "post", "/api/conversations", s, &direct);
    let id = conv["id"].as_str().unwrap();

    let r = n
        .http
        .post(n.url("/api/attachments?name=cat.png"))
        .bearer_auth(token)
        .header("content-type", "image/png")
        .body(vec![1u8, 2, 3])
        .send()
        .await
        .unwrap();
    let (s, attachment) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_conforms(&doc, "post", "/api/attachments", s, &attachment);

    let send = json!({"client_id":"c1","body":"hello","attachments":[attachment["id"]]});
    let (s, msg) = n.post(&format!("/api/conversations/{id}/messages"), Some(token), send).await;
    assert_conforms(&doc, "post", "/api/conversations/{id}/messages", s, &msg);
    let msg_path = format!("/api/conversations/{id}/messages/{}", msg["id"].as_str().unwrap());
    let (s, body) = n.patch(&msg_path, token, json!({"body":"edited"})).await;
    assert_conforms(&doc, "patch", "/api/conversations/{id}/messages/{msg_id}", s, &body);
    let (s, body) = n.patch(&msg_path, tok(&b), json!({"body":"not mine"})).await;
    assert_eq!(s, 403);
    assert_conforms(&doc, "patch", "/api/conversations/{id}/messages/{msg_id}", s, &body);

    let (s, body) = n.get(&format!("/api/conversations/{id}/messages?limit=10"), token).await;
    assert_conforms(&doc, "get", "/api/conversations/{id}/messages", s, &body);
    let (s, body) = n.get(&format!("/api/conversations/{id}"), token).await;
    assert_conforms(&doc, "get", "/api/conversations/{id}", s, &body);
    let (s, body) = n.patch(&format!("/api/conversations/{id}"), token, json!({"title":"renamed"})).await;
    assert_conforms(&doc, "patch", "/api/conversations/{id}", s, &body);
    let (s, body) = n
        .post(&format!("/api/conversations/{id}/members"), Some(token), json!({"user_ids":[uid(&b)],"role":"admin"}))
        .await;
    assert_conforms(&doc, "post", "/api/conversations/{id}/members", s, &body);
    let (s, body) = n.get("/api/conversations", token).await;
    assert_conforms(&doc, "get", "/api/conversations", s, &body);
    let (s, body) = n.post("/api/conversations", Some(token), json!({"kind":"channel"})).await;
    assert_eq!(s, 400);
    assert_conforms(&doc, "post", "/api/conversations", s, &body);

    // `/ws` without the upgrade headers, and without a token.
    let (s, body) = n.get("/ws", token).await;
    assert_eq!(s, 400);
    assert_conforms(&doc, "get", "/ws", s, &body);
    let r = n.http.get(n.url("/ws")).send().await.unwrap();
    let (s, body) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_eq!(s, 401);
    assert_conforms(&doc, "get", "/ws", s, &body);
}

// Inputs that once got an answer outside the document: a `text/plain` error, or a 2xx for a body
// that is not a JSON object.

/// serde reads a struct from a JSON array of its fields' values, so `[null, null]` was a valid
/// profile change and `[null]` a logout of every device.
#[tokio::test]
async fn json_bodies_that_are_not_objects_are_refused() {
    let n = TestNode::start().await;
    let a = n.signup("alice").await;
    let cases: &[(&str, &str, &str)] = &[
        ("PATCH", "/api/users/me", r#"["Mallory", null]"#),
        ("PATCH", "/api/users/me", "[null, null]"),
        ("POST", "/api/auth/login", r#"["alice", "password123"]"#),
        ("POST", "/api/auth/refresh", &format!("[{}]", a["refresh_token"])),
        ("POST", "/api/auth/logout", "[null]"),
        ("POST", "/api/auth/signup", r#"["bob", "password123", null]"#),
        ("POST", "/api/conversations", r#"["group", "team", []]"#),
        ("POST", "/api/auth/signup", "\"bob\""),
        ("POST", "/api/auth/signup", "17"),
        ("PATCH", "/api/users/me", "null"),
        // White space is not an empty logout body (and a form feed is not even JSON white space).
        ("POST", "/api/auth/logout", "\u{c}"),
        ("POST", "/api/auth/logout", "\t"),
    ];
    for (method, path, body) in cases {
        let r = n
            .http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), n.url(path))
            .bearer_auth(tok(&a))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{method} {path} {body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "bad_request", "{method} {path} {body}");
    }
    // Nothing changed: the profile is as it was and the refresh token still works.
    assert_eq!(n.get("/api/users/me", tok(&a)).await.1["display_name"], "alice");
    let (s, _) = n.post("/api/auth/refresh", None, json!({"refresh_token": a["refresh_token"]})).await;
    assert_eq!(s, 200);
}

/// The document allows `null` as a logout body (no body at all is allowed too): it logs out
/// every device, like `{}`.
#[tokio::test]
async fn a_null_logout_body_revokes_every_refresh_token() {
    let n = TestNode::start().await;
    let a = n.signup("alice").await;
    let r = n.http.post(n.url("/api/auth/logout")).bearer_auth(tok(&a)).body("null").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (s, _) = n.post("/api/auth/refresh", None, json!({"refresh_token": a["refresh_token"]})).await;
    assert_eq!(s, 401);
}

/// Path parameters that are not UTF-8 once percent-decoded were a 400 `text/plain`.
#[tokio::test]
async fn undecodable_path_parameters_get_the_error_body() {
    let n = TestNode::start().await;
    let a = n.signup("alice").await;
    let cases = [
        (Method::GET, "/api/users/%FF"),
        (Method::GET, "/api/conversations/%C3%28"),
        (Method::PATCH, "/api/conversations/x/messages/%FF"),
        (Method::DELETE, "/api/conversations/%FF/members/x"),
        (Method::GET, "/api/attachments/%80"),
    ];
    for (method, path) in cases {
        let r = n.http.request(method, n.url(path)).bearer_auth(tok(&a)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
}

/// A logout body over the 256 KiB limit was a 413 `text/plain`.
#[tokio::test]
async fn an_oversized_logout_body_gets_the_error_body() {
    let n = TestNode::start().await;
    let a = n.signup("alice").await;
    let big = format!("{{\"refresh_token\":\"{}\"}}", "x".repeat(300 * 1024));
    let r = n.http.post(n.url("/api/auth/logout")).bearer_auth(tok(&a)).body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large");
}
