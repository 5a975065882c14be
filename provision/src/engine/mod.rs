//! The engine: the desired graph of a stack, the plan (desired vs state vs live), apply
//! (ordered by dependencies, concurrent where independent) and rendering.
//!
//! Data flows one way: [`Stack`] → [`graph`] (addresses and dependencies) → [`spec`] (one
//! resource's desired spec, references resolved through [`Refs`]) → [`plan::plan`] →
//! [`apply::apply`].

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::aws::Clients;
use crate::resources::iam::Role;
use crate::resources::vpc_endpoint::filter;
use crate::resources::{
    bucket, compute_environment, iam, job_definition, job_queue, log_group, repository,
    security_group, vpc_endpoint, Address, Kind, SdkContext, Spec, UNKNOWN,
};
use crate::stack::{Image, Stack, Vpc};
use crate::state::lock::Taking;
use crate::state::{Lock, LockError, LockSeen, Snapshot, Store};

pub mod apply;
pub mod plan;
pub mod progress;
pub mod render;
pub mod saved;

/// Facts read from AWS before planning: who and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub account: String,
    pub partition: String,
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub route_tables: Vec<String>,
    /// Secret as written in the stack → its ARN and KMS key ARN (when it has its own key).
    pub secrets: BTreeMap<String, (String, Option<String>)>,
    /// The VPC's S3 endpoints, with their tags (listed only with `network.s3_endpoint`): the
    /// plan finds the stack's own among them without asking again.
    pub s3_endpoints: Vec<aws_sdk_ec2::types::VpcEndpoint>,
    /// `repository key:tag` → the digest the tag points at now (absent: nothing pushed yet),
    /// so job definitions pin an image, not a tag.
    pub image_digests: BTreeMap<String, String>,
}

/// Values one resource takes from others: ids/ARNs by address (absent: known after apply)
/// and the current name of each compute environment (its replacement suffix).
#[derive(Debug, Clone, Default)]
pub struct Refs {
    pub ids: BTreeMap<Address, String>,
    pub suffixes: BTreeMap<Address, Option<u32>>,
}

impl Refs {
    /// The id of the resource at `address`, or [`UNKNOWN`] until it exists.
    pub fn id(&self, address: &Address) -> String {
        self.ids
            .get(address)
            .cloned()
            .unwrap_or_else(|| UNKNOWN.to_string())
    }
}

/// One resource of the desired graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub address: Address,
    pub deps: Vec<Address>,
}

/// The stack's one S3 endpoint, security group, log group and instance profile.
pub fn endpoint_address() -> Address {
    Address::new(Kind::VpcEndpoint, "s3")
}

pub fn security_group_address() -> Address {
    Address::new(Kind::SecurityGroup, "batch")
}

pub fn log_group_address() -> Address {
    Address::new(Kind::LogGroup, "jobs")
}

pub fn instance_profile_address() -> Address {
    Address::new(Kind::InstanceProfile, "instance")
}

/// Every resource the stack declares, dependencies first.
pub fn graph(stack: &Stack) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut push = |kind: Kind, key: &str, deps: Vec<Address>| {
        nodes.push(Node {
            address: Address::new(kind, key),
            deps,
        });
    };
    if stack.network.s3_endpoint {
        push(Kind::VpcEndpoint, "s3", vec![]);
    }
    let own_sg = stack.network.security_groups.is_empty();
    if own_sg {
        push(Kind::SecurityGroup, "batch", vec![]);
    }
    for key in stack.buckets.keys() {
        push(Kind::Bucket, key, vec![]);
    }
    for key in stack.repositories.keys() {
        push(Kind::Repository, key, vec![]);
    }
    push(Kind::LogGroup, "jobs", vec![]);
    for role in Role::ALL {
        let deps = if role == Role::Job {
            stack
                .buckets
                .keys()
                .map(|k| Address::new(Kind::Bucket, k))
                .collect()
        } else {
            vec![]
        };
        push(Kind::Role, role.key(), deps);
    }
    push(
        Kind::InstanceProfile,
        "instance",
        vec![Role::Instance.address()],
    );
    for key in stack.compute.keys() {
        let mut deps = vec![instance_profile_address(), Role::BatchService.address()];
        if own_sg {
            deps.push(security_group_address());
        }
        push(Kind::ComputeEnvironment, key, deps);
    }
    for (key, queue) in &stack.queues {
        push(
            Kind::JobQueue,
            key,
            queue
                .compute
                .iter()
                .map(|c| Address::new(Kind::ComputeEnvironment, c))
                .collect(),
        );
    }
    for def in stack.job_definitions() {
        let mut deps = vec![
            Role::Job.address(),
            Role::Execution.address(),
            log_group_address(),
        ];
        if let Image::Repository(repo) = &def.job.image {
            deps.push(Address::new(Kind::Repository, &repo.key));
        }
        push(Kind::JobDefinition, &def.key, deps);
    }
    nodes
}

