//! `provision image build|push`: the jobs' image without a container daemon.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use crate::aws::Clients;
use crate::cli::{ImageArgs, ImageBuildArgs, ImageCommand, ImagePushArgs};
use crate::image::{build, layout, registry};
use crate::jobs;
use crate::stack::{flavour, Stack, IMAGE_TAG};

/// The gpu flavour's default base: the CUDA runtime the Dockerfile's gpu target uses.
pub const DEFAULT_GPU_BASE: &str = "nvidia/cuda:12.8.1-runtime-ubuntu24.04";

pub async fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ImageCommand::Build(args) => build_image(args).await,
        ImageCommand::Push(args) => push_image(args).await,
    }
}

/// `target/image/cpu` or `target/image/gpu`.
fn default_dir(stack: &Stack) -> PathBuf {
    Path::new("target/image").join(flavour(stack.gpu))
}

async fn build_image(args: ImageBuildArgs) -> anyhow::Result<ExitCode> {
    let stack = match jobs::load_stack(&args.stack) {
        Ok(stack) => stack,
        Err(code) => return Ok(code),
    };
    if let Some(tag) = &args.tag {
        check_tag(tag, "--tag")?;
    }
    let start = Instant::now();
    let base = if stack.gpu {
        eprintln!("pulling the base image {}", args.base);
        Some(registry::pull_base(&args.base).await?)
    } else {
        None
    };
    let out = args.out.unwrap_or_else(|| default_dir(&stack));
    let revision = args.tag.or_else(git_revision);
    let built = build::build(build::Options {
        binary: args.binary,
        out: out.clone(),
        base,
        revision,
    })?;
    let size: u64 = built.layers.iter().map(|(_, s)| s).sum();
    eprintln!(
        "built the {} image in {:.2} s: {} layers, {:.1} MB compressed, in {}",
        flavour(stack.gpu),
        start.elapsed().as_secs_f64(),
        built.layers.len(),
        size as f64 / 1e6,
        out.display()
    );
    writeln!(std::io::stdout(), "{}", built.digest)?;
    Ok(ExitCode::SUCCESS)
}

async fn push_image(args: ImagePushArgs) -> anyhow::Result<ExitCode> {
    let stack = match jobs::load_stack(&args.stack) {
        Ok(stack) => stack,
        Err(code) => return Ok(code),
    };
    // Every local check before any AWS call.
    let key = repository_key(&stack, args.repository.as_deref())?;
    let override_endpoint = args
        .registry
        .as_deref()
        .map(registry::Endpoint::parse)
        .transpose()?;
    let dir = args.image.unwrap_or_else(|| default_dir(&stack));
    let image = layout::read(&dir)?;
    let tags = tags(&image)?;

    let clients = Clients::new(&stack.region).await?;
    crate::engine::stack_account(&clients, &stack).await?;
    let name = stack.repository_name(&key);
    let uri = repository_uri(&clients, &name, &args.stack).await?;
    let endpoint = match override_endpoint {
        Some(endpoint) => endpoint,
        None => registry::Endpoint::of_repository_uri(&uri)?,
    };
    let auth = registry::ecr_auth(&clients).await?;
    let total: i64 = image.blobs().iter().map(|b| b.size).sum();
    let progress = indicatif::ProgressBar::with_draw_target(
        Some(total.max(0) as u64),
        indicatif::ProgressDrawTarget::stderr(),
    )
    .with_style(
        indicatif::ProgressStyle::with_template("pushing {bytes}/{total_bytes} {wide_bar} {eta}")
            .expect("a valid template"),
    );
    registry::push(&endpoint, &auth, &name, &image, &tags, &progress).await?;
    progress.finish_and_clear();
    eprintln!(
        "pushed {} to {}/{name} as {}",
        image.digest,
        endpoint.host,
        tags.join(", ")
    );
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let out = json!({
            "repository": uri,
            "digest": image.digest,
            "tags": tags,
            "registry": endpoint.host,
        });
        writeln!(stdout, "{out}")?;
    } else {
        writeln!(stdout, "{uri}@{}", image.digest)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--repository`, or the stack's only repository.
fn repository_key(stack: &Stack, given: Option<&str>) -> anyhow::Result<String> {
    let keys: Vec<&str> = stack.repositories.keys().map(String::as_str).collect();
    match given {
        Some(key) if stack.repositories.contains_key(key) => Ok(key.to_string()),
        Some(key) => anyhow::bail!(
            "--repository {key}: no such key in [repositories] (defined: {})",
            if keys.is_empty() {
                "none".to_string()
            } else {
                keys.join(", ")
            }
        ),
        None => match keys.as_slice() {
            [only] => Ok(only.to_string()),
            [] => anyhow::bail!("the stack has no [repositories] to push to: add one"),
            _ => anyhow::bail!(
                "the stack has several repositories ({}): choose one with --repository",
                keys.join(", ")
            ),
        },
    }
}

/// The tags a push adds: the revision (for the gpu flavour, `REVISION-gpu`, so the two flavours
/// of one commit do not share a tag) and the flavour.
fn tags(image: &layout::Image) -> anyhow::Result<Vec<String>> {
    let mut tags = Vec::new();
    if let Some(revision) = &image.revision {
        let tag = match image.flavour.as_str() {
            "gpu" => format!("{revision}-gpu"),
            _ => revision.clone(),
        };
        check_tag(&tag, "the image's revision")?;
        tags.push(tag);
    }
    check_tag(&image.flavour, "the image's flavour")?;
    tags.push(image.flavour.clone());
    Ok(tags)
}

fn check_tag(tag: &str, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        IMAGE_TAG.is_match(tag),
        "{what} `{tag}` is not an image tag: use 1 to 128 of A-Z a-z 0-9 _ . - (not starting with . or -)"
    );
    Ok(())
}

/// The repository's URI, from ECR; a missing repository means the stack is not applied.
async fn repository_uri(
    clients: &Clients,
    name: &str,
    stack_args: &crate::cli::StackArgs,
) -> anyhow::Result<String> {
    let out = clients
        .ecr()
        .describe_repositories()
        .repository_names(name)
        .send()
        .await;
    match out {
        Ok(out) => out
            .repositories()
            .first()
            .and_then(|r| r.repository_uri())
            .map(String::from)
            .with_context(|| format!("ECR answered no URI for repository {name}")),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_repository_not_found_exception()) =>
        {
            anyhow::bail!(
                "repository {name} does not exist: apply the stack first (`{}`)",
                jobs::apply_command(stack_args)
            )
        }
        Err(e) => anyhow::bail!(
            "ECR DescribeRepositories {name}: {}",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        ),
    }
}

/// The git commit of the work tree (12 hex digits), `-dirty` when tracked files changed.
fn git_revision() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let clean = Command::new("git")
        .args(["diff", "--quiet", "HEAD"])
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?
        .success();
    Some(if clean { sha } else { format!("{sha}-dirty") })
}
