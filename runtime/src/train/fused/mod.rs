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
//! The convolution of `cnn_lstm` is a second such op (`conv.rs`); the GEMMs, row chunking,
//! buffer pool and activations both share with the GRU (`fused_gru.rs`) are in `kernels.rs`.
//! CUDA has its own kernels (`fused_cuda.rs`); other backends keep the tensor-API cell in
//! `model.rs`. [`supported`] says which path a backend takes, decided by type identity, so the
//! model API stays generic.

mod conv;
pub(super) mod kernels;

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

pub use conv::conv_relu_time_major;
#[cfg(target_arch = "x86_64")]
use kernels::wide_simd;
use kernels::{
    gemm_raw, gemm_rows, map_chunks, multiversion, pool, register_projection_grads, sigmoid, slice,
    tanh, tensor, transposed, Dims, Rows,
};

pub(super) type Ad = Autodiff<Flex>;

static DISABLED: AtomicBool = AtomicBool::new(false);

/// Turns the fused kernel off process-wide, so the benchmark can time the tensor-API cell it
/// replaces in the same build and run.
pub fn disable() {
    DISABLED.store(true, Ordering::Relaxed);
}

/// Whether [`disable`] was called (it turns off the CUDA kernels of `fused_cuda.rs` too).
pub fn disabled() -> bool {
    DISABLED.load(Ordering::Relaxed)
}

