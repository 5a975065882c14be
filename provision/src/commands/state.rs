//! `provision state list | show ADDR | rm ADDR | unlock [--force]`.

use std::process::ExitCode;

use anyhow::{bail, Result};
use serde_json::json;

use crate::aws::Clients;
use crate::cli::{StateArgs, StateCommand};
use crate::engine;
use crate::resources::Address;
use crate::state::{lock, Lock, Store};

pub async fn run(args: StateArgs) -> Result<ExitCode> {
    let stack_args = match &args.command {
        StateCommand::List { stack }
        | StateCommand::Show { stack, .. }
        | StateCommand::Rm { stack, .. }
        | StateCommand::Unlock { stack, .. } => stack,
    };
    let stack = engine::load_stack(stack_args)?;
    let clients = Clients::new(&stack.region).await?;
    let store = engine::store(&clients, &stack);
    match args.command {
        StateCommand::List { .. } => {
            let snapshot = store.load().await?;
            for rec in snapshot.records.values() {
                println!("{}\t{}\t{}", rec.address, rec.handle.name, rec.handle.id);
                for deposed in &rec.deposed {
                    println!(
                        "{} (deposed)\t{}\t{}",
                        rec.address, deposed.name, deposed.id
                    );
                }
            }
        }
        StateCommand::Show { address, .. } => {
            let snapshot = store.load().await?;
            let Some(rec) = snapshot.records.get(&address) else {
                bail!(
                    "{address} is not in the state of {} (see `provision state list`)",
                    store.pk
                );
            };
            let shown = json!({
                "address": rec.address,
                "type": rec.handle.kind.as_str(),
                "name": rec.handle.name,
                "id": rec.handle.id,
                "attributes": rec.attributes,
                "dependencies": rec.deps,
                "suffix": rec.suffix,
                "deposed": rec.deposed,
                "hash": rec.hash,
                "updated": rec.updated,
            });
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        StateCommand::Rm { address, .. } => forget(&store, &address).await?,
        StateCommand::Unlock { force, .. } => {
            if !store.table_exists().await? {
                println!("No lock held on {}.", store.pk);
                return Ok(ExitCode::SUCCESS);
            }
            match lock::read(&store).await? {
                None => println!("No lock held on {}.", store.pk),
                Some(info) if force || lock::expired(&info) => {
                    lock::remove(&store).await?;
                    println!("Removed the lock on {} held by {info}.", store.pk);
                }
                Some(info) => bail!(
                    "the lock on {} is held by {info} and has not expired; pass --force if that process is gone",
                    store.pk
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `state rm`: removes `address` from the state under the lock; the resource stays in AWS,
/// and the serial moves so a plan saved before is refused.
async fn forget(store: &Store, address: &Address) -> Result<()> {
    if !store.table_exists().await? {
        bail!(
            "{address} is not in the state of {}: nothing was ever applied",
            store.pk
        );
    }
    let lock = Lock::acquire(store, "state rm").await?;
    let result = forget_locked(store, address).await;
    let released = lock.release().await;
    result?;
    released
}

async fn forget_locked(store: &Store, address: &Address) -> Result<()> {
    let snapshot = store.load().await?;
    let Some(rec) = snapshot.records.get(address) else {
        bail!(
            "{address} is not in the state of {} (see `provision state list`)",
            store.pk
        );
    };
    store.remove(address).await?;
    store.bump_serial(snapshot.gpu).await?;
    println!(
        "Removed {address} ({}) from the state of {}; the resource itself was not deleted.",
        rec.handle.name, store.pk
    );
    Ok(())
}
