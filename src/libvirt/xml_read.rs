//! Reading the XML libvirt prints (domains, networks, pools, volumes, domain capabilities) with a real parser.
//! Pure functions over text: libvirt may quote with `'` or `"`, re-prefix namespaces and add elements, so nothing
//! here searches for substrings. Every function answers `None` (or nothing) for XML it cannot parse.

use crate::render::xml::METADATA_NS;
use ipnet::Ipv4Net;
use roxmltree::{Document, Node};
use std::net::Ipv4Addr;

/// What lab reads back from a domain's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    /// The `lab` attribute of lab's stamp (`<machine>` in [`METADATA_NS`] inside `<metadata>`).
    pub lab: Option<String>,
    /// The stamp's `name` attribute: the machine's name in the lab.
    pub machine: Option<String>,
    /// The source file of the disk whose target is `vda`.
    pub disk: Option<String>,
    /// `<domain type='kvm'>` (hardware virtualization) rather than `qemu` (emulation).
    pub kvm: bool,
    /// The libvirt networks its interfaces are attached to (`<interface type='network'><source network=…/>`).
    pub networks: Vec<String>,
}

/// An element in no namespace (libvirt's own elements) with this name.
fn is(n: &Node, name: &str) -> bool {
    n.is_element() && n.tag_name().namespace().is_none() && n.tag_name().name() == name
}

/// The first child element in no namespace called `name`.
fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| is(c, name))
}

/// The trimmed text of an element, None when empty.
fn text(n: Node) -> Option<String> {
    n.text()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// The root element, if the text is well-formed XML whose root is `root`.
fn parse<'i>(xml: &'i str, root: &str) -> Option<Document<'i>> {
    let doc = Document::parse(xml).ok()?;
    is(&doc.root_element(), root).then_some(doc)
}

/// The attribute `name` of lab's stamp, unprefixed as lab writes it or in lab's namespace.
fn stamp_attr(n: Node, name: &str) -> Option<String> {
    n.attribute(name)
        .or_else(|| n.attribute((METADATA_NS, name)))
        .map(str::to_string)
}

/// The hardware a domain's guest sees, as a memory state depends on it (see `render::xml::Hardware`).
pub fn hardware(xml: &str) -> Option<crate::render::xml::Hardware> {
    use crate::render::xml::{Accel, Hardware};
    let doc = parse(xml, "domain")?;
    let root = doc.root_element();
    let machine = child(root, "os")
        .and_then(|os| child(os, "type"))
        .and_then(|t| t.attribute("machine"))?
        .to_string();
    let cpu = child(root, "cpu")
        .filter(|c| c.attribute("mode").is_none_or(|m| m == "custom"))
        .and_then(|c| child(c, "model"))
        .and_then(text);
    let balloon = child(root, "devices")
        .and_then(|d| child(d, "memballoon"))
        .is_some_and(|b| b.attribute("model") == Some("virtio"));
    Some(Hardware {
        machine,
        cpu,
        balloon,
        accel: if root.attribute("type") == Some("kvm") {
            Accel::Kvm
        } else {
            Accel::Tcg
        },
    })
}

