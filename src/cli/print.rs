//! Results on stdout (tables and JSON), errors on stderr, both through anstream: colour stays only where it is
//! wanted (`crate::term`). A reader that goes away (`lab validate | head -1`) ends the output quietly: writes
//! that fail are dropped, and the command finishes with its usual exit code.

use crate::term::{paint, tagged, BAD, ERROR, GOOD, HINT, SO_SO};
use std::io::Write;

/// Writes one line to stdout; a closed pipe is not an error (the rest of the output is dropped).
pub fn out(line: &str) {
    let mut o = anstream::stdout().lock();
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

/// `hint: TEXT` on stderr, the tag in colour.
pub fn hint(text: &str) {
    err(&tagged(HINT, "hint", text));
}

/// `error: TEXT` on stderr, the tag in colour.
pub fn error(text: &str) {
    err(&tagged(ERROR, "error", text));
}

/// A machine's power state (`running`, `paused`, `absent`, …) in `width` columns, coloured by what it means.
pub fn power(state: &str, width: usize) -> String {
    let style = match state {
        "running" => GOOD,
        "absent" | "not-up" | "broken" => BAD,
        _ => SO_SO,
    };
    paint(style, &format!("{state:<width$}"))
}

/// A check's result: `pass` or `FAIL`, coloured.
pub fn verdict(passed: bool) -> String {
    if passed {
        paint(GOOD, "pass")
    } else {
        paint(BAD, "FAIL")
    }
}
