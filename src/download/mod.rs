//! TEMPORARY minimal download manager, replaced by the full one before landing.
use crate::model::Checksum;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub struct Item { pub name: String, pub url: String, pub checksum: Checksum }
#[derive(Debug, Clone)]
pub struct Fetched { pub name: String, pub url: String, pub path: PathBuf, pub sha256: String, pub size: u64 }
#[derive(Debug, Clone)]
pub struct Options { pub offline: bool, pub mirror: Option<String>, pub parallel: usize, pub retries: u32, pub timeout: std::time::Duration }
impl Default for Options { fn default() -> Self { Options { offline: false, mirror: None, parallel: 4, retries: 4, timeout: std::time::Duration::from_secs(30) } } }
pub trait Reporter: Send + Sync { fn start(&self, name: &str, total: Option<u64>); fn advance(&self, name: &str, bytes: u64); fn finish(&self, name: &str, cached: bool); fn message(&self, text: &str); }
pub struct Cache { root: PathBuf }
impl Cache { pub fn new(root: PathBuf) -> Self { Cache { root } } pub fn root(&self) -> &Path { &self.root } }
#[derive(Debug, thiserror::Error)]
pub enum Error { #[error("{name} ({url}): {message}")] Failed { name: String, url: String, message: String } }
impl Error { pub fn hint(&self) -> Option<String> { None } }
pub async fn fetch_all(cache: &Cache, items: &[Item], _opts: &Options, reporter: &dyn Reporter) -> Result<Vec<Fetched>, Error> {
    let mut out = Vec::new();
    for it in items {
        let fail = |m: String| Error::Failed { name: it.name.clone(), url: it.url.clone(), message: m };
        reporter.start(&it.name, None);
        let bytes = if let Some(p) = it.url.strip_prefix("file://") { std::fs::read(p).map_err(|e| fail(e.to_string()))? } else {
            reqwest::get(&it.url).await.map_err(|e| fail(e.to_string()))?.error_for_status().map_err(|e| fail(e.to_string()))?.bytes().await.map_err(|e| fail(e.to_string()))?.to_vec() };
        let sha = hex::encode(Sha256::digest(&bytes));
        if let Checksum::Sha256(want) = &it.checksum { if *want != sha { return Err(fail(format!("checksum mismatch: expected {want}, got {sha}"))); } }
        let path = cache.root.join("blobs-tmp").join(&sha);
        std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| fail(e.to_string()))?;
        std::fs::write(&path, &bytes).map_err(|e| fail(e.to_string()))?;
        reporter.finish(&it.name, false);
        out.push(Fetched { name: it.name.clone(), url: it.url.clone(), path, sha256: sha, size: bytes.len() as u64 });
    }
    Ok(out)
}
