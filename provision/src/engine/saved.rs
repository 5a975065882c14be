//! A plan saved by `plan --out` for `apply PLAN`: the stack it was made for, the state serial
//! it was made at, and the rendered plan (its `changes` are compared when applied).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::plan::Plan;
use super::render;
use crate::stack::Stack;

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format_version: u32,
    /// Always true: tells a saved plan from any other JSON file.
    pub saved_plan: bool,
    pub stack: String,
    pub env: String,
    pub gpu: bool,
    /// The state serial the plan was made at: any apply since makes it stale.
    pub serial: u64,
    /// The plan as `plan --json` prints it.
    pub plan: Value,
}

impl SavedPlan {
    pub fn new(plan: &Plan) -> SavedPlan {
        SavedPlan {
            format_version: FORMAT_VERSION,
            saved_plan: true,
            stack: plan.stack.name.clone(),
            env: plan.stack.env.clone(),
            gpu: plan.stack.gpu,
            serial: plan.snapshot.serial,
            plan: render::json(plan),
        }
    }

    /// Writes the plan whole or not at all: a half-written plan must never be applied.
    pub fn write(&self, path: &Path) -> Result<()> {
        // Written whole or not at all: a half-written plan must never be applied.
        write_whole(path, &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a saved plan and checks that it was saved for `stack`.
    pub fn read(path: &Path, stack: &Stack) -> Result<SavedPlan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading saved plan {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a saved plan", path.display()))?;
        if value["saved_plan"] != Value::Bool(true) || value["format_version"] != FORMAT_VERSION {
            bail!(
                "{} is not a plan saved by `provision plan --out`",
                path.display()
            );
        }
        if value["stack"] != stack.name.as_str() || value["env"] != stack.env.as_str() {
            bail!(
                "{} was saved for {}/{}, not {}/{}",
                path.display(),
                value["stack"].as_str().unwrap_or("?"),
                value["env"].as_str().unwrap_or("?"),
                stack.name,
                stack.env
            );
        }
        if !value["serial"].is_u64() {
            bail!("saved plan without a serial");
        }
        serde_json::from_value(value)
            .with_context(|| format!("{} is not a saved plan", path.display()))
    }

    /// The changes it would make, to compare with a fresh plan's.
    pub fn changes(&self) -> &Value {
        &self.plan["changes"]
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    // The mode `std::fs::write` gives (0666 less the umask), not tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)?;
    Ok(())
}
