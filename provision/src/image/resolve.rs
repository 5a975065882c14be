//! Tags to digests, at plan: a job definition names the image a tag points at now, so a push
//! shows in the next plan as a new job definition revision, and a job already queued keeps
//! the image it was submitted with.

use std::collections::BTreeMap;

use anyhow::Context;
use aws_sdk_ecr::types::ImageIdentifier;

use crate::aws::Clients;
use crate::stack::Stack;

/// `key:tag` → `sha256:...` for every repository tag the stack's jobs name and that has been
/// pushed. A repository that does not exist yet (first apply) or a tag not pushed yet is left
/// out: its job definitions name the tag until an image is pushed. One ECR BatchGetImage per
/// repository, all at once.
pub async fn digests(c: &Clients, stack: &Stack) -> anyhow::Result<BTreeMap<String, String>> {
    let mut by_repository: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, tag) in stack.image_tags() {
        by_repository.entry(key).or_default().push(tag);
    }
    let reads = by_repository
        .into_iter()
        .map(|(key, tags)| async move { read(c, stack, &key, &tags).await });
    let mut out = BTreeMap::new();
    for found in futures::future::try_join_all(reads).await? {
        out.extend(found);
    }
    Ok(out)
}

async fn read(
    c: &Clients,
    stack: &Stack,
    key: &str,
    tags: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let name = stack.repository_name(key);
    let mut request = c.ecr().batch_get_image().repository_name(&name);
    for tag in tags {
        request = request.image_ids(ImageIdentifier::builder().image_tag(tag).build());
    }
    let out = match request.send().await {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_repository_not_found_exception()) =>
        {
            return Ok(vec![]);
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ))
            .with_context(|| format!("reading the images of repository {name}"))
        }
    };
    Ok(out
        .images()
        .iter()
        .filter_map(|image| {
            let id = image.image_id()?;
            Some((
                format!("{key}:{}", id.image_tag()?),
                id.image_digest()?.to_string(),
            ))
        })
        .collect())
}
