//! The resumable state of one model's training: one file, written atomically, holding the
//! progress (JSON) and the model and optimizer records (burn's named MessagePack).
//!
//! Layout: `RTCKPT1\n`, then three length-prefixed (u64 little-endian) blocks: state JSON,
//! model record, optimizer record. One file, so model, optimizer and position can never disagree.

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::summary::EpochStats;

const MAGIC: &[u8] = b"RTCKPT1\n";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub model: String,
    /// Epochs fully done (trained and validated).
    pub epochs_done: usize,
    /// Batches of epoch `epochs_done + 1` already trained; equal to the epoch's batch count when
    /// only its validation is left.
    pub batch: usize,
    pub partial: Partial,
    pub history: Vec<EpochStats>,
    pub best_epoch: Option<usize>,
    pub best_val_loss: Option<f64>,
    /// The RNG state: the epoch order is a pure function of (seed, epoch), see `data::epoch_order`.
    pub seed: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub lookback: usize,
}

/// Running sums of the epoch in progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Partial {
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
    pub train_seconds: f64,
    pub seconds: f64,
}

pub struct Checkpoint {
    pub state: State,
    pub model: Vec<u8>,
    pub optimizer: Vec<u8>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let state = serde_json::to_vec(&self.state).expect("a state always serialises");
        let mut out = Vec::with_capacity(
            MAGIC.len() + 24 + state.len() + self.model.len() + self.optimizer.len(),
        );
        out.extend_from_slice(MAGIC);
        for block in [&state, &self.model, &self.optimizer] {
            out.extend_from_slice(&(block.len() as u64).to_le_bytes());
            out.extend_from_slice(block);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint> {
        ensure!(bytes.starts_with(MAGIC), "not a runtime checkpoint");
        let mut rest = &bytes[MAGIC.len()..];
        let mut blocks = Vec::with_capacity(3);
        for _ in 0..3 {
            if rest.len() < 8 {
                bail!("truncated checkpoint");
            }
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            rest = &rest[8..];
            if rest.len() < len {
                bail!("truncated checkpoint");
            }
            blocks.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        let optimizer = blocks.pop().unwrap();
        let model = blocks.pop().unwrap();
        let state = serde_json::from_slice(&blocks.pop().unwrap()).context("checkpoint state")?;
        Ok(Checkpoint {
            state,
            model,
            optimizer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Checkpoint {
            state: State {
                model: "gru".into(),
                epochs_done: 2,
                batch: 7,
                partial: Partial {
                    loss_sum: 1.5,
                    correct: 3,
                    seen: 9,
                    train_seconds: 0.5,
                    seconds: 0.6,
                },
                history: vec![],
                best_epoch: Some(2),
                best_val_loss: Some(0.9),
                seed: 1,
                batch_size: 4,
                lr: 1e-3,
                lookback: 8,
            },
            model: vec![1, 2, 3],
            optimizer: vec![],
        };
        let d = Checkpoint::decode(&c.encode()).unwrap();
        assert_eq!(d.state, c.state);
        assert_eq!(d.model, c.model);
        assert!(d.optimizer.is_empty());
        assert!(Checkpoint::decode(&c.encode()[..20]).is_err());
    }
}