/// The CPU models domain capabilities call usable in custom mode (named models this host runs).
pub fn usable_cpu_models(domain_capabilities: &str) -> Vec<String> {
    let Some(doc) = parse(domain_capabilities, "domainCapabilities") else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|m| is(m, "mode") && m.attribute("name") == Some("custom"))
        .flat_map(|mode| {
            mode.children()
                .filter(|m| is(m, "model") && m.attribute("usable") == Some("yes"))
                .filter_map(text)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The machine types a host's QEMU offers for an architecture (`virsh capabilities`: every `<machine>` of the
/// `<guest>` for that arch, versioned names and their aliases).
pub fn machine_types(capabilities: &str, arch: &str) -> Vec<String> {
    let Some(doc) = parse(capabilities, "capabilities") else {
        return Vec::new();
    };
    let mut out: Vec<String> = doc
        .root_element()
        .children()
        .filter(|g| is(g, "guest"))
        .filter_map(|g| child(g, "arch"))
        .filter(|a| a.attribute("name") == Some(arch))
        .flat_map(|a| {
            a.descendants()
                .filter(|m| is(m, "machine"))
                .flat_map(|m| {
                    let name = text(m);
                    let canonical = m.attribute("canonical").map(str::to_string);
                    name.into_iter().chain(canonical)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Name, lab stamp, main disk and virtualization type of a domain's XML (`virsh dumpxml`).
pub fn domain_info(xml: &str) -> Option<DomainInfo> {
    let doc = parse(xml, "domain")?;
    let root = doc.root_element();
    let name = child(root, "name").and_then(text)?;
    let stamp = child(root, "metadata").and_then(|m| {
        m.children()
            .find(|c| c.is_element() && c.has_tag_name((METADATA_NS, "machine")))
    });
    let disk = child(root, "devices").and_then(|devs| {
        devs.children()
            .filter(|d| is(d, "disk"))
            .find(|d| child(*d, "target").and_then(|t| t.attribute("dev")) == Some("vda"))
            .and_then(|d| child(d, "source"))
            .and_then(|s| s.attribute("file"))
            .map(str::to_string)
    });
    let networks = child(root, "devices")
        .map(|devs| {
            devs.children()
                .filter(|d| is(d, "interface") && d.attribute("type") == Some("network"))
                .filter_map(|d| child(d, "source")?.attribute("network").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Some(DomainInfo {
        networks,
        name,
        lab: stamp.and_then(|s| stamp_attr(s, "lab")),
        machine: stamp.and_then(|s| stamp_attr(s, "name")),
        disk,
        kvm: root.attribute("type") == Some("kvm"),
    })
}

/// The IPv4 subnets of a network's XML: each `<ip>` with an address and a prefix or netmask (IPv6 ones skipped).
pub fn network_subnets(xml: &str) -> Vec<Ipv4Net> {
    let Some(doc) = parse(xml, "network") else {
        return Vec::new();
    };
    doc.root_element()
        .children()
        .filter(|n| is(n, "ip"))
        .filter(|n| matches!(n.attribute("family"), None | Some("ipv4")))
        .filter_map(|n| {
            let addr: Ipv4Addr = n.attribute("address")?.trim().parse().ok()?;
            let prefix = match n.attribute("prefix") {
                Some(p) => p.trim().parse().ok()?,
                None => {
                    let mask: Ipv4Addr = n.attribute("netmask")?.trim().parse().ok()?;
                    let bits = u32::from(mask);
                    // A netmask is ones then zeros; anything else is not a subnet.
                    if bits.leading_ones() + bits.trailing_zeros() != 32 {
                        return None;
                    }
                    bits.leading_ones() as u8
                }
            };
            Ipv4Net::new(addr, prefix).ok().map(|n| n.trunc())
        })
        .collect()
}

/// A storage pool's folder on its host (`<target><path>`).
pub fn pool_path(xml: &str) -> Option<String> {
    let doc = parse(xml, "pool")?;
    child(doc.root_element(), "target")
        .and_then(|t| child(t, "path"))
        .and_then(text)
}

/// The backing file of a storage volume (`<backingStore><path>`), e.g. a qcow2 overlay's base image.
pub fn volume_backing(xml: &str) -> Option<String> {
    let doc = parse(xml, "volume")?;
    child(doc.root_element(), "backingStore")
        .and_then(|b| child(b, "path"))
        .and_then(text)
}

/// The `<name>` of any libvirt object's XML (domain, network, pool, volume).
pub fn element_name(xml: &str) -> Option<String> {
    let doc = Document::parse(xml).ok()?;
    child(doc.root_element(), "name").and_then(text)
}

/// The virtualization type of domain capabilities (`virsh domcapabilities`): `kvm`, `qemu`, …
pub fn capabilities_domain_type(xml: &str) -> Option<String> {
    let doc = parse(xml, "domainCapabilities")?;
    child(doc.root_element(), "domain").and_then(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_cpu_models_of_custom_mode() {
        // Abridged from `virsh domcapabilities --virttype qemu`, libvirt 9.0.
        let caps = r#"<domainCapabilities><cpu>
  <mode name='host-model' supported='yes'><model fallback='forbid'>EPYC</model></mode>
  <mode name='custom' supported='yes'>
    <model usable='yes' vendor='unknown'>qemu64</model>
    <model usable='no' vendor='AMD'>phenom</model>
    <model usable='yes' vendor='Intel'>Nehalem</model>
  </mode>
</cpu></domainCapabilities>"#;
        assert_eq!(usable_cpu_models(caps), ["qemu64", "Nehalem"]);
        assert!(usable_cpu_models("<capabilities/>").is_empty());
    }

    /// `virsh -c qemu:///system dumpxml` of a lab machine, libvirt 9.0: double quotes in the stamp that lab wrote
    /// with single quotes, addresses and controllers added, a second disk and a CD-ROM.
    const DOMAIN_QEMU: &str = r#"<domain type='kvm' id='3'>
  <name>lab-demo-node1</name>
  <uuid>6f1c2a7e-2c4b-5e1a-9d7e-0a1b2c3d4e5f</uuid>
  <metadata>
    <lab:machine xmlns:lab="https://lab.invalid/xmlns/lab/1" lab="demo" name="node1"/>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/lab-demo/node1.seed.iso' index='3'/>
      <backingStore/>
      <target dev='sda' bus='sata'/>
      <readonly/>
      <alias name='sata0-0-0'/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/libvirt/images/lab-demo/node1.active-2.qcow2' index='2'/>
      <backingStore type='file' index='1'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/lab-demo/image-ab12.qcow2'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='lab-demo' portid='0c9a7a3e-0000-4000-8000-000000000001' bridge='labab12cd34'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <source bridge='br0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/3'/>
      <log file='/var/lib/libvirt/images/lab-demo/node1.console.log' append='on'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+64055</label>
    <imagelabel>+64055:+64055</imagelabel>
  </seclabel>
</domain>
"#;

    #[test]
    fn reads_the_hardware_a_memory_state_needs() {
        use crate::render::xml::{Accel, Hardware};
        let hw = hardware(DOMAIN_QEMU).unwrap();
        assert_eq!(hw.accel, Accel::Kvm);
        assert!(hw.machine.starts_with("pc-q35"), "{hw:?}");
        let x = "<domain type='qemu'><name>d</name><os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>\
                 <cpu mode='custom' match='exact' check='partial'><model fallback='forbid'>qemu64</model></cpu>\
                 <devices><memballoon model='virtio' freePageReporting='on'/></devices></domain>";
        assert_eq!(
            hardware(x).unwrap(),
            Hardware {
                machine: "pc-q35-7.2".into(),
                cpu: Some("qemu64".into()),
                balloon: true,
                accel: Accel::Tcg
            }
        );
        let caps = "<capabilities><host/><guest><os_type>hvm</os_type><arch name='x86_64'>\
                    <machine maxCpus='288'>pc-q35-7.2</machine><machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>\
                    <domain type='qemu'/><domain type='kvm'><machine>pc-q35-7.1</machine></domain></arch></guest>\
                    <guest><arch name='i686'><machine>pc-i440fx-7.2</machine></arch></guest></capabilities>";
        assert_eq!(
            machine_types(caps, "x86_64"),
            ["pc-q35-7.1", "pc-q35-7.2", "q35"]
        );
    }

    #[test]
    fn reads_a_domain_as_libvirt_prints_it() {
        let i = domain_info(DOMAIN_QEMU).unwrap();
        assert_eq!(
            i,
            DomainInfo {
                name: "lab-demo-node1".into(),
                lab: Some("demo".into()),
                machine: Some("node1".into()),
                disk: Some("/var/lib/libvirt/images/lab-demo/node1.active-2.qcow2".into()),
                kvm: true,
                networks: vec!["lab-demo".into()],
            }
        );
    }

    #[test]
    fn reads_the_stamp_under_any_prefix_and_quote() {
        let x = "<domain type=\"qemu\"><name> d </name><metadata>\
                 <other:x xmlns:other='urn:other' lab='not-this'/>\
                 <m:machine xmlns:m='https://lab.invalid/xmlns/lab/1' lab='it&apos;s' name=\"n\"/>\
                 </metadata></domain>";
        let i = domain_info(x).unwrap();
        assert_eq!(i.name, "d");
        assert_eq!(i.lab.as_deref(), Some("it's"));
        assert_eq!(i.machine.as_deref(), Some("n"));
        assert_eq!(i.disk, None);
        assert!(!i.kvm);
        // A default namespace works too.
        let x = "<domain type='qemu'><name>d</name><metadata>\
                 <machine xmlns='https://lab.invalid/xmlns/lab/1' lab='a' name='b'/></metadata></domain>";
        assert_eq!(domain_info(x).unwrap().lab.as_deref(), Some("a"));
    }

    #[test]
    fn a_domain_without_the_stamp_or_in_another_namespace_has_none() {
        let x = "<domain type='kvm'><name>d</name><metadata>\
                 <lab:machine xmlns:lab='https://lab.invalid/xmlns/lab/2' lab='demo' name='n'/>\
                 </metadata><devices><disk type='file' device='disk'><source file='/a'/>\
                 <target dev='vdb' bus='virtio'/></disk></devices></domain>";
        let i = domain_info(x).unwrap();
        assert_eq!((i.lab, i.machine, i.disk), (None, None, None));
        // An unstamped element called `machine` in no namespace is not the stamp either.
        let x =
            "<domain type='kvm'><name>d</name><metadata><machine lab='demo'/></metadata></domain>";
        assert_eq!(domain_info(x).unwrap().lab, None);
    }

    #[test]
    fn broken_or_other_xml_is_no_domain() {
        assert_eq!(domain_info("<domain><name>x</name>"), None);
        assert_eq!(domain_info("<network><name>x</name></network>"), None);
        assert_eq!(domain_info("<domain type='kvm'/>"), None);
        assert_eq!(domain_info(""), None);
    }

    /// `virsh net-dumpxml default` on Debian 12, plus an IPv6 range and a netmask written the old way.
    const NETWORK: &str = r#"<network connections='1'>
  <name>default</name>
  <uuid>f1d1e5c0-0d8b-4e1e-8e0b-6b4d6a0f5c11</uuid>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='virbr0' stp='on' delay='0'/>
  <mac address='52:54:00:3b:8e:11'/>
  <dns>
    <host ip='10.9.9.9'>
      <hostname>not-a-subnet</hostname>
    </host>
  </dns>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
    </dhcp>
  </ip>
  <ip family="ipv6" address="fd00:1::1" prefix="64"/>
  <ip family="ipv4" address="10.50.0.1" prefix="24">
  </ip>
  <route address='10.60.0.0' prefix='16' gateway='10.50.0.2'/>
</network>
"#;

    #[test]
    fn reads_ipv4_subnets_of_a_network() {
        assert_eq!(
            network_subnets(NETWORK),
            vec![
                "192.168.122.0/24".parse::<Ipv4Net>().unwrap(),
                "10.50.0.0/24".parse().unwrap()
            ]
        );
        assert_eq!(
            network_subnets("<network><ip address='10.1.2.3' netmask='255.0.255.0'/></network>"),
            vec![]
        );
        assert_eq!(
            network_subnets("<network><ip address='10.1.2.3'/></network>"),
            vec![]
        );
        assert_eq!(network_subnets("<network"), vec![]);
    }

    #[test]
    fn reads_pool_and_volume_paths() {
        // `virsh pool-dumpxml` of a dir pool, libvirt 9.0.
        let pool = r#"<pool type='dir'>
  <name>lab-demo</name>
  <uuid>33333333-1111-1111-1111-111111111111</uuid>
  <capacity unit='bytes'>270553174016</capacity>
  <allocation unit='bytes'>15110459392</allocation>
  <available unit='bytes'>255442714624</available>
  <source>
  </source>
  <target>
    <path>/var/lib/libvirt/images/lab-demo</path>
    <permissions>
      <mode>0755</mode>
      <owner>0</owner>
      <group>0</group>
    </permissions>
  </target>
</pool>
"#;
        assert_eq!(
            pool_path(pool).as_deref(),
            Some("/var/lib/libvirt/images/lab-demo")
        );
        assert_eq!(element_name(pool).as_deref(), Some("lab-demo"));
        // `virsh vol-dumpxml` of an overlay: the volume's own path comes first and is not the backing file.
        let overlay = r#"<volume type='file'>
  <name>o1.qcow2</name>
  <key>/tmp/probe-pool/o1.qcow2</key>
  <capacity unit='bytes'>1048576</capacity>
  <allocation unit='bytes'>200704</allocation>
  <physical unit='bytes'>196616</physical>
  <target>
    <path>/tmp/probe-pool/o1.qcow2</path>
    <format type='qcow2'/>
  </target>
  <backingStore>
    <path>/tmp/probe-pool/v1.qcow2</path>
    <format type='qcow2'/>
  </backingStore>
</volume>
"#;
        assert_eq!(
            volume_backing(overlay).as_deref(),
            Some("/tmp/probe-pool/v1.qcow2")
        );
        let base = overlay
            .replace("<backingStore>", "<!--")
            .replace("</backingStore>", "-->");
        assert_eq!(volume_backing(&base), None);
        assert_eq!(volume_backing(pool), None);
        assert_eq!(pool_path(overlay), None);
    }

    #[test]
    fn reads_names_for_messages() {
        assert_eq!(
            element_name("<domain type='kvm'>\n  <name>lab-a-b</name>\n</domain>").as_deref(),
            Some("lab-a-b")
        );
        assert_eq!(
            element_name(
                "<domain><metadata><x:name xmlns:x='urn:x'>no</x:name></metadata></domain>"
            ),
            None
        );
        assert_eq!(element_name("not xml"), None);
    }

    #[test]
    fn reads_the_type_of_domain_capabilities() {
        // The start of `virsh domcapabilities --virttype kvm`, libvirt 9.0.
        let caps = "<domainCapabilities>\n  <path>/usr/bin/qemu-system-x86_64</path>\n  <domain>kvm</domain>\n  \
                    <machine>pc-i440fx-7.2</machine>\n  <arch>x86_64</arch>\n  <vcpu max='255'/>\n  \
                    <os supported='yes'><enum name='firmware'><value>efi</value></enum></os>\n\
                    </domainCapabilities>\n";
        assert_eq!(capabilities_domain_type(caps).as_deref(), Some("kvm"));
        assert_eq!(
            capabilities_domain_type(&caps.replace(">kvm<", ">qemu<")).as_deref(),
            Some("qemu")
        );
        assert_eq!(
            capabilities_domain_type("<capabilities><domain>kvm</domain></capabilities>"),
            None
        );
    }
}
