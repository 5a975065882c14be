//! The compute device: burn's Flex backend on the CPU, CUDA with the `cuda` feature.

use anyhow::Result;

use super::fit::{fit as fit_on, Job, Outcome};
use super::summary::ModelSummary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    Cpu,
    #[value(alias = "gpu")]
    Cuda,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// Fails with what is missing, before any device is created: without a driver, creating the
    /// CUDA device panics on one of burn's worker threads instead of returning an error.
    pub fn check(self) -> Result<()> {
        match self {
            DeviceKind::Cpu => Ok(()),
            DeviceKind::Cuda => check_cuda(),
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn check_cuda() -> Result<()> {
    anyhow::bail!(
        "--device cuda: this runtime was built without CUDA support; build it with \
         `cargo build --release --features cuda` (the GPU image does), or use --device cpu"
    )
}

#[cfg(feature = "cuda")]
fn check_cuda() -> Result<()> {
    use anyhow::{anyhow, bail};
    use cudarc::driver::result;
    // SAFETY: only tries to dlopen the driver library; nothing is called through it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        bail!(
            "--device cuda: no NVIDIA driver found (libcuda.so could not be loaded); run on a GPU \
             instance (stack gpu = true, whose AMI has the driver) or use --device cpu"
        );
    }
    // SAFETY: as above, for NVRTC, which compiles burn's kernels at run time.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        bail!("--device cuda: the NVIDIA driver is present but NVRTC (libnvrtc.so) is not; use an image with the CUDA runtime libraries");
    }
    result::init()
        .map_err(|e| anyhow!("--device cuda: the CUDA driver failed to initialise: {e:?}"))?;
    let count = result::device::get_count()
        .map_err(|e| anyhow!("--device cuda: counting GPUs failed: {e:?}"))?;
    if count < 1 {
        bail!("--device cuda: the NVIDIA driver sees no GPU");
    }
    Ok(())
}

/// Runs `fit` on the backend of `kind`.
pub fn fit(
    kind: DeviceKind,
    job: &Job<'_>,
    publish: &mut dyn FnMut(&ModelSummary) -> Result<()>,
) -> Result<Outcome> {
    match kind {
        DeviceKind::Cpu => {
            type B = burn::backend::Autodiff<burn::backend::Flex>;
            fit_on::<B>(job, &Default::default(), publish)
        }
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            type B = burn::backend::Autodiff<burn::backend::Cuda>;
            fit_on::<B>(job, &Default::default(), publish)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => {
            check_cuda().map(|_| unreachable!("check_cuda fails without the feature"))
        }
    }
}
