//! S3 bucket: public access blocked, default encryption (SSE-S3 or SSE-KMS), versioning,
//! expiry of non-current versions. Every attribute is updated in place; the name (with the
//! account id) never changes, so a bucket is never replaced.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus,
    CreateBucketConfiguration, Delete, ExpirationStatus, LifecycleRule, LifecycleRuleFilter,
    NoncurrentVersionExpiration, ObjectIdentifier, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule, Tag, Tagging, VersioningConfiguration,
};
use aws_smithy_runtime_api::client::interceptors::context::{
    Error as OperationError, InterceptorContext,
};
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::{json, Value};

use super::error_codes::S3Code;
use super::{Attrs, Extra, Handle, Kind, Live, Milestone, SdkContext, TagRead};
use crate::aws::Clients;
use crate::engine::Facts;
use crate::stack::Stack;

/// The id of the one lifecycle rule the tool owns.
const EXPIRY_RULE: &str = "provision-noncurrent-expiry";

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub region: String,
    pub versioning: bool,
    pub expire_noncurrent_days: Option<u32>,
    pub kms_key: Option<String>,
}

impl Spec {
    /// The stack's bucket `key`, named with the account.
    pub fn desired(stack: &Stack, facts: &Facts, key: &str) -> Spec {
        let b = &stack.buckets[key];
        Spec {
            name: stack.bucket_name(key, &facts.account),
            region: stack.region.clone(),
            versioning: b.versioning,
            expire_noncurrent_days: b.expire_noncurrent_days,
            kms_key: b.kms_key.clone(),
        }
    }

    pub fn attributes(&self) -> Attrs {
        Attrs::from([
            ("versioning".into(), json!(self.versioning)),
            (
                "expire_noncurrent_days".into(),
                json!(self.expire_noncurrent_days),
            ),
            (
                "encryption".into(),
                json!(encryption_label(self.kms_key.as_deref())),
            ),
            ("public_access_blocked".into(), json!(true)),
        ])
    }
}

fn encryption_label(kms_key: Option<&str>) -> String {
    match kms_key {
        None => "AES256".into(),
        Some(key) => format!("aws:kms {key}"),
    }
}

pub async fn read(c: &Clients, name: &str, tags: TagRead) -> Result<Option<Live>> {
    // Independent reads: one round trip. No HeadBucket: GetBucketVersioning answers
    // NoSuchBucket just as well, and the other answers are not looked at then.
    let (versioning, tagging, lifecycle, encryption, pab) = tokio::join!(
        c.s3().get_bucket_versioning().bucket(name).send(),
        async {
            match tags {
                TagRead::Read => Some(c.s3().get_bucket_tagging().bucket(name).send().await),
                TagRead::Skip => None,
            }
        },
        c.s3()
            .get_bucket_lifecycle_configuration()
            .bucket(name)
            .send(),
        c.s3().get_bucket_encryption().bucket(name).send(),
        c.s3().get_public_access_block().bucket(name).send(),
    );
    let versioning = match versioning {
        Ok(out) => out,
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => return Ok(None),
        Err(e) if S3Code::NoSuchBucket.matches(&e) || S3Code::NotFound.matches(&e) => {
            return Ok(None)
        }
        Err(e) => return Err(e).ctx(format!("reading versioning of bucket {name}")),
    };
    let tags = match tagging {
        None => None,
        Some(Ok(out)) => Some(
            out.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
        ),
        Some(Err(e)) if S3Code::NoSuchTagSet.matches(&e) => Some(BTreeMap::new()),
        Some(Err(e)) => return Err(e).ctx(format!("reading tags of bucket {name}")),
    };
    let versioning = versioning.status() == Some(&BucketVersioningStatus::Enabled);
    let expire = match lifecycle {
        Ok(out) => out
            .rules()
            .iter()
            .find(|r| r.id() == Some(EXPIRY_RULE) && r.status() == &ExpirationStatus::Enabled)
            .and_then(|r| r.noncurrent_version_expiration())
            .and_then(|e| e.noncurrent_days()),
        Err(e) if S3Code::NoSuchLifecycleConfiguration.matches(&e) => None,
        Err(e) => return Err(e).ctx(format!("reading lifecycle of bucket {name}")),
    };
    let encryption = match encryption {
        Ok(out) => out
            .server_side_encryption_configuration()
            .and_then(|cfg| cfg.rules().first())
            .and_then(|r| r.apply_server_side_encryption_by_default())
            .map(|d| match d.sse_algorithm() {
                ServerSideEncryption::Aes256 => json!("AES256"),
                other => json!(format!(
                    "{} {}",
                    other.as_str(),
                    d.kms_master_key_id().unwrap_or("")
                )),
            })
            .unwrap_or(Value::Null),
        Err(e) if S3Code::NoEncryptionConfiguration.matches(&e) => Value::Null,
        Err(e) => return Err(e).ctx(format!("reading encryption of bucket {name}")),
    };
    let blocked = match pab {
        Ok(out) => out.public_access_block_configuration().is_some_and(|p| {
            p.block_public_acls() == Some(true)
                && p.ignore_public_acls() == Some(true)
                && p.block_public_policy() == Some(true)
                && p.restrict_public_buckets() == Some(true)
        }),
        Err(e) if S3Code::NoSuchPublicAccessBlockConfiguration.matches(&e) => false,
        Err(e) => return Err(e).ctx(format!("reading public access block of bucket {name}")),
    };
    Ok(Some(Live {
        id: name.to_string(),
        attrs: Attrs::from([
            ("versioning".into(), json!(versioning)),
            ("expire_noncurrent_days".into(), json!(expire)),
            ("encryption".into(), encryption),
            ("public_access_blocked".into(), json!(blocked)),
        ]),
        tags,
    }))
}

