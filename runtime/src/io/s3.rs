//! S3 through the SDK's standard chain (env, profile, container credentials). Path-style addressing
//! when an endpoint is configured, as S3-compatible stores need (docs/design.md, "Locations and
//! endpoints").

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, Context, Result};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Location;
use crate::exit::Transient;

/// Files above this size go up in parts (S3 takes at most 5 GiB in one PUT; parts also retry
/// on their own and upload in parallel).
const MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;
/// Part size: S3 needs at least 5 MiB for all parts but the last, at most 10 000 parts.
const PART_SIZE: u64 = 16 * 1024 * 1024;
const PARALLEL_PARTS: usize = 4;
/// Attempts per call, first try included, when `AWS_MAX_ATTEMPTS` is not set.
const MAX_ATTEMPTS: u32 = 8;

/// The runtime every S3 call of the process runs on.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("runtime-io")
            .enable_all()
            .build()
            .expect("start the I/O runtime")
    })
    .block_on(f)
}

/// The first `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_<SERVICE>` that is not a URL. The SDK
/// skips an empty one with a warning and then calls AWS itself, and fails on one without a
/// scheme with an error that names neither: both are refused here, before any call.
fn bad_endpoint_variable() -> Option<String> {
    if std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return None;
    }
    // `vars_os`: `vars` panics on any variable that is not UTF-8, even one this has no use for.
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
        .filter(|(name, _)| name == "AWS_ENDPOINT_URL" || name.starts_with("AWS_ENDPOINT_URL_"))
        .map(|(name, value)| (name, value.to_string_lossy().into_owned()))
        .collect();
    vars.sort();
    vars.into_iter().find_map(|(name, value)| {
        let url = value
            .split_once("://")
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.starts_with('/'));
        (!url).then(|| {
            format!("{name}={value:?} is not an endpoint URL: give a scheme and a host (http://127.0.0.1:5000) or unset {name}")
        })
    })
}

/// A configuration given by [`use_config_loader`], taken by the first S3 call.
static LOADER: Mutex<Option<aws_config::ConfigLoader>> = Mutex::new(None);

/// Makes the S3 calls of this process load their configuration from `loader` instead of the
/// SDK's standard chain alone, for programs (and tests) that hold their endpoint, region and
/// credentials themselves rather than in the process environment. Takes effect when called
/// before the first S3 call.
pub fn use_config_loader(loader: aws_config::ConfigLoader) {
    *LOADER.lock().unwrap_or_else(|e| e.into_inner()) = Some(loader);
}

async fn client() -> Result<Client> {
    static CLIENT: tokio::sync::OnceCell<Client> = tokio::sync::OnceCell::const_new();
    CLIENT
        .get_or_try_init(|| async {
            let given = LOADER.lock().unwrap_or_else(|e| e.into_inner()).take();
            let mut loader = match given {
                Some(loader) => loader,
                None => {
                    if let Some(problem) = bad_endpoint_variable() {
                        return Err(anyhow!(problem));
                    }
                    aws_config::defaults(aws_config::BehaviorVersion::latest())
                }
            };
            // 8 attempts unless the standard variable says otherwise (a job that would
            // rather fail fast, with exit code 75, and let Batch retry it later).
            if std::env::var_os("AWS_MAX_ATTEMPTS").is_none() {
                loader = loader.retry_config(
                    aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS),
                );
            }
            let config = loader.load().await;
            let mut builder = aws_sdk_s3::config::Builder::from(&config);
            if config.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
            {
                builder = builder.force_path_style(true);
            }
            Ok(Client::from_conf(builder.build()))
        })
        .await
        .cloned()
}

/// An S3 call's error after the SDK's own retries, as [`Transient`] when trying again later may
/// succeed (the exit code tells Batch's retry strategy so, `crate::exit`).
fn sdk_error<E>(err: SdkError<E, HttpResponse>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = is_transient(&err);
    let message = aws_sdk_s3::error::DisplayErrorContext(err).to_string();
    if transient {
        anyhow::Error::new(Transient(message))
    } else {
        anyhow!(message)
    }
}

/// Whether an S3 error may pass on its own, by the error's kind as the SDK reports it: no
/// answer (the connection failed, was reset or timed out), an answer that could not be read,
/// a server error (5xx), or a throttling or timeout error code (the codes the SDK's own retry
/// classifier treats so). Everything else (no such bucket or key, access denied, a bad
/// request, a bad endpoint URL) is the same on every try.
fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ServiceError(service) => {
            let status = service.raw().status();
            let code = service.err().code();
            status.is_server_error()
                || status.as_u16() == 429
                || code.is_some_and(|c| {
                    THROTTLING_ERRORS.contains(&c) || TRANSIENT_ERRORS.contains(&c)
                })
        }
        _ => false,
    }
}

/// A response body that broke off: the network's fault, transient.
fn body_error(err: aws_sdk_s3::primitives::ByteStreamError) -> anyhow::Error {
    anyhow::Error::new(Transient(format!("reading the response body: {err}")))
}

fn prefix_of(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}/")
    }
}

async fn list_keys(bucket: &str, prefix: &str) -> Result<Vec<String>> {
    let pages = client()
        .await?
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(sdk_error)?;
    Ok(pages
        .into_iter()
        .flat_map(|p| p.contents.unwrap_or_default())
        .filter_map(|o| o.key)
        .collect())
}

