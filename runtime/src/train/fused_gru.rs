//! A whole-sequence GRU as one autodiff op on the CPU backend, built like the LSTM op in
//! `fused/` (whose GEMM, chunking, buffer-pool and activation helpers in `fused/kernels.rs` it
//! shares): the input projection of all steps is one GEMM, each step one recurrent GEMM and a
//! fused gate loop per row range on its own thread, and the backward pass walks the saved gates
//! once and forms the weight gradients as one GEMM each over all steps.
//!
//! PyTorch's formulation, as `model::GruCell`: gates `r, z, n`;
//! `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z` likewise,
//! `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`, `h' = (1 - z) ⊙ n + z ⊙ h`, zero initial state.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use std::any::TypeId;

#[cfg(target_arch = "x86_64")]
use super::fused::kernels::wide_simd;
use super::fused::kernels::{
    gemm_raw, gemm_rows, map_chunks, multiversion, pool, register_projection_grads, sigmoid, slice,
    tanh, tensor, transposed, Dims, Rows,
};
use super::fused::{cast, Ad};

/// The last hidden state of a GRU over `x`: `[steps, batch, in]` (time-major); `w_ih`:
/// `[in, 3H]`, `w_hh`: `[H, 3H]`, `b_ih`, `b_hh`: `[3H]`. Only for backends where
/// `fused::supported` holds.
pub fn gru_last<B: Backend>(
    x: Tensor<B, 3>,
    w_ih: Tensor<B, 2>,
    w_hh: Tensor<B, 2>,
    b_ih: Tensor<B, 1>,
    b_hh: Tensor<B, 1>,
) -> Tensor<B, 2> {
    if TypeId::of::<B>() == TypeId::of::<Ad>() {
        cast(gru_autodiff(
            cast(x),
            cast(w_ih),
            cast(w_hh),
            cast(b_ih),
            cast(b_hh),
        ))
    } else if TypeId::of::<B>() == TypeId::of::<Flex>() {
        let prim = |t: TensorPrimitive<Flex>| t.tensor();
        let (x, w_ih, w_hh): (Tensor<Flex, 3>, Tensor<Flex, 2>, Tensor<Flex, 2>) =
            (cast(x), cast(w_ih), cast(w_hh));
        let (b_ih, b_hh): (Tensor<Flex, 1>, Tensor<Flex, 1>) = (cast(b_ih), cast(b_hh));
        let weights = [w_ih, w_hh].map(|w| prim(w.into_primitive()));
        let biases = [b_ih, b_hh].map(|b| prim(b.into_primitive()));
        let (h, _) = gru_forward(&prim(x.into_primitive()), &weights, &biases, false);
        cast(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(h)))
    } else {
        panic!("fused GRU called on a backend it does not support; check `fused::supported` first")
    }
}

fn gru_autodiff(
    x: Tensor<Ad, 3>,
    w_ih: Tensor<Ad, 2>,
    w_hh: Tensor<Ad, 2>,
    b_ih: Tensor<Ad, 1>,
    b_hh: Tensor<Ad, 1>,
) -> Tensor<Ad, 2> {
    let x = x.into_primitive().tensor();
    let (w_ih, w_hh) = (
        w_ih.into_primitive().tensor(),
        w_hh.into_primitive().tensor(),
    );
    let (b_ih, b_hh) = (
        b_ih.into_primitive().tensor(),
        b_hh.into_primitive().tensor(),
    );
    let nodes = [
        x.node.clone(),
        w_ih.node.clone(),
        w_hh.node.clone(),
        b_ih.node.clone(),
        b_hh.node.clone(),
    ];
    let weights = [w_ih.primitive, w_hh.primitive];
    let biases = [b_ih.primitive, b_hh.primitive];
    let out = match GruBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (h, saved) = gru_forward(&x.primitive, &weights, &biases, true);
            let [w_ih, w_hh] = weights;
            prep.finish(
                GruState {
                    x: x.primitive,
                    w_ih,
                    w_hh,
                    saved: Arc::new(saved.expect("saved when asked")),
                },
                h,
            )
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(gru_forward(&x.primitive, &weights, &biases, false).0)
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// What the backward pass needs from the forward one, flat and time-major, in pooled buffers.
struct Saved {
    steps: usize,
    batch: usize,
    hidden: usize,
    /// Activated gates `[steps, batch, 3H]`: `r, z, n`.
    gates: Vec<f32>,
    /// `W_hn h_{t-1} + b_hn`, `[steps, batch, H]` (what `r` multiplies).
    recurrent_n: Vec<f32>,
    /// Hidden states `[steps, batch, H]`.
    hiddens: Vec<f32>,
}

impl Drop for Saved {
    fn drop(&mut self) {
        for buffer in [&mut self.gates, &mut self.recurrent_n, &mut self.hiddens] {
            pool::give(std::mem::take(buffer));
        }
    }
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Saved {{ steps: {}, batch: {}, hidden: {} }}",
            self.steps, self.batch, self.hidden
        )
    }
}