/// Creates the bucket, then tags and sets it up; `exists` is told its name in between.
pub async fn create(
    c: &Clients,
    spec: &Spec,
    tags: &BTreeMap<String, String>,
    exists: Milestone<'_>,
) -> Result<Handle> {
    let mut req = c.s3().create_bucket().bucket(&spec.name);
    // us-east-1 is the one region that refuses an explicit location constraint.
    if spec.region != "us-east-1" {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(spec.region.as_str()))
                .build(),
        );
    }
    match req.send().await {
        Ok(_) => {}
        // Ours from a crashed apply: carry on and converge its settings.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
        Err(e) => return Err(e).ctx(format!("creating bucket {}", spec.name)),
    }
    exists(&spec.name);
    // S3 takes no tags on CreateBucket for general purpose buckets everywhere yet, so they are
    // a call of their own, beside the settings: the state recorded the bucket before it was
    // created (an intent), so a crash before the tags still leaves a bucket the next plan
    // knows. The expiry of non-current versions waits for versioning, which it applies to.
    let tag_set = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()?;
    let tagging = Tagging::builder().set_tag_set(Some(tag_set)).build()?;
    tokio::try_join!(
        async {
            c.s3()
                .put_bucket_tagging()
                .bucket(&spec.name)
                .tagging(tagging)
                .send()
                .await
                .ctx(format!("tagging bucket {}", spec.name))
        },
        put_public_access_block(c, spec),
        put_encryption(c, spec),
        async {
            if spec.versioning {
                put_versioning(c, spec).await?;
            }
            put_lifecycle(c, spec).await
        },
    )?;
    Ok(handle(spec))
}

/// Has the SDK's standard retry (its attempts and backoff, set in `crate::aws`) try a bucket's
/// configuration writes again when S3 answers them 409 `OperationAborted`; registered on the S3
/// client.
///
/// S3 gives that answer ("A conflicting conditional operation is currently in progress against
/// this resource. Please try again.") to a configuration write that meets another one on the same
/// bucket, and at times to the writes that follow CreateBucket closely: `create` sends all of a
/// new bucket's settings at once, right after making it. The answer asks for another try, and a
/// later one succeeds, but the SDK does not retry it by itself (a 409 is a client error to it,
/// and the code is not among its transient ones), so an apply would stop half-way with a bucket
/// that lacks some of its settings. Terraform's AWS provider retries this code on its S3 bucket
/// calls for the same reason; its users report that one retry is usually enough.
#[derive(Debug, Default)]
pub struct RetryOperationAborted;

