//! [`Hypervisor`] over the `virt` crate: the only file in `lab` that touches libvirt's API. Every call blocks.

use super::{DomainState, Error, ErrorKind, Hypervisor, NetworkInfo, Result, VolumeInfo};
use ipnet::Ipv4Net;
use std::io::Read;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::network::Network;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virt::sys;

pub struct VirtHost {
    conn: Connect,
    uri: String,
}

fn classify(e: &virt::error::Error) -> ErrorKind {
    use virt::enumutil::Enum;
    match e.code() {
        Enum::Known(
            ErrorNumber::NoDomain
            | ErrorNumber::NoNetwork
            | ErrorNumber::NoStoragePool
            | ErrorNumber::NoStorageVolume,
        ) => ErrorKind::NotFound,
        Enum::Known(
            ErrorNumber::AuthFailed | ErrorNumber::AccessDenied | ErrorNumber::AuthCancelled,
        ) => ErrorKind::PermissionDenied,
        Enum::Known(ErrorNumber::NoConnect) => {
            let m = e.message();
            if m.contains("Permission denied") || m.contains("authentication") {
                ErrorKind::PermissionDenied
            } else {
                ErrorKind::Unreachable
            }
        }
        Enum::Known(ErrorNumber::SystemError)
            if e.message().contains("Failed to connect socket") =>
        {
            if e.message().contains("Permission denied") {
                ErrorKind::PermissionDenied
            } else {
                ErrorKind::Unreachable
            }
        }
        Enum::Known(ErrorNumber::AgentUnresponsive) => ErrorKind::AgentUnavailable,
        _ if e.message().contains("already exists") => ErrorKind::Exists,
        _ => ErrorKind::Other,
    }
}

fn wrap<'a>(op: &'static str, object: &'a str) -> impl FnOnce(virt::error::Error) -> Error + 'a {
    move |e| Error {
        kind: classify(&e),
        op,
        object: object.to_string(),
        message: e.message().trim().to_string(),
    }
}

/// Ok(None) for a missing object, the error otherwise.
fn optional<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The text of the first `attr='…'` or `attr="…"` after `from` in `xml`.
fn attr<'a>(xml: &'a str, from: usize, attr: &str) -> Option<&'a str> {
    let rest = &xml[from..];
    let i = rest.find(&format!("{attr}="))? + attr.len() + 1;
    let quote = rest[i..].chars().next()?;
    let body = &rest[i + 1..];
    Some(&body[..body.find(quote)?])
}

fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

impl VirtHost {
    pub fn connect(uri: &str) -> Result<VirtHost> {
        // libvirt prints every error to stderr unless its callback is cleared; lab reports errors itself.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(wrap("connect to", uri))?;
        Ok(VirtHost {
            conn,
            uri: uri.to_string(),
        })
    }

    fn domain(&self, name: &str) -> Result<Domain> {
        self.conn
            .lookup_domain_by_name(name)
            .map_err(wrap("find domain", name))
    }

    fn network(&self, name: &str) -> Result<Network> {
        self.conn
            .lookup_network_by_name(name)
            .map_err(wrap("find network", name))
    }

    fn pool(&self, name: &str) -> Result<StoragePool> {
        self.conn
            .lookup_storage_pool_by_name(name)
            .map_err(wrap("find pool", name))
    }

    /// A volume by name. Files libvirt did not make (console logs, memory files) appear after a refresh.
    fn vol(&self, pool: &str, name: &str) -> Result<StorageVol> {
        let p = self.pool(pool)?;
        if let Ok(v) = p.lookup_storage_vol_by_name(name) {
            return Ok(v);
        }
        refresh(&p, pool)?;
        p.lookup_storage_vol_by_name(name)
            .map_err(wrap("find volume", name))
    }
}

/// Refreshes a pool's volume list. libvirt refuses while an upload into the pool runs, so it waits (bounded).
fn refresh(p: &StoragePool, name: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        match p.refresh(0) {
            Ok(_) => return Ok(()),
            Err(e) if e.message().contains("asynchronous jobs") && tries < 600 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => return Err(wrap("refresh pool", name)(e)),
        }
    }
}

