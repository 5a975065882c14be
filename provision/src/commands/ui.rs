//! `provision ui`: serves the stack's dashboard until Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
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
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    // The URL alone on stdout (scripts read it); the rest on stderr.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "http://{host}:{}/", addr.port())?;
    stdout.flush()?;
    drop(stdout);
    eprintln!(
        "provision ui: stack {} ({}) on http://{host}:{}/ (read-only; Ctrl-C stops it)",
        stack.name,
        stack.env,
        addr.port()
    );
    ui::serve(listener, Arc::new(ui::App::new(stack, clients))).await?;
    Ok(ExitCode::SUCCESS)
}
