//! `lab checkpoints` as a graph, the way `git log --graph` draws history: a chain of checkpoints stays in one
//! column, and only where a checkpoint has more than one child does a branch step aside (`├─`). A name is never
//! cut (a student types it): one wider than its column takes a line of its own. Descriptions wrap at the width.
//!
//! ```text
//! CHECKPOINT                  STATE      MEMORY  SIZE       TAKEN
//! base *                      built      yes     812 MiB    12-01 09:12
//! │ the machines right after `lab up`
//! ├─ mine                     built      yes     20 MiB     12-01 10:30
//! │    (a side branch: a checkpoint taken on base)
//! containerd-done             not built
//! │ Lesson 1 done: containerd …
//! kubelet-done (worker-done)  not built
//!   Lesson 2 done …
//! ```

use crate::orchestrator::checkpoints::Listed;
use crate::term::{columns, paint, wrap, DIM, GOOD, HEADER, SO_SO};

/// The columns after the name: STATE, MEMORY, SIZE, TAKEN, with the spaces between them.
const TAIL: usize = 10 + 1 + 7 + 1 + 10 + 1 + 11;
/// The narrowest name column, whatever the width.
const MIN_NAME: usize = 12;
/// The narrowest a description is wrapped to.
const MIN_TEXT: usize = 24;

/// Every checkpoint as lines of at most `width` columns (the tail of a row may overflow below ~55 columns).
pub fn checkpoints(list: &[Listed], width: usize) -> Vec<String> {
    let mut rows = Vec::new();
    for root in list.iter().filter(|c| is_root(list, c)) {
        chain(list, root, String::new(), String::new(), &mut rows);
    }
    let widest = rows
        .iter()
        .map(|r| columns(&r.lead) + columns(&label(r.c)))
        .max()
        .unwrap_or(0);
    let name_w = widest
        .min(width.saturating_sub(TAIL + 1))
        .max(MIN_NAME)
        .max("CHECKPOINT".len());
    let mut lines = vec![paint(
        HEADER,
        &format!(
            "{} {:<10} {:<7} {:<10} TAKEN",
            pad("CHECKPOINT", name_w),
            "STATE",
            "MEMORY",
            "SIZE"
        ),
    )];
    for r in &rows {
        draw(r, name_w, width, &mut lines);
    }
    let note = "* the machines run on it; `lab restore NAME` jumps to any of them";
    lines.extend(wrap(note, width.max(MIN_TEXT)));
    lines
}

/// One checkpoint in the graph: what goes before its name, and before the lines under it.
struct Row<'a> {
    c: &'a Listed,
    lead: String,
    under: String,
}

fn is_root(list: &[Listed], c: &Listed) -> bool {
    c.parent
        .as_deref()
        .is_none_or(|p| !list.iter().any(|o| o.name == p))
}

fn children<'a>(list: &'a [Listed], c: &Listed) -> Vec<&'a Listed> {
    list.iter()
        .filter(|k| k.parent.as_deref() == Some(c.name.as_str()))
        .collect()
}

/// `c` and its first child, that child's first child, and so on, all in one column; every other child starts a
/// branch one step to the right, drawn before the chain goes on.
fn chain<'a>(
    list: &'a [Listed],
    mut c: &'a Listed,
    mut lead: String,
    under: String,
    rows: &mut Vec<Row<'a>>,
) {
    loop {
        let kids = children(list, c);
        rows.push(Row {
            c,
            lead,
            under: under.clone() + if kids.is_empty() { "  " } else { "│ " },
        });
        for k in kids.iter().skip(1) {
            chain(list, k, under.clone() + "├─ ", under.clone() + "│  ", rows);
        }
        match kids.first() {
            Some(next) => {
                c = next;
                lead = under.clone();
            }
            None => return,
        }
    }
}

/// The name as the student types it, the current mark and the aliases.
fn label(c: &Listed) -> String {
    let mut s = c.name.clone();
    if c.current {
        s.push(' ');
        s.push_str(&paint(GOOD.bold(), "*"));
    }
    if !c.aliases.is_empty() {
        s.push_str(&format!(" ({})", c.aliases.join(", ")));
    }
    s
}

