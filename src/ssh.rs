//! SSH into the machines: the lab's login key, the host keys lab generates and pins, and the system `ssh` run with
//! strict host key checking against a known_hosts file that lab writes.

use crate::model::Lab;
use crate::render::cloud_init::SeedKeys;
use crate::render::names;
use ssh_key::{Algorithm, LineEnding, PrivateKey};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot use key {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make an SSH key: {0}")]
    Key(#[from] ssh_key::Error),
    #[error("the key {path} cannot be read: {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("cannot run ssh: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("{machine}: `{command}` timed out after {secs} s")]
    Timeout {
        machine: String,
        command: String,
        secs: u64,
    },
}

impl SshError {
    pub fn hint(&self) -> Option<String> {
        match self {
            SshError::Spawn(_) => {
                Some("install the OpenSSH client (`apt-get install openssh-client`)".into())
            }
            SshError::BadKey { .. } | SshError::Io { .. } => Some(
                "restore the file from a backup; the machines trust that key (or `lab destroy` and `lab up` make new \
                 ones)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// The lab's keys on this machine.
#[derive(Debug, Clone)]
pub struct Keys {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SshError + '_ {
    move |source| SshError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn generate(comment: &str) -> Result<PrivateKey, SshError> {
    let mut key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)?;
    key.set_comment(comment);
    Ok(key)
}

fn write_private(path: &Path, key: &PrivateKey) -> Result<(), SshError> {
    let text = key.to_openssh(LineEnding::LF)?;
    crate::fsutil::write_atomic(path, text.as_bytes(), Some(0o600)).map_err(io(path))
}

/// The key at `path`, or a new one written there when there is none. A key that is there but cannot be read or
/// parsed is an error: making a new one would lock the user out of machines that trust the old one.
fn load_or_make(path: &Path, comment: &str) -> Result<PrivateKey, SshError> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(&text).map_err(|e| SshError::BadKey {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = generate(comment)?;
            write_private(path, &k)?;
            Ok(k)
        }
        Err(e) => Err(io(path)(e)),
    }
}

/// The alias under which a machine's host key is pinned (independent of address and of the jump host).
pub fn host_alias(lab: &str, machine: &str) -> String {
    names::domain(lab, machine)
}

impl Keys {
    /// Loads the lab's keys from `dir`, making any that are missing, and rewrites known_hosts.
    pub fn ensure(dir: &Path, lab: &Lab) -> Result<(Keys, Vec<SeedKeys>), SshError> {
        std::fs::create_dir_all(dir.join("host-keys")).map_err(io(dir))?;
        let login = load_or_make(&dir.join("id_ed25519"), &format!("lab-{}", lab.name))?;
        let authorized_key = login.public_key().to_openssh()?;
        let mut seeds = Vec::new();
        let mut known_hosts = String::new();
        for m in &lab.machines {
            let hk = load_or_make(
                &dir.join("host-keys").join(&m.name),
                &format!("root@{}", m.name),
            )?;
            let public = hk.public_key().to_openssh()?;
            known_hosts.push_str(&format!("{} {}\n", host_alias(&lab.name, &m.name), public));
            seeds.push(SeedKeys {
                authorized_key: authorized_key.clone(),
                host_key_private: hk.to_openssh(LineEnding::LF)?.to_string(),
                host_key_public: public,
            });
        }
        let kh = dir.join("known_hosts");
        crate::fsutil::write_atomic(&kh, known_hosts.as_bytes(), Some(0o644)).map_err(io(&kh))?;
        Ok((
            Keys {
                dir: dir.to_path_buf(),
            },
            seeds,
        ))
    }

    /// The keys of a lab that exists already (no generation).
    pub fn at(dir: &Path) -> Keys {
        Keys {
            dir: dir.to_path_buf(),
        }
    }

    pub fn identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
}

/// The libvirt host of a `qemu+ssh://` URI, through which `ssh` reaches the lab network (VMs live on its bridge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    /// `[user@]host`
    pub destination: String,
    pub port: Option<u16>,
    /// The URI's `keyfile=` parameter, as libvirt uses it.
    pub keyfile: Option<String>,
    /// The URI's `no_verify=1`: the user asked libvirt not to check that host's key.
    pub no_verify: bool,
}

pub fn jump_host(uri: &str) -> Option<Jump> {
    let u = url::Url::parse(uri).ok()?;
    if !u.scheme().ends_with("+ssh") {
        return None;
    }
    let host = match u.host()? {
        url::Host::Domain(d) => d.to_string(),
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => a.to_string(),
    };
    let destination = if u.username().is_empty() {
        host
    } else {
        format!("{}@{host}", u.username())
    };
    let param = |k: &str| {
        u.query_pairs()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.into_owned())
    };
    Some(Jump {
        destination,
        port: u.port(),
        keyfile: param("keyfile"),
        no_verify: param("no_verify").as_deref() == Some("1"),
    })
}

impl Jump {
    /// A ProxyCommand that opens the way to the lab network through the libvirt host.
    pub fn proxy_command(&self) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut c = String::from("ssh -o BatchMode=yes");
        if let Some(k) = &self.keyfile {
            c.push_str(&format!(" -i {}", quote(k)));
        }
        if let Some(p) = self.port {
            c.push_str(&format!(" -p {p}"));
        }
        if self.no_verify {
            c.push_str(" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null");
        }
        c.push_str(&format!(" -W %h:%p {}", quote(&self.destination)));
        c
    }
}

/// One machine as ssh sees it.
#[derive(Debug, Clone)]
pub struct Target {
    pub lab: String,
    pub machine: String,
    pub user: String,
    pub ip: Ipv4Addr,
    pub jump: Option<Jump>,
}

impl Target {
    pub fn new(lab: &Lab, machine: &crate::model::Machine, uri: &str) -> Target {
        Target {
            lab: lab.name.clone(),
            machine: machine.name.clone(),
            user: machine.user.clone(),
            ip: machine.ip,
            jump: jump_host(uri),
        }
    }

    /// The `ssh` arguments up to and including the destination.
    pub fn args(&self, keys: &Keys, connect_timeout: u32) -> Vec<String> {
        let mut a = vec![
            "-i".into(),
            keys.identity().display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", keys.known_hosts().display()),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("HostKeyAlias={}", host_alias(&self.lab, &self.machine)),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={connect_timeout}"),
            "-o".into(),
            "ServerAliveInterval=10".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        if let Some(j) = &self.jump {
            a.push("-o".into());
            a.push(format!("ProxyCommand={}", j.proxy_command()));
        }
        a.push(format!("{}@{}", self.user, self.ip));
        a
    }

    pub fn command(&self, keys: &Keys, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.args(keys, 10)).arg("--").arg(remote);
        c.stdin(Stdio::null()).kill_on_drop(true);
        own_group(&mut c);
        c
    }
}

