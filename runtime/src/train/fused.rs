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
//! CUDA has its own kernels (`fused_cuda.rs`); other backends keep the tensor-API cell in
//! `model.rs`. [`supported`] says which path a backend takes, decided by type identity, so the
//! model API stays generic.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

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

/// `relu(conv1d(x))` with kernel `K`, stride 1 and padding `K / 2`, returned time-major: `x`
/// `[batch, steps, in]` (the model input), `weight` `[out, in, K]` (burn's `Conv1d` layout), `bias`
/// `[out]` → `[steps, batch, out]`, the fused LSTM's input. One GEMM over the gathered taps of
/// every step and row instead of burn's padding, narrowing and copying per tap, in both passes.
/// Only for backends where [`supported`] holds.
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

/// The sizes of a recurrent op: `gates` is `4H` for the LSTM, `3H` for the GRU.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub steps: usize,
    pub batch: usize,
    pub input: usize,
    pub hidden: usize,
    pub gates: usize,
}

/// Registers the gradients that follow from BPTT's gate pre-activation gradients, each one GEMM
/// over all steps: `W_hh` from `d_recurrent` (`Σ_t h_{t-1}ᵀ d_t`, `h_{-1} = 0`), `W_ih` and the
/// input `x` from `d_input`. The LSTM passes one buffer as both; the GRU's differ in `n`.
/// `parents` are the ids of `x`, `W_ih`, `W_hh` where tracked.
pub(super) fn register_projection_grads(
    grads: &mut Gradients,
    [p_x, p_w_ih, p_w_hh]: [Option<NodeId>; 3],
    (x, w_ih): (&FlexTensor, &FlexTensor),
    hiddens: &[f32],
    (d_input, d_recurrent): (&[f32], &[f32]),
    Dims {
        steps,
        batch,
        input,
        hidden,
        gates,
    }: Dims,
) {
    if let Some(id) = p_w_hh {
        // hiddens[0 .. T-1]ᵀ · d_recurrent[1 .. T]
        let dw = if steps > 1 {
            let lhs = (hiddens.as_ptr(), 1, hidden);
            // SAFETY: `hiddens` holds steps × batch × hidden values, of which the first
            // (steps - 1) × batch rows are read; `d_recurrent` from row `batch` on holds
            // (steps - 1) × batch rows of `gates`.
            unsafe {
                gemm_sum(
                    (hidden, gates, (steps - 1) * batch),
                    lhs,
                    (d_recurrent[batch * gates..].as_ptr(), gates, 1),
                )
            }
        } else {
            vec![0.0f32; hidden * gates]
        };
        grads.register::<Flex>(id, tensor(dw, [hidden, gates]));
    }
    if let Some(id) = p_w_ih {
        let x = slice(x);
        // SAFETY: `x` holds steps × batch × input values, `d_input` steps × batch × gates.
        let dw = unsafe {
            gemm_sum(
                (input, gates, steps * batch),
                (x.as_ptr(), 1, input),
                (d_input.as_ptr(), gates, 1),
            )
        };
        grads.register::<Flex>(id, tensor(dw, [input, gates]));
    }
    if let Some(id) = p_x {
        let w_ih_t = transposed(&slice(w_ih), input, gates);
        let mut dx = vec![0.0f32; steps * batch * input];
        // SAFETY: `d_input` is (steps × batch) × gates, `w_ih_t` gates × input, `dx`
        // (steps × batch) × input and a buffer of its own.
        unsafe {
            gemm_rows(
                (steps * batch, input, gates),
                dx.as_mut_ptr(),
                (d_input.as_ptr(), gates, 1),
                (w_ih_t.as_ptr(), input, 1),
            )
        };
        grads.register::<Flex>(id, tensor(dx, [steps, batch, input]));
    }
}

/// A buffer shared by the batch chunks, each of which touches only its own rows.
#[derive(Clone, Copy)]
pub(super) struct Rows(pub(super) *mut f32);

// SAFETY: `Rows` is a plain address; it is only used to hand disjoint row ranges of one live
// buffer to the chunk closures, and every access through it is an `unsafe` call whose caller
// vouches for that.
unsafe impl Send for Rows {}
// SAFETY: as for `Send`: shared `Rows` never touch memory by themselves.
unsafe impl Sync for Rows {}

