//! What the terminal offers: colour and width. Output is styled with anstyle wherever colour carries meaning, and
//! written through anstream, which keeps the escape codes only where colour is wanted, as cargo does: never with
//! `NO_COLOR` or `CLICOLOR=0`, always with `CLICOLOR_FORCE`, otherwise on a terminal only (plain in a pipe).

use anstream::ColorChoice;
use anstyle::{AnsiColor, Style};

pub const ERROR: Style = AnsiColor::Red.on_default().bold();
pub const WARNING: Style = AnsiColor::Yellow.on_default().bold();
pub const HINT: Style = AnsiColor::Cyan.on_default().bold();
/// Table headers.
pub const HEADER: Style = Style::new().bold();
/// Running, pass, ok, built.
pub const GOOD: Style = AnsiColor::Green.on_default();
/// Paused, stopped, warn, stale.
pub const SO_SO: Style = AnsiColor::Yellow.on_default();
/// Absent, FAIL.
pub const BAD: Style = AnsiColor::Red.on_default().bold();
/// What is not there yet (a checkpoint not built).
pub const DIM: Style = Style::new().dimmed();

/// `text` in `style`; the stream it is written to strips the codes where colour is not wanted.
pub fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// `error: MESSAGE` and the like: the tag coloured, the message plain.
pub fn tagged(style: Style, tag: &str, text: &str) -> String {
    format!("{}: {text}", paint(style, tag))
}

/// Whether what lab writes to stderr keeps its colour (for writers that do not go through anstream: tracing).
pub fn stderr_has_colour() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != ColorChoice::Never
}

/// The width to fit output to: `$COLUMNS`, else the terminal's, else 80 (a pipe, a file).
pub fn width() -> usize {
    let from_env = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0);
    from_env
        .or_else(|| terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| w.0 as usize))
        .unwrap_or(80)
}

/// The text without escape codes (what a pipe gets), for widths and tests.
pub fn plain(text: &str) -> String {
    anstream::adapter::strip_str(text).to_string()
}

/// How many columns `text` takes on screen (escape codes take none).
pub fn columns(text: &str) -> usize {
    plain(text).chars().count()
}

/// Words of `text` in lines of at most `width` characters (a longer word gets a line of its own).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line");
        if last.is_empty() {
            last.push_str(word);
        } else if last.chars().count() + 1 + word.chars().count() <= width {
            last.push(' ');
            last.push_str(word);
        } else {
            lines.push(word.to_string());
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_wraps_in_codes_that_strip_away() {
        let p = paint(GOOD, "running");
        assert!(p.contains("\u{1b}["), "{p:?}");
        assert_eq!(plain(&p), "running");
        assert_eq!(
            columns(&tagged(ERROR, "error", "boom")),
            "error: boom".len()
        );
    }

    #[test]
    fn wrap_keeps_long_words_whole() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(
            wrap("averyverylongword x", 5),
            vec!["averyverylongword", "x"]
        );
    }
}
