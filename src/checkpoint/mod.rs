//! Whole-lab checkpoints as data: the record of what a built checkpoint holds, and the build key that says
//! whether a checkpoint defined in the lab file is still what the file describes. The operations live in
//! `orchestrator::checkpoints`.

use crate::model::{Checkpoint, Lab, StepAction, BASE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The automatic disk-only checkpoint `restore` keeps of the state it replaces.
pub const UNDO: &str = "undo";

/// One built checkpoint, as kept in the lab's state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The hardware the machines had when it was taken: what its memory states need to be loaded. None for a
    /// checkpoint taken by an older lab (its machines had the legacy hardware).
    #[serde(default)]
    pub hardware: Option<crate::render::xml::Hardware>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub layer: String,
    pub memory: Option<String>,
    /// The memory file's length when it was saved: a restore refuses a state of another length (truncated or
    /// replaced) before it changes anything. None in records made before lab kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// How the disk layer was made whole at the snapshot (so it can also be booted on its own).
    #[serde(default)]
    pub flushed: Flush,
}

/// How a machine's disk layer was made consistent when the checkpoint was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flush {
    /// The guest agent froze the file systems (every write was on the disk). A memory state taken so holds
    /// frozen file systems: a restore thaws them.
    Frozen,
    /// `sync` over SSH (no guest agent): every write up to the sync was on the disk.
    Synced,
    /// Neither worked (or an older lab took it): the layer holds what the guest had written back.
    #[default]
    None,
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The key of `base`: the machines, their images and the downloads placed in them.
pub fn base_key(lab: &Lab) -> String {
    let mut parts = Vec::new();
    for m in &lab.machines {
        let img = lab.image(&m.image);
        parts.push(format!(
            "{}|{}|{}|{}|{}|{}|{}",
            m.name, m.ip, m.cpus, m.memory, m.disk, m.user, img.url
        ));
    }
    for d in &lab.downloads {
        parts.push(format!(
            "{}|{}|{:?}|{}|{}|{:o}",
            d.name,
            d.url,
            d.checksum,
            d.machines.join(","),
            d.dest_path,
            d.mode
        ));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    hash(&refs)
}

/// The key of a lab-file checkpoint: its parent's key and the text of its steps (scripts included).
pub fn key(lab: &Lab, c: &Checkpoint) -> String {
    let parent = if c.after == BASE {
        base_key(lab)
    } else {
        key(lab, lab.checkpoint(&c.after).expect("validated parent"))
    };
    let mut parts = vec![parent];
    for s in &c.steps {
        parts.push(s.machines.join(","));
        parts.push(match &s.action {
            StepAction::Script { path, text } => format!("script {path}\n{text}"),
            StepAction::Run(r) => format!("run {r}"),
            StepAction::Copy(cs) => cs
                .iter()
                .map(|c| {
                    format!(
                        "copy {}:{} {} {:o}",
                        c.from_machine, c.from_path, c.to_path, c.mode
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    hash(&refs)
}

/// Whether a built record is stale: it was built from the lab file and the file now describes it differently.
pub fn is_stale(lab: &Lab, r: &Record) -> bool {
    let Some(built) = &r.key else { return false };
    if r.name == BASE {
        return *built != base_key(lab);
    }
    match lab.checkpoint(&r.name) {
        Some(c) => *built != key(lab, c),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{load_str, Source};

    const LAB: &str = "name = \"k\"\n[network]\nsubnet = \"10.9.0.0/24\"\n[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n\
        [[checkpoint]]\nname = \"one\"\n[[checkpoint.step]]\nrun = \"touch /one\"\n\
        [[checkpoint]]\nname = \"two\"\naliases = [\"module-done\"]\n[[checkpoint.step]]\nrun = \"touch /two\"\n";

    fn lab(text: &str) -> Lab {
        load_str(Source::File("lab.toml".into()), text).unwrap()
    }

    #[test]
    fn chain_and_aliases_resolve() {
        let l = lab(LAB);
        let chain: Vec<&str> = l
            .checkpoint_chain("module-done")
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(chain, ["one", "two"]);
        assert_eq!(l.checkpoint("module-done").unwrap().name, "two");
    }

    #[test]
    fn editing_a_step_changes_its_key_and_its_childrens() {
        let a = lab(LAB);
        let b = lab(&LAB.replace("touch /one", "touch /uno"));
        let c = lab(&LAB.replace("touch /two", "touch /dos"));
        let k = |l: &Lab, n: &str| key(l, l.checkpoint(n).unwrap());
        assert_ne!(k(&a, "one"), k(&b, "one"));
        assert_ne!(
            k(&a, "two"),
            k(&b, "two"),
            "a child of an edited checkpoint is stale too"
        );
        assert_eq!(
            k(&a, "one"),
            k(&c, "one"),
            "a parent is not affected by its child"
        );
        assert_ne!(k(&a, "two"), k(&c, "two"));
    }
}
