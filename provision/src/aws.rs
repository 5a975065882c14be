//! AWS clients, built once per command: region from the stack, everything else (credentials,
//! endpoint, profile) from the SDK's standard chain, and retries configured here for all.

use std::sync::OnceLock;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Attempts per call, first try included. With throttles and 500s on a 100-call apply the SDK's
/// default of 3 is not enough (docs/design.md, "The test emulator"); standard mode backs off
/// exponentially.
const MAX_ATTEMPTS: u32 = 10;

/// Starts loading the system's trusted root certificates on a thread of their own while the
/// command parses its stack. The SDK loads them once per process, into the cache its default
/// HTTPS client reads, when the first client is built: about 5 ms of reading and decoding some
/// 150 PEM files, before the first request could leave. Whichever gets there first loads them;
/// the other waits for that load and reuses it.
pub fn preload_tls_roots() {
    std::thread::spawn(|| {
        use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
        // The provider the SDK's default client uses (aws-config's `default-https-client`).
        aws_smithy_http_client::Connector::builder()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .build();
    });
}

/// The SDK configuration loader every command uses: the standard chain, with retries and
/// timeouts set here for all.
fn config_loader() -> aws_config::ConfigLoader {
    with_retries(aws_config::defaults(BehaviorVersion::latest()))
}

/// `loader` with the tool's retries and timeouts (tests give theirs an explicit endpoint).
pub fn with_retries(loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
    loader
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
}

/// The shared SDK configuration for `region`.
pub async fn sdk_config(region: &str) -> SdkConfig {
    config_loader()
        .region(Region::new(region.to_string()))
        .load()
        .await
}

/// S3 needs path-style addressing on S3-compatible stores (an explicit endpoint); real AWS
/// keeps the SDK's default virtual-hosted style.
pub fn s3_path_style(config: &SdkConfig) -> bool {
    config.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
}

/// Every client the tool uses, from one configuration. Each is built on first use: building
/// one costs about 0.3 ms (its endpoint rules, and a TLS connector the SDK builds to check the
/// configuration), a command needs only some of them, and `plan`'s first requests leave before
/// the clients its later reads use exist.
#[derive(Clone, Debug)]
pub struct Clients {
    pub config: SdkConfig,
    batch: OnceLock<aws_sdk_batch::Client>,
    ec2: OnceLock<aws_sdk_ec2::Client>,
    iam: OnceLock<aws_sdk_iam::Client>,
    s3: OnceLock<aws_sdk_s3::Client>,
    ecr: OnceLock<aws_sdk_ecr::Client>,
    dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
    logs: OnceLock<aws_sdk_cloudwatchlogs::Client>,
    sts: OnceLock<aws_sdk_sts::Client>,
    secrets: OnceLock<aws_sdk_secretsmanager::Client>,
}

/// `Clients::$name()`: the client of `$sdk`, built from the shared configuration.
macro_rules! client {
    ($name:ident, $sdk:ident) => {
        pub fn $name(&self) -> &$sdk::Client {
            self.$name.get_or_init(|| $sdk::Client::new(&self.config))
        }
    };
}

impl Clients {
    /// Every client for `region`, after checking the endpoint variables the SDK will read.
    pub async fn new(region: &str) -> anyhow::Result<Self> {
        check_endpoint_env()?;
        Ok(Self::from_config(sdk_config(region).await))
    }

    /// Clients for commands that take a job id rather than a stack: a job id carries no
    /// region, so the SDK's chain (AWS_REGION, the profile) supplies it.
    pub async fn from_chain() -> anyhow::Result<Self> {
        check_endpoint_env()?;
        let config = config_loader().load().await;
        if config.region().is_none() {
            anyhow::bail!(
                "no AWS region: set AWS_REGION (or a profile's region) to the stack's region"
            );
        }
        Ok(Self::from_config(config))
    }

    /// Every client from one SDK configuration (tests build theirs with another endpoint).
    pub fn from_config(config: SdkConfig) -> Self {
        Self {
            config,
            batch: OnceLock::new(),
            ec2: OnceLock::new(),
            iam: OnceLock::new(),
            s3: OnceLock::new(),
            ecr: OnceLock::new(),
            dynamodb: OnceLock::new(),
            logs: OnceLock::new(),
            sts: OnceLock::new(),
            secrets: OnceLock::new(),
        }
    }

    client!(batch, aws_sdk_batch);
    client!(ec2, aws_sdk_ec2);
    client!(iam, aws_sdk_iam);
    client!(ecr, aws_sdk_ecr);
    client!(dynamodb, aws_sdk_dynamodb);
    client!(logs, aws_sdk_cloudwatchlogs);
    client!(sts, aws_sdk_sts);
    client!(secrets, aws_sdk_secretsmanager);

    pub fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3.get_or_init(|| {
            let config = aws_sdk_s3::config::Builder::from(&self.config)
                .force_path_style(s3_path_style(&self.config))
                .retry_classifier(crate::resources::bucket::RetryOperationAborted)
                .build();
            aws_sdk_s3::Client::from_conf(config)
        })
    }
}