/// Whether sshd on the machine takes connections: directly, a TCP connection to port 22 that the guest accepts;
/// through the libvirt host (qemu+ssh), the server's greeting read through the ProxyCommand (a forwarded channel
/// says nothing until the far side speaks). Either proves the network path and a listening sshd without a login's
/// key exchange, which costs seconds of emulated CPU on a guest without KVM.
pub async fn port_open(t: &Target, limit: Duration) -> Result<(), String> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let check = async {
        let Some(j) = &t.jump else {
            return tokio::net::TcpStream::connect((t.ip, 22))
                .await
                .map(drop)
                .map_err(|e| e.to_string());
        };
        let proxy = j
            .proxy_command()
            .replace("%h", &t.ip.to_string())
            .replace("%p", "22");
        let mut child = Command::new("sh")
            .args(["-c", &proxy])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if line.starts_with("SSH-") {
            Ok(())
        } else if line.is_empty() {
            Err("the connection closed without a greeting".to_string())
        } else {
            Err(format!("unexpected greeting {:?}", line.trim_end()))
        }
    };
    tokio::time::timeout(limit, check)
        .await
        .map_err(|_| format!("no answer within {} s", limit.as_secs()))?
}

/// The output of a remote command.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `remote` on the machine (as the login user) with `input` on its stdin, within `limit`.
pub async fn run(
    t: &Target,
    keys: &Keys,
    remote: &str,
    input: Option<&[u8]>,
    limit: Duration,
) -> Result<Output, SshError> {
    use tokio::io::AsyncWriteExt;
    let mut c = t.command(keys, remote);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().map_err(SshError::Spawn)?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        let data = data.to_vec();
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }
    collect(t, remote, child, limit).await
}

