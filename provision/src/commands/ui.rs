//! `provision ui`: serves the stack's dashboard until Ctrl-C.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

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
    // The URL alone on stdout (scripts read it); the rest on stderr.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{url}")?;
    stdout.flush()?;
    drop(stdout);
    eprintln!(
        "provision ui: stack {} ({}) at {url} (read-only; Ctrl-C stops it)",
        stack.name, stack.env
    );
    ui::serve(listener, Arc::new(ui::App::new(stack, clients))).await?;
    Ok(ExitCode::SUCCESS)
}

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
