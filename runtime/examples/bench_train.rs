//! Training throughput of one model: windows of `--lookback` × 8 random features, batches of
//! `--batch-size`, cross-entropy + Adam, exactly the step `runtime train` takes. Prints one JSON
//! line. CPU threads: `RAYON_NUM_THREADS`. `--device cuda` needs `--features runtime/cuda`.
//!
//! cargo run --release --example bench_train -- --model cnn_lstm --lookback 128 --batch-size 256 [--unfused] [--device cuda]

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

struct Args {
    kind: ModelKind,
    lookback: usize,
    batch: usize,
    steps: usize,
    warmup: usize,
    unfused: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: &str| -> String {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or(default.to_string())
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
    let args = Args { kind, lookback, batch, steps, warmup, unfused };
    match flag("--device", "cpu").as_str() {
        "cpu" => run::<Autodiff<Flex>>(&args, &Default::default(), "flex"),
        #[cfg(feature = "cuda")]
        "cuda" => {
            runtime::train::device::DeviceKind::Cuda.check().unwrap();
            run::<Autodiff<burn::backend::Cuda>>(&args, &Default::default(), "cuda")
        }
        other => panic!("--device {other}: expected cpu, or cuda in a build with --features runtime/cuda"),
    }
}

fn run<B: AutodiffBackend>(args: &Args, device: &B::Device, backend: &str)
where
    Model<B>: AutodiffModule<B>,
{
    let Args { kind, lookback, batch, steps, warmup, unfused } = *args;
    let mut model: Model<B> = kind.init(1, device);
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init::<B, Model<B>>();
    let ce = CrossEntropyLossConfig::new().init(device);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..batch * lookback * N_FEATURES).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<i64> = (0..batch).map(|_| rng.random_range(0..3)).collect();
    let mut timed = 0.0;
    for step in 0..warmup + steps {
        let started = Instant::now();
        let xb = Tensor::<B, 3>::from_data(TensorData::new(x.clone(), [batch, lookback, N_FEATURES]), device);
        let yb = Tensor::<B, 1, Int>::from_data(TensorData::new(y.clone(), [batch]), device);
        let loss = ce.forward(model.forward(xb), yb);
        let _: f32 = loss.clone().into_scalar().elem();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        if step >= warmup {
            timed += started.elapsed().as_secs_f64();
        }
    }
    println!(
        "{{\"framework\": \"burn\", \"backend\": \"{backend}\", \"lstm\": \"{}\", \"model\": \"{kind}\", \"lookback\": {lookback}, \"batch_size\": {batch}, \"threads\": \"{}\", \"parameters\": {}, \"steps\": {steps}, \"samples_per_s\": {:.1}}}",
        // The fused ops serve the CPU backend only; CUDA runs burn's own.
        if unfused || backend != "flex" { "tensor-api" } else { "fused" },
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into()),
        model.num_params(),
        (steps * batch) as f64 / timed
    );
}