/// Whether [`lstm_last`] and `fused_gru::gru_last` run the fused kernels for this backend.
pub fn supported<B: Backend>() -> bool {
    let id = TypeId::of::<B>();
    (id == TypeId::of::<Ad>() || id == TypeId::of::<Flex>()) && !disabled()
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
        let (x, w_ih, w_hh, bias): (
            Tensor<Flex, 3>,
            Tensor<Flex, 2>,
            Tensor<Flex, 2>,
            Tensor<Flex, 1>,
        ) = (cast(x), cast(w_ih), cast(w_hh), cast(bias));
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

pub(super) fn cast<T: 'static, U: 'static>(value: T) -> U {
    *(Box::new(value) as Box<dyn Any>)
        .downcast::<U>()
        .expect("backend type checked by the caller")
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
            let (h, saved) = lstm_forward(
                &x.primitive,
                &w_ih.primitive,
                &w_hh.primitive,
                &bias.primitive,
                true,
            );
            let state = LstmState {
                x: x.primitive,
                w_ih: w_ih.primitive,
                w_hh: w_hh.primitive,
                saved: Arc::new(saved.expect("saved when asked")),
            };
            prep.finish(state, h)
        }
        OpsKind::UnTracked(prep) => {
            let (h, _) = lstm_forward(
                &x.primitive,
                &w_ih.primitive,
                &w_hh.primitive,
                &bias.primitive,
                false,
            );
            prep.finish(h)
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// What the backward pass needs from the forward one, flat and time-major. The buffers come from
/// [`pool`] and go back to it when the backward pass drops this.
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

impl Drop for Saved {
    fn drop(&mut self) {
        for buffer in [
            &mut self.gates,
            &mut self.cells,
            &mut self.cells_tanh,
            &mut self.hiddens,
        ] {
            pool::give(std::mem::take(buffer));
        }
    }
}

impl fmt::Debug for Saved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Saved {{ steps: {}, batch: {}, hidden: {} }}",
            self.steps, self.batch, self.hidden
        )
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

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad_h = grads.consume::<Flex>(&ops.node);
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
            ..
        } = *saved;
        let (input, gates) = (x.layout().shape()[2], 4 * hidden);
        let grad_h = slice(&grad_h);
        let w_hh_t = transposed(&slice(&w_hh), hidden, gates);

        // BPTT, each batch chunk on its own thread (rows never interact): the gate pre-activation
        // gradients of every step, and per chunk the bias gradient; the weight gradients follow as
        // one GEMM each over all steps.
        let mut d_gates = pool::take(steps * batch * gates);
        let d_ptr = Rows(d_gates.as_mut_ptr());
        let zeros = vec![0.0f32; batch * hidden];
        let db_parts = map_chunks(batch, |rows| {
            let (r0, nb) = (rows.start, rows.len());
            let mut dh = grad_h[r0 * hidden..rows.end * hidden].to_vec();
            let mut dc = vec![0.0f32; nb * hidden];
            let mut db = vec![0.0f32; gates];
            for t in (0..steps).rev() {
                let at = |width: usize| (t * batch + r0) * width..(t * batch + rows.end) * width;
                let c_prev = if t == 0 {
                    &zeros[..nb * hidden]
                } else {
                    &saved.cells
                        [((t - 1) * batch + r0) * hidden..((t - 1) * batch + rows.end) * hidden]
                };
                // SAFETY: chunks own disjoint rows of `d_gates`, which outlives the scope.
                let d = unsafe { d_ptr.slice(at(gates)) };
                cell_backward_rows(
                    &saved.gates[at(gates)],
                    d,
                    &dh,
                    &mut dc,
                    &saved.cells_tanh[at(hidden)],
                    c_prev,
                    &mut db,
                    hidden,
                );
                if t > 0 {
                    // dh_{t-1} = d_t · W_hhᵀ
                    // SAFETY: `d` is this chunk's nb × gates rows, `w_hh_t` gates × hidden, `dh`
                    // nb × hidden and owned by this chunk.
                    unsafe {
                        gemm_raw(
                            (nb, hidden, gates),
                            dh.as_mut_ptr(),
                            hidden,
                            false,
                            (d.as_ptr(), gates, 1),
                            (w_hh_t.as_ptr(), hidden, 1),
                        )
                    };
                }
            }
            db
        });

        if let Some(node) = p_bias {
            let mut db = vec![0.0f32; gates];
            for part in db_parts {
                for (s, v) in db.iter_mut().zip(part) {
                    *s += v;
                }
            }
            grads.register::<Flex>(node.id, tensor(db, [gates]));
        }
        let parents = [p_x, p_w_ih, p_w_hh].map(|p| p.map(|node| node.id));
        let dims = Dims {
            steps,
            batch,
            input,
            hidden,
            gates,
        };
        register_projection_grads(
            grads,
            parents,
            (&x, &w_ih),
            &saved.hiddens,
            (&d_gates, &d_gates),
            dims,
        );
        pool::give(d_gates);
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
    let (x, w_ih, w_hh, bias) = (slice(x), slice(w_ih), slice(w_hh), slice(bias));
    // The input projection of every step in one GEMM; each step's rows then become its gates.
    let mut all_gates = pool::take(steps * batch * gates);
    // SAFETY: `x` is (steps × batch) × input, `w_ih` input × gates, `all_gates`
    // (steps × batch) × gates and a buffer of its own.
    unsafe {
        gemm_rows(
            (steps * batch, gates, input),
            all_gates.as_mut_ptr(),
            (x.as_ptr(), input, 1),
            (w_ih.as_ptr(), gates, 1),
        )
    };
    // Without a backward pass only the previous step's state is needed: two slots, alternating.
    let slots = if save { steps } else { 2 };
    let slot = |t: usize| if save { t } else { t % 2 };
    let mut cells = pool::take(slots * batch * hidden);
    let mut cells_tanh = pool::take(slots * batch * hidden);
    let mut hiddens = pool::take(slots * batch * hidden);
    let (g_ptr, c_ptr, tc_ptr, h_ptr) = (
        Rows(all_gates.as_mut_ptr()),
        Rows(cells.as_mut_ptr()),
        Rows(cells_tanh.as_mut_ptr()),
        Rows(hiddens.as_mut_ptr()),
    );
    let zeros = vec![0.0f32; batch * hidden];
    map_chunks(batch, |rows| {
        let (r0, r1, nb) = (rows.start, rows.end, rows.len());
        let state = |t: usize| {
            slot(t) * batch * hidden + r0 * hidden..slot(t) * batch * hidden + r1 * hidden
        };
        for t in 0..steps {
            // The slices below are safe for one reason: chunks own disjoint rows of the
            // buffers, which outlive the scope, and slots t and t-1 differ.
            // SAFETY: see above.
            let g = unsafe { g_ptr.slice((t * batch + r0) * gates..(t * batch + r1) * gates) };
            let c_prev: &[f32] = if t == 0 {
                &zeros[..nb * hidden]
            } else {
                // h_{t-1} · W_hh added to the projected input, in place.
                // SAFETY: see above.
                let h_prev = unsafe { h_ptr.slice(state(t - 1)) };
                // SAFETY: `h_prev` is nb × hidden, `w_hh` hidden × gates, `g` nb × gates; the
                // three do not overlap.
                unsafe {
                    gemm_raw(
                        (nb, gates, hidden),
                        g.as_mut_ptr(),
                        gates,
                        true,
                        (h_prev.as_ptr(), hidden, 1),
                        (w_hh.as_ptr(), gates, 1),
                    )
                };
                // SAFETY: see above.
                unsafe { c_ptr.slice(state(t - 1)) }
            };
            // SAFETY: see above.
            let (c, tc, h) = unsafe {
                (
                    c_ptr.slice(state(t)),
                    tc_ptr.slice(state(t)),
                    h_ptr.slice(state(t)),
                )
            };
            cell_forward_rows(g, &bias, c_prev, c, tc, h, hidden);
        }
    });
    let last = slot(steps - 1) * batch * hidden;
    let out = tensor(
        hiddens[last..last + batch * hidden].to_vec(),
        [batch, hidden],
    );
    if save {
        (
            out,
            Some(Saved {
                steps,
                batch,
                hidden,
                gates: all_gates,
                cells,
                cells_tanh,
                hiddens,
            }),
        )
    } else {
        for buffer in [all_gates, cells, cells_tanh, hiddens] {
            pool::give(buffer);
        }
        (out, None)
    }
}

