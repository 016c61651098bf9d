//! The S3-compatible backup store, through `object_store` (Apache Arrow's client): the same keys as
//! the POSIX store, one object each. S3 writes a whole object or nothing, so no staging is needed.
//! The engine runs on plain threads; each call blocks on the node's runtime.

use basalt::{ErrorCode, ServiceError};
use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload, aws::AmazonS3, path::Path};

/// Where the store is; the keys come from the environment or the caller, never from a log.
#[derive(Clone)]
pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

pub struct S3Store {
    client: AmazonS3,
    runtime: tokio::runtime::Handle,
    bucket: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("S3Store").field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

impl S3Store {
    /// Must be called inside the node's runtime, whose handle later calls block on.
    pub fn open(settings: &S3Settings) -> Result<Self, ServiceError> {
        let client = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&settings.endpoint)
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_allow_http(settings.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(|error| ServiceError::invalid(format!("the S3 backup store's settings are invalid: {error}")))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ServiceError::internal("the S3 backup store must be opened inside the node's runtime"))?;
        Ok(Self { client, runtime, bucket: settings.bucket.clone() })
    }

    fn error(&self, action: &str, key: &str, error: object_store::Error) -> ServiceError {
        let code = match error {
            object_store::Error::NotFound { .. } => ErrorCode::NotFound,
            _ => ErrorCode::Unavailable,
        };
        ServiceError::new(code, format!("backup store s3://{}: cannot {action} {key}: {error}", self.bucket))
    }

    pub fn exists(&self, key: &str) -> bool {
        self.runtime.block_on(self.client.head(&Path::from(key))).is_ok()
    }

    pub fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ServiceError> {
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime
            .block_on(self.client.put(&Path::from(key), payload))
            .map(drop)
            .map_err(|error| self.error("write", key, error))
    }

    pub fn get(&self, key: &str) -> Result<Vec<u8>, ServiceError> {
        self.runtime
            .block_on(async { self.client.get(&Path::from(key)).await?.bytes().await })
            .map(|bytes| bytes.to_vec())
            .map_err(|error| self.error("read", key, error))
    }

    pub fn delete(&self, key: &str) -> Result<(), ServiceError> {
        match self.runtime.block_on(self.client.delete(&Path::from(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.error("remove", key, error)),
        }
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ServiceError> {
        let prefix_path = Path::from(prefix);
        let mut keys: Vec<(String, u64)> = self
            .runtime
            .block_on(self.client.list(Some(&prefix_path)).try_collect::<Vec<_>>())
            .map_err(|error| self.error("list", prefix, error))?
            .into_iter()
            .map(|object| (object.location.to_string(), object.size))
            .collect();
        keys.sort();
        Ok(keys)
    }
}
