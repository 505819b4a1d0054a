//! The OpenAPI 3.1 document of the HTTP API, generated from the code and served at
//! `GET /api/openapi.json`.
//!
//! Each handler carries a `#[utoipa::path]` annotation: its method and path, parameters, body,
//! and every answer it can give. [`api_routes`] registers the handlers with `utoipa_axum`'s
//! `routes!`, which takes each route's path and methods from that annotation, so a route of the
//! API cannot exist without being in the document, and the document names no route that does
//! not exist. Request and response bodies are the types the handlers parse and answer, deriving
//! `ToSchema` (the wire objects in `rookery-protocol`, with its `openapi` feature). Validation
//! rules that JSON Schema can express (lengths, patterns, ranges, enums, unknown fields) are in
//! the schemas, and unit tests below check that they agree with the handlers' own checks.
//!
//! Only the web client's static files (`/`, `/app.js`, ...) are routed outside this document:
//! they are not part of the API.

use std::sync::{Arc, LazyLock};

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::error::{Forbidden, TooLarge, Unauthorized, Unavailable, WriteLimited};
use super::{attachments, auth_routes, conversations, users};
use crate::server::App;

/// Name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";
/// Name of the `?token=` security scheme (only `/ws` accepts it).
pub const QUERY_TOKEN: &str = "query_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rookery HTTP API",
        description = "The HTTP API of a Rookery chat node (its `--listen` address). Every error answer has the \
body `{\"error\":{\"code\",\"message\"}}` with the status of its code. `docs/protocol.md` is the full reference, \
including the WebSocket protocol served at `/ws`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    components(responses(Unauthorized, Forbidden, TooLarge, WriteLimited, Unavailable)),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "auth", description = "Sign-up, login and tokens"),
        (name = "users", description = "Profiles and user search"),
        (name = "conversations", description = "Conversations, members and messages"),
        (name = "attachments", description = "File upload and download"),
        (name = "websocket", description = "The WebSocket gateway (its protocol is in docs/protocol.md)"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// The security schemes named by the handlers' `security(...)`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "`Authorization: Bearer <access_token>`, the `access_token` of a Session (signup, login, \
                         refresh). The scheme word must be exactly `Bearer`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            QUERY_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The access token in the query string, for browsers that cannot set headers on a WebSocket.",
            ))),
        );
    }
}

/// Every route of the API with its part of the document. The caller adds the web client's
/// files, the fallbacks and the layers.
pub fn api_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(super::healthz))
        .routes(routes!(super::readyz))
        .routes(routes!(document))
        .routes(routes!(auth_routes::signup))
        .routes(routes!(auth_routes::login))
        .routes(routes!(auth_routes::refresh))
        .routes(routes!(auth_routes::logout))
        .routes(routes!(users::search))
        .routes(routes!(users::me, users::patch_me, users::delete_me))
        .routes(routes!(users::by_id))
        .routes(routes!(conversations::create, conversations::list))
        .routes(routes!(conversations::get, conversations::patch))
        .routes(routes!(conversations::add_members))
        .routes(routes!(conversations::remove_member))
        .routes(routes!(conversations::messages, conversations::send))
        .routes(routes!(conversations::edit_message, conversations::delete_message))
        // Uploads are streamed and limited by `--max-attachment`, not by the JSON body limit.
        .routes(routes!(attachments::upload).layer(DefaultBodyLimit::disable()))
        .routes(routes!(attachments::download))
        .routes(routes!(crate::gateway::upgrade))
}

/// The document, serialised once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let mut doc = serde_json::to_value(api_routes().into_openapi()).expect("the OpenAPI document is JSON");
    refine(&mut doc);
    serde_json::to_string_pretty(&doc).expect("the OpenAPI document serialises")
});

/// Rules of the handlers that the derives cannot state, added to the generated schemas. The
/// unit tests below check each against the handler.
fn refine(doc: &mut serde_json::Value) {
    let schemas = &mut doc["components"]["schemas"];
    // `#[serde(deny_unknown_fields)]` on an internally tagged enum refuses unknown fields in
    // every variant, but utoipa does not carry it to the variants' schemas.
    for variant in schemas["CreateConversation"]["oneOf"].as_array_mut().expect("CreateConversation is a oneOf") {
        variant["additionalProperties"] = serde_json::Value::Bool(false);
    }
    // A message needs a body that is not blank, or at least one attachment.
    let send = schemas["SendBody"].take();
    schemas["SendBody"] = serde_json::json!({
        "allOf": [send, {"anyOf": [
            {"properties": {"body": {"pattern": NOT_BLANK}}},
            {"properties": {"attachments": {"minItems": 1}}, "required": ["attachments"]},
        ]}],
    });
}

/// A string with at least one character that is not white space (what `str::trim` removes).
pub const NOT_BLANK: &str = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// The document as JSON text.
pub fn document_json() -> &'static str {
    &DOCUMENT
}

