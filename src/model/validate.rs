//! Turning a lab file into a [`Lab`]: parse, resolve defaults, check every rule once. Every error names the file,
//! line and column of the offending value, and validation goes on past an error, so one run reports them all.
//! Only the TOML parser stops at its first error (a syntax error, an unknown key, a value of the wrong type).

use super::file::*;
use super::size::no_unit_hint;
use super::*;
use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};
use serde_spanned::Spanned;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;

/// A lab file that cannot be used, with every problem found in it.
///
/// Displayed as one block per problem: `FILE:LINE:COL: message`, the source line with a caret under the
/// offending text, and a `hint:` where there is one; then `N errors in FILE` when there are several. No colors.
#[derive(Debug)]
pub struct LabFileError {
    /// A path, or `<embedded course lab>`.
    pub file: String,
    /// In file order; never empty.
    pub problems: Vec<Problem>,
    /// The file's text, for the source lines (empty when the file could not be read).
    text: String,
}

/// One mistake in a lab file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
    /// The offending text, as a byte range of the file.
    span: Option<Range<usize>>,
}

impl Problem {
    fn new(text: &str, span: Option<Range<usize>>, message: String, hint: Option<String>) -> Self {
        let (line, col) = span.as_ref().map_or((1, 1), |s| line_col(text, s.start));
        Problem {
            line,
            col,
            message,
            hint,
            span,
        }
    }
}

impl LabFileError {
    /// Problems in file order, each reported once.
    fn new(source: &Source, text: &str, problems: Vec<Problem>) -> Self {
        let mut seen = HashSet::new();
        let mut problems: Vec<Problem> = problems
            .into_iter()
            .filter(|p| seen.insert(p.clone()))
            .collect();
        problems.sort_by_key(|p| (p.line, p.col));
        LabFileError {
            file: source.to_string(),
            problems,
            text: text.to_string(),
        }
    }

    /// A file that failed as a whole: it cannot be read, or the TOML parser stopped.
    fn one(source: &Source, text: &str, span: Option<Range<usize>>, message: String) -> Self {
        LabFileError::new(source, text, vec![Problem::new(text, span, message, None)])
    }
}

impl std::error::Error for LabFileError {}

impl std::fmt::Display for LabFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `{:#}` asks for colour (the stream it goes to strips it where colour is not wanted).
        let renderer = if f.alternate() {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            let title = format!("{}:{}:{}: {}", self.file, p.line, p.col, p.message);
            let hint = p
                .hint
                .as_deref()
                .map(|h| Level::HELP.with_name(Some("hint")).message(h));
            match &p.span {
                Some(span) if span.end <= self.text.len() => {
                    let snippet = Snippet::source(self.text.as_str())
                        .annotation(AnnotationKind::Primary.span(span.clone()));
                    let group = Level::ERROR
                        .no_name()
                        .primary_title(title)
                        .element(snippet)
                        .elements(hint);
                    f.write_str(&renderer.render(&[group]))?;
                }
                _ => {
                    f.write_str(&title)?;
                    if let Some(h) = &p.hint {
                        write!(f, "\n  = hint: {h}")?;
                    }
                }
            }
        }
        if self.problems.len() > 1 {
            write!(f, "\n\n{} errors in {}", self.problems.len(), self.file)?;
        }
        Ok(())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    (line, col)
}

/// The TOML parser's error. Its "duplicate key" names no key: the key is read from the file at the span.
fn parse_error(source: &Source, text: &str, e: &toml::de::Error) -> LabFileError {
    let message = e.message().trim();
    let message = match e.span() {
        Some(span) if message == "duplicate key" => duplicate(text, span).unwrap_or(message.into()),
        _ => message.to_string(),
    };
    LabFileError::one(source, text, e.span(), message)
}

/// `key `memory` is defined twice`, or `table `[network]` is defined twice` for a repeated table header.
fn duplicate(text: &str, span: Range<usize>) -> Option<String> {
    let key = text.get(span.clone())?.trim();
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?.trim();
    if line.starts_with('[') {
        let header = line.split_once('#').map_or(line, |(h, _)| h).trim();
        Some(format!("table `{header}` is defined twice"))
    } else {
        Some(format!("key `{key}` is defined twice"))
    }
}

const DEFAULT_IMAGE: &str = "ubuntu-24.04";
const DEFAULT_CPUS: u32 = 2;
const DEFAULT_MEMORY: u64 = 2 << 30;
const DEFAULT_DISK: u64 = 20 << 30;
const DEFAULT_USER: &str = "laborant";
const DEFAULT_DEST: &str = "/opt/lab/downloads";
const PLAIN_SUMS_HINT: &str =
    "a checksum file fetched without TLS can be changed along with the file: use an \
                               https:// or file:// checksum_url, or pin sha256 = \"…\"";

/// Loads the lab: `path` if given, else `lab.toml` in the current folder, else the embedded course lab.
pub fn load(path: Option<&Path>) -> Result<Lab, LabFileError> {
    let (source, text) = match path {
        Some(p) => (Source::File(p.to_path_buf()), read(p)?),
        None if Path::new("lab.toml").exists() => {
            let p = Path::new("lab.toml");
            (Source::File(p.to_path_buf()), read(p)?)
        }
        None => {
            let text = EMBEDDED_LAB
                .get_file("lab.toml")
                .and_then(|f| f.contents_utf8())
                .expect("the embedded course lab is part of the build");
            (Source::Embedded, text.to_string())
        }
    };
    load_str(source, &text)
}

fn read(p: &Path) -> Result<String, LabFileError> {
    fs_err::read_to_string(p).map_err(|e| {
        LabFileError::one(
            &Source::File(p.to_path_buf()),
            "",
            None,
            format!("cannot read the lab file: {}", io_cause(&e)),
        )
    })
}

