//! The error codes the SDK does not model as types, each named once. Modeled errors are matched
//! with the SDK's typed checks (`e.as_service_error().is_some_and(|s| s.is_...())`); these are
//! the rest:
//!
//! - EC2's API declares no error shapes at all, so its SDK errors carry nothing but a code.
//! - S3 declares a few (`NoSuchKey`, `NotFound` on HEAD, `NoSuchBucket` on ListObjectsV2), but
//!   none for the bucket-configuration and version-listing calls a bucket's lifecycle makes.
//!
//! Matching does not consume the error: one that is not matched goes on to `SdkContext::ctx`
//! with its source chain whole.

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// EC2 error codes the resources branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ec2Code {
    VpcEndpointNotFound,
    LaunchTemplateNotFound,
    LaunchTemplateExists,
    SecurityGroupNotFound,
    /// Something still uses the resource (a security group's network interfaces).
    DependencyViolation,
}

impl Ec2Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Ec2Code::VpcEndpointNotFound => "InvalidVpcEndpointId.NotFound",
            Ec2Code::LaunchTemplateNotFound => "InvalidLaunchTemplateName.NotFoundException",
            Ec2Code::LaunchTemplateExists => "InvalidLaunchTemplateName.AlreadyExistsException",
            Ec2Code::SecurityGroupNotFound => "InvalidGroup.NotFound",
            Ec2Code::DependencyViolation => "DependencyViolation",
        }
    }

    /// Whether `err` (an `SdkError` or a service error) carries this code.
    pub fn matches(self, err: &impl ProvideErrorMetadata) -> bool {
        err.code() == Some(self.as_str())
    }
}

/// S3 error codes of calls whose errors the SDK leaves unmodeled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Code {
    NoSuchBucket,
    /// A bucket that is gone, where the answer has no body to say `NoSuchBucket` in.
    NotFound,
    NoSuchTagSet,
    NoSuchLifecycleConfiguration,
    NoEncryptionConfiguration,
    NoSuchPublicAccessBlockConfiguration,
    /// 409: another write to the bucket is in progress; try again (`bucket::RetryOperationAborted`).
    OperationAborted,
}

impl S3Code {
    pub fn as_str(self) -> &'static str {
        match self {
            S3Code::NoSuchBucket => "NoSuchBucket",
            S3Code::NotFound => "NotFound",
            S3Code::NoSuchTagSet => "NoSuchTagSet",
            S3Code::NoSuchLifecycleConfiguration => "NoSuchLifecycleConfiguration",
            S3Code::NoEncryptionConfiguration => "ServerSideEncryptionConfigurationNotFoundError",
            S3Code::NoSuchPublicAccessBlockConfiguration => "NoSuchPublicAccessBlockConfiguration",
            S3Code::OperationAborted => "OperationAborted",
        }
    }

    /// Whether `err` (an `SdkError` or a service error) carries this code.
    pub fn matches(self, err: &impl ProvideErrorMetadata) -> bool {
        err.code() == Some(self.as_str())
    }
}
