//! End-to-end tests of the download manager against a loopback server.

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lab::cli::chain;
use lab::download::{
    export_mirror, fetch_all, parse_mirror, Cache, Error, Fetched, Item, NoReport, Options,
    Reporter,
};
use lab::model::Checksum;
use sha2::{Digest, Sha256, Sha512};
use support::{Route, Server};

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn sha512(b: &[u8]) -> String {
    hex::encode(Sha512::digest(b))
}

fn opts() -> Options {
    Options {
        backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

fn item(name: &str, url: String, checksum: Checksum) -> Item {
    Item {
        name: name.into(),
        url,
        checksum,
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn blobs(root: &Path) -> Vec<String> {
    files_in(&root.join("blobs-v1/sha256"))
}

fn temps(root: &Path) -> Vec<String> {
    files_in(&root.join("tmp-v1"))
}

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Start(String, Option<u64>),
    Advance(String, u64),
    Finish(String, bool),
    Message(String),
    Failed(String, String),
}

#[derive(Default)]
struct Record(Mutex<Vec<Ev>>);

impl Record {
    fn events(&self) -> Vec<Ev> {
        self.0.lock().unwrap().clone()
    }
}

impl Reporter for Record {
    fn start(&self, name: &str, total: Option<u64>) {
        self.0.lock().unwrap().push(Ev::Start(name.into(), total));
    }
    fn advance(&self, name: &str, bytes: u64) {
        self.0.lock().unwrap().push(Ev::Advance(name.into(), bytes));
    }
    fn finish(&self, name: &str, cached: bool) {
        self.0.lock().unwrap().push(Ev::Finish(name.into(), cached));
    }
    fn message(&self, text: &str) {
        self.0.lock().unwrap().push(Ev::Message(text.into()));
    }
    fn failed(&self, name: &str, cause: &str) {
        self.0
            .lock()
            .unwrap()
            .push(Ev::Failed(name.into(), cause.into()));
    }
}

async fn fetch_one(cache: &Cache, it: &Item, o: &Options) -> Result<Fetched, Error> {
    fetch_all(cache, std::slice::from_ref(it), o, &NoReport)
        .await
        .map(|mut v| v.remove(0))
}

/// Three items, one per kind of checksum, on `srv`; returns them and their bodies.
fn three_items(srv: &Server) -> (Vec<Item>, Vec<Vec<u8>>) {
    let (a, b, c) = (data(300_000, 1), data(200_000, 2), data(100_000, 3));
    srv.route("/img/a.qcow2", Route::file(a.clone()));
    srv.route("/img/b.img", Route::file(b.clone()));
    srv.route("/bin/c", Route::file(c.clone()));
    let sums = format!("{}  other\n{} *b.img\n", "0".repeat(64), sha256(&b));
    srv.route("/img/SHA256SUMS", Route::file(sums.into_bytes()));
    let items = vec![
        item("a", srv.url("/img/a.qcow2"), Checksum::Sha256(sha256(&a))),
        item(
            "b",
            srv.url("/img/b.img"),
            Checksum::Url(srv.url("/img/SHA256SUMS")),
        ),
        item("c", srv.url("/bin/c"), Checksum::None),
    ];
    (items, vec![a, b, c])
}

#[tokio::test]
async fn cache_hit_makes_no_request() {
    let srv = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let (items, bodies) = three_items(&srv);
    let first = fetch_all(&cache, &items, &opts(), &NoReport).await.unwrap();
    assert_eq!(srv.requests(), 4, "3 files + 1 checksum file");
    for (f, body) in first.iter().zip(&bodies) {
        assert_eq!(std::fs::read(&f.path).unwrap(), *body);
        assert_eq!(
            (f.sha256.clone(), f.size),
            (sha256(body), body.len() as u64)
        );
    }
    srv.reset_counters();
    let rec = Record::default();
    let cache2 = Cache::new(dir.path().into()); // a fresh instance, as another run
    let second = fetch_all(&cache2, &items, &opts(), &rec).await.unwrap();
    assert_eq!(srv.requests(), 0, "{:?}", srv.log());
    assert_eq!(second, first);
    let mut finished: Vec<_> = rec
        .events()
        .into_iter()
        .filter(|e| matches!(e, Ev::Finish(..)))
        .collect();
    finished.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        finished,
        ["a", "b", "c"].map(|n| Ev::Finish(n.into(), true)).to_vec()
    );
    assert!(temps(dir.path()).is_empty());
}

#[tokio::test]
async fn cut_connection_resumes_with_range() {
    let srv = Server::start().await;
    let body = data(2 << 20, 4);
    srv.route(
        "/big.img",
        Route {
            cut_once_after: Some(700_000),
            ..Route::file(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let it = item("big", srv.url("/big.img"), Checksum::Sha256(sha256(&body)));
    let f = fetch_one(&cache, &it, &opts()).await.unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), body);
    let log = srv.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].range, None);
    let from: u64 = log[1].range.as_deref().unwrap()["bytes=".len()..]
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 700_000, "{from}");
    assert_eq!(log[1].status, 206);
    let sent = srv.bytes_sent();
    assert!(sent < body.len() as u64 * 12 / 10, "sent {sent}");
    assert!(temps(dir.path()).is_empty());
}

