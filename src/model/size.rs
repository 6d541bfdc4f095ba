//! Sizes as people write them in lab files: a whole number and a binary unit, `512MiB`, `2GiB`, `20GiB`.
//!
//! Every size needs a unit. Units are binary (`KiB` = 2^10 bytes, `MiB`, `GiB`, `TiB`) or `B` for bytes. Decimal
//! units (`KB`, `MB`, `GB`, `TB`) and bare letters (`K`, `M`, `G`, `T`) are refused with a hint, so that `2GB`
//! never silently becomes 1.9 GiB.

const BINARY: [(&str, u64); 5] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Why a size was refused, and how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SizeError {
    pub message: String,
    pub hint: Option<String>,
}

impl SizeError {
    fn new(message: String, hint: impl Into<Option<String>>) -> Self {
        SizeError {
            message,
            hint: hint.into(),
        }
    }
}

/// Parses a size: a whole number and a unit, `B`, `KiB`, `MiB`, `GiB` or `TiB` (space between them allowed).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(SizeError::new(
            format!("`{text}` is not a size"),
            "write a number and a unit, like `2GiB` or `512MiB`".to_string(),
        ));
    }
    if unit.is_empty() {
        let hint = num.parse().ok().map(|n| no_unit_hint(n, false));
        return Err(SizeError::new(format!("`{text}` has no unit"), hint));
    }
    let Some(mult) = BINARY.iter().find(|(u, _)| *u == unit).map(|(_, m)| *m) else {
        return Err(unit_error(text, num, unit));
    };
    if let Some((whole, frac)) = num.split_once('.') {
        let hint = fraction_in_smaller_unit(whole, frac, unit).map_or_else(
            || "sizes are whole numbers: use a smaller unit".to_string(),
            |s| format!("write `{s}`: sizes are whole numbers"),
        );
        return Err(SizeError::new(
            format!("`{text}` is not a whole number of {unit}"),
            hint,
        ));
    }
    let n: u64 = num.parse().map_err(|_| too_large(text))?;
    match n.checked_mul(mult) {
        None => Err(too_large(text)),
        Some(0) => Err(SizeError::new(format!("`{text}` is zero"), None)),
        Some(v) => Ok(v),
    }
}

/// The hint for a number written without a unit: `write `2048MiB` or `2GiB`: sizes need a unit`. Small numbers
/// read as GiB, middling ones as MiB, large ones as bytes. `quoted` for a bare TOML number, which needs quotes too.
pub fn no_unit_hint(n: u64, quoted: bool) -> String {
    let q = |s: String| {
        if quoted {
            format!("`\"{s}\"`")
        } else {
            format!("`{s}`")
        }
    };
    let suggestion = if n >= 1 << 20 {
        q(exact(n))
    } else if n >= 64 && n.is_multiple_of(1024) {
        format!(
            "{} or {}",
            q(format!("{n}MiB")),
            q(format!("{}GiB", n / 1024))
        )
    } else if n >= 64 {
        q(format!("{n}MiB"))
    } else {
        q(format!("{n}GiB"))
    };
    format!("write {suggestion}: sizes need a unit")
}

/// `2147483648` → `2GiB`: the largest binary unit that holds `bytes` exactly.
fn exact(bytes: u64) -> String {
    let (unit, mult) = BINARY
        .iter()
        .rev()
        .find(|(_, m)| bytes.is_multiple_of(*m))
        .expect("every number is a whole number of bytes");
    format!("{}{unit}", bytes / mult)
}

fn too_large(text: &str) -> SizeError {
    SizeError::new(format!("`{text}` is too large"), None)
}

/// Unit prefixes: the letter, its binary unit, and the power of ten its decimal unit means.
const PREFIXES: [(char, &str, u32); 4] = [
    ('K', "KiB", 3),
    ('M', "MiB", 6),
    ('G', "GiB", 9),
    ('T', "TiB", 12),
];

