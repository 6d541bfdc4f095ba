//! Whole-lab checkpoints: records of what each checkpoint holds, and building the lab-file checkpoints' keys.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One built checkpoint, as kept in the lab's state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    /// The checkpoint this one's disk layers sit on (None for `base`).
    pub parent: Option<String>,
    /// RFC 3339 UTC.
    pub created: String,
    /// Whether it holds memory (machines resume) or only disks (machines boot).
    pub memory: bool,
    /// For checkpoints built from the lab file: the hash of what built them. None for user snapshots.
    pub key: Option<String>,
    /// Per machine: the frozen disk layer and the memory file, as volume names in the lab's pool.
    pub machines: BTreeMap<String, MachineRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineRecord {
    pub layer: String,
    pub memory: Option<String>,
}
