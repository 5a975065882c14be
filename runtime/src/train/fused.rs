//! A whole-sequence LSTM as one autodiff op on the CPU backend (`Flex`, and `Autodiff<Flex>` for
//! training), with its own backward (BPTT over the saved gates).
//!
//! Why: on burn's tensor API every time step is a dozen graph nodes (matmuls, narrows, sigmoid,
//! tanh, products), each allocating its output and, in the backward pass, its gradient; matmuls
//! are under 10 % of that step. Here the input projection of all steps is one GEMM, each step does
//! one recurrent GEMM and a fused, vectorisable gate loop over flat buffers, and the backward pass
//! walks the saved activations once, batching the weight gradients into one GEMM each over all
//! steps (what PyTorch's oneDNN LSTM does).
//!
//! Other backends (CUDA) keep the tensor-API cell in `model.rs`: [`supported`] says which path a
//! backend takes, decided by type identity, so the model API stays generic.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::ops::matmul::matmul;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor, TensorData, TensorPrimitive};

type Ad = Autodiff<Flex>;

static DISABLED: AtomicBool = AtomicBool::new(false);

/// Turns the fused kernel off process-wide, so the benchmark can time the tensor-API cell it
/// replaces in the same build and run.
pub fn disable() {
    DISABLED.store(true, Ordering::Relaxed);
}

/// Whether [`lstm_last`] runs the fused kernel for this backend.
pub fn supported<B: Backend>() -> bool {
    let id = TypeId::of::<B>();
    (id == TypeId::of::<Ad>() || id == TypeId::of::<Flex>()) && !DISABLED.load(Ordering::Relaxed)
}

/// The last hidden state of an LSTM (PyTorch gate order `i, f, g, o`, zero initial state) over
/// `x`: `[steps, batch, in]` (time-major); `w_ih`: `[in, 4H]`, `w_hh`: `[H, 4H]`, `bias`: `[4H]`
/// (`b_ih + b_hh`). Only for backends where [`supported`] holds.
pub fn lstm_last<B: Backend>(
    x: Tensor<B, 3>,
    w_ih: Tensor<B, 2>,
    w_hh: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 2> {
    if TypeId::of::<B>() == TypeId::of::<Ad>() {
        cast(lstm_autodiff(cast(x), cast(w_ih), cast(w_hh), cast(bias)))
    } else if TypeId::of::<B>() == TypeId::of::<Flex>() {
        let prim = |t: TensorPrimitive<Flex>| t.tensor();
        let (x, w_ih, w_hh, bias): (Tensor<Flex, 3>, Tensor<Flex, 2>, Tensor<Flex, 2>, Tensor<Flex, 1>) =
            (cast(x), cast(w_ih), cast(w_hh), cast(bias));
        let (h, _) = lstm_forward(
            &prim(x.into_primitive()),
            &prim(w_ih.into_primitive()),
            &prim(w_hh.into_primitive()),
            &prim(bias.into_primitive()),
            false,
        );
        cast(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(h)))
    } else {
        panic!("fused LSTM called on a backend it does not support; check `fused::supported` first")
    }
}

fn cast<T: 'static, U: 'static>(value: T) -> U {
    *(Box::new(value) as Box<dyn Any>).downcast::<U>().expect("backend type checked by the caller")
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
    let nodes = [x.node.clone(), w_ih.node.clone(), w_hh.node.clone(), bias.node.clone()];
    let out = match LstmBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (h, saved) = lstm_forward(&x.primitive, &w_ih.primitive, &w_hh.primitive, &bias.primitive, true);
            let state = LstmState {
                x: x.primitive,
                w_ih: w_ih.primitive,
                w_hh: w_hh.primitive,
                saved: Arc::new(saved.expect("saved when asked")),
            };
            prep.finish(state, h)
        }
        OpsKind::UnTracked(prep) => {
            let (h, _) = lstm_forward(&x.primitive, &w_ih.primitive, &w_hh.primitive, &bias.primitive, false);
            prep.finish(h)
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// What the backward pass needs from the forward one, flat and time-major.
struct Saved {
    steps: usize,
    batch: usize,
    hidden: usize,
    /// Activated gates `[steps, batch, 4H]`: `σ(i), σ(f), tanh(g), σ(o)`.
    gates: Vec<f32>,
    /// Cell states `[steps, batch, H]`.
    cells: Vec<f32>,
    /// `tanh(c_t)`, `[steps, batch, H]`.
    cells_tanh: Vec<f32>,
    /// Hidden states `[steps, batch, H]`.
    hiddens: Vec<f32>,
}

impl fmt::Debug for Saved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Saved {{ steps: {}, batch: {}, hidden: {} }}", self.steps, self.batch, self.hidden)
    }
}

