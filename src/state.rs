//! What lab keeps on the machine it runs on: folders (XDG), the per-lab lock, and the lab's state file.

use crate::checkpoint::Record;
use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    #[error("another lab command is working on lab `{lab}` and did not finish within {secs} s")]
    Busy { lab: String, secs: u64 },
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
pub struct LabLock {
    file: std::fs::File,
    path: PathBuf,
}

impl LabLock {
    pub fn acquire(dirs: &Dirs, lab: &str, wait: Duration) -> Result<LabLock, StateError> {
        let path = dirs.lock_path(lab);
        let parent = path.parent().expect("lock has a folder");
        fs_err::create_dir_all(parent).map_err(|e| StateError::Io {
            path: parent.to_path_buf(),
            source: e,
        })?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let start = std::time::Instant::now();
        let mut told = false;
        loop {
            match file.try_lock_exclusive() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(io(&path)(e)),
            }
            if !told {
                eprintln!("waiting for another lab command on lab `{lab}` to finish…");
                told = true;
            }
            if start.elapsed() > wait {
                return Err(StateError::Busy {
                    lab: lab.into(),
                    secs: wait.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(LabLock { file, path })
    }

    /// Removes the lock file (used by `destroy`, which leaves no file behind); the lock is released on drop.
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for LabLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

pub const STATE_FORMAT: u32 = 1;

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
    /// An operation that started and has not finished (set before, cleared after): a `kill -9` leaves it here.
    #[serde(default)]
    pub pending: Option<String>,
}

impl State {
    pub fn new(uri: &str) -> State {
        State {
            format: STATE_FORMAT,
            uri: uri.to_string(),
            current: None,
            active: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
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
        let s: State = serde_json::from_str(&text).map_err(|e| StateError::Damaged {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if s.format != STATE_FORMAT {
            return Err(StateError::Damaged {
                path,
                message: format!("format {} (this lab reads format {STATE_FORMAT})", s.format),
            });
        }
        Ok(Some(s))
    }

    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = Self::path(dir);
        write_atomic(
            &path,
            serde_json::to_string_pretty(self)
                .expect("state serializes")
                .as_bytes(),
        )
    }
}

/// Writes a file so that readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let parent = path.parent().expect("file has a folder");
    fs_err::create_dir_all(parent).map_err(|e| StateError::Io {
        path: parent.to_path_buf(),
        source: e,
    })?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_command_on_the_same_lab_waits_then_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            cache: dir.path().join("c"),
            state: dir.path().join("s"),
        };
        let first = LabLock::acquire(&dirs, "l", Duration::from_secs(1)).unwrap();
        let second = LabLock::acquire(&dirs, "l", Duration::from_millis(500));
        assert!(matches!(second, Err(StateError::Busy { .. })));
        assert!(
            LabLock::acquire(&dirs, "other", Duration::from_millis(500)).is_ok(),
            "other labs are not blocked"
        );
        drop(first);
        assert!(LabLock::acquire(&dirs, "l", Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn state_round_trips_and_refuses_other_formats() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::new("qemu:///system");
        s.current = Some("base".into());
        s.save(dir.path()).unwrap();
        assert_eq!(
            State::load(dir.path()).unwrap().unwrap().current.as_deref(),
            Some("base")
        );
        std::fs::write(State::path(dir.path()), r#"{"format": 99, "uri": "x"}"#).unwrap();
        assert!(matches!(
            State::load(dir.path()),
            Err(StateError::Damaged { .. })
        ));
    }
}
