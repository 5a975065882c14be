//! Cost estimates from a price table shipped in the repository (`provision/prices/`), dated, so
//! an estimate needs no network and says how old its prices are.
//!
//! - A stack: $/hour at full scale (every compute environment's `max_vcpus` filled with its
//!   cheapest type per vCPU) and idle (`min_vcpus`), Spot and On-Demand side by side, plus
//!   storage per GB-month.
//! - A job: the cheapest instance type of its queue's compute environments that holds its
//!   vCPUs, memory and GPUs, or why none can (the job would wait in RUNNABLE forever).
//!
//! Batch places whole instances, so a fleet's cost rounds up to whole instances; a job is
//! priced at its instance's hourly rate (an upper bound: Batch may pack several jobs on one).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::resources::{Address, Kind};
use crate::stack::model::{ComputeType, Stack};

/// The shipped table: On-Demand list prices and typical Spot prices in us-east-1.
const US_EAST_1: &str = include_str!("../prices/us-east-1.json");

/// Share of an instance's memory a container can be given: the OS and the ECS agent keep the
/// rest, and a job asking for the whole instance's memory is never placed on it.
const USABLE_MEMORY: f64 = 0.94;

const HOURS_PER_MONTH: f64 = 730.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    /// The region whose prices these are.
    pub region: String,
    /// When the prices were taken (YYYY-MM-DD).
    pub as_of: String,
    pub currency: String,
    pub source: String,
    pub storage: StoragePrices,
    /// Instance type → its size and hourly prices.
    pub instances: BTreeMap<String, InstancePrice>,
    /// Where the Spot prices come from: the table, or a live read (`--refresh-prices`).
    #[serde(default = "table_source")]
    pub spot_source: String,
}

fn table_source() -> String {
    "table".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoragePrices {
    pub s3_standard_gb_month: f64,
    pub ecr_gb_month: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InstancePrice {
    pub vcpus: u32,
    pub memory_gib: u32,
    pub gpus: u32,
    /// $/hour.
    pub on_demand: f64,
    /// $/hour, typical.
    pub spot: f64,
}

impl InstancePrice {
    pub fn price(&self, pricing: ComputeType) -> f64 {
        match pricing {
            ComputeType::Spot => self.spot,
            ComputeType::OnDemand => self.on_demand,
        }
    }

    /// Memory a job may ask for on this type.
    pub fn usable_memory_mib(&self) -> u32 {
        (self.memory_gib as f64 * 1024.0 * USABLE_MEMORY) as u32
    }

    fn holds(&self, needs: &JobNeeds) -> bool {
        self.vcpus >= needs.vcpus
            && self.usable_memory_mib() >= needs.memory_mib
            && self.gpus >= needs.gpus
    }
}

impl PriceTable {
    /// The table shipped with the tool. Only us-east-1 is shipped; other regions are priced
    /// with it (regional prices differ by some percent), and [`PriceTable::region`] says so.
    pub fn builtin() -> Result<PriceTable> {
        serde_json::from_str(US_EAST_1).context("the shipped price table is not valid JSON")
    }

    /// The priced types among `types`: a family (`c5`) stands for every size of it in the
    /// table, as Batch reads it; the second list holds the types the table has no price for.
    pub fn expand<'a>(
        &'a self,
        types: &[String],
    ) -> (Vec<(&'a str, &'a InstancePrice)>, Vec<String>) {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for t in types {
            if let Some((name, price)) = self.instances.get_key_value(t.as_str()) {
                known.push((name.as_str(), price));
                continue;
            }
            let family: Vec<_> = self
                .instances
                .iter()
                .filter(|(name, _)| name.split_once('.').is_some_and(|(f, _)| f == t))
                .map(|(name, price)| (name.as_str(), price))
                .collect();
            if family.is_empty() {
                unknown.push(t.clone());
            }
            known.extend(family);
        }
        (known, unknown)
    }
}

/// Replaces the table's Spot prices of `types` (families expanded) with the current ones from
/// EC2's Spot price history (Linux, the median over the region's zones). On-Demand prices stay
/// the table's: they change rarely, and the Pricing API that serves them is another SDK crate
/// and a price-list parser for a figure that has held for years.
pub async fn refresh_spot_prices(
    table: &mut PriceTable,
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    types: &[String],
) -> Result<usize> {
    let (known, _) = table.expand(types);
    let names: Vec<String> = known.iter().map(|(n, _)| n.to_string()).collect();
    if names.is_empty() {
        return Ok(0);
    }
    let mut by_type: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut pages = ec2
        .describe_spot_price_history()
        .set_instance_types(Some(names.iter().map(|n| n.as_str().into()).collect()))
        .product_descriptions("Linux/UNIX")
        // A start time of now: the current price of each type in each zone.
        .start_time(aws_smithy_types::DateTime::from(
            std::time::SystemTime::now(),
        ))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "DescribeSpotPriceHistory: {}",
                crate::resources::describe_error(&e)
            )
        })?;
        for entry in page.spot_price_history() {
            let (Some(kind), Some(price)) = (entry.instance_type(), entry.spot_price()) else {
                continue;
            };
            if let Ok(price) = price.parse::<f64>() {
                by_type
                    .entry(kind.as_str().to_string())
                    .or_default()
                    .push(price);
            }
        }
    }
    let mut updated = 0;
    for (kind, mut prices) in by_type {
        let Some(entry) = table.instances.get_mut(&kind) else {
            continue;
        };
        prices.sort_by(f64::total_cmp);
        entry.spot = prices[prices.len() / 2];
        updated += 1;
    }
    table.spot_source = format!(
        "DescribeSpotPriceHistory in {region} at {} for {updated} types (median over zones)",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    Ok(updated)
}

