//! Where the tensors live and how many CPU threads libtorch may use.

use tch::{Device, Tensor};

/// CUDA when libtorch sees a GPU, otherwise the CPU. `AULA_DEVICE=cpu|cuda|cuda:N`
/// overrides the choice (e.g. to compare speeds on a GPU machine).
pub fn default_device() -> Device {
    match std::env::var("AULA_DEVICE").ok().as_deref() {
        Some("cpu") => Device::Cpu,
        Some(s) if s.starts_with("cuda") => {
            let index = s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).unwrap_or(0);
            Device::Cuda(index)
        }
        _ => Device::cuda_if_available(),
    }
}

/// One line a student can read, in Spanish as the notebooks: what runs their model, and in
/// which precision its frozen layers run and why: "CPU, 2 hilos, libtorch 2.11.0, bf16
/// (amx_bf16: 2,4× fp32, medido)". The first call on a CPU may run the
/// precision calibration (a few seconds, once per CPU model).
pub fn device_info() -> String {
    let device = default_device();
    let place = match device {
        Device::Cuda(i) => format!("GPU cuda:{i}"),
        _ => "CPU".to_string(),
    };
    let precision = crate::precision::policy(device);
    format!("{place}, {} hilos, libtorch {}, {precision}", tch::get_num_threads(), libtorch_version())
}

/// The CPU's model name (/proc/cpuinfo), for figures and provenance.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn libtorch_version() -> &'static str {
    "2.11.0"
}

/// Uses `AULA_THREADS` when set (benchmarks pin it); libtorch's default otherwise.
pub fn configure_threads() {
    if let Some(n) = std::env::var("AULA_THREADS").ok().and_then(|s| s.parse().ok()) {
        tch::set_num_threads(n);
    }
}

/// The same NCHW tensor, stored NHWC in memory (PyTorch's `channels_last`):
/// tch has no memory-format argument, but libtorch picks the layout from the
/// strides, and a permuted contiguous NHWC tensor has exactly those strides.
pub(crate) fn to_channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    /// The line ends with the precision the frozen layers run in and why.
    #[test]
    fn device_info_says_which_precision_and_why() {
        let info = super::device_info();
        let policy = crate::precision::policy(super::default_device());
        assert!(info.ends_with(&format!(", {policy}")), "{info}");
        assert!(info.contains(" fp32 (") || info.contains(" bf16 ("), "{info}");
        assert!(!policy.reason.is_empty());
    }
}
