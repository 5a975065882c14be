//! The three models of docs/design.md ("Models and training summary"), written on burn's tensor API
//! with fused gate weights.
//!
//! Why not `burn::nn::Lstm`: it runs eight small matmuls per step and assembles the whole output
//! sequence with `slice_assign`, whose backward allocates a zero tensor of the full sequence at
//! every step; only the last state is needed here. These cells do one input and one recurrent
//! matmul per step into a `[batch, 4H]` (LSTM) or `[batch, 3H]` (GRU) gate buffer, and read each
//! step's input straight from the (untracked) data tensor, so no backward pass ever has to
//! scatter a per-step slice back into a sequence-sized gradient. The convolution of `cnn_lstm`
//! is computed per step as the equivalent linear map of the three taps `x[t-1], x[t], x[t+1]`
//! (zero outside the window, as `padding = 1` does), with burn's `Conv1d` weight layout
//! `[out, in, kernel]`, for the same reason.
//!
//! Initialisation matches PyTorch's defaults (uniform ±1/√fan), drawn from a ChaCha stream so a
//! seed gives the same weights on every backend.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, Param};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The model inputs, in this order (docs/design.md, "Features").
pub const FEATURES: [&str; 8] = [
    "ret_1",
    "spread",
    "obi",
    "ofi",
    "signed_volume",
    "ofi_sum",
    "tfi",
    "vol",
];
pub const N_FEATURES: usize = FEATURES.len();
pub const N_CLASSES: usize = 3;
pub const HIDDEN: usize = 64;
pub const CONV_CHANNELS: usize = 32;
pub const CONV_KERNEL: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelKind {
    CnnLstm,
    Lstm,
    Gru,
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [ModelKind::CnnLstm, ModelKind::Lstm, ModelKind::Gru];

    /// The name used in the summary, the plot and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::CnnLstm => "cnn_lstm",
            ModelKind::Lstm => "lstm",
            ModelKind::Gru => "gru",
        }
    }

    /// The spelling of the order-flow pipeline's `batch_train.py` (`CNN_LSTM_best.pt`), kept for
    /// the best-checkpoint file name.
    pub fn upper(self) -> &'static str {
        match self {
            ModelKind::CnnLstm => "CNN_LSTM",
            ModelKind::Lstm => "LSTM",
            ModelKind::Gru => "GRU",
        }
    }

    pub fn init<B: Backend>(self, seed: u64, device: &B::Device) -> Model<B> {
        // One stream per model kind, so `--models lstm` gets the same lstm as `--models cnn_lstm,lstm`.
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (self as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut init = Init {
            rng: &mut rng,
            device,
        };
        match self {
            ModelKind::CnnLstm => Model {
                conv: Some(ConvTaps::new(&mut init, N_FEATURES, CONV_CHANNELS)),
                lstm: Some(LstmCell::new(&mut init, CONV_CHANNELS, HIDDEN)),
                gru: None,
                head: Dense::new(&mut init, HIDDEN, N_CLASSES),
            },
            ModelKind::Lstm => Model {
                conv: None,
                lstm: Some(LstmCell::new(&mut init, N_FEATURES, HIDDEN)),
                gru: None,
                head: Dense::new(&mut init, HIDDEN, N_CLASSES),
            },
            ModelKind::Gru => Model {
                conv: None,
                lstm: None,
                gru: Some(GruCell::new(&mut init, N_FEATURES, HIDDEN)),
                head: Dense::new(&mut init, HIDDEN, N_CLASSES),
            },
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "cnn_lstm" => Ok(ModelKind::CnnLstm),
            "lstm" => Ok(ModelKind::Lstm),
            "gru" => Ok(ModelKind::Gru),
            _ => Err(format!(
                "unknown model {s:?}: expected cnn_lstm, lstm or gru"
            )),
        }
    }
}

struct Init<'a, B: Backend> {
    rng: &'a mut ChaCha8Rng,
    device: &'a B::Device,
}

impl<B: Backend> Init<'_, B> {
    fn uniform<const D: usize>(&mut self, shape: [usize; D], bound: f32) -> Param<Tensor<B, D>> {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| self.rng.random_range(-bound..bound))
            .collect();
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            self.device,
        ))
    }
}

