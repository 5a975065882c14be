//! The outputs two implementations of a model must agree on: logits and every parameter
//! gradient for one seeded batch of random windows. The fused-op unit tests and
//! `bench_train --check` (the GPU kernels, where no unit test runs) compare them.

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::model::{Model, ModelKind, N_CLASSES, N_FEATURES};

/// `[batch, lookback, 8]` values in [-1, 1) and `[batch, 3]` loss weights, the same for every
/// backend.
fn inputs(lookback: usize, batch: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let x = (0..batch * lookback * N_FEATURES)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let w = (0..batch * N_CLASSES)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    (x, w)
}

/// The logits of `kind` (seed 5) and the gradient of every parameter of `Σ logits ⊙ w`, flattened
/// in module order.
pub fn logits_and_grads<B: AutodiffBackend>(
    kind: ModelKind,
    lookback: usize,
    batch: usize,
    device: &B::Device,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    struct Collect<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        out: &'a mut Vec<Vec<f32>>,
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Collect<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            let grad = param
                .val()
                .grad(self.grads)
                .expect("every parameter gets a gradient");
            self.out.push(grad.into_data().to_vec().unwrap());
        }
    }
    let (x, w) = inputs(lookback, batch);
    let model: Model<B> = kind.init(5, device);
    let logits = model.forward(Tensor::from_data(
        TensorData::new(x, [batch, lookback, N_FEATURES]),
        device,
    ));
    let grads = (logits.clone()
        * Tensor::from_data(TensorData::new(w, [batch, N_CLASSES]), device))
    .sum()
    .backward();
    let mut out = Vec::new();
    model.visit(&mut Collect::<B> {
        grads: &grads,
        out: &mut out,
    });
    (logits.into_data().to_vec().unwrap(), out)
}

/// The same model's logits on the same batch without autodiff (evaluation's path).
pub fn eval_logits<B: AutodiffBackend>(
    kind: ModelKind,
    lookback: usize,
    batch: usize,
    device: &B::Device,
) -> Vec<f32> {
    let (x, _) = inputs(lookback, batch);
    let model: Model<B::InnerBackend> = kind.init(5, device);
    model
        .forward(Tensor::from_data(
            TensorData::new(x, [batch, lookback, N_FEATURES]),
            device,
        ))
        .into_data()
        .to_vec()
        .unwrap()
}