impl Hypervisor for VirtHost {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn is_local(&self) -> bool {
        // `qemu:///system`, `qemu:///session`, `test:///default`: no host part means this machine.
        match self.uri.split_once("://") {
            Some((scheme, rest)) => !scheme.contains('+') && rest.starts_with('/'),
            None => true,
        }
    }

    fn kvm_available(&self, arch: &str) -> Result<bool> {
        let caps = self
            .conn
            .domain_capabilities(None, Some(arch), None, Some("kvm"), 0)
            .map(Some)
            .or_else(|e| match classify(&e) {
                ErrorKind::Unreachable | ErrorKind::PermissionDenied => {
                    Err(wrap("query", "domain capabilities")(e))
                }
                _ => Ok(None),
            })?;
        Ok(caps.is_some_and(|c| c.contains("<domain>kvm</domain>")))
    }

    fn networks(&self) -> Result<Vec<NetworkInfo>> {
        let nets = self
            .conn
            .list_all_networks(0)
            .map_err(wrap("list", "networks"))?;
        let mut out = Vec::new();
        for n in nets {
            let name = n.name().map_err(wrap("read", "network name"))?;
            let xml = n.xml_desc(0).map_err(wrap("read network", &name))?;
            let mut subnets = Vec::new();
            let mut at = 0;
            while let Some(i) = xml[at..].find("<ip ") {
                let start = at + i;
                let end = xml[start..].find('>').map_or(xml.len(), |e| start + e);
                let tag = &xml[start..end];
                if let Some(addr) = attr(tag, 0, "address").and_then(|a| a.parse().ok()) {
                    let prefix =
                        attr(tag, 0, "prefix")
                            .and_then(|p| p.parse().ok())
                            .or_else(|| {
                                attr(tag, 0, "netmask")
                                    .and_then(|m| m.parse::<std::net::Ipv4Addr>().ok())
                                    .map(|m| u32::from(m).count_ones() as u8)
                            });
                    if let Some(net) = prefix.and_then(|p| Ipv4Net::new(addr, p).ok()) {
                        subnets.push(net.trunc());
                    }
                }
                at = end;
            }
            out.push(NetworkInfo {
                active: n.is_active().unwrap_or(false),
                name,
                subnets,
            });
        }
        Ok(out)
    }

    fn ensure_network(&self, name: &str, xml: &str) -> Result<()> {
        let net = match optional(self.network(name))? {
            Some(n) => n,
            None => self
                .conn
                .define_network_xml(xml)
                .map_err(wrap("define network", name))?,
        };
        if !net.is_active().map_err(wrap("query network", name))? {
            net.create().map_err(wrap("start network", name))?;
        }
        Ok(())
    }

    fn remove_network(&self, name: &str) -> Result<bool> {
        let Some(net) = optional(self.network(name))? else {
            return Ok(false);
        };
        if net.is_active().unwrap_or(false) {
            net.destroy().map_err(wrap("stop network", name))?;
        }
        if net.is_persistent().unwrap_or(true) {
            net.undefine().map_err(wrap("undefine network", name))?;
        }
        Ok(true)
    }

    fn ensure_pool(&self, name: &str, xml: &str) -> Result<String> {
        let pool = match optional(self.pool(name))? {
            Some(p) => p,
            None => {
                let p = self
                    .conn
                    .define_storage_pool_xml(xml, 0)
                    .map_err(wrap("define pool", name))?;
                p.build(0).map_err(wrap("build pool", name))?;
                p
            }
        };
        if !pool.is_active().map_err(wrap("query pool", name))? {
            pool.create(0).map_err(wrap("start pool", name))?;
        }
        let xml = pool.xml_desc(0).map_err(wrap("read pool", name))?;
        Ok(xml_text(&xml, "path").unwrap_or_default().to_string())
    }

    fn pool_path(&self, name: &str) -> Result<Option<String>> {
        let Some(pool) = optional(self.pool(name))? else {
            return Ok(None);
        };
        let xml = pool.xml_desc(0).map_err(wrap("read pool", name))?;
        Ok(xml_text(&xml, "path").map(str::to_string))
    }

