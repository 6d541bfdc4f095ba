//! Fetches one URL into a cache folder: `fetch URL CACHE_DIR [SHA256]`.
//! Without SHA256 the file is not verified. Prints the cached path.

use std::time::Instant;

use lab::download::{fetch_all, Cache, Item, NoReport, Options};
use lab::model::Checksum;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, root) = match args.as_slice() {
        [url, root, ..] => (url.clone(), root.clone()),
        _ => {
            eprintln!("usage: fetch URL CACHE_DIR [SHA256]");
            std::process::exit(2);
        }
    };
    let checksum = args
        .get(2)
        .map_or(Checksum::None, |s| Checksum::Sha256(s.clone()));
    let item = Item {
        name: "file".into(),
        url,
        checksum,
    };
    let t0 = Instant::now();
    match fetch_all(
        &Cache::new(root.into()),
        &[item],
        &Options::default(),
        &NoReport,
    )
    .await
    {
        Ok(f) => println!(
            "{} {} {} bytes in {:.2}s",
            f[0].path.display(),
            f[0].sha256,
            f[0].size,
            t0.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            std::process::exit(1);
        }
    }
}
