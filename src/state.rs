//! What lab keeps on the machine it runs on: folders (XDG), the per-lab lock, and the lab's state file with the
//! mark of an operation in progress (the journal a later command repairs from after a `kill -9`).

use crate::checkpoint::Record;
use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {path} is damaged: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("another lab command{} is working on lab `{lab}` and did not finish within {secs} s", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy {
        lab: String,
        secs: u64,
        pid: Option<u32>,
    },
    #[error("no home folder to keep lab's files in")]
    NoHome,
}

impl StateError {
    pub fn hint(&self) -> Option<String> {
        match self {
            StateError::Busy { .. } => {
                Some("wait for it to finish, or stop it, then run the command again".into())
            }
            StateError::Damaged { .. } => {
                Some("`lab destroy` removes the lab and its state".into())
            }
            StateError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                Some("the disk is full: free some space and run the command again".into())
            }
            StateError::NoHome => Some("set HOME (or XDG_STATE_HOME and XDG_CACHE_HOME)".into()),
            _ => None,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// lab's folders on this machine.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Downloads, by content (`$XDG_CACHE_HOME/lab`).
    pub cache: PathBuf,
    /// Per-lab keys and state (`$XDG_STATE_HOME/lab`).
    pub state: PathBuf,
}

impl Dirs {
    pub fn from_env() -> Result<Dirs, StateError> {
        let p = directories::ProjectDirs::from("", "", "lab").ok_or(StateError::NoHome)?;
        let state = p
            .state_dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| p.data_local_dir().join("state"));
        Ok(Dirs {
            cache: p.cache_dir().to_path_buf(),
            state,
        })
    }

    /// The folder of one lab: keys, known_hosts, state.json.
    pub fn lab(&self, lab: &str) -> PathBuf {
        self.state.join("labs").join(lab)
    }

    /// Removes lab's state folders if nothing is left in them (after the last lab is gone).
    pub fn remove_empty(&self) {
        let _ = std::fs::remove_dir(self.state.join("labs"));
        let _ = std::fs::remove_dir(&self.state);
    }

    fn lock_path(&self, lab: &str) -> PathBuf {
        self.state.join("labs").join(format!("{lab}.lock"))
    }
}

/// Held while a command works on a lab; a second command on the same lab waits.
///
/// The lock is `flock` on `labs/LAB.lock`, which holds the holder's pid. `destroy` removes the file while it holds
/// the lock (a destroyed lab leaves no file behind), so whoever gets the lock checks that the file it locked is
/// still the one at the path, and starts again if not: two processes can never both hold the lock of a lab.
pub struct LabLock {
    file: std::fs::File,
    path: PathBuf,
}

/// The inode of an open file and of a path, to tell whether the path still names the file.
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