#[derive(Clone, Debug)]
struct LstmState {
    x: FlexTensor,
    w_ih: FlexTensor,
    w_hh: FlexTensor,
    saved: Arc<Saved>,
}

#[derive(Debug)]
struct LstmBackward;

impl Backward<Flex, 4> for LstmBackward {
    type State = LstmState;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad_h = grads.consume::<Flex>(&ops.node);
        let [p_x, p_w_ih, p_w_hh, p_bias] = ops.parents;
        let LstmState { x, w_ih, w_hh, saved } = ops.state;
        let Saved { steps, batch, hidden, .. } = *saved;
        let (input, gates) = (x.layout().shape()[2], 4 * hidden);
        let grad_h = contiguous(&grad_h);
        let w_hh_t = w_hh.transpose(0, 1);

        // BPTT: gate pre-activation gradients of every step, then the weight gradients at once.
        let mut d_gates = vec![0.0f32; steps * batch * gates];
        let mut dh: Vec<f32> = grad_h.to_vec();
        let mut dc = vec![0.0f32; batch * hidden];
        let zeros = vec![0.0f32; batch * hidden];
        for t in (0..steps).rev() {
            let at = |width: usize| t * batch * width..(t + 1) * batch * width;
            let a = &saved.gates[at(gates)];
            let tc = &saved.cells_tanh[at(hidden)];
            let c_prev = if t == 0 { &zeros[..] } else { &saved.cells[(t - 1) * batch * hidden..t * batch * hidden] };
            let d = &mut d_gates[t * batch * gates..(t + 1) * batch * gates];
            for b in 0..batch {
                let (a, d) = (&a[b * gates..(b + 1) * gates], &mut d[b * gates..(b + 1) * gates]);
                let r = b * hidden..(b + 1) * hidden;
                lstm_cell_backward(a, d, &dh[r.clone()], &mut dc[r.clone()], &tc[r.clone()], &c_prev[r], hidden);
            }
            if t > 0 {
                let dt = FlexTensor::from_data(TensorData::new(d.to_vec(), [batch, gates]));
                dh = contiguous(&matmul(dt, w_hh_t.clone())).to_vec();
            }
        }
        let d_gates = FlexTensor::from_data(TensorData::new(d_gates, [steps * batch, gates]));

        if let Some(node) = p_bias {
            let mut db = vec![0.0f32; gates];
            for row in d_gates.as_slice::<f32>().expect("contiguous").chunks_exact(gates) {
                for (s, v) in db.iter_mut().zip(row) {
                    *s += v;
                }
            }
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(db, [gates])));
        }
        if let Some(node) = p_w_hh {
            // h_{t-1} for every step: zeros, then h_0 .. h_{T-2}.
            let mut prev = vec![0.0f32; steps * batch * hidden];
            prev[batch * hidden..].copy_from_slice(&saved.hiddens[..(steps - 1) * batch * hidden]);
            let prev = FlexTensor::from_data(TensorData::new(prev, [steps * batch, hidden]));
            grads.register::<Flex>(node.id, matmul(prev.transpose(0, 1), d_gates.clone()));
        }
        if let Some(node) = p_w_ih {
            let x2 = x.reshape(Shape::new([steps * batch, input]));
            grads.register::<Flex>(node.id, matmul(x2.transpose(0, 1), d_gates.clone()));
        }
        if let Some(node) = p_x {
            let dx = matmul(d_gates, w_ih.transpose(0, 1));
            grads.register::<Flex>(node.id, dx.reshape(Shape::new([steps, batch, input])));
        }
    }
}

