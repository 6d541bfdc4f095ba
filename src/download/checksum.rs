//! Digests: the expected value of a download, the running hashers, and the
//! parser for checksum files (bare hash, `sha256sum`/`sha512sum` output,
//! `SHA256SUMS`, BSD-style `SHA256 (NAME) = HASH`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// A digest algorithm, judged from the length of a hex hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// 64 hex digits.
    Sha256,
    /// 128 hex digits.
    Sha512,
}

impl Algorithm {
    /// `sha256` or `sha512`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The algorithm whose hex digest has this many digits, if any.
    pub fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            64 => Some(Algorithm::Sha256),
            128 => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// The digest a download must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Which digest.
    pub algorithm: Algorithm,
    /// Lowercase hex.
    pub hex: String,
}

impl Expected {
    /// Parses a hex digest (any case); `None` unless it is 64 or 128 hex digits.
    pub fn parse(hex: &str) -> Option<Self> {
        let hex = hex.trim();
        let algorithm = Algorithm::from_hex_len(hex.len())?;
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| Expected {
                algorithm,
                hex: hex.to_ascii_lowercase(),
            })
    }
}

/// Whether `s` is a 64-digit lowercase hex sha256 (safe to use as a file name).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Running hashers: sha256 always (it names the blob), sha512 when asked for.
#[derive(Clone)]
pub struct Hashes {
    sha256: Sha256,
    sha512: Option<Sha512>,
}

/// Final digests, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Always present.
    pub sha256: String,
    /// Present when the hasher was asked for it.
    pub sha512: Option<String>,
}

impl Hashes {
    /// New hashers; `with_sha512` adds a sha512 alongside the sha256.
    pub fn new(with_sha512: bool) -> Self {
        Hashes {
            sha256: Sha256::new(),
            sha512: with_sha512.then(Sha512::new),
        }
    }

    /// Feeds bytes to every hasher.
    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
    }

    /// Forgets everything fed so far.
    pub fn reset(&mut self) {
        *self = Hashes::new(self.sha512.is_some());
    }

    /// The digests of everything fed.
    pub fn finish(self) -> Digests {
        Digests {
            sha256: hex::encode(self.sha256.finalize()),
            sha512: self.sha512.map(|h| hex::encode(h.finalize())),
        }
    }
}

impl Digests {
    /// The digest to compare with `expected`, in its algorithm.
    pub fn get(&self, algorithm: Algorithm) -> Option<&str> {
        match algorithm {
            Algorithm::Sha256 => Some(&self.sha256),
            Algorithm::Sha512 => self.sha512.as_deref(),
        }
    }
}

/// The file name a checksum file lists for `url`: its last path segment,
/// percent-decoded, without query or fragment.
pub fn file_name_of(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let path = &url[..end];
    percent_decode(path.rsplit('/').next().unwrap_or(path))
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = hex_byte(b[i + 1], b[i + 2]) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    Some(d(hi)? << 4 | d(lo)?)
}

/// Finds the expected digest of `file` in a checksum file's text.
///
/// Accepts a bare hash (the whole file is one 64/128-digit hex token), GNU
/// lines `HASH  NAME` / `HASH *NAME` (names may carry a `./` or directory
/// prefix), and BSD lines `SHA256 (NAME) = HASH`. Other lines (comments, PGP
/// armour) are ignored.
pub fn find_in_checksum_file(text: &str, file: &str) -> Option<Expected> {
    let mut tokens = text.split_whitespace();
    if let (Some(only), None) = (tokens.next(), tokens.next()) {
        return Expected::parse(only);
    }
    text.lines().find_map(|line| parse_line(line.trim(), file))
}

fn parse_line(line: &str, file: &str) -> Option<Expected> {
    if let Some((head, hash)) = line.rsplit_once(" = ") {
        // BSD: `SHA256 (NAME) = HASH`
        let name = head.split_once(" (")?.1.strip_suffix(')')?;
        return names_match(name, file)
            .then(|| Expected::parse(hash))
            .flatten();
    }
    let (hash, rest) = line.split_once(char::is_whitespace)?;
    let expected = Expected::parse(hash)?;
    let name = rest.trim_start();
    let name = name.strip_prefix('*').unwrap_or(name);
    names_match(name, file).then_some(expected)
}

fn names_match(listed: &str, file: &str) -> bool {
    let listed = listed.trim_end();
    listed == file
        || listed.strip_prefix("./") == Some(file)
        || listed
            .rsplit_once('/')
            .is_some_and(|(_, last)| last == file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H256: &str = "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c";

    fn h512() -> String {
        "0123456789abcdef".repeat(8)
    }

    #[test]
    fn bare_hash() {
        let e = find_in_checksum_file(&format!("{}\n", H256.to_uppercase()), "x").unwrap();
        assert_eq!(
            e,
            Expected {
                algorithm: Algorithm::Sha256,
                hex: H256.into()
            }
        );
        assert_eq!(find_in_checksum_file("nothex\n", "x"), None);
        assert_eq!(find_in_checksum_file("abcd\n", "x"), None);
    }

    #[test]
    fn gnu_text_and_binary_lines() {
        let other = "1".repeat(64);
        let text = format!("{other}  other.img\n{H256}  disk.img\n");
        assert_eq!(find_in_checksum_file(&text, "disk.img").unwrap().hex, H256);
        let text = format!("{other} *other.img\n{H256} *disk.img\n");
        assert_eq!(find_in_checksum_file(&text, "disk.img").unwrap().hex, H256);
        assert_eq!(find_in_checksum_file(&text, "isk.img"), None);
        assert_eq!(find_in_checksum_file(&text, "missing.img"), None);
        // A one-line `HASH  NAME` file for another name is not a bare hash.
        assert_eq!(
            find_in_checksum_file(&format!("{H256}  a.img"), "b.img"),
            None
        );
        let text = format!("{H256}  ./sub/disk.img\n");
        assert_eq!(find_in_checksum_file(&text, "disk.img").unwrap().hex, H256);
    }

    #[test]
    fn sha512_list() {
        let h = h512();
        let text = format!(
            "# comment\n{}  a.qcow2\n{h}  debian-12.qcow2\n",
            "2".repeat(128)
        );
        let e = find_in_checksum_file(&text, "debian-12.qcow2").unwrap();
        assert_eq!(
            e,
            Expected {
                algorithm: Algorithm::Sha512,
                hex: h
            }
        );
    }

    #[test]
    fn bsd_lines_inside_pgp_armour() {
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# Fedora.qcow2: 1 bytes\nSHA256 (Fedora.qcow2) = {H256}\n-----BEGIN PGP SIGNATURE-----\n"
        );
        assert_eq!(
            find_in_checksum_file(&text, "Fedora.qcow2").unwrap().hex,
            H256
        );
        assert_eq!(find_in_checksum_file(&text, "Other.qcow2"), None);
    }

    #[test]
    fn hashers_and_names() {
        let mut h = Hashes::new(true);
        h.update(b"junk");
        h.reset();
        h.update(b"foo\n");
        let d = h.finish();
        assert_eq!(d.sha256, H256);
        assert_eq!(d.get(Algorithm::Sha512).unwrap().len(), 128);
        assert_eq!(Hashes::new(false).finish().sha512, None);
        assert_eq!(file_name_of("https://h/a/b%2Bc.img?x=1#f"), "b+c.img");
        assert_eq!(percent_decode("a%zzb%4"), "a%zzb%4");
        assert!(is_sha256_hex(H256) && !is_sha256_hex(&H256.to_uppercase()));
    }
}