#[tokio::test]
async fn server_ignoring_range_restarts_cleanly() {
    let srv = Server::start().await;
    let body = data(1 << 20, 5);
    srv.route(
        "/f",
        Route {
            cut_once_after: Some(300_000),
            ignore_range: true,
            ..Route::file(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let rec = Record::default();
    let it = item("f", srv.url("/f"), Checksum::Sha256(sha256(&body)));
    let f = fetch_all(&cache, &[it], &opts(), &rec).await.unwrap();
    assert_eq!(std::fs::read(&f[0].path).unwrap(), body);
    let log = srv.log();
    assert_eq!(log.len(), 2);
    assert!(log[1].range.is_some());
    assert_eq!(log[1].status, 200);
    assert_eq!(srv.bytes_sent(), 300_000 + body.len() as u64);
    assert!(rec
        .events()
        .iter()
        .any(|e| matches!(e, Ev::Message(m) if m.contains("ignored Range"))));
    assert_eq!(blobs(dir.path()), [sha256(&body)]);
}

#[tokio::test]
async fn not_found_fails_at_once() {
    let srv = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let url = srv.url("/missing.img");
    let err = fetch_one(&cache, &item("disk", url.clone(), Checksum::None), &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Http { status: 404, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("disk") && msg.contains(&url) && msg.contains("404"),
        "{msg}"
    );
    assert!(err.hint().unwrap().contains("URL"));
    assert_eq!(srv.requests(), 1, "4xx is not retried");
    assert!(temps(dir.path()).is_empty() && blobs(dir.path()).is_empty());
}

#[tokio::test]
async fn checksum_mismatch_keeps_nothing() {
    let srv = Server::start().await;
    let body = data(100_000, 6);
    srv.route("/f", Route::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let wrong = sha256(b"something else");
    let it = item("f", srv.url("/f"), Checksum::Sha256(wrong.clone()));
    let err = fetch_one(&cache, &it, &opts()).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Mismatch { .. }));
    assert!(
        msg.contains(&wrong) && msg.contains(&sha256(&body)),
        "{msg}"
    );
    assert!(msg.contains(&it.url) && msg.starts_with("f: "), "{msg}");
    assert!(err.hint().unwrap().contains("sha256"));
    assert!(blobs(dir.path()).is_empty());
    assert!(temps(dir.path()).is_empty());
    assert!(files_in(&dir.path().join("index-v1")).is_empty());
    assert_eq!(cache.lookup(&it), None);
}

#[tokio::test]
async fn redirect_is_followed_and_indexed_under_the_original_url() {
    let srv = Server::start().await;
    let body = data(50_000, 7);
    srv.route("/new/f", Route::file(body.clone()));
    srv.route(
        "/old/f",
        Route {
            redirect: Some(srv.url("/new/f")),
            ..Route::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let it = item("f", srv.url("/old/f"), Checksum::None);
    let f = fetch_one(&cache, &it, &opts()).await.unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), body);
    assert_eq!(srv.requests(), 2);
    assert_eq!(f.url, it.url);
    assert_eq!(cache.lookup(&it).unwrap().sha256, sha256(&body));
}

#[tokio::test]
async fn corrupted_cache_entry_is_fetched_again() {
    let srv = Server::start().await;
    let body = data(150_000, 8);
    srv.route("/f", Route::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    srv.route("/g", Route::file(body.clone()));
    for (path, checksum) in [
        ("/f", Checksum::Sha256(sha256(&body))),
        ("/g", Checksum::None),
    ] {
        srv.reset_counters();
        let it = item("f", srv.url(path), checksum);
        let f = fetch_one(&cache, &it, &opts()).await.unwrap();
        // Flip one byte in place, same size.
        let mut bad = body.clone();
        bad[1000] ^= 0xff;
        std::fs::write(&f.path, &bad).unwrap();
        assert_eq!(cache.lookup(&it), None);
        assert!(!f.path.exists(), "the corrupted blob is removed");
        let again = fetch_one(&cache, &it, &opts()).await.unwrap();
        assert_eq!(std::fs::read(&again.path).unwrap(), body);
        assert_eq!(srv.requests(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_fill_the_same_entry_once() {
    let srv = Server::start().await;
    let body = data(1 << 20, 9);
    srv.route(
        "/f",
        Route {
            chunk_delay: Some(Duration::from_millis(20)),
            ..Route::file(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let it = item("f", srv.url("/f"), Checksum::Sha256(sha256(&body)));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (cache, it) = (Cache::new(dir.path().into()), it.clone());
            tokio::spawn(async move { fetch_one(&cache, &it, &opts()).await })
        })
        .collect();
    for t in tasks {
        let f = t.await.unwrap().unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), body);
    }
    assert_eq!(srv.requests(), 1, "the second waits on the lock, then hits");
    assert_eq!(blobs(dir.path()), [sha256(&body)]);
    assert!(temps(dir.path()).is_empty());
}

/// Run by `two_processes_fill_the_same_cache` in child processes; a no-op otherwise.
#[test]
fn child_process_fetch() {
    let Ok(root) = std::env::var("LAB_DL_TEST_ROOT") else {
        return;
    };
    let url = std::env::var("LAB_DL_TEST_URL").unwrap();
    let sha = std::env::var("LAB_DL_TEST_SHA").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let it = item("f", url, Checksum::Sha256(sha.clone()));
    let f = rt
        .block_on(fetch_one(&Cache::new(root.into()), &it, &opts()))
        .unwrap();
    assert_eq!(f.sha256, sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_fill_the_same_cache() {
    let srv = Server::start().await;
    let body = data(1 << 20, 10);
    srv.route(
        "/f",
        Route {
            chunk_delay: Some(Duration::from_millis(40)),
            ..Route::file(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "child_process_fetch",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env("LAB_DL_TEST_ROOT", dir.path())
                .env("LAB_DL_TEST_URL", srv.url("/f"))
                .env("LAB_DL_TEST_SHA", sha256(&body))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for mut child in children {
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("child did not finish in time");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success());
    }
    assert_eq!(srv.requests(), 1, "{:?}", srv.log());
    assert_eq!(blobs(dir.path()), [sha256(&body)]);
    assert!(temps(dir.path()).is_empty());
}

#[tokio::test]
async fn offline_lists_every_missing_item() {
    let srv = Server::start().await;
    let (items, _) = three_items(&srv);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let offline = Options {
        offline: true,
        ..opts()
    };
    let err = fetch_all(&cache, &items, &offline, &NoReport)
        .await
        .unwrap_err();
    let Error::Offline { missing } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(missing.len(), 3);
    let msg = err.to_string();
    let lines: Vec<_> = msg.lines().collect();
    assert_eq!(lines[0], "3 downloads are not in the cache (--offline)");
    assert_eq!(lines.len(), 4, "{msg}");
    for (line, it) in lines[1..].iter().zip(&items) {
        assert_eq!(*line, format!("  {} ({})", it.name, it.url));
        assert_eq!(msg.matches(&it.url).count(), 1, "{msg}");
    }
    // Printed once: nothing in the source chain repeats the list.
    assert_eq!(chain(&err), msg);
    assert_eq!(
        err.hint().unwrap(),
        "`lab fetch` on a connected machine, or drop --offline"
    );
    assert_eq!(srv.requests(), 0);

    // Fill two of three: still one error, naming only the missing one.
    fetch_all(&cache, &items[..2], &opts(), &NoReport)
        .await
        .unwrap();
    srv.reset_counters();
    let err = fetch_all(&cache, &items, &offline, &NoReport)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "1 download is not in the cache (--offline)\n  c ({})",
            items[2].url
        )
    );

    // Full cache: works offline without a request.
    fetch_all(&cache, &items, &opts(), &NoReport).await.unwrap();
    srv.reset_counters();
    let got = fetch_all(&cache, &items, &offline, &NoReport)
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(srv.requests(), 0);
}

#[tokio::test]
async fn exported_mirror_serves_a_fresh_cache() {
    let upstream = Server::start().await;
    let (items, bodies) = three_items(&upstream);
    let a = tempfile::tempdir().unwrap();
    fetch_all(&Cache::new(a.path().into()), &items, &opts(), &NoReport)
        .await
        .unwrap();

    let export = tempfile::tempdir().unwrap();
    let written = export_mirror(&Cache::new(a.path().into()), export.path()).unwrap();
    assert_eq!(written.len(), 4, "{written:?}");
    let host = upstream.url("").trim_start_matches("http://").to_owned();
    assert!(export.path().join(&host).join("img/SHA256SUMS").is_file());
    assert_eq!(
        std::fs::read(export.path().join(&host).join("img/a.qcow2")).unwrap(),
        bodies[0]
    );

    let mirror = Server::start().await;
    mirror.serve_dir("/base", export.path().into());
    upstream.reset_counters();
    let b = tempfile::tempdir().unwrap();
    let through_mirror = Options {
        mirror: Some(mirror.url("/base/")),
        ..opts()
    };
    let got = fetch_all(
        &Cache::new(b.path().into()),
        &items,
        &through_mirror,
        &NoReport,
    )
    .await
    .unwrap();
    assert_eq!(upstream.requests(), 0, "{:?}", upstream.log());
    assert_eq!(mirror.requests(), 4, "{:?}", mirror.log());
    assert!(mirror.log().iter().all(|l| l.status == 200));
    for (f, (it, body)) in got.iter().zip(items.iter().zip(&bodies)) {
        assert_eq!(f.url, it.url, "results name the upstream URL");
        assert_eq!(std::fs::read(&f.path).unwrap(), *body);
    }
    // The cache filled through the mirror serves the upstream items offline.
    let offline = Options {
        offline: true,
        ..opts()
    };
    fetch_all(&Cache::new(b.path().into()), &items, &offline, &NoReport)
        .await
        .unwrap();
}

#[tokio::test]
async fn checksum_files_in_every_format() {
    let srv = Server::start().await;
    let (x, y, z) = (data(10_000, 11), data(20_000, 12), data(30_000, 13));
    srv.route("/d/x.qcow2", Route::file(x.clone()));
    srv.route("/d/y.raw", Route::file(y.clone()));
    srv.route("/d/z", Route::file(z.clone()));
    let sha512s = format!("{}  x.raw\n{}  x.qcow2\n", "1".repeat(128), sha512(&x));
    srv.route("/d/SHA512SUMS", Route::file(sha512s.into_bytes()));
    srv.route(
        "/d/y.raw.sha256",
        Route::file(format!("{}\n", sha256(&y)).into_bytes()),
    );
    srv.route(
        "/d/SUMS",
        Route::file(format!("{} *z\n", sha256(&z)).into_bytes()),
    );
    let items = vec![
        item(
            "x",
            srv.url("/d/x.qcow2"),
            Checksum::Url(srv.url("/d/SHA512SUMS")),
        ),
        item(
            "y",
            srv.url("/d/y.raw"),
            Checksum::Url(srv.url("/d/y.raw.sha256")),
        ),
        item("z", srv.url("/d/z"), Checksum::Url(srv.url("/d/SUMS"))),
    ];
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let got = fetch_all(&cache, &items, &opts(), &NoReport).await.unwrap();
    assert_eq!(got[0].sha256, sha256(&x));
    assert_eq!(got[1].sha256, sha256(&y));
    assert_eq!(got[2].sha256, sha256(&z));

    // A sha512 list whose value does not match: mismatch, in sha512.
    srv.route("/e/x.qcow2", Route::file(data(10_000, 99)));
    srv.route(
        "/e/SHA512SUMS",
        Route::file(format!("{}  x.qcow2\n", sha512(&x)).into_bytes()),
    );
    let bad = item(
        "x2",
        srv.url("/e/x.qcow2"),
        Checksum::Url(srv.url("/e/SHA512SUMS")),
    );
    let err = fetch_one(&cache, &bad, &opts()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("expected sha512 {}", sha512(&x))),
        "{err}"
    );

    // A list without the file: the error names the file looked for.
    let missing = item(
        "w",
        srv.url("/d/w.img"),
        Checksum::Url(srv.url("/d/SHA512SUMS")),
    );
    let err = fetch_one(&cache, &missing, &opts()).await.unwrap_err();
    assert!(matches!(err, Error::MissingChecksumEntry { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("`w.img`") && msg.contains("/d/SHA512SUMS"),
        "{msg}"
    );
}

#[tokio::test]
async fn shared_checksum_file_is_fetched_once_per_run() {
    let srv = Server::start().await;
    let (p, q) = (data(1000, 14), data(2000, 15));
    srv.route("/p", Route::file(p.clone()));
    srv.route("/q", Route::file(q.clone()));
    let sums = format!("{}  p\n{}  q\n", sha256(&p), sha256(&q));
    srv.route("/SUMS", Route::file(sums.into_bytes()));
    let items = vec![
        item("p", srv.url("/p"), Checksum::Url(srv.url("/SUMS"))),
        item("q", srv.url("/q"), Checksum::Url(srv.url("/SUMS"))),
    ];
    let dir = tempfile::tempdir().unwrap();
    fetch_all(&Cache::new(dir.path().into()), &items, &opts(), &NoReport)
        .await
        .unwrap();
    assert_eq!(srv.requests(), 3, "{:?}", srv.log());
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let srv = Server::start().await;
    let body = data(10_000, 16);
    srv.route(
        "/flaky",
        Route {
            fail_times: 2,
            ..Route::file(body.clone())
        },
    );
    srv.route(
        "/down",
        Route {
            fail_times: usize::MAX,
            ..Route::file(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let rec = Record::default();
    let flaky = item("flaky", srv.url("/flaky"), Checksum::Sha256(sha256(&body)));
    let f = fetch_all(&cache, &[flaky], &opts(), &rec).await.unwrap();
    assert_eq!(std::fs::read(&f[0].path).unwrap(), body);
    assert_eq!(srv.requests(), 3);
    // Two retries, reported once, in one short line without the URL.
    let notices: Vec<_> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        notices,
        ["flaky: HTTP 500; retrying (up to 4 times)".to_string()]
    );

    srv.reset_counters();
    let down = item("down", srv.url("/down"), Checksum::None);
    let two = Options {
        retries: 2,
        ..opts()
    };
    let err = fetch_one(&cache, &down, &two).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 500, .. }), "{err:?}");
    assert_eq!(srv.requests(), 3, "1 try + 2 retries");
}

#[tokio::test]
async fn stalled_server_times_out() {
    let srv = Server::start().await;
    srv.route(
        "/stall",
        Route {
            stall: true,
            ..Route::file(data(1000, 17))
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        timeout: Duration::from_millis(200),
        retries: 1,
        ..opts()
    };
    let t0 = Instant::now();
    let err = fetch_one(
        &Cache::new(dir.path().into()),
        &item("s", srv.url("/stall"), Checksum::None),
        &o,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("timed out"));
    assert_eq!(srv.requests(), 2);
    // The 200 ms time-out applied, not the default 30 s (two tries would take a minute): a bound far from both
    // that a busy host cannot reach by being slow.
    assert!(t0.elapsed() < Duration::from_secs(25));
    assert!(temps(dir.path()).is_empty());
}

/// A port on 127.0.0.1 with nothing listening.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port() // closed again at once
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/x", closed_port());
    let o = Options {
        retries: 1,
        ..opts()
    };
    let err = fetch_one(
        &Cache::new(dir.path().into()),
        &item("x", url.clone(), Checksum::None),
        &o,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Connect { reason, .. } if reason == "connection refused"),
        "{err:?}"
    );
    assert_eq!(err.to_string().matches(&url).count(), 1, "{err}");
    assert!(err.hint().unwrap().starts_with("offline?"));
}

#[tokio::test]
async fn unresolvable_hosts_fail_at_once_in_one_summary() {
    // `.invalid` never resolves (RFC 6761): the downloader answers it without asking any resolver.
    let items: Vec<_> = ["one", "one", "two", "one", "two"]
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let checksum = if i % 2 == 0 {
                Checksum::Sha256("0".repeat(64))
            } else {
                Checksum::None
            };
            item(
                &format!("f{i}"),
                format!("http://{h}.invalid/f{i}"),
                checksum,
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        retries: 4,
        backoff: Duration::from_secs(2),
        ..opts()
    };
    let rec = Record::default();
    let err = fetch_all(&Cache::new(dir.path().into()), &items, &o, &rec)
        .await
        .unwrap_err();
    // Not retried: a retry says so once per item (and would wait seconds of back-off).
    assert!(
        !rec.events().iter().any(|e| matches!(e, Ev::Message(_))),
        "not retried: {:?}",
        rec.events()
    );
    let Error::Many { failures } = &err else {
        panic!("{err:?}")
    };
    assert!(failures.iter().all(|f| matches!(f, Error::Resolve { .. })));
    let msg = err.to_string();
    let lines: Vec<_> = msg.lines().collect();
    assert_eq!(
        lines[0],
        "5 downloads failed: cannot resolve one.invalid, two.invalid"
    );
    assert_eq!(lines.len(), 6, "{msg}");
    for (line, it) in lines[1..].iter().zip(&items) {
        let host = &it.url["http://".len()..it.url.rfind('/').unwrap()];
        assert_eq!(
            *line,
            format!("  {}: cannot resolve {host} ({})", it.name, it.url)
        );
        assert_eq!(msg.matches(&it.url).count(), 1, "{msg}");
    }
    assert_eq!(chain(&err), msg, "the list is printed once");
    assert_eq!(
        err.hint().unwrap(),
        "offline? run `lab fetch` on a connected machine, or use --mirror URL"
    );
    // Progress: no notice (nothing retried); each item's failure told once, without its URL.
    let ev = rec.events();
    assert!(!ev.iter().any(|e| matches!(e, Ev::Message(_))), "{ev:?}");
    let failed: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Ev::Failed(n, cause) => Some((n.clone(), cause.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 5);
    assert!(
        failed.iter().all(|(_, c)| !c.contains("http")),
        "{failed:?}"
    );
}

#[tokio::test]
async fn every_item_and_checksum_file_is_retried_alike() {
    let srv = Server::start().await;
    for path in ["/a", "/b", "/c", "/SUMS"] {
        srv.route(
            path,
            Route {
                fail_times: usize::MAX,
                ..Route::file(data(100, 40))
            },
        );
    }
    let items = vec![
        item("a", srv.url("/a"), Checksum::Sha256(sha256(b"a"))),
        item("b", srv.url("/b"), Checksum::Url(srv.url("/SUMS"))),
        item("c", srv.url("/c"), Checksum::None),
    ];
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        retries: 2,
        ..opts()
    };
    let rec = Record::default();
    let err = fetch_all(&Cache::new(dir.path().into()), &items, &o, &rec)
        .await
        .unwrap_err();
    let count = |p: &str| srv.log().iter().filter(|l| l.path == p).count();
    for p in ["/a", "/SUMS", "/c"] {
        assert_eq!(count(p), 3, "{p}: 1 try + 2 retries");
    }
    assert_eq!(count("/b"), 0, "the checksum file failed first");
    let mut notices: Vec<_> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    notices.sort();
    assert_eq!(
        notices,
        ["a", "b", "c"].map(|n| format!("{n}: HTTP 500; retrying (up to 2 times)"))
    );
    let msg = err.to_string();
    assert_eq!(msg.lines().next().unwrap(), "3 downloads failed: HTTP 500");
    assert!(msg.contains(&format!("\n  b: HTTP 500 ({})", srv.url("/SUMS"))));

    // Refused connections: retried the same way for each of five items, one notice each.
    let port = closed_port();
    let refused: Vec<_> = (0..5)
        .map(|i| {
            item(
                &format!("r{i}"),
                format!("http://127.0.0.1:{port}/r{i}"),
                Checksum::None,
            )
        })
        .collect();
    let rec = Record::default();
    let err = fetch_all(&Cache::new(dir.path().into()), &refused, &o, &rec)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        msg.lines().next().unwrap(),
        format!("5 downloads failed: cannot connect to 127.0.0.1:{port}")
    );
    assert_eq!(msg.lines().count(), 6, "{msg}");
    let notices = rec
        .events()
        .iter()
        .filter(|e| matches!(e, Ev::Message(m) if m.ends_with("connection refused; retrying (up to 2 times)")))
        .count();
    assert_eq!(notices, 5);
}

#[tokio::test]
async fn mixed_failures_are_grouped_and_every_item_runs() {
    let srv = Server::start().await;
    let (good, bad) = (data(5000, 41), data(5000, 42));
    srv.route("/good", Route::file(good.clone()));
    srv.route("/bad", Route::file(bad));
    let items = vec![
        item("nf", srv.url("/nf.img"), Checksum::None),
        item("bad", srv.url("/bad"), Checksum::Sha256(sha256(&good))),
        item("good", srv.url("/good"), Checksum::Sha256(sha256(&good))),
    ];
    let dir = tempfile::tempdir().unwrap();
    // NoReport: a quiet UI hides progress, never the failures.
    let err = fetch_all(&Cache::new(dir.path().into()), &items, &opts(), &NoReport)
        .await
        .unwrap_err();
    let msg = err.to_string();
    let lines: Vec<_> = msg.lines().collect();
    assert_eq!(
        lines,
        [
            "2 downloads failed: HTTP 404 (1); checksum mismatch (1)".to_string(),
            format!("  nf: HTTP 404 ({})", srv.url("/nf.img")),
            format!(
                "  bad: checksum mismatch: expected sha256 {}, got {} ({})",
                sha256(&good),
                sha256(&data(5000, 42)),
                srv.url("/bad")
            ),
        ]
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("version and architecture") && hint.contains("sha256"),
        "{hint}"
    );
    assert_eq!(
        blobs(dir.path()),
        [sha256(&good)],
        "the good item was fetched"
    );
}

#[tokio::test]
async fn mirror_404_names_the_mirror_url() {
    let upstream = Server::start().await;
    upstream.route("/v1/x.img", Route::file(data(100, 43)));
    let mirror = Server::start().await;
    let empty = tempfile::tempdir().unwrap();
    mirror.serve_dir("/base", empty.path().into());
    let up = upstream.url("/v1/x.img");
    let it = item("x", up.clone(), Checksum::None);
    let o = Options {
        mirror: Some(mirror.url("/base")),
        ..opts()
    };
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_one(&Cache::new(dir.path().into()), &it, &o)
        .await
        .unwrap_err();
    let host = up.trim_start_matches("http://");
    let requested = mirror.url(&format!("/base/{host}"));
    assert!(matches!(err, Error::Http { status: 404, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("x: the mirror has no x.img (via mirror {requested} for {up})")
    );
    assert!(err.hint().unwrap().contains("`lab mirror export DIR`"));
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn bad_mirror_setting_is_refused_before_any_request() {
    let srv = Server::start().await;
    let (items, _) = three_items(&srv);
    let dir = tempfile::tempdir().unwrap();
    for bad in ["notaurl", "ftp://x"] {
        let o = Options {
            mirror: Some(bad.into()),
            ..opts()
        };
        let err = fetch_all(&Cache::new(dir.path().into()), &items, &o, &NoReport)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BadMirror { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("mirror `{bad}` ")), "{msg}");
        assert!(!msg.contains(&srv.url("")), "blames the mirror: {msg}");
        assert!(err.hint().unwrap().contains("LAB_MIRROR"));
    }
    assert_eq!(srv.requests(), 0);
}

#[test]
fn parse_mirror_accepts_http_https_and_file_urls() {
    assert_eq!(
        parse_mirror("http://m:8080/base").unwrap(),
        "http://m:8080/base"
    );
    assert_eq!(parse_mirror("https://m/").unwrap(), "https://m/");
    assert_eq!(
        parse_mirror("file:///srv/mirror").unwrap(),
        "file:///srv/mirror"
    );
    assert_eq!(
        parse_mirror("notaurl").unwrap_err(),
        "`notaurl` is not a URL: use http://HOST[:PORT]/PATH or file:///PATH"
    );
    let e = parse_mirror("ftp://x").unwrap_err();
    assert!(
        e.starts_with("`ftp://x` ") && e.contains("http://HOST"),
        "{e}"
    );
}

#[tokio::test]
async fn file_urls_are_copied_and_verified() {
    let src = tempfile::tempdir().unwrap();
    let body = data(3 << 20, 18);
    let path = src.path().join("disk image.raw");
    std::fs::write(&path, &body).unwrap();
    let url = format!("file://{}", path.display()).replace(' ', "%20");
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let it = item("local", url.clone(), Checksum::Sha256(sha256(&body)));
    let f = fetch_one(&cache, &it, &opts()).await.unwrap();
    assert_eq!(std::fs::read(&f.path).unwrap(), body);
    assert_ne!(f.path, path);
    let bad = item("local", url, Checksum::Sha256(sha256(b"x")));
    assert!(matches!(
        fetch_one(&cache, &bad, &opts()).await,
        Err(Error::Mismatch { .. })
    ));
}

#[tokio::test]
async fn progress_is_reported_in_steps() {
    let srv = Server::start().await;
    let body = data(1 << 20, 19);
    srv.route("/f", Route::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let it = item("f", srv.url("/f"), Checksum::Sha256(sha256(&body)));
    let rec = Record::default();
    fetch_all(&cache, std::slice::from_ref(&it), &opts(), &rec)
        .await
        .unwrap();
    let ev = rec.events();
    assert_eq!(ev.first(), Some(&Ev::Start("f".into(), Some(1 << 20))));
    assert_eq!(ev.last(), Some(&Ev::Finish("f".into(), false)));
    let adv: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Ev::Advance(_, b) => Some(*b),
            _ => None,
        })
        .collect();
    assert!(adv.windows(2).all(|w| w[0] < w[1]), "{adv:?}");
    assert_eq!(adv.last(), Some(&(1 << 20)));
    assert!(adv.len() <= 17 && adv.len() >= 2, "{} advances", adv.len());

    let rec = Record::default();
    fetch_all(&cache, &[it], &opts(), &rec).await.unwrap();
    assert_eq!(
        rec.events(),
        [
            Ev::Start("f".into(), Some(1 << 20)),
            Ev::Finish("f".into(), true)
        ]
    );
}

#[tokio::test]
async fn results_keep_item_order_with_bounded_parallelism() {
    let srv = Server::start().await;
    let mut items = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..6u64 {
        // Earlier items are slower, so completion order differs from item order.
        let body = data(100_000 * (6 - i as usize), 20 + i);
        srv.route(
            &format!("/f{i}"),
            Route {
                chunk_delay: Some(Duration::from_millis(5)),
                ..Route::file(body.clone())
            },
        );
        items.push(item(
            &format!("f{i}"),
            srv.url(&format!("/f{i}")),
            Checksum::None,
        ));
        bodies.push(body);
    }
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        parallel: 2,
        ..opts()
    };
    let rec = Record::default();
    let got = fetch_all(&Cache::new(dir.path().into()), &items, &o, &rec)
        .await
        .unwrap();
    // Downloads between start and finish, at most.
    let (mut now, mut max) = (0, 0);
    for e in rec.events() {
        match e {
            Ev::Start(..) => now += 1,
            Ev::Finish(..) => now -= 1,
            _ => {}
        }
        max = max.max(now);
    }
    assert_eq!(max, 2, "parallel = 2 is used and not exceeded");
    for ((f, it), body) in got.iter().zip(&items).zip(&bodies) {
        assert_eq!(f.name, it.name);
        assert_eq!(f.sha256, sha256(body));
    }
}

#[tokio::test]
async fn pinned_blob_found_under_another_url_is_indexed_for_export() {
    let srv = Server::start().await;
    let body = data(40_000, 30);
    srv.route("/a/f", Route::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().into());
    let pin = Checksum::Sha256(sha256(&body));
    fetch_one(&cache, &item("f", srv.url("/a/f"), pin.clone()), &opts())
        .await
        .unwrap();
    // Same content pinned at another URL: a cache hit, no request.
    let other = item("g", srv.url("/b/g"), pin);
    let hit = fetch_one(&cache, &other, &opts()).await.unwrap();
    assert_eq!(srv.requests(), 1);
    assert_eq!(hit.url, other.url);
    let export = tempfile::tempdir().unwrap();
    let written = export_mirror(&cache, export.path()).unwrap();
    assert_eq!(written.len(), 2, "{written:?}");
    for w in written {
        assert_eq!(std::fs::read(w).unwrap(), body);
    }
}

#[tokio::test]
async fn stale_temp_files_are_cleaned() {
    let srv = Server::start().await;
    srv.route("/f", Route::file(data(1000, 31)));
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp-v1");
    std::fs::create_dir_all(&tmp).unwrap();
    let (old, fresh) = (tmp.join("old.part"), tmp.join("fresh.part"));
    std::fs::write(&old, b"x").unwrap();
    std::fs::write(&fresh, b"x").unwrap();
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(48 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let it = item("f", srv.url("/f"), Checksum::None);
    fetch_one(&Cache::new(dir.path().into()), &it, &opts())
        .await
        .unwrap();
    assert_eq!(temps(dir.path()), ["fresh.part"]);
}

#[test]
fn fetch_all_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let cache = Cache::new("/nonexistent".into());
    let o = Options::default();
    let fut = fetch_all(&cache, &[], &o, &NoReport);
    assert_send(&fut);
}