pub(super) fn list(bucket: &str, key: &str) -> Result<Vec<Location>> {
    block_on(async {
        let mut keys = list_keys(bucket, &prefix_of(key)).await?;
        if keys.is_empty() && !key.is_empty() && exists_async(bucket, key).await? {
            keys.push(key.to_string());
        }
        keys.sort();
        Ok(keys
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .map(|k| Location::S3 {
                bucket: bucket.to_string(),
                key: k,
            })
            .collect())
    })
}

pub(super) fn list_dirs(bucket: &str, key: &str) -> Result<Vec<String>> {
    block_on(async {
        let prefix = prefix_of(key);
        let pages = client()
            .await?
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(sdk_error)?;
        let mut out: Vec<String> = pages
            .into_iter()
            .flat_map(|p| p.common_prefixes.unwrap_or_default())
            .filter_map(|p| p.prefix)
            .filter_map(|p| {
                p.strip_prefix(&prefix)
                    .map(|s| s.trim_end_matches('/').to_string())
            })
            .filter(|s| !s.is_empty())
            .collect();
        out.sort();
        Ok(out)
    })
}

async fn exists_async(bucket: &str, key: &str) -> Result<bool> {
    match client()
        .await?
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
        Err(e) => Err(sdk_error(e)),
    }
}

pub(super) fn exists(bucket: &str, key: &str) -> Result<bool> {
    block_on(exists_async(bucket, key))
}

async fn get_object(
    bucket: &str,
    key: &str,
) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
    client()
        .await?
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(sdk_error)
}

pub(crate) async fn read_async(bucket: &str, key: &str) -> Result<Vec<u8>> {
    Ok(get_object(bucket, key)
        .await?
        .body
        .collect()
        .await
        .map_err(body_error)?
        .into_bytes()
        .to_vec())
}

pub(super) fn read(bucket: &str, key: &str) -> Result<Vec<u8>> {
    block_on(read_async(bucket, key))
}

pub(super) fn download(bucket: &str, key: &str, to: &Path) -> Result<()> {
    block_on(async {
        let mut body = get_object(bucket, key).await?.body;
        let mut file = tokio::fs::File::create(to).await?;
        // The body's errors (a connection reset mid-download) are transient; the disk's are not.
        while let Some(chunk) = body.try_next().await.map_err(body_error)? {
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(())
    })
}

pub(super) fn put(bucket: &str, key: &str, bytes: &[u8]) -> Result<()> {
    block_on(put_object(bucket, key, ByteStream::from(bytes.to_vec())))
}

async fn put_object(bucket: &str, key: &str, body: ByteStream) -> Result<()> {
    client()
        .await?
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(())
}

pub(super) fn upload_file(src: &Path, bucket: &str, key: &str) -> Result<()> {
    let size = std::fs::metadata(src)
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    block_on(async {
        if size <= MULTIPART_THRESHOLD {
            put_object(bucket, key, ByteStream::from_path(src).await?).await
        } else {
            multipart(src, size, bucket, key, PART_SIZE).await
        }
    })
}

/// Uploads `src` in parts of `part_size`; an upload that fails is aborted so no parts linger.
pub(crate) async fn multipart(
    src: &Path,
    size: u64,
    bucket: &str,
    key: &str,
    part_size: u64,
) -> Result<()> {
    let client = client().await?;
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(sdk_error)?;
    let upload_id = created
        .upload_id
        .context("CreateMultipartUpload returned no upload id")?;
    let parts = size.div_ceil(part_size);
    let result: Result<Vec<CompletedPart>> = futures::stream::iter(0..parts)
        .map(|i| {
            let client = client.clone();
            let upload_id = upload_id.clone();
            async move {
                let offset = i * part_size;
                let len = part_size.min(size - offset);
                let mut file = tokio::fs::File::open(src).await?;
                tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(offset)).await?;
                let mut buf = vec![0u8; len as usize];
                file.read_exact(&mut buf).await?;
                let number = i as i32 + 1;
                let part = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(buf))
                    .send()
                    .await
                    .map_err(sdk_error)?;
                Ok(CompletedPart::builder()
                    .set_e_tag(part.e_tag)
                    .part_number(number)
                    .build())
            }
        })
        .buffered(PARALLEL_PARTS)
        .try_collect()
        .await;
    let completed = match result {
        Ok(parts) => client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_error),
        Err(e) => Err(e),
    };
    if completed.is_err() {
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await;
    }
    completed
}

pub(super) fn delete_keys(bucket: &str, keys: &[String]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    block_on(async {
        let client = client().await?;
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()?;
            let out = client
                .delete_objects()
                .bucket(bucket)
                .delete(
                    Delete::builder()
                        .set_objects(Some(objects))
                        .quiet(true)
                        .build()?,
                )
                .send()
                .await
                .map_err(sdk_error)?;
            if let Some(err) = out.errors.unwrap_or_default().first() {
                return Err(anyhow!(
                    "deleting s3://{bucket}/{}: {}",
                    err.key.as_deref().unwrap_or("?"),
                    err.message.as_deref().unwrap_or("unknown error")
                ));
            }
        }
        Ok(())
    })
}

/// Test hook: a multipart upload with a small part size, so tests exercise it on small files.
#[doc(hidden)]
pub fn upload_in_parts(src: &Path, uri: &Location, part_size: u64) -> Result<()> {
    let Location::S3 { bucket, key } = uri else {
        anyhow::bail!("{uri} is not an S3 location")
    };
    let size = std::fs::metadata(src)?.len();
    block_on(multipart(src, size, bucket, key, part_size))
}