/// One row of one step backwards: `a` the activated gates, `d` receives the pre-activation
/// gradients, `dc` carries the cell gradient from step t to t-1.
#[inline(always)]
fn lstm_cell_backward(a: &[f32], d: &mut [f32], dh: &[f32], dc: &mut [f32], tc: &[f32], c_prev: &[f32], hidden: usize) {
    let (ai, rest) = a.split_at(hidden);
    let (af, rest) = rest.split_at(hidden);
    let (ag, ao) = rest.split_at(hidden);
    let (di, rest) = d.split_at_mut(hidden);
    let (df, rest) = rest.split_at_mut(hidden);
    let (dg, dout) = rest.split_at_mut(hidden);
    for j in 0..hidden {
        let (i, f, g, o) = (ai[j], af[j], ag[j], ao[j]);
        let (dhv, tcv) = (dh[j], tc[j]);
        let dcv = dc[j] + dhv * o * (1.0 - tcv * tcv);
        dout[j] = dhv * tcv * o * (1.0 - o);
        di[j] = dcv * g * i * (1.0 - i);
        df[j] = dcv * c_prev[j] * f * (1.0 - f);
        dg[j] = dcv * i * (1.0 - g * g);
        dc[j] = dcv * f;
    }
}

fn contiguous(t: &FlexTensor) -> Arc<[f32]> {
    match t.as_slice::<f32>() {
        Some(s) => s.into(),
        None => t.to_contiguous().as_slice::<f32>().expect("the fused LSTM runs on f32 tensors").into(),
    }
}

/// Runs the recurrence; returns `h_T` `[batch, H]`, and the activations when `save`.
fn lstm_forward(
    x: &FlexTensor,
    w_ih: &FlexTensor,
    w_hh: &FlexTensor,
    bias: &FlexTensor,
    save: bool,
) -> (FlexTensor, Option<Saved>) {
    let shape = x.layout().shape();
    let (steps, batch, input) = (shape[0], shape[1], shape[2]);
    let gates = w_hh.layout().shape()[1];
    let hidden = gates / 4;
    let bias = contiguous(bias);
    // The input projection of every step in one GEMM; each step's slice then becomes its gates.
    let projected = matmul(x.reshape(Shape::new([steps * batch, input])), w_ih.clone());
    let mut all_gates: Vec<f32> = projected.into_data().into_vec::<f32>().expect("the fused LSTM runs on f32 tensors");
    let cap = if save { steps * batch * hidden } else { 0 };
    let (mut cells, mut cells_tanh, mut hiddens) = (Vec::with_capacity(cap), Vec::with_capacity(cap), Vec::with_capacity(cap));
    let mut h = vec![0.0f32; batch * hidden];
    let mut c = vec![0.0f32; batch * hidden];
    let mut tc = vec![0.0f32; batch * hidden];
    for t in 0..steps {
        let g = &mut all_gates[t * batch * gates..(t + 1) * batch * gates];
        if t > 0 {
            let ht = FlexTensor::from_data(TensorData::new(h.clone(), [batch, hidden]));
            let rec = matmul(ht, w_hh.clone());
            let rec = rec.as_slice::<f32>().expect("matmul output is contiguous");
            for (gv, rv) in g.iter_mut().zip(rec) {
                *gv += rv;
            }
        }
        for b in 0..batch {
            let row = &mut g[b * gates..(b + 1) * gates];
            for (gv, bv) in row.iter_mut().zip(bias.iter()) {
                *gv += bv;
            }
            let r = b * hidden..(b + 1) * hidden;
            lstm_cell_forward(row, &mut c[r.clone()], &mut tc[r.clone()], &mut h[r], hidden);
        }
        if save {
            cells.extend_from_slice(&c);
            cells_tanh.extend_from_slice(&tc);
            hiddens.extend_from_slice(&h);
        }
    }
    let out = FlexTensor::from_data(TensorData::new(h, [batch, hidden]));
    let saved = save.then_some(Saved { steps, batch, hidden, gates: all_gates, cells, cells_tanh, hiddens });
    (out, saved)
}

