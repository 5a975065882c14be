//! `relu(conv1d(x))` as one autodiff op on the CPU backend, the fused LSTM's input stage in
//! `cnn_lstm`: the taps of every step gathered once, one GEMM forward, one for the weight
//! gradient.

use std::any::TypeId;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use super::kernels::{gemm_rows, gemm_sum, slice, tensor};
use super::{cast, Ad};

/// `relu(conv1d(x))` with kernel `K`, stride 1 and padding `K / 2`, returned time-major: `x`
/// `[batch, steps, in]` (the model input), `weight` `[out, in, K]` (burn's `Conv1d` layout), `bias`
/// `[out]` → `[steps, batch, out]`, the fused LSTM's input. One GEMM over the gathered taps of
/// every step and row instead of burn's padding, narrowing and copying per tap, in both passes.
/// Only for backends where [`super::supported`] holds.
pub fn conv_relu_time_major<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 3>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 3> {
    if TypeId::of::<B>() == TypeId::of::<Ad>() {
        let (x, weight, bias): (Tensor<Ad, 3>, Tensor<Ad, 3>, Tensor<Ad, 1>) =
            (cast(x), cast(weight), cast(bias));
        let (x, weight, bias) = (
            x.into_primitive().tensor(),
            weight.into_primitive().tensor(),
            bias.into_primitive().tensor(),
        );
        let nodes = [x.node.clone(), weight.node.clone(), bias.node.clone()];
        let out = match ConvBackward
            .prepare::<NoCheckpointing>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, taps) = conv_forward(&x.primitive, &weight.primitive, &bias.primitive);
                let state = ConvState {
                    x_shape: x.primitive.layout().shape().to_vec(),
                    weight: weight.primitive,
                    taps: Arc::new(taps),
                    out: out.clone(),
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(conv_forward(&x.primitive, &weight.primitive, &bias.primitive).0)
            }
        };
        cast(Tensor::<Ad, 3>::from_primitive(TensorPrimitive::Float(out)))
    } else if TypeId::of::<B>() == TypeId::of::<Flex>() {
        let prim = |t: TensorPrimitive<Flex>| t.tensor();
        let (x, weight, bias): (Tensor<Flex, 3>, Tensor<Flex, 3>, Tensor<Flex, 1>) =
            (cast(x), cast(weight), cast(bias));
        let (out, _) = conv_forward(
            &prim(x.into_primitive()),
            &prim(weight.into_primitive()),
            &prim(bias.into_primitive()),
        );
        cast(Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(
            out,
        )))
    } else {
        panic!("fused convolution called on a backend it does not support; check `fused::supported` first")
    }
}