/// A unit that is not binary: decimal (`GB`), a bare letter (`G`), another spelling (`gib`), or nonsense.
fn unit_error(text: &str, num: &str, unit: &str) -> SizeError {
    let mut chars = unit.chars();
    let first = chars.next().unwrap_or(' ');
    let rest = chars.as_str();
    let prefix = PREFIXES
        .iter()
        .find(|(letter, _, _)| *letter == first.to_ascii_uppercase());
    let Some(&(letter, binary, pow10)) = prefix else {
        return SizeError::new(
            format!("unknown size unit `{unit}` in `{text}`"),
            "sizes use B, KiB, MiB, GiB or TiB, like `2GiB`".to_string(),
        );
    };
    let pow2 = 10 * pow10 / 3;
    if rest == "B" && (first.is_ascii_uppercase() || first == 'k') {
        SizeError::new(
            format!(
                "`{text}` uses a decimal unit ({unit} = 10^{pow10} bytes), which lab does not take"
            ),
            format!("write `{num}{binary}` (1 {binary} = 2^{pow2} bytes): sizes use binary units"),
        )
    } else if rest.is_empty() {
        SizeError::new(
            format!("`{text}` has an unclear unit: {unit} could mean {letter}B or {binary}"),
            format!("write `{num}{binary}`: sizes use binary units"),
        )
    } else if unit.eq_ignore_ascii_case(binary) {
        SizeError::new(
            format!("unknown size unit `{unit}` in `{text}`"),
            format!("write `{num}{binary}`"),
        )
    } else {
        SizeError::new(
            format!("unknown size unit `{unit}` in `{text}`"),
            "sizes use B, KiB, MiB, GiB or TiB, like `2GiB`".to_string(),
        )
    }
}

/// `1.5`, `GiB` → `1536MiB`, when the fraction is a whole number of the next smaller unit.
fn fraction_in_smaller_unit(whole: &str, frac: &str, unit: &str) -> Option<String> {
    let i = BINARY.iter().position(|(u, _)| *u == unit)?;
    let (smaller, _) = BINARY[i.checked_sub(1)?];
    let whole: u64 = whole.parse().ok()?;
    let frac_digits: u32 = frac.len().try_into().ok()?;
    let scale = 10u64.checked_pow(frac_digits)?;
    let frac: u64 = frac.parse().ok()?;
    let parts = frac.checked_mul(1024)?;
    parts
        .is_multiple_of(scale)
        .then(|| format!("{}{smaller}", whole * 1024 + parts / scale))
}

/// `2147483648` → `2.0 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> (String, String) {
        let e = parse_size(text).unwrap_err();
        (e.message, e.hint.unwrap_or_default())
    }

    #[test]
    fn parses_binary_units() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("20 GiB").unwrap(), 20 << 30);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
        assert_eq!(parse_size("1000B").unwrap(), 1000);
    }

    #[test]
    fn refuses_sizes_without_a_unit() {
        assert_eq!(
            refused("2048"),
            (
                "`2048` has no unit".into(),
                "write `2048MiB` or `2GiB`: sizes need a unit".into()
            )
        );
        assert_eq!(refused("2").1, "write `2GiB`: sizes need a unit");
        assert_eq!(refused("100").1, "write `100MiB`: sizes need a unit");
        assert_eq!(refused("2147483648").1, "write `2GiB`: sizes need a unit");
    }

    #[test]
    fn refuses_decimal_units_and_bare_letters() {
        assert_eq!(
            refused("2GB"),
            (
                "`2GB` uses a decimal unit (GB = 10^9 bytes), which lab does not take".into(),
                "write `2GiB` (1 GiB = 2^30 bytes): sizes use binary units".into()
            )
        );
        assert_eq!(
            refused("512MB").1,
            "write `512MiB` (1 MiB = 2^20 bytes): sizes use binary units"
        );
        assert_eq!(
            refused("4kB").0,
            "`4kB` uses a decimal unit (kB = 10^3 bytes), which lab does not take"
        );
        assert_eq!(
            refused("20G"),
            (
                "`20G` has an unclear unit: G could mean GB or GiB".into(),
                "write `20GiB`: sizes use binary units".into()
            )
        );
        assert_eq!(refused("2gib").1, "write `2GiB`");
    }

    #[test]
    fn refuses_fractions_with_the_whole_number() {
        assert_eq!(
            refused("1.5GiB"),
            (
                "`1.5GiB` is not a whole number of GiB".into(),
                "write `1536MiB`: sizes are whole numbers".into()
            )
        );
        assert_eq!(
            refused("1.3GiB").1,
            "sizes are whole numbers: use a smaller unit"
        );
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2 parsecs").is_err());
        assert!(parse_size("0GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert!(parse_size("99999999999999999999999GiB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size(".5GiB").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(2 << 30), "2.0 GiB");
    }
}
