//! SIGTERM is what Batch sends before it kills a container (Spot reclaim, cancel, timeout): turn
//! it into a flag that the training loop reads at each batch boundary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

/// Installs the handler; the returned flag turns true once SIGTERM (or SIGINT) arrives. From then
/// on the signal no longer kills the process: the trainer checkpoints and exits 143 itself.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the signal listener")?;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // Registered here, before returning, so no SIGTERM can fall between start and listen.
        let (mut term, mut int) = rt.block_on(async {
            Ok::<_, std::io::Error>((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
        })?;
        let f = flag.clone();
        std::thread::Builder::new().name("sigterm".into()).spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => tracing::warn!("SIGTERM: checkpointing at the next batch boundary"),
                    _ = int.recv() => tracing::warn!("SIGINT: checkpointing at the next batch boundary"),
                }
            });
            f.store(true, Ordering::SeqCst);
        })?;
    }
    Ok(flag)
}
