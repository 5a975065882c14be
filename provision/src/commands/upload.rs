//! `provision upload`: a local directory synced to one of the stack's buckets. A file goes up
//! only when the bucket lacks it or holds other bytes under its key (size, then the MD5 that
//! S3's ETag carries), so a re-run after a change sends the change and an unchanged tree costs
//! one listing. Files above the multipart threshold go up in parts, several files at once.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use crate::aws::Clients;
use crate::cli::UploadArgs;
use crate::jobs;
use crate::stack::Stack;

/// Files above this go up in parts of this size (as the AWS CLI does by default), and their
/// ETag is the MD5 of the parts' MD5s, which the comparison computes the same way.
const PART_SIZE: u64 = 8 * 1024 * 1024;

/// A local file and where it goes.
#[derive(Debug, Clone)]
struct LocalFile {
    path: PathBuf,
    key: String,
    size: u64,
}

pub async fn run(args: UploadArgs) -> anyhow::Result<ExitCode> {
    let stack = match jobs::load_stack(&args.stack) {
        Ok(stack) => stack,
        Err(code) => return Ok(code),
    };
    let (bucket_key, prefix) = destination(&stack, args.destination.as_deref())?;
    let files = local_files(&args.source, &prefix)?;

    let clients = Clients::new(&stack.region).await?;
    let account = crate::engine::stack_account(&clients, &stack).await?;
    let bucket = stack.bucket_name(&bucket_key, &account);
    let remote = list(&clients, &bucket, &prefix, &args.stack).await?;
    let changed = changed_files(files.clone(), &remote)?;
    let bytes: u64 = changed.iter().map(|f| f.size).sum();
    let target = format!("s3://{bucket}/{prefix}");
    if args.dry_run {
        for file in &changed {
            println!("{}", file.key);
        }
        eprintln!(
            "would upload {} of {} files ({:.1} MB) to {target}",
            changed.len(),
            files.len(),
            bytes as f64 / 1e6
        );
        return Ok(ExitCode::SUCCESS);
    }
    let progress = indicatif::ProgressBar::with_draw_target(
        Some(bytes),
        indicatif::ProgressDrawTarget::stderr(),
    )
    .with_style(
        indicatif::ProgressStyle::with_template(
            "uploading {bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}",
        )
        .expect("a valid template"),
    );
    let s3 = clients.s3();
    futures::stream::iter(changed.iter())
        .map(|file| upload(s3, &bucket, file, &progress))
        .buffer_unordered(args.concurrency as usize)
        .try_collect::<Vec<()>>()
        .await?;
    progress.finish_and_clear();
    eprintln!(
        "uploaded {} files ({:.1} MB) to {target}; {} unchanged",
        changed.len(),
        bytes as f64 / 1e6,
        files.len() - changed.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `KEY` or `KEY/PREFIX` → the bucket key and the key prefix (`""` or ending in `/`).
fn destination(stack: &Stack, given: Option<&str>) -> anyhow::Result<(String, String)> {
    let keys: Vec<&str> = stack.buckets.keys().map(String::as_str).collect();
    let (key, prefix) = match given {
        Some(given) => {
            let (key, prefix) = given.split_once('/').unwrap_or((given, ""));
            (key.to_string(), prefix.trim_matches('/').to_string())
        }
        None => match keys.as_slice() {
            [only] => (only.to_string(), String::new()),
            [] => anyhow::bail!("the stack has no [buckets] to upload to: add one"),
            _ => anyhow::bail!(
                "the stack has several buckets ({}): name one, as BUCKET_KEY or BUCKET_KEY/PREFIX",
                keys.join(", ")
            ),
        },
    };
    anyhow::ensure!(
        stack.buckets.contains_key(&key),
        "`{key}` is not a key of [buckets] (defined: {}): give BUCKET_KEY or BUCKET_KEY/PREFIX",
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    );
    let prefix = if prefix.is_empty() {
        prefix
    } else {
        format!("{prefix}/")
    };
    Ok((key, prefix))
}

/// Every file under `source`, sorted, keyed `{prefix}{relative path}`.
fn local_files(source: &Path, prefix: &str) -> anyhow::Result<Vec<LocalFile>> {
    let meta = std::fs::metadata(source)
        .map_err(|e| anyhow::anyhow!("upload source {}: {e}", source.display()))?;
    anyhow::ensure!(
        meta.is_dir(),
        "upload source {} is not a directory",
        source.display()
    );
    let mut files = Vec::new();
    let mut dirs = vec![source.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let meta =
                std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() {
                let relative = path.strip_prefix(source).expect("under the source");
                let relative = relative
                    .to_str()
                    .with_context(|| format!("{} is not UTF-8: S3 keys are", path.display()))?;
                files.push(LocalFile {
                    key: format!("{prefix}{relative}"),
                    path,
                    size: meta.len(),
                });
            }
        }
    }
    files.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(files)
}

/// Key → (size, ETag without quotes) of every object under `prefix`.
async fn list(
    clients: &Clients,
    bucket: &str,
    prefix: &str,
    stack_args: &crate::cli::StackArgs,
) -> anyhow::Result<HashMap<String, (u64, String)>> {
    let mut out = HashMap::new();
    let mut pages = clients
        .s3()
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_bucket()) => {
                anyhow::bail!(
                    "bucket {bucket} does not exist: apply the stack first (`{}`)",
                    jobs::apply_command(stack_args)
                )
            }
            Err(e) => anyhow::bail!(
                "listing s3://{bucket}/{prefix}: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ),
        };
        for object in page.contents() {
            if let (Some(key), Some(size), Some(etag)) =
                (object.key(), object.size(), object.e_tag())
            {
                out.insert(
                    key.to_string(),
                    (size as u64, etag.trim_matches('"').to_string()),
                );
            }
        }
    }
    Ok(out)
}

