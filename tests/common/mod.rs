//! Shared harness of the end-to-end tests: the test image (built by tests/image/build.sh, cached outside the
//! checkout), a loopback HTTP server for it, a lab per test with its own names, subnet and XDG folders, a guard
//! that destroys the lab even when the test fails (dumping the consoles first), and a snapshot of the host's
//! libvirt objects to compare before and after.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The test image: path and sha256.
pub fn image() -> &'static (PathBuf, String) {
    static IMAGE: OnceLock<(PathBuf, String)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/image/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run build.sh");
        assert!(out.status.success(), "tests/image/build.sh failed");
        let path = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .expect("image path")
                .trim(),
        );
        let sum = Command::new("sha256sum")
            .arg(&path)
            .output()
            .expect("sha256sum");
        let sha = String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .expect("sum")
            .to_string();
        (path, sha)
    })
}

/// A loopback HTTP server for files in one folder; counts requests.
pub struct Server {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
}

impl Server {
    pub fn start(root: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut line = String::new();
                    let _ = reader.read_line(&mut line);
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let path = line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/')
                        .to_string();
                    let mut stream = stream;
                    match std::fs::File::open(root.join(&path)) {
                        Ok(mut f) => {
                            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
                            let _ = std::io::copy(&mut f, &mut stream);
                        }
                        Err(_) => {
                            let _ = write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        }
                    }
                    let _ = stream.flush();
                    let _ = stream.read(&mut [0u8; 1]);
                });
            }
        });
        Server { port, requests }
    }
}

/// A test lab: its folder (lab.toml, XDG folders) and a guard that destroys it on drop.
pub struct TestLab {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub machines: Vec<(String, String)>,
}

/// Builds a two-machine isolated test lab. `index` picks a distinct subnet per test (10.241.INDEX.0/24).
pub fn test_lab(test: &str, index: u8, extra: &str) -> TestLab {
    let (image, sha) = image();
    let dir = tempfile::tempdir().expect("tempdir");
    // What the loopback server serves: the image (linked) and any file a test adds.
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::os::unix::fs::symlink(image, www.join(image.file_name().unwrap())).unwrap();
    let server = Server::start(www);
    let name = format!("e2e-{test}");
    let machines = vec![
        ("alpha".to_string(), format!("10.241.{index}.10")),
        ("beta".to_string(), format!("10.241.{index}.11")),
    ];
    let file = image.file_name().unwrap().to_string_lossy();
    let mut toml = format!(
        "name = \"{name}\"\n\n[network]\nsubnet = \"10.241.{index}.0/24\"\nmode = \"isolated\"\n\n\
         [defaults]\nimage = \"test-debian\"\ncpus = 1\nmemory = \"640MiB\"\ndisk = \"4GiB\"\n\n"
    );
    for (m, ip) in &machines {
        toml.push_str(&format!("[[machine]]\nname = \"{m}\"\nip = \"{ip}\"\n\n"));
    }
    toml.push_str(&format!(
        "[[image]]\nname = \"test-debian\"\nurl = \"http://127.0.0.1:{}/{file}\"\nsha256 = \"{sha}\"\n\n{extra}",
        server.port
    ));
    std::fs::write(dir.path().join("lab.toml"), toml).unwrap();
    TestLab {
        name,
        dir,
        server,
        machines,
    }
}

impl TestLab {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Serves `bytes` as http://127.0.0.1:PORT/NAME; returns its sha256.
    pub fn add_file(&self, name: &str, bytes: &[u8]) -> String {
        use sha2::Digest;
        std::fs::write(self.path("www").join(name), bytes).unwrap();
        hex::encode(sha2::Sha256::digest(bytes))
    }

    /// Appends TOML to the lab file.
    pub fn append(&self, toml: &str) {
        let mut text = std::fs::read_to_string(self.path("lab.toml")).unwrap();
        text.push('\n');
        text.push_str(toml);
        std::fs::write(self.path("lab.toml"), text).unwrap();
    }