/// One compute environment at full scale and idle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComputeCost {
    /// `compute.KEY`.
    pub address: Address,
    /// How this environment buys instances: `spot` or `on-demand`.
    pub pricing: ComputeType,
    pub min_vcpus: u32,
    pub max_vcpus: u32,
    /// The type that fills `max_vcpus` for least, by this environment's pricing (`None`: no
    /// type of it has a price).
    pub instance_type: Option<String>,
    /// Whole instances of that type at full scale.
    pub instances_at_full_scale: u32,
    /// $/hour at `max_vcpus`, by this environment's pricing.
    pub full_scale_per_hour: f64,
    /// $/hour at `min_vcpus` (0 unless `min_vcpus` is set).
    pub idle_per_hour: f64,
    /// The same fleet bought the other way, for comparison.
    pub full_scale_spot_per_hour: f64,
    pub full_scale_on_demand_per_hour: f64,
    /// Instance types the table has no price for (left out of the figures).
    pub unpriced_types: Vec<String>,
}

/// Storage, per month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageCost {
    pub s3_gb: f64,
    pub ecr_gb: f64,
    pub s3_per_gb_month: f64,
    pub ecr_per_gb_month: f64,
    pub per_month: f64,
}

/// A whole stack's estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackCost {
    pub stack: String,
    pub env: String,
    pub region: String,
    /// The table's region (differs from `region` when the stack's region is not shipped).
    pub prices_region: String,
    pub prices_as_of: String,
    pub currency: String,
    /// `table`, or the live read that replaced the table's Spot prices.
    pub spot_prices: String,
    pub compute: Vec<ComputeCost>,
    /// Sum over the environments, each by its own pricing.
    pub full_scale_per_hour: f64,
    pub idle_per_hour: f64,
    pub storage: StorageCost,
}

/// Gigabytes stored, for the storage line (unknown offline: 0 unless given).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StorageUse {
    pub s3_gb: f64,
    pub ecr_gb: f64,
}

/// Whole instances of `price`'s type needed for `vcpus`.
fn instances_for(vcpus: u32, price: &InstancePrice) -> u32 {
    vcpus.div_ceil(price.vcpus.max(1))
}

