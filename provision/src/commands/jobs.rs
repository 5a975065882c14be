//! `provision jobs`: the stack's jobs across its queues, as a table or JSON, once or until
//! they end.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::JobsArgs;
use crate::jobs::list::{self, Listing, Query, MIN_POLL_INTERVAL};

pub async fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let stack = match crate::jobs::load_stack(&args.stack) {
        Ok(stack) => stack,
        Err(code) => return Ok(code),
    };
    let query = Query::new(&stack, &args.queues, &args.statuses, args.since.as_deref())?;
    let interval = poll_interval(&args.poll_interval)?;
    let clients = crate::aws::Clients::new(&stack.region).await?;

    let clear = args.watch && !args.json && std::io::stdout().is_terminal();
    loop {
        let listing = list::list(clients.batch(), &query).await?;
        print(&listing, &args, clear)?;
        if !args.watch || listing.jobs.iter().all(list::JobRow::is_done) {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(listing.next_poll(interval)).await;
    }
}

/// `--poll-interval`: a duration of at least a second.
fn poll_interval(raw: &str) -> anyhow::Result<Duration> {
    let interval = humantime::parse_duration(raw.trim()).with_context(|| {
        format!("--poll-interval `{raw}`: give a duration such as 5s, 30s or 1m")
    })?;
    anyhow::ensure!(
        interval >= MIN_POLL_INTERVAL,
        "--poll-interval {raw} is shorter than 1s: polling faster only spends Batch's request \
         rate (give 1s or more)"
    );
    Ok(interval)
}

fn print(listing: &Listing, args: &JobsArgs, clear: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if args.json {
        // One document per refresh: a single line each when watching, so a reader can split.
        let json = if args.watch {
            serde_json::to_string(&listing.jobs)?
        } else {
            serde_json::to_string_pretty(&listing.jobs)?
        };
        writeln!(stdout, "{json}")?;
    } else {
        if clear {
            write!(stdout, "\x1b[H\x1b[2J")?;
        }
        write!(stdout, "{}", list::table(&listing.jobs))?;
        let totals: Vec<String> = listing
            .totals()
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        let summary = if totals.is_empty() {
            "no jobs".to_string()
        } else {
            format!("{} jobs: {}", listing.jobs.len(), totals.join(", "))
        };
        if args.watch {
            writeln!(
                stdout,
                "{summary} ({} requests; {})",
                listing.calls,
                chrono::Utc::now().format("%H:%M:%S")
            )?;
        } else {
            // The summary is for people: on stderr, so the table stays one header and rows.
            eprintln!("{summary} ({} requests)", listing.calls);
        }
    }
    stdout.flush()?;
    Ok(())
}
