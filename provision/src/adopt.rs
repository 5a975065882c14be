//! Adopting a resource that exists but is not the stack's (`provision import`): which kinds
//! can be adopted, what a name or ARN must look like for each, and the tagging that makes it
//! the stack's. The plan's refusal of an untagged resource names the import command.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::aws::Clients;
use crate::resources::{
    bucket, iam, log_group, repository, tag_batch_resource, Address, Kind, Live,
};
use crate::stack::Stack;

/// The kinds `import` adopts. Security groups, launch templates, endpoints and the instance
/// profile follow the resources they serve and are created by apply.
pub const IMPORTABLE: [Kind; 7] = [
    Kind::Bucket,
    Kind::Repository,
    Kind::Role,
    Kind::LogGroup,
    Kind::ComputeEnvironment,
    Kind::JobQueue,
    Kind::JobDefinition,
];

/// The ARN shape of a kind: (service, resource-type prefix) and a word for messages.
fn arn_shape(kind: Kind) -> (&'static str, &'static str, &'static str) {
    match kind {
        Kind::Bucket => ("s3", "", "S3 bucket"),
        Kind::Repository => ("ecr", "repository/", "ECR repository"),
        Kind::Role => ("iam", "role/", "IAM role"),
        Kind::LogGroup => ("logs", "log-group:", "log group"),
        Kind::ComputeEnvironment => ("batch", "compute-environment/", "compute environment"),
        Kind::JobQueue => ("batch", "job-queue/", "job queue"),
        Kind::JobDefinition => ("batch", "job-definition/", "job definition"),
        _ => ("", "", "resource"),
    }
}

/// What an ARN names, in words (for the wrong-kind error).
fn arn_kind_words(service: &str, resource: &str) -> String {
    for kind in IMPORTABLE {
        let (svc, prefix, words) = arn_shape(kind);
        if svc == service && resource.starts_with(prefix) {
            return words.to_string();
        }
    }
    format!("{service} resource `{resource}`")
}

/// The resource's name from `given` (a name or an ARN), checked against the address's `kind`
/// and the stack's region. No AWS call: bad input is refused before any.
pub fn resource_name(kind: Kind, region: &str, given: &str) -> Result<String> {
    let given = given.trim();
    anyhow::ensure!(!given.is_empty(), "give the resource's name or ARN");
    let (_, _, words) = arn_shape(kind);
    let Some(rest) = given.strip_prefix("arn:") else {
        anyhow::ensure!(
            !given.contains(['/', ' ']) || kind == Kind::LogGroup,
            "`{given}` is neither a {words} name nor an ARN"
        );
        // A job definition may be given with its revision (`name:3`): the name adopts them all.
        let name = match kind {
            Kind::JobDefinition => given.split(':').next().unwrap_or(given),
            _ => given,
        };
        return Ok(name.to_string());
    };
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    let [_partition, service, arn_region, _account, resource] = parts[..] else {
        bail!("`{given}` is not an ARN (arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE)");
    };
    let (want_service, prefix, _) = arn_shape(kind);
    if service != want_service || !resource.starts_with(prefix) {
        bail!(
            "`{given}` is a {}, not a {words}: address {} takes a {words}",
            arn_kind_words(service, resource),
            kind.as_str()
        );
    }
    if !arn_region.is_empty() && arn_region != region {
        bail!(
            "`{given}` is in region {arn_region}, but the stack is in {region}: import adopts \
             resources of the stack's own region (set [stack] region, or pick the resource in {region})"
        );
    }
    let name = &resource[prefix.len()..];
    let name = match kind {
        // Roles may have a path (`role/path/name`); log group ARNs may end in `:*`; job
        // definition ARNs carry the revision.
        Kind::Role => name.rsplit('/').next().unwrap_or(name),
        Kind::LogGroup => name.trim_end_matches(":*"),
        Kind::JobDefinition => name.split(':').next().unwrap_or(name),
        _ => name,
    };
    anyhow::ensure!(!name.is_empty(), "`{given}` names no resource");
    Ok(name.to_string())
}

