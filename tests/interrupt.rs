//! Ctrl-C and SIGTERM on the real `lab` binary while it downloads (`lab fetch`, `lab kit verify`, the download
//! phase of `lab import`) or waits for a libvirt host that never answers (`lab doctor`). Loopback only; every wait
//! is bounded by a generous deadline, and the assertions are about order: the process ended while the server was
//! still sending.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::{Route, Server};

/// Longest wait for anything the tests wait for; reaching it fails the test.
const DEADLINE: Duration = Duration::from_secs(60);
/// A body the slow route takes about 50 s to send, far longer than a test runs.
const BIG: usize = 32 << 20;
/// Pause between the slow route's 64 KiB chunks.
const SLOW: Duration = Duration::from_millis(100);

fn body() -> Vec<u8> {
    (0..BIG as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn slow(body: &[u8]) -> Route {
    Route {
        chunk_delay: Some(SLOW),
        ..Route::file(body.to_vec())
    }
}

/// A folder for one run of `lab`: its cache, state, temp folder and working folder.
struct Home(tempfile::TempDir);

impl Home {
    fn new() -> Home {
        Home(tempfile::tempdir().unwrap())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.path().join(rel)
    }

    fn lab(&self, args: &[&str]) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("lab"));
        for d in ["work", "tmp"] {
            std::fs::create_dir_all(self.path(d)).unwrap();
        }
        c.args(args)
            .current_dir(self.path("work"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("TMPDIR", self.path("tmp"))
            .env_remove("LAB_MIRROR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// The download cache's partial files.
    fn partials(&self) -> Vec<(PathBuf, u64)> {
        files(&self.path("cache/lab/tmp-v1"))
            .into_iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "partial"))
            .collect()
    }
}

fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.map(|e| {
        let p = e.unwrap().path();
        let len = std::fs::metadata(&p).unwrap().len();
        (p, len)
    })
    .collect()
}

/// Waits (polling, up to [`DEADLINE`]) until `cond` holds; panics naming `what` otherwise.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The child's output once it exits (killed and failed after [`DEADLINE`]).
async fn exited(mut child: Child) -> Output {
    let end = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            child.kill().unwrap();
            panic!("lab did not exit: {:?}", child.wait_with_output().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait_with_output().unwrap()
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

/// Starts `cmd`, waits until `srv` sent some of a body, sends `sig`; checks that lab exited 130 saying `says`
/// while the server was still sending (only `whole` bodies were sent to their end), and that the server then saw
/// its connection closed. Returns lab's output.
async fn stopped_mid_body(
    srv: &Server,
    mut cmd: Command,
    sig: libc::c_int,
    whole: usize,
    says: &str,
) -> Output {
    let child = cmd.spawn().unwrap();
    wait_for("the first MiB to be sent", || srv.bytes_sent() >= 1 << 20).await;
    signal(&child, sig);
    let out = exited(child).await;
    assert_eq!(
        srv.completed(),
        whole,
        "lab exited while the server was still sending"
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains(says), "{err}");
    wait_for("the server to see its connection closed", || {
        srv.abandoned() == 1
    })
    .await;
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lab_file(home: &Home, url: &str, sha: &str) -> PathBuf {
    let path = home.path("lab.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"dl\"\n\n[network]\nsubnet = \"10.77.0.0/24\"\n\n[defaults]\nimage = \"big\"\n\n\
             [[machine]]\nname = \"a\"\nip = \"10.77.0.10\"\n\n\
             [[image]]\nname = \"big\"\nurl = \"{url}\"\nsha256 = \"{sha}\"\n"
        ),
    )
    .unwrap();
    path
}

async fn fetch_is_stopped_and_resumed(sig: libc::c_int) {
    let srv = Server::start().await;
    let data = body();
    srv.route("/big.qcow2", slow(&data));
    let home = Home::new();
    let file = lab_file(&home, &srv.url("/big.qcow2"), &sha256(&data));
    let file = file.to_str().unwrap();

    let out = stopped_mid_body(
        &srv,
        home.lab(&["--file", file, "fetch"]),
        sig,
        0,
        "interrupted: the download of big was stopped",
    )
    .await;
    assert!(stderr(&out).contains("run the command again to resume"));
    let partials = home.partials();
    assert_eq!(partials.len(), 1, "the partial file is kept: {partials:?}");
    let kept = partials[0].1;
    assert!(kept > 0 && kept < BIG as u64, "{kept}");

    // The same URL, now served at full speed: the next `lab fetch` asks for the rest only, and checks it all.
    srv.route("/big.qcow2", Route::file(data.clone()));
    srv.reset_counters();
    let out = exited(home.lab(&["--file", file, "fetch"]).spawn().unwrap()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let log = srv.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].range.as_deref(), Some(&*format!("bytes={kept}-")));
    assert_eq!(log[0].status, 206);
    assert_eq!(srv.bytes_sent(), BIG as u64 - kept);
    let blob = home.path(&format!("cache/lab/blobs-v1/sha256/{}", sha256(&data)));
    assert_eq!(std::fs::metadata(blob).unwrap().len(), BIG as u64);
    assert!(home.partials().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_lab_fetch_and_the_next_fetch_resumes() {
    fetch_is_stopped_and_resumed(libc::SIGINT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_lab_fetch_and_the_next_fetch_resumes() {
    fetch_is_stopped_and_resumed(libc::SIGTERM).await;
}

/// A kit whose only file is `assets/big` (enough for the download phase; it stops there).
fn kit(srv: &Server, data: &[u8]) -> String {
    let manifest = serde_json::json!({
        "format": 1,
        "lab": "dl",
        "lab_version": "0",
        "created": "2025-01-01T00:00:00Z",
        "made_on": {"libvirt": "0", "hypervisor": "0"},
        "files": [{
            "path": "assets/big",
            "size": data.len(),
            "sha256": sha256(data),
            "kind": {"kind": "asset"},
        }],
        "checkpoints": [],
        "downloads": [],
    });
    srv.route(
        "/kit/kit.json",
        Route::file(manifest.to_string().into_bytes()),
    );
    srv.route("/kit/assets/big", slow(data));
    srv.url("/kit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_lab_kit_verify_and_leaves_nothing() {
    let srv = Server::start().await;
    let url = kit(&srv, &body());
    let home = Home::new();
    stopped_mid_body(
        &srv,
        home.lab(&["kit", "verify", &url]),
        libc::SIGINT,
        1, // kit.json
        "the check of the kit was stopped; nothing was changed",
    )
    .await;
    assert!(
        files(&home.path("tmp")).is_empty(),
        "its throwaway cache is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_download_phase_of_lab_import() {
    let srv = Server::start().await;
    let url = kit(&srv, &body());
    let home = Home::new();
    let cmd = home.lab(&["import", &url, "--connect", "test:///default"]);
    stopped_mid_body(
        &srv,
        cmd,
        libc::SIGTERM,
        1, // kit.json
        "interrupted: the download of assets/big was stopped",
    )
    .await;
    assert_eq!(
        home.partials().len(),
        1,
        "the partial file is kept for the next import"
    );
    assert!(!home.path("work/dl").exists(), "no lab folder");
    assert!(
        files(&home.path("state/lab/labs")).is_empty(),
        "no lab state, no lock file"
    );
}

/// A TCP port on loopback that accepts connections and never says a word; counts the connections.
fn silent_host() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_host_that_never_answers_as_a_failed_row() {
    let (port, _) = silent_host();
    let uri = format!("qemu+tcp://127.0.0.1:{port}/system");
    let home = Home::new();
    let mut cmd = home.lab(&["doctor", "--json", "--connect", &uri]);
    cmd.env("LAB_CONNECT_TIMEOUT", "2");
    let out = exited(cmd.spawn().unwrap()).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(
        (&row["name"], &row["status"]),
        (&"libvirtd".into(), &"fail".into())
    );
    assert_eq!(
        row["detail"],
        format!("cannot connect to {uri}: did not finish within 2 s")
    );
    assert!(row["fix"].as_str().unwrap().contains("LAB_CONNECT_TIMEOUT"));
    let subnet = rows.iter().find(|r| r["name"] == "subnet").unwrap();
    assert_eq!(subnet["detail"], "skipped: needs libvirtd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_doctor_waiting_for_a_host() {
    let (port, accepted) = silent_host();
    let uri = format!("qemu+tcp://127.0.0.1:{port}/system");
    let home = Home::new();
    let mut cmd = home.lab(&["doctor", "--connect", &uri]);
    cmd.env("LAB_CONNECT_TIMEOUT", "3600");
    let child = cmd.spawn().unwrap();
    wait_for("lab doctor to connect", || {
        accepted.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    signal(&child, libc::SIGTERM);
    let out = exited(child).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!("stopped while checking {uri}")),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no rows");
}
