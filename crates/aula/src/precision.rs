//! In which number format the frozen layers run: fp32, or bf16 (bfloat16: the
//! same range as fp32 with 8 bits of mantissa instead of 24).
//!
//! A frozen convolution only has to be good enough for the layers after it,
//! and bf16 halves the memory each value takes. Whether that makes it faster
//! depends on the chip, not on its flags: on one 2-core CPU with AVX512-BF16
//! PyTorch ran VGG16's base twice as fast in bf16, on another that reports the
//! same flag 0.7× as fast, and where the CPU lacks it libtorch emulates bf16 (≈ 8×
//! slower). So on a CPU the choice is measured: a short calibration of
//! VGG16-sized convolutions in both formats, kept in a file per CPU model,
//! thread count and libtorch version. On CUDA bf16 is taken as it is. The
//! variable `AULA_PRECISION=fp32|bf16` overrides both.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Bf16,
}

impl Precision {
    /// libtorch's element type.
    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => bail!("unknown precision '{s}' (use fp32 or bf16)"),
        }
    }
}

/// bf16 must be at least this much faster to be chosen: a smaller gain is
/// within the noise of a 2-core machine and not worth the rounding.
pub const MIN_BF16_SPEEDUP: f64 = 1.15;

/// The precision of the frozen layers on a device, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    pub precision: Precision,
    /// "elegida con AULA_PRECISION", "CUDA", or what the calibration measured.
    pub reason: String,
    /// The CPU calibration, when the choice came from it.
    pub calibration: Option<Calibration>,
}

impl std::fmt::Display for Policy {
    /// "bf16 (amx_bf16: 2,4× fp32, medido)": what `device_info()` shows (in Spanish, as the notebooks).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.precision, self.reason)
    }
}

/// What the calibration measured on one CPU, as its cache file keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Calibration {
    pub key: CalibrationKey,
    /// Best time of the calibration convolutions, milliseconds.
    pub fp32_ms: f64,
    pub bf16_ms: f64,
    /// `fp32_ms / bf16_ms`: above 1, bf16 is faster.
    pub bf16_speedup: f64,
    pub precision: Precision,
    pub reason: String,
    /// Where it is kept.
    #[serde(skip)]
    pub path: PathBuf,
    /// True when it was read from that file rather than measured now.
    #[serde(skip)]
    pub from_cache: bool,
}

/// What the calibration depends on: one file per CPU model, bf16-relevant
/// flags, thread count and libtorch version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationKey {
    /// `/proc/cpuinfo`'s "model name".
    pub cpu_model: String,
    /// Which of avx2, avx512f, avx512_bf16, amx_bf16 the CPU reports.
    pub cpu_flags: Vec<String>,
    pub threads: i64,
    pub libtorch: String,
}

/// The flags that say how a CPU can do bf16 arithmetic (shown and keyed on;
/// they do not decide, the measurement does).
const BF16_FLAGS: [&str; 4] = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"];

impl CalibrationKey {
    /// This machine's CPU, libtorch's current thread count and version.
    pub fn this_machine() -> CalibrationKey {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let flags = field("flags").unwrap_or_default();
        let present: Vec<&str> = flags.split_whitespace().collect();
        CalibrationKey {
            cpu_model: field("model name").unwrap_or_else(|| "unknown CPU".to_string()),
            cpu_flags: BF16_FLAGS.iter().filter(|f| present.contains(f)).map(|f| f.to_string()).collect(),
            threads: tch::get_num_threads() as i64,
            libtorch: crate::device::libtorch_version().to_string(),
        }
    }

    /// The cache file's name: readable, plus a hash of every field.
    pub fn file_name(&self) -> String {
        let json = serde_json::to_vec(self).expect("a key is plain data");
        let hash = hex::encode(Sha256::digest(&json));
        let model: String = self
            .cpu_model
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect();
        let model = model.split('-').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("-");
        format!("{model}-{}t-libtorch-{}-{}.json", self.threads, self.libtorch, &hash[..12])
    }