/// Activates one row of gates in place and advances `c`, `h` (`tc` gets `tanh(c)`).
#[inline(always)]
fn lstm_cell_forward(row: &mut [f32], c: &mut [f32], tc: &mut [f32], h: &mut [f32], hidden: usize) {
    let (ifg, o) = row.split_at_mut(3 * hidden);
    let (if_, g) = ifg.split_at_mut(2 * hidden);
    for v in if_.iter_mut() {
        *v = sigmoid(*v);
    }
    for v in g.iter_mut() {
        *v = tanh(*v);
    }
    for v in o.iter_mut() {
        *v = sigmoid(*v);
    }
    let (i, f) = if_.split_at(hidden);
    for j in 0..hidden {
        c[j] = f[j] * c[j] + i[j] * g[j];
    }
    for j in 0..hidden {
        tc[j] = tanh(c[j]);
        h[j] = o[j] * tc[j];
    }
}

/// `e^x`, branch-free so loops over it vectorise (Cephes' `expf`: range reduction by ln 2 and a
/// degree-6 polynomial; relative error ~1e-7, saturating outside ±87).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer in the low bits
    let x = x.clamp(-87.0, 87.0);
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    let k = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    e * f32::from_bits(((k + 127) << 23) as u32)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::{ModelKind, N_FEATURES};
    use burn::backend::NdArray;
    use burn::module::Module;
    use burn::tensor::backend::AutodiffBackend;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Logits and every parameter gradient of a model on `B`, flattened in module order.
    fn logits_and_grads<B: AutodiffBackend>(kind: ModelKind) -> (Vec<f32>, Vec<Vec<f32>>) {
        let device = Default::default();
        let model = kind.init::<B>(5, &device);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (batch, steps) = (3, 7);
        let values: Vec<f32> = (0..batch * steps * N_FEATURES).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(values, [batch, steps, N_FEATURES]), &device);
        let logits = model.forward(x);
        let weights = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, -2.0, 0.5, 0.3, 1.5, -1.0, 2.0, 0.1, -0.7], [3, 3]), &device);
        let grads = (logits.clone() * weights).sum().backward();
        let mut out = Vec::new();
        model.visit(&mut Collect::<B> { grads: &grads, out: &mut out });
        (logits.into_data().to_vec().unwrap(), out)
    }

    struct Collect<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        out: &'a mut Vec<Vec<f32>>,
    }

    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Collect<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            let grad = param.val().grad(self.grads).expect("every parameter gets a gradient");
            self.out.push(grad.into_data().to_vec().unwrap());
        }
    }

    #[test]
    fn fused_lstm_matches_the_tensor_api_cell() {
        assert!(supported::<Autodiff<Flex>>() && !supported::<Autodiff<NdArray>>());
        for kind in [ModelKind::CnnLstm, ModelKind::Lstm] {
            let (fused_logits, fused_grads) = logits_and_grads::<Autodiff<Flex>>(kind);
            let (ref_logits, ref_grads) = logits_and_grads::<Autodiff<NdArray>>(kind);
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 + 1e-4 * y.abs());
            assert!(close(&fused_logits, &ref_logits), "{kind} logits {fused_logits:?} vs {ref_logits:?}");
            assert_eq!(fused_grads.len(), ref_grads.len());
            for (i, (a, b)) in fused_grads.iter().zip(&ref_grads).enumerate() {
                assert_eq!(a.len(), b.len());
                assert!(close(a, b), "{kind} parameter {i}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn exp_sigmoid_tanh_are_accurate() {
        let mut x = -30.0f32;
        while x < 30.0 {
            assert!((exp(x) - x.exp()).abs() <= 2e-7 * x.exp(), "exp({x})");
            assert!((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 1e-6, "sigmoid({x})");
            assert!((tanh(x) - x.tanh()).abs() < 1e-6, "tanh({x})");
            x += 0.0137;
        }
        assert_eq!(sigmoid(-200.0), sigmoid(-87.0));
        assert_eq!(tanh(100.0), 1.0);
    }
}