    fn pool_names(&self) -> Result<Vec<String>> {
        let pools = self
            .conn
            .list_all_storage_pools(0)
            .map_err(wrap("list", "pools"))?;
        pools
            .iter()
            .map(|p| p.name().map_err(wrap("read", "pool name")))
            .collect()
    }

    fn remove_pool(&self, name: &str) -> Result<bool> {
        let Some(pool) = optional(self.pool(name))? else {
            return Ok(false);
        };
        if !pool.is_active().unwrap_or(false) {
            pool.create(0).map_err(wrap("start pool", name))?;
        }
        refresh(&pool, name)?;
        for v in pool
            .list_all_volumes(0)
            .map_err(wrap("list volumes of", name))?
        {
            let vname = v.name().unwrap_or_default();
            v.delete(0).map_err(wrap("delete volume", &vname))?;
        }
        pool.destroy().map_err(wrap("stop pool", name))?;
        pool.delete(0)
            .map_err(wrap("delete folder of pool", name))?;
        pool.undefine().map_err(wrap("undefine pool", name))?;
        Ok(true)
    }

    fn volumes(&self, pool: &str) -> Result<Vec<VolumeInfo>> {
        let p = self.pool(pool)?;
        refresh(&p, pool)?;
        let mut out = Vec::new();
        for v in p
            .list_all_volumes(0)
            .map_err(wrap("list volumes of", pool))?
        {
            let name = v.name().map_err(wrap("read", "volume name"))?;
            let info = v.info().map_err(wrap("read volume", &name))?;
            out.push(VolumeInfo {
                path: v.path().map_err(wrap("read volume", &name))?,
                name,
                allocation: info.allocation,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn create_volume(&self, pool: &str, xml: &str) -> Result<String> {
        let p = self.pool(pool)?;
        let v = StorageVol::create_xml(&p, xml, 0).map_err(wrap("create volume in", pool))?;
        v.path().map_err(wrap("read volume path in", pool))
    }

    fn upload_volume(
        &self,
        pool: &str,
        name: &str,
        data: &mut dyn Read,
        len: u64,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let v = self.vol(pool, name)?;
        let stream = Stream::new(&self.conn, 0).map_err(wrap("open stream for", name))?;
        v.upload(&stream, 0, len, 0)
            .map_err(wrap("upload to", name))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        loop {
            let n = data.read(&mut buf).map_err(|e| Error {
                kind: ErrorKind::Other,
                op: "read data for",
                object: name.to_string(),
                message: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            let mut off = 0;
            while off < n {
                let w = stream.send(&buf[off..n]).map_err(wrap("upload to", name))?;
                off += w as usize;
            }
            sent += n as u64;
            progress(sent);
        }
        stream.finish().map_err(wrap("finish upload to", name))
    }

    fn read_volume_tail(&self, pool: &str, name: &str, max: u64) -> Result<Vec<u8>> {
        let v = self.vol(pool, name)?;
        let size = v.info().map_err(wrap("read volume", name))?.capacity;
        let offset = size.saturating_sub(max);
        let stream = Stream::new(&self.conn, 0).map_err(wrap("open stream for", name))?;
        v.download(&stream, offset, size - offset, 0)
            .map_err(wrap("download", name))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = stream.recv(&mut buf).map_err(wrap("download", name))?;
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        stream.finish().map_err(wrap("finish download of", name))?;
        Ok(out)
    }

    fn delete_volume(&self, pool: &str, name: &str) -> Result<bool> {
        match optional(self.vol(pool, name))? {
            None => Ok(false),
            Some(v) => v
                .delete(0)
                .map(|_| true)
                .map_err(wrap("delete volume", name)),
        }
    }

    fn domains(&self, prefix: &str) -> Result<Vec<String>> {
        let doms = self
            .conn
            .list_all_domains(0)
            .map_err(wrap("list", "domains"))?;
        let mut names: Vec<String> = doms
            .iter()
            .filter_map(|d| d.name().ok())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    fn domain_state(&self, name: &str) -> Result<Option<DomainState>> {
        use virt::domain::DomainState as S;
        use virt::enumutil::Enum;
        let Some(d) = optional(self.domain(name))? else {
            return Ok(None);
        };
        let (state, _) = d.state().map_err(wrap("query domain", name))?;
        Ok(Some(match state {
            Enum::Known(S::Running | S::Blocked) => DomainState::Running,
            Enum::Known(S::Paused | S::PMSuspended) => DomainState::Paused,
            Enum::Known(S::Shutoff | S::Shutdown) => DomainState::Shutoff,
            Enum::Known(S::Crashed) => DomainState::Crashed,
            _ => DomainState::Other,
        }))
    }

    fn domain_xml(&self, name: &str) -> Result<String> {
        self.domain(name)?
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(wrap("read domain", name))
    }

    fn define_domain(&self, xml: &str) -> Result<()> {
        let name = xml_text(xml, "name").unwrap_or("?");
        self.conn
            .define_domain_xml(xml)
            .map(|_| ())
            .map_err(wrap("define domain", name))
    }

    fn start_domain(&self, name: &str) -> Result<()> {
        self.domain(name)?
            .create()
            .map(|_| ())
            .map_err(wrap("start domain", name))
    }

    fn stop_domain(&self, name: &str) -> Result<()> {
        let d = self.domain(name)?;
        if d.is_active().map_err(wrap("query domain", name))? {
            d.destroy().map_err(wrap("stop domain", name))?;
        }
        Ok(())
    }

    fn remove_domain(&self, name: &str) -> Result<bool> {
        let Some(d) = optional(self.domain(name))? else {
            return Ok(false);
        };
        if d.is_active().unwrap_or(false) {
            d.destroy().map_err(wrap("stop domain", name))?;
        }
        // Everything libvirt may keep beside a domain goes too; drivers that know fewer flags get fewer.
        let all = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
        let mut last = None;
        for flags in [all, sys::VIR_DOMAIN_UNDEFINE_NVRAM, 0] {
            match d.undefine_flags(flags) {
                Ok(_) => return Ok(true),
                Err(e) if e.message().contains("unsupported flags") => last = Some(e),
                Err(e) => return Err(wrap("undefine domain", name)(e)),
            }
        }
        Err(wrap("undefine domain", name)(last.expect("tried")))
    }

    fn suspend_domain(&self, name: &str) -> Result<()> {
        self.domain(name)?
            .suspend()
            .map(|_| ())
            .map_err(wrap("pause domain", name))
    }

    fn resume_domain(&self, name: &str) -> Result<()> {
        self.domain(name)?
            .resume()
            .map(|_| ())
            .map_err(wrap("resume domain", name))
    }

    fn external_snapshot(&self, name: &str, snapshot_xml: &str, disk_only: bool) -> Result<()> {
        let mut flags =
            sys::VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA | sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
        if disk_only {
            flags |= sys::VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY;
        }
        self.domain(name)?
            .create_snapshot_xml(snapshot_xml, flags)
            .map(|_| ())
            .map_err(wrap("snapshot domain", name))
    }

    fn agent(&self, name: &str, command: &str, timeout_secs: i32) -> Result<String> {
        self.domain(name)?
            .qemu_agent_command(command, timeout_secs, 0)
            .map_err(wrap("ask the guest agent of", name))
    }

    fn restore_memory(&self, memory_file: &str, xml: &str, paused: bool) -> Result<()> {
        let flags = if paused {
            sys::VIR_DOMAIN_SAVE_PAUSED
        } else {
            sys::VIR_DOMAIN_SAVE_RUNNING
        };
        self.conn
            .restore_domain_flags(memory_file, Some(xml), flags)
            .map_err(wrap("restore memory of", memory_file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_attributes() {
        let x = "<ip address='10.0.0.1' netmask=\"255.255.255.0\">";
        assert_eq!(attr(x, 0, "address"), Some("10.0.0.1"));
        assert_eq!(attr(x, 0, "netmask"), Some("255.255.255.0"));
        assert_eq!(
            xml_text("<pool><target><path>/a/b</path></target></pool>", "path"),
            Some("/a/b")
        );
    }
}