impl ClassifyRetry for RetryOperationAborted {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.output_or_error() {
            Some(Err(err))
                if err
                    .as_operation_error()
                    .is_some_and(is_aborted_configuration_write) =>
            {
                RetryAction::server_error()
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "S3 OperationAborted on bucket configuration writes"
    }
}

/// Whether `err` is `OperationAborted` answering one of the configuration writes this module
/// makes. The SDK types each operation's error apart, so each is tried in turn.
fn is_aborted_configuration_write(err: &OperationError) -> bool {
    use aws_sdk_s3::operation::{
        delete_bucket_lifecycle::DeleteBucketLifecycleError,
        put_bucket_encryption::PutBucketEncryptionError,
        put_bucket_lifecycle_configuration::PutBucketLifecycleConfigurationError,
        put_bucket_tagging::PutBucketTaggingError, put_bucket_versioning::PutBucketVersioningError,
        put_public_access_block::PutPublicAccessBlockError,
    };
    fn aborted<E>(err: &OperationError) -> bool
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        err.downcast_ref::<E>()
            .is_some_and(|e| S3Code::OperationAborted.matches(e))
    }
    [
        aborted::<PutBucketTaggingError>,
        aborted::<PutPublicAccessBlockError>,
        aborted::<PutBucketEncryptionError>,
        aborted::<PutBucketVersioningError>,
        aborted::<PutBucketLifecycleConfigurationError>,
        aborted::<DeleteBucketLifecycleError>,
    ]
    .iter()
    .any(|is_aborted| is_aborted(err))
}

fn handle(spec: &Spec) -> Handle {
    Handle {
        kind: Kind::Bucket,
        name: spec.name.clone(),
        id: spec.name.clone(),
        extra: Extra::default(),
    }
}

pub async fn update(c: &Clients, spec: &Spec, changed: &[String]) -> Result<Handle> {
    for attr in changed {
        match attr.as_str() {
            "versioning" => put_versioning(c, spec).await?,
            "expire_noncurrent_days" => put_lifecycle(c, spec).await?,
            "encryption" => put_encryption(c, spec).await?,
            "public_access_blocked" => put_public_access_block(c, spec).await?,
            _ => {}
        }
    }
    Ok(handle(spec))
}

async fn put_public_access_block(c: &Clients, spec: &Spec) -> Result<()> {
    c.s3()
        .put_public_access_block()
        .bucket(&spec.name)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .ctx(format!("blocking public access to bucket {}", spec.name))?;
    Ok(())
}

async fn put_encryption(c: &Clients, spec: &Spec) -> Result<()> {
    let default = match &spec.kms_key {
        None => {
            ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256)
        }
        Some(key) => ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::AwsKms)
            .kms_master_key_id(key),
    };
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(default.build()?)
        .bucket_key_enabled(spec.kms_key.is_some())
        .build();
    c.s3()
        .put_bucket_encryption()
        .bucket(&spec.name)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()?,
        )
        .send()
        .await
        .ctx(format!(
            "setting default encryption of bucket {}",
            spec.name
        ))?;
    Ok(())
}

async fn put_versioning(c: &Clients, spec: &Spec) -> Result<()> {
    // A versioned bucket can only be suspended, never returned to unversioned.
    let status = if spec.versioning {
        BucketVersioningStatus::Enabled
    } else {
        BucketVersioningStatus::Suspended
    };
    c.s3()
        .put_bucket_versioning()
        .bucket(&spec.name)
        .versioning_configuration(VersioningConfiguration::builder().status(status).build())
        .send()
        .await
        .ctx(format!("setting versioning of bucket {}", spec.name))?;
    Ok(())
}

async fn put_lifecycle(c: &Clients, spec: &Spec) -> Result<()> {
    match spec.expire_noncurrent_days {
        None => {
            match c
                .s3()
                .delete_bucket_lifecycle()
                .bucket(&spec.name)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if S3Code::NoSuchLifecycleConfiguration.matches(&e) => {}
                Err(e) => return Err(e).ctx(format!("removing lifecycle of bucket {}", spec.name)),
            }
        }
        Some(days) => {
            let rule = LifecycleRule::builder()
                .id(EXPIRY_RULE)
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix("").build())
                .noncurrent_version_expiration(
                    NoncurrentVersionExpiration::builder()
                        .noncurrent_days(days as i32)
                        .build(),
                )
                .build()?;
            c.s3()
                .put_bucket_lifecycle_configuration()
                .bucket(&spec.name)
                .lifecycle_configuration(
                    BucketLifecycleConfiguration::builder()
                        .rules(rule)
                        .build()?,
                )
                .send()
                .await
                .ctx(format!("setting lifecycle of bucket {}", spec.name))?;
        }
    }
    Ok(())
}

