//! A checkpoint's build plan as text: the chain from `base`, each step's machines and action, and its checks.
//! `lab plan NAME` prints it; the course's plans are snapshot-tested.

use crate::model::{Checkpoint, Lab, StepAction};
use sha2::{Digest, Sha256};

/// The plan of checkpoint `name` (or an alias), or None if the lab file does not define it.
pub fn plan(lab: &Lab, name: &str) -> Option<String> {
    Some(
        lab.checkpoint_chain(name)?
            .into_iter()
            .map(describe)
            .collect(),
    )
}

/// One checkpoint's part of a plan.
pub fn describe(c: &Checkpoint) -> String {
    let mut out = String::new();
    {
        out.push_str(&format!("checkpoint {} (after {})", c.name, c.after));
        if !c.aliases.is_empty() {
            out.push_str(&format!(", also {}", c.aliases.join(", ")));
        }
        out.push('\n');
        if let Some(d) = &c.description {
            out.push_str(&format!("  {d}\n"));
        }
        for (i, s) in c.steps.iter().enumerate() {
            let on = s.machines.join(", ");
            match &s.action {
                StepAction::Script { path, text } => out.push_str(&format!(
                    "  step {} on {on}: script {path} ({} lines, sha256 {})\n",
                    i + 1,
                    text.lines().count(),
                    &hex::encode(Sha256::digest(text.as_bytes()))[..16]
                )),
                StepAction::Run(r) => {
                    out.push_str(&format!("  step {} on {on}: run `{}`\n", i + 1, r.trim()))
                }
                StepAction::Copy(cs) => {
                    for c in cs {
                        out.push_str(&format!(
                            "  step {} on {on}: copy {}:{} to {} (mode {:o})\n",
                            i + 1,
                            c.from_machine,
                            c.from_path,
                            c.to_path,
                            c.mode
                        ));
                    }
                }
            }
        }
        for k in &c.checks {
            out.push_str(&format!(
                "  check on {}: {}\n",
                k.machines.join(", "),
                k.name
            ));
        }
    }
    out
}

/// The plan as data (`lab plan --json`): each checkpoint of the chain with its steps and checks.
pub fn plan_json(lab: &Lab, name: &str) -> Option<serde_json::Value> {
    let chain = lab.checkpoint_chain(name)?;
    Some(serde_json::Value::Array(
        chain
            .into_iter()
            .map(|c| {
                let steps: Vec<serde_json::Value> = c
                    .steps
                    .iter()
                    .map(|s| {
                        let action = match &s.action {
                            StepAction::Script { path, text } => serde_json::json!({
                                "script": path,
                                "lines": text.lines().count(),
                                "sha256": hex::encode(Sha256::digest(text.as_bytes())),
                            }),
                            StepAction::Run(r) => serde_json::json!({ "run": r }),
                            StepAction::Copy(cs) => serde_json::json!({
                                "copy": cs.iter().map(|c| serde_json::json!({
                                    "from": format!("{}:{}", c.from_machine, c.from_path),
                                    "to": c.to_path,
                                    "mode": format!("{:o}", c.mode),
                                })).collect::<Vec<_>>()
                            }),
                        };
                        serde_json::json!({ "machines": s.machines, "action": action })
                    })
                    .collect();
                serde_json::json!({
                    "name": c.name,
                    "after": c.after,
                    "aliases": c.aliases,
                    "description": c.description,
                    "steps": steps,
                    "checks": c.checks.iter().map(|k| serde_json::json!({
                        "name": k.name,
                        "machines": k.machines,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    ))
}