fn io_cause(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Parses and validates lab file text that came from `source`.
pub fn load_str(source: Source, text: &str) -> Result<Lab, LabFileError> {
    let raw: LabFile = toml::from_str(text).map_err(|e| parse_error(&source, text, &e))?;
    Validator::new(&source, text).lab(&raw)
}

/// The embedded image catalog, for `arch`. Its files are part of the build, so a problem there is lab's own.
fn catalog(arch: Arch) -> Result<BTreeMap<String, Image>, LabFileError> {
    let mut images = BTreeMap::new();
    for f in IMAGE_CATALOG.files() {
        let text = f.contents_utf8().expect("catalog files are UTF-8");
        let src = Source::File(Path::new("images").join(f.path()));
        let raw: ImageFile = toml::from_str(text).map_err(|e| parse_error(&src, text, &e))?;
        let v = Validator::new(&src, text);
        let img = v.image(&raw, arch);
        let img = v.finish(img)?;
        images.insert(img.name.clone(), img);
    }
    Ok(images)
}

/// A problem was found and recorded; the value it concerns is unusable.
struct Reported;

/// A checked value, or [`Reported`] when its problems are recorded.
type Checked<T> = Result<T, Reported>;

/// Every item checked (each records its own problems), then all of them, or [`Reported`] if any failed.
fn all<T>(items: impl IntoIterator<Item = Checked<T>>) -> Checked<Vec<T>> {
    let items: Vec<Checked<T>> = items.into_iter().collect();
    items.into_iter().collect()
}

/// Checks a lab file, recording every problem and going on with the next value.
struct Validator<'a> {
    source: &'a Source,
    text: &'a str,
    problems: RefCell<Vec<Problem>>,
    /// The lab's own files read besides the lab file (scripts and what they source), relative to its folder.
    files: RefCell<std::collections::BTreeSet<String>>,
}

impl<'a> Validator<'a> {
    fn new(source: &'a Source, text: &'a str) -> Self {
        Validator {
            source,
            text,
            problems: RefCell::default(),
            files: RefCell::default(),
        }
    }

    fn report<T>(&self, span: Range<usize>, message: impl Into<String>) -> Checked<T> {
        self.report_hint(span, message, None)
    }

    fn report_hint<T>(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) -> Checked<T> {
        self.problems.borrow_mut().push(Problem::new(
            self.text,
            Some(span),
            message.into(),
            hint.into(),
        ));
        Err(Reported)
    }

    /// The value, or every problem recorded.
    fn finish<T>(&self, value: Checked<T>) -> Result<T, LabFileError> {
        let problems = self.problems.take();
        match value {
            Ok(v) if problems.is_empty() => Ok(v),
            _ => Err(LabFileError::new(self.source, self.text, problems)),
        }
    }

    fn lab(&self, raw: &LabFile) -> Result<Lab, LabFileError> {
        let arch = self.arch(raw.arch.as_ref());
        // Values that depend on the arch are checked with the host's when the file's is unusable.
        let some_arch = *arch.as_ref().unwrap_or(&Arch::host());
        let catalog = catalog(some_arch)?;
        let name = self.lab_name(&raw.name);
        let network = self.network(&raw.network);
        let mirror = raw.mirror.as_ref().map(|m| self.mirror(m)).transpose();
        let images = self.images(catalog, &raw.images, some_arch);
        // References to machines are checked against the names as written, valid or not, so that one bad
        // machine is reported once, not again at every list that names it.
        let mut machine_names: Vec<String> = Vec::new();
        for m in &raw.machines {
            if !machine_names.contains(m.name.get_ref()) {
                machine_names.push(m.name.get_ref().clone());
            }
        }
        let machines = all(self.machines(raw, network.as_ref().ok(), &images));
        let downloads = all(self.downloads(&raw.downloads, some_arch, &machine_names, &images));
        let checkpoints = all(self.checkpoints(&raw.checkpoints, &machine_names));
        let images =
            all(images.into_iter().map(|(k, v)| v.map(|v| (k, v)))).map(BTreeMap::from_iter);
        let lab = match (
            name,
            network,
            arch,
            mirror,
            machines,
            images,
            downloads,
            checkpoints,
        ) {
            (
                Ok(name),
                Ok(network),
                Ok(arch),
                Ok(mirror),
                Ok(machines),
                Ok(images),
                Ok(downloads),
                Ok(checkpoints),
            ) => Ok(Lab {
                name,
                source: self.source.clone(),
                file_digest: hex::encode(Sha256::digest(self.text.as_bytes())),
                files: self.files.borrow().iter().cloned().collect(),
                network,
                arch,
                mirror,
                machines,
                images,
                downloads,
                checkpoints,
            }),
            _ => Err(Reported),
        };
        self.finish(lab)
    }

    fn arch(&self, a: Option<&Spanned<String>>) -> Checked<Arch> {
        match a.map(|a| (a.get_ref().as_str(), a.span())) {
            None => Ok(Arch::host()),
            Some(("amd64", _)) => Ok(Arch::Amd64),
            Some(("arm64", _)) => Ok(Arch::Arm64),
            Some((other, span)) => {
                self.report(span, format!("unknown arch `{other}` (amd64 or arm64)"))
            }
        }
    }

