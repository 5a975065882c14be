//! `training_summary.json` (docs/design.md, "Models and training summary"): one per dataset, one
//! entry per model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// Training windows per second of training-step time (validation excluded).
    pub samples_per_s: f64,
    /// Wall time of the epoch, validation included, summed over interrupted runs.
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSummary {
    pub epochs: Vec<EpochStats>,
    pub best_epoch: Option<usize>,
    pub best_val_loss: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// Rows: true class; columns: predicted class; over the test split's `sample` rows.
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
    pub test_samples: Option<u64>,
    pub parameters: usize,
    pub device: String,
    /// The best checkpoint's file name, beside this summary.
    pub checkpoint: String,
    pub plot: String,
    pub epochs_requested: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub lookback: usize,
}

impl ModelSummary {
    /// Holds at least `epochs` epochs and the test evaluation.
    pub fn is_complete(&self, epochs: usize) -> bool {
        self.epochs.len() >= epochs && self.test_accuracy.is_some()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub models: BTreeMap<String, ModelSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetInfo {
    pub datasets: String,
    pub instrument: String,
    pub start_date: String,
    pub end_date: String,
    pub lookback: usize,
    pub train_samples: usize,
    pub validation_samples: usize,
    pub test_samples: usize,
}

impl Summary {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Summary> {
        Ok(serde_json::from_slice(bytes)?)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a summary always serialises");
        out.push(b'\n');
        out
    }
}
