//! `--config FILE`: flags read from a JSON or TOML file (keys are the flags' names, `-` or `_`),
//! and the order-flow pipeline's `batch_config.json` as it stands (docs/data.md). Flags given on
//! the command line or in the environment win; the commands apply that rule, this module only
//! reads.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::Location;

/// The values of a config file, keyed by flag name in snake case (`start_date`).
#[derive(Debug, Clone, Default)]
pub struct Config {
    source: String,
    values: BTreeMap<String, Value>,
}

/// `batch_config.json`'s nested keys and the flags they stand for.
const BATCH_CONFIG_KEYS: &[(&str, &str, &str)] = &[
    ("data", "metadata_location", "input"),
    ("data", "instrument_filter", "instrument"),
    ("data", "start_date", "start_date"),
    ("data", "end_date", "end_date"),
    ("data", "lookback_period", "lookback"),
    ("data", "apply_undersampling", "undersample"),
    ("training", "batch_size", "batch_size"),
    ("training", "total_epochs", "epochs"),
    ("training", "learning_rate", "lr"),
];

impl Config {
    /// Reads a local or `s3://` file; `.toml` is TOML, anything else JSON (then TOML).
    pub fn load(uri: &str) -> Result<Config> {
        let loc = Location::parse(uri)?;
        let bytes = super::read(&loc).with_context(|| format!("reading the config file {uri}"))?;
        let text = String::from_utf8(bytes).with_context(|| format!("{uri} is not UTF-8 text"))?;
        Config::parse(&text, uri)
    }

    pub fn parse(text: &str, source: &str) -> Result<Config> {
        let root: Value = if source.ends_with(".toml") {
            toml::from_str(text).with_context(|| format!("{source}: invalid TOML"))?
        } else {
            match serde_json::from_str(text) {
                Ok(v) => v,
                Err(json_err) => toml::from_str(text)
                    .map_err(|_| json_err)
                    .with_context(|| format!("{source}: neither valid JSON nor TOML"))?,
            }
        };
        let Value::Object(top) = root else {
            bail!("{source}: the config must be an object of flag names")
        };
        let mut values = BTreeMap::new();
        for (key, value) in &top {
            if matches!(key.as_str(), "data" | "s3" | "training") && value.is_object() {
                continue;
            }
            values.insert(key.replace('-', "_"), value.clone());
        }
        // `batch_config.json`'s layout; a flat key of the same flag, if both are present, wins.
        for (section, key, flag) in BATCH_CONFIG_KEYS {
            if let Some(v) = top.get(*section).and_then(|s| s.get(*key)) {
                if !v.is_null() {
                    values.entry(flag.to_string()).or_insert_with(|| v.clone());
                }
            }
        }
        if let Some(s3) = top.get("s3").filter(|v| v.is_object()) {
            if let Some(bucket) = s3.get("bucket_name").and_then(Value::as_str) {
                let prefix = s3
                    .get("prefix")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim_matches('/');
                let root = if prefix.is_empty() {
                    format!("s3://{bucket}")
                } else {
                    format!("s3://{bucket}/{prefix}")
                };
                values
                    .entry("output".to_string())
                    .or_insert(Value::String(root));
            }
        }
        Ok(Config {
            source: source.to_string(),
            values,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Flat keys that are none of `known` (typos, or flags of another command).
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<String> {
        self.values
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    fn get(&self, flag: &str) -> Option<&Value> {
        self.values.get(flag).filter(|v| !v.is_null())
    }

    fn bad(&self, flag: &str, want: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: `{flag}` must be {want}, found {}",
            self.source,
            self.values[flag]
        )
    }

    pub fn string(&self, flag: &str) -> Result<Option<String>> {
        match self.get(flag) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.bad(flag, "a string")),
        }
    }

    pub fn u64(&self, flag: &str) -> Result<Option<u64>> {
        match self.get(flag) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.bad(flag, "a non-negative integer")),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.bad(flag, "a non-negative integer")),
            Some(_) => Err(self.bad(flag, "a non-negative integer")),
        }
    }

    pub fn usize(&self, flag: &str) -> Result<Option<usize>> {
        Ok(self.u64(flag)?.map(|v| v as usize))
    }

    pub fn f64(&self, flag: &str) -> Result<Option<f64>> {
        match self.get(flag) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(flag, "a number")),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.bad(flag, "a number")),
            Some(_) => Err(self.bad(flag, "a number")),
        }
    }

    pub fn bool(&self, flag: &str) -> Result<Option<bool>> {
        match self.get(flag) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Some(true)),
                "false" | "0" | "no" | "off" => Ok(Some(false)),
                _ => Err(self.bad(flag, "true or false")),
            },
            Some(_) => Err(self.bad(flag, "true or false")),
        }
    }

    /// A list: a JSON/TOML array, or a comma-separated string (`batch_config.json`'s `"72089"`).
    pub fn strings(&self, flag: &str) -> Result<Vec<String>> {
        let scalar = |v: &Value| match v {
            Value::String(s) => Ok(s.trim().to_string()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(self.bad(flag, "a list of strings or numbers")),
        };
        match self.get(flag) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(scalar).collect(),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()),
            Some(v) => Ok(vec![scalar(v)?]),
        }
    }

    pub fn i64s(&self, flag: &str) -> Result<Vec<i64>> {
        self.strings(flag)?
            .iter()
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| self.bad(flag, "a list of integers"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pipeline_batch_config() {
        let text = r#"{
          "data": {
            "metadata_location": "s3://your-data-bucket/metadata/your-table.metadata.json",
            "feature_cols": ["trade_price", "trade_quantity", "bid_price", "ask_price"],
            "instrument_filter": "72089",
            "start_date": "2024-01-01",
            "end_date": "2024-01-31",
            "lookback_period": 128,
            "apply_undersampling": true
          },
          "s3": {"bucket_name": "your-s3-bucket-name", "prefix": "ml-pipeline", "region": "us-east-1"},
          "training": {"batch_size": 32, "total_epochs": 10, "learning_rate": 0.001}
        }"#;
        let c = Config::parse(text, "batch_config.json").unwrap();
        assert_eq!(
            c.string("input").unwrap().unwrap(),
            "s3://your-data-bucket/metadata/your-table.metadata.json"
        );
        assert_eq!(c.i64s("instrument").unwrap(), vec![72089]);
        assert_eq!(c.usize("lookback").unwrap(), Some(128));
        assert_eq!(c.bool("undersample").unwrap(), Some(true));
        assert_eq!(
            c.string("output").unwrap().unwrap(),
            "s3://your-s3-bucket-name/ml-pipeline"
        );
        assert_eq!(c.usize("batch_size").unwrap(), Some(32));
        assert_eq!(c.usize("epochs").unwrap(), Some(10));
        assert_eq!(c.f64("lr").unwrap(), Some(0.001));
        assert!(c
            .unknown_keys(&[
                "input",
                "output",
                "instrument",
                "start_date",
                "end_date",
                "lookback",
                "undersample",
                "batch_size",
                "epochs",
                "lr"
            ])
            .is_empty());
    }

    #[test]
    fn reads_flat_toml_with_dashes() {
        let c = Config::parse(
            "start-date = \"2024-01-02\"\ninstrument = [1, 2]\nthreshold_bps = 2\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(c.string("start_date").unwrap().unwrap(), "2024-01-02");
        assert_eq!(c.i64s("instrument").unwrap(), vec![1, 2]);
        assert_eq!(c.f64("threshold_bps").unwrap(), Some(2.0));
        assert!(c.usize("instrument").is_err());
    }
}