/// Checks `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` before any client reads them:
/// the SDK panics on an empty one, and on one without a scheme it warns and then reports that
/// AWS's own endpoint cannot be reached. An empty value often comes from a command that printed
/// nothing (`$(cat .emulator/endpoint)` after the emulator stopped): going on to real AWS in its
/// place would be the worst reading of it.
pub fn check_endpoint_env() -> anyhow::Result<()> {
    if std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Ok(());
    }
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(name, value)| {
            Some((
                name.into_string().ok()?,
                value.to_string_lossy().into_owned(),
            ))
        })
        .filter(|(name, _)| name == "AWS_ENDPOINT_URL" || name.starts_with("AWS_ENDPOINT_URL_"))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let host = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            anyhow::bail!(
                "{name}={value:?} is not an endpoint URL: give a scheme and a host, such as http://127.0.0.1:5000 \
                 (`make emulator` prints one), or unset {name} to use AWS's own endpoints"
            );
        }
    }
    Ok(())
}

/// What to do about missing or refused credentials, for the error messages below.
const CREDENTIALS_HELP: &str =
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (see `aws configure`), \
     or run where a role provides them";

/// Checks, before anything else, that credentials exist, that AWS accepts them and that it can
/// be reached at all; returns the account id. Each failure is one plain sentence instead of
/// the SDK's dispatch chain, and comes before any change (or any wait on a lock).
pub async fn check_access(clients: &Clients) -> anyhow::Result<String> {
    use aws_sdk_sts::config::ProvideCredentials;
    use aws_smithy_runtime_api::client::result::SdkError;

    let provider = clients
        .config
        .credentials_provider()
        .ok_or_else(|| anyhow::anyhow!("no AWS credentials: {CREDENTIALS_HELP}"))?;
    if let Err(err) = provider.provide_credentials().await {
        // The chain found nothing (the usual case) or a source failed (a broken profile).
        let reason = if format!("{err:?}").starts_with("CredentialsNotLoaded") {
            "none found in the environment, the profile files or an instance role".to_string()
        } else {
            // Every layer of the chain's error prints its Debug form, raw HTTP answers included
            // (an instance metadata service that refuses): the innermost cause says it in a line.
            let mut cause: &dyn std::error::Error = &err;
            while let Some(next) = cause.source() {
                cause = next;
            }
            format!("none usable; the last source tried answered: {cause}")
        };
        anyhow::bail!("no AWS credentials ({reason}): {CREDENTIALS_HELP}");
    }
    let endpoint = clients
        .config
        .endpoint_url()
        .map(String::from)
        .unwrap_or_else(|| {
            format!(
                "https://sts.{}.amazonaws.com",
                clients.config.region().map(|r| r.as_ref()).unwrap_or("?")
            )
        });
    // Nothing listening at the endpoint is not retried: the answer comes at once instead of
    // after ten backoffs (9 s). Throttles and 500s are retried as on every call.
    let refused_is_final = aws_sdk_sts::config::Builder::default().retry_classifier(RefusedIsFinal);
    match clients
        .sts()
        .get_caller_identity()
        .customize()
        .config_override(refused_is_final)
        .send()
        .await
    {
        Ok(out) => out
            .account()
            .map(String::from)
            .ok_or_else(|| anyhow::anyhow!("STS GetCallerIdentity answered without an account id")),
        Err(SdkError::ServiceError(e)) => {
            use aws_smithy_types::error::metadata::ProvideErrorMetadata;
            let err = e.err();
            let code = err.code().unwrap_or("unknown error");
            let message = err.message().unwrap_or("");
            anyhow::bail!("AWS refused the credentials ({code}: {message}): {CREDENTIALS_HELP}")
        }
        Err(SdkError::DispatchFailure(e)) => {
            let cause = e.as_connector_error().map(|c| {
                let mut source: &dyn std::error::Error = c;
                while let Some(next) = source.source() {
                    source = next;
                }
                source.to_string()
            });
            anyhow::bail!(
                "cannot reach AWS at {endpoint}: {} (check the network, AWS_ENDPOINT_URL and the stack's region)",
                cause.unwrap_or_else(|| "the connection failed".into())
            )
        }
        Err(SdkError::TimeoutError(_)) => {
            anyhow::bail!("cannot reach AWS at {endpoint}: timed out (check the network, AWS_ENDPOINT_URL and the stack's region)")
        }
        Err(other) => anyhow::bail!(
            "checking the credentials with STS GetCallerIdentity at {endpoint}: {}",
            aws_smithy_types::error::display::DisplayErrorContext(&other)
        ),
    }
}

/// Classifies a refused connection as final. AWS's endpoints do not refuse connections; an
/// endpoint that does (an emulator not started, a wrong `AWS_ENDPOINT_URL` port) will not start
/// listening within the backoffs.
#[derive(Debug)]
struct RefusedIsFinal;

impl aws_smithy_runtime_api::client::retries::classifiers::ClassifyRetry for RefusedIsFinal {
    fn classify_retry(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::InterceptorContext,
    ) -> aws_smithy_runtime_api::client::retries::classifiers::RetryAction {
        use aws_smithy_runtime_api::client::retries::classifiers::RetryAction;
        let Some(Err(err)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let mut source: Option<&(dyn std::error::Error + 'static)> = match err.as_connector_error()
        {
            Some(connector) => Some(connector),
            None => return RetryAction::NoActionIndicated,
        };
        while let Some(err) = source {
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            {
                return RetryAction::RetryForbidden;
            }
            source = err.source();
        }
        RetryAction::NoActionIndicated
    }

    fn name(&self) -> &'static str {
        "refused connection is final"
    }
}
