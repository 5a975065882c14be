//! `provision ui`: serves the stack's dashboard until Ctrl-C.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::UiArgs;
use crate::ui;

pub async fn run(args: UiArgs) -> anyhow::Result<ExitCode> {
    // A bad stack or a taken port ends here, before any AWS call.
    let stack = match crate::jobs::load_stack(&args.stack) {
        Ok(stack) => stack,
        Err(code) => return Ok(code),
    };
    let listener = ui::bind(SocketAddr::new(args.host, args.port)).await?;
    let clients = ui::clients(&stack.region).await?;
    let url = url(listener.local_addr()?);
    let (stack_name, env) = (stack.name.clone(), stack.env.clone());
    let app = Arc::new(ui::App::new(stack, clients));
    // The URL comes once the first page can show the stack at once (or after a while, when
    // AWS is slow: the page then draws the stack file's resources and fills them in).
    let first_reading = ui::start_reading(&app);
    let server = tokio::spawn(ui::serve(listener, app));
    let _ = tokio::time::timeout(FIRST_READING_WAIT, first_reading).await;
    // The URL alone on stdout (scripts read it); the rest on stderr.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{url}")?;
    stdout.flush()?;
    drop(stdout);
    eprintln!("provision ui: stack {stack_name} ({env}) at {url} (read-only; Ctrl-C stops it)");
    server
        .await
        .map_err(|e| anyhow::anyhow!("the dashboard's server failed: {e}"))??;
    Ok(ExitCode::SUCCESS)
}

/// The longest `provision ui` waits for its first reading of the stack before it prints its URL.
const FIRST_READING_WAIT: Duration = Duration::from_secs(2);

/// `http://ADDR:PORT/`; an unspecified address (listening on every interface) is shown as
/// loopback, which a browser on this machine can open.
fn url(addr: SocketAddr) -> String {
    let shown = match addr.ip() {
        ip if !ip.is_unspecified() => addr,
        IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
    };
    format!("http://{shown}/")
}