impl Rows {
    /// The address `offset` values into the buffer. A method, not a field access, so closures
    /// capture the `Send` wrapper. Computing the address is safe (it wraps instead of assuming
    /// it stays inside the buffer); using it is what the callers' `unsafe` blocks answer for.
    pub(super) fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }

    /// # Safety
    /// `range` lies inside the buffer and no other live slice overlaps it.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice(&self, range: std::ops::Range<usize>) -> &mut [f32] {
        // SAFETY: the caller guarantees `range` lies inside the live buffer and that nothing
        // else reads or writes it while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}

/// Runs `f` on contiguous row ranges of the batch, one per rayon thread (one range, inline, when
/// there is a single thread), and returns the results in row order.
pub(super) fn map_chunks<R: Send>(
    batch: usize,
    f: impl Fn(std::ops::Range<usize>) -> R + Sync + Send,
) -> Vec<R> {
    let n = rayon::current_num_threads().clamp(1, batch.max(1));
    let bounds: Vec<_> = (0..n).map(|i| i * batch / n..(i + 1) * batch / n).collect();
    if n == 1 {
        return bounds.into_iter().map(f).collect();
    }
    use rayon::prelude::*;
    bounds.into_par_iter().map(f).collect()
}

/// Below this many multiply-adds a GEMM stays on one thread (burn-flex's own threshold).
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// `dst (m×n, unit column stride) (+)= lhs · rhs`, operands as strided views (row, column stride).
///
/// # Safety
/// The views lie inside live buffers and `dst` overlaps neither operand.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_raw(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
) {
    // SAFETY: the caller guarantees the three views lie inside live buffers and that `dst`
    // overlaps neither operand, which is all `gemm::gemm` asks.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `dst = lhs · rhs` (`dst` contiguous `m×n`), its rows split over the rayon threads when the
/// product is large. (burn's Flex backend is built here without its `rayon` feature, so its
/// own GEMMs never split.)
///
/// # Safety
/// As [`gemm_raw`].
pub(super) unsafe fn gemm_rows(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
) {
    if m * n * k < PARALLEL_WORK {
        // SAFETY: as this function's own contract.
        return unsafe { gemm_raw((m, n, k), dst, n, false, (lhs, lhs_rs, lhs_cs), rhs) };
    }
    let (dst, lhs, rhs_ptr) = (Rows(dst), Rows(lhs as *mut f32), Rows(rhs.0 as *mut f32));
    // SAFETY: each chunk reads and writes only its own rows of `lhs` and `dst` (inside the
    // caller's buffers) and reads all of `rhs`; the chunks' `dst` rows are disjoint.
    map_chunks(m, |rows| unsafe {
        let lhs = (lhs.at(rows.start * lhs_rs) as *const f32, lhs_rs, lhs_cs);
        gemm_raw(
            (rows.len(), n, k),
            dst.at(rows.start * n),
            n,
            false,
            lhs,
            (rhs_ptr.at(0) as *const f32, rhs.1, rhs.2),
        );
    });
}

/// `lhs · rhs` for a long inner dimension `k` and a small `m×n` result (weight gradients summed
/// over every step and row): each thread takes a share of `k`, the partial products are added.
///
/// # Safety
/// The views lie inside live buffers.
pub(super) unsafe fn gemm_sum(
    (m, n, k): (usize, usize, usize),
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
) -> Vec<f32> {
    let (lhs, rhs) = (Rows(lhs as *mut f32), Rows(rhs as *mut f32));
    let share = if m * n * k < PARALLEL_WORK { 1 } else { k };
    let parts = map_chunks(share, |part| {
        let ks = if share == 1 { 0..k } else { part };
        let mut out = vec![0.0f32; m * n];
        if !ks.is_empty() {
            // SAFETY: the share `ks` of the inner dimension lies inside both operands (the
            // caller's contract) and `out` is this chunk's own buffer.
            unsafe {
                gemm_raw(
                    (m, n, ks.len()),
                    out.as_mut_ptr(),
                    n,
                    false,
                    (lhs.at(ks.start * lhs_cs) as *const f32, lhs_rs, lhs_cs),
                    (rhs.at(ks.start * rhs_rs) as *const f32, rhs_rs, rhs_cs),
                )
            };
        }
        out
    });
    let mut parts = parts.into_iter();
    let mut sum = parts.next().unwrap_or_else(|| vec![0.0; m * n]);
    for part in parts {
        for (s, v) in sum.iter_mut().zip(part) {
            *s += v;
        }
    }
    sum
}

/// The row-major transpose of a `rows × cols` matrix.
pub(super) fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

pub(super) fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The values of an f32 tensor in row-major order, borrowed when its layout allows.
pub(super) fn slice(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("the fused LSTM runs on f32 tensors")
                .to_vec(),
        ),
    }
}