multiversion! {
    /// One step of a chunk of rows: `g` (`rows × 4H`, pre-activations without bias) is activated
    /// in place; `c`, `tc = tanh(c)` and `h` (`rows × H`) get the new state from `c_prev`.
    fn cell_forward_rows / cell_forward_rows_wide / cell_forward_rows_body(
        g: &mut [f32], bias: &[f32], c_prev: &[f32], c: &mut [f32], tc: &mut [f32], h: &mut [f32], hidden: usize,
    )
}

multiversion! {
    /// One step of a chunk of rows backwards: `a` the activated gates, `d` receives the
    /// pre-activation gradients, `dc` carries the cell gradient from step t to t-1, `db` sums `d`.
    fn cell_backward_rows / cell_backward_rows_wide / cell_backward_rows_body(
        a: &[f32], d: &mut [f32], dh: &[f32], dc: &mut [f32], tc: &[f32], c_prev: &[f32], db: &mut [f32], hidden: usize,
    )
}

#[inline(always)]
fn cell_forward_rows_body(
    g: &mut [f32],
    bias: &[f32],
    c_prev: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    h: &mut [f32],
    hidden: usize,
) {
    let gates = 4 * hidden;
    let rows = g.chunks_exact_mut(gates).zip(c_prev.chunks_exact(hidden));
    let state = c
        .chunks_exact_mut(hidden)
        .zip(tc.chunks_exact_mut(hidden))
        .zip(h.chunks_exact_mut(hidden));
    for ((row, c_prev), ((c, tc), h)) in rows.zip(state) {
        let (ifg, o) = row.split_at_mut(3 * hidden);
        let (if_, g) = ifg.split_at_mut(2 * hidden);
        let (b_if, rest) = bias.split_at(2 * hidden);
        let (b_g, b_o) = rest.split_at(hidden);
        for (v, b) in if_.iter_mut().zip(b_if) {
            *v = sigmoid(*v + b);
        }
        for (v, b) in g.iter_mut().zip(b_g) {
            *v = tanh(*v + b);
        }
        for (v, b) in o.iter_mut().zip(&b_o[..hidden]) {
            *v = sigmoid(*v + b);
        }
        let (i, f) = if_.split_at(hidden);
        for j in 0..hidden {
            let cj = f[j] * c_prev[j] + i[j] * g[j];
            let t = tanh(cj);
            c[j] = cj;
            tc[j] = t;
            h[j] = o[j] * t;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cell_backward_rows_body(
    a: &[f32],
    d: &mut [f32],
    dh: &[f32],
    dc: &mut [f32],
    tc: &[f32],
    c_prev: &[f32],
    db: &mut [f32],
    hidden: usize,
) {
    let gates = 4 * hidden;
    let rows = a.chunks_exact(gates).zip(d.chunks_exact_mut(gates));
    let state = dh
        .chunks_exact(hidden)
        .zip(dc.chunks_exact_mut(hidden))
        .zip(tc.chunks_exact(hidden).zip(c_prev.chunks_exact(hidden)));
    for ((a, d), ((dh, dc), (tc, c_prev))) in rows.zip(state) {
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
        for (s, v) in db.iter_mut().zip(d.iter()) {
            *s += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::ModelKind;
    use crate::train::probe::logits_and_grads;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn fused_lstm_and_gru_match_the_tensor_api_cells() {
        assert!(supported::<Autodiff<Flex>>() && !supported::<Autodiff<NdArray>>());
        for kind in [ModelKind::CnnLstm, ModelKind::Lstm, ModelKind::Gru] {
            let (fused_logits, fused_grads) =
                logits_and_grads::<Autodiff<Flex>>(kind, 7, 3, &Default::default());
            let (ref_logits, ref_grads) =
                logits_and_grads::<Autodiff<NdArray>>(kind, 7, 3, &Default::default());
            let close = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .all(|(x, y)| (x - y).abs() <= 1e-5 + 1e-4 * y.abs())
            };
            assert!(
                close(&fused_logits, &ref_logits),
                "{kind} logits {fused_logits:?} vs {ref_logits:?}"
            );
            assert_eq!(fused_grads.len(), ref_grads.len());
            for (i, (a, b)) in fused_grads.iter().zip(&ref_grads).enumerate() {
                assert_eq!(a.len(), b.len());
                assert!(close(a, b), "{kind} parameter {i}: {a:?} vs {b:?}");
            }
        }
    }

    /// The batch is split into one chunk per rayon thread: any split must give the same results,
    /// with and without the saved activations (training vs evaluation).
    #[test]
    fn fused_lstm_does_not_depend_on_the_thread_count() {
        let device = Default::default();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut uniform = |n: usize, bound: f32| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        let (steps, batch, input, hidden) = (6, 7, 5, 4);
        let (x, w_ih, w_hh, bias) = (
            uniform(steps * batch * input, 1.0),
            uniform(input * 4 * hidden, 0.5),
            uniform(hidden * 4 * hidden, 0.5),
            uniform(4 * hidden, 0.5),
        );
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let param = |v: &Vec<f32>, shape: Vec<usize>| {
                    Tensor::<Ad, 2>::from_data(TensorData::new(v.clone(), shape), &device)
                        .require_grad()
                };
                let x = Tensor::<Ad, 3>::from_data(
                    TensorData::new(x.clone(), [steps, batch, input]),
                    &device,
                )
                .require_grad();
                let (w_ih, w_hh) = (
                    param(&w_ih, vec![input, 4 * hidden]),
                    param(&w_hh, vec![hidden, 4 * hidden]),
                );
                let b = Tensor::<Ad, 1>::from_data(
                    TensorData::new(bias.clone(), [4 * hidden]),
                    &device,
                )
                .require_grad();
                let h = lstm_last(x.clone(), w_ih.clone(), w_hh.clone(), b.clone());
                let weights = Tensor::<Ad, 2>::from_data(
                    TensorData::new(uniform_like(batch * hidden), [batch, hidden]),
                    &device,
                );
                let grads = (h.clone() * weights).sum().backward();
                let inference = lstm_last(
                    x.clone().inner(),
                    w_ih.clone().inner(),
                    w_hh.clone().inner(),
                    b.clone().inner(),
                );
                let v = |t: Tensor<Flex, 2>| t.into_data().to_vec::<f32>().unwrap();
                vec![
                    v(h.inner()),
                    v(inference),
                    x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(),
                    v(w_ih.grad(&grads).unwrap()),
                    v(w_hh.grad(&grads).unwrap()),
                    b.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(),
                ]
            })
        };
        let one = run(1);
        assert_eq!(one[0], one[1], "evaluation and training forward differ");
        for threads in [2, 3, 7] {
            for (i, (a, b)) in run(threads).iter().zip(&one).enumerate() {
                assert!(
                    a.iter()
                        .zip(b)
                        .all(|(x, y)| (x - y).abs() <= 1e-6 + 1e-5 * y.abs()),
                    "{threads} threads, output {i}: {a:?} vs {b:?}"
                );
            }
        }
    }

    fn uniform_like(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect()
    }
}