    fn lab_name(&self, n: &Spanned<String>) -> Checked<String> {
        let s = n.get_ref();
        let ok = s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return self.report(
                n.span(),
                format!("lab name `{s}` must match [a-z][a-z0-9-]{{0,31}}"),
            );
        }
        Ok(s.clone())
    }

    /// The mirror, checked and normalised as `--mirror` is (by [`crate::download::parse_mirror`]).
    fn mirror(&self, m: &Spanned<String>) -> Checked<String> {
        crate::download::parse_mirror(m.get_ref()).or_else(|message| {
            // Its message ends with the forms a mirror takes: that part is the hint.
            match message.rsplit_once(": use ") {
                Some((why, forms)) => {
                    self.report_hint(m.span(), format!("mirror {why}"), format!("use {forms}"))
                }
                None => self.report(m.span(), format!("mirror {message}")),
            }
        })
    }

    fn network(&self, n: &NetworkFile) -> Checked<Network> {
        let subnet = self.subnet(&n.subnet);
        let gateway = match (&subnet, &n.gateway) {
            (Ok(subnet), None) => Ok(hosts(*subnet).0),
            (Ok(subnet), Some(g)) => self
                .ip(g)
                .and_then(|ip| match address_problem(ip, *subnet) {
                    None => Ok(ip),
                    Some(problem) => {
                        let (first, last) = hosts(*subnet);
                        self.report_hint(
                            g.span(),
                            format!("gateway {problem}"),
                            format!("the gateway is a host address of {subnet}, {first} to {last}"),
                        )
                    }
                }),
            // Still say whether it is an address at all.
            (Err(_), Some(g)) => self.ip(g),
            (Err(_), None) => Err(Reported),
        };
        let mode = match n.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("nat", _)) => Ok(NetworkMode::Nat),
            Some(("isolated", _)) => Ok(NetworkMode::Isolated),
            Some((other, span)) => self.report(
                span,
                format!("unknown network mode `{other}` (nat or isolated)"),
            ),
        };
        Ok(Network {
            subnet: subnet?,
            gateway: gateway?,
            mode: mode?,
        })
    }

    fn subnet(&self, s: &Spanned<String>) -> Checked<Ipv4Net> {
        let Ok(subnet) = s.get_ref().parse::<Ipv4Net>() else {
            return self.report(
                s.span(),
                format!("`{}` is not an IPv4 subnet like 172.16.0.0/24", s.get_ref()),
            );
        };
        if subnet.network() != subnet.addr() {
            return self.report(
                s.span(),
                format!(
                    "`{}` has host bits set; did you mean {}?",
                    s.get_ref(),
                    subnet.trunc()
                ),
            );
        }
        if subnet.prefix_len() > 29 || subnet.prefix_len() < 8 {
            return self.report(s.span(), "the subnet's prefix must be between /8 and /29");
        }
        Ok(subnet)
    }

    fn ip(&self, s: &Spanned<String>) -> Checked<Ipv4Addr> {
        s.get_ref().parse().or_else(|_| {
            self.report(
                s.span(),
                format!("`{}` is not an IPv4 address", s.get_ref()),
            )
        })
    }

    fn size(&self, s: &Spanned<SizeValue>) -> Checked<u64> {
        match s.get_ref() {
            SizeValue::Text(t) => {
                parse_size(t).or_else(|e| self.report_hint(s.span(), e.message, e.hint))
            }
            SizeValue::Number(n) => {
                let hint = u64::try_from(*n)
                    .ok()
                    .filter(|&n| n > 0)
                    .map(|n| no_unit_hint(n, true));
                self.report_hint(s.span(), format!("`{n}` has no unit"), hint)
            }
        }
    }

    fn url(&self, s: &Spanned<String>) -> Checked<String> {
        let u = s.get_ref();
        if ["http://", "https://", "file://"]
            .iter()
            .any(|p| u.starts_with(p))
        {
            Ok(u.clone())
        } else {
            self.report(
                s.span(),
                format!("`{u}` is not an http(s):// or file:// URL"),
            )
        }
    }

    fn sha256(&self, s: &Spanned<String>) -> Checked<String> {
        let h = s.get_ref().trim().to_ascii_lowercase();
        if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(h)
        } else {
            self.report(s.span(), "sha256 must be 64 hexadecimal characters")
        }
    }

    /// The catalog, then the file's `[[image]]` tables (which may replace catalog images).
    fn images(
        &self,
        catalog: BTreeMap<String, Image>,
        raw: &[ImageFile],
        arch: Arch,
    ) -> BTreeMap<String, Checked<Image>> {
        let mut images: BTreeMap<String, Checked<Image>> =
            catalog.into_iter().map(|(k, v)| (k, Ok(v))).collect();
        let mut seen = HashSet::new();
        for r in raw {
            let name = r.name.get_ref();
            let img = self.image(r, arch);
            if !seen.insert(name.clone()) {
                let _: Checked<()> =
                    self.report(r.name.span(), format!("image `{name}` is defined twice"));
                continue;
            }
            images.insert(name.clone(), img);
        }
        images
    }

    fn image(&self, r: &ImageFile, arch: Arch) -> Checked<Image> {
        let name = self.item_name("image", &r.name);
        // Images have no `version`: a `{version}` would reach the server as written.
        let unfilled = all([Some(&r.url), r.checksum_url.as_ref()]
            .into_iter()
            .flatten()
            .map(|u| {
                self.unfilled_version(
                    u,
                    "images have no `version` key: write the version into the URL",
                )
            }));
        let url = self.url(&r.url);
        let checksum = self.checksum(
            &r.url,
            r.sha256.as_ref(),
            r.checksum_url.as_ref(),
            false,
            &|u| u.replace("{arch}", arch.as_str()),
        );
        let format = match r.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("qcow2", _)) => Ok(ImageFormat::Qcow2),
            Some(("raw", _)) => Ok(ImageFormat::Raw),
            Some((other, span)) => self.report(
                span,
                format!("unknown image format `{other}` (qcow2 or raw)"),
            ),
        };
        unfilled?;
        Ok(Image {
            name: name?,
            url: url?.replace("{arch}", arch.as_str()),
            checksum: checksum?,
            format: format?,
        })
    }

    /// The name of an `[[image]]` or a `[[download]]`: the pattern of checkpoint names.
    fn item_name(&self, kind: &str, n: &Spanned<String>) -> Checked<String> {
        let name = n.get_ref();
        if is_checkpoint_name(name) {
            Ok(name.clone())
        } else {
            self.report_hint(
                n.span(),
                format!("{kind} name `{name}` must match [a-z0-9][a-z0-9._-]{{0,62}}"),
                "lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit"
                    .to_string(),
            )
        }
    }

    /// A `{version}` in a URL that has no version to fill it.
    fn unfilled_version(&self, url: &Spanned<String>, hint: &str) -> Checked<()> {
        if url.get_ref().contains("{version}") {
            self.report_hint(
                url.span(),
                "`{version}` has no `version` to fill it",
                hint.to_string(),
            )
        } else {
            Ok(())
        }
    }

    /// The rules shared by images and downloads: one checksum source, and plain http only with a pinned sum, for
    /// the file and for its checksum file alike.
    fn checksum(
        &self,
        url: &Spanned<String>,
        sha256: Option<&Spanned<String>>,
        checksum_url: Option<&Spanned<String>>,
        insecure: bool,
        expand: &dyn Fn(&str) -> String,
    ) -> Checked<Checksum> {
        let mut plain_sums: Checked<()> = Ok(());
        let c =
            match (sha256, checksum_url) {
                (Some(_), Some(c)) => {
                    return self.report(c.span(), "give either sha256 or checksum_url, not both")
                }
                (Some(s), None) => Checksum::Sha256(self.sha256(s)?),
                (None, Some(c)) => {
                    let u = self.url(c)?;
                    if u.starts_with("http://") {
                        plain_sums = self.report_hint(
                            c.span(),
                            "a checksum_url over plain http:// is no check",
                            PLAIN_SUMS_HINT.to_string(),
                        );
                    }
                    Checksum::Url(expand(&u))
                }
                (None, None) if insecure => Checksum::None,
                (None, None) => return self.report_hint(
                    url.span(),
                    "no checksum",
                    "add sha256 = \"…\" or checksum_url = \"…\" (or insecure_no_checksum = true)"
                        .to_string(),
                ),
            };
        if url.get_ref().starts_with("http://") && !matches!(c, Checksum::Sha256(_)) {
            return self.report(url.span(), "a plain http:// URL needs a pinned sha256");
        }
        plain_sums?;
        Ok(c)
    }

    fn machines(
        &self,
        raw: &LabFile,
        network: Option<&Network>,
        images: &BTreeMap<String, Checked<Image>>,
    ) -> Vec<Checked<Machine>> {
        if raw.machines.is_empty() {
            let _: Checked<()> = self.report(raw.name.span(), "the lab has no [[machine]]");
        }
        // Defaults are checked even where every machine sets its own value; a problem found again through a
        // machine is reported once.
        let d = &raw.defaults;
        let _ = (
            d.image
                .as_ref()
                .map(|i| self.known_image(i.get_ref(), i.span(), images)),
            self.cpus(d.cpus.as_ref()),
            self.memory(d.memory.as_ref()),
            self.disk(d.disk.as_ref()),
            self.user(d.user.as_ref()),
        );
        let mut names = HashSet::new();
        let mut ips = HashSet::new();
        raw.machines
            .iter()
            .map(|m| self.machine(m, d, network, images, &mut names, &mut ips))
            .collect()
    }

    fn machine(
        &self,
        m: &MachineFile,
        d: &DefaultsFile,
        network: Option<&Network>,
        images: &BTreeMap<String, Checked<Image>>,
        names: &mut HashSet<String>,
        ips: &mut HashSet<Ipv4Addr>,
    ) -> Checked<Machine> {
        let name = self.machine_name(&m.name, names);
        let ip = self.machine_ip(&m.ip, network, ips);
        let image = match m.image.as_ref().or(d.image.as_ref()) {
            Some(i) => self.known_image(i.get_ref(), i.span(), images),
            None => self.known_image(DEFAULT_IMAGE, m.name.span(), images),
        };
        let cpus = self.cpus(m.cpus.as_ref().or(d.cpus.as_ref()));
        let memory = self.memory(m.memory.as_ref().or(d.memory.as_ref()));
        let disk = self.disk(m.disk.as_ref().or(d.disk.as_ref()));
        let user = self.user(m.user.as_ref().or(d.user.as_ref()));
        Ok(Machine {
            name: name?,
            ip: ip?,
            cpus: cpus?,
            memory: memory?,
            disk: disk?,
            image: image?,
            user: user?,
        })
    }

    fn machine_name(&self, n: &Spanned<String>, names: &mut HashSet<String>) -> Checked<String> {
        let name = n.get_ref();
        if !is_dns_label(name) {
            return self.report(
                n.span(),
                format!("machine name `{name}` is not a DNS label ([a-z0-9-], 1-63 characters)"),
            );
        }
        if !names.insert(name.clone()) {
            return self.report(n.span(), format!("machine `{name}` is defined twice"));
        }
        Ok(name.clone())
    }

    /// A host address of the subnet, not the gateway's, and not another machine's.
    fn machine_ip(
        &self,
        s: &Spanned<String>,
        network: Option<&Network>,
        ips: &mut HashSet<Ipv4Addr>,
    ) -> Checked<Ipv4Addr> {
        let ip = self.ip(s)?;
        if let Some(n) = network {
            let (first, last) = hosts(n.subnet);
            let hint = if n.gateway == first {
                format!(
                    "machines take the addresses {} to {last}",
                    Ipv4Addr::from(u32::from(first) + 1)
                )
            } else {
                format!(
                    "machines take the addresses {first} to {last}, except the gateway {}",
                    n.gateway
                )
            };
            if let Some(problem) = address_problem(ip, n.subnet) {
                return self.report_hint(s.span(), problem, hint);
            }
            if ip == n.gateway {
                return self.report_hint(s.span(), format!("{ip} is the gateway's address"), hint);
            }
        }
        if !ips.insert(ip) {
            return self.report(s.span(), format!("address {ip} is used by two machines"));
        }
        Ok(ip)
    }

    fn known_image(
        &self,
        name: &str,
        span: Range<usize>,
        images: &BTreeMap<String, Checked<Image>>,
    ) -> Checked<String> {
        match images.get(name) {
            Some(Ok(_)) => Ok(name.to_string()),
            // Its own problems are reported where it is defined.
            Some(Err(Reported)) => Err(Reported),
            None => {
                let known: Vec<&str> = images.keys().map(String::as_str).collect();
                self.report_hint(
                    span,
                    format!("unknown image `{name}`"),
                    format!("known images: {}", known.join(", ")),
                )
            }
        }
    }

    fn cpus(&self, c: Option<&Spanned<u32>>) -> Checked<u32> {
        match c {
            None => Ok(DEFAULT_CPUS),
            Some(c) if *c.get_ref() == 0 || *c.get_ref() > 64 => {
                self.report(c.span(), "cpus must be between 1 and 64")
            }
            Some(c) => Ok(*c.get_ref()),
        }
    }

    /// At least 128MiB, and a whole number of KiB (libvirt's unit).
    fn memory(&self, s: Option<&Spanned<SizeValue>>) -> Checked<u64> {
        let Some(s) = s else {
            return Ok(DEFAULT_MEMORY);
        };
        let v = self.size(s)?;
        if v < 128 << 20 {
            return self.report(s.span(), "memory must be at least 128MiB");
        }
        if !v.is_multiple_of(1024) {
            return self.report_hint(
                s.span(),
                "memory must be a whole number of KiB",
                format!("libvirt counts memory in KiB: write `{}KiB`", v / 1024),
            );
        }
        Ok(v)
    }

    fn disk(&self, s: Option<&Spanned<SizeValue>>) -> Checked<u64> {
        let Some(s) = s else {
            return Ok(DEFAULT_DISK);
        };
        let v = self.size(s)?;
        if v < 1 << 30 {
            return self.report(s.span(), "disk must be at least 1GiB");
        }
        Ok(v)
    }

    fn user(&self, u: Option<&Spanned<String>>) -> Checked<String> {
        let Some(u) = u else {
            return Ok(DEFAULT_USER.to_string());
        };
        let s = u.get_ref();
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok || s == "root" {
            return self.report(u.span(), format!("`{s}` is not a usable login name"));
        }
        Ok(s.clone())
    }

    fn machine_list(
        &self,
        list: Option<&Spanned<Vec<Spanned<String>>>>,
        all_machines: &[String],
    ) -> Checked<Vec<String>> {
        let Some(l) = list else {
            return Ok(all_machines.to_vec());
        };
        if l.get_ref().is_empty() {
            return self.report(l.span(), "the machine list is empty");
        }
        all(l.get_ref().iter().map(|m| {
            if all_machines.contains(m.get_ref()) {
                Ok(m.get_ref().clone())
            } else {
                self.report_hint(
                    m.span(),
                    format!("unknown machine `{}`", m.get_ref()),
                    format!("the lab's machines: {}", all_machines.join(", ")),
                )
            }
        }))
    }

    fn mode(&self, m: Option<&Spanned<String>>, default: u32) -> Checked<u32> {
        let Some(s) = m else {
            return Ok(default);
        };
        u32::from_str_radix(s.get_ref().trim_start_matches("0o"), 8)
            .ok()
            .filter(|&v| v <= 0o7777)
            .map_or_else(
                || {
                    self.report(
                        s.span(),
                        format!("`{}` is not an octal file mode like \"0755\"", s.get_ref()),
                    )
                },
                Ok,
            )
    }

    fn downloads(
        &self,
        raw: &[DownloadFile],
        arch: Arch,
        machines: &[String],
        images: &BTreeMap<String, Checked<Image>>,
    ) -> Vec<Checked<Download>> {
        let mut names = HashSet::new();
        let mut dests = HashSet::new();
        raw.iter()
            .map(|d| self.download(d, arch, machines, images, &mut names, &mut dests))
            .collect()
    }

    fn download(
        &self,
        d: &DownloadFile,
        arch: Arch,
        machines: &[String],
        images: &BTreeMap<String, Checked<Image>>,
        names: &mut HashSet<String>,
        dests: &mut HashSet<String>,
    ) -> Checked<Download> {
        let name = d.name.get_ref();
        let valid_name = self.item_name("download", &d.name).and_then(|name| {
            if !names.insert(name.clone()) {
                self.report(d.name.span(), format!("download `{name}` is defined twice"))
            } else if images.contains_key(&name) {
                // `lab up` keeps what it fetched by name, images and downloads together.
                self.report_hint(
                    d.name.span(),
                    format!("download `{name}` has the name of an image"),
                    "images and downloads are fetched by name: choose another name".to_string(),
                )
            } else {
                Ok(())
            }
        });
        let version = d
            .version
            .as_ref()
            .map(|v| v.get_ref().as_str())
            .filter(|v| !v.is_empty());
        let unfilled = match version {
            Some(_) => Ok(()),
            None => all([Some(&d.url), d.checksum_url.as_ref()]
                .into_iter()
                .flatten()
                .map(|u| {
                    let hint = if d.version.is_some() {
                        "`version` is empty: give the version, or write it into the URL"
                    } else {
                        "add version = \"…\" to the download, or write the version into the URL"
                    };
                    self.unfilled_version(u, hint)
                }))
            .map(drop),
        };
        let expand = |u: &str| {
            u.replace("{version}", version.unwrap_or_default())
                .replace("{arch}", arch.as_str())
        };
        let url = self.url(&d.url).map(|u| expand(&u));
        let by_arch = self.sha256_by_arch(d);
        let pinned = d
            .sha256_by_arch
            .iter()
            .find(|(k, _)| k.get_ref() == arch.as_str())
            .map(|(_, v)| v);
        let insecure = d.insecure_no_checksum.as_ref().filter(|i| *i.get_ref());
        // A checksum and "no checksum" at once: which one was meant is not for lab to guess.
        let contradiction = match insecure {
            Some(i) => {
                let given: Vec<&str> = [
                    (d.sha256.is_some(), "sha256"),
                    (!d.sha256_by_arch.is_empty(), "sha256_by_arch"),
                    (d.checksum_url.is_some(), "checksum_url"),
                ]
                .into_iter()
                .filter_map(|(given, key)| given.then_some(key))
                .collect();
                if given.is_empty() {
                    Ok(())
                } else {
                    self.report_hint(
                        i.span(),
                        format!(
                            "insecure_no_checksum = true contradicts {}",
                            given.join(" and ")
                        ),
                        "the download has a checksum: remove insecure_no_checksum".to_string(),
                    )
                }
            }
            None => Ok(()),
        };
        let checksum = match (&d.sha256, pinned, &d.checksum_url) {
            (Some(s), _, _) if !d.sha256_by_arch.is_empty() => {
                self.report(s.span(), "give either sha256 or sha256_by_arch, not both")
            }
            // sha256_by_arch without this arch's entry: say so, rather than "no checksum" (unless an entry is
            // wrong, which is reported where it is written).
            (None, None, None) if !d.sha256_by_arch.is_empty() && insecure.is_none() => {
                let have: Vec<&str> = d
                    .sha256_by_arch
                    .keys()
                    .map(|k| k.get_ref().as_str())
                    .collect();
                match by_arch {
                    Err(Reported) => Err(Reported),
                    Ok(()) => self.report_hint(
                        d.url.span(),
                        format!("no checksum for {}, the lab's arch", arch.as_str()),
                        format!(
                            "sha256_by_arch has {} only: add {} = \"…\"",
                            have.join(", "),
                            arch.as_str()
                        ),
                    ),
                }
            }
            (sha, pinned, checksum_url) => self.checksum(
                &d.url,
                sha.as_ref().or(pinned),
                checksum_url.as_ref(),
                insecure.is_some(),
                &expand,
            ),
        };
        let file_name = match (&d.as_name, &url) {
            (Some(a), _) => match file_name_problem(a.get_ref()) {
                None => Ok(a.get_ref().clone()),
                Some(why) => self.report_hint(
                    a.span(),
                    if a.get_ref().is_empty() {
                        "`as` is empty".to_string()
                    } else {
                        format!("`{}` is not a usable file name: it {why}", a.get_ref())
                    },
                    "`as` is the file's name in `dest`: not empty, not `.` or `..`, no `/`, not starting \
                     with `-`"
                        .to_string(),
                ),
            },
            (None, Ok(url)) => match url.rsplit('/').next().filter(|s| !s.is_empty()) {
                None => self.report(
                    d.url.span(),
                    "the URL ends in / so the file has no name; add as = \"…\"",
                ),
                Some(f) => match file_name_problem(f) {
                    None => Ok(f.to_string()),
                    Some(why) => self.report_hint(
                        d.url.span(),
                        format!("the URL's file name `{f}` is not usable: it {why}"),
                        "add as = \"…\" with the name to give the file".to_string(),
                    ),
                },
            },
            (None, Err(Reported)) => Err(Reported),
        };
        let dest = match &d.dest {
            None => Ok(DEFAULT_DEST.to_string()),
            Some(p) if p.get_ref().starts_with('/') => {
                Ok(p.get_ref().trim_end_matches('/').to_string())
            }
            Some(p) => self.report(p.span(), "dest must be an absolute path"),
        };
        let dest_path = match (&dest, &file_name) {
            (Ok(dest), Ok(file_name)) => {
                let path = format!("{dest}/{file_name}");
                if dests.insert(path.clone()) {
                    Ok(path)
                } else {
                    self.report(d.name.span(), format!("two downloads write {path}"))
                }
            }
            _ => Err(Reported),
        };
        let machines = self.machine_list(d.machines.as_ref(), machines);
        let mode = self.mode(d.mode.as_ref(), 0o644);
        valid_name?;
        unfilled?;
        by_arch?;
        contradiction?;
        Ok(Download {
            name: name.clone(),
            version: d.version.as_ref().map(|v| v.get_ref().clone()),
            url: url?,
            checksum: checksum?,
            machines: machines?,
            dest_path: dest_path?,
            mode: mode?,
        })
    }

    /// Every `sha256_by_arch` entry, used on this arch or not: a known arch and a well-formed sum, each reported
    /// where it is written.
    fn sha256_by_arch(&self, d: &DownloadFile) -> Checked<()> {
        all(d.sha256_by_arch.iter().map(|(k, v)| {
            let key = k.get_ref().as_str();
            if matches!(key, "amd64" | "arm64") {
                return self.sha256(v).map(drop);
            }
            let hint = "the arches are named as in `arch`: amd64 and arm64";
            let hint = match key {
                "x86_64" | "x86-64" | "x64" => format!("{hint} (did you mean `amd64`?)"),
                "aarch64" | "armv8" => format!("{hint} (did you mean `arm64`?)"),
                _ => hint.to_string(),
            };
            self.report_hint(
                k.span(),
                format!("unknown arch `{key}` in sha256_by_arch"),
                hint,
            )
        }))
        .map(drop)
    }

    fn checkpoints(&self, raw: &[CheckpointFile], machines: &[String]) -> Vec<Checked<Checkpoint>> {
        // Every name and alias seen so far, valid or not, with the name of the checkpoint it stands for: a bad
        // name is reported once, not at each `after`, and an `after` that names an alias gets the checkpoint's name.
        let mut known = BTreeMap::from([(BASE.to_string(), BASE.to_string())]);
        raw.iter()
            .enumerate()
            .map(|(i, c)| self.checkpoint(c, &raw[..i], machines, &mut known))
            .collect()
    }

    fn checkpoint(
        &self,
        c: &CheckpointFile,
        earlier: &[CheckpointFile],
        machines: &[String],
        known: &mut BTreeMap<String, String>,
    ) -> Checked<Checkpoint> {
        let name = c.name.get_ref();
        let earlier: Vec<&str> = std::iter::once(BASE)
            .chain(earlier.iter().map(|c| c.name.get_ref().as_str()))
            .collect();
        let fresh = !known.contains_key(name);
        if fresh {
            known.insert(name.clone(), name.clone());
        }
        let valid_name = if !is_checkpoint_name(name) {
            self.report(
                c.name.span(),
                format!("checkpoint name `{name}` must match [a-z0-9][a-z0-9._-]{{0,62}}"),
            )
        } else if let Some((message, hint)) = reserved_name("checkpoint name", name) {
            self.report_hint(c.name.span(), message, hint)
        } else if !fresh {
            self.report(
                c.name.span(),
                format!("checkpoint `{name}` is defined twice"),
            )
        } else {
            Ok(())
        };
        let after = match &c.after {
            None => Ok(earlier.last().unwrap_or(&BASE).to_string()),
            Some(a) => match known.get(a.get_ref()) {
                Some(canonical) if a.get_ref() != name => Ok(canonical.clone()),
                _ => self.report_hint(
                    a.span(),
                    format!(
                        "`after` names `{}`, which is not `base` or an earlier checkpoint",
                        a.get_ref()
                    ),
                    format!("checkpoints so far: {}", earlier.join(", ")),
                ),
            },
        };
        let aliases = all(c.aliases.iter().map(|a| {
            let alias = a.get_ref();
            let free = is_checkpoint_name(alias) && !known.contains_key(alias);
            if free {
                known.insert(alias.clone(), name.clone());
            }
            if let Some((message, hint)) = reserved_name("alias", alias) {
                self.report_hint(a.span(), message, hint)
            } else if free {
                Ok(alias.clone())
            } else {
                self.report(
                    a.span(),
                    format!("alias `{alias}` is not a free checkpoint name"),
                )
            }
        }));
        let steps = all(c
            .steps
            .iter()
            .map(|s| self.step(s, machines, c.name.span())));
        let checks = all(c.checks.iter().enumerate().map(|(i, k)| {
            Ok(Check {
                name: k
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{name} check {}", i + 1)),
                machines: self.machine_list(k.machines.as_ref(), machines)?,
                run: k.run.get_ref().clone(),
            })
        }));
        valid_name?;
        Ok(Checkpoint {
            name: name.clone(),
            after: after?,
            description: c.description.clone(),
            aliases: aliases?,
            steps: steps?,
            checks: checks?,
        })
    }

    /// `checkpoint` is where a step without any action is reported.
    fn step(&self, s: &StepFile, machines: &[String], checkpoint: Range<usize>) -> Checked<Step> {
        let list = self.machine_list(s.machines.as_ref(), machines);
        let action = match (&s.script, &s.run, s.copy.is_empty()) {
            (Some(p), None, true) => self.script(p).map(|text| StepAction::Script {
                path: p.get_ref().clone(),
                text,
            }),
            (None, Some(r), true) => Ok(StepAction::Run(r.get_ref().clone())),
            (None, None, false) => {
                all(s.copy.iter().map(|c| self.copy(c, machines))).map(StepAction::Copy)
            }
            _ => {
                let span = s
                    .script
                    .as_ref()
                    .or(s.run.as_ref())
                    .map(|x| x.span())
                    .or(s.machines.as_ref().map(|m| m.span()))
                    .unwrap_or(checkpoint);
                self.report(
                    span,
                    "a step has exactly one of script = \"…\", run = \"…\" or copy = [ … ]",
                )
            }
        };
        Ok(Step {
            machines: list?,
            action: action?,
        })
    }

    fn copy(&self, c: &CopyFile, machines: &[String]) -> Checked<Copy> {
        let from = match c.from.get_ref().split_once(':') {
            None => self.report(c.from.span(), "copy `from` is MACHINE:/path"),
            Some((m, p)) if !machines.iter().any(|x| x == m) || !p.starts_with('/') => self.report(
                c.from.span(),
                format!(
                    "`{}` does not name a machine of the lab and an absolute path",
                    c.from.get_ref()
                ),
            ),
            Some(from) => Ok(from),
        };
        let to = if c.to.get_ref().starts_with('/') {
            Ok(c.to.get_ref().clone())
        } else {
            self.report(c.to.span(), "copy `to` must be an absolute path")
        };
        let mode = self.mode(c.mode.as_ref(), 0o644);
        let (from_machine, from_path) = from?;
        Ok(Copy {
            from_machine: from_machine.to_string(),
            from_path: from_path.to_string(),
            to_path: to?,
            mode: mode?,
        })
    }

    fn script(&self, p: &Spanned<String>) -> Checked<String> {
        let rel = p.get_ref();
        if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            return self.report(
                p.span(),
                "a script path is relative to the lab file and stays inside its folder",
            );
        }
        let Some(text) = self.read_lab_file(rel) else {
            let hint = match self.source {
                Source::Embedded => "the course lab's scripts are built into lab".to_string(),
                Source::File(path) => {
                    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                    format!(
                        "looked for {}: script paths are relative to the lab file's folder",
                        dir.unwrap_or(Path::new(".")).join(rel).display()
                    )
                }
            };
            return self.report_hint(p.span(), format!("script `{rel}` cannot be read"), hint);
        };
        // A script is sent alone to the machine, so the files it sources from its own folder go inline.
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            match sourced_sibling(line) {
                Some(name) => {
                    let path = if dir.is_empty() {
                        name.to_string()
                    } else {
                        format!("{dir}/{name}")
                    };
                    let Some(lib) = self.read_lab_file(&path) else {
                        return self.report(
                            p.span(),
                            format!("`{rel}` sources `{path}`, which cannot be read"),
                        );
                    };
                    out.push_str(&format!("# --- {path} (inlined by lab) ---\n"));
                    for l in lib.lines().filter(|l| !l.starts_with("#!")) {
                        out.push_str(l);
                        out.push('\n');
                    }
                    out.push_str(&format!("# --- end of {path} ---\n"));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        Ok(out)
    }

    /// A file of the lab's folder: on disk beside the lab file, or in the embedded course lab.
    fn read_lab_file(&self, rel: &str) -> Option<String> {
        self.files.borrow_mut().insert(rel.to_string());
        match self.source {
            Source::Embedded => EMBEDDED_LAB
                .get_file(rel)
                .and_then(|f| f.contents_utf8())
                .map(str::to_string),
            Source::File(path) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                fs_err::read_to_string(dir.join(rel)).ok()
            }
        }
    }
}