/// Waits for a started ssh within `limit` and gathers its exit code and output.
async fn collect(
    t: &Target,
    remote: &str,
    child: tokio::process::Child,
    limit: Duration,
) -> Result<Output, SshError> {
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.map_err(SshError::Spawn)?;
            Ok(Output {
                code: out.status.code().unwrap_or(255),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }
        Err(_) => Err(SshError::Timeout {
            machine: t.machine.clone(),
            command: remote.chars().take(60).collect(),
            secs: limit.as_secs(),
        }),
    }
}

/// Runs `remote` with the file at `path` streamed to its stdin (no copy in memory), within `limit`.
pub async fn run_with_file(
    t: &Target,
    keys: &Keys,
    remote: &str,
    path: &Path,
    limit: Duration,
) -> Result<Output, SshError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut c = t.command(keys, remote);
    c.stdin(Stdio::from(file))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().map_err(SshError::Spawn)?;
    collect(t, remote, child, limit).await
}

/// Puts a child that lab drives (ssh, its proxy) in a process group of its own: a Ctrl-C typed at a terminal goes
/// to the whole foreground group, and lab alone decides what an interruption stops (a killed `ssh` would turn into
/// an ordinary remote failure). lab ends these children itself (`kill_on_drop`).
pub fn own_group(c: &mut Command) {
    c.process_group(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_host_only_for_ssh_uris() {
        assert_eq!(jump_host("qemu:///system"), None);
        assert_eq!(jump_host("qemu+tcp://hv1/system"), None);
        let j = jump_host("qemu+ssh://ann@hv1/system").unwrap();
        assert_eq!(j.proxy_command(), "ssh -o BatchMode=yes -W %h:%p 'ann@hv1'");
        let j =
            jump_host("qemu+ssh://root@127.0.0.1:2222/system?keyfile=/k/id&no_verify=1").unwrap();
        assert_eq!(j.port, Some(2222));
        assert_eq!(
            j.proxy_command(),
            "ssh -o BatchMode=yes -i '/k/id' -p 2222 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
             -W %h:%p 'root@127.0.0.1'"
        );
        let j = jump_host("qemu+ssh://user@[::1]:2222/system").unwrap();
        assert_eq!(j.destination, "user@::1");
        assert_eq!(j.port, Some(2222));
        assert_eq!(
            jump_host("qemu+ssh://hv.example/system?keyfile=%2Fk%20x&x=1").unwrap(),
            Jump {
                destination: "hv.example".into(),
                port: None,
                keyfile: Some("/k x".into()),
                no_verify: false
            }
        );
    }

    #[test]
    fn an_unreadable_key_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id");
        let made = load_or_make(&p, "c").unwrap();
        assert_eq!(
            load_or_make(&p, "c").unwrap(),
            made,
            "loaded, not made again"
        );
        std::fs::write(&p, "garbage").unwrap();
        assert!(matches!(
            load_or_make(&p, "c"),
            Err(SshError::BadKey { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "garbage",
            "left as it was"
        );
    }
}