/// The taps matrix `[steps * batch, in * K]`, rows time-major, column `i * K + k` holding
/// `x[b, t + k - K/2, i]` (zero outside the window), and the activated output.
fn conv_forward(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> (FlexTensor, Vec<f32>) {
    let (xs, ws) = (x.layout().shape(), weight.layout().shape());
    let (batch, steps, input) = (xs[0], xs[1], xs[2]);
    let (out_ch, kernel) = (ws[0], ws[2]);
    let width = input * kernel;
    let (x, weight, bias) = (slice(x), slice(weight), slice(bias));
    let mut taps = vec![0.0f32; steps * batch * width];
    for (row, tap) in taps.chunks_exact_mut(width).enumerate() {
        let (t, b) = (row / batch, row % batch);
        for k in 0..kernel {
            let Some(src) = (t + k).checked_sub(kernel / 2).filter(|&s| s < steps) else {
                continue;
            };
            let from = &x[(b * steps + src) * input..][..input];
            for (i, v) in from.iter().enumerate() {
                tap[i * kernel + k] = *v;
            }
        }
    }
    let mut out = vec![0.0f32; steps * batch * out_ch];
    // weight [out, in*K] read as its transpose: element (r, c) at c * width + r.
    // SAFETY: `taps` holds rows × width values, `weight` out_ch × width and `out` rows × out_ch;
    // all three live through the call and `out` is a buffer of its own.
    unsafe {
        gemm_rows(
            (steps * batch, out_ch, width),
            out.as_mut_ptr(),
            (taps.as_ptr(), width, 1),
            (weight.as_ptr(), 1, width),
        )
    };
    for row in out.chunks_exact_mut(out_ch) {
        for (v, b) in row.iter_mut().zip(bias.iter()) {
            *v = (*v + b).max(0.0);
        }
    }
    (tensor(out, [steps, batch, out_ch]), taps)
}

#[derive(Clone, Debug)]
struct ConvState {
    x_shape: Vec<usize>,
    weight: FlexTensor,
    taps: Arc<Vec<f32>>,
    out: FlexTensor,
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [p_x, p_weight, p_bias] = ops.parents;
        let ConvState {
            x_shape,
            weight,
            taps,
            out,
        } = ops.state;
        let (batch, steps, input) = (x_shape[0], x_shape[1], x_shape[2]);
        let ws = weight.layout().shape();
        let (out_ch, kernel) = (ws[0], ws[2]);
        let (width, rows) = (input * kernel, steps * batch);
        // Through the relu: zero where the output was clamped.
        let mut d = slice(&grad).into_owned();
        for (g, o) in d.iter_mut().zip(slice(&out).iter()) {
            if *o <= 0.0 {
                *g = 0.0;
            }
        }
        if let Some(node) = p_bias {
            let mut db = vec![0.0f32; out_ch];
            for row in d.chunks_exact(out_ch) {
                for (s, v) in db.iter_mut().zip(row) {
                    *s += v;
                }
            }
            grads.register::<Flex>(node.id, tensor(db, [out_ch]));
        }
        if let Some(node) = p_weight {
            // dᵀ · taps is [out, in*K]: burn's weight layout already.
            // SAFETY: `d` holds rows × out_ch values and `taps` rows × width, both live here.
            let dw = unsafe {
                gemm_sum(
                    (out_ch, width, rows),
                    (d.as_ptr(), 1, out_ch),
                    (taps.as_ptr(), width, 1),
                )
            };
            grads.register::<Flex>(node.id, tensor(dw, [out_ch, input, kernel]));
        }
        if let Some(node) = p_x {
            // Gradient of the taps (d · W), then each tap added back to the input it was read from.
            let weight = slice(&weight);
            let mut d_taps = vec![0.0f32; rows * width];
            // SAFETY: `d` is rows × out_ch, `weight` out_ch × width, `d_taps` rows × width and a
            // buffer of its own; all live through the call.
            unsafe {
                gemm_rows(
                    (rows, width, out_ch),
                    d_taps.as_mut_ptr(),
                    (d.as_ptr(), out_ch, 1),
                    (weight.as_ptr(), width, 1),
                )
            };
            let mut dx = vec![0.0f32; batch * steps * input];
            for (row, tap) in d_taps.chunks_exact(width).enumerate() {
                let (t, b) = (row / batch, row % batch);
                for k in 0..kernel {
                    let Some(src) = (t + k).checked_sub(kernel / 2).filter(|&s| s < steps) else {
                        continue;
                    };
                    let to = &mut dx[(b * steps + src) * input..][..input];
                    for (i, v) in to.iter_mut().enumerate() {
                        *v += tap[i * kernel + k];
                    }
                }
            }
            grads.register::<Flex>(node.id, tensor(dx, [batch, steps, input]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::TensorData;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The fused convolution against burn's `conv1d` (NdArray), gradients of the input included.
    #[test]
    fn fused_conv_matches_burn_conv1d() {
        use burn::tensor::module::conv1d;
        use burn::tensor::ops::ConvOptions;
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (batch, steps, input, out_ch, kernel) = (3, 5, 4, 6, 3);
        let (x, w, b, g) = (
            uniform(batch * steps * input),
            uniform(out_ch * input * kernel),
            uniform(out_ch),
            uniform(steps * batch * out_ch),
        );
        fn run<B: AutodiffBackend>(
            fused: bool,
            x: &[f32],
            w: &[f32],
            b: &[f32],
            g: &[f32],
            dims: [usize; 5],
        ) -> Vec<Vec<f32>> {
            let [batch, steps, input, out_ch, kernel] = dims;
            let device = Default::default();
            let x = Tensor::<B, 3>::from_data(
                TensorData::new(x.to_vec(), [batch, steps, input]),
                &device,
            )
            .require_grad();
            let w = Tensor::<B, 3>::from_data(
                TensorData::new(w.to_vec(), [out_ch, input, kernel]),
                &device,
            )
            .require_grad();
            let b = Tensor::<B, 1>::from_data(TensorData::new(b.to_vec(), [out_ch]), &device)
                .require_grad();
            let y = if fused {
                conv_relu_time_major(x.clone(), w.clone(), b.clone())
            } else {
                let y = conv1d(
                    x.clone().swap_dims(1, 2),
                    w.clone(),
                    Some(b.clone()),
                    ConvOptions::new([1], [1], [1], 1),
                );
                burn::tensor::activation::relu(y).permute([2, 0, 1]) // [batch, out, steps] → [steps, batch, out]
            };
            let weights = Tensor::<B, 3>::from_data(
                TensorData::new(g.to_vec(), [steps, batch, out_ch]),
                &device,
            );
            let grads = (y.clone() * weights).sum().backward();
            let v = |t: Tensor<B::InnerBackend, 3>| t.into_data().to_vec::<f32>().unwrap();
            vec![
                y.into_data().to_vec::<f32>().unwrap(),
                v(x.grad(&grads).unwrap()),
                v(w.grad(&grads).unwrap()),
                b.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(),
            ]
        }
        let dims = [batch, steps, input, out_ch, kernel];
        let ours = run::<Ad>(true, &x, &w, &b, &g, dims);
        let reference = run::<Autodiff<NdArray>>(false, &x, &w, &b, &g, dims);
        for (i, (a, r)) in ours.iter().zip(&reference).enumerate() {
            assert_eq!(a.len(), r.len(), "output {i}");
            assert!(
                a.iter()
                    .zip(r)
                    .all(|(x, y)| (x - y).abs() <= 1e-5 + 1e-4 * y.abs()),
                "output {i}: {a:?} vs {r:?}"
            );
        }
    }
}