/// `Conv1d(in → out, kernel 3, padding 1)` applied one time step at a time.
#[derive(Module, Debug)]
pub struct ConvTaps<B: Backend> {
    /// burn's `Conv1d` layout: `[out, in, kernel]`.
    pub weight: Param<Tensor<B, 3>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> ConvTaps<B> {
    fn new(init: &mut Init<'_, B>, d_in: usize, d_out: usize) -> Self {
        let bound = 1.0 / ((d_in * CONV_KERNEL) as f32).sqrt();
        Self {
            weight: init.uniform([d_out, d_in, CONV_KERNEL], bound),
            bias: init.uniform([d_out], bound),
        }
    }

    /// `[in * kernel, out]`, rows in the order `i * kernel + k`, to multiply the stacked taps.
    fn matrix(&self) -> Tensor<B, 2> {
        let [d_out, d_in, k] = self.weight.dims();
        self.weight.val().reshape([d_out, d_in * k]).transpose()
    }

    /// `relu(conv1d(x))` over the whole sequence at once, time-major: `x` `[batch, steps, in]` →
    /// `[steps, batch, out]`, the fused LSTM's input. The taps of every step and row are gathered
    /// side by side (column `k * in + i`), in burn's tensor API (the CUDA path).
    #[cfg(feature = "cuda")]
    fn relu_time_major(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, steps, d_in] = x.dims();
        let [d_out, _, k] = self.weight.dims();
        let pad = Tensor::<B, 3>::zeros([k / 2, batch, d_in], &x.device());
        let padded = Tensor::cat(vec![pad.clone(), x.swap_dims(0, 1), pad], 0);
        let taps = Tensor::cat(
            (0..k)
                .map(|tap| padded.clone().narrow(0, tap, steps))
                .collect(),
            2,
        );
        let w = self
            .weight
            .val()
            .permute([2, 1, 0])
            .reshape([1, k * d_in, d_out]);
        // A product per step, batched (the weight broadcast over the steps), not one over all
        // `steps * batch` rows: the weight gradient is then summed per step, which burn's CUDA
        // matmul spreads over the GPU, instead of one reduction 32k rows long.
        relu(taps.matmul(w) + self.bias.val().reshape([1, 1, d_out]))
    }
}

/// One LSTM layer, PyTorch's gate order `i, f, g, o`; only the last hidden state is kept.
#[derive(Module, Debug)]
pub struct LstmCell<B: Backend> {
    pub w_ih: Param<Tensor<B, 2>>,
    pub w_hh: Param<Tensor<B, 2>>,
    pub b_ih: Param<Tensor<B, 1>>,
    pub b_hh: Param<Tensor<B, 1>>,
}

impl<B: Backend> LstmCell<B> {
    fn new(init: &mut Init<'_, B>, d_in: usize, hidden: usize) -> Self {
        let bound = 1.0 / (hidden as f32).sqrt();
        Self {
            w_ih: init.uniform([d_in, 4 * hidden], bound),
            w_hh: init.uniform([hidden, 4 * hidden], bound),
            b_ih: init.uniform([4 * hidden], bound),
            b_hh: init.uniform([4 * hidden], bound),
        }
    }
}

/// One GRU layer, PyTorch's formulation (`r, z, n`; `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`).
#[derive(Module, Debug)]
pub struct GruCell<B: Backend> {
    pub w_ih: Param<Tensor<B, 2>>,
    pub w_hh: Param<Tensor<B, 2>>,
    pub b_ih: Param<Tensor<B, 1>>,
    pub b_hh: Param<Tensor<B, 1>>,
}

impl<B: Backend> GruCell<B> {
    fn new(init: &mut Init<'_, B>, d_in: usize, hidden: usize) -> Self {
        let bound = 1.0 / (hidden as f32).sqrt();
        Self {
            w_ih: init.uniform([d_in, 3 * hidden], bound),
            w_hh: init.uniform([hidden, 3 * hidden], bound),
            b_ih: init.uniform([3 * hidden], bound),
            b_hh: init.uniform([3 * hidden], bound),
        }
    }
}

#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Dense<B> {
    fn new(init: &mut Init<'_, B>, d_in: usize, d_out: usize) -> Self {
        let bound = 1.0 / (d_in as f32).sqrt();
        Self {
            weight: init.uniform([d_in, d_out], bound),
            bias: init.uniform([d_out], bound),
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight.val()) + self.bias.val().unsqueeze()
    }
}

