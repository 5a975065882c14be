//! The resolved tree → the typed [`Stack`], checking every range, name and reference that AWS would
//! refuse (docs/design.md, "Names" and "Schema"). Every problem is collected; none stops the
//! others.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use super::diag::Ctx;
use super::model::*;
use super::names;
use super::schema::join;
use super::tree::{Node, Origin, Val};

/// The values CloudWatch Logs accepts for a log group's retention.
pub const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Length of the account id in bucket names (`{P}-{key}-{account_id}`).
const ACCOUNT_ID_LEN: usize = 12;
/// Room kept for a replacement's `-r{N}` suffix on compute environment and launch template names.
const REPLACEMENT_SUFFIX: &str = "-r999";

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static STACK_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z][a-z0-9-]{2,20}$"));
static KEY: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"));
static REGION: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"));
static TABLE_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_.-]{3,255}$"));
static ACCOUNT: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9]{12}$"));
static VPC_ID: LazyLock<Regex> = LazyLock::new(|| re(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$"));
static SUBNET_ID: LazyLock<Regex> = LazyLock::new(|| re(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$"));
static SG_ID: LazyLock<Regex> = LazyLock::new(|| re(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$"));
static INSTANCE_TYPE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^([a-z][a-z0-9-]*(\.[a-z0-9-]+)?|optimal|default_x86_64|default_arm64)$")
});
/// An OCI tag, as the distribution spec allows.
pub static TAG: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"));
static DIGEST: LazyLock<Regex> = LazyLock::new(|| re(r"^sha256:[0-9a-f]{64}$"));
static ENV_VAR: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z_][A-Za-z0-9_]*$"));
static MATRIX_KEY: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z_][a-z0-9_]*$"));
static MATRIX_VALUE: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9][a-z0-9-]*$"));
static IMAGE_URI: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9._:/#@-]{1,255}$"));
static ECR_NAME: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$"));
static STATUS_REASON: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9.: \t]*\*?$"));
static EXIT_CODE: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9]*\*?$"));
static SECRET_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9/_+=.@-]{1,512}$"));
static SECRET_ARN: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^arn:aws(-[a-z]+)*:secretsmanager:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}(:[^:]*:[^:]*:[^:]*)?$",
    )
});
static KMS_KEY: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]{1,250}|arn:aws(-[a-z]+)*:kms:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:(key/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})|alias/[A-Za-z0-9/_-]{1,250}))$",
    )
});

/// Builds the typed stack from the resolved tree; `envs` is the file's `[env]` table (for its
/// key checks). `None` only when a required section is missing altogether.
pub(crate) fn build(
    root: &Node,
    env: &str,
    envs: Option<&Node>,
    source: &Path,
    ctx: &mut Ctx,
) -> Option<Stack> {
    let mut b = Builder { ctx };
    // The sections in the file's usual order; references point back only (a job at its queue,
    // a queue at its compute environments), so each section is checked once the ones it names are.
    b.env_names(envs);
    let (name, region, account, state_table) = b.stack_section(root);

    let gpu = b.opt_bool(root, "gpu").unwrap_or(false);
    let protect = b.opt_bool(root, "protect").unwrap_or(false);
    let network = b.network(root.get("network"));
    let prefix = name.as_ref().map(|(n, _)| format!("{n}-{env}"));

    let buckets = b.resources(root, "buckets", "bucket", |b, key, node, path| {
        b.bucket(key, node, path, prefix.as_deref())
    });
    let repositories = b.resources(root, "repositories", "repository", |b, key, node, path| {
        b.repository(key, node, path, prefix.as_deref())
    });
    let logs = b.logs(root.get("logs"));
    let compute = b.resources(
        root,
        "compute",
        "compute environment",
        |b, key, node, path| b.compute(key, node, path, prefix.as_deref()),
    );
    let compute_nodes = root.get("compute");
    let queues = b.resources(root, "queues", "queue", |b, key, node, path| {
        b.queue(
            node,
            path,
            &compute,
            compute_nodes,
            prefix.as_deref().map(|p| format!("{p}-{key}")),
        )
    });
    let refs = Refs {
        gpu,
        queues: &queues,
        compute: &compute,
        repositories: &repositories,
        root,
    };
    let jobs = b.resources(root, "jobs", "job", |b, _, node, path| {
        b.job(node, path, &refs)
    });

    if let (Some((_, at)), Some(p)) = (&name, &prefix) {
        b.job_definition_names(root, &jobs, p);
        b.stack_names(at, p);
    }

    let (name, region) = (name?.0, region?.0);
    Some(Stack {
        name,
        region,
        account,
        state_table: state_table.unwrap_or_else(|| "provision-state".to_string()),
        env: env.to_string(),
        gpu,
        protect,
        network: network?,
        buckets,
        repositories,
        logs,
        compute,
        queues,
        jobs,
        source: source.to_path_buf(),
    })
}

struct Refs<'a> {
    gpu: bool,
    queues: &'a BTreeMap<String, Queue>,
    compute: &'a BTreeMap<String, ComputeEnvironment>,
    repositories: &'a BTreeMap<String, Repository>,
    /// The resolved tree: a reference to a resource that is declared but has errors of its own
    /// is not also reported as missing.
    root: &'a Node,
}

impl Refs<'_> {
    fn declared(&self, section: &str, key: &str) -> bool {
        self.root.get(section).and_then(|s| s.get(key)).is_some()
    }
}

struct Builder<'c> {
    ctx: &'c mut Ctx,
}