/// The cheapest known type per vCPU under `pricing`.
fn cheapest_per_vcpu<'a>(
    known: &[(&'a str, &'a InstancePrice)],
    pricing: ComputeType,
) -> Option<(&'a str, &'a InstancePrice)> {
    known.iter().copied().min_by(|(an, a), (bn, b)| {
        let (pa, pb) = (
            a.price(pricing) / a.vcpus as f64,
            b.price(pricing) / b.vcpus as f64,
        );
        pa.total_cmp(&pb).then_with(|| an.cmp(bn))
    })
}

/// Cost of `vcpus` filled with the cheapest type per vCPU under `pricing`.
fn fleet(known: &[(&str, &InstancePrice)], pricing: ComputeType, vcpus: u32) -> f64 {
    cheapest_per_vcpu(known, pricing)
        .map(|(_, p)| instances_for(vcpus, p) as f64 * p.price(pricing))
        .unwrap_or(0.0)
}

fn compute_cost(
    key: &str,
    ce: &crate::stack::model::ComputeEnvironment,
    table: &PriceTable,
) -> ComputeCost {
    let (known, unpriced) = table.expand(&ce.instance_types);
    let cheapest = cheapest_per_vcpu(&known, ce.kind);
    ComputeCost {
        address: Address::new(Kind::ComputeEnvironment, key),
        pricing: ce.kind,
        min_vcpus: ce.min_vcpus,
        max_vcpus: ce.max_vcpus,
        instance_type: cheapest.map(|(name, _)| name.to_string()),
        instances_at_full_scale: cheapest.map_or(0, |(_, p)| instances_for(ce.max_vcpus, p)),
        full_scale_per_hour: fleet(&known, ce.kind, ce.max_vcpus),
        idle_per_hour: fleet(&known, ce.kind, ce.min_vcpus),
        full_scale_spot_per_hour: fleet(&known, ComputeType::Spot, ce.max_vcpus),
        full_scale_on_demand_per_hour: fleet(&known, ComputeType::OnDemand, ce.max_vcpus),
        unpriced_types: unpriced,
    }
}

/// The stack's estimate: compute at full scale and idle, storage for `storage`.
pub fn stack_cost(stack: &Stack, table: &PriceTable, storage: StorageUse) -> StackCost {
    let compute: Vec<ComputeCost> = stack
        .compute
        .iter()
        .map(|(key, ce)| compute_cost(key, ce, table))
        .collect();
    let s = table.storage;
    StackCost {
        stack: stack.name.clone(),
        env: stack.env.clone(),
        region: stack.region.clone(),
        prices_region: table.region.clone(),
        prices_as_of: table.as_of.clone(),
        currency: table.currency.clone(),
        spot_prices: table.spot_source.clone(),
        full_scale_per_hour: compute.iter().map(|c| c.full_scale_per_hour).sum(),
        idle_per_hour: compute.iter().map(|c| c.idle_per_hour).sum(),
        compute,
        storage: StorageCost {
            s3_gb: storage.s3_gb,
            ecr_gb: storage.ecr_gb,
            s3_per_gb_month: s.s3_standard_gb_month,
            ecr_per_gb_month: s.ecr_gb_month,
            per_month: storage.s3_gb * s.s3_standard_gb_month + storage.ecr_gb * s.ecr_gb_month,
        },
    }
}

impl StackCost {
    /// One line for `plan`.
    pub fn summary_line(&self) -> String {
        format!(
            "Estimated cost: {} at full scale (max_vcpus), {} idle (min_vcpus); prices of {} ({}), see `provision cost`.",
            dollars_per_hour(self.full_scale_per_hour),
            dollars_per_hour(self.idle_per_hour),
            self.prices_as_of,
            self.prices_region
        )
    }

