//! `provision run-local`: a job's command on this machine, with the environment its job
//! definition gives it on Batch (no container), so pipeline steps run the same way locally.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use aws_sdk_sts::config::ProvideCredentials;

use crate::aws::Clients;
use crate::cli::RunLocalArgs;
use crate::jobs::{self, select};

/// What a shell reports for a command it cannot find or execute.
const EXIT_NOT_RUNNABLE: u8 = 127;

pub async fn run(args: RunLocalArgs) -> anyhow::Result<ExitCode> {
    let stack = match jobs::load_stack(&args.stack) {
        Ok(stack) => stack,
        Err(code) => return Ok(code),
    };
    let vars = select::parse_vars(&args.vars)?;
    let selected = select::select(&stack, &args.job, vars)?;
    let spec = &selected.spec;
    let command = if args.command.is_empty() {
        spec.command.clone()
    } else {
        args.command.clone()
    };
    let Some((program, program_args)) = command.split_first() else {
        anyhow::bail!("job `{}` has no command; give one after `--`", spec.key);
    };

    let clients = Clients::new(&stack.region).await?;
    // The job's bucket names contain the account id, which only STS can tell; without
    // credentials say that plainly rather than through the SDK's dispatch error.
    const NEED: &str = "run-local reads the AWS account id (the job's bucket names contain \
                        it): set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";
    let provider = clients
        .config
        .credentials_provider()
        .ok_or_else(|| anyhow::anyhow!("no AWS credentials: {NEED}"))?;
    provider
        .provide_credentials()
        .await
        .map_err(|err| anyhow::anyhow!("no AWS credentials ({err}): {NEED}"))?;
    let identity = clients
        .sts()
        .get_caller_identity()
        .send()
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "STS GetCallerIdentity: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&err)
            )
        })?;
    let account = identity
        .account()
        .context("STS GetCallerIdentity returned no account")?;

    let mut env: BTreeMap<String, String> = stack.injected_env(account);
    env.extend(spec.env.clone());
    env.extend(secrets(&clients, &spec.job.secrets).await?);
    env.extend(selected.env.clone());

    let mut cmd = tokio::process::Command::new(program);
    cmd.args(program_args)
        .envs(&env)
        .env_remove("AWS_BATCH_JOB_ARRAY_INDEX");
    if let Some(index) = args.array_index {
        cmd.env("AWS_BATCH_JOB_ARRAY_INDEX", index.to_string());
    }
    let index = args
        .array_index
        .map(|i| format!(" (array index {i})"))
        .unwrap_or_default();
    eprintln!(
        "run-local: {} as job {}{index}",
        shell_words(&command),
        spec.name
    );
    let status = match cmd.status().await {
        Ok(status) => status,
        Err(err) => {
            eprintln!("error: cannot run `{program}`: {err}");
            return Ok(ExitCode::from(EXIT_NOT_RUNNABLE));
        }
    };
    Ok(ExitCode::from(exit_code(status)))
}

/// The job's `secrets`, read as Batch would inject them: each variable gets the secret's value.
async fn secrets(
    clients: &Clients,
    secrets: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, secret) in secrets {
        let value = clients
            .secrets()
            .get_secret_value()
            .secret_id(secret)
            .send()
            .await
            .with_context(|| format!("reading secret `{secret}` for {name}"))?;
        let value = value
            .secret_string()
            .with_context(|| format!("secret `{secret}` for {name} has no string value"))?;
        out.insert(name.clone(), value.to_string());
    }
    Ok(out)
}

/// The child's exit code; a child killed by a signal reports 128 + the signal, as shells do.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(signal)) => (128 + signal).min(255) as u8,
        (None, None) => 1,
    }
}

/// The command as one could paste it into a shell.
fn shell_words(command: &[String]) -> String {
    command
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