/// The first and last host addresses of a subnet (/29 or larger).
fn hosts(subnet: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::from(u32::from(subnet.network()) + 1),
        Ipv4Addr::from(u32::from(subnet.broadcast()) - 1),
    )
}

/// Why `ip` is not a host address of `subnet`: outside it, or its network or broadcast address.
fn address_problem(ip: Ipv4Addr, subnet: Ipv4Net) -> Option<String> {
    if !subnet.contains(&ip) {
        Some(format!("{ip} is outside the lab's subnet {subnet}"))
    } else if ip == subnet.network() {
        Some(format!("{ip} is the network address of {subnet}"))
    } else if ip == subnet.broadcast() {
        Some(format!("{ip} is the broadcast address of {subnet}"))
    } else {
        None
    }
}

/// `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"` (or with `.`): a file from the script's own folder, which
/// works when the script runs by hand and is inlined when lab sends it. Returns the file name.
fn sourced_sibling(line: &str) -> Option<&str> {
    let t = line.trim();
    let rest = t.strip_prefix("source ").or_else(|| t.strip_prefix(". "))?;
    let name = rest
        .trim()
        .strip_prefix("\"$(dirname \"${BASH_SOURCE[0]}\")/")?
        .strip_suffix('"')?;
    let ok = !name.is_empty() && !name.contains('/') && !name.contains('"') && !name.contains('$');
    ok.then_some(name)
}