fn draw(r: &Row, name_w: usize, width: usize, lines: &mut Vec<String>) {
    let c = r.c;
    let state = match (c.built, c.stale) {
        (false, _) => paint(DIM, "not built"),
        (true, true) => paint(SO_SO, &format!("{:<10}", "stale")),
        (true, false) => paint(GOOD, &format!("{:<10}", "built")),
    };
    let tail = if c.built {
        format!(
            "{state} {:<7} {:<10} {}",
            if c.memory { "yes" } else { "no" },
            crate::model::format_size(c.size),
            c.created.as_deref().map(short_time).unwrap_or_default()
        )
    } else {
        state
    };
    let name = format!("{}{}", r.lead, label(c));
    if columns(&name) <= name_w {
        lines.push(
            format!("{} {tail}", pad(&name, name_w))
                .trim_end()
                .to_string(),
        );
    } else {
        lines.push(name);
        lines.push(format!("{} {tail}", pad(r.under.trim_end(), name_w)));
    }
    if let Some(d) = &c.description {
        let room = width.saturating_sub(columns(&r.under)).max(MIN_TEXT);
        for l in wrap(d, room) {
            lines.push(format!("{}{l}", r.under));
        }
    }
}

/// `s` padded with spaces to `w` columns (escape codes take none).
fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(columns(s))))
}

/// `2026-12-01T09:12:44Z` as `12-01 09:12` (the year is rarely news).
fn short_time(t: &str) -> String {
    match (t.get(5..10), t.get(11..16)) {
        (Some(d), Some(h)) => format!("{d} {h}"),
        _ => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::plain;

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

    fn text(list: &[Listed], width: usize) -> String {
        let lines: Vec<String> = checkpoints(list, width).iter().map(|l| plain(l)).collect();
        for l in &lines {
            let n = l.chars().count();
            assert!(n <= width, "{n} columns (of {width}): {l}");
        }
        lines.join("\n")
    }

    /// The course lab's checkpoints: base and ten lessons, one chain, with their real names and descriptions.
    fn course() -> Vec<Listed> {
        let lab = crate::model::load(None).expect("the course lab loads");
        let mut list = vec![l("base", None, true)];
        list[0].description = Some("the machines right after `lab up`".into());
        for c in &lab.checkpoints {
            let mut x = l(&c.name, Some(&c.after), false);
            x.description = c.description.clone();
            x.aliases = c.aliases.clone();
            list.push(x);
        }
        list
    }

    #[test]
    fn the_course_chain_at_80_columns_keeps_every_name_whole_and_flat() {
        let list = course();
        assert_eq!(list.len(), 11);
        let t = text(&list, 80);
        for c in &list {
            let name = match c.aliases.is_empty() {
                true => c.name.clone(),
                false => format!("{} ({})", c.name, c.aliases.join(", ")),
            };
            // Flat: every name starts a line, none indented, none cut.
            assert!(
                t.lines().any(|l| l.starts_with(&name)),
                "`{name}` not whole at the start of a line:\n{t}"
            );
        }
        assert!(!t.contains('…'), "{t}");
        assert!(!t.contains("├─") && !t.contains("└─"), "{t}");
        insta::assert_snapshot!(t);
    }

    #[test]
    fn columns_follow_the_width() {
        let list = course();
        let wide = text(&list, 120);
        // At 120 columns even the longest name fits its column, so every row is one line.
        assert!(wide
            .lines()
            .any(|l| l.starts_with("controller-manager-done (control-plane-done) not built")));
        let narrow = text(&list, 80);
        assert!(narrow
            .lines()
            .any(|l| l == "controller-manager-done (control-plane-done)"));
    }

    #[test]
    fn a_branching_tree_steps_aside_only_where_it_branches() {
        let mut list = vec![
            l("base", None, true),
            l("containerd-done", Some("base"), true),
            l("kubelet-done", Some("containerd-done"), false),
            l(
                "a-very-long-checkpoint-name-that-goes-on-and-on",
                Some("base"),
                true,
            ),
            l(
                "mine",
                Some("a-very-long-checkpoint-name-that-goes-on-and-on"),
                true,
            ),
            l("other", Some("containerd-done"), false),
        ];
        list[2].aliases = vec!["worker-done".into()];
        list[1].description =
            Some("Lesson 1 done: ".to_string() + &"containerd and friends ".repeat(8));
        let t = text(&list, 80);
        assert!(
            t.contains("├─ a-very-long-checkpoint-name-that-goes-on-and-on\n"),
            "{t}"
        );
        assert!(t.contains("\n│  mine "), "{t}");
        assert!(t.contains("\ncontainerd-done "), "{t}");
        assert!(t.contains("\n├─ other "), "{t}");
        assert!(t.contains("\nkubelet-done (worker-done) "), "{t}");
        assert!(!t.contains('…'), "{t}");
        insta::assert_snapshot!(t);
    }
}