    /// The `provision cost` table.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Cost estimate for {}/{} ({}; prices of {} for {}, {}):",
            self.stack, self.env, self.region, self.prices_as_of, self.prices_region, self.currency
        );
        let _ = writeln!(
            out,
            "  {:<22} {:<10} {:>7} {:<14} {:>9} {:>9} {:>9} {:>13}",
            "compute",
            "pricing",
            "vcpus",
            "type",
            "full $/h",
            "idle $/h",
            "spot $/h",
            "on-demand $/h"
        );
        for c in &self.compute {
            let _ = writeln!(
                out,
                "  {:<22} {:<10} {:>7} {:<14} {:>9.3} {:>9.3} {:>9.3} {:>13.3}",
                c.address,
                pricing_name(c.pricing),
                format!("{}-{}", c.min_vcpus, c.max_vcpus),
                c.instance_type.as_deref().unwrap_or("(no price)"),
                c.full_scale_per_hour,
                c.idle_per_hour,
                c.full_scale_spot_per_hour,
                c.full_scale_on_demand_per_hour
            );
            if !c.unpriced_types.is_empty() {
                let _ = writeln!(
                    out,
                    "  note: no price for {} (left out)",
                    c.unpriced_types.join(", ")
                );
            }
        }
        let _ = writeln!(
            out,
            "Full scale: {}; idle: {}.",
            dollars_per_hour(self.full_scale_per_hour),
            dollars_per_hour(self.idle_per_hour)
        );
        if self.spot_prices != "table" {
            let _ = writeln!(out, "Spot prices: {}.", self.spot_prices);
        }
        let s = &self.storage;
        let _ = writeln!(
            out,
            "Storage: S3 ${}/GB-month ({} GB), ECR ${}/GB-month ({} GB): ${:.2}/month.",
            s.s3_per_gb_month, s.s3_gb, s.ecr_per_gb_month, s.ecr_gb, s.per_month
        );
        out
    }
}

pub fn pricing_name(pricing: ComputeType) -> &'static str {
    match pricing {
        ComputeType::Spot => "spot",
        ComputeType::OnDemand => "on-demand",
    }
}

fn dollars_per_hour(v: f64) -> String {
    format!("${v:.2}/h (${:.0}/month)", v * HOURS_PER_MONTH)
}

/// What one job asks of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JobNeeds {
    pub vcpus: u32,
    pub memory_mib: u32,
    pub gpus: u32,
    pub timeout_s: Option<u32>,
}

/// The cheapest placement of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobCost {
    pub needs: JobNeeds,
    /// `compute.KEY` that offers the type.
    pub compute: Address,
    pub pricing: ComputeType,
    pub instance_type: String,
    pub per_hour: f64,
    /// The cost when the job runs until its timeout (`None` without one).
    pub at_most: Option<f64>,
    pub prices_as_of: String,
}

impl JobCost {
    pub fn text(&self) -> String {
        let bound = match (self.at_most, self.needs.timeout_s) {
            (Some(cost), Some(t)) => {
                format!(", at most ${cost:.2} if it runs its whole {t} s timeout")
            }
            _ => String::new(),
        };
        format!(
            "Estimated cost: {} ({}, {}) holds {} vCPUs / {} MiB / {} GPUs at ${:.3}/h{bound} (prices of {})",
            self.instance_type,
            self.compute,
            pricing_name(self.pricing),
            self.needs.vcpus,
            self.needs.memory_mib,
            self.needs.gpus,
            self.per_hour,
            self.prices_as_of
        )
    }
}

/// Why a job fits no instance type of its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NoFit {
    pub job: String,
    pub queue: String,
    pub needs: JobNeeds,
    /// The queue's largest types, as `type (vCPUs, MiB usable, GPUs)`.
    pub largest: String,
    /// `compute.a, compute.b`.
    pub computes: String,
    /// `(e.g. r5.4xlarge)` from the table, or empty.
    pub suggestion: String,
}

