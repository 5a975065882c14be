//! The stack model through the real binary: every malformed stack under
//! `tests/data/stacks/bad/` fails with the exit code, location and message its header states;
//! every good stack under `stacks/` resolves to the expected values per env, GPU on and off.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs `provision` in the workspace root, without the stack/env variables of the caller.
fn provision(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .current_dir(workspace())
        .args(args)
        .env_remove("PROVISION_STACK")
        .env_remove("PROVISION_ENV")
        .output()
        .expect("run provision")
}

/// What a bad stack's header promises: `# exit: N`, `# count: N` (error lines, no more, no
/// less: nothing cascades, nothing is dropped), `# args: ...`, `# error: LOC | FRAGMENT`.
struct Expect {
    exit: i32,
    count: Option<usize>,
    args: Vec<String>,
    errors: Vec<(String, String)>,
}

fn expectations(text: &str) -> Expect {
    let mut expect = Expect {
        exit: -1,
        count: None,
        args: Vec::new(),
        errors: Vec::new(),
    };
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(code) = line.strip_prefix("# exit: ") {
            expect.exit = code.trim().parse().expect("exit code");
        } else if let Some(n) = line.strip_prefix("# count: ") {
            expect.count = Some(n.trim().parse().expect("error count"));
        } else if let Some(args) = line.strip_prefix("# args: ") {
            expect.args = args.split_whitespace().map(String::from).collect();
        } else if let Some(err) = line.strip_prefix("# error: ") {
            let (loc, frag) = err.split_once(" | ").expect("LOC | FRAGMENT");
            expect.errors.push((loc.to_string(), frag.to_string()));
        }
    }
    expect
}