    /// The best bf16 hardware the flags report, for the reason shown.
    fn native_bf16(&self) -> Option<&str> {
        ["amx_bf16", "avx512_bf16"].into_iter().find(|f| self.cpu_flags.iter().any(|g| g == f))
    }
}

/// The policy for `device`, decided once per process (the CPU calibration
/// runs at most once per CPU model and libtorch version, then comes from its file).
pub fn policy(device: Device) -> &'static Policy {
    static CPU: OnceLock<Policy> = OnceLock::new();
    static CUDA: OnceLock<Policy> = OnceLock::new();
    let cuda = matches!(device, Device::Cuda(_));
    let cell = if cuda { &CUDA } else { &CPU };
    cell.get_or_init(|| {
        let overridden = parse_override(std::env::var("AULA_PRECISION").ok().as_deref()).unwrap_or_else(|e| {
            eprintln!("warning: {e:#}; choosing automatically");
            None
        });
        match overridden {
            Some(precision) => Policy { precision, reason: "elegida con AULA_PRECISION".to_string(), calibration: None },
            // Every GPU libtorch 2.11 supports runs bf16 convolutions natively or in its tensor cores.
            None if cuda => Policy { precision: Precision::Bf16, reason: "CUDA".to_string(), calibration: None },
            None => {
                let c = cpu_calibration().clone();
                // The reason is worded now, not read from the file: an older file may hold another wording.
                let (chosen, reason) = choose(c.bf16_speedup, &c.key);
                let reason = if chosen == c.precision { reason } else { c.reason.clone() };
                Policy { precision: c.precision, reason, calibration: Some(c) }
            }
        }
    })
}

/// `AULA_PRECISION`'s value, if set: an error names the variable and the value.
pub fn parse_override(value: Option<&str>) -> Result<Option<Precision>> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).with_context(|| format!("AULA_PRECISION={v} is not fp32 or bf16")),
    }
}

/// This CPU's calibration, from `<cache>/precision/` or measured now (once per process).
pub fn cpu_calibration() -> &'static Calibration {
    static CALIBRATION: OnceLock<Calibration> = OnceLock::new();
    CALIBRATION.get_or_init(|| {
        let dir = crate::paths::cache_dir().join("precision");
        load_or_calibrate(&dir, &CalibrationKey::this_machine(), &VGG16_CONVS)
    })
}

/// One 3×3 'same' convolution of the calibration, `channels` in and out.
#[derive(Clone, Copy, Debug)]
pub struct Conv {
    pub batch: i64,
    pub channels: i64,
    pub size: i64,
}

/// VGG16's block 3 and block 4 convolutions at a 150×150 input (37×37×256
/// and 18×18×512), in batches of 4: 12.6 GFLOP per timing, 4 timings per
/// format. On a busy 2-core Xeon with AMX the whole calibration took 0.5-0.9 s
/// (bf16 2.4-7× fp32); with oneDNN held to AVX2 (`DNNL_MAX_CPU_ISA=AVX2`, as
/// on CPUs without bf16 units) 3.6 s, bf16 0.17× fp32.
pub const VGG16_CONVS: [Conv; 2] = [Conv { batch: 4, channels: 256, size: 37 }, Conv { batch: 4, channels: 512, size: 18 }];