/// The files the bucket lacks or holds with other bytes.
fn changed_files(
    files: Vec<LocalFile>,
    remote: &HashMap<String, (u64, String)>,
) -> anyhow::Result<Vec<LocalFile>> {
    let mut changed = Vec::new();
    for file in files {
        let same = match remote.get(&file.key) {
            Some((size, etag)) if *size == file.size => &local_etag(&file.path)? == etag,
            _ => false,
        };
        if !same {
            changed.push(file);
        }
    }
    Ok(changed)
}

/// The ETag S3 gives the file as this command uploads it: its MD5, or for a multipart upload
/// the MD5 of its parts' MD5s and `-{parts}`.
fn local_etag(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut parts = Vec::new();
    let mut buffer = vec![0u8; PART_SIZE as usize];
    loop {
        let n = read_full(&mut file, &mut buffer)?;
        if n == 0 && !parts.is_empty() {
            break;
        }
        parts.push(Md5::digest(&buffer[..n]));
        if n < buffer.len() {
            break;
        }
    }
    Ok(match parts.as_slice() {
        [one] => hex::encode(one),
        many => {
            let mut all = Md5::new();
            for part in many {
                all.update(part);
            }
            format!("{}-{}", hex::encode(all.finalize()), many.len())
        }
    })
}

/// Reads until `buffer` is full or the file ends.
fn read_full(file: &mut std::fs::File, buffer: &mut [u8]) -> anyhow::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = file.read(&mut buffer[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    file: &LocalFile,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    if file.size <= PART_SIZE {
        let body = tokio::fs::read(&file.path)
            .await
            .with_context(|| format!("reading {}", file.path.display()))?;
        s3.put_object()
            .bucket(bucket)
            .key(&file.key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error(e, "PutObject", bucket, &file.key))?;
        progress.inc(file.size);
        return Ok(());
    }
    let created = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(&file.key)
        .send()
        .await
        .map_err(|e| s3_error(e, "CreateMultipartUpload", bucket, &file.key))?;
    let upload_id = created
        .upload_id()
        .context("CreateMultipartUpload answered no upload id")?
        .to_string();
    match upload_parts(s3, bucket, file, &upload_id, progress).await {
        Ok(parts) => {
            s3.complete_multipart_upload()
                .bucket(bucket)
                .key(&file.key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| s3_error(e, "CompleteMultipartUpload", bucket, &file.key))?;
            Ok(())
        }
        Err(err) => {
            // No half object: S3 keeps nothing of an aborted upload.
            let _ = s3
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&file.key)
                .upload_id(&upload_id)
                .send()
                .await;
            Err(err)
        }
    }
}

async fn upload_parts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    file: &LocalFile,
    upload_id: &str,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<CompletedPart>> {
    use tokio::io::AsyncReadExt;
    let mut reader = tokio::fs::File::open(&file.path)
        .await
        .with_context(|| format!("reading {}", file.path.display()))?;
    let mut parts = Vec::new();
    let mut number = 1;
    loop {
        let mut chunk = Vec::with_capacity(PART_SIZE as usize);
        (&mut reader)
            .take(PART_SIZE)
            .read_to_end(&mut chunk)
            .await?;
        if chunk.is_empty() {
            break;
        }
        let len = chunk.len() as u64;
        let out = s3
            .upload_part()
            .bucket(bucket)
            .key(&file.key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(chunk))
            .send()
            .await
            .map_err(|e| s3_error(e, "UploadPart", bucket, &file.key))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(String::from))
                .build(),
        );
        progress.inc(len);
        number += 1;
    }
    Ok(parts)
}

fn s3_error<E: std::error::Error + 'static>(
    err: aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
    call: &str,
    bucket: &str,
    key: &str,
) -> anyhow::Error {
    anyhow::anyhow!(
        "{call} s3://{bucket}/{key}: {}",
        aws_smithy_types::error::display::DisplayErrorContext(&err)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_match_what_s3_computes() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"hello").unwrap();
        assert_eq!(
            local_etag(&small).unwrap(),
            "5d41402abc4b2a76b9719d911017c592"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            local_etag(&empty).unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![7u8; PART_SIZE as usize + 1]).unwrap();
        assert!(local_etag(&big).unwrap().ends_with("-2"));
        let exact = dir.path().join("exact");
        std::fs::write(&exact, vec![7u8; PART_SIZE as usize]).unwrap();
        assert!(!local_etag(&exact).unwrap().contains('-'));
    }
}
