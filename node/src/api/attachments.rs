//! `/api/attachments`: upload (streamed to the blob store, never buffered whole) and download
//! (uploader, avatars, and members of a conversation where the file was shared).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, WriteMultipart};
use rookery_actors::{new_id, now_ms};
use rookery_protocol::{is_valid_id, ErrorCode};
use rookery_store::AttachmentRecord;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, Forbidden, Unauthorized, Unavailable, WriteLimited};
use super::extract::{ApiPath, ApiQuery, AuthUser};
use crate::blobs::attachment_path;
use crate::server::App;

/// The query of an upload. Any other parameter is a 400.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The file name: 1–255 characters, no control characters, no `/` or `\`.
    #[param(min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1f\x7f-\x9f/\\]*$", example = "cat pic.png")]
    name: String,
}

/// An uploaded file, as an upload answers it and as a message's `attachments` holds it.
#[derive(Serialize, ToSchema)]
pub struct Attachment {
    /// The attachment id.
    id: String,
    /// The file name given at upload.
    name: String,
    /// `type/subtype`, lower case, as uploaded (or `application/octet-stream`).
    content_type: String,
    /// Bytes.
    size: u64,
    /// `/api/attachments/{id}`, relative to the node; needs the bearer token.
    url: String,
}

impl From<&AttachmentRecord> for Attachment {
    fn from(r: &AttachmentRecord) -> Self {
        Attachment {
            id: r.id.clone(),
            name: r.name.clone(),
            content_type: r.content_type.clone(),
            size: r.size,
            url: format!("/api/attachments/{}", r.id),
        }
    }
}

fn valid_name(n: &str) -> bool {
    let len = n.chars().count();
    (1..=255).contains(&len) && !n.chars().any(|c| c.is_control() || c == '/' || c == '\\')
}

/// `type/subtype` of RFC 7230 token characters (parameters dropped).
fn content_type(req: &Request) -> String {
    let raw = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) && essence.len() <= 127 => essence,
        _ => "application/octet-stream".to_string(),
    }
}

/// `POST /api/attachments?name=<file name>`: the raw body is the file.
#[utoipa::path(
    post,
    path = "/api/attachments",
    tag = "attachments",
    operation_id = "upload_attachment",
    summary = "Uploads a file (the raw body), named by `?name=`",
    security(("bearer" = [])),
    params(UploadParams),
    request_body(
        description = "The file's bytes, raw (not JSON, not multipart). Its `Content-Type` becomes the attachment's \
`content_type`; at most `--max-attachment` bytes (default 25 MiB).",
        content(("application/octet-stream"), ("*/*")),
    ),
    responses(
        (status = 201, description = "Stored; private to the uploader until sent in a message or made an avatar", body = Attachment),
        (status = 400, description = "`bad_request`: a missing or invalid `name`, or another parameter", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, description = "`too_large`: the file is over `--max-attachment` bytes", body = ErrorBody),
        (status = 429, response = WriteLimited),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn upload(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiQuery(p): ApiQuery<UploadParams>,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    if !valid_name(&p.name) {
        return Err(ApiError::bad_request("name must be 1-255 characters without control characters or slashes"));
    }
    let content_type = content_type(&req);
    let limit = app.config.max_attachment;
    let too_large = || ApiError::new(ErrorCode::TooLarge, format!("attachments are limited to {limit} bytes"));
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if len > limit {
            return Err(too_large());
        }
    }
    let id = new_id();
    let path = attachment_path(&id);
    let upload = app.blobs.put_multipart(&path).await.map_err(|e| blob_error(&e))?;
    let mut writer = WriteMultipart::new(upload);
    let mut size: u64 = 0;
    let mut stream = req.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(ApiError::bad_request(format!("reading the upload failed: {e}")));
            }
        };
        size += chunk.len() as u64;
        if size > limit {
            let _ = writer.abort().await;
            return Err(too_large());
        }
        writer.wait_for_capacity(4).await.map_err(|e| blob_error(&e))?;
        writer.put(chunk);
    }
    writer.finish().await.map_err(|e| blob_error(&e))?;
    let record =
        AttachmentRecord { id, uploader: me, name: p.name, content_type, size, created_at: now_ms(), public: false };
    app.store.put_attachment(record.clone()).await?;
    Ok((StatusCode::CREATED, Json(Attachment::from(&record))))
}

fn blob_error(e: &object_store::Error) -> ApiError {
    tracing::error!(error = %e, "blob store failed");
    ApiError { code: ErrorCode::Unavailable, message: "attachment storage unavailable".into(), retry_after: Some(1) }
}

/// `GET /api/attachments/{id}`: the bytes, with the stored type, a safe disposition and
/// `nosniff`. Anyone else gets 404.
#[utoipa::path(
    get,
    path = "/api/attachments/{id}",
    tag = "attachments",
    operation_id = "download_attachment",
    summary = "Downloads a file the caller may read",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "An attachment id")),
    responses(
        (status = 200, description = "The whole file, for its uploader, members of a conversation where it was sent, \
and every signed-in user when it is (or was) an avatar",
            content(("application/octet-stream"), ("*/*")),
            headers(
                ("Content-Type" = String, description = "The stored `content_type`"),
                ("Content-Length" = u64, description = "`size`"),
                ("Content-Disposition" = String, description = "`inline` for PNG, JPEG, GIF and WebP images, else `attachment`; with the file name"),
                ("X-Content-Type-Options" = String, description = "`nosniff`"),
                ("Content-Security-Policy" = String, description = "`default-src 'none'; sandbox`"),
                ("Cache-Control" = String, description = "`private, max-age=86400`"),
            )),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`not_found`: no such attachment, or the caller may not read it", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn download(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("no such attachment");
    if !is_valid_id(&id) {
        return Err(not_found());
    }
    let record = app.store.attachment(&id).await?.ok_or_else(not_found)?;
    if !rookery_actors::attachments::may_read(&*app.store, &me, &record).await? {
        return Err(not_found());
    }
    let blob = app.blobs.get(&attachment_path(&id)).await.map_err(|e| blob_error(&e))?;
    let body = Body::from_stream(blob.into_stream().map_err(std::io::Error::other));
    let inline = matches!(record.content_type.as_str(), "image/png" | "image/jpeg" | "image/gif" | "image/webp");
    let disposition = format!(
        "{}; filename=\"{}\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        record
            .name
            .chars()
            .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
            .collect::<String>(),
        percent_encode(&record.name)
    );
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&record.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(record.size));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(|_| ApiError::internal())?);
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=86400"));
    Ok(r)
}

/// RFC 5987 percent-encoding of a file name.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_answer_is_what_messages_carry() {
        let r = AttachmentRecord {
            id: "a1".into(),
            uploader: "u".into(),
            name: "cat pic.png".into(),
            content_type: "image/png".into(),
            size: 3,
            created_at: 1,
            public: false,
        };
        assert_eq!(serde_json::to_value(Attachment::from(&r)).unwrap(), r.to_message_json());
    }
}
