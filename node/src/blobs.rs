//! The blob store for attachment bytes, through the `object_store` crate: local disk by default
//! (`<data-dir>/blobs`), or S3 and S3-compatible stores with `--blob-store s3://bucket` (the `s3`
//! feature, on by default). Credentials, region and endpoint come from the usual `AWS_*`
//! variables; only the bucket name is used, objects go under `attachments/`.

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
    anyhow::bail!("this build has no S3 support: build without `--no-default-features`")
}

/// Where an attachment's bytes live.
pub fn attachment_path(id: &str) -> BlobPath {
    BlobPath::from(format!("attachments/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_local_directories_and_s3_urls_from_configuration_alone() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(dir.path().join("blobs").to_str().unwrap()).is_ok());
        assert!(open(&format!("file://{}", dir.path().join("b2").display())).is_ok());
        // Building the S3 client contacts nothing; requests would go to the configured endpoint.
        #[cfg(feature = "s3")]
        assert!(open("s3://rookery-attachments").is_ok());
        assert_eq!(attachment_path("abc").to_string(), "attachments/abc");
    }
}