/// Does the bucket hold any object version or delete marker?
pub async fn is_empty(c: &Clients, name: &str) -> Result<bool> {
    let out = match c
        .s3()
        .list_object_versions()
        .bucket(name)
        .max_keys(1)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if S3Code::NoSuchBucket.matches(&e) => return Ok(true),
        Err(e) => return Err(e).ctx(format!("listing bucket {name}")),
    };
    Ok(out.versions().is_empty() && out.delete_markers().is_empty())
}

/// Empties the bucket, every version and delete marker included, then deletes it.
pub async fn delete(c: &Clients, name: &str) -> Result<()> {
    loop {
        let out = match c
            .s3()
            .list_object_versions()
            .bucket(name)
            .max_keys(1000)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if S3Code::NoSuchBucket.matches(&e) => return Ok(()),
            Err(e) => return Err(e).ctx(format!("listing bucket {name}")),
        };
        let mut ids = Vec::new();
        for v in out.versions() {
            ids.push(
                ObjectIdentifier::builder()
                    .key(v.key().unwrap_or_default())
                    .set_version_id(v.version_id().map(String::from))
                    .build()?,
            );
        }
        for m in out.delete_markers() {
            ids.push(
                ObjectIdentifier::builder()
                    .key(m.key().unwrap_or_default())
                    .set_version_id(m.version_id().map(String::from))
                    .build()?,
            );
        }
        if ids.is_empty() {
            break;
        }
        let result = c
            .s3()
            .delete_objects()
            .bucket(name)
            .delete(
                Delete::builder()
                    .set_objects(Some(ids))
                    .quiet(true)
                    .build()?,
            )
            .send()
            .await
            .ctx(format!("emptying bucket {name}"))?;
        if let Some(err) = result.errors().first() {
            anyhow::bail!(
                "emptying bucket {name}: {} {}",
                err.key().unwrap_or_default(),
                err.message().unwrap_or_default()
            );
        }
    }
    match c.s3().delete_bucket().bucket(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if S3Code::NoSuchBucket.matches(&e) => Ok(()),
        Err(e) => Err(e)
            .ctx(format!("deleting bucket {name}"))
            .context("the bucket may have been written to during destroy"),
    }
}

/// Adds `tags` to bucket `name`, keeping its other tags (PutBucketTagging replaces the whole
/// set): what `import` does to adopt a bucket.
pub async fn tag(c: &Clients, name: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    let mut merged: BTreeMap<String, String> =
        match c.s3().get_bucket_tagging().bucket(name).send().await {
            Ok(out) => out
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
            Err(e) if S3Code::NoSuchTagSet.matches(&e) => BTreeMap::new(),
            Err(e) => return Err(e).ctx(format!("reading tags of bucket {name}")),
        };
    merged.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    let tag_set = merged
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    c.s3()
        .put_bucket_tagging()
        .bucket(name)
        .tagging(Tagging::builder().set_tag_set(Some(tag_set)).build()?)
        .send()
        .await
        .ctx(format!("tagging bucket {name}"))?;
    Ok(())
}

/// Bytes stored in bucket `name`, every version counted (S3 bills non-current versions too);
/// 0 when the bucket does not exist. One call per 1,000 versions.
pub async fn stored_bytes(c: &Clients, name: &str) -> Result<u64> {
    let mut total = 0u64;
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let out = match c
            .s3()
            .list_object_versions()
            .bucket(name)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if S3Code::NoSuchBucket.matches(&e) => return Ok(0),
            Err(e) => return Err(e).ctx(format!("listing bucket {name}")),
        };
        total += out
            .versions()
            .iter()
            .map(|v| v.size().unwrap_or(0).max(0) as u64)
            .sum::<u64>();
        if out.is_truncated() != Some(true) {
            return Ok(total);
        }
        key_marker = out.next_key_marker().map(String::from);
        version_marker = out.next_version_id_marker().map(String::from);
        if key_marker.is_none() {
            return Ok(total);
        }
    }
}