/// Recycles the op's big activation buffers across training steps: fresh ones of this size
/// (tens of MB) come straight from `mmap`, and touching their pages cost more than the gate math.
pub(super) mod pool {
    use std::sync::Mutex;

    static FREE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
    const KEEP: usize = 12;

    /// A buffer of `len` values, each either 0 or left over from an earlier use: callers write
    /// every element before reading it.
    pub fn take(len: usize) -> Vec<f32> {
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        let best = (0..free.len())
            .filter(|&i| free[i].capacity() >= len)
            .min_by_key(|&i| free[i].capacity());
        match best {
            Some(i) => {
                let mut v = free.swap_remove(i);
                drop(free);
                v.resize(len, 0.0);
                v
            }
            None => vec![0.0; len],
        }
    }

    pub fn give(v: Vec<f32>) {
        if v.capacity() == 0 {
            return;
        }
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < KEEP {
            free.push(v);
        }
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

/// The gate loops, compiled once more with AVX2 + FMA and picked at run time where the CPU has
/// them (the default x86-64 target stops at SSE2, four lanes).
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident / $wide:ident / $body:ident ($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if wide_simd() {
                // SAFETY: the CPU has the features `$wide` is compiled for.
                return unsafe { $wide($($arg),*) };
            }
            $body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $wide($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

pub(super) use multiversion;

#[cfg(target_arch = "x86_64")]
pub(super) fn wide_simd() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
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
    p = p * r + 5e-1; // Cephes' 5.0000001201e-1, which rounds to 0.5 in f32
    let e = p * r * r + r + 1.0;
    let k = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    e * f32::from_bits(((k + 127) << 23) as u32)
}

#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub(super) fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::ModelKind;
    use crate::train::probe::logits_and_grads;
    use burn::backend::NdArray;
    use burn::tensor::backend::AutodiffBackend;
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

    fn uniform_like(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect()
    }

    /// The GEMMs that split across threads (only above ~7M multiply-adds) against a plain loop.
    #[test]
    fn split_gemms_match_a_plain_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (m, n, k) = (9, 33, 24_001);
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect(); // m×k
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect(); // k×n
        let mut want = vec![0.0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    want[i * n + j] += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
            }
        }
        let close = |got: &[f32], want: &[f64]| {
            got.iter()
                .zip(want)
                .all(|(g, w)| (*g as f64 - w).abs() < 1e-3)
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            assert!(m * n * k >= PARALLEL_WORK);
            // SAFETY: `a` is m × k and `b` k × n, both live.
            let sum = unsafe { gemm_sum((m, n, k), (a.as_ptr(), k, 1), (b.as_ptr(), n, 1)) };
            assert!(close(&sum, &want), "gemm_sum");
            // The transposed problem splits rows: (bᵀ aᵀ) is n×m.
            let (at, bt) = (transposed(&a, m, k), transposed(&b, k, n));
            let mut rows = vec![0.0f32; n * m];
            // SAFETY: `bt` is n × k, `at` k × m, `rows` n × m and a buffer of its own.
            unsafe {
                gemm_rows(
                    (n, m, k),
                    rows.as_mut_ptr(),
                    (bt.as_ptr(), k, 1),
                    (at.as_ptr(), m, 1),
                )
            };
            let want_t: Vec<f64> = (0..n * m).map(|i| want[(i % m) * n + i / m]).collect();
            assert!(close(&rows, &want_t), "gemm_rows");
        });
    }

    #[test]
    fn exp_sigmoid_tanh_are_accurate() {
        let mut x = -30.0f32;
        while x < 30.0 {
            assert!((exp(x) - x.exp()).abs() <= 2e-7 * x.exp(), "exp({x})");
            assert!(
                (sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 1e-6,
                "sigmoid({x})"
            );
            assert!((tanh(x) - x.tanh()).abs() < 1e-6, "tanh({x})");
            x += 0.0137;
        }
        assert_eq!(sigmoid(-200.0), sigmoid(-87.0));
        assert_eq!(tanh(100.0), 1.0);
    }
}
