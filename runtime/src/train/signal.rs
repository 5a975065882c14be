//! SIGTERM is what Batch sends before it kills a container (Spot reclaim, cancel, timeout): turn
//! it into a flag that the training loop reads at each batch boundary. On EC2, the Spot
//! interruption notice in the instance metadata comes two minutes before that SIGTERM's
//! instance goes away: polling it sets the same flag earlier, so the checkpoint never races the
//! reclaim.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

/// Installs the handler; the returned flag turns true once SIGTERM (or SIGINT) arrives. From then
/// on the signal no longer kills the process: the trainer checkpoints and exits 143 itself.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal listener")?;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // Registered here, before returning, so no SIGTERM can fall between start and listen.
        let (mut term, mut int) = rt.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })?;
        let f = flag.clone();
        std::thread::Builder::new().name("sigterm".into()).spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => tracing::warn!("SIGTERM: checkpointing at the next batch boundary"),
                    _ = int.recv() => tracing::warn!("SIGINT: checkpointing at the next batch boundary"),
                    notice = spot_interruption_notice() => {
                        tracing::warn!("Spot interruption notice ({notice}): checkpointing at the next batch boundary")
                    }
                }
            });
            f.store(true, Ordering::SeqCst);
        })?;
    }
    Ok(flag)
}

/// How often the metadata is asked; AWS suggests every 5 s for a notice given 2 minutes ahead.
const SPOT_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether this process runs where instance metadata exists: in a Batch job (EC2 compute
/// environments), or wherever `AWS_EC2_METADATA_SERVICE_ENDPOINT` names an endpoint; never when
/// `AWS_EC2_METADATA_DISABLED=true`, the SDK's own switch.
fn metadata_expected() -> bool {
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    var("AWS_BATCH_JOB_ID").is_some() || var("AWS_EC2_METADATA_SERVICE_ENDPOINT").is_some()
}

/// Resolves with the notice (`{"action": "terminate", "time": ...}`) once EC2 posts one; never,
/// where there is no instance metadata. Until then the path answers 404.
async fn spot_interruption_notice() -> String {
    if !metadata_expected() {
        return std::future::pending().await;
    }
    // The SDK's client: IMDSv2 tokens, the standard endpoint variables, short timeouts.
    let client = aws_config::imds::Client::builder()
        .max_attempts(1)
        .connect_timeout(std::time::Duration::from_secs(1))
        .read_timeout(std::time::Duration::from_secs(1))
        .build();
    loop {
        if let Ok(notice) = client.get("/latest/meta-data/spot/instance-action").await {
            return notice.as_ref().to_string();
        }
        tokio::time::sleep(SPOT_POLL).await;
    }
}
