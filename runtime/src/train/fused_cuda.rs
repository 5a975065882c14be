//! The whole-sequence LSTM on the CUDA backend: one kernel launch walks all time steps forward,
//! one walks them backward, with burn's own GEMMs around them.
//!
//! Why: on burn's tensor API each LSTM time step is a dozen tiny kernels forward and more
//! backward, 128 steps deep, so a training step is bound by launch latency and host-side graph
//! bookkeeping (cuDNN, which PyTorch uses, runs the sequence as one persistent kernel). Here:
//! - the input projection of all steps is one GEMM (`x · W_ih + b`);
//! - [`lstm_forward_kernel`] runs the recurrence, one cube per batch row and one unit per gate,
//!   the hidden state in shared memory, and saves the activated gates, cells and hidden states;
//! - [`lstm_backward_kernel`] walks the steps in reverse and writes the gate pre-activation
//!   gradients of every step;
//! - the input gradient follows as one GEMM, the weight and bias gradients as products per step,
//!   batched, summed over the steps.
//!
//! The same math and layouts as the CPU op in `fused/mod.rs` (PyTorch gate order `i, f, g, o`, zero
//! initial state, time-major input); [`supported`] says which backends take this path.

use std::any::TypeId;

use super::fused::cast;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Cuda};
use burn::tensor::{DType, Shape, Tensor, TensorMetadata, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::{CubeCount, CubeDim};

use kernels::{lstm_backward_kernel, lstm_forward_kernel};

type Inner = Cuda;
type Ad = Autodiff<Inner>;
type Prim = CubeTensor<CudaRuntime>;

/// A cube holds one thread per gate unit, so `4 * hidden` must fit one cube.
const MAX_CUBE_THREADS: usize = 1024;

/// Whether [`lstm_last`] runs the fused kernels for this backend.
pub fn supported<B: burn::tensor::backend::Backend>() -> bool {
    let id = TypeId::of::<B>();
    (id == TypeId::of::<Ad>() || id == TypeId::of::<Inner>()) && !super::fused::disabled()
}

/// The last hidden state of an LSTM over `x`: `[steps, batch, in]` (time-major); `w_ih`:
/// `[in, 4H]`, `w_hh`: `[H, 4H]`, `bias`: `[4H]` (`b_ih + b_hh`). Only where [`supported`] holds.
pub fn lstm_last<B: burn::tensor::backend::Backend>(
    x: Tensor<B, 3>,
    w_ih: Tensor<B, 2>,
    w_hh: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 2> {
    if TypeId::of::<B>() == TypeId::of::<Ad>() {
        cast(lstm_autodiff(cast(x), cast(w_ih), cast(w_hh), cast(bias)))
    } else if TypeId::of::<B>() == TypeId::of::<Inner>() {
        let prim = |t: TensorPrimitive<Inner>| t.tensor();
        let (x, w_ih, w_hh, bias): (
            Tensor<Inner, 3>,
            Tensor<Inner, 2>,
            Tensor<Inner, 2>,
            Tensor<Inner, 1>,
        ) = (cast(x), cast(w_ih), cast(w_hh), cast(bias));
        let (h, _) = forward(
            prim(x.into_primitive()),
            prim(w_ih.into_primitive()),
            prim(w_hh.into_primitive()),
            prim(bias.into_primitive()),
        );
        cast(float::<2>(h))
    } else {
        panic!("CUDA LSTM called on a backend it does not support; check `fused_cuda::supported` first")
    }
}

fn float<const D: usize>(p: Prim) -> Tensor<Inner, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn prim<const D: usize>(t: Tensor<Inner, D>) -> Prim {
    t.into_primitive().tensor()
}

fn lstm_autodiff(
    x: Tensor<Ad, 3>,
    w_ih: Tensor<Ad, 2>,
    w_hh: Tensor<Ad, 2>,
    bias: Tensor<Ad, 1>,
) -> Tensor<Ad, 2> {
    let x = x.into_primitive().tensor();
    let w_ih = w_ih.into_primitive().tensor();
    let w_hh = w_hh.into_primitive().tensor();
    let bias = bias.into_primitive().tensor();
    let nodes = [
        x.node.clone(),
        w_ih.node.clone(),
        w_hh.node.clone(),
        bias.node.clone(),
    ];
    let out = match LstmBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (h, saved) = forward(
                x.primitive.clone(),
                w_ih.primitive.clone(),
                w_hh.primitive.clone(),
                bias.primitive,
            );
            prep.finish(
                LstmState {
                    x: x.primitive,
                    w_ih: w_ih.primitive,
                    w_hh: w_hh.primitive,
                    saved,
                },
                h,
            )
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(x.primitive, w_ih.primitive, w_hh.primitive, bias.primitive).0)
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// What the backward pass needs from the forward one, flat and time-major.
#[derive(Clone, Debug)]
struct Saved {
    steps: usize,
    batch: usize,
    hidden: usize,
    /// Activated gates `[steps * batch, 4H]`: `σ(i), σ(f), tanh(g), σ(o)`.
    gates: Prim,
    /// Cell states `[steps * batch, H]`.
    cells: Prim,
    /// Hidden states `[steps * batch, H]`.
    hiddens: Prim,
}

#[derive(Clone, Debug)]
struct LstmState {
    x: Prim,
    w_ih: Prim,
    w_hh: Prim,
    saved: Saved,
}

/// A fresh contiguous f32 buffer (the kernels index their tensors as flat arrays).
fn empty(like: &Prim, shape: [usize; 2]) -> Prim {
    let bytes = shape[0] * shape[1] * std::mem::size_of::<f32>();
    let handle = like.client.empty(bytes);
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::new(shape),
        handle,
        DType::F32,
    )
}

/// The last hidden state `[batch, H]` and the saved activations.
fn forward(x: Prim, w_ih: Prim, w_hh: Prim, bias: Prim) -> (Prim, Saved) {
    let [steps, batch, input] = x.shape().dims::<3>();
    let gates_width = w_ih.shape().dims::<2>()[1];
    let hidden = gates_width / 4;
    assert!(
        gates_width <= MAX_CUBE_THREADS,
        "fused CUDA LSTM: 4 x hidden = {gates_width} exceeds a cube"
    );
    // All steps' input projections at once: [steps * batch, 4H].
    let projected = float::<3>(x)
        .reshape([steps * batch, input])
        .matmul(float::<2>(w_ih))
        + float::<1>(bias).unsqueeze::<2>();
    let projected = into_contiguous(prim(projected));
    let w_hh = into_contiguous(w_hh);
    let gates = empty(&projected, [steps * batch, gates_width]);
    let cells = empty(&projected, [steps * batch, hidden]);
    let hiddens = empty(&projected, [steps * batch, hidden]);
    let client = projected.client.clone();
    lstm_forward_kernel::launch::<f32, CudaRuntime>(
        &client,
        CubeCount::Static(batch as u32, 1, 1),
        CubeDim::new_1d(gates_width as u32),
        projected.into_tensor_arg(),
        w_hh.into_tensor_arg(),
        gates.clone().into_tensor_arg(),
        cells.clone().into_tensor_arg(),
        hiddens.clone().into_tensor_arg(),
        hidden,
    );
    let last = prim(float::<2>(hiddens.clone()).narrow(0, (steps - 1) * batch, batch));
    (
        last,
        Saved {
            steps,
            batch,
            hidden,
            gates,
            cells,
            hiddens,
        },
    )
}

#[derive(Debug)]
struct LstmBackward;

impl Backward<Inner, 4> for LstmBackward {
    type State = LstmState;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad_h = into_contiguous(grads.consume::<Inner>(&ops.node));
        let [p_x, p_w_ih, p_w_hh, p_bias] = ops.parents;
        let LstmState {
            x,
            w_ih,
            w_hh,
            saved,
        } = ops.state;
        let Saved {
            steps,
            batch,
            hidden,
            gates,
            cells,
            hiddens,
        } = saved;
        let gates_width = 4 * hidden;
        let input = x.shape().dims::<3>()[2];

        // Walking back reads W_hh by rows of 4H; transposed, the threads of a cube read adjacent
        // addresses.
        let w_hh_t = into_contiguous(prim(float::<2>(w_hh).transpose()));
        let d_gates = empty(&gates, [steps * batch, gates_width]);
        let client = gates.client.clone();
        lstm_backward_kernel::launch::<f32, CudaRuntime>(
            &client,
            CubeCount::Static(batch as u32, 1, 1),
            CubeDim::new_1d(hidden as u32),
            grad_h.into_tensor_arg(),
            gates.into_tensor_arg(),
            cells.into_tensor_arg(),
            w_hh_t.into_tensor_arg(),
            d_gates.clone().into_tensor_arg(),
            hidden,
        );
        // The weight and bias gradients sum over all steps and rows. As one GEMM each, their
        // reduction dimension would be steps × batch (32k) long for an output of a few thousand
        // values, which burn's default CUDA matmul runs on a handful of cores; as a product per
        // time step, batched, then a sum over the steps, every core has work.
        let d_gates = float::<2>(d_gates).reshape([steps, batch, gates_width]);

        if let Some(node) = p_bias {
            let db = d_gates.clone().sum_dim(1).sum_dim(0).reshape([gates_width]);
            grads.register::<Inner>(node.id, prim(db));
        }
        if let Some(node) = p_w_hh {
            // Σ_t h_{t-1}ᵀ d_t with h_{-1} = 0: hiddens[0 .. T-1]ᵀ · d_gates[1 .. T].
            let dw = if steps > 1 {
                let previous =
                    float::<2>(hiddens)
                        .reshape([steps, batch, hidden])
                        .narrow(0, 0, steps - 1);
                let per_step =
                    previous
                        .swap_dims(1, 2)
                        .matmul(d_gates.clone().narrow(0, 1, steps - 1));
                per_step.sum_dim(0).reshape([hidden, gates_width])
            } else {
                Tensor::zeros([hidden, gates_width], &d_gates.device())
            };
            grads.register::<Inner>(node.id, prim(dw));
        }
        if let Some(node) = p_w_ih {
            let per_step = float::<3>(x).swap_dims(1, 2).matmul(d_gates.clone());
            grads.register::<Inner>(
                node.id,
                prim(per_step.sum_dim(0).reshape([input, gates_width])),
            );
        }
        if let Some(node) = p_x {
            let rows = d_gates.reshape([steps * batch, gates_width]);
            let dx = rows
                .matmul(float::<2>(w_ih).transpose())
                .reshape([steps, batch, input]);
            grads.register::<Inner>(node.id, prim(dx));
        }
    }
}