/// `aws`, `aws-cn` or `aws-us-gov`, from the region.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// A KMS key as IAM wants it in `Resource`: an ARN.
pub fn kms_arn(key: &str, facts: &Facts, region: &str) -> String {
    if key.starts_with("arn:") {
        key.to_string()
    } else if let Some(alias) = key.strip_prefix("alias/") {
        format!(
            "arn:{}:kms:{region}:{}:alias/{alias}",
            facts.partition, facts.account
        )
    } else {
        format!(
            "arn:{}:kms:{region}:{}:key/{key}",
            facts.partition, facts.account
        )
    }
}

/// The compute environment name for `key` with its current suffix.
pub fn compute_name(stack: &Stack, refs: &Refs, key: &str) -> String {
    let suffix = refs
        .suffixes
        .get(&Address::new(Kind::ComputeEnvironment, key))
        .copied()
        .flatten();
    stack.compute_environment_name(key, suffix)
}

/// The desired spec of one node, references resolved through `refs`. Each kind's module
/// builds its own from the stack.
pub fn spec(stack: &Stack, facts: &Facts, refs: &Refs, node: &Node) -> Result<Spec> {
    let key = node.address.key.as_str();
    Ok(match node.address.kind {
        Kind::VpcEndpoint => Spec::VpcEndpoint(vpc_endpoint::Spec::desired(stack, facts)),
        Kind::SecurityGroup => Spec::SecurityGroup(security_group::Spec::desired(stack, facts)),
        Kind::Bucket => Spec::Bucket(bucket::Spec::desired(stack, facts, key)),
        Kind::Repository => Spec::Repository(repository::Spec::desired(stack, key)),
        Kind::LogGroup => Spec::LogGroup(log_group::Spec::desired(stack)),
        Kind::Role => {
            let role = Role::from_key(key).with_context(|| format!("unknown role {key}"))?;
            Spec::Role(iam::RoleSpec::desired(stack, facts, role)?)
        }
        Kind::InstanceProfile => Spec::InstanceProfile(iam::ProfileSpec::desired(stack)),
        Kind::ComputeEnvironment => {
            Spec::ComputeEnvironment(compute_environment::Spec::desired(stack, facts, refs, key))
        }
        Kind::JobQueue => Spec::JobQueue(job_queue::Spec::desired(stack, refs, key)),
        Kind::JobDefinition => {
            Spec::JobDefinition(job_definition::Spec::desired(stack, facts, refs, key)?)
        }
    })
}

/// The facts no other answer is needed for, read at once (one round trip): the account, the
/// VPC id, the secrets and the digests of the repositories' images. `account` answers the account id ([`stack_account`], or what it
/// already answered), awaited beside the reads: its error wins (see [`join_first_error_wins`]). The VPC's subnets, route tables and endpoints come from [`network`].
pub async fn first_facts(
    c: &Clients,
    stack: &Stack,
    account: impl std::future::Future<Output = Result<String>>,
) -> Result<Facts> {
    let (account, (vpc_id, secrets, image_digests)) = join_first_error_wins(account, async {
        tokio::try_join!(
            vpc_id(c, stack),
            describe_secrets(c, stack),
            crate::image::resolve::digests(c, stack)
        )
    })
    .await?;
    let mut facts = Facts {
        account,
        partition: partition(&stack.region).to_string(),
        vpc_id,
        subnets: vec![],
        route_tables: vec![],
        secrets: BTreeMap::new(),
        s3_endpoints: vec![],
        image_digests,
    };
    facts.secrets = secrets
        .into_iter()
        .map(|(secret, (arn, kms))| {
            let kms = kms.map(|k| kms_arn(&k, &facts, &stack.region));
            (secret, (arn, kms))
        })
        .collect();
    Ok(facts)
}

/// The credentials' `account`, when it is the one the stack names (`[stack] account`): a
/// stack that names its account refuses other credentials before anything is written.
fn confirm_account(stack: &Stack, account: String) -> Result<String> {
    match &stack.account {
        Some(named) if *named != account => bail!(
            "these credentials are for AWS account {account}, but {}/{} deploys to account {named} ([stack] account in {}): use credentials for {named}",
            stack.name,
            stack.env,
            stack.source.display()
        ),
        _ => Ok(account),
    }
}