impl std::fmt::Display for NoFit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = &self.needs;
        write!(
            f,
            "job `{}` needs {} vCPUs, {} MiB and {} GPUs, but no instance type of queue `{}` holds \
             that (largest: {}; a container gets about {}% of an instance's memory), so it would \
             wait in RUNNABLE forever: lower the job's vcpus/memory_mib/gpus (or --vcpus, \
             --memory-mib, --gpus), or add a larger type to `instance_types` of {}{}",
            self.job,
            n.vcpus,
            n.memory_mib,
            n.gpus,
            self.queue,
            self.largest,
            (USABLE_MEMORY * 100.0).round() as u32,
            self.computes,
            self.suggestion
        )
    }
}

impl std::error::Error for NoFit {}

/// The cheapest instance type of queue `queue_key`'s compute environments that holds `needs`;
/// `Ok(None)` when none of the priced types holds it but some types have no price (nothing can
/// be said); `Err` when no type of the queue can ever run the job.
pub fn job_cost(
    stack: &Stack,
    job: &str,
    queue_key: &str,
    needs: JobNeeds,
    table: &PriceTable,
) -> std::result::Result<Option<JobCost>, Box<NoFit>> {
    let compute_keys = stack
        .queues
        .get(queue_key)
        .map(|q| q.compute.clone())
        .unwrap_or_default();
    let mut best: Option<JobCost> = None;
    let mut any_unpriced = false;
    let mut all_known: Vec<(&str, &InstancePrice)> = Vec::new();
    for key in &compute_keys {
        let Some(ce) = stack.compute.get(key) else {
            continue;
        };
        let (known, unpriced) = table.expand(&ce.instance_types);
        any_unpriced |= !unpriced.is_empty();
        for (name, price) in &known {
            if !price.holds(&needs) {
                continue;
            }
            let per_hour = price.price(ce.kind);
            if best.as_ref().is_none_or(|b| per_hour < b.per_hour) {
                best = Some(JobCost {
                    needs,
                    compute: Address::new(Kind::ComputeEnvironment, key),
                    pricing: ce.kind,
                    instance_type: name.to_string(),
                    per_hour,
                    at_most: needs.timeout_s.map(|t| per_hour * t as f64 / 3600.0),
                    prices_as_of: table.as_of.clone(),
                });
            }
        }
        all_known.extend(known);
    }
    if best.is_some() || any_unpriced {
        return Ok(best);
    }
    Err(Box::new(no_fit(
        job,
        queue_key,
        &compute_keys,
        needs,
        &all_known,
        table,
    )))
}

