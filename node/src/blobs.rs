//! The blob store for attachment bytes, through the `object_store` crate: local disk by default
//! (`<data-dir>/blobs`), S3 or any S3-compatible store with `--blob-store s3://bucket` in a
//! build with the `s3` feature (credentials, region and endpoint from the usual `AWS_*`
//! variables; only the bucket name is used, objects go under `attachments/`).

use std::sync::Arc;

use anyhow::Context;
use object_store::local::LocalFileSystem;
use object_store::path::Path as BlobPath;
use object_store::ObjectStore;

/// Opens the blob store named by `spec` (a directory, `file://` URL, or `s3://` URL).
pub fn open(spec: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    if let Some(rest) = spec.strip_prefix("s3://") {
        return s3(rest);
    }
    let dir = spec.strip_prefix("file://").unwrap_or(spec);
    std::fs::create_dir_all(dir).with_context(|| format!("creating blob directory {dir}"))?;
    Ok(Arc::new(LocalFileSystem::new_with_prefix(dir).with_context(|| format!("opening blob directory {dir}"))?))
}

#[cfg(feature = "s3")]
fn s3(rest: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let bucket = rest.split('/').next().unwrap_or(rest);
    let store = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).build()?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "s3"))]
fn s3(_: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    anyhow::bail!("this build has no S3 support: build with `cargo build --release --features rookery-node/s3`")
}

/// Where an attachment's bytes live.
pub fn attachment_path(id: &str) -> BlobPath {
    BlobPath::from(format!("attachments/{id}"))
}