/// The credentials' account ([`crate::aws::check_access`]), refused when it is not the one the
/// stack names: what every command that plans or names resources takes the account from.
pub async fn stack_account(c: &Clients, stack: &Stack) -> Result<String> {
    confirm_account(stack, crate::aws::check_access(c).await?)
}

/// The facts a stack names itself, when it names its account and its VPC id: every name a
/// read needs (bucket names hold the account, the security group is looked up in the VPC), so
/// that every read can go out in the first round trip, beside the credentials check that
/// confirms the account. Values that only answers give (secrets' ARNs, image digests, the
/// VPC's subnets) are not in them: a spec built from them is good for its names only.
pub fn named_facts(stack: &Stack) -> Option<Facts> {
    let (Some(account), Vpc::Id(vpc_id)) = (&stack.account, &stack.network.vpc) else {
        return None;
    };
    Some(Facts {
        account: account.clone(),
        partition: partition(&stack.region).to_string(),
        vpc_id: vpc_id.clone(),
        subnets: vec![],
        route_tables: vec![],
        secrets: stack
            .jobs
            .values()
            .flat_map(|job| job.secrets.values())
            .map(|secret| (secret.clone(), (UNKNOWN.to_string(), None)))
            .collect(),
        s3_endpoints: vec![],
        image_digests: BTreeMap::new(),
    })
}

impl Facts {
    /// These facts completed by the VPC's part.
    pub fn with_network(self, network: Network) -> Facts {
        Facts {
            subnets: network.subnets,
            route_tables: network.route_tables,
            s3_endpoints: network.s3_endpoints,
            ..self
        }
    }
}

/// Every secret the jobs name → its ARN and its own KMS key (as the secret names it), all
/// described at once.
async fn describe_secrets(
    c: &Clients,
    stack: &Stack,
) -> Result<BTreeMap<String, (String, Option<String>)>> {
    let mut names: Vec<&String> = stack
        .jobs
        .values()
        .flat_map(|job| job.secrets.values())
        .collect();
    // First mention first: of several missing secrets, the error names the first, as before.
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(*n));
    let described = futures::future::join_all(names.iter().map(|secret| async move {
        let out = c
            .secrets()
            .describe_secret()
            .secret_id(*secret)
            .send()
            .await
            .ctx(format!("resolving secret {secret}"))?;
        let arn = out
            .arn()
            .with_context(|| format!("secret {secret} has no ARN"))?
            .to_string();
        anyhow::Ok(((*secret).clone(), (arn, out.kms_key_id().map(String::from))))
    }))
    .await;
    described.into_iter().collect()
}

/// The VPC's part of the facts.
pub struct Network {
    subnets: Vec<String>,
    route_tables: Vec<String>,
    s3_endpoints: Vec<aws_sdk_ec2::types::VpcEndpoint>,
}

/// The region's default VPC, if it has one.
pub async fn default_vpc(c: &Clients) -> Result<Option<String>> {
    let out = c
        .ec2()
        .describe_vpcs()
        .filters(filter("is-default", "true"))
        .send()
        .await
        .ctx("finding the default VPC")?;
    Ok(out
        .vpcs()
        .first()
        .and_then(|v| v.vpc_id())
        .map(String::from))
}

/// The stack's VPC: the region's default one, or the one the stack names (checked to exist).
async fn vpc_id(c: &Clients, stack: &Stack) -> Result<String> {
    Ok(match &stack.network.vpc {
        Vpc::Default => default_vpc(c).await?.with_context(|| {
            format!(
                "region {} has no default VPC; set network.vpc to a VPC id",
                stack.region
            )
        })?,
        Vpc::Id(id) => {
            let out = c
                .ec2()
                .describe_vpcs()
                .filters(filter("vpc-id", id))
                .send()
                .await
                .ctx(format!("reading VPC {id}"))?;
            if out.vpcs().is_empty() {
                bail!("network.vpc: VPC {id} does not exist in {}", stack.region);
            }
            id.clone()
        }
    })
}

