//! `provision cost`: what the stack costs per hour at full scale and idle, from the price table
//! shipped with the tool (no AWS call), or with current Spot prices (`--refresh-prices`) and
//! the storage the stack holds now (`--measure-storage`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::CostArgs;
use crate::cost::{self, PriceTable, StorageUse};
use crate::engine;
use crate::resources::{bucket, repository};

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
    let storage = if args.measure_storage {
        measured_storage(&stack).await?
    } else {
        StorageUse {
            s3_gb: args.s3_gb,
            ecr_gb: args.ecr_gb,
        }
    };
    let estimate = cost::stack_cost(&stack, &table, storage);
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

/// What the stack's buckets (every version) and repositories (every image) hold now, in GB.
async fn measured_storage(stack: &crate::stack::Stack) -> Result<StorageUse> {
    const GB: f64 = 1e9;
    let clients = crate::aws::Clients::new(&stack.region).await?;
    let account = crate::engine::stack_account(&clients, stack).await?;
    let mut s3 = 0u64;
    for key in stack.buckets.keys() {
        s3 += bucket::stored_bytes(&clients, &stack.bucket_name(key, &account)).await?;
    }
    let mut ecr = 0u64;
    for key in stack.repositories.keys() {
        ecr += repository::image_bytes(&clients, &stack.repository_name(key)).await?;
    }
    Ok(StorageUse {
        s3_gb: s3 as f64 / GB,
        ecr_gb: ecr as f64 / GB,
    })
}