/// Any of the three models; which one is given by the layers present.
#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    pub conv: Option<ConvTaps<B>>,
    pub lstm: Option<LstmCell<B>>,
    pub gru: Option<GruCell<B>>,
    pub head: Dense<B>,
}

impl<B: Backend> Model<B> {
    /// `x`: `[batch, lookback, 8]` → logits `[batch, 3]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        if let (Some(cell), true) = (&self.lstm, super::fused::supported::<B>()) {
            let bias = cell.b_ih.val() + cell.b_hh.val();
            let input = match &self.conv {
                Some(conv) => {
                    super::fused::conv_relu_time_major(x, conv.weight.val(), conv.bias.val())
                }
                None => x.swap_dims(0, 1),
            };
            let last = super::fused::lstm_last(input, cell.w_ih.val(), cell.w_hh.val(), bias);
            return self.head.forward(last);
        }
        if let (Some(cell), true) = (&self.gru, super::fused::supported::<B>()) {
            let x = x.swap_dims(0, 1);
            let last = super::fused_gru::gru_last(
                x,
                cell.w_ih.val(),
                cell.w_hh.val(),
                cell.b_ih.val(),
                cell.b_hh.val(),
            );
            return self.head.forward(last);
        }
        #[cfg(feature = "cuda")]
        if let (Some(cell), true) = (&self.lstm, super::fused_cuda::supported::<B>()) {
            let bias = cell.b_ih.val() + cell.b_hh.val();
            let input = match &self.conv {
                Some(conv) => conv.relu_time_major(x),
                None => x.swap_dims(0, 1),
            };
            let last = super::fused_cuda::lstm_last(input, cell.w_ih.val(), cell.w_hh.val(), bias);
            return self.head.forward(last);
        }
        let [batch, steps, features] = x.dims();
        // Time-major once, so each step's input is a contiguous leading-dimension slice.
        let x = x.swap_dims(0, 1);
        let step_input: Box<dyn Fn(usize) -> Tensor<B, 2> + '_> = match &self.conv {
            Some(conv) => {
                let w = conv.matrix();
                let b = conv.bias.val().unsqueeze::<2>();
                let zeros = Tensor::<B, 3>::zeros([1, batch, features], &x.device());
                let padded = Tensor::cat(vec![zeros.clone(), x, zeros], 0);
                Box::new(move |t| {
                    // taps [3, batch, in] → [batch, in, 3] → [batch, in * 3] (row i * 3 + k)
                    let taps = padded
                        .clone()
                        .narrow(0, t, CONV_KERNEL)
                        .permute([1, 2, 0])
                        .reshape([batch, features * CONV_KERNEL]);
                    relu(taps.matmul(w.clone()) + b.clone())
                })
            }
            None => Box::new(move |t| x.clone().narrow(0, t, 1).reshape([batch, features])),
        };
        let last = if let Some(cell) = &self.lstm {
            lstm_last(cell, steps, batch, &*step_input)
        } else if let Some(cell) = &self.gru {
            gru_last(cell, steps, batch, &*step_input)
        } else {
            unreachable!("every ModelKind builds a recurrent layer")
        };
        self.head.forward(last)
    }

    pub fn kind(&self) -> ModelKind {
        match (&self.conv, &self.lstm) {
            (Some(_), _) => ModelKind::CnnLstm,
            (None, Some(_)) => ModelKind::Lstm,
            (None, None) => ModelKind::Gru,
        }
    }
}

fn lstm_last<B: Backend>(
    cell: &LstmCell<B>,
    steps: usize,
    batch: usize,
    input: &dyn Fn(usize) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [_, gates] = cell.w_hh.dims();
    let hidden = gates / 4;
    let device = cell.w_hh.device();
    let w_ih = cell.w_ih.val();
    let w_hh = cell.w_hh.val();
    let bias = (cell.b_ih.val() + cell.b_hh.val()).unsqueeze::<2>();
    let mut h = Tensor::<B, 2>::zeros([batch, hidden], &device);
    let mut c = Tensor::<B, 2>::zeros([batch, hidden], &device);
    for t in 0..steps {
        let g = input(t).matmul(w_ih.clone()) + h.matmul(w_hh.clone()) + bias.clone();
        // i, f, g, o: the three sigmoid gates in one call on the columns they occupy.
        let i = sigmoid(g.clone().narrow(1, 0, hidden));
        let f = sigmoid(g.clone().narrow(1, hidden, hidden));
        let cand = g.clone().narrow(1, 2 * hidden, hidden).tanh();
        let o = sigmoid(g.narrow(1, 3 * hidden, hidden));
        c = f * c + i * cand;
        h = o * c.clone().tanh();
    }
    h
}