/// Reads the VPC's subnets, the route tables an S3 endpoint may serve and its S3 endpoints.
pub async fn network(c: &Clients, stack: &Stack, vpc_id: &str) -> Result<Network> {
    // Independent reads run together: a no-op plan is bound by round trips.
    let subnets = async {
        anyhow::Ok(if stack.network.subnets.is_empty() {
            let out = c
                .ec2()
                .describe_subnets()
                .filters(filter("vpc-id", vpc_id))
                .send()
                .await
                .ctx("listing subnets")?;
            let mut subnets: Vec<String> = out
                .subnets()
                .iter()
                .filter_map(|s| s.subnet_id())
                .map(String::from)
                .collect();
            subnets.sort();
            if subnets.is_empty() {
                bail!("VPC {vpc_id} has no subnets; set network.subnets");
            }
            subnets
        } else {
            stack.network.subnets.clone()
        })
    };
    let route_tables = async {
        anyhow::Ok(if stack.network.s3_endpoint {
            let (out, endpoints) = tokio::try_join!(
                async {
                    c.ec2()
                        .describe_route_tables()
                        .filters(filter("vpc-id", vpc_id))
                        .send()
                        .await
                        .ctx("listing route tables")
                },
                // AWS allows one S3 gateway endpoint per route table: tables another endpoint
                // already serves (the account's own, another stack's) reach S3 through it and are
                // left alone.
                s3_endpoints(c, stack, vpc_id),
            )?;
            let taken = foreign_s3_route_tables(stack, &endpoints);
            let mut ids: Vec<String> = out
                .route_tables()
                .iter()
                .filter_map(|r| r.route_table_id())
                .map(String::from)
                .collect();
            ids.retain(|id| !taken.contains(id));
            ids.sort();
            (ids, endpoints)
        } else {
            (vec![], vec![])
        })
    };
    let (subnets, (route_tables, s3_endpoints)) = tokio::try_join!(subnets, route_tables)?;
    Ok(Network {
        subnets,
        route_tables,
        s3_endpoints,
    })
}

/// Runs `first` and `second` together. An error of `first` returns at once (`second` is
/// dropped, mid-retry if it was retrying); an error of `second` waits for `first`, whose error,
/// if any, wins. `first` leads with the credentials check: when credentials or the network fail,
/// every call fails, and STS's error is the one that says why.
pub async fn join_first_error_wins<A, B>(
    first: impl std::future::Future<Output = Result<A>>,
    second: impl std::future::Future<Output = Result<B>>,
) -> Result<(A, B)> {
    tokio::pin!(first, second);
    tokio::select! {
        a = &mut first => {
            let a = a?;
            Ok((a, second.await?))
        }
        b = &mut second => {
            let a = first.await?;
            Ok((a, b?))
        }
    }
}

/// Every S3 endpoint of `vpc_id`.
async fn s3_endpoints(
    c: &Clients,
    stack: &Stack,
    vpc_id: &str,
) -> Result<Vec<aws_sdk_ec2::types::VpcEndpoint>> {
    let mut endpoints = Vec::new();
    let mut token = None;
    loop {
        let out = c
            .ec2()
            .describe_vpc_endpoints()
            .filters(filter("vpc-id", vpc_id))
            .filters(filter(
                "service-name",
                &format!("com.amazonaws.{}.s3", stack.region),
            ))
            .set_next_token(token)
            .send()
            .await
            .ctx("listing the VPC's S3 endpoints")?;
        endpoints.extend(out.vpc_endpoints().iter().cloned());
        token = out.next_token().map(String::from);
        if token.is_none() {
            return Ok(endpoints);
        }
    }
}

/// Route tables that an S3 gateway endpoint not of this stack already serves.
fn foreign_s3_route_tables(
    stack: &Stack,
    endpoints: &[aws_sdk_ec2::types::VpcEndpoint],
) -> Vec<String> {
    let tags = stack.tags();
    let mut taken = Vec::new();
    for e in endpoints {
        let state = e
            .state()
            .map(|s| s.as_str().to_ascii_lowercase())
            .unwrap_or_default();
        let ours = tags.iter().all(|(k, v)| {
            e.tags()
                .iter()
                .any(|t| t.key() == Some(k) && t.value() == Some(v))
        });
        let gateway = e
            .vpc_endpoint_type()
            .is_none_or(|t| t.as_str().eq_ignore_ascii_case("gateway"));
        if !ours
            && gateway
            && !matches!(
                state.as_str(),
                "deleted" | "deleting" | "failed" | "rejected" | "expired"
            )
        {
            taken.extend(e.route_table_ids().iter().cloned());
        }
    }
    taken
}

/// The desired graph as these facts allow: no S3 endpoint when every route table already has
/// one.
pub fn graph_for(stack: &Stack, facts: &Facts) -> Vec<Node> {
    graph(stack)
        .into_iter()
        .filter(|n| n.address.kind != Kind::VpcEndpoint || !facts.route_tables.is_empty())
        .collect()
}

