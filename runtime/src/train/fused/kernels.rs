//! The toolkit the fused recurrent ops share (the LSTM's in `mod.rs`, the GRU's in
//! `fused_gru.rs`): strided GEMMs that split their rows or their inner dimension over the rayon
//! threads, the batch split into row ranges, a pool of activation buffers, branch-free
//! activations, the AVX2 + FMA second compilation of the gate loops, and the weight and input
//! gradients that follow from BPTT's gate gradients.

use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::TensorData;

/// The sizes of a recurrent op: `gates` is `4H` for the LSTM, `3H` for the GRU.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
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
pub(crate) fn register_projection_grads(
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
pub(crate) struct Rows(pub(crate) *mut f32);

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
    pub(crate) fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }

    /// # Safety
    /// `range` lies inside the buffer and no other live slice overlaps it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, range: std::ops::Range<usize>) -> &mut [f32] {
        // SAFETY: the caller guarantees `range` lies inside the live buffer and that nothing
        // else reads or writes it while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}

/// Runs `f` on contiguous row ranges of the batch, one per rayon thread (one range, inline, when
/// there is a single thread), and returns the results in row order.
pub(crate) fn map_chunks<R: Send>(
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
pub(crate) unsafe fn gemm_raw(
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
pub(crate) unsafe fn gemm_rows(
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
pub(crate) unsafe fn gemm_sum(
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
pub(crate) fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

pub(crate) fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The values of an f32 tensor in row-major order, borrowed when its layout allows.
pub(crate) fn slice(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
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
pub(crate) mod pool {
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

pub(crate) use multiversion;

#[cfg(target_arch = "x86_64")]
pub(crate) fn wide_simd() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
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
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

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