/// Whose a live resource is by its tags: `Some((stack, env))` when it carries another
/// stack's or environment's tags (it must not be taken from them).
pub fn foreign_owner(live: &Live, stack: &Stack) -> Option<(String, String)> {
    let tags = live.tags.as_ref()?;
    let owner_stack = tags.get(crate::stack::names::TAG_STACK)?;
    let owner_env = tags
        .get(crate::stack::names::TAG_ENV)
        .cloned()
        .unwrap_or_default();
    (*owner_stack != stack.name || owner_env != stack.env).then(|| (owner_stack.clone(), owner_env))
}

/// Tags the adopted resource as the stack's: `name` is its AWS name, `id` what its read
/// returned (an ARN for Batch resources).
pub async fn tag(
    c: &Clients,
    kind: Kind,
    name: &str,
    id: &str,
    tags: &BTreeMap<String, String>,
) -> Result<()> {
    match kind {
        Kind::Bucket => bucket::tag(c, name, tags).await,
        Kind::Repository => repository::tag(c, name, tags).await,
        Kind::Role => iam::tag_role(c, name, tags).await,
        Kind::LogGroup => log_group::tag(c, name, tags).await,
        Kind::ComputeEnvironment | Kind::JobQueue | Kind::JobDefinition => {
            tag_batch_resource(c, id, tags).await
        }
        other => bail!("{} resources cannot be imported", other.as_str()),
    }
}

/// `, or adopt it with `provision import --stack F [--env E] ADDRESS NAME``: how to adopt a
/// resource the plan refused as someone else's (empty for kinds import does not adopt).
pub fn import_hint(stack: &Stack, address: &Address, name: &str) -> String {
    if !IMPORTABLE.contains(&address.kind) {
        return String::new();
    }
    let mut cmd = format!("provision import --stack {}", stack.source.display());
    if stack.env != "default" {
        cmd.push_str(&format!(" --env {}", stack.env));
    }
    format!(", or adopt it with `{cmd} {address} {name}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns_of_the_right_kind_give_the_name() {
        let r = "us-east-1";
        let cases = [
            (Kind::Bucket, "arn:aws:s3:::my-bucket", "my-bucket"),
            (Kind::Bucket, "my-bucket", "my-bucket"),
            (
                Kind::Repository,
                "arn:aws:ecr:us-east-1:123456789012:repository/app",
                "app",
            ),
            (
                Kind::Role,
                "arn:aws:iam::123456789012:role/ml/p-job",
                "p-job",
            ),
            (
                Kind::LogGroup,
                "arn:aws:logs:us-east-1:1:log-group:/aws/batch/p:*",
                "/aws/batch/p",
            ),
            (Kind::LogGroup, "/aws/batch/p", "/aws/batch/p"),
            (
                Kind::ComputeEnvironment,
                "arn:aws:batch:us-east-1:1:compute-environment/p-spot",
                "p-spot",
            ),
            (
                Kind::JobQueue,
                "arn:aws:batch:us-east-1:1:job-queue/p-main",
                "p-main",
            ),
            (
                Kind::JobDefinition,
                "arn:aws:batch:us-east-1:1:job-definition/p-train:7",
                "p-train",
            ),
            (Kind::JobDefinition, "p-train:7", "p-train"),
        ];
        for (kind, given, want) in cases {
            assert_eq!(resource_name(kind, r, given).unwrap(), want, "{given}");
        }
    }

    #[test]
    fn the_wrong_kind_or_region_is_refused() {
        let err = resource_name(
            Kind::ComputeEnvironment,
            "us-east-1",
            "arn:aws:batch:us-east-1:1:job-queue/p-main",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("is a job queue, not a compute environment"),
            "{err}"
        );
        let err = resource_name(
            Kind::JobQueue,
            "us-east-1",
            "arn:aws:batch:eu-west-1:1:job-queue/p-main",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("region eu-west-1"), "{err}");
        assert!(resource_name(Kind::Bucket, "us-east-1", "arn:aws:iam::1:role/x").is_err());
        assert!(resource_name(Kind::Bucket, "us-east-1", "arn:broken").is_err());
        assert!(resource_name(Kind::JobQueue, "us-east-1", "a/b").is_err());
    }
}