/// Why `s` cannot be the name of a download's file in its folder, if it cannot. A leading `-` is refused too: lab
/// itself always uses the whole path, but the file is there for the machine's users, whose commands (`tar xf -x`,
/// `chmod +x -x`) would read the name as an option; `as` renames a file whose upstream name starts with one.
fn file_name_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("is empty")
    } else if s == "." || s == ".." {
        Some("names a folder")
    } else if s.contains('/') {
        Some("contains /")
    } else if s.starts_with('-') {
        Some("starts with -, which commands read as an option")
    } else if s.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

/// Why a checkpoint name or alias written in a lab file cannot be used although it matches the pattern: `base`,
/// and the names lab gives the checkpoints it makes itself. `what` is `checkpoint name` or `alias`.
fn reserved_name(what: &str, s: &str) -> Option<(String, Option<String>)> {
    if s == BASE {
        Some((
            "`base` is the checkpoint `lab up` takes; choose another name".to_string(),
            None,
        ))
    } else if s == crate::checkpoint::UNDO || s.starts_with("undo-") {
        Some((
            format!("{what} `{s}` is reserved"),
            Some(
                "lab keeps the state `lab restore` replaced as `undo` (and an older one as `undo-TIME`): \
                 choose another name"
                    .to_string(),
            ),
        ))
    } else if s.contains(".stale-") {
        Some((
            format!("{what} `{s}` is reserved"),
            Some(
                "lab keeps a stale checkpoint that others are built on as `NAME.stale-TIME`: choose another name"
                    .to_string(),
            ),
        ))
    } else {
        None
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `[a-z0-9][a-z0-9._-]{0,62}`: the rule for checkpoint names, given and user-made.
pub fn is_checkpoint_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_sibling_sources_only() {
        assert_eq!(
            sourced_sibling(r#"source "$(dirname "${BASH_SOURCE[0]}")/lib.sh""#),
            Some("lib.sh")
        );
        assert_eq!(
            sourced_sibling(r#"  . "$(dirname "${BASH_SOURCE[0]}")/common.sh""#),
            Some("common.sh")
        );
        assert_eq!(sourced_sibling(r#"source /etc/os-release"#), None);
        assert_eq!(
            sourced_sibling(r#"source "$(dirname "${BASH_SOURCE[0]}")/../x.sh""#),
            None
        );
    }

    #[test]
    fn inlines_sourced_siblings_into_scripts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("steps")).unwrap();
        std::fs::write(
            dir.path().join("steps/lib.sh"),
            "#!/usr/bin/env bash\nsay() { echo \"$1\"; }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("steps/a.sh"),
            "#!/usr/bin/env bash\n# shellcheck source=lib.sh\nsource \"$(dirname \"${BASH_SOURCE[0]}\")/lib.sh\"\nsay hi\n",
        )
        .unwrap();
        let toml = "name = \"t\"\n[network]\nsubnet = \"10.9.0.0/24\"\n[[machine]]\nname = \"a\"\nip = \"10.9.0.5\"\n\
                    [[checkpoint]]\nname = \"c\"\n[[checkpoint.step]]\nscript = \"steps/a.sh\"\n";
        std::fs::write(dir.path().join("lab.toml"), toml).unwrap();
        let lab = load(Some(&dir.path().join("lab.toml"))).unwrap();
        let StepAction::Script { text, .. } = &lab.checkpoints[0].steps[0].action else {
            panic!()
        };
        assert!(text.contains("say() { echo \"$1\"; }"), "{text}");
        assert!(!text.contains("BASH_SOURCE"), "{text}");
        assert_eq!(text.matches("#!/usr/bin/env bash").count(), 1);
    }
}