#[derive(Clone, Debug)]
struct GruState {
    x: FlexTensor,
    w_ih: FlexTensor,
    w_hh: FlexTensor,
    saved: Arc<Saved>,
}

/// Runs the recurrence; returns `h_T` `[batch, H]`, and the activations when `save`.
fn gru_forward(
    x: &FlexTensor,
    [w_ih, w_hh]: &[FlexTensor; 2],
    [b_ih, b_hh]: &[FlexTensor; 2],
    save: bool,
) -> (FlexTensor, Option<Saved>) {
    let shape = x.layout().shape();
    let (steps, batch, input) = (shape[0], shape[1], shape[2]);
    let gates = w_hh.layout().shape()[1];
    let hidden = gates / 3;
    let (x, w_ih, w_hh, b_ih, b_hh) =
        (slice(x), slice(w_ih), slice(w_hh), slice(b_ih), slice(b_hh));
    // The input projection of every step in one GEMM; the gate loop then activates it in place.
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
    let mut recurrent_n = pool::take(slots * batch * hidden);
    let mut hiddens = pool::take(slots * batch * hidden);
    let (g_ptr, rn_ptr, h_ptr) = (
        Rows(all_gates.as_mut_ptr()),
        Rows(recurrent_n.as_mut_ptr()),
        Rows(hiddens.as_mut_ptr()),
    );
    let zeros = vec![0.0f32; batch * hidden];
    map_chunks(batch, |rows| {
        let (r0, r1, nb) = (rows.start, rows.end, rows.len());
        let state = |t: usize| {
            slot(t) * batch * hidden + r0 * hidden..slot(t) * batch * hidden + r1 * hidden
        };
        // h_{t-1} · W_hh for this chunk's rows (zero at t = 0).
        let mut recurrent = vec![0.0f32; nb * gates];
        for t in 0..steps {
            // The slices below are safe for one reason: chunks own disjoint rows of the
            // buffers, which outlive the scope, and slots t and t-1 differ.
            // SAFETY: see above.
            let g = unsafe { g_ptr.slice((t * batch + r0) * gates..(t * batch + r1) * gates) };
            let h_prev: &[f32] = if t == 0 {
                &zeros[..nb * hidden]
            } else {
                // SAFETY: see above.
                let h_prev = unsafe { h_ptr.slice(state(t - 1)) };
                // SAFETY: `h_prev` is nb × hidden, `w_hh` hidden × gates, `recurrent` nb × gates
                // and this chunk's own buffer.
                unsafe {
                    gemm_raw(
                        (nb, gates, hidden),
                        recurrent.as_mut_ptr(),
                        gates,
                        false,
                        (h_prev.as_ptr(), hidden, 1),
                        (w_hh.as_ptr(), gates, 1),
                    )
                };
                h_prev
            };
            // SAFETY: see above.
            let (rn, h) = unsafe { (rn_ptr.slice(state(t)), h_ptr.slice(state(t))) };
            gru_forward_rows(g, &recurrent, &b_ih, &b_hh, h_prev, rn, h, hidden);
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
                recurrent_n,
                hiddens,
            }),
        )
    } else {
        for buffer in [all_gates, recurrent_n, hiddens] {
            pool::give(buffer);
        }
        (out, None)
    }
}