impl LabLock {
    /// Takes the lab's lock, waiting up to `wait` for another command to finish; `waiting` is told once, with the
    /// other command's pid when known. Blocks the thread: call it off the async runtime (`acquire_async`).
    pub fn acquire(
        dirs: &Dirs,
        lab: &str,
        wait: Duration,
        waiting: &dyn Fn(Option<u32>),
    ) -> Result<LabLock, StateError> {
        let start = Instant::now();
        let mut told = false;
        loop {
            if let Some(lock) = Self::try_acquire(dirs, lab)? {
                return Ok(lock);
            }
            let pid = Self::holder(dirs, lab);
            if !told {
                waiting(pid);
                told = true;
            }
            if start.elapsed() > wait {
                return Err(StateError::Busy {
                    lab: lab.into(),
                    secs: wait.as_secs(),
                    pid,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `acquire` on tokio's blocking pool.
    pub async fn acquire_async(
        dirs: &Dirs,
        lab: &str,
        wait: Duration,
        waiting: impl Fn(Option<u32>) + Send + 'static,
    ) -> Result<LabLock, StateError> {
        let (dirs, lab) = (dirs.clone(), lab.to_string());
        tokio::task::spawn_blocking(move || Self::acquire(&dirs, &lab, wait, &waiting))
            .await
            .expect("lock task panicked")
    }

    /// The lock if no other command holds it, at once.
    pub fn try_acquire(dirs: &Dirs, lab: &str) -> Result<Option<LabLock>, StateError> {
        use std::io::{Seek, Write};
        let path = dirs.lock_path(lab);
        let parent = path.parent().expect("lock has a folder");
        fs_err::create_dir_all(parent).map_err(io(parent))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        if !file.try_lock_exclusive().map_err(io(&path))? {
            return Ok(None);
        }
        if !same_file(&file, &path) {
            // `destroy` removed the file while we waited on it: the lock is on a file nobody else will see.
            return Self::try_acquire(dirs, lab);
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(Some(LabLock { file, path }))
    }

    /// The pid written by the command holding the lock, if any.
    pub fn holder(dirs: &Dirs, lab: &str) -> Option<u32> {
        std::fs::read_to_string(dirs.lock_path(lab))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Removes the lock file while still holding it (`destroy` leaves no file behind); see the type's comment.
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for LabLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

pub const STATE_FORMAT: u32 = 2;

/// An operation that started and has not finished: written before its first change, cleared after its last. A
/// later command that finds it while nobody holds the lab's lock knows the process died (`kill -9`, power cut)
/// and repairs from it before going on (`orchestrator::repair`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Pending {
    /// `lab up`; `fresh` when no lab existed before it (a failed first `up` removes what it made).
    Up { fresh: bool },
    /// `lab snapshot NAME` (also a checkpoint build's save).
    Snapshot { name: String },
    /// `lab restore NAME`: the machines move to NAME; `undo` is what they leave (recorded once the restore is
    /// done); `discard` are volumes to delete after it (the `undo` it replaces).
    Restore {
        name: String,
        undo: Option<Record>,
        discard: Vec<String>,
    },
    /// Building lab-file checkpoints on top of `from`; interrupted, the lab goes back to `from`.
    Build { target: String, from: String },
    /// `lab checkpoint rm`: the records are gone, these volumes are being deleted.
    Remove { volumes: Vec<String> },
    /// `lab stop`: saving every machine's memory (or shutting the guests down).
    Stop,
    /// `lab start`.
    Start,
    /// `lab destroy`.
    Destroy,
    /// A mark left by an older lab (state format 1), which recorded only the command.
    Legacy { command: String },
}

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pending::Up { .. } => write!(f, "lab up"),
            Pending::Snapshot { name } => write!(f, "lab snapshot {name}"),
            Pending::Restore { name, .. } => write!(f, "lab restore {name}"),
            Pending::Build { target, .. } => write!(f, "lab restore {target} (building it)"),
            Pending::Remove { .. } => write!(f, "lab checkpoint rm"),
            Pending::Stop => write!(f, "lab stop"),
            Pending::Start => write!(f, "lab start"),
            Pending::Destroy => write!(f, "lab destroy"),
            Pending::Legacy { command } => write!(f, "lab {command}"),
        }
    }
}

/// The lab's state file: what lab made and where the lab stands. Written atomically.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// The libvirt URI the lab lives on.
    pub uri: String,
    /// The checkpoint the machines were last restored to or saved as (`base` right after `up`).
    pub current: Option<String>,
    /// Per machine: the generation of the disk it runs on (see `render::names::vol::active`).
    #[serde(default)]
    pub active: BTreeMap<String, u64>,
    /// Built checkpoints by name.
    #[serde(default)]
    pub checkpoints: BTreeMap<String, Record>,
    /// Volumes whose upload finished and was verified (base images): a volume of that kind not listed here is a
    /// partial upload of a killed process and is made again. None for a lab made by an older `lab`, which did not
    /// record this (its images are judged by their size alone).
    #[serde(default)]
    pub complete: Option<BTreeSet<String>>,
    /// The operation in progress, if any (see [`Pending`]).
    #[serde(default)]
    pub pending: Option<Pending>,
}

impl State {
    /// Whether the upload of volume `v` is known to have finished (for an older lab: unknown, so the size says).
    pub fn upload_complete(&self, v: &str) -> Option<bool> {
        self.complete.as_ref().map(|c| c.contains(v))
    }

    pub fn set_upload_complete(&mut self, v: &str, done: bool) {
        let c = self.complete.get_or_insert_with(BTreeSet::new);
        if done {
            c.insert(v.to_string());
        } else {
            c.remove(v);
        }
    }

    pub fn new(uri: &str) -> State {
        State {
            format: STATE_FORMAT,
            uri: uri.to_string(),
            current: None,
            active: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            complete: Some(BTreeSet::new()),
            pending: None,
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let damaged = |message: String| StateError::Damaged {
            path: path.clone(),
            message,
        };
        let mut v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
        match v["format"].as_u64() {
            Some(1) => {
                v["complete"] = serde_json::Value::Null;
                // Format 1 kept the pending operation as its command's text.
                let legacy = v["pending"]
                    .as_str()
                    .map(|c| serde_json::json!({"op": "legacy", "command": c}));
                v["pending"] = legacy.unwrap_or(serde_json::Value::Null);
                v["format"] = STATE_FORMAT.into();
            }
            Some(f) if f == u64::from(STATE_FORMAT) => {}
            other => {
                return Err(damaged(format!(
                    "format {} (this lab reads formats 1 and {STATE_FORMAT})",
                    other.map_or("?".into(), |f| f.to_string())
                )))
            }
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| damaged(e.to_string()))
    }

    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = Self::path(dir);
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        crate::fsutil::write_atomic(&path, text.as_bytes(), None).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(dir: &Path) -> Dirs {
        Dirs {
            cache: dir.join("c"),
            state: dir.join("s"),
        }
    }

    #[test]
    fn a_second_command_on_the_same_lab_waits_then_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = dirs(dir.path());
        let first = LabLock::acquire(&dirs, "l", Duration::from_secs(1), &|_| {}).unwrap();
        let told = std::sync::Mutex::new(None);
        let second = LabLock::acquire(&dirs, "l", Duration::from_millis(300), &|p| {
            *told.lock().unwrap() = Some(p)
        });
        match second {
            Err(StateError::Busy { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Busy, got {:?}", other.map(|_| ())),
        }
        assert_eq!(
            *told.lock().unwrap(),
            Some(Some(std::process::id())),
            "the waiter is told who holds the lock"
        );
        assert!(
            LabLock::try_acquire(&dirs, "other").unwrap().is_some(),
            "other labs are not blocked"
        );
        drop(first);
        assert!(LabLock::try_acquire(&dirs, "l").unwrap().is_some());
    }

    #[test]
    fn a_removed_lock_file_never_gives_two_holders() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = dirs(dir.path());
        let first = LabLock::try_acquire(&dirs, "l").unwrap().unwrap();
        // A waiter opened the file before `destroy` removed it, and locks it once the first holder lets go.
        let path = dirs.lock_path("l");
        let stale = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        first.remove_file();
        // A third command makes a new file and holds it.
        let third = LabLock::try_acquire(&dirs, "l").unwrap().unwrap();
        drop(first);
        assert!(stale.try_lock_exclusive().unwrap(), "the old inode is free");
        assert!(!same_file(&stale, &path), "but it is not the lock any more");
        assert!(
            LabLock::try_acquire(&dirs, "l").unwrap().is_none(),
            "the lock at the path is still held by the third command"
        );
        drop(third);
    }

    #[test]
    fn state_round_trips_reads_format_1_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::new("qemu:///system");
        s.current = Some("base".into());
        s.pending = Some(Pending::Snapshot { name: "a".into() });
        s.save(dir.path()).unwrap();
        let back = State::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.current.as_deref(), Some("base"));
        assert_eq!(back.pending, Some(Pending::Snapshot { name: "a".into() }));
        std::fs::write(
            State::path(dir.path()),
            r#"{"format": 1, "uri": "x", "current": "b", "pending": "restore a"}"#,
        )
        .unwrap();
        let old = State::load(dir.path()).unwrap().unwrap();
        assert_eq!(
            old.pending,
            Some(Pending::Legacy {
                command: "restore a".into()
            })
        );
        assert_eq!(old.current.as_deref(), Some("b"));
        assert_eq!(
            old.complete, None,
            "an older lab recorded no completed uploads"
        );
        std::fs::write(State::path(dir.path()), r#"{"format": 99, "uri": "x"}"#).unwrap();
        assert!(matches!(
            State::load(dir.path()),
            Err(StateError::Damaged { .. })
        ));
    }
}
