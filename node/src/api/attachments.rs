//! `/api/attachments`: upload (streamed to the blob store, never buffered whole) and download
//! (uploader, avatars, and members of a conversation where the file was shared).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, WriteMultipart};
use rookery_actors::{new_id, now_ms};
use rookery_protocol::{is_valid_id, ErrorCode};
use rookery_store::AttachmentRecord;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::AuthUser;
use crate::blobs::attachment_path;
use crate::server::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    name: String,
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
pub async fn upload(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    params: Result<Query<UploadParams>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
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
    Ok((StatusCode::CREATED, Json(record.to_message_json())))
}

fn blob_error(e: &object_store::Error) -> ApiError {
    tracing::error!(error = %e, "blob store failed");
    ApiError { code: ErrorCode::Unavailable, message: "attachment storage unavailable".into(), retry_after: Some(1) }
}

/// `GET /api/attachments/{id}`: the bytes, with the stored type, a safe disposition and
/// `nosniff`. Anyone else gets 404.
pub async fn download(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    Path(id): Path<String>,
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
