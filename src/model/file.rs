//! The lab file exactly as written: serde types that mirror the TOML, with spans kept on the values that
//! validation may reject, so every error can name the file, line and column.

use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabFile {
    pub name: Spanned<String>,
    pub network: NetworkFile,
    #[serde(default)]
    pub defaults: DefaultsFile,
    /// `amd64` or `arm64`; the host's architecture when absent.
    pub arch: Option<Spanned<String>>,
    /// Rewrites every upstream URL to `MIRROR/<host>/<path>`.
    pub mirror: Option<Spanned<String>>,
    #[serde(default, rename = "machine")]
    pub machines: Vec<MachineFile>,
    #[serde(default, rename = "image")]
    pub images: Vec<ImageFile>,
    #[serde(default, rename = "download")]
    pub downloads: Vec<DownloadFile>,
    #[serde(default, rename = "checkpoint")]
    pub checkpoints: Vec<CheckpointFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    pub subnet: Spanned<String>,
    pub gateway: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsFile {
    pub image: Option<Spanned<String>>,
    pub cpus: Option<Spanned<u32>>,
    pub memory: Option<Spanned<SizeValue>>,
    pub disk: Option<Spanned<SizeValue>>,
    pub user: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineFile {
    pub name: Spanned<String>,
    pub ip: Spanned<String>,
    pub image: Option<Spanned<String>>,
    pub cpus: Option<Spanned<u32>>,
    pub memory: Option<Spanned<SizeValue>>,
    pub disk: Option<Spanned<SizeValue>>,
    pub user: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFile {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    pub sha256: Option<Spanned<String>>,
    pub checksum_url: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    /// Only in the embedded catalog: a human description (documentation; lab does not use it).
    #[allow(dead_code)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadFile {
    pub name: Spanned<String>,
    pub version: Option<Spanned<String>>,
    pub url: Spanned<String>,
    pub sha256: Option<Spanned<String>>,
    pub checksum_url: Option<Spanned<String>>,
    pub insecure_no_checksum: Option<Spanned<bool>>,
    pub machines: Option<Spanned<Vec<Spanned<String>>>>,
    pub dest: Option<Spanned<String>>,
    #[serde(rename = "as")]
    pub as_name: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    /// Per-architecture pinned sums, e.g. `sha256_by_arch = { amd64 = "…", arm64 = "…" }`; keys and values keep
    /// their spans, so a bad entry is reported where it is written.
    #[serde(default)]
    pub sha256_by_arch: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointFile {
    pub name: Spanned<String>,
    pub after: Option<Spanned<String>>,
    pub description: Option<String>,
    #[serde(default)]
    pub aliases: Vec<Spanned<String>>,
    #[serde(default, rename = "step")]
    pub steps: Vec<StepFile>,
    #[serde(default, rename = "check")]
    pub checks: Vec<CheckFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    pub machines: Option<Spanned<Vec<Spanned<String>>>>,
    pub script: Option<Spanned<String>>,
    pub run: Option<Spanned<String>>,
    #[serde(default)]
    pub copy: Vec<CopyFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyFile {
    /// `MACHINE:/path` on the source machine.
    pub from: Spanned<String>,
    /// Absolute path on each of the step's machines.
    pub to: Spanned<String>,
    pub mode: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckFile {
    pub name: Option<String>,
    pub machines: Option<Spanned<Vec<Spanned<String>>>>,
    pub run: Spanned<String>,
}

/// A size as written: a string like `"2GiB"`, or a bare TOML number (`memory = 2048`), which validation refuses
/// with a hint about units rather than the parser's "expected a string".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeValue {
    Text(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size with a unit, like \"2GiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeValue, E> {
                Ok(SizeValue::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeValue, E> {
                Ok(SizeValue::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(Visitor)
    }
}
