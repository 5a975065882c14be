//! The registry protocol (OCI distribution), through `oci-client`: ECR's credentials, pushing a
//! built image, pulling a base image.

use anyhow::Context;
use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::build::Base;
use super::layout;
use super::MANIFEST_TYPE;
use crate::aws::Clients;

/// A registry's address: `host[:port]`, and whether it speaks plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub http: bool,
}

impl Endpoint {
    /// `https://host`, `http://host:port` or a bare `host[:port]` (HTTPS, except on loopback,
    /// where a registry is a local mirror or a test's and speaks HTTP, as Docker assumes too).
    pub fn parse(value: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = match value.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, value),
        };
        let host = rest.trim_end_matches('/');
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        anyhow::ensure!(
            valid && matches!(scheme, None | Some("http") | Some("https")),
            "registry `{value}` is not a registry address: give host[:port], optionally with http:// or https://"
        );
        let http = match scheme {
            Some(s) => s == "http",
            None => is_loopback(host),
        };
        Ok(Self {
            host: host.to_string(),
            http,
        })
    }

    /// The registry of a repository URI (`{account}.dkr.ecr.{region}.amazonaws.com/name`).
    pub fn of_repository_uri(uri: &str) -> anyhow::Result<Self> {
        Self::parse(uri.split('/').next().unwrap_or(uri))
    }

    pub fn client(&self) -> Client {
        let protocol = if self.http {
            ClientProtocol::HttpsExcept(vec![self.host.clone()])
        } else {
            ClientProtocol::Https
        };
        Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..Default::default()
        })
    }
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name.starts_with("127.")
}

/// Registry credentials from ECR: GetAuthorizationToken answers `AWS:<password>`, base64,
/// valid 12 hours, for the account's registry.
pub async fn ecr_auth(clients: &Clients) -> anyhow::Result<RegistryAuth> {
    let out = clients
        .ecr()
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "ECR GetAuthorizationToken: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            )
        })?;
    let token = out
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .context("ECR GetAuthorizationToken answered no token")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .context("ECR's authorization token is not base64")?;
    let decoded = String::from_utf8(decoded).context("ECR's authorization token is not text")?;
    let (user, password) = decoded
        .split_once(':')
        .context("ECR's authorization token is not user:password")?;
    Ok(RegistryAuth::Basic(user.into(), password.into()))
}

/// Pushes `image` to `repository` at `endpoint` under each of `tags`: every blob the registry
/// lacks first, the manifest last, so a tag never names an image whose layers are missing: a
/// push cut short leaves only unreferenced blobs, which the next push finds and skips.
pub async fn push(
    endpoint: &Endpoint,
    auth: &RegistryAuth,
    repository: &str,
    image: &layout::Image,
    tags: &[String],
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let client = endpoint.client();
    let first = Reference::with_tag(
        endpoint.host.clone(),
        repository.to_string(),
        tags.first().context("no tag to push")?.clone(),
    );
    client
        .auth(&first, auth, RegistryOperation::Push)
        .await
        .map_err(|e| unreachable_registry(e, endpoint))?;
    for blob in image.blobs() {
        upload_blob(&client, &first, image, &blob.digest)
            .await
            .map_err(|e| {
                let step = format!("uploading blob {}", blob.digest);
                push_error(e, endpoint, &step, "no tag was pushed")
            })?;
        progress.inc(blob.size as u64);
    }
    for (done, tag) in tags.iter().enumerate() {
        let reference = Reference::with_tag(endpoint.host.clone(), repository.into(), tag.clone());
        client
            .push_manifest_raw(
                &reference,
                image.manifest_bytes.clone(),
                MANIFEST_TYPE.parse().expect("a valid header value"),
            )
            .await
            .map_err(|e| {
                let pushed = match &tags[..done] {
                    [] => "no tag was pushed".to_string(),
                    some => format!("tagged only {}", some.join(", ")),
                };
                push_error(
                    e,
                    endpoint,
                    &format!("pushing the manifest as {tag}"),
                    &pushed,
                )
            })?;
    }
    Ok(())
}

/// Uploads one blob unless the registry has it already.
async fn upload_blob(
    client: &Client,
    reference: &Reference,
    image: &layout::Image,
    digest: &str,
) -> Result<(), BlobError> {
    if client.blob_exists(reference, digest).await? {
        return Ok(());
    }
    let path = image.blob_path(digest);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| BlobError::Read(path, e))?;
    client.push_blob(reference, bytes, digest).await?;
    Ok(())
}

enum BlobError {
    Registry(oci_client::errors::OciDistributionError),
    Read(std::path::PathBuf, std::io::Error),
}

impl From<oci_client::errors::OciDistributionError> for BlobError {
    fn from(err: oci_client::errors::OciDistributionError) -> Self {
        BlobError::Registry(err)
    }
}