/// The OpenAPI document of this API (this document).
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    operation_id = "openapi_document",
    responses((status = 200, description = "The OpenAPI 3.1 document of the HTTP API", content_type = "application/json", body = Object)),
)]
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document_json())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::api::auth_routes::{valid_display_name, valid_username};

    fn doc() -> Value {
        serde_json::from_str(document_json()).unwrap()
    }

    /// A validator for the schema at `pointer` (`#/components/...`), resolving `$ref`s within
    /// the document.
    fn validator_at(pointer: &str) -> jsonschema::Validator {
        let mut schema = doc();
        schema["$ref"] = json!(pointer);
        jsonschema::validator_for(&schema).unwrap()
    }

    /// A validator for the named component schema.
    fn validator(name: &str) -> jsonschema::Validator {
        validator_at(&format!("#/components/schemas/{name}"))
    }

    /// A validator for one property of a component schema.
    fn property(name: &str, prop: &str) -> jsonschema::Validator {
        validator_at(&format!("#/components/schemas/{name}/properties/{prop}"))
    }

    /// Strings on the edges of the handlers' checks: lengths, control and white-space
    /// characters, non-ASCII letters.
    fn samples() -> Vec<String> {
        let mut v: Vec<String> = [
            "",
            "a",
            "ab",
            "abc",
            "ABC",
            "a_b.c-d",
            "a b",
            " ",
            "   ",
            "\t",
            "\n",
            "abc\n",
            "\nabc",
            "x\u{0}y",
            "x\u{7f}y",
            "x\u{85}y",
            "x\u{9f}y",
            "\u{a0}",
            "\u{3000}",
            " a ",
            "é",
            "éé",
            "名前",
            "a/b",
            "😀",
            "\u{200b}",
            "\u{feff}",
            "\u{2029}",
            "\u{1c}",
            "a\u{1680}",
            "\u{202f}a",
            "\u{85}a",
            "a\u{2028}b",
            "Alice A",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in [31, 32, 33, 63, 64, 65, 99, 100, 101] {
            v.push("a".repeat(n));
            v.push("é".repeat(n));
            v.push(format!(" {}", "a".repeat(n)));
            v.push(format!("\t{}\u{3000}", "a".repeat(n)));
        }
        v
    }

    #[test]
    fn username_schema_agrees_with_the_handler() {
        let schema = property("SignupBody", "username");
        for s in samples() {
            assert_eq!(schema.is_valid(&json!(s)), valid_username(&s), "{s:?}");
        }
    }

    #[test]
    fn display_name_schemas_agree_with_the_handler() {
        for (body, prop) in [("SignupBody", "display_name"), ("PatchMe", "display_name")] {
            let schema = property(body, prop);
            for s in samples() {
                assert_eq!(schema.is_valid(&json!(s)), valid_display_name(&s), "{body}.{prop} {s:?}");
            }
        }
    }

    #[test]
    fn title_schemas_agree_with_the_handler() {
        let variants = doc()["components"]["schemas"]["CreateConversation"]["oneOf"].clone();
        let group = variants.as_array().unwrap().iter().position(|v| v.to_string().contains("\"group\"")).unwrap();
        let create = validator_at(&format!("#/components/schemas/CreateConversation/oneOf/{group}/properties/title"));
        for schema in [create, property("PatchConversation", "title")] {
            for s in samples() {
                assert_eq!(schema.is_valid(&json!(s)), conversations::valid_title(&s), "{s:?}");
            }
        }
    }

    #[test]
    fn search_query_schema_agrees_with_the_handler() {
        let params = &doc()["paths"]["/api/users"]["get"]["parameters"];
        let q = params.as_array().unwrap().iter().find(|p| p["name"] == "q").unwrap();
        let schema = jsonschema::validator_for(&q["schema"]).unwrap();
        for s in samples() {
            assert_eq!(schema.is_valid(&json!(s)), users::valid_query(&s).is_some(), "{s:?}");
        }
    }

    #[test]
    fn create_conversation_schema_and_parser_agree() {
        let schema = validator("CreateConversation");
        let cases = [
            json!({"kind": "direct", "members": ["u1"]}),
            json!({"kind": "direct", "members": ["u1"], "title": "t"}),
            json!({"kind": "direct", "members": []}),
            json!({"kind": "direct"}),
            json!({"kind": "group", "title": "team"}),
            json!({"kind": "group", "title": "team", "members": ["u1", "u2"]}),
            json!({"kind": "group", "title": "team", "extra": 1}),
            json!({"kind": "group"}),
            json!({"kind": "channel", "title": "team"}),
            json!({"title": "team"}),
            json!([]),
        ];
        for case in cases {
            let parsed = serde_json::from_value::<conversations::CreateConversation>(case.clone());
            // The parser leaves member counts to the handler; the schema states them.
            let counted = case["kind"] != "direct" || case["members"].as_array().is_some_and(|m| m.len() == 1);
            assert_eq!(schema.is_valid(&case), parsed.is_ok() && counted, "{case}");
        }
    }

    #[test]
    fn message_body_schemas_agree_with_the_handler() {
        let send = validator("SendBody");
        let edit = property("EditBody", "body");
        for s in samples() {
            let blank = s.trim().is_empty();
            assert_eq!(edit.is_valid(&json!(s)), !blank, "edit {s:?}");
            assert_eq!(send.is_valid(&json!({"client_id": "k", "body": s})), !blank, "send {s:?}");
            assert!(send.is_valid(&json!({"client_id": "k", "body": s, "attachments": ["a1"]})), "send {s:?}");
            assert_eq!(send.is_valid(&json!({"client_id": "k", "body": s, "attachments": []})), !blank, "{s:?}");
        }
        assert!(!send.is_valid(&json!({"client_id": "k", "body": "x", "extra": 1})));
    }

    #[test]
    fn the_error_body_matches_its_schema() {
        let schema = validator("ErrorBody");
        for code in [rookery_protocol::ErrorCode::NotFound, rookery_protocol::ErrorCode::RateLimited] {
            let body = super::super::error::ErrorBody {
                error: super::super::error::ErrorDetail { code, message: "m".into() },
            };
            assert!(schema.is_valid(&serde_json::to_value(body).unwrap()));
        }
        assert!(!schema.is_valid(&json!({"error": {"code": "nope", "message": "m"}})));
    }
}