/// The kernels, in CubeCL (its `Tensor` is a kernel argument, not burn's).
mod kernels {
    use cubecl::prelude::*;

    #[cube]
    fn sigmoid<F: Float>(x: F) -> F {
        F::new(1.0) / (F::new(1.0) + F::exp(F::new(0.0) - x))
    }

    /// One cube per batch row, one thread per gate unit (`4 * hidden` threads). Each step: every
    /// thread forms its gate's pre-activation from the projected input and `h_{t-1} · W_hh[:, j]`
    /// (the hidden state is in shared memory, and adjacent threads read adjacent weights), activates
    /// it; then the first `hidden` threads update their cell (kept in a register) and hidden unit.
    #[cube(launch)]
    pub fn lstm_forward_kernel<F: Float>(
        projected: &Tensor<F>,
        w_hh: &Tensor<F>,
        gates: &mut Tensor<F>,
        cells: &mut Tensor<F>,
        hiddens: &mut Tensor<F>,
        #[comptime] hidden: usize,
    ) {
        let row = CUBE_POS_X as usize;
        let batch = CUBE_COUNT_X as usize;
        let j = UNIT_POS_X as usize;
        let width = 4 * hidden;
        let steps = projected.shape(0) / batch;
        let mut h = SharedMemory::<F>::new(hidden);
        let mut act = SharedMemory::<F>::new(4 * hidden);
        let mut c = F::new(0.0);
        if j < hidden {
            h[j] = F::new(0.0);
        }
        sync_cube();
        for t in 0..steps {
            let at = (t * batch + row) * width;
            let mut sum = projected[at + j];
            for k in 0..hidden {
                sum += h[k] * w_hh[k * width + j];
            }
            let a = if j >= 2 * hidden && j < 3 * hidden {
                F::tanh(sum)
            } else {
                sigmoid::<F>(sum)
            };
            act[j] = a;
            gates[at + j] = a;
            sync_cube();
            if j < hidden {
                c = act[hidden + j] * c + act[j] * act[2 * hidden + j];
                let out = act[3 * hidden + j] * F::tanh(c);
                h[j] = out;
                let at_h = (t * batch + row) * hidden + j;
                cells[at_h] = c;
                hiddens[at_h] = out;
            }
            sync_cube();
        }
    }

