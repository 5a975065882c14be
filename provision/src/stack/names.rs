//! Names, tags and job environments derived from a resolved stack (docs/design.md, "Names"). Every
//! resource name comes from here, so a name is never typed twice.

use std::collections::BTreeMap;

use super::model::{flavour, Image, Job, Pin, Stack};

/// Tag keys every taggable resource carries.
pub const TAG_STACK: &str = "provision:stack";
pub const TAG_ENV: &str = "provision:env";

/// One concrete job definition: a job, or one value of its matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDefinitionSpec<'a> {
    /// The job's key in `[jobs]`.
    pub job_key: &'a str,
    /// `{key}` or `{key}-{value}`: the address suffix, the output key and the log stream prefix.
    pub key: String,
    /// `{P}-{key}` or `{P}-{key}-{value}`.
    pub name: String,
    pub job: &'a Job,
    /// `command` with the matrix value substituted.
    pub command: Vec<String>,
    /// The user's `env` with the matrix value substituted (injected variables not included).
    pub env: BTreeMap<String, String>,
}

impl Stack {
    /// `P = {stack.name}-{env}`.
    pub fn prefix(&self) -> String {
        format!("{}-{}", self.name, self.env)
    }

    /// The DynamoDB partition key of this stack's state: `{stack}/{env}`.
    pub fn state_pk(&self) -> String {
        format!("{}/{}", self.name, self.env)
    }

    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (TAG_STACK.to_string(), self.name.clone()),
            (TAG_ENV.to_string(), self.env.clone()),
        ])
    }

    pub fn bucket_name(&self, key: &str, account_id: &str) -> String {
        format!("{}-{key}-{account_id}", self.prefix())
    }

    pub fn repository_name(&self, key: &str) -> String {
        format!("{}-{key}", self.prefix())
    }

    pub fn repository_uri(&self, key: &str, account_id: &str) -> String {
        format!(
            "{account_id}.dkr.ecr.{}.amazonaws.com/{}",
            self.region,
            self.repository_name(key)
        )
    }

    pub fn log_group_name(&self) -> String {
        format!("/aws/batch/{}", self.prefix())
    }

    /// `role` is one of `instance`, `batch-service`, `execution`, `job`.
    pub fn role_name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix())
    }

    pub fn instance_profile_name(&self) -> String {
        self.role_name("instance")
    }

    pub fn security_group_name(&self) -> String {
        format!("{}-batch", self.prefix())
    }

    /// `suffix`: `None` for the first environment, `Some(n)` for the n-th replacement.
    pub fn compute_environment_name(&self, key: &str, suffix: Option<u32>) -> String {
        match suffix {
            None => format!("{}-{key}", self.prefix()),
            Some(n) => format!("{}-{key}-r{n}", self.prefix()),
        }
    }

    /// A launch template shares its compute environment's name (and replacement suffix).
    pub fn launch_template_name(&self, key: &str, suffix: Option<u32>) -> String {
        self.compute_environment_name(key, suffix)
    }

    pub fn queue_name(&self, key: &str) -> String {
        format!("{}-{key}", self.prefix())
    }

    /// The image a job runs, as written: its repository's tag (the flavour's `cpu` or `gpu`
    /// when none is written) or digest, or the literal URI.
    pub fn image_uri(&self, image: &Image, account_id: &str) -> String {
        self.pinned_image_uri(image, account_id, &BTreeMap::new())
    }

    /// The image a job definition names: as [`Stack::image_uri`], with a tag replaced by the
    /// digest it pointed at when the plan read it (`digests`: `key:tag` → `sha256:...`), so a
    /// new push is a new job definition revision and a running job never changes image.
    pub fn pinned_image_uri(
        &self,
        image: &Image,
        account_id: &str,
        digests: &BTreeMap<String, String>,
    ) -> String {
        let r = match image {
            Image::Repository(r) => r,
            Image::Uri(uri) => return uri.clone(),
        };
        let repository = self.repository_uri(&r.key, account_id);
        let tag = match &r.pin {
            Pin::Digest(digest) => return format!("{repository}@{digest}"),
            Pin::Tag(tag) => tag.as_str(),
            Pin::Flavour => flavour(self.gpu),
        };
        match digests.get(&format!("{}:{tag}", r.key)) {
            Some(digest) => format!("{repository}@{digest}"),
            None => format!("{repository}:{tag}"),
        }
    }

    /// Every `(repository key, tag)` the stack's jobs name, for the plan to resolve.
    pub fn image_tags(&self) -> std::collections::BTreeSet<(String, String)> {
        self.jobs
            .values()
            .filter_map(|job| match &job.image {
                Image::Repository(r) => r.tag(self.gpu).map(|t| (r.key.clone(), t.to_string())),
                Image::Uri(_) => None,
            })
            .collect()
    }

    /// Every job definition the stack declares: one per job, or one per matrix value.
    pub fn job_definitions(&self) -> Vec<JobDefinitionSpec<'_>> {
        let mut out = Vec::new();
        for (job_key, job) in &self.jobs {
            match &job.matrix {
                None => out.push(JobDefinitionSpec {
                    job_key,
                    key: job_key.clone(),
                    name: format!("{}-{job_key}", self.prefix()),
                    job,
                    command: job.command.clone(),
                    env: job.env.clone(),
                }),
                Some(matrix) => {
                    let placeholder = format!("{{{}}}", matrix.key);
                    for value in &matrix.values {
                        let subst = |s: &String| s.replace(&placeholder, value);
                        out.push(JobDefinitionSpec {
                            job_key,
                            key: format!("{job_key}-{value}"),
                            name: format!("{}-{job_key}-{value}", self.prefix()),
                            job,
                            command: job.command.iter().map(subst).collect(),
                            env: job.env.iter().map(|(k, v)| (k.clone(), subst(v))).collect(),
                        });
                    }
                }
            }
        }
        out
    }

    /// The variables every job gets: `STACK`, `STACK_ENV`, `USE_GPU`, `AWS_REGION` and one
    /// `BUCKET_<KEY>` per bucket (key upper-cased, `-` → `_`).
    pub fn injected_env(&self, account_id: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("STACK".to_string(), self.name.clone()),
            ("STACK_ENV".to_string(), self.env.clone()),
            ("USE_GPU".to_string(), self.gpu.to_string()),
            ("AWS_REGION".to_string(), self.region.clone()),
        ]);
        for key in self.buckets.keys() {
            env.insert(bucket_env_var(key), self.bucket_name(key, account_id));
        }
        env
    }
}

/// `BUCKET_<KEY>`: the variable naming bucket `key` in every job's environment.
pub fn bucket_env_var(key: &str) -> String {
    format!("BUCKET_{}", key.to_uppercase().replace('-', "_"))
}

/// Names `env` may not set because the tool injects them (`BUCKET_*` checked by prefix).
pub fn is_injected_name(name: &str) -> bool {
    matches!(name, "STACK" | "STACK_ENV" | "USE_GPU" | "AWS_REGION") || name.starts_with("BUCKET_")
}