impl Builder<'_> {
    fn err(&mut self, at: &Origin, key: &str, msg: impl Into<String>) {
        self.ctx.err(at, key, msg);
    }

    /// Reports `msg` at `at` unless `ok`; returns `ok`.
    fn check(&mut self, ok: bool, at: &Origin, key: &str, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            self.err(at, key, msg());
        }
        ok
    }

    /// A present, valid (not already reported) value.
    fn opt<'n>(&self, table: &'n Node, key: &str) -> Option<&'n Node> {
        table.get(key).filter(|n| !matches!(n.val, Val::Invalid))
    }

    fn req<'n>(&mut self, table: &'n Node, path: &str, key: &str) -> Option<&'n Node> {
        match table.get(key) {
            Some(node) if matches!(node.val, Val::Invalid) => None,
            Some(node) => Some(node),
            None => {
                let msg = if path.is_empty() {
                    format!("missing required table `[{key}]`")
                } else {
                    format!("missing required key `{key}` in `[{path}]`")
                };
                self.err(&table.at, &join(path, key), msg);
                None
            }
        }
    }

    fn req_str(&mut self, t: &Node, path: &str, key: &str) -> Option<(String, Origin)> {
        self.req(t, path, key).and_then(str_of)
    }

    fn opt_str(&mut self, t: &Node, key: &str) -> Option<(String, Origin)> {
        self.opt(t, key).and_then(str_of)
    }

    fn opt_bool(&mut self, t: &Node, key: &str) -> Option<bool> {
        match self.opt(t, key).map(|n| &n.val) {
            Some(Val::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// An integer in `min..=max`; `what` explains the bound.
    fn int(&mut self, node: &Node, key: &str, min: i64, max: i64, what: &str) -> Option<u32> {
        let Val::Int(i) = node.val else { return None };
        if i < min || i > max {
            let range = if max >= u32::MAX as i64 {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            let why = if what.is_empty() {
                String::new()
            } else {
                format!(" ({what})")
            };
            self.err(&node.at, key, format!("must be {range}, found {i}{why}"));
            return None;
        }
        u32::try_from(i).ok()
    }

    fn req_int(
        &mut self,
        t: &Node,
        path: &str,
        key: &str,
        min: i64,
        max: i64,
        what: &str,
    ) -> Option<u32> {
        let node = self.req(t, path, key)?;
        self.int(node, &join(path, key), min, max, what)
    }

    fn opt_int(
        &mut self,
        t: &Node,
        path: &str,
        key: &str,
        min: i64,
        max: i64,
        what: &str,
    ) -> Option<Option<u32>> {
        match self.opt(t, key) {
            None => Some(None),
            Some(node) => self.int(node, &join(path, key), min, max, what).map(Some),
        }
    }

    /// A list of strings: not empty unless `may_be_empty`, no duplicates.
    fn strings(
        &mut self,
        node: &Node,
        key: &str,
        may_be_empty: bool,
    ) -> Option<Vec<(String, Origin)>> {
        let Val::Array(items) = &node.val else {
            return None;
        };
        if items.is_empty() && !may_be_empty {
            self.err(&node.at, key, "must not be empty");
            return None;
        }
        let mut out: Vec<(String, Origin)> = Vec::new();
        for item in items {
            let Some((s, at)) = str_of(item) else {
                continue;
            };
            if out.iter().any(|(o, _)| *o == s) {
                self.err(&at, key, format!("`{s}` is listed twice"));
                continue;
            }
            out.push((s, at));
        }
        Some(out)
    }

    fn key_name(&mut self, key: &str, node: &Node, path: &str, what: &str) -> bool {
        let ok = KEY.is_match(key) && key.len() <= 20;
        self.check(ok, &node.key_at, path, || {
            format!("{what} key `{key}` must match [a-z][a-z0-9]*(-[a-z0-9]+)* and be at most 20 characters")
        })
    }

    fn state(&mut self, t: &Node, path: &str) -> State {
        match self.opt_str(t, "state") {
            None => State::Enabled,
            Some((s, at)) => match s.as_str() {
                "enabled" | "ENABLED" => State::Enabled,
                "disabled" | "DISABLED" => State::Disabled,
                _ => {
                    self.err(
                        &at,
                        &join(path, "state"),
                        format!("`{s}` is not a state (enabled | disabled)"),
                    );
                    State::Enabled
                }
            },
        }
    }

    /// Every entry of a `[section.KEY]` map with a valid key, built by `f`.
    fn resources<T>(
        &mut self,
        root: &Node,
        section: &str,
        what: &str,
        mut f: impl FnMut(&mut Self, &str, &Node, &str) -> Option<T>,
    ) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        let Some(entries) = self.opt(root, section).and_then(Node::table) else {
            return out;
        };
        for (key, node) in entries {
            let path = join(section, key);
            let key_ok = self.key_name(key, node, &path, what);
            if matches!(node.val, Val::Invalid) {
                continue;
            }
            if let Some(value) = f(self, key, node, &path) {
                if key_ok {
                    out.insert(key.clone(), value);
                }
            }
        }
        out
    }

    fn network(&mut self, node: Option<&Node>) -> Option<Network> {
        let Some(t) = node.filter(|n| n.is_table()) else {
            return Some(Network {
                vpc: Vpc::Default,
                subnets: vec![],
                security_groups: vec![],
                s3_endpoint: true,
            });
        };
        let vpc = match self.opt_str(t, "vpc") {
            None => Vpc::Default,
            Some((v, _)) if v == "default" => Vpc::Default,
            Some((v, at)) => {
                self.check(VPC_ID.is_match(&v), &at, "network.vpc", || {
                    format!("`{v}` is neither `default` nor a VPC id (vpc-0123abcd)")
                });
                Vpc::Id(v)
            }
        };
        let ids = |b: &mut Self, key: &str, re: &Regex, what: &str| -> Vec<String> {
            let Some(node) = b.opt(t, key) else {
                return vec![];
            };
            let path = join("network", key);
            let items = b.strings(node, &path, true).unwrap_or_default();
            items
                .into_iter()
                .filter(|(s, at)| {
                    b.check(re.is_match(s), at, &path, || format!("`{s}` is not {what}"))
                })
                .map(|(s, _)| s)
                .collect()
        };
        let subnets = ids(self, "subnets", &SUBNET_ID, "a subnet id (subnet-0123abcd)");
        let security_groups = ids(
            self,
            "security_groups",
            &SG_ID,
            "a security group id (sg-0123abcd)",
        );
        if !subnets.is_empty() && vpc == Vpc::Default {
            // Subnets of the default VPC are fine; nothing to check without a network call.
        }
        let s3_endpoint = self.opt_bool(t, "s3_endpoint").unwrap_or(true);
        Some(Network {
            vpc,
            subnets,
            security_groups,
            s3_endpoint,
        })
    }

    fn bucket(&mut self, key: &str, t: &Node, path: &str, prefix: Option<&str>) -> Option<Bucket> {
        let versioning = self.opt_bool(t, "versioning").unwrap_or(false);
        let expire = self.opt_int(t, path, "expire_noncurrent_days", 1, u32::MAX as i64, "")?;
        if let (Some(_), false) = (expire, versioning) {
            let at = &t.get("expire_noncurrent_days").expect("present").at;
            self.err(
                at,
                &join(path, "expire_noncurrent_days"),
                "expires non-current versions, but the bucket keeps none: set `versioning = true`",
            );
        }
        let kms_key = self.opt_str(t, "kms_key").filter(|(k, at)| {
            self.check(KMS_KEY.is_match(k), at, &join(path, "kms_key"), || {
                format!("`{k}` is not a KMS key id, alias (alias/NAME) or key/alias ARN")
            })
        });
        if let Some(p) = prefix.filter(|_| KEY.is_match(key)) {
            let name = format!("{p}-{key}-{}", "0".repeat(ACCOUNT_ID_LEN));
            let shown = format!("{p}-{key}-{{account}}");
            if name.len() > 63 {
                self.err(
                    &t.key_at,
                    path,
                    format!(
                        "bucket name `{shown}` would be {} characters with the 12-digit account id; S3 allows 63 (shorten the stack name, environment or key)",
                        name.len()
                    ),
                );
            } else if let Some(why) = bucket_dns_problem(&name) {
                self.err(&t.key_at, path, format!("bucket name `{shown}` {why}"));
            }
        }
        Some(Bucket {
            versioning,
            expire_noncurrent_days: expire,
            kms_key: kms_key.map(|(k, _)| k),
        })
    }

    fn repository(
        &mut self,
        key: &str,
        t: &Node,
        path: &str,
        prefix: Option<&str>,
    ) -> Option<Repository> {
        let keep_images = self.opt_int(t, path, "keep_images", 1, 10_000, "")?;
        let scan_on_push = self.opt_bool(t, "scan_on_push").unwrap_or(false);
        if let Some(p) = prefix.filter(|_| KEY.is_match(key)) {
            let name = format!("{p}-{key}");
            self.check(ECR_NAME.is_match(&name) && name.len() <= 256, &t.key_at, path, || {
                format!("repository name `{name}` is not a valid ECR name (no `--`, no trailing `-`, at most 256 characters)")
            });
        }
        Some(Repository {
            keep_images,
            scan_on_push,
        })
    }

    fn logs(&mut self, node: Option<&Node>) -> Logs {
        let Some(t) = node.filter(|n| n.is_table()) else {
            return Logs {
                retention_days: None,
            };
        };
        let retention_days = match self.opt(t, "retention_days") {
            None => None,
            Some(n) => match n.val {
                Val::Int(d)
                    if d >= 0 && RETENTION_DAYS.contains(&(d as u32)) && d <= u32::MAX as i64 =>
                {
                    Some(d as u32)
                }
                Val::Int(d) => {
                    let list: Vec<String> = RETENTION_DAYS.iter().map(u32::to_string).collect();
                    self.err(
                        &n.at,
                        "logs.retention_days",
                        format!("CloudWatch Logs does not accept a retention of {d} days (one of {}; omit it to keep logs forever)", list.join(", ")),
                    );
                    None
                }
                _ => None,
            },
        };
        Logs { retention_days }
    }

    /// The `[env.NAME]` names: resource-key names, never `default`.
    fn env_names(&mut self, envs: Option<&Node>) {
        let Some(envs) = envs.and_then(Node::table) else {
            return;
        };
        for (name, node) in envs {
            self.key_name(name, node, &join("env", name), "environment");
            if name == "default" {
                self.err(
                    &node.key_at,
                    &join("env", name),
                    "`default` is the environment without --env and cannot have an overlay",
                );
            }
        }
    }

    /// `[stack]`: its name, region and state table, each checked.
    #[allow(clippy::type_complexity)] // three optional results, named by the caller
    fn stack_section(
        &mut self,
        root: &Node,
    ) -> (
        Option<(String, Origin)>,
        Option<(String, Origin)>,
        Option<String>,
        Option<String>,
    ) {
        let Some(stack) = self.req(root, "", "stack") else {
            return (None, None, None, None);
        };
        let name = self.req_str(stack, "stack", "name").filter(|(n, at)| {
            self.check(STACK_NAME.is_match(n), at, "stack.name", || {
                format!("stack name `{n}` must match [a-z][a-z0-9-]{{2,20}} (it prefixes every resource name)")
            })
        });
        let region = self.req_str(stack, "stack", "region").filter(|(r, at)| {
            self.check(REGION.is_match(r), at, "stack.region", || {
                format!("`{r}` is not an AWS region name (like `us-east-1`)")
            })
        });
        let account = self.opt_str(stack, "account").filter(|(a, at)| {
            self.check(ACCOUNT.is_match(a), at, "stack.account", || {
                format!("`{a}` is not an AWS account id (12 digits, as a string: account = \"123456789012\")")
            })
        });
        let table = self.opt_str(stack, "state_table").filter(|(t, at)| {
            self.check(TABLE_NAME.is_match(t), at, "stack.state_table", || {
                format!("`{t}` is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)")
            })
        });
        (name, region, account.map(|(a, _)| a), table.map(|(t, _)| t))
    }

    /// `[compute.KEY]`, step by step: type, vCPUs, instance types, root volume, allocation
    /// strategy, bid, state, then the derived name's length.
    fn compute(
        &mut self,
        key: &str,
        t: &Node,
        path: &str,
        prefix: Option<&str>,
    ) -> Option<ComputeEnvironment> {
        let kind = self.compute_type(t, path);
        let (min_vcpus, max_vcpus) = self.vcpu_range(t, path);
        let instance_types = self.instance_types(t, path);
        let root_volume_gb = self.opt_int(
            t,
            path,
            "root_volume_gb",
            30,
            16_384,
            "gp3 sizes, and no smaller than the ECS-optimized AMI's 30 GiB snapshot",
        );
        let strategy = self.allocation_strategy(t, path, kind);
        let bid_percentage = self.bid_percentage(t, path, kind);
        let state = self.state(t, path);
        self.compute_name_fits(key, t, path, prefix);
        Some(ComputeEnvironment {
            kind: kind?,
            min_vcpus: min_vcpus?.unwrap_or(0),
            max_vcpus: max_vcpus?,
            instance_types: instance_types?,
            root_volume_gb: root_volume_gb?,
            allocation_strategy: strategy?,
            bid_percentage: bid_percentage?,
            state,
        })
    }

    fn compute_type(&mut self, t: &Node, path: &str) -> Option<ComputeType> {
        match self.req_str(t, path, "type") {
            Some((s, _)) if s == "spot" => Some(ComputeType::Spot),
            Some((s, _)) if s == "on-demand" => Some(ComputeType::OnDemand),
            Some((s, at)) => {
                self.err(
                    &at,
                    &join(path, "type"),
                    format!("`{s}` is not a compute type (spot | on-demand)"),
                );
                None
            }
            None => None,
        }
    }

    /// `min_vcpus` (optional) and `max_vcpus`, the first no larger than the second.
    fn vcpu_range(&mut self, t: &Node, path: &str) -> (Option<Option<u32>>, Option<u32>) {
        let min_vcpus = self.opt_int(t, path, "min_vcpus", 0, u32::MAX as i64, "");
        let max_vcpus = self.req_int(t, path, "max_vcpus", 0, u32::MAX as i64, "");
        if let (Some(Some(min)), Some(max)) = (min_vcpus, max_vcpus) {
            if min > max {
                let at = &t.get("min_vcpus").expect("present").at;
                self.err(
                    at,
                    &join(path, "min_vcpus"),
                    format!("min_vcpus {min} exceeds max_vcpus {max}"),
                );
            }
        }
        (min_vcpus, max_vcpus)
    }

    fn instance_types(&mut self, t: &Node, path: &str) -> Option<Vec<String>> {
        self.req(t, path, "instance_types").and_then(|n| {
            let key = join(path, "instance_types");
            let items = self.strings(n, &key, false)?;
            let ok: Vec<String> = items
                .into_iter()
                .filter(|(s, at)| {
                    self.check(INSTANCE_TYPE.is_match(s), at, &key, || {
                        format!("`{s}` is not an EC2 instance type (like `c5.xlarge`), family or `optimal`")
                    })
                })
                .map(|(s, _)| s)
                .collect();
            Some(ok)
        })
    }

    /// The allocation strategy, its default by `kind`; spot strategies only on spot.
    fn allocation_strategy(
        &mut self,
        t: &Node,
        path: &str,
        kind: Option<ComputeType>,
    ) -> Option<AllocationStrategy> {
        match (self.opt_str(t, "allocation_strategy"), kind) {
            (None, Some(ComputeType::Spot)) => Some(AllocationStrategy::SpotPriceCapacityOptimized),
            (None, _) => Some(AllocationStrategy::BestFitProgressive),
            (Some((s, at)), kind) => {
                let parsed = match s.as_str() {
                    "SPOT_PRICE_CAPACITY_OPTIMIZED" => {
                        Some(AllocationStrategy::SpotPriceCapacityOptimized)
                    }
                    "SPOT_CAPACITY_OPTIMIZED" => Some(AllocationStrategy::SpotCapacityOptimized),
                    "BEST_FIT_PROGRESSIVE" => Some(AllocationStrategy::BestFitProgressive),
                    "BEST_FIT" => Some(AllocationStrategy::BestFit),
                    _ => None,
                };
                let key = join(path, "allocation_strategy");
                match (parsed, kind) {
                    (None, _) => {
                        self.err(&at, &key, format!("`{s}` is not an allocation strategy (SPOT_PRICE_CAPACITY_OPTIMIZED, SPOT_CAPACITY_OPTIMIZED, BEST_FIT_PROGRESSIVE, BEST_FIT)"));
                        None
                    }
                    (
                        Some(
                            a @ (AllocationStrategy::SpotPriceCapacityOptimized
                            | AllocationStrategy::SpotCapacityOptimized),
                        ),
                        Some(ComputeType::OnDemand),
                    ) => {
                        self.err(&at, &key, format!("{} applies only to spot environments (on-demand: BEST_FIT_PROGRESSIVE or BEST_FIT)", a.as_api()));
                        None
                    }
                    (Some(a), _) => Some(a),
                }
            }
        }
    }

    /// Spot only, 1-100, default 100; `Some(None)` on on-demand.
    fn bid_percentage(
        &mut self,
        t: &Node,
        path: &str,
        kind: Option<ComputeType>,
    ) -> Option<Option<u32>> {
        match (self.opt(t, "bid_percentage"), kind) {
            (None, Some(ComputeType::Spot)) => Some(Some(100)),
            (None, _) => Some(None),
            (Some(n), Some(ComputeType::OnDemand)) => {
                self.err(
                    &n.at,
                    &join(path, "bid_percentage"),
                    "bid_percentage applies only to spot environments",
                );
                None
            }
            (Some(n), _) => self
                .int(
                    n,
                    &join(path, "bid_percentage"),
                    1,
                    100,
                    "percent of the on-demand price",
                )
                .map(Some),
        }
    }

    /// The environment's name, with room for a replacement's suffix, within Batch's limit.
    fn compute_name_fits(&mut self, key: &str, t: &Node, path: &str, prefix: Option<&str>) {
        if let Some(p) = prefix.filter(|_| KEY.is_match(key)) {
            let name = format!("{p}-{key}{REPLACEMENT_SUFFIX}");
            self.check(name.len() <= 128, &t.key_at, path, || {
                format!("compute environment name `{p}-{key}` (plus a replacement suffix) exceeds Batch's 128 characters")
            });
        }
    }

    fn queue(
        &mut self,
        t: &Node,
        path: &str,
        compute: &BTreeMap<String, ComputeEnvironment>,
        compute_nodes: Option<&Node>,
        name: Option<String>,
    ) -> Option<Queue> {
        let priority = self
            .opt_int(t, path, "priority", 0, 1000, "Batch's range")
            .map(|p| p.unwrap_or(1));
        let key = join(path, "compute");
        let list = self.req(t, path, "compute").and_then(|n| {
            let items = self.strings(n, &key, false)?;
            if items.len() > 3 {
                self.err(
                    &n.at,
                    &key,
                    format!(
                        "a queue takes at most 3 compute environments, found {}",
                        items.len()
                    ),
                );
                return None;
            }
            let mut ok = true;
            for (c, at) in &items {
                // An environment that exists but has its own errors is not a missing reference.
                let declared = compute_nodes.and_then(|n| n.get(c)).is_some();
                if !compute.contains_key(c) && !declared {
                    let known: Vec<&str> = compute.keys().map(String::as_str).collect();
                    self.err(
                        at,
                        &key,
                        format!(
                            "no compute environment `{c}` (defined: {})",
                            list_or_none(&known)
                        ),
                    );
                    ok = false;
                }
            }
            ok.then(|| items.into_iter().map(|(c, _)| c).collect::<Vec<_>>())
        });
        let state = self.state(t, path);
        if let Some(name) = name {
            self.check(name.len() <= 128, &t.key_at, path, || {
                format!("queue name `{name}` exceeds Batch's 128 characters")
            });
        }
        Some(Queue {
            priority: priority?,
            compute: list?,
            state,
        })
    }

    /// A job's `image`: a repository key, with an optional `:tag` or `@sha256:digest`, or a
    /// literal image URI (anything with a `/`, or a `name:tag` whose name is no repository).
    fn image(&mut self, i: &str, at: &Origin, key: &str, refs: &Refs<'_>) -> Option<Image> {
        let (name, pin) = i.split_at(i.find([':', '@']).unwrap_or(i.len()));
        let declared = refs.declared("repositories", name);
        if i.contains('/') || !(declared || pin.is_empty()) {
            return self
                .check(IMAGE_URI.is_match(i), at, key, || {
                    format!("`{i}` is not an image URI (up to 255 of A-Z a-z 0-9 . _ - : / # @)")
                })
                .then(|| Image::Uri(i.to_string()));
        }
        if !refs.repositories.contains_key(name) {
            if !declared {
                let known: Vec<&str> = refs.repositories.keys().map(String::as_str).collect();
                let msg = format!(
                    "no repository `{name}` (defined: {}); a literal image needs a `/` or `:`",
                    list_or_none(&known)
                );
                self.err(at, key, msg);
            }
            return None;
        }
        match parse_pin(pin) {
            Ok(pin) => Some(Image::Repository(RepositoryImage {
                key: name.to_string(),
                pin,
            })),
            Err(msg) => {
                self.err(at, key, msg);
                None
            }
        }
    }

    /// `[jobs.KEY]`, step by step: queue, image, command and resources, retry, environment and
    /// secrets, matrix, then whether its queue can ever run it.
    fn job(&mut self, t: &Node, path: &str, refs: &Refs<'_>) -> Option<Job> {
        let queue = self.job_queue(t, path, refs);
        let image = self.job_image(t, path, refs);
        let command = self
            .req(t, path, "command")
            .and_then(|n| self.strings_allow_repeats(n, &join(path, "command")));
        let vcpus = self.req_int(t, path, "vcpus", 1, u32::MAX as i64, "");
        let memory_mib = self.req_int(t, path, "memory_mib", 4, u32::MAX as i64, "Batch's minimum");
        let gpus = self.job_gpus(t, path, refs);
        let timeout_s = self.opt_int(t, path, "timeout_s", 60, u32::MAX as i64, "Batch's minimum");
        let retry = self.retry(
            t.get("retry").filter(|n| !matches!(n.val, Val::Invalid)),
            &join(path, "retry"),
        );
        let env = self.env_vars(t, path, "env");
        let secrets = self.job_secrets(t, path, env.as_ref());
        let matrix = match self.opt(t, "matrix") {
            None => Some(None),
            Some(n) => self.matrix(n, &join(path, "matrix")).map(Some),
        };
        self.job_fits_its_queue(t, path, refs, (&queue, vcpus));
        if let (Some(image), Some(command)) = (&image, &command) {
            if runs_cuda(command) && !image_has_cuda(image, refs.gpu) {
                let at = &t.get("command").expect("present").at;
                self.err(at, &join(path, "command"), "runs CUDA (`--device cuda`) on the cpu image: set gpu = true (a repository image then follows it to `:gpu`) or name `:gpu`");
            }
        }
        Some(Job {
            queue: queue?.0,
            image: image?,
            command: command?,
            vcpus: vcpus?,
            memory_mib: memory_mib?,
            gpus: gpus?,
            timeout_s: timeout_s?,
            retry: retry?,
            env: env?.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            secrets: secrets?,
            matrix: matrix?,
        })
    }

    /// `queue`: a queue the stack defines.
    fn job_queue(&mut self, t: &Node, path: &str, refs: &Refs<'_>) -> Option<(String, Origin)> {
        self.req_str(t, path, "queue").filter(|(q, at)| {
            let known: Vec<&str> = refs.queues.keys().map(String::as_str).collect();
            let ok = refs.queues.contains_key(q) || refs.declared("queues", q);
            self.check(ok, at, &join(path, "queue"), || {
                format!("no queue `{q}` (defined: {})", list_or_none(&known))
            })
        })
    }

    /// `image`: see [`Self::image`].
    fn job_image(&mut self, t: &Node, path: &str, refs: &Refs<'_>) -> Option<Image> {
        self.req_str(t, path, "image")
            .and_then(|(i, at)| self.image(&i, &at, &join(path, "image"), refs))
    }

    /// `gpus` (default 0), refused above 0 while the stack has no GPU.
    fn job_gpus(&mut self, t: &Node, path: &str, refs: &Refs<'_>) -> Option<u32> {
        let gpus = self
            .opt_int(t, path, "gpus", 0, u32::MAX as i64, "")
            .map(|g| g.unwrap_or(0));
        if let (Some(g), false) = (gpus, refs.gpu) {
            if g > 0 {
                let at = &t.get("gpus").expect("present").at;
                self.err(at, &join(path, "gpus"), format!("asks for {g} GPU(s) while the stack has gpu = false: the job would wait in RUNNABLE forever (set gpus in a `gpu` sub-table, or gpu = true)"));
            }
        }
        gpus
    }

    /// `secrets`: names or ARNs, none also set in `env`.
    fn job_secrets(
        &mut self,
        t: &Node,
        path: &str,
        env: Option<&BTreeMap<String, (String, Origin)>>,
    ) -> Option<BTreeMap<String, String>> {
        let secrets = self.env_vars(t, path, "secrets").map(|s| {
            let key = join(path, "secrets");
            s.into_iter()
                .filter(|(name, (value, at))| {
                    self.check(secret_ok(value), at, &join(&key, name), || {
                        secret_problem(value)
                    })
                })
                .map(|(name, (value, _))| (name, value))
                .collect::<BTreeMap<_, _>>()
        });
        if let (Some(env), Some(secrets)) = (env, &secrets) {
            for name in secrets.keys().filter(|n| env.contains_key(*n)) {
                let at = &t
                    .get("secrets")
                    .and_then(|s| s.get(name))
                    .expect("present")
                    .key_at;
                self.err(
                    at,
                    &join(&join(path, "secrets"), name),
                    format!("`{name}` is set both in `env` and in `secrets`"),
                );
            }
        }
        secrets
    }

    /// A job whose vCPUs exceed every `max_vcpus` of its queue's compute would wait in RUNNABLE
    /// forever.
    fn job_fits_its_queue(
        &mut self,
        t: &Node,
        path: &str,
        refs: &Refs<'_>,
        (queue, vcpus): (&Option<(String, Origin)>, Option<u32>),
    ) {
        if let (Some((q, _)), Some(v)) = (queue, vcpus) {
            if let Some(queue) = refs.queues.get(q) {
                let maxes: Vec<u32> = queue
                    .compute
                    .iter()
                    .filter_map(|c| refs.compute.get(c))
                    .map(|c| c.max_vcpus)
                    .collect();
                if !maxes.is_empty() && maxes.iter().all(|m| v > *m) {
                    let at = &t.get("vcpus").expect("present").at;
                    self.err(at, &join(path, "vcpus"), format!("asks for {v} vCPUs but every compute environment of queue `{q}` has max_vcpus below that ({}): the job would wait in RUNNABLE forever", maxes.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")));
                }
            }
        }
    }

    /// `command`: not empty; repeated arguments are fine.
    fn strings_allow_repeats(&mut self, node: &Node, key: &str) -> Option<Vec<String>> {
        let Val::Array(items) = &node.val else {
            return None;
        };
        if items.is_empty() {
            self.err(&node.at, key, "must not be empty");
            return None;
        }
        Some(items.iter().filter_map(str_of).map(|(s, _)| s).collect())
    }

    fn retry(&mut self, node: Option<&Node>, path: &str) -> Option<Retry> {
        let Some(t) = node else {
            return Some(Retry {
                attempts: 1,
                rules: Retry::default_rules(),
            });
        };
        let attempts = self
            .opt_int(t, path, "attempts", 1, 10, "Batch's range")
            .map(|a| a.unwrap_or(1));
        let rules = match self.opt(t, "rules") {
            None => Some(Retry::default_rules()),
            Some(n) => self.rules(n, &join(path, "rules")),
        };
        Some(Retry {
            attempts: attempts?,
            rules: rules?,
        })
    }

    fn rules(&mut self, node: &Node, path: &str) -> Option<Vec<RetryRule>> {
        let Val::Array(items) = &node.val else {
            return None;
        };
        if items.is_empty() {
            self.err(
                &node.at,
                path,
                "must not be empty (omit `rules` for the default rules)",
            );
            return None;
        }
        if items.len() > 5 {
            self.err(
                &node.at,
                path,
                format!("Batch takes at most 5 retry rules, found {}", items.len()),
            );
            return None;
        }
        let mut rules = Vec::new();
        let mut ok = true;
        for (i, rule) in items.iter().enumerate() {
            let rpath = format!("{path}[{i}]");
            if matches!(rule.val, Val::Invalid) {
                ok = false;
                continue;
            }
            match self.rule(rule, &rpath) {
                Some(rule) => rules.push(rule),
                None => ok = false,
            }
        }
        ok.then_some(rules)
    }

    /// One retry rule: an action and at least one matcher in Batch's grammar.
    fn rule(&mut self, rule: &Node, rpath: &str) -> Option<RetryRule> {
        let action = self.retry_action(rule, rpath);
        const REASON: &str =
            "letters, digits, `.`, `:` and spaces, optionally ending with `*`, at most 512";
        let status = self.rule_matcher(rule, rpath, "on_status_reason", &STATUS_REASON, REASON);
        let reason = self.rule_matcher(rule, rpath, "on_reason", &STATUS_REASON, REASON);
        let exit = self.rule_matcher(
            rule,
            rpath,
            "on_exit_code",
            &EXIT_CODE,
            "digits, optionally ending with `*`, at most 512",
        );
        let (Some(status), Some(reason), Some(exit), Some(action)) = (status, reason, exit, action)
        else {
            return None;
        };
        if status.is_none() && reason.is_none() && exit.is_none() {
            self.err(
                &rule.at,
                rpath,
                "a retry rule needs at least one of on_status_reason, on_reason, on_exit_code",
            );
            return None;
        }
        Some(RetryRule {
            on_status_reason: status,
            on_reason: reason,
            on_exit_code: exit,
            action,
        })
    }

    fn retry_action(&mut self, rule: &Node, rpath: &str) -> Option<RetryAction> {
        match self.req_str(rule, rpath, "action") {
            Some((a, _)) if a.eq_ignore_ascii_case("retry") => Some(RetryAction::Retry),
            Some((a, _)) if a.eq_ignore_ascii_case("exit") => Some(RetryAction::Exit),
            Some((a, at)) => {
                self.err(
                    &at,
                    &join(rpath, "action"),
                    format!("`{a}` is not a retry action (retry | exit)"),
                );
                None
            }
            None => None,
        }
    }

    /// An optional matcher `key` of a rule, in the grammar `re` (`what` describes it).
    fn rule_matcher(
        &mut self,
        rule: &Node,
        rpath: &str,
        key: &str,
        re: &Regex,
        what: &str,
    ) -> Option<Option<String>> {
        match self.opt_str(rule, key) {
            None => Some(None),
            Some((s, at)) => {
                let good = re.is_match(&s) && !s.is_empty() && s.len() <= 512;
                self.check(good, &at, &join(rpath, key), || {
                    format!("`{s}` is not a valid {key}: {what}")
                })
                .then_some(Some(s))
            }
        }
    }

    /// `env` and `secrets`: variable names a container accepts and that the tool or Batch do
    /// not set themselves; values as written, with their origin.
    fn env_vars(
        &mut self,
        t: &Node,
        path: &str,
        key: &str,
    ) -> Option<BTreeMap<String, (String, Origin)>> {
        let Some(table) = self.opt(t, key).and_then(Node::table) else {
            return t.get(key).is_none().then(BTreeMap::new);
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        let kpath = join(path, key);
        for (name, node) in table {
            let vpath = join(&kpath, name);
            if !ENV_VAR.is_match(name) {
                self.err(
                    &node.key_at,
                    &vpath,
                    format!(
                        "`{name}` is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
                    ),
                );
                ok = false;
            } else if names::is_injected_name(name) {
                self.err(&node.key_at, &vpath, format!("`{name}` is set by the tool in every job (STACK, STACK_ENV, USE_GPU, AWS_REGION, BUCKET_*)"));
                ok = false;
            } else if name.starts_with("AWS_BATCH") {
                self.err(
                    &node.key_at,
                    &vpath,
                    format!("`{name}`: names starting with AWS_BATCH are reserved by AWS Batch"),
                );
                ok = false;
            }
            match str_of(node) {
                Some(v) => {
                    out.insert(name.clone(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn matrix(&mut self, node: &Node, path: &str) -> Option<Matrix> {
        let table = node.table()?;
        if table.len() != 1 {
            self.err(
                &node.at,
                path,
                format!("a matrix has exactly one key, found {}", table.len()),
            );
            return None;
        }
        let (key, values) = table.iter().next().expect("one entry");
        let vpath = join(path, key);
        let key_ok = self.check(MATRIX_KEY.is_match(key), &values.key_at, &vpath, || {
            format!("matrix key `{key}` must match [a-z_][a-z0-9_]*")
        });
        let items = self.strings(values, &vpath, false)?;
        if items.len() > 100 {
            self.err(
                &values.at,
                &vpath,
                format!("a matrix takes at most 100 values, found {}", items.len()),
            );
            return None;
        }
        let mut ok = key_ok;
        for (v, at) in &items {
            ok &= self.check(MATRIX_VALUE.is_match(v), at, &vpath, || {
                format!("matrix value `{v}` must match [a-z0-9][a-z0-9-]* (it becomes part of a job definition name)")
            });
        }
        ok.then(|| Matrix {
            key: key.clone(),
            values: items.into_iter().map(|(v, _)| v).collect(),
        })
    }

    /// Job definition names: within Batch's 128 characters and distinct across jobs and matrix
    /// values (`a` with value `b-c` and `a-b` with value `c` would collide).
    fn job_definition_names(&mut self, root: &Node, jobs: &BTreeMap<String, Job>, prefix: &str) {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (key, job) in jobs {
            let node = root
                .get("jobs")
                .and_then(|j| j.get(key))
                .expect("built from it");
            let path = join("jobs", key);
            // (name suffix, where it came from, its key path)
            let suffixes: Vec<(String, Origin, String)> = match &job.matrix {
                None => vec![(key.clone(), node.key_at.clone(), path.clone())],
                Some(m) => {
                    let values = node.get("matrix").and_then(|n| n.get(&m.key));
                    let vpath = join(&join(&path, "matrix"), &m.key);
                    m.values
                        .iter()
                        .map(|v| {
                            let at = match values.map(|n| &n.val) {
                                Some(Val::Array(items)) => items
                                    .iter()
                                    .find(|i| matches!(&i.val, Val::Str(s) if s == v))
                                    .map_or_else(|| node.key_at.clone(), |i| i.at.clone()),
                                _ => node.key_at.clone(),
                            };
                            (format!("{key}-{v}"), at, vpath.clone())
                        })
                        .collect()
                }
            };
            for (suffix, at, kpath) in suffixes {
                let name = format!("{prefix}-{suffix}");
                if name.len() > 128 {
                    self.err(
                        &at,
                        &kpath,
                        format!(
                            "job definition name `{name}` has {} characters; Batch allows 128",
                            name.len()
                        ),
                    );
                }
                if let Some(other) = seen.get(&name) {
                    self.err(
                        &at,
                        &kpath,
                        format!("job definition name `{name}` is also derived from job `{other}`"),
                    );
                } else {
                    seen.insert(name, key.clone());
                }
            }
        }
    }

    /// Names derived from the prefix alone (roles, instance profile, security group, log group).
    fn stack_names(&mut self, at: &Origin, prefix: &str) {
        let checks = [
            (format!("{prefix}-batch-service"), 64, "IAM role"),
            (format!("{prefix}-instance"), 128, "instance profile"),
            (format!("{prefix}-batch"), 255, "security group"),
            (format!("/aws/batch/{prefix}"), 512, "log group"),
        ];
        for (name, limit, what) in checks {
            self.check(name.len() <= limit, at, "stack.name", || {
                format!("{what} name `{name}` exceeds AWS's {limit} characters")
            });
        }
    }
}

fn str_of(node: &Node) -> Option<(String, Origin)> {
    match &node.val {
        Val::Str(s) => Some((s.clone(), node.at.clone())),
        _ => None,
    }
}

fn list_or_none(keys: &[&str]) -> String {
    if keys.is_empty() {
        "none".to_string()
    } else {
        keys.join(", ")
    }
}

fn secret_ok(value: &str) -> bool {
    if value.starts_with("arn:") {
        SECRET_ARN.is_match(value)
    } else {
        SECRET_NAME.is_match(value)
    }
}

fn secret_problem(value: &str) -> String {
    if value.starts_with("arn:") {
        format!("`{value}` is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)")
    } else {
        format!("`{value}` is not a secret name (1-512 of A-Z a-z 0-9 / _ + = . @ -) or ARN")
    }
}

/// Why S3 would refuse a bucket name (beyond its length), if it would.
fn bucket_dns_problem(name: &str) -> Option<&'static str> {
    let first = name.chars().next()?;
    let last = name.chars().last()?;
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Some("may hold only lowercase letters, digits, `-` and `.`");
    }
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Some("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return Some("may not contain `..`");
    }
    if ["xn--", "sthree-", "amzn-s3-demo-"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return Some("may not begin with `xn--`, `sthree-` or `amzn-s3-demo-` (reserved by S3)");
    }
    if ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        return Some("ends with a suffix S3 reserves");
    }
    None
}

/// `""`, `:tag` or `@sha256:hex` after a repository key.
fn parse_pin(pin: &str) -> Result<Pin, String> {
    if pin.is_empty() {
        return Ok(Pin::Flavour);
    }
    if let Some(digest) = pin.strip_prefix('@') {
        return if DIGEST.is_match(digest) {
            Ok(Pin::Digest(digest.to_string()))
        } else {
            Err(format!(
                "`{digest}` is not an image digest (sha256: and 64 lowercase hex digits)"
            ))
        };
    }
    let tag = &pin[1..];
    if TAG.is_match(tag) {
        Ok(Pin::Tag(tag.to_string()))
    } else {
        Err(format!(
            "`{tag}` is not an image tag (1 to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)"
        ))
    }
}

/// Whether a command asks burn for CUDA.
fn runs_cuda(command: &[String]) -> bool {
    command
        .windows(2)
        .any(|w| w[0] == "--device" && w[1] == "cuda")
        || command.iter().any(|a| a == "--device=cuda")
}

/// Whether a job's image may hold CUDA: only the tool's cpu flavour is known not to.
fn image_has_cuda(image: &Image, gpu: bool) -> bool {
    match image {
        Image::Repository(r) => r.tag(gpu) != Some("cpu"),
        Image::Uri(_) => true,
    }
}
