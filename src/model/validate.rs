//! Turning a lab file into a [`Lab`]: parse, resolve defaults, check every rule once. Every error names the file,
//! line and column of the offending value.

use super::file::*;
use super::*;
use serde_spanned::Spanned;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::path::Path;

/// A lab file that cannot be used. Displayed as `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct LabFileError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl LabFileError {
    fn at(
        source: &Source,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let (line, col) = match span {
            Some(s) => line_col(text, s.start),
            None => (1, 1),
        };
        LabFileError {
            file: source.to_string(),
            line,
            col,
            message: message.into(),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    (line, col)
}

const DEFAULT_IMAGE: &str = "ubuntu-24.04";
const DEFAULT_CPUS: u32 = 2;
const DEFAULT_MEMORY: u64 = 2 << 30;
const DEFAULT_DISK: u64 = 20 << 30;
const DEFAULT_USER: &str = "laborant";
const DEFAULT_DEST: &str = "/opt/lab/downloads";

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
    fs_err::read_to_string(p).map_err(|e| LabFileError {
        file: p.display().to_string(),
        line: 1,
        col: 1,
        message: format!("cannot read the lab file: {}", io_cause(&e)),
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
    let raw: LabFile = toml::from_str(text)
        .map_err(|e| LabFileError::at(&source, text, e.span(), e.message().trim().to_string()))?;
    Validator {
        source: &source,
        text,
    }
    .lab(raw)
}

struct Validator<'a> {
    source: &'a Source,
    text: &'a str,
}

impl Validator<'_> {
    fn err<T>(&self, span: Range<usize>, message: impl Into<String>) -> Result<T, LabFileError> {
        Err(LabFileError::at(
            self.source,
            self.text,
            Some(span),
            message,
        ))
    }

    fn lab(&self, raw: LabFile) -> Result<Lab, LabFileError> {
        let name = self.lab_name(&raw.name)?;
        let network = self.network(&raw.network)?;
        let arch = match &raw.arch {
            None => Arch::host(),
            Some(a) => match a.get_ref().as_str() {
                "amd64" => Arch::Amd64,
                "arm64" => Arch::Arm64,
                other => {
                    return self.err(a.span(), format!("unknown arch `{other}` (amd64 or arm64)"))
                }
            },
        };
        let mirror = match &raw.mirror {
            None => None,
            Some(m) => Some(self.url(m)?.trim_end_matches('/').to_string()),
        };
        let images = self.images(&raw.images, arch)?;
        let machines = self.machines(&raw, &network, &images)?;
        let machine_names: Vec<String> = machines.iter().map(|m| m.name.clone()).collect();
        let downloads = self.downloads(&raw.downloads, arch, &machine_names)?;
        let checkpoints = self.checkpoints(&raw.checkpoints, &machine_names)?;
        Ok(Lab {
            name,
            source: self.source.clone(),
            file_digest: hex::encode(Sha256::digest(self.text.as_bytes())),
            network,
            arch,
            mirror,
            machines,
            images,
            downloads,
            checkpoints,
        })
    }

    fn lab_name(&self, n: &Spanned<String>) -> Result<String, LabFileError> {
        let s = n.get_ref();
        let ok = s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return self.err(
                n.span(),
                format!("lab name `{s}` must match [a-z][a-z0-9-]{{0,31}}"),
            );
        }
        Ok(s.clone())
    }

    fn network(&self, n: &NetworkFile) -> Result<Network, LabFileError> {
        let subnet: Ipv4Net = match n.subnet.get_ref().parse() {
            Ok(s) => s,
            Err(_) => {
                return self.err(
                    n.subnet.span(),
                    format!(
                        "`{}` is not an IPv4 subnet like 172.16.0.0/24",
                        n.subnet.get_ref()
                    ),
                )
            }
        };
        if subnet.network() != subnet.addr() {
            return self.err(
                n.subnet.span(),
                format!(
                    "`{}` has host bits set; did you mean {}?",
                    n.subnet.get_ref(),
                    subnet.trunc()
                ),
            );
        }
        if subnet.prefix_len() > 29 || subnet.prefix_len() < 8 {
            return self.err(
                n.subnet.span(),
                "the subnet's prefix must be between /8 and /29",
            );
        }
        let gateway = match &n.gateway {
            None => subnet.hosts().next().expect("a /29 or larger has hosts"),
            Some(g) => {
                let ip = self.ip(g)?;
                if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
                    return self.err(
                        g.span(),
                        format!("gateway {ip} is not a host address of {subnet}"),
                    );
                }
                ip
            }
        };
        let mode = match n.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("nat", _)) => NetworkMode::Nat,
            Some(("isolated", _)) => NetworkMode::Isolated,
            Some((other, span)) => {
                return self.err(
                    span,
                    format!("unknown network mode `{other}` (nat or isolated)"),
                )
            }
        };
        Ok(Network {
            subnet,
            gateway,
            mode,
        })
    }

    fn ip(&self, s: &Spanned<String>) -> Result<Ipv4Addr, LabFileError> {
        s.get_ref().parse().or_else(|_| {
            self.err(
                s.span(),
                format!("`{}` is not an IPv4 address", s.get_ref()),
            )
        })
    }

    fn size(&self, s: &Spanned<String>) -> Result<u64, LabFileError> {
        parse_size(s.get_ref()).or_else(|m| self.err(s.span(), m))
    }

    fn url(&self, s: &Spanned<String>) -> Result<String, LabFileError> {
        let u = s.get_ref();
        if ["http://", "https://", "file://"]
            .iter()
            .any(|p| u.starts_with(p))
        {
            Ok(u.clone())
        } else {
            self.err(
                s.span(),
                format!("`{u}` is not an http(s):// or file:// URL"),
            )
        }
    }

    fn sha256(&self, s: &Spanned<String>) -> Result<String, LabFileError> {
        let h = s.get_ref().trim().to_ascii_lowercase();
        if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(h)
        } else {
            self.err(s.span(), "sha256 must be 64 hexadecimal characters")
        }
    }

    fn images(
        &self,
        raw: &[ImageFile],
        arch: Arch,
    ) -> Result<BTreeMap<String, Image>, LabFileError> {
        let mut images = BTreeMap::new();
        for f in IMAGE_CATALOG.files() {
            let text = f.contents_utf8().expect("catalog files are UTF-8");
            let src = Source::File(Path::new("images").join(f.path()));
            let raw: ImageFile = toml::from_str(text)
                .map_err(|e| LabFileError::at(&src, text, e.span(), e.message().trim()))?;
            let v = Validator { source: &src, text };
            let img = v.image(&raw, arch)?;
            images.insert(img.name.clone(), img);
        }
        let mut seen = HashSet::new();
        for r in raw {
            if !seen.insert(r.name.get_ref().clone()) {
                return self.err(
                    r.name.span(),
                    format!("image `{}` is defined twice", r.name.get_ref()),
                );
            }
            let img = self.image(r, arch)?;
            images.insert(img.name.clone(), img);
        }
        Ok(images)
    }

    fn image(&self, r: &ImageFile, arch: Arch) -> Result<Image, LabFileError> {
        let url = self.url(&r.url)?.replace("{arch}", arch.as_str());
        let checksum = self.checksum(
            &r.url,
            r.sha256.as_ref(),
            r.checksum_url.as_ref(),
            false,
            &|u| u.replace("{arch}", arch.as_str()),
        )?;
        let format = match r.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("qcow2", _)) => ImageFormat::Qcow2,
            Some(("raw", _)) => ImageFormat::Raw,
            Some((other, span)) => {
                return self.err(
                    span,
                    format!("unknown image format `{other}` (qcow2 or raw)"),
                )
            }
        };
        Ok(Image {
            name: r.name.get_ref().clone(),
            url,
            checksum,
            format,
        })
    }

    /// The rules shared by images and downloads: one checksum source, and plain http only with a pinned sum.
    fn checksum(
        &self,
        url: &Spanned<String>,
        sha256: Option<&Spanned<String>>,
        checksum_url: Option<&Spanned<String>>,
        insecure: bool,
        expand: &dyn Fn(&str) -> String,
    ) -> Result<Checksum, LabFileError> {
        let c = match (sha256, checksum_url) {
            (Some(_), Some(c)) => return self.err(c.span(), "give either sha256 or checksum_url, not both"),
            (Some(s), None) => Checksum::Sha256(self.sha256(s)?),
            (None, Some(c)) => Checksum::Url(expand(&self.url(c)?)),
            (None, None) if insecure => Checksum::None,
            (None, None) => {
                return self.err(
                    url.span(),
                    "no checksum: add sha256 = \"…\" or checksum_url = \"…\" (or insecure_no_checksum = true)",
                )
            }
        };
        if url.get_ref().starts_with("http://") && !matches!(c, Checksum::Sha256(_)) {
            return self.err(url.span(), "a plain http:// URL needs a pinned sha256");
        }
        Ok(c)
    }

    fn machines(
        &self,
        raw: &LabFile,
        network: &Network,
        images: &BTreeMap<String, Image>,
    ) -> Result<Vec<Machine>, LabFileError> {
        if raw.machines.is_empty() {
            return self.err(raw.name.span(), "the lab has no [[machine]]");
        }
        let d = &raw.defaults;
        let mut names = HashSet::new();
        let mut ips = HashSet::new();
        let mut out = Vec::new();
        for m in &raw.machines {
            let name = m.name.get_ref();
            if !is_dns_label(name) {
                return self.err(
                    m.name.span(),
                    format!(
                        "machine name `{name}` is not a DNS label ([a-z0-9-], 1-63 characters)"
                    ),
                );
            }
            if !names.insert(name.clone()) {
                return self.err(m.name.span(), format!("machine `{name}` is defined twice"));
            }
            let ip = self.ip(&m.ip)?;
            if !network.subnet.contains(&ip)
                || ip == network.subnet.network()
                || ip == network.subnet.broadcast()
            {
                return self.err(
                    m.ip.span(),
                    format!("{ip} is outside the lab's subnet {}", network.subnet),
                );
            }
            if ip == network.gateway {
                return self.err(m.ip.span(), format!("{ip} is the gateway's address"));
            }
            if !ips.insert(ip) {
                return self.err(m.ip.span(), format!("address {ip} is used by two machines"));
            }
            let image = m.image.as_ref().or(d.image.as_ref());
            let image_name = image
                .map(|i| i.get_ref().clone())
                .unwrap_or_else(|| DEFAULT_IMAGE.into());
            if !images.contains_key(&image_name) {
                let known: Vec<_> = images.keys().cloned().collect();
                let span = image.map(|i| i.span()).unwrap_or(m.name.span());
                return self.err(
                    span,
                    format!("unknown image `{image_name}` (known: {})", known.join(", ")),
                );
            }
            let cpus = match m.cpus.as_ref().or(d.cpus.as_ref()) {
                None => DEFAULT_CPUS,
                Some(c) if *c.get_ref() == 0 || *c.get_ref() > 64 => {
                    return self.err(c.span(), "cpus must be between 1 and 64")
                }
                Some(c) => *c.get_ref(),
            };
            let memory = match m.memory.as_ref().or(d.memory.as_ref()) {
                None => DEFAULT_MEMORY,
                Some(s) => {
                    let v = self.size(s)?;
                    if v < 128 << 20 {
                        return self.err(s.span(), "memory must be at least 128MiB");
                    }
                    v
                }
            };
            let disk = match m.disk.as_ref().or(d.disk.as_ref()) {
                None => DEFAULT_DISK,
                Some(s) => {
                    let v = self.size(s)?;
                    if v < 1 << 30 {
                        return self.err(s.span(), "disk must be at least 1GiB");
                    }
                    v
                }
            };
            let user = match m.user.as_ref().or(d.user.as_ref()) {
                None => DEFAULT_USER.to_string(),
                Some(u) => {
                    let s = u.get_ref();
                    let ok = !s.is_empty()
                        && s.len() <= 32
                        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                        && s.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                        });
                    if !ok || s == "root" {
                        return self.err(u.span(), format!("`{s}` is not a usable login name"));
                    }
                    s.clone()
                }
            };
            out.push(Machine {
                name: name.clone(),
                ip,
                cpus,
                memory,
                disk,
                image: image_name,
                user,
            });
        }
        Ok(out)
    }

    fn machine_list(
        &self,
        list: Option<&Spanned<Vec<String>>>,
        all: &[String],
    ) -> Result<Vec<String>, LabFileError> {
        match list {
            None => Ok(all.to_vec()),
            Some(l) => {
                if l.get_ref().is_empty() {
                    return self.err(l.span(), "the machine list is empty");
                }
                for m in l.get_ref() {
                    if !all.contains(m) {
                        return self.err(
                            l.span(),
                            format!("unknown machine `{m}` (machines: {})", all.join(", ")),
                        );
                    }
                }
                Ok(l.get_ref().clone())
            }
        }
    }

    fn mode(&self, m: Option<&Spanned<String>>, default: u32) -> Result<u32, LabFileError> {
        match m {
            None => Ok(default),
            Some(s) => u32::from_str_radix(s.get_ref().trim_start_matches("0o"), 8)
                .ok()
                .filter(|&v| v <= 0o7777)
                .map_or_else(
                    || {
                        self.err(
                            s.span(),
                            format!("`{}` is not an octal file mode like \"0755\"", s.get_ref()),
                        )
                    },
                    Ok,
                ),
        }
    }

    fn downloads(
        &self,
        raw: &[DownloadFile],
        arch: Arch,
        machines: &[String],
    ) -> Result<Vec<Download>, LabFileError> {
        let mut names = HashSet::new();
        let mut dests = HashSet::new();
        let mut out = Vec::new();
        for d in raw {
            let name = d.name.get_ref();
            if !names.insert(name.clone()) {
                return self.err(d.name.span(), format!("download `{name}` is defined twice"));
            }
            let version = d.version.clone().unwrap_or_default();
            let expand = |u: &str| {
                u.replace("{version}", &version)
                    .replace("{arch}", arch.as_str())
            };
            let url = expand(&self.url(&d.url)?);
            let pinned = d
                .sha256_by_arch
                .get(arch.as_str())
                .map(|s| Spanned::new(d.url.span(), s.clone()));
            let sha = d.sha256.as_ref().or(pinned.as_ref());
            let checksum = self.checksum(
                &d.url,
                sha,
                d.checksum_url.as_ref(),
                d.insecure_no_checksum,
                &expand,
            )?;
            let file_name = match &d.as_name {
                Some(a) => {
                    if a.get_ref().is_empty() || a.get_ref().contains('/') {
                        return self.err(a.span(), "`as` is a file name, without /");
                    }
                    a.get_ref().clone()
                }
                None => url
                    .rsplit('/')
                    .next()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .map_or_else(
                        || {
                            self.err(
                                d.url.span(),
                                "the URL ends in / so the file has no name; add as = \"…\"",
                            )
                        },
                        Ok,
                    )?,
            };
            let dest = match &d.dest {
                None => DEFAULT_DEST.to_string(),
                Some(p) if p.get_ref().starts_with('/') => {
                    p.get_ref().trim_end_matches('/').to_string()
                }
                Some(p) => return self.err(p.span(), "dest must be an absolute path"),
            };
            let dest_path = format!("{dest}/{file_name}");
            if !dests.insert(dest_path.clone()) {
                return self.err(d.name.span(), format!("two downloads write {dest_path}"));
            }
            out.push(Download {
                name: name.clone(),
                version: d.version.clone(),
                url,
                checksum,
                machines: self.machine_list(d.machines.as_ref(), machines)?,
                dest_path,
                mode: self.mode(d.mode.as_ref(), 0o644)?,
            });
        }
        Ok(out)
    }

    fn checkpoints(
        &self,
        raw: &[CheckpointFile],
        machines: &[String],
    ) -> Result<Vec<Checkpoint>, LabFileError> {
        let mut known: BTreeSet<String> = BTreeSet::from([BASE.to_string()]);
        let mut out = Vec::new();
        let mut previous = BASE.to_string();
        for c in raw {
            let name = c.name.get_ref();
            if !is_checkpoint_name(name) {
                return self.err(
                    c.name.span(),
                    format!("checkpoint name `{name}` must match [a-z0-9][a-z0-9._-]{{0,62}}"),
                );
            }
            if !known.insert(name.clone()) {
                return self.err(
                    c.name.span(),
                    format!("checkpoint `{name}` is defined twice"),
                );
            }
            let after = match &c.after {
                None => previous.clone(),
                Some(a) if known.contains(a.get_ref()) && a.get_ref() != name => {
                    a.get_ref().clone()
                }
                Some(a) => {
                    return self.err(
                        a.span(),
                        format!(
                            "`after` names `{}`, which is not `base` or an earlier checkpoint",
                            a.get_ref()
                        ),
                    )
                }
            };
            let mut aliases = Vec::new();
            for a in &c.aliases {
                if !is_checkpoint_name(a.get_ref()) || !known.insert(a.get_ref().clone()) {
                    return self.err(
                        a.span(),
                        format!("alias `{}` is not a free checkpoint name", a.get_ref()),
                    );
                }
                aliases.push(a.get_ref().clone());
            }
            let mut steps = Vec::new();
            for s in &c.steps {
                steps.push(self.step(s, machines)?);
            }
            let mut checks = Vec::new();
            for (i, k) in c.checks.iter().enumerate() {
                checks.push(Check {
                    name: k
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{name} check {}", i + 1)),
                    machines: self.machine_list(k.machines.as_ref(), machines)?,
                    run: k.run.get_ref().clone(),
                });
            }
            previous = name.clone();
            out.push(Checkpoint {
                name: name.clone(),
                after,
                description: c.description.clone(),
                aliases,
                steps,
                checks,
            });
        }
        Ok(out)
    }

    fn step(&self, s: &StepFile, machines: &[String]) -> Result<Step, LabFileError> {
        let list = self.machine_list(s.machines.as_ref(), machines)?;
        let action = match (&s.script, &s.run, s.copy.is_empty()) {
            (Some(p), None, true) => StepAction::Script {
                path: p.get_ref().clone(),
                text: self.script(p)?,
            },
            (None, Some(r), true) => StepAction::Run(r.get_ref().clone()),
            (None, None, false) => {
                let mut copies = Vec::new();
                for c in &s.copy {
                    let Some((m, p)) = c.from.get_ref().split_once(':') else {
                        return self.err(c.from.span(), "copy `from` is MACHINE:/path");
                    };
                    if !machines.iter().any(|x| x == m) || !p.starts_with('/') {
                        return self.err(
                            c.from.span(),
                            format!(
                                "`{}` does not name a machine of the lab and an absolute path",
                                c.from.get_ref()
                            ),
                        );
                    }
                    if !c.to.get_ref().starts_with('/') {
                        return self.err(c.to.span(), "copy `to` must be an absolute path");
                    }
                    copies.push(Copy {
                        from_machine: m.to_string(),
                        from_path: p.to_string(),
                        to_path: c.to.get_ref().clone(),
                        mode: self.mode(c.mode.as_ref(), 0o644)?,
                    });
                }
                StepAction::Copy(copies)
            }
            _ => {
                let span = s
                    .script
                    .as_ref()
                    .or(s.run.as_ref())
                    .map(|x| x.span())
                    .or(s.machines.as_ref().map(|m| m.span()))
                    .unwrap_or(0..0);
                return self.err(
                    span,
                    "a step has exactly one of script = \"…\", run = \"…\" or copy = [ … ]",
                );
            }
        };
        Ok(Step {
            machines: list,
            action,
        })
    }

    fn script(&self, p: &Spanned<String>) -> Result<String, LabFileError> {
        let rel = p.get_ref();
        if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            return self.err(
                p.span(),
                "a script path is relative to the lab file and stays inside its folder",
            );
        }
        let text = self.read_lab_file(rel).map_or_else(
            || self.err(p.span(), format!("script `{rel}` cannot be read")),
            Ok,
        )?;
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
                    let lib = self.read_lab_file(&path).map_or_else(
                        || {
                            self.err(
                                p.span(),
                                format!("`{rel}` sources `{path}`, which cannot be read"),
                            )
                        },
                        Ok,
                    )?;
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
