//! Mirrors: a static tree `<host>/<path>` served under a base URL.
//! [`mirror_url`] maps an upstream URL into it; [`export_mirror`] writes it
//! from the cache, so `python3 -m http.server` (or any web server) on the
//! exported folder serves every cached file, checksum files included.
//! [`parse_mirror`] checks a mirror setting before anything is fetched.

use std::path::{Component, Path, PathBuf};

use super::checksum::percent_decode;
use super::{Cache, Error};

/// What a usable mirror setting looks like, for messages.
const MIRROR_FORMS: &str = "use http://HOST[:PORT]/PATH or file:///PATH";

/// A mirror base URL, checked: `http://` or `https://` with a host, or `file:///PATH`, without query or fragment.
/// Returns it normalised (lowercase scheme and host, default port dropped, spaces escaped), or a message naming
/// the value, fit for a clap `value_parser` and for [`Error::BadMirror`].
pub fn parse_mirror(s: &str) -> Result<String, String> {
    let fail = |why: &str| Err(format!("`{s}` {why}: {MIRROR_FORMS}"));
    let url = match url::Url::parse(s.trim()) {
        Ok(url) if s.contains("://") => url,
        _ => return fail("is not a URL"),
    };
    match url.scheme() {
        "http" | "https" if url.host_str().is_some_and(|h| !h.is_empty()) => {}
        "http" | "https" => return fail("has no host"),
        "file"
            if url
                .host_str()
                .is_none_or(|h| h.is_empty() || h == "localhost") => {}
        "file" => return fail("names another machine (a file URL is a local folder)"),
        scheme => return fail(&format!("is not an http(s) or file URL (`{scheme}:`)")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return fail("has a query or fragment");
    }
    Ok(url.as_str().to_owned())
}

/// The URL of `upstream` inside the mirror at base URL `mirror`.
///
/// `mirror_url("http://m:8080/base", "https://dl.k8s.io/v1/bin/x")` is
/// `"http://m:8080/base/dl.k8s.io/v1/bin/x"`. The scheme, any user info,
/// the query and the fragment of `upstream` are dropped.
pub fn mirror_url(mirror: &str, upstream: &str) -> String {
    format!(
        "{}/{}",
        mirror.trim_end_matches('/'),
        host_and_path(upstream)
    )
}

/// `upstream` rewritten for the mirror when one is set and it is HTTP(S);
/// `file://` URLs are never rewritten.
pub fn rewrite(mirror: Option<&str>, upstream: &str) -> String {
    match mirror {
        Some(m) if is_http(upstream) => mirror_url(m, upstream),
        _ => upstream.to_owned(),
    }
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// `host[:port]/path` of a URL, without scheme, user info, query, fragment.
fn host_and_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    }
}

/// Where `url`'s file goes under an exported mirror: `<host>/<decoded path>`,
/// or `None` for URLs that cannot be laid out safely (no file name, `..`).
fn relative_path(url: &str) -> Option<PathBuf> {
    if !is_http(url) {
        return None;
    }
    let mut out = PathBuf::new();
    let mut segments = host_and_path(url).split('/').peekable();
    while let Some(seg) = segments.next() {
        let seg = percent_decode(seg);
        let last = segments.peek().is_none();
        if seg.is_empty() && !last {
            continue; // `a//b`
        }
        let mut comps = Path::new(&seg).components();
        match (comps.next(), comps.next()) {
            (Some(Component::Normal(c)), None) if c == seg.as_str() => out.push(c),
            _ => return None,
        }
    }
    (out.components().count() >= 2).then_some(out)
}

/// Writes every cached URL's file (verified first) as `dir/<host>/<path>`,
/// the layout [`mirror_url`] reads. Returns the files written.
pub fn export_mirror(cache: &Cache, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let io = |url: &str, path: &Path, e| Error::io("mirror export", url, path, e);
    let entries = cache
        .index_entries()
        .map_err(|e| io("", &cache.root().join("index-v1"), e))?;
    let mut written = Vec::new();
    for entry in entries {
        let Some(rel) = relative_path(&entry.url) else {
            continue;
        };
        if cache.verified_blob(&entry.sha256).is_none() {
            continue;
        }
        let target = dir.join(rel);
        let parent = target.parent().expect("has host and file");
        fs_err::create_dir_all(parent).map_err(|e| io(&entry.url, parent, e))?;
        let tmp = crate::fsutil::temp_beside(&target);
        fs_err::copy(cache.blob_path(&entry.sha256), &tmp)
            .and_then(|_| crate::fsutil::persist(&tmp, &target))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io(&entry.url, &target, e)
            })?;
        written.push(target);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            mirror_url("http://m:8080/base", "https://dl.k8s.io/v1/bin/x"),
            "http://m:8080/base/dl.k8s.io/v1/bin/x"
        );
        assert_eq!(
            mirror_url("http://m/", "http://u:p@h:81/a/b?q=1#f"),
            "http://m/h:81/a/b"
        );
        assert_eq!(rewrite(Some("http://m"), "file:///x/y"), "file:///x/y");
        assert_eq!(rewrite(None, "https://h/x"), "https://h/x");
        assert_eq!(rewrite(Some("http://m"), "https://h/x"), "http://m/h/x");
    }

    #[test]
    fn mirror_settings() {
        for ok in [
            "http://m:8080/base",
            "https://m/",
            "file:///srv/mirror",
            "HTTP://M/x",
            "file://localhost/srv",
        ] {
            let parsed = parse_mirror(ok).unwrap();
            assert!(
                parsed.starts_with("http://")
                    || parsed.starts_with("https://")
                    || parsed.starts_with("file:///")
            );
        }
        assert_eq!(parse_mirror("HTTP://M:80/x").unwrap(), "http://m/x");
        assert!(parse_mirror("localhost:8000/m")
            .unwrap_err()
            .contains("is not a URL"));
        assert_eq!(
            parse_mirror("notaurl").unwrap_err(),
            "`notaurl` is not a URL: use http://HOST[:PORT]/PATH or file:///PATH"
        );
        for bad in [
            "ftp://x",
            "http://",
            "file://other/srv",
            "http://m/?x=1",
            "http://m/#f",
            "",
        ] {
            let e = parse_mirror(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("`{bad}` ")) && e.ends_with(MIRROR_FORMS),
                "{e}"
            );
        }
    }

    #[test]
    fn relative_paths() {
        let p = |u| relative_path(u).map(|p| p.to_string_lossy().into_owned());
        assert_eq!(
            p("https://h:1/a//b%2Bc.img?x").as_deref(),
            Some("h:1/a/b+c.img")
        );
        assert_eq!(p("https://h/a/../../etc/passwd"), None);
        assert_eq!(p("https://h/a/%2E%2E/x"), None);
        assert_eq!(p("https://h/a%2Fb"), None);
        assert_eq!(p("https://h/dir/"), None);
        assert_eq!(p("https://h"), None);
        assert_eq!(p("file:///etc/x"), None);
    }
}