    /// Runs `lab ARGS` in the lab's folder (bounded by `timeout`), returning its output.
    pub fn lab(&self, args: &[&str]) -> Output {
        self.lab_with(args, &[])
    }

    pub fn lab_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        eprintln!("$ lab {}", args.join(" "));
        let mut c = Command::new("timeout");
        c.arg("1500").arg(env!("CARGO_BIN_EXE_lab"));
        let out = self
            .setup(c, args)
            .envs(env.iter().copied())
            .output()
            .expect("run lab");
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// `lab ARGS` in the lab's folder, with its XDG folders, to spawn (no input; output inherited).
    pub fn command(&self, args: &[&str]) -> Command {
        eprintln!("$ lab {} &", args.join(" "));
        self.setup(Command::new(env!("CARGO_BIN_EXE_lab")), args)
    }

    fn setup(&self, mut c: Command, args: &[&str]) -> Command {
        c.args(args)
            .current_dir(self.dir.path())
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("LAB_ACCEL", "tcg")
            .env("LAB_CONNECT", "qemu:///system")
            .stdin(Stdio::null());
        c
    }

    /// Starts `lab ARGS` without waiting (to interrupt it).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run lab")
    }

    /// `lab ARGS` that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.lab(args);
        assert!(
            out.status.success(),
            "lab {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `lab ssh MACHINE -- COMMAND`; returns (exit code, stdout).
    pub fn ssh(&self, machine: &str, command: &str) -> (i32, String) {
        let out = self.lab(&["ssh", machine, "--", command]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (m, _) in &self.machines {
                let log = format!("/var/lib/libvirt/images/lab-{}/{m}.console.log", self.name);
                if let Ok(text) = std::fs::read_to_string(&log) {
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("--- console of {m} (last 40 lines) ---");
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
        let _ = self.lab(&["destroy", "--yes"]);
    }
}

/// libvirt's domains, networks, pools and volumes, to compare before and after a test.
pub fn host_objects() -> Vec<String> {
    let virsh = |args: &[&str]| -> Vec<String> {
        let out = Command::new("virsh")
            .arg("-c")
            .arg("qemu:///system")
            .args(args)
            .output()
            .expect("virsh");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut all = Vec::new();
    all.extend(
        virsh(&["list", "--all", "--name"])
            .into_iter()
            .map(|d| format!("domain {d}")),
    );
    all.extend(
        virsh(&["net-list", "--all", "--name"])
            .into_iter()
            .map(|n| format!("network {n}")),
    );
    for p in virsh(&["pool-list", "--all", "--name"]) {
        // Files libvirt made outside the storage API (snapshot overlays, memory files) show after a refresh.
        virsh(&["pool-refresh", &p]);
        for v in virsh(&["vol-list", &p]).into_iter().skip(2) {
            all.push(format!("volume {p}/{v}"));
        }
        all.push(format!("pool {p}"));
    }
    all.sort();
    all
}

/// Files below a folder (relative paths), to compare before and after.
pub fn files_below(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if p.is_dir() {
                    walk(base, &p, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub fn wait_secs(d: u64) -> Duration {
    Duration::from_secs(d)
}

/// An sshd on loopback that stands for a remote libvirt host (this machine, reached over SSH).
pub struct Sshd {
    child: std::process::Child,
    pub port: u16,
    pub key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_sshd() -> Sshd {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    for (key, t) in [("host_key", "ed25519"), ("id", "ed25519")] {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", t, "-N", "", "-f"])
            .arg(p(key))
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::copy(p("id.pub"), p("authorized_keys")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {}\n",
        p("host_key").display(),
        p("authorized_keys").display(),
        p("sshd.pid").display()
    );
    std::fs::write(p("sshd_config"), config).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(p("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sshd (openssh-server)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Sshd {
        child,
        port,
        key: p("id"),
        _dir: dir,
    }
}

impl Sshd {
    /// The `qemu+ssh://` URI of this machine's libvirt through this sshd.
    pub fn uri(&self) -> String {
        format!(
            "qemu+ssh://root@127.0.0.1:{}/system?keyfile={}&no_verify=1",
            self.port,
            self.key.display()
        )
    }
}