/// The calibration kept in `dir` for `key`, or measured with `convs` and
/// kept there. A file that cannot be read is measured again, not an error.
pub fn load_or_calibrate(dir: &Path, key: &CalibrationKey, convs: &[Conv]) -> Calibration {
    let path = dir.join(key.file_name());
    match read(&path, key) {
        Ok(Some(mut c)) => {
            c.path = path;
            c.from_cache = true;
            return c;
        }
        Ok(None) => {}
        Err(e) => eprintln!("warning: measuring bf16 again: {e:#}"),
    }
    let (fp32_ms, bf16_ms) = measure(convs);
    let bf16_speedup = fp32_ms / bf16_ms;
    let (precision, reason) = choose(bf16_speedup, key);
    let c = Calibration { key: key.clone(), fp32_ms, bf16_ms, bf16_speedup, precision, reason, path, from_cache: false };
    // A file that cannot be written costs a calibration next time, not this run.
    let written = std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .and_then(|_| crate::paths::write_atomic(&c.path, &serde_json::to_vec_pretty(&c).expect("plain data")));
    if let Err(e) = written {
        eprintln!("warning: the precision calibration is not kept: {e:#}");
    }
    c
}

/// None when there is no file yet; an error when it is damaged or for another key.
fn read(path: &Path, key: &CalibrationKey) -> Result<Option<Calibration>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let c: Calibration = serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))?;
    if c.key != *key {
        bail!("{} was measured on another machine ({:?})", path.display(), c.key);
    }
    if !(c.fp32_ms > 0.0 && c.bf16_ms > 0.0) {
        bail!("{} holds no timings", path.display());
    }
    Ok(Some(c))
}

/// bf16 when it measured at least `MIN_BF16_SPEEDUP`× as fast as fp32.
pub fn choose(bf16_speedup: f64, key: &CalibrationKey) -> (Precision, String) {
    if bf16_speedup >= MIN_BF16_SPEEDUP {
        let hardware = key.native_bf16().unwrap_or("no bf16 flag");
        (Precision::Bf16, format!("{hardware}: {} fp32, medido", times(bf16_speedup, 1)))
    } else {
        (Precision::Fp32, format!("bf16 medido a {} fp32", times(bf16_speedup, 2)))
    }
}

/// "6,9×": a ratio as a Spanish reader writes it.
fn times(ratio: f64, decimals: usize) -> String {
    format!("{ratio:.decimals$}×").replace('.', ",")
}