#[test]
fn every_bad_stack_fails_with_its_location_and_message() {
    let dir = workspace().join("tests/data/stacks/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("bad stacks")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "only {} bad stacks", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let rel = format!(
            "tests/data/stacks/bad/{}",
            file.file_name().unwrap().to_str().unwrap()
        );
        let expect = expectations(&std::fs::read_to_string(file).unwrap());
        assert!(
            expect.exit >= 0 && !expect.errors.is_empty(),
            "{rel}: header lacks `# exit:` or `# error:`"
        );
        let mut args = vec!["validate", "--stack", rel.as_str()];
        args.extend(expect.args.iter().map(String::as_str));
        let out = provision(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut problems = Vec::new();
        if out.status.code() != Some(expect.exit) {
            problems.push(format!(
                "exit {:?}, expected {}",
                out.status.code(),
                expect.exit
            ));
        }
        if !out.stdout.is_empty() {
            problems.push(format!(
                "stdout not empty: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        let reported = stderr
            .lines()
            .filter(|l| l.contains(": error: ") && !l.starts_with("error: "))
            .count();
        if let Some(count) = expect.count.filter(|c| *c != reported) {
            problems.push(format!("{reported} errors reported, expected {count}"));
        }
        for (loc, frag) in &expect.errors {
            let prefix = if loc.starts_with("--") {
                format!("{loc}: error: ")
            } else {
                format!("{rel}:{loc}: error: ")
            };
            if !stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(frag.as_str()))
            {
                problems.push(format!("no line `{prefix}...{frag}...`"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{rel} ({}):\n  {}\n  stderr:\n{stderr}",
                expect.args.join(" "),
                problems.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad stacks:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// `validate --json` of a good stack.
fn resolved(stack: &str, args: &[&str]) -> Value {
    let mut all = vec!["validate", "--stack", stack, "--json"];
    all.extend_from_slice(args);
    let out = provision(&all);
    assert!(
        out.status.success(),
        "validate {all:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("validate --json prints JSON")
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string"))
        .collect()
}

const ORDERFLOW: &str = "stacks/orderflow.toml";

#[test]
fn orderflow_cpu_environments() {
    for (args, env) in [(&[][..], "default"), (&["--env", "dev"][..], "dev")] {
        let s = resolved(ORDERFLOW, args);
        assert_eq!(s["env"], env);
        assert_eq!(s["gpu"], false);
        assert_eq!(s["protect"], false);
        assert_eq!(s["state_table"], "provision-state");
        let spot = &s["compute"]["spot"];
        assert_eq!(spot["type"], "spot");
        assert_eq!(spot["max_vcpus"], 16);
        assert_eq!(spot["min_vcpus"], 0);
        assert_eq!(
            strs(&spot["instance_types"]),
            ["c5.xlarge", "c5.2xlarge", "m5.xlarge", "m5.2xlarge"]
        );
        assert_eq!(spot["root_volume_gb"], 50);
        assert_eq!(spot["allocation_strategy"], "SPOT_PRICE_CAPACITY_OPTIMIZED");
        assert_eq!(spot["bid_percentage"], 100);
        assert_eq!(spot["state"], "enabled");
        let ondemand = &s["compute"]["ondemand"];
        assert_eq!(ondemand["type"], "on-demand");
        assert_eq!(ondemand["allocation_strategy"], "BEST_FIT_PROGRESSIVE");
        assert_eq!(ondemand["bid_percentage"], Value::Null);
        assert_eq!(ondemand["root_volume_gb"], Value::Null);
        assert_eq!(
            strs(&ondemand["instance_types"]),
            ["c5.xlarge", "m5.xlarge"]
        );
        assert_eq!(strs(&s["queues"]["main"]["compute"]), ["spot", "ondemand"]);
        let train = &s["jobs"]["train"];
        assert_eq!(
            strs(&train["command"]),
            ["runtime", "train", "--device", "cpu"]
        );
        assert_eq!(train["gpus"], 0);
        assert_eq!(train["image"], serde_json::json!({"repository": "runtime"}));
        assert_eq!(train["retry"]["attempts"], 1);
        let prepare = &s["jobs"]["prepare"];
        assert_eq!(prepare["retry"]["attempts"], 3);
        assert_eq!(
            prepare["retry"]["rules"][0]["on_status_reason"],
            "Host EC2*"
        );
        assert_eq!(prepare["retry"]["rules"][0]["action"], "retry");
        assert_eq!(prepare["retry"]["rules"][1]["on_exit_code"], "1");
        assert_eq!(prepare["retry"]["rules"][1]["action"], "exit");
        assert_eq!(prepare["timeout_s"], 18000);
        assert_eq!(prepare["env"]["CHECKPOINT_INTERVAL"], "50");
        assert_eq!(s["logs"]["retention_days"], 30);
        assert_eq!(s["network"]["vpc"], "default");
        assert_eq!(s["network"]["s3_endpoint"], true);
        let d = &s["derived"];
        assert_eq!(d["image_type"], "ECS_AL2023");
        assert_eq!(
            d["buckets"]["data"],
            format!("orderflow-{env}-data-{{account}}")
        );
        assert_eq!(
            d["compute_environments"]["spot"],
            format!("orderflow-{env}-spot")
        );
        assert_eq!(
            d["launch_templates"]["spot"],
            format!("orderflow-{env}-spot")
        );
        assert_eq!(d["launch_templates"]["ondemand"], Value::Null);
        assert_eq!(d["log_group"], format!("/aws/batch/orderflow-{env}"));
        let train_env = &d["job_definitions"]["train"]["environment"];
        assert_eq!(train_env["USE_GPU"], "false");
        assert_eq!(train_env["STACK"], "orderflow");
        assert_eq!(train_env["STACK_ENV"], env);
        assert_eq!(train_env["AWS_REGION"], "us-east-1");
        assert_eq!(
            train_env["BUCKET_DATA"],
            format!("orderflow-{env}-data-{{account}}")
        );
    }
}

#[test]
fn orderflow_prod_is_gpu_and_protected() {
    let s = resolved(ORDERFLOW, &["--env", "prod"]);
    assert_eq!(s["env"], "prod");
    assert_eq!(s["gpu"], true);
    assert_eq!(s["protect"], true);
    let spot = &s["compute"]["spot"];
    assert_eq!(spot["max_vcpus"], 64, "[env.prod] compute.spot.max_vcpus");
    assert_eq!(
        strs(&spot["instance_types"]),
        ["g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge"]
    );
    assert_eq!(spot["root_volume_gb"], 100);
    assert_eq!(
        strs(&s["compute"]["ondemand"]["instance_types"]),
        ["g4dn.xlarge"]
    );
    assert_eq!(s["compute"]["ondemand"]["max_vcpus"], 8);
    let train = &s["jobs"]["train"];
    assert_eq!(
        strs(&train["command"]),
        ["runtime", "train", "--device", "cuda"]
    );
    assert_eq!(train["gpus"], 1);
    assert_eq!(
        train["vcpus"], 4,
        "keys the gpu sub-table leaves alone stay"
    );
    assert_eq!(s["derived"]["image_type"], "ECS_AL2023_NVIDIA");
    assert_eq!(
        s["derived"]["job_definitions"]["train"]["environment"]["USE_GPU"],
        "true"
    );
    assert_eq!(
        s["derived"]["job_definitions"]["prepare"]["environment"]["USE_GPU"],
        "true"
    );
    assert_eq!(s["derived"]["queues"]["main"], "orderflow-prod-main");
}

#[test]
fn set_gpu_switches_a_cpu_stack_like_an_env_does() {
    let s = resolved(ORDERFLOW, &["--env", "dev", "--set", "gpu=true"]);
    assert_eq!(s["gpu"], true);
    assert_eq!(s["protect"], false);
    assert_eq!(s["compute"]["spot"]["max_vcpus"], 16);
    assert_eq!(
        strs(&s["compute"]["spot"]["instance_types"]),
        ["g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge"]
    );
    assert_eq!(s["compute"]["spot"]["root_volume_gb"], 100);
    assert_eq!(s["jobs"]["train"]["gpus"], 1);
    assert_eq!(
        strs(&s["jobs"]["train"]["command"]),
        ["runtime", "train", "--device", "cuda"]
    );

    let s = resolved(ORDERFLOW, &["--env", "prod", "--set", "gpu=false"]);
    assert_eq!(s["gpu"], false);
    assert_eq!(s["protect"], true);
    assert_eq!(s["compute"]["spot"]["max_vcpus"], 64);
    assert_eq!(s["compute"]["spot"]["root_volume_gb"], 50);
    assert_eq!(s["jobs"]["train"]["gpus"], 0);
    assert_eq!(s["derived"]["image_type"], "ECS_AL2023");
}

#[test]
fn set_wins_over_both_overlays() {
    let s = resolved(
        ORDERFLOW,
        &[
            "--env",
            "prod",
            "--set",
            "compute.spot.max_vcpus=32",
            "--set",
            "compute.spot.instance_types=g5.2xlarge,g5.4xlarge",
            "--set",
            "jobs.train.command=[\"runtime\", \"train\", \"--epochs\", \"3\"]",
            "--set",
            "protect=false",
            "--set",
            "logs.retention_days=7",
            "--set",
            "jobs.prepare.env.EXTRA=x",
            "--set",
            "compute.ondemand.min_vcpus=2",
        ],
    );
    assert_eq!(s["compute"]["spot"]["max_vcpus"], 32);
    assert_eq!(
        strs(&s["compute"]["spot"]["instance_types"]),
        ["g5.2xlarge", "g5.4xlarge"]
    );
    assert_eq!(
        strs(&s["jobs"]["train"]["command"]),
        ["runtime", "train", "--epochs", "3"]
    );
    assert_eq!(s["protect"], false);
    assert_eq!(s["logs"]["retention_days"], 7);
    assert_eq!(s["jobs"]["prepare"]["env"]["EXTRA"], "x");
    assert_eq!(s["jobs"]["prepare"]["env"]["CHECKPOINT_INTERVAL"], "50");
    assert_eq!(s["compute"]["ondemand"]["min_vcpus"], 2);
}

#[test]
fn human_summary_names_every_resource() {
    let out = provision(&["validate", "--stack", ORDERFLOW, "--env", "dev"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "stack orderflow (env dev, region us-east-1)",
        "gpu: false   protect: false",
        "orderflow-dev-data-{account}",
        "{account}.dkr.ecr.us-east-1.amazonaws.com/orderflow-dev-runtime",
        "/aws/batch/orderflow-dev  (retention 30 days)",
        "orderflow-dev-instance, orderflow-dev-batch-service, orderflow-dev-execution, orderflow-dev-job",
        "orderflow-dev-spot  (spot, 0-16 vCPUs, SPOT_PRICE_CAPACITY_OPTIMIZED, bid 100%, enabled)",
        "launch template: orderflow-dev-spot (gp3 root volume 50 GiB)",
        "orderflow-dev-ondemand  (on-demand, 0-8 vCPUs, BEST_FIT_PROGRESSIVE, enabled)",
        "orderflow-dev-main  (priority 1, compute spot > ondemand, enabled)",
        "prepare: orderflow-dev-prepare  (queue main)",
        "train: orderflow-dev-train  (queue main)",
        "command: runtime train --device cpu",
        "orderflow-dev-batch (created)",
        "USE_GPU=false",
    ] {
        assert!(text.contains(needle), "summary lacks `{needle}`:\n{text}");
    }
}

#[test]
fn json_output_is_stable() {
    let a = provision(&["validate", "--stack", ORDERFLOW, "--env", "prod", "--json"]);
    let b = provision(&["validate", "--stack", ORDERFLOW, "--env", "prod", "--json"]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn every_good_stack_resolves_for_each_env_gpu_on_and_off() {
    let dir = workspace().join("stacks");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let rel = format!("stacks/{}", path.file_name().unwrap().to_str().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        let mut envs: Vec<Option<String>> = vec![None];
        envs.extend(
            text.lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("[env.")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(String::from)
                })
                .map(Some),
        );
        for env in &envs {
            for gpu in ["gpu=true", "gpu=false"] {
                let mut args = vec![];
                if let Some(e) = env {
                    args.extend(["--env", e.as_str()]);
                }
                args.extend(["--set", gpu]);
                let s = resolved(&rel, &args);
                assert_eq!(s["gpu"], gpu == "gpu=true", "{rel} {args:?}");
                let want = if gpu == "gpu=true" { "true" } else { "false" };
                for (_, def) in s["derived"]["job_definitions"].as_object().unwrap() {
                    assert_eq!(def["environment"]["USE_GPU"], want, "{rel} {args:?}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "checked only {checked} combinations");
}

#[test]
fn matrix_stack_expands_one_definition_per_value() {
    let s = resolved("stacks/loan-default.toml", &["--env", "dev"]);
    let defs = s["derived"]["job_definitions"].as_object().unwrap();
    for ds in ["corporate-credit-rating", "lending-club", "taiwan-credit"] {
        let data = &defs[&format!("data-{ds}")];
        assert_eq!(data["name"], format!("ldp-dev-data-{ds}"));
        assert_eq!(data["log_stream_prefix"], format!("data-{ds}"));
        assert_eq!(
            strs(&data["command"]),
            ["ldp", "data", "process", "--force", ds]
        );
        let train = &defs[&format!("experiment-{ds}")];
        assert_eq!(
            strs(&train["command"]),
            ["ldp", "experiment", "run", "--only-dataset", ds]
        );
        assert_eq!(train["environment"]["LDP_DATASET"], ds);
        assert_eq!(train["environment"]["LDP_N_JOBS"], "4");
    }
    assert_eq!(defs.len(), 6);

    let s = resolved(
        "stacks/loan-default.toml",
        &["--env", "dev", "--set", "gpu=true"],
    );
    let defs = &s["derived"]["job_definitions"];
    assert_eq!(
        strs(&defs["data-lending-club"]["command"]),
        [
            "ldp",
            "data",
            "process",
            "--force",
            "--use-gpu",
            "lending-club"
        ]
    );
    assert_eq!(
        defs["experiment-lending-club"]["environment"]["LDP_N_JOBS"],
        "1"
    );
    assert_eq!(s["jobs"]["experiment"]["gpus"], 1);
    assert_eq!(
        strs(&s["compute"]["spot"]["instance_types"]),
        ["g4dn.xlarge", "g4dn.2xlarge"]
    );
    assert_eq!(s["compute"]["spot"]["root_volume_gb"], 100);
}

#[test]
fn secrets_stack_keeps_names_and_arns_as_written() {
    let s = resolved("stacks/topics.toml", &["--env", "prod"]);
    let job = &s["jobs"]["firm-processor"];
    assert_eq!(job["secrets"]["WRDS_USERNAME"], "wrds-credentials");
    assert_eq!(
        job["secrets"]["GROK_API_KEY"],
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:grok-api-key-AbCdEf"
    );
    assert_eq!(job["gpus"], 1);
    assert_eq!(job["timeout_s"], 18000);
    assert_eq!(job["retry"]["attempts"], 3);
    assert_eq!(job["retry"]["rules"].as_array().unwrap().len(), 3);
    assert_eq!(
        job["retry"]["rules"][2]["on_reason"],
        "CannotPullContainerError*"
    );
    assert_eq!(s["buckets"]["results"]["kms_key"], "alias/ftm-data");
    assert_eq!(s["logs"]["retention_days"], 90);
    let dev = resolved("stacks/topics.toml", &["--env", "dev"]);
    assert_eq!(dev["gpu"], false);
    assert_eq!(dev["jobs"]["firm-processor"]["gpus"], 0);
}
