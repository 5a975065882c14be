//! S3's 409 `OperationAborted` on bucket configuration writes: the emulator refuses a new
//! bucket's first configuration write as S3 may (scripts/moto_patches.py), and `apply` still
//! lands every setting of every bucket it creates.

use std::collections::BTreeMap;

use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use provision::aws::Clients;
use provision::resources::bucket;

use crate::common::{bucket_tags, Provision, StackCopy};

const ACCOUNT: &str = "123456789012";

async fn clients() -> Clients {
    let loader = provision::aws::with_retries(testkit::emulator().config_loader());
    Clients::from_config(loader.load().await)
}

/// An S3 client with the SDK's standard retry alone, as any SDK user would build it.
async fn plain_s3() -> aws_sdk_s3::Client {
    let config = provision::aws::with_retries(testkit::emulator().config_loader())
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
}

#[tokio::test]
async fn the_emulator_refuses_a_new_buckets_first_configuration_write() {
    let s3 = plain_s3().await;
    let name = testkit::unique_name("aborted");
    s3.create_bucket().bucket(&name).send().await.unwrap();
    let versioning = || {
        s3.put_bucket_versioning()
            .bucket(&name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
    };
    let err = versioning().send().await.unwrap_err();
    assert_eq!(err.code(), Some("OperationAborted"), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(409));
    // The refusal asks for another try, which succeeds.
    versioning().send().await.unwrap();
}

#[tokio::test]
async fn apply_lands_every_setting_of_the_buckets_it_creates() {
    let c = clients().await;
    let s = StackCopy::orderflow_without_endpoint("abort");
    // A second bucket, unversioned and without expiry: its lifecycle write is a delete.
    s.rewrite(|t| t.replace("[buckets.data]", "[buckets.scratch]\n\n[buckets.data]"));
    let p = s.p();
    s.apply(&[]);

    let data = format!("{p}-data-{ACCOUNT}");
    let scratch = format!("{p}-scratch-{ACCOUNT}");
    for (name, versioned, expiry_days) in [(&data, true, Some(30)), (&scratch, false, None)] {
        let versioning = c
            .s3()
            .get_bucket_versioning()
            .bucket(name)
            .send()
            .await
            .unwrap();
        assert_eq!(
            versioning.status() == Some(&BucketVersioningStatus::Enabled),
            versioned,
            "{name}"
        );
        let encryption = c
            .s3()
            .get_bucket_encryption()
            .bucket(name)
            .send()
            .await
            .unwrap();
        let rule = &encryption
            .server_side_encryption_configuration()
            .unwrap()
            .rules()[0];
        assert_eq!(
            rule.apply_server_side_encryption_by_default()
                .unwrap()
                .sse_algorithm()
                .as_str(),
            "AES256",
            "{name}"
        );
        let block = c
            .s3()
            .get_public_access_block()
            .bucket(name)
            .send()
            .await
            .unwrap();
        let block = block.public_access_block_configuration().unwrap();
        assert_eq!(
            (
                block.block_public_acls(),
                block.ignore_public_acls(),
                block.block_public_policy(),
                block.restrict_public_buckets()
            ),
            (Some(true), Some(true), Some(true), Some(true)),
            "{name}"
        );
        let lifecycle = c
            .s3()
            .get_bucket_lifecycle_configuration()
            .bucket(name)
            .send()
            .await;
        let days = lifecycle.ok().and_then(|l| {
            l.rules()
                .first()
                .and_then(|r| r.noncurrent_version_expiration())
                .and_then(|e| e.noncurrent_days())
        });
        assert_eq!(days, expiry_days, "{name}");
        let tags = bucket_tags(&c, name).await;
        assert_eq!(tags.get("provision:stack"), Some(&s.name), "{name}");
    }
    // Settled: the next plan has nothing to do.
    let plan = s.plan_json(&[]);
    assert_eq!(plan["changes"].as_array().map(Vec::len), Some(0), "{plan}");
}

#[tokio::test]
async fn tagging_a_bucket_just_created_lands_the_tags() {
    // What `import` does to a bucket made outside the tool, here right after it was made.
    let c = clients().await;
    let name = testkit::unique_name("adopted");
    c.s3().create_bucket().bucket(&name).send().await.unwrap();
    let tags = BTreeMap::from([("provision:stack".to_string(), "adopter".to_string())]);
    bucket::tag(&c, &name, &tags).await.unwrap();
    assert_eq!(bucket_tags(&c, &name).await, tags);
}