/// What takes the lock before it plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    Apply,
    Destroy,
}

impl Locked {
    fn operation(self) -> &'static str {
        match self {
            Locked::Apply => "apply",
            Locked::Destroy => "destroy",
        }
    }

    /// Plans under the lock; `confirmed` is told whether the credentials check passed (the
    /// account is the stack's), which a missing state table waits for before it is created.
    async fn plan(
        self,
        c: &Clients,
        stack: &Stack,
        state: impl std::future::Future<Output = Result<Snapshot>>,
        confirmed: Option<tokio::sync::oneshot::Sender<bool>>,
    ) -> Result<plan::Plan> {
        let account = async {
            let account = stack_account(c, stack).await;
            if let Some(confirmed) = confirmed {
                let _ = confirmed.send(account.is_ok());
            }
            account
        };
        match self {
            // apply always reads AWS: it must not act on a stale picture.
            Locked::Apply => plan::plan_from(c, stack, account, state, plan::Refresh::Live).await,
            Locked::Destroy => plan::destroy_plan(c, stack, account, state).await,
        }
    }
}

/// Takes the state lock and plans, the lock's write beside the plan's first reads (the
/// credentials check, the facts, the state): one round trip for all of them. On a first apply
/// the state table is created (and waited for) beside the plan's reads of an empty state.
/// When the state was read while another process still held the lock (see
/// [`Lock::saw_unchanged`]), it plans again under the lock. Returns the lock, which the
/// caller releases whatever the plan's outcome, and the plan.
pub async fn plan_locked(
    c: &Clients,
    stack: &Stack,
    store: &Store,
    what: Locked,
) -> Result<(Lock, Result<plan::Plan>)> {
    // A first apply creates the state table, but only in the account the credentials check
    // confirms (it answers in the same round trip as the lock's refused write).
    let (confirmed, confirmation) = tokio::sync::oneshot::channel();
    let create_table = (what == Locked::Apply).then_some(confirmation);
    let taking = Taking::start(store, what.operation(), create_table);
    let seen: std::sync::Mutex<Option<Option<LockSeen>>> = std::sync::Mutex::new(None);
    let state = async {
        let snapshot = store.load().await?;
        *seen.lock().unwrap() = Some(snapshot.lock.clone());
        Ok(snapshot)
    };
    let planned = what.plan(c, stack, state, Some(confirmed)).await;
    let lock = match taking.taken().await {
        Ok(lock) => lock,
        Err(held @ LockError::Held { .. }) => return Err(held.into()),
        // Only destroy leaves a missing table alone: creating an empty one would hide that the
        // stack's region or state_table is not the one that was applied.
        Err(LockError::NoTable { table }) if what == Locked::Destroy => bail!(
            "state table {table} does not exist in {}: nothing was applied to {} there; check [stack] region and state_table",
            stack.region,
            store.pk
        ),
        // The credentials check's error, if any, says why better than the lock's.
        Err(other) => return Err(planned.err().unwrap_or_else(|| other.into())),
    };
    if lock.saw_unchanged(seen.into_inner().unwrap().as_ref()) {
        return Ok((lock, planned));
    }
    let again = what.plan(c, stack, store.load(), None).await;
    Ok((lock, again))
}

/// The state store of a stack.
pub fn store(c: &Clients, stack: &Stack) -> Store {
    Store::new(c.dynamodb().clone(), &stack.state_table, &stack.state_pk())
}

/// Shows a JSON value compactly, as the plan prints it.
pub fn show(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// Loads and validates the stack before any AWS call; a bad stack is exit 1 with every
/// diagnostic.
pub fn load_stack(args: &crate::cli::StackArgs) -> Result<Stack> {
    crate::stack::load_args(args).map_err(|d| anyhow::anyhow!("{d}"))
}

/// Reads one confirmation line from a terminal, as Terraform does.
pub fn confirm(question: &str) -> Result<bool> {
    use std::io::Write;
    eprint!("{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the confirmation")?;
    Ok(line.trim() == "yes")
}

/// Refuses before any AWS call when a confirmation is needed and nobody can give it.
pub fn require_confirmation_possible(auto_approve: bool, command: &str) -> Result<()> {
    use std::io::IsTerminal;
    if !auto_approve && !std::io::stdin().is_terminal() {
        bail!("{command} needs confirmation, but stdin is not a terminal: pass --auto-approve to {command} without asking");
    }
    Ok(())
}