fn no_fit(
    job: &str,
    queue_key: &str,
    compute_keys: &[String],
    needs: JobNeeds,
    known: &[(&str, &InstancePrice)],
    table: &PriceTable,
) -> NoFit {
    let describe = |(name, p): (&str, &InstancePrice)| {
        format!(
            "{name} ({} vCPUs, {} MiB, {} GPUs)",
            p.vcpus,
            p.usable_memory_mib(),
            p.gpus
        )
    };
    let largest_mem = known
        .iter()
        .copied()
        .max_by_key(|(_, p)| (p.memory_gib, p.vcpus));
    let largest_cpu = known
        .iter()
        .copied()
        .max_by_key(|(_, p)| (p.vcpus, p.memory_gib));
    let mut largest: Vec<String> = largest_mem
        .into_iter()
        .chain(largest_cpu)
        .map(describe)
        .collect();
    largest.dedup();
    let suggestion = table
        .instances
        .iter()
        .filter(|(_, p)| p.holds(&needs))
        .min_by(|(an, a), (bn, b)| a.on_demand.total_cmp(&b.on_demand).then_with(|| an.cmp(bn)))
        .map(|(name, _)| format!(" (e.g. {name})"))
        .unwrap_or_default();
    NoFit {
        job: job.to_string(),
        queue: queue_key.to_string(),
        needs,
        largest: if largest.is_empty() {
            "none".into()
        } else {
            largest.join(", ")
        },
        computes: compute_keys
            .iter()
            .map(|k| Address::new(Kind::ComputeEnvironment, k).to_string())
            .collect::<Vec<_>>()
            .join(", "),
        suggestion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::model::{AllocationStrategy, ComputeEnvironment, Queue, State};

    fn ce(kind: ComputeType, min: u32, max: u32, types: &[&str]) -> ComputeEnvironment {
        ComputeEnvironment {
            kind,
            min_vcpus: min,
            max_vcpus: max,
            instance_types: types.iter().map(|s| s.to_string()).collect(),
            root_volume_gb: None,
            allocation_strategy: AllocationStrategy::BestFitProgressive,
            bid_percentage: None,
            state: State::Enabled,
        }
    }

    fn stack(computes: Vec<(&str, ComputeEnvironment)>) -> Stack {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(
            &mut file,
            b"[stack]\nname = \"costs\"\nregion = \"us-east-1\"\n\n[compute.x]\ntype = \"spot\"\n\
              max_vcpus = 4\ninstance_types = [\"c5.xlarge\"]\n\n[queues.main]\npriority = 1\n\
              compute = [\"x\"]\n",
        )
        .unwrap();
        let mut stack = crate::stack::load(file.path(), None, &[]).expect("minimal stack");
        stack.compute = computes
            .into_iter()
            .map(|(k, c)| (k.to_string(), c))
            .collect();
        stack.queues.insert(
            "main".into(),
            Queue {
                priority: 1,
                compute: stack.compute.keys().cloned().collect(),
                state: State::Enabled,
            },
        );
        stack
    }

    fn needs(vcpus: u32, memory_mib: u32, gpus: u32) -> JobNeeds {
        JobNeeds {
            vcpus,
            memory_mib,
            gpus,
            timeout_s: Some(7200),
        }
    }

    #[test]
    fn the_shipped_table_is_dated_and_covers_the_stacks_types() {
        let table = PriceTable::builtin().unwrap();
        assert!(regex::Regex::new(r"^\d{4}-\d{2}-\d{2}$")
            .unwrap()
            .is_match(&table.as_of));
        for t in [
            "c5.xlarge",
            "c5.2xlarge",
            "m5.xlarge",
            "m5.2xlarge",
            "g4dn.xlarge",
            "g4dn.2xlarge",
            "g5.xlarge",
            "r5.4xlarge",
            "p3.2xlarge",
        ] {
            let p = table
                .instances
                .get(t)
                .unwrap_or_else(|| panic!("{t} has no price"));
            assert!(p.spot > 0.0 && p.spot < p.on_demand, "{t}: {p:?}");
        }
    }

    #[test]
    fn full_scale_fills_max_vcpus_with_the_cheapest_type_per_vcpu() {
        let table = PriceTable::builtin().unwrap();
        // c5.xlarge and c5.2xlarge cost the same per vCPU; m5 costs more: 16 vCPUs = 2 x c5.2xlarge.
        let s = stack(vec![(
            "spot",
            ce(
                ComputeType::Spot,
                0,
                16,
                &["m5.xlarge", "c5.2xlarge", "c5.xlarge"],
            ),
        )]);
        let cost = stack_cost(&s, &table, StorageUse::default());
        let c = &cost.compute[0];
        assert!(c.instance_type.as_deref().unwrap().starts_with("c5."));
        let per_vcpu = table.instances["c5.xlarge"].spot / 4.0;
        assert!((c.full_scale_per_hour - 16.0 * per_vcpu).abs() < 1e-9);
        assert_eq!(c.idle_per_hour, 0.0);
        assert!(c.full_scale_on_demand_per_hour > c.full_scale_spot_per_hour);
        assert_eq!(cost.idle_per_hour, 0.0);
    }

    #[test]
    fn idle_counts_whole_instances_of_min_vcpus() {
        let table = PriceTable::builtin().unwrap();
        let s = stack(vec![(
            "od",
            ce(ComputeType::OnDemand, 6, 8, &["c5.xlarge"]),
        )]);
        let cost = stack_cost(
            &s,
            &table,
            StorageUse {
                s3_gb: 100.0,
                ecr_gb: 10.0,
            },
        );
        // 6 vCPUs need two 4-vCPU instances.
        assert!((cost.idle_per_hour - 2.0 * 0.17).abs() < 1e-9);
        assert!((cost.storage.per_month - (100.0 * 0.023 + 10.0 * 0.10)).abs() < 1e-9);
        assert!(cost.summary_line().contains("idle"));
    }

    #[test]
    fn a_family_stands_for_its_sizes_and_unknown_types_are_named() {
        let table = PriceTable::builtin().unwrap();
        let (known, unknown) = table.expand(&["c5".to_string(), "x9.huge".to_string()]);
        assert!(known.len() >= 8 && known.iter().all(|(n, _)| n.starts_with("c5.")));
        assert_eq!(unknown, vec!["x9.huge".to_string()]);
    }

    #[test]
    fn a_job_gets_the_cheapest_type_that_holds_it() {
        let table = PriceTable::builtin().unwrap();
        let s = stack(vec![
            (
                "spot",
                ce(ComputeType::Spot, 0, 16, &["c5.xlarge", "m5.2xlarge"]),
            ),
            (
                "od",
                ce(ComputeType::OnDemand, 0, 8, &["c5.xlarge", "m5.xlarge"]),
            ),
        ]);
        // 16 GiB does not fit a 16 GiB instance (the agent keeps some): m5.2xlarge on Spot.
        let cost = job_cost(&s, "train", "main", needs(4, 16384, 0), &table)
            .unwrap()
            .unwrap();
        assert_eq!(cost.instance_type, "m5.2xlarge");
        assert_eq!(cost.compute.to_string(), "compute.spot");
        assert!((cost.at_most.unwrap() - 2.0 * cost.per_hour).abs() < 1e-9);
        let small = job_cost(&s, "prep", "main", needs(2, 4096, 0), &table)
            .unwrap()
            .unwrap();
        assert_eq!(small.instance_type, "c5.xlarge");
        assert_eq!(small.pricing, ComputeType::Spot);
    }

    #[test]
    fn a_job_no_type_can_hold_is_refused_with_the_fix() {
        let table = PriceTable::builtin().unwrap();
        let s = stack(vec![("spot", ce(ComputeType::Spot, 0, 16, &["c5.xlarge"]))]);
        let err = job_cost(&s, "prepare", "main", needs(2, 131072, 0), &table).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("131072 MiB"), "{msg}");
        assert!(msg.contains("c5.xlarge"), "{msg}");
        assert!(msg.contains("compute.spot"), "{msg}");
        assert!(msg.contains("e.g. r5.8xlarge"), "{msg}");
        // GPUs on a CPU-only queue: refused too.
        assert!(job_cost(&s, "train", "main", needs(1, 1024, 1), &table).is_err());
    }

    #[test]
    fn every_job_of_the_shipped_stacks_fits_its_queue() {
        let table = PriceTable::builtin().unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            for env in [None, Some("dev"), Some("prod")] {
                let Ok(stack) = crate::stack::load(&path, env, &[]) else {
                    continue;
                };
                for def in stack.job_definitions() {
                    let job = def.job;
                    let needs = JobNeeds {
                        vcpus: job.vcpus,
                        memory_mib: job.memory_mib,
                        gpus: job.gpus,
                        timeout_s: job.timeout_s,
                    };
                    let fit = job_cost(&stack, &def.key, &job.queue, needs, &table);
                    assert!(
                        matches!(fit, Ok(Some(_))),
                        "{} {env:?} {}: {fit:?}",
                        path.display(),
                        def.key
                    );
                }
            }
        }
    }

    #[test]
    fn unpriced_types_make_no_refusal() {
        let table = PriceTable::builtin().unwrap();
        let s = stack(vec![(
            "spot",
            ce(ComputeType::Spot, 0, 16, &["c5.xlarge", "x9.huge"]),
        )]);
        assert_eq!(
            job_cost(&s, "prepare", "main", needs(2, 131072, 0), &table),
            Ok(None)
        );
    }
}