    /// One cube per batch row, one thread per hidden unit. Walking back from the last step, each
    /// thread turns `dh_t` and the carried `dc` into its four gate pre-activation gradients, shares
    /// them, and forms `dh_{t-1} = d_t · W_hhᵀ` for its unit from the transposed weights.
    #[cube(launch)]
    pub fn lstm_backward_kernel<F: Float>(
        grad_h: &Tensor<F>,
        gates: &Tensor<F>,
        cells: &Tensor<F>,
        w_hh_t: &Tensor<F>,
        d_gates: &mut Tensor<F>,
        #[comptime] hidden: usize,
    ) {
        let row = CUBE_POS_X as usize;
        let batch = CUBE_COUNT_X as usize;
        let j = UNIT_POS_X as usize;
        let width = 4 * hidden;
        let steps = gates.shape(0) / batch;
        let one = F::new(1.0);
        let mut d = SharedMemory::<F>::new(4 * hidden);
        let mut dh = grad_h[row * hidden + j];
        let mut dc = F::new(0.0);
        for back in 0..steps {
            let t = steps - 1 - back;
            let at = (t * batch + row) * width;
            let at_h = (t * batch + row) * hidden + j;
            let i = gates[at + j];
            let f = gates[at + hidden + j];
            let g = gates[at + 2 * hidden + j];
            let o = gates[at + 3 * hidden + j];
            let tc = F::tanh(cells[at_h]);
            let mut c_prev = F::new(0.0);
            if t > 0 {
                c_prev = cells[at_h - batch * hidden];
            }
            dc += dh * o * (one - tc * tc);
            let di = dc * g * i * (one - i);
            let df = dc * c_prev * f * (one - f);
            let dg = dc * i * (one - g * g);
            let d_o = dh * tc * o * (one - o);
            dc *= f;
            d[j] = di;
            d[hidden + j] = df;
            d[2 * hidden + j] = dg;
            d[3 * hidden + j] = d_o;
            d_gates[at + j] = di;
            d_gates[at + hidden + j] = df;
            d_gates[at + 2 * hidden + j] = dg;
            d_gates[at + 3 * hidden + j] = d_o;
            sync_cube();
            let mut sum = F::new(0.0);
            for m in 0..width {
                sum += d[m] * w_hh_t[m * hidden + j];
            }
            dh = sum;
            sync_cube();
        }
    }
}
