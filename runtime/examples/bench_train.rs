//! Training throughput of one model: windows of `--lookback` × 8 random features, batches of
//! `--batch-size`, cross-entropy + Adam, exactly the step `runtime train` takes. Prints one JSON
//! line. CPU threads: `RAYON_NUM_THREADS`. `--device cuda` needs `--features runtime/cuda`.
//!
//! cargo run --release --example bench_train -- --model cnn_lstm --lookback 128 --batch-size 256 [--unfused] [--device cuda]
//!
//! `--phase forward|backward` times the step only up to there (for a breakdown of `full`).
//!
//! `--check` instead compares the fused LSTM with the tensor-API cell on the device (logits and
//! every parameter gradient of the LSTM models, at the given lookback and batch size), prints the
//! largest differences and exits 1 when they are out of tolerance: the correctness check of the
//! CUDA kernels on a GPU machine, where no unit test runs.

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use runtime::train::model::{Model, ModelKind, N_FEATURES};
use runtime::train::probe::{eval_logits, logits_and_grads};

struct Args {
    kind: ModelKind,
    lookback: usize,
    batch: usize,
    steps: usize,
    warmup: usize,
    unfused: bool,
    /// `full` (the training step), or `forward` / `backward` to time the step up to there.
    phase: String,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or(default.to_string())
    };
    let kind: ModelKind = flag("--model", "cnn_lstm").parse().unwrap();
    let lookback: usize = flag("--lookback", "128").parse().unwrap();
    let batch: usize = flag("--batch-size", "256").parse().unwrap();
    let steps: usize = flag("--steps", "20").parse().unwrap();
    let warmup: usize = flag("--warmup", "3").parse().unwrap();

    // The tensor-API LSTM the fused op replaced, for before/after figures from one build.
    let unfused = args.iter().any(|a| a == "--unfused");
    if unfused {
        runtime::train::fused::disable();
    }
    let phase = flag("--phase", "full");
    assert!(
        ["full", "forward", "backward"].contains(&phase.as_str()),
        "--phase {phase}: expected full, forward or backward"
    );
    let check = args.iter().any(|a| a == "--check");
    let args = Args {
        kind,
        lookback,
        batch,
        steps,
        warmup,
        unfused,
        phase,
    };
    match flag("--device", "cpu").as_str() {
        "cpu" if check => exit_on(check_fused::<Autodiff<Flex>>(
            lookback,
            batch,
            &Default::default(),
        )),
        "cpu" => run::<Autodiff<Flex>>(&args, &Default::default(), "flex"),
        #[cfg(feature = "cuda")]
        "cuda" => {
            runtime::train::device::DeviceKind::Cuda.check().unwrap();
            if check {
                exit_on(check_fused::<Autodiff<burn::backend::Cuda>>(
                    lookback,
                    batch,
                    &Default::default(),
                ));
            }
            run::<Autodiff<burn::backend::Cuda>>(&args, &Default::default(), "cuda")
        }
        other => panic!(
            "--device {other}: expected cpu, or cuda in a build with --features runtime/cuda"
        ),
    }
}

fn exit_on(ok: bool) -> ! {
    std::process::exit(if ok { 0 } else { 1 })
}

/// The fused path against the tensor-API cell on the same device, for both LSTM models and in
/// evaluation (no autodiff) too; prints one JSON line per model.
fn check_fused<B: AutodiffBackend>(lookback: usize, batch: usize, device: &B::Device) -> bool
where
    Model<B>: AutodiffModule<B>,
{
    let kinds = [ModelKind::CnnLstm, ModelKind::Lstm];
    let fused: Vec<_> = kinds
        .iter()
        .map(|&k| logits_and_grads::<B>(k, lookback, batch, device))
        .collect();
    let eval_fused: Vec<Vec<f32>> = kinds
        .iter()
        .map(|&k| eval_logits::<B>(k, lookback, batch, device))
        .collect();
    runtime::train::fused::disable();
    let mut ok = true;
    for (i, &kind) in kinds.iter().enumerate() {
        let (ref_logits, ref_grads) = logits_and_grads::<B>(kind, lookback, batch, device);
        let ref_eval = eval_logits::<B>(kind, lookback, batch, device);
        // The largest difference relative to the reference's own scale, per tensor.
        let diff = |a: &[f32], b: &[f32]| -> f32 {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
        };
        let mut worst = vec![
            diff(&fused[i].0, &ref_logits),
            diff(&eval_fused[i], &ref_eval),
        ];
        worst.extend(fused[i].1.iter().zip(&ref_grads).map(|(a, b)| diff(a, b)));
        let max = worst.iter().fold(0f32, |m, v| m.max(*v));
        let pass = max <= 1e-3
            && fused[i].1.len() == ref_grads.len()
            && worst.iter().all(|v| v.is_finite());
        ok &= pass;
        println!("{{\"check\": \"{kind}\", \"lookback\": {lookback}, \"batch_size\": {batch}, \"max_relative_difference\": {max:e}, \"per_tensor\": {worst:?}, \"pass\": {pass}}}");
    }
    ok
}

fn run<B: AutodiffBackend>(args: &Args, device: &B::Device, backend: &str)
where
    Model<B>: AutodiffModule<B>,
{
    let Args {
        kind,
        lookback,
        batch,
        steps,
        warmup,
        unfused,
        ref phase,
    } = *args;
    let mut model: Model<B> = kind.init(1, device);
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init::<B, Model<B>>();
    let ce = CrossEntropyLossConfig::new().init(device);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..batch * lookback * N_FEATURES)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let y: Vec<i64> = (0..batch).map(|_| rng.random_range(0..3)).collect();
    let mut timed = 0.0;
    for step in 0..warmup + steps {
        let started = Instant::now();
        let xb = Tensor::<B, 3>::from_data(
            TensorData::new(x.clone(), [batch, lookback, N_FEATURES]),
            device,
        );
        let yb = Tensor::<B, 1, Int>::from_data(TensorData::new(y.clone(), [batch]), device);
        let loss = ce.forward(model.forward(xb), yb);
        let _: f32 = loss.clone().into_scalar().elem();
        match phase.as_str() {
            "forward" => {}
            "backward" => {
                let _grads = GradientsParams::from_grads(loss.backward(), &model);
                B::sync(device).expect("device sync");
            }
            _ => {
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(1e-3, model, grads);
            }
        }
        if step >= warmup {
            timed += started.elapsed().as_secs_f64();
        }
    }
    println!(
        "{{\"framework\": \"burn\", \"backend\": \"{backend}\", \"lstm\": \"{}\", \"phase\": \"{phase}\", \"model\": \"{kind}\", \"lookback\": {lookback}, \"batch_size\": {batch}, \"threads\": \"{}\", \"parameters\": {}, \"steps\": {steps}, \"samples_per_s\": {:.1}}}",
        if unfused { "tensor-api" } else { "fused" },
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into()),
        model.num_params(),
        (steps * batch) as f64 / timed
    );
}