fn gru_last<B: Backend>(
    cell: &GruCell<B>,
    steps: usize,
    batch: usize,
    input: &dyn Fn(usize) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [_, gates] = cell.w_hh.dims();
    let hidden = gates / 3;
    let device = cell.w_hh.device();
    let w_ih = cell.w_ih.val();
    let w_hh = cell.w_hh.val();
    let b_ih = cell.b_ih.val().unsqueeze::<2>();
    let b_hh = cell.b_hh.val().unsqueeze::<2>();
    let mut h = Tensor::<B, 2>::zeros([batch, hidden], &device);
    for t in 0..steps {
        let gi = input(t).matmul(w_ih.clone()) + b_ih.clone();
        let gh = h.clone().matmul(w_hh.clone()) + b_hh.clone();
        let rz = sigmoid(gi.clone().narrow(1, 0, 2 * hidden) + gh.clone().narrow(1, 0, 2 * hidden));
        let r = rz.clone().narrow(1, 0, hidden);
        let z = rz.narrow(1, hidden, hidden);
        let n = (gi.narrow(1, 2 * hidden, hidden) + r * gh.narrow(1, 2 * hidden, hidden)).tanh();
        h = n.clone() + z * (h - n);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn parameter_counts_match_pytorch() {
        let device = Default::default();
        // torch: Conv1d(8,32,3) 800 + LSTM(32,64) 25088 + Linear(64,3) 195
        assert_eq!(
            ModelKind::CnnLstm.init::<Flex>(1, &device).num_params(),
            800 + 25_088 + 195
        );
        assert_eq!(
            ModelKind::Lstm.init::<Flex>(1, &device).num_params(),
            18_944 + 195
        );
        assert_eq!(
            ModelKind::Gru.init::<Flex>(1, &device).num_params(),
            14_208 + 195
        );
    }

    #[test]
    fn conv_taps_equal_burn_conv1d() {
        use burn::tensor::module::conv1d;
        use burn::tensor::ops::ConvOptions;
        let device = Default::default();
        let model = ModelKind::CnnLstm.init::<Flex>(7, &device);
        let conv = model.conv.as_ref().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (batch, steps) = (2, 5);
        let values: Vec<f32> = (0..batch * steps * N_FEATURES)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let x = Tensor::<Flex, 3>::from_data(
            TensorData::new(values, [batch, steps, N_FEATURES]),
            &device,
        );
        // reference: burn's conv1d on [batch, channels, length]
        let reference = conv1d(
            x.clone().swap_dims(1, 2),
            conv.weight.val(),
            Some(conv.bias.val()),
            ConvOptions::new([1], [1], [1], 1),
        )
        .swap_dims(1, 2); // [batch, steps, out]
        let w = conv.matrix();
        let zeros = Tensor::<Flex, 3>::zeros([1, batch, N_FEATURES], &device);
        let padded = Tensor::cat(vec![zeros.clone(), x.swap_dims(0, 1), zeros], 0);
        for t in 0..steps {
            let taps = padded
                .clone()
                .narrow(0, t, 3)
                .permute([1, 2, 0])
                .reshape([batch, N_FEATURES * 3]);
            let ours = taps.matmul(w.clone()) + conv.bias.val().unsqueeze::<2>();
            let theirs = reference
                .clone()
                .narrow(1, t, 1)
                .reshape([batch, CONV_CHANNELS]);
            let diff: f32 = (ours - theirs).abs().max().into_scalar();
            assert!(diff < 1e-5, "step {t}: {diff}");
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("CNN_LSTM".parse::<ModelKind>().unwrap(), ModelKind::CnnLstm);
        assert_eq!("gru".parse::<ModelKind>().unwrap(), ModelKind::Gru);
        assert!("rnn".parse::<ModelKind>().is_err());
    }
}
