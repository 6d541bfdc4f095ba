//! Results on stdout (tables and JSON), errors on stderr. A reader that goes away (`lab validate | head -1`) ends
//! the output quietly: writes that fail are dropped, and the command finishes with its usual exit code.

use crate::orchestrator::checkpoints::Listed;
use std::io::Write;

/// Writes one line to stdout; a closed pipe is not an error (the rest of the output is dropped).
pub fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
}

/// Writes one line to stderr, the same way.
pub fn err(line: &str) {
    crate::ui::say(line);
}

pub fn json<T: serde::Serialize>(v: &T) {
    out(&serde_json::to_string_pretty(v).expect("serializes"));
}

/// Shortens `s` to `width` characters, marking the cut.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// `2026-12-01T09:12:44Z` as `12-01 09:12` (the year is rarely news).
fn short_time(t: &str) -> String {
    match (t.get(5..10), t.get(11..16)) {
        (Some(d), Some(h)) => format!("{d} {h}"),
        _ => t.to_string(),
    }
}

/// The checkpoints as a tree (children under their parents), fitting 80 columns:
///
/// ```text
/// CHECKPOINT                           STATE      MEMORY  SIZE       TAKEN
/// base *                               built      yes     812 MiB    12-01 09:12
///   the machines right after `lab up`
/// └─ containerd-done                   not built
/// ```
pub fn checkpoints(list: &[Listed]) -> Vec<String> {
    const NAME: usize = 36;
    let mut lines = vec![format!(
        "{:<NAME$} {:<10} {:<7} {:<10} TAKEN",
        "CHECKPOINT", "STATE", "MEMORY", "SIZE"
    )];
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    let is_root = |c: &Listed| c.parent.as_deref().is_none_or(|p| !names.contains(&p));
    let roots: Vec<&Listed> = list.iter().filter(|c| is_root(c)).collect();
    for (i, r) in roots.iter().enumerate() {
        walk(list, r, "", i + 1 == roots.len(), true, &mut lines);
    }
    lines.push("* the machines run on it; `lab restore NAME` jumps to any of them".into());
    lines
}

fn walk(
    list: &[Listed],
    c: &Listed,
    prefix: &str,
    last: bool,
    root: bool,
    lines: &mut Vec<String>,
) {
    const NAME: usize = 36;
    let branch = if root {
        ""
    } else if last {
        "└─ "
    } else {
        "├─ "
    };
    let mut name = format!("{prefix}{branch}{}", c.name);
    if c.current {
        name.push_str(" *");
    }
    if !c.aliases.is_empty() {
        name.push_str(&format!(" ({})", c.aliases.join(", ")));
    }
    let state = match (c.built, c.stale) {
        (false, _) => "not built",
        (true, true) => "stale",
        (true, false) => "built",
    };
    let row = if c.built {
        format!(
            "{:<NAME$} {:<10} {:<7} {:<10} {}",
            fit(&name, NAME),
            state,
            if c.memory { "yes" } else { "no" },
            crate::model::format_size(c.size),
            c.created.as_deref().map(short_time).unwrap_or_default()
        )
    } else {
        format!("{:<NAME$} {state}", fit(&name, NAME))
    };
    lines.push(row.trim_end().to_string());
    let child_prefix = if root {
        String::new()
    } else {
        format!("{prefix}{}", if last { "   " } else { "│  " })
    };
    let kids: Vec<&Listed> = list
        .iter()
        .filter(|k| k.parent.as_deref() == Some(c.name.as_str()))
        .collect();
    if let Some(d) = &c.description {
        let bar = if kids.is_empty() { "   " } else { "│  " };
        lines.push(fit(&format!("{child_prefix}{bar}{d}"), 80));
    }
    for (i, k) in kids.iter().enumerate() {
        walk(list, k, &child_prefix, i + 1 == kids.len(), false, lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(name: &str, parent: Option<&str>, built: bool) -> Listed {
        Listed {
            name: name.into(),
            parent: parent.map(str::to_string),
            created: built.then(|| "2026-12-01T09:12:44Z".to_string()),
            size: if built { 812 << 20 } else { 0 },
            memory: built,
            built,
            stale: false,
            defined_in_lab_file: true,
            description: Some(format!("what {name} holds, in words a student reads")),
            aliases: Vec::new(),
            current: name == "base",
        }
    }

    #[test]
    fn a_tree_that_fits_80_columns() {
        let mut list = vec![
            l("base", None, true),
            l("containerd-done", Some("base"), true),
            l("kubelet-done", Some("containerd-done"), false),
            l(
                "a-very-long-checkpoint-name-that-goes-on-and-on",
                Some("base"),
                true,
            ),
        ];
        list[2].aliases = vec!["worker-done".into()];
        list[1].description =
            Some("Lesson 1 done: ".to_string() + &"containerd and friends ".repeat(8));
        let lines = checkpoints(&list);
        for l in &lines {
            assert!(l.chars().count() <= 80, "{} chars: {l}", l.chars().count());
        }
        let text = lines.join("\n");
        assert!(text.contains("base *"), "{text}");
        assert!(text.contains("├─ containerd-done"), "{text}");
        assert!(text.contains("│  └─ kubelet-done (worker-done)"), "{text}");
        assert!(
            text.contains("└─ a-very-long-checkpoint-name-that… built"),
            "{text}"
        );
        assert!(text.contains("what base holds"), "{text}");
    }
}