/// Pulls a base image (manifest, config, layers) for the GPU flavour; `http` as for
/// [`Endpoint::parse`] on the reference's registry.
pub async fn pull_base(reference: &str) -> anyhow::Result<Base> {
    let parsed: Reference = reference
        .parse()
        .with_context(|| format!("--base {reference}: not an image reference"))?;
    let endpoint = Endpoint::parse(parsed.resolve_registry())?;
    let client = endpoint.client();
    let auth = RegistryAuth::Anonymous;
    let (manifest, _digest, config) = client
        .pull_manifest_and_config(&parsed, &auth)
        .await
        .map_err(|e| registry_error(e, "pulling the base image", reference))?;
    let mut layers = Vec::new();
    for layer in manifest.layers {
        let mut bytes = Vec::with_capacity(layer.size.max(0) as usize);
        client
            .pull_blob(&parsed, &layer, &mut bytes)
            .await
            .map_err(|e| registry_error(e, "pulling base layer", &layer.digest))?;
        layers.push((layer, bytes));
    }
    Ok(Base {
        reference: reference.to_string(),
        config: serde_json::from_str(&config).context("the base image's config is not JSON")?,
        layers,
    })
}

/// One line for a registry that cannot be reached or refuses us.
fn unreachable_registry(
    err: oci_client::errors::OciDistributionError,
    endpoint: &Endpoint,
) -> anyhow::Error {
    let scheme = if endpoint.http { "http" } else { "https" };
    anyhow::anyhow!(
        "cannot reach the registry at {scheme}://{}: {} (check --registry or PROVISION_REGISTRY, and the network)",
        endpoint.host,
        innermost(&err)
    )
}

fn registry_error(
    err: oci_client::errors::OciDistributionError,
    what: &str,
    name: &str,
) -> anyhow::Error {
    anyhow::anyhow!("{what} {name}: {}", innermost(&err))
}

/// One line for a step of a push that failed, ending with what the push left (`outcome`):
/// refused credentials say where they came from; anything else names the registry and the
/// cause.
fn push_error(
    err: impl Into<BlobError>,
    endpoint: &Endpoint,
    step: &str,
    outcome: &str,
) -> anyhow::Error {
    let scheme = if endpoint.http { "http" } else { "https" };
    let host = &endpoint.host;
    match err.into() {
        BlobError::Read(path, e) => {
            anyhow::anyhow!("{step}: reading {}: {e}; {outcome}", path.display())
        }
        BlobError::Registry(err) if is_unauthorized(&err) => anyhow::anyhow!(
            "the registry at {scheme}://{host} refused the credentials from ECR GetAuthorizationToken (401 Unauthorized, {step}); {outcome}: push to the repository's own registry (check --registry or PROVISION_REGISTRY)"
        ),
        BlobError::Registry(err) => {
            // A connection lost on the way is worth a retry; an answer is the registry's word.
            let retry = if is_transport(&err) {
                ": run the push again once the registry answers"
            } else {
                ""
            };
            anyhow::anyhow!(
                "{step} to the registry at {scheme}://{host}: {}; {outcome}{retry}",
                innermost(&err)
            )
        }
    }
}

/// No answer came: the connection failed or was cut.
fn is_transport(err: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match err {
        E::RequestError(e) => e.status().is_none(),
        E::IoError(_) => true,
        _ => false,
    }
}

/// A 401, whichever way oci-client reports it.
fn is_unauthorized(err: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match err {
        E::UnauthorizedError { .. } => true,
        E::ServerError { code, .. } => *code == 401,
        E::RequestError(e) => e.status().map(|s| s.as_u16()) == Some(401),
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == oci_client::errors::OciErrorCode::Unauthorized),
        _ => false,
    }
}

/// The innermost cause: reqwest's outer layers say only "error sending request".
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let outer = err.to_string();
    let mut cause = err;
    let mut depth = 0;
    while let Some(next) = cause.source() {
        cause = next;
        depth += 1;
    }
    let inner = cause.to_string();
    if depth == 0 || outer.contains(&inner) {
        outer
    } else {
        inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("127.0.0.1:5000").unwrap();
        assert_eq!((e.host.as_str(), e.http), ("127.0.0.1:5000", true));
        let e = Endpoint::parse("https://127.0.0.1:5000/").unwrap();
        assert_eq!((e.host.as_str(), e.http), ("127.0.0.1:5000", false));
        let e =
            Endpoint::of_repository_uri("123456789012.dkr.ecr.us-east-1.amazonaws.com/p-runtime")
                .unwrap();
        assert_eq!(
            (e.host.as_str(), e.http),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com", false)
        );
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("a b").is_err());
    }
}