/// Best of 3 timings (after a warm-up, which builds oneDNN's kernels) of
/// `convs` in fp32 and in bf16, channels-last as the models run; the two
/// formats alternate so that a busy machine slows both alike. Milliseconds.
fn measure(convs: &[Conv]) -> (f64, f64) {
    let _guard = tch::no_grad_guard();
    let operands = |kind: Kind| -> Vec<(Tensor, Tensor, Tensor)> {
        convs
            .iter()
            .map(|c| {
                let x = Tensor::randn([c.batch, c.channels, c.size, c.size], (Kind::Float, Device::Cpu));
                let w = Tensor::randn([c.channels, c.channels, 3, 3], (Kind::Float, Device::Cpu)) * 0.02;
                let b = Tensor::zeros([c.channels], (Kind::Float, Device::Cpu));
                let cl = crate::device::to_channels_last;
                (cl(&x).to_kind(kind), cl(&w).to_kind(kind), b.to_kind(kind))
            })
            .collect()
    };
    let time = |ops: &[(Tensor, Tensor, Tensor)]| {
        let start = Instant::now();
        for (x, w, b) in ops {
            let _ = x.conv2d(w, Some(b), [1, 1], [1, 1], [1, 1], 1);
        }
        start.elapsed().as_secs_f64() * 1e3
    };
    let (fp32, bf16) = (operands(Kind::Float), operands(Kind::BFloat16));
    time(&fp32);
    time(&bf16);
    let (mut fp32_ms, mut bf16_ms) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        fp32_ms = fp32_ms.min(time(&fp32));
        bf16_ms = bf16_ms.min(time(&bf16));
    }
    (fp32_ms, bf16_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CalibrationKey {
        CalibrationKey {
            cpu_model: "Test CPU".into(),
            cpu_flags: vec!["avx2".into(), "avx512f".into(), "amx_bf16".into()],
            threads: 2,
            libtorch: "2.11.0".into(),
        }
    }

    /// Small enough for every machine, emulated bf16 included.
    const SMALL: [Conv; 1] = [Conv { batch: 2, channels: 32, size: 16 }];

    #[test]
    fn aula_precision_is_parsed_and_a_bad_value_names_the_variable() {
        assert_eq!(parse_override(None).unwrap(), None);
        assert_eq!(parse_override(Some("")).unwrap(), None);
        assert_eq!(parse_override(Some("bf16")).unwrap(), Some(Precision::Bf16));
        assert_eq!(parse_override(Some("FP32")).unwrap(), Some(Precision::Fp32));
        let e = format!("{:#}", parse_override(Some("fp16")).unwrap_err());
        assert!(e.contains("AULA_PRECISION=fp16") && e.contains("fp32 or bf16"), "{e}");
    }

    #[test]
    fn bf16_is_chosen_only_when_clearly_faster() {
        let (p, reason) = choose(2.4, &key());
        assert_eq!((p, reason.as_str()), (Precision::Bf16, "amx_bf16: 2,4× fp32, medido"));
        let (p, reason) = choose(0.6, &key());
        assert_eq!((p, reason.as_str()), (Precision::Fp32, "bf16 medido a 0,60× fp32"));
        assert_eq!(choose(1.1, &key()).0, Precision::Fp32, "within the noise");
        let policy = Policy { precision: Precision::Bf16, reason: "amx_bf16: 2,4× fp32, medido".into(), calibration: None };
        assert_eq!(policy.to_string(), "bf16 (amx_bf16: 2,4× fp32, medido)");
    }

    #[test]
    fn every_field_of_the_key_names_another_file() {
        let base = key();
        let mut others = vec![base.clone(); 4];
        others[0].cpu_model = "Other CPU".into();
        others[1].cpu_flags.retain(|f| f != "amx_bf16");
        others[2].threads = 4;
        others[3].libtorch = "2.13.0".into();
        let mut names: Vec<String> = others.iter().map(CalibrationKey::file_name).collect();
        names.push(base.file_name());
        assert!(base.file_name().starts_with("test-cpu-2t-libtorch-2.11.0-"), "{}", base.file_name());
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 5, "{names:?}");
    }

    /// Measured once and written; then read, not measured (a planted reason
    /// comes back); a damaged file or one of another key is measured again.
    #[test]
    fn calibration_is_kept_reused_and_remeasured_when_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_calibrate(dir.path(), &key(), &SMALL);
        assert!(!first.from_cache && first.path.exists());
        assert!(first.fp32_ms > 0.0 && first.bf16_ms > 0.0);
        assert!((first.bf16_speedup - first.fp32_ms / first.bf16_ms).abs() < 1e-9);

        let mut planted: serde_json::Value = serde_json::from_slice(&std::fs::read(&first.path).unwrap()).unwrap();
        planted["reason"] = "planted by the test".into();
        planted["precision"] = "bf16".into();
        std::fs::write(&first.path, serde_json::to_vec(&planted).unwrap()).unwrap();
        let again = load_or_calibrate(dir.path(), &key(), &SMALL);
        assert!(again.from_cache && again.reason == "planted by the test" && again.precision == Precision::Bf16);
        assert_eq!(again.fp32_ms, first.fp32_ms);

        std::fs::write(&first.path, b"{ not json").unwrap();
        let remeasured = load_or_calibrate(dir.path(), &key(), &SMALL);
        assert!(!remeasured.from_cache && remeasured.reason != "planted by the test");
        let back = load_or_calibrate(dir.path(), &key(), &SMALL);
        assert!(back.from_cache && back.fp32_ms == remeasured.fp32_ms, "the damaged file was not rewritten");

        // A file copied from another machine under this name is not trusted.
        let mut other = key();
        other.cpu_model = "Other CPU".into();
        let foreign = load_or_calibrate(dir.path(), &other, &SMALL);
        std::fs::copy(&foreign.path, &first.path).unwrap();
        assert!(!load_or_calibrate(dir.path(), &key(), &SMALL).from_cache);
    }
}
