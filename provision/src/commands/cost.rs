//! `provision cost`: what the stack costs per hour at full scale and idle, from the price table
//! shipped with the tool (no AWS call), or with current Spot prices (`--refresh-prices`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::CostArgs;
use crate::cost::{self, PriceTable, StorageUse};
use crate::engine;

pub async fn run(args: CostArgs) -> Result<ExitCode> {
    let stack = engine::load_stack(&args.stack)?;
    for (flag, gb) in [("--s3-gb", args.s3_gb), ("--ecr-gb", args.ecr_gb)] {
        anyhow::ensure!(
            gb.is_finite() && gb >= 0.0,
            "{flag} {gb}: give the gigabytes stored, 0 or more"
        );
    }
    let mut table = PriceTable::builtin()?;
    if args.refresh_prices {
        let clients = crate::aws::Clients::new(&stack.region).await?;
        let types: Vec<String> = stack
            .compute
            .values()
            .flat_map(|ce| ce.instance_types.iter().cloned())
            .collect();
        cost::refresh_spot_prices(&mut table, clients.ec2(), &stack.region, &types).await?;
    }
    let estimate = cost::stack_cost(
        &stack,
        &table,
        StorageUse {
            s3_gb: args.s3_gb,
            ecr_gb: args.ecr_gb,
        },
    );
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&estimate)?)?;
    } else {
        write!(stdout, "{}", estimate.text())?;
        if estimate.region != estimate.prices_region {
            eprintln!(
                "note: prices are {}'s (the only table shipped); {} differs by some percent",
                estimate.prices_region, estimate.region
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