#[derive(Debug)]
struct GruBackward;

impl Backward<Flex, 5> for GruBackward {
    type State = GruState;

    fn backward(
        self,
        ops: Ops<Self::State, 5>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad_h = grads.consume::<Flex>(&ops.node);
        let [p_x, p_w_ih, p_w_hh, p_b_ih, p_b_hh] = ops.parents;
        let GruState {
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
        let (input, gates) = (x.layout().shape()[2], 3 * hidden);
        let grad_h = slice(&grad_h);
        let w_hh_t = transposed(&slice(&w_hh), hidden, gates);

        // BPTT, each batch chunk on its own thread: the input-side and recurrent-side gate
        // gradients of every step (they differ only in `n`, which `r` scales on the recurrent
        // side), and per chunk the two bias gradients.
        let mut d_input = pool::take(steps * batch * gates);
        let mut d_recurrent = pool::take(steps * batch * gates);
        let (di_ptr, dr_ptr) = (Rows(d_input.as_mut_ptr()), Rows(d_recurrent.as_mut_ptr()));
        let zeros = vec![0.0f32; batch * hidden];
        let db_parts = map_chunks(batch, |rows| {
            let (r0, nb) = (rows.start, rows.len());
            let mut dh = grad_h[r0 * hidden..rows.end * hidden].to_vec();
            let (mut db_i, mut db_h) = (vec![0.0f32; gates], vec![0.0f32; gates]);
            for t in (0..steps).rev() {
                let at = |width: usize| (t * batch + r0) * width..(t * batch + rows.end) * width;
                let h_prev = if t == 0 {
                    &zeros[..nb * hidden]
                } else {
                    &saved.hiddens
                        [((t - 1) * batch + r0) * hidden..((t - 1) * batch + rows.end) * hidden]
                };
                // SAFETY: chunks own disjoint rows of both buffers, which outlive the scope.
                let (di, dr) = unsafe { (di_ptr.slice(at(gates)), dr_ptr.slice(at(gates))) };
                let (a, rn) = (&saved.gates[at(gates)], &saved.recurrent_n[at(hidden)]);
                gru_backward_rows(a, rn, h_prev, &mut dh, di, dr, &mut db_i, &mut db_h, hidden);
                if t > 0 {
                    // dh_{t-1} = dh ⊙ z (already in `dh`) + d_recurrent_t · W_hhᵀ
                    // SAFETY: `dr` is this chunk's nb × gates rows, `w_hh_t` gates × hidden,
                    // `dh` nb × hidden and owned by this chunk.
                    unsafe {
                        gemm_raw(
                            (nb, hidden, gates),
                            dh.as_mut_ptr(),
                            hidden,
                            true,
                            (dr.as_ptr(), gates, 1),
                            (w_hh_t.as_ptr(), hidden, 1),
                        )
                    };
                }
            }
            (db_i, db_h)
        });

        let mut db_i = vec![0.0f32; gates];
        let mut db_h = vec![0.0f32; gates];
        for (part_i, part_h) in db_parts {
            for (s, v) in db_i.iter_mut().zip(part_i) {
                *s += v;
            }
            for (s, v) in db_h.iter_mut().zip(part_h) {
                *s += v;
            }
        }
        if let Some(node) = p_b_ih {
            grads.register::<Flex>(node.id, tensor(db_i, [gates]));
        }
        if let Some(node) = p_b_hh {
            grads.register::<Flex>(node.id, tensor(db_h, [gates]));
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
            (&d_input, &d_recurrent),
            dims,
        );
        pool::give(d_input);
        pool::give(d_recurrent);
    }
}

multiversion! {
    /// One step of a chunk of rows: `g` (`rows × 3H`, the projected input without bias) becomes
    /// the activated gates `r, z, n` in place; `rn` gets `W_hn h + b_hn` and `h` the new state.
    fn gru_forward_rows / gru_forward_rows_wide / gru_forward_rows_body(
        g: &mut [f32], recurrent: &[f32], b_ih: &[f32], b_hh: &[f32], h_prev: &[f32], rn: &mut [f32], h: &mut [f32], hidden: usize,
    )
}

multiversion! {
    /// One step of a chunk of rows backwards: `a` the activated gates, `rn` the saved recurrent
    /// `n` term; `dh` comes in as `∂L/∂h_t` and leaves as its direct part of `∂L/∂h_{t-1}`
    /// (`dh ⊙ z`); `di` and `dr` receive the input- and recurrent-side pre-activation gradients,
    /// `db_i` and `db_h` sum them.
    fn gru_backward_rows / gru_backward_rows_wide / gru_backward_rows_body(
        a: &[f32], rn: &[f32], h_prev: &[f32], dh: &mut [f32], di: &mut [f32], dr: &mut [f32], db_i: &mut [f32], db_h: &mut [f32], hidden: usize,
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_forward_rows_body(
    g: &mut [f32],
    recurrent: &[f32],
    b_ih: &[f32],
    b_hh: &[f32],
    h_prev: &[f32],
    rn: &mut [f32],
    h: &mut [f32],
    hidden: usize,
) {
    let gates = 3 * hidden;
    let rows = g.chunks_exact_mut(gates).zip(recurrent.chunks_exact(gates));
    let state = h_prev
        .chunks_exact(hidden)
        .zip(rn.chunks_exact_mut(hidden))
        .zip(h.chunks_exact_mut(hidden));
    for ((g, rec), ((h_prev, rn), h)) in rows.zip(state) {
        let (rz, n) = g.split_at_mut(2 * hidden);
        for (((v, r), bi), bh) in rz
            .iter_mut()
            .zip(&rec[..2 * hidden])
            .zip(&b_ih[..2 * hidden])
            .zip(&b_hh[..2 * hidden])
        {
            *v = sigmoid(*v + bi + r + bh);
        }
        let (r, z) = rz.split_at(hidden);
        for j in 0..hidden {
            let rn_j = rec[2 * hidden + j] + b_hh[2 * hidden + j];
            let n_j = tanh(n[j] + b_ih[2 * hidden + j] + r[j] * rn_j);
            rn[j] = rn_j;
            n[j] = n_j;
            h[j] = n_j + z[j] * (h_prev[j] - n_j);
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_backward_rows_body(
    a: &[f32],
    rn: &[f32],
    h_prev: &[f32],
    dh: &mut [f32],
    di: &mut [f32],
    dr: &mut [f32],
    db_i: &mut [f32],
    db_h: &mut [f32],
    hidden: usize,
) {
    let gates = 3 * hidden;
    let rows = a
        .chunks_exact(gates)
        .zip(di.chunks_exact_mut(gates))
        .zip(dr.chunks_exact_mut(gates));
    let state = rn
        .chunks_exact(hidden)
        .zip(h_prev.chunks_exact(hidden))
        .zip(dh.chunks_exact_mut(hidden));
    for (((a, di), dr), ((rn, h_prev), dh)) in rows.zip(state) {
        let (ar, rest) = a.split_at(hidden);
        let (az, an) = rest.split_at(hidden);
        let (di_r, rest) = di.split_at_mut(hidden);
        let (di_z, di_n) = rest.split_at_mut(hidden);
        let (dr_r, rest) = dr.split_at_mut(hidden);
        let (dr_z, dr_n) = rest.split_at_mut(hidden);
        for j in 0..hidden {
            let (r, z, n, dhv) = (ar[j], az[j], an[j], dh[j]);
            let dn = dhv * (1.0 - z) * (1.0 - n * n);
            let dz = dhv * (h_prev[j] - n) * z * (1.0 - z);
            let drv = dn * rn[j] * r * (1.0 - r);
            di_r[j] = drv;
            di_z[j] = dz;
            di_n[j] = dn;
            dr_r[j] = drv;
            dr_z[j] = dz;
            dr_n[j] = dn * r;
            dh[j] = dhv * z;
        }
        for (s, v) in db_i.iter_mut().zip(di.iter()) {
            *s += v;
        }
        for (s, v) in db_h.iter_mut().zip(dr.iter()) {
            *s += v;
        }
    }
}
