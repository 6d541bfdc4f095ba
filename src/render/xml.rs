//! libvirt XML for the lab's network, pool, volumes and domains. Pure: the same inputs give the same text.

use super::names;
use crate::model::{Lab, Machine, NetworkMode};

/// The XML namespace of the metadata stamped into every domain.
pub const METADATA_NS: &str = "https://lab.invalid/xmlns/lab/1";

/// How guests run: hardware virtualization, or QEMU's software emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG (emulation)",
        })
    }
}

/// The hardware a guest sees, as far as a saved memory state depends on it: a memory state loads only into the
/// same machine type, CPU model and devices, under the same accelerator. Checkpoints with memory record it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hardware {
    /// libvirt's machine type: `q35` for new machines, the versioned type libvirt made of it (`pc-q35-7.2`) once
    /// read back from a defined machine.
    pub machine: String,
    /// A named CPU model, which a memory state can move with to any host that offers it. None: QEMU's default
    /// under emulation, the host's own CPU under KVM (the machines of older labs).
    pub cpu: Option<String>,
    /// A virtio balloon that hands the guest's free pages back to the host (smaller memory states).
    pub balloon: bool,
    pub accel: Accel,
}

impl Hardware {
    /// What new machines get: a portable named CPU model (not the host's own) and the free-page balloon.
    pub fn new(accel: Accel) -> Hardware {
        Hardware {
            machine: "q35".into(),
            cpu: Some(
                match accel {
                    // x86-64 with SSE4.2 and POPCNT: every x86 host of the last fifteen years offers it.
                    Accel::Kvm => "Nehalem",
                    Accel::Tcg => "qemu64",
                }
                .into(),
            ),
            balloon: true,
            accel,
        }
    }

    /// The machines of labs made before checkpoints recorded their hardware.
    pub fn legacy(accel: Accel) -> Hardware {
        Hardware {
            machine: "q35".into(),
            cpu: None,
            balloon: false,
            accel,
        }
    }
}

impl std::fmt::Display for Hardware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "machine type {}, CPU {}, {}",
            self.machine,
            self.cpu.as_deref().unwrap_or(match self.accel {
                Accel::Kvm => "host-passthrough",
                Accel::Tcg => "default",
            }),
            self.accel
        )
    }
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

pub fn network(lab: &Lab) -> String {
    let n = &lab.network;
    let forward = match n.mode {
        NetworkMode::Nat => "  <forward mode='nat'/>\n",
        NetworkMode::Isolated => "",
    };
    let mut hosts = String::new();
    for m in &lab.machines {
        hosts.push_str(&format!(
            "    <host ip='{}'>\n      <hostname>{}</hostname>\n    </host>\n",
            m.ip, m.name
        ));
    }
    // STP off: a lab network is one bridge with no loops, and with STP on the kernel holds every new port (a
    // machine just started or restored) in listening and learning for twice its 2 s minimum forward delay.
    format!(
        "<network>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
{forward}  <bridge name='{bridge}' stp='off' delay='0'/>
  <mac address='{mac}'/>
  <domain name='{domain}' localOnly='yes'/>
  <dns>
{hosts}  </dns>
  <ip address='{gw}' prefix='{prefix}'/>
</network>
",
        name = names::network(&lab.name),
        uuid = names::uuid("network", &lab.name, ""),
        bridge = names::bridge(&lab.name),
        mac = names::bridge_mac(&lab.name),
        domain = names::dns_domain(&lab.name),
        gw = n.gateway,
        prefix = n.subnet.prefix_len(),
    )
}

pub fn pool(lab: &Lab, path: &str) -> String {
    format!(
        "<pool type='dir'>
  <name>{}</name>
  <uuid>{}</uuid>
  <target>
    <path>{}</path>
  </target>
</pool>
",
        names::pool(&lab.name),
        names::uuid("pool", &lab.name, ""),
        escape(path)
    )
}

/// A volume whose bytes are uploaded afterwards (images, seeds).
pub fn volume(name: &str, capacity: u64, format: &str) -> String {
    format!(
        "<volume>
  <name>{}</name>
  <capacity unit='bytes'>{capacity}</capacity>
  <target>
    <format type='{format}'/>
  </target>
</volume>
",
        escape(name)
    )
}

/// A copy-on-write qcow2 overlay on `backing` (a path in the same pool).
pub fn overlay(name: &str, capacity: u64, backing: &str, backing_format: &str) -> String {
    format!(
        "<volume>
  <name>{}</name>
  <capacity unit='bytes'>{capacity}</capacity>
  <target>
    <format type='qcow2'/>
  </target>
  <backingStore>
    <path>{}</path>
    <format type='{backing_format}'/>
  </backingStore>
</volume>
",
        escape(name),
        escape(backing)
    )
}

/// Paths of a machine's files on the hypervisor host.
#[derive(Debug, Clone)]
pub struct MachinePaths {
    pub disk: String,
    pub seed: String,
    pub console_log: String,
}

pub fn domain(lab: &Lab, m: &Machine, hw: &Hardware, paths: &MachinePaths) -> String {
    let dtype = match hw.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    let cpu = match (&hw.cpu, hw.accel) {
        (Some(model), _) => format!(
            "  <cpu mode='custom' match='exact' check='partial'>\n    <model fallback='forbid'>{}</model>\n  </cpu>\n",
            escape(model)
        ),
        (None, Accel::Kvm) => "  <cpu mode='host-passthrough' check='none'/>\n".to_string(),
        (None, Accel::Tcg) => String::new(),
    };
    let balloon = if hw.balloon {
        "<memballoon model='virtio' freePageReporting='on'/>"
    } else {
        "<memballoon model='none'/>"
    };
    format!(
        "<domain type='{dtype}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <metadata>
    <lab:machine xmlns:lab='{ns}' lab='{lab}' name='{machine}'/>
  </metadata>
  <memory unit='KiB'>{mem}</memory>
  <vcpu placement='static'>{cpus}</vcpu>
  <os>
    <type arch='{arch}' machine='{machine_type}'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
{cpu}  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{seed}'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <mac address='{mac}'/>
      <source network='{network}'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file='{log}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    {balloon}
  </devices>
</domain>
",
        name = names::domain(&lab.name, &m.name),
        uuid = names::uuid("domain", &lab.name, &m.name),
        ns = METADATA_NS,
        lab = lab.name,
        machine = m.name,
        mem = m.memory / 1024,
        cpus = m.cpus,
        arch = lab.arch.qemu(),
        disk = escape(&paths.disk),
        seed = escape(&paths.seed),
        mac = names::mac(&lab.name, &m.name),
        network = names::network(&lab.name),
        log = escape(&paths.console_log),
        machine_type = escape(&hw.machine),
    )
}

/// External snapshot of every writable disk: memory to `memory_file` (or none), the running disk frozen and a new
/// overlay at `new_disk` becoming the active one. The seed disk is read-only and left out.
pub fn external_snapshot(name: &str, memory_file: Option<&str>, new_disk: &str) -> String {
    let memory = match memory_file {
        Some(f) => format!("<memory snapshot='external' file='{}'/>", escape(f)),
        None => "<memory snapshot='no'/>".to_string(),
    };
    format!(
        "<domainsnapshot>
  <name>{}</name>
  {memory}
  <disks>
    <disk name='vda' snapshot='external' type='file'>
      <driver type='qcow2'/>
      <source file='{}'/>
    </disk>
    <disk name='vdb' snapshot='no'/>
  </disks>
</domainsnapshot>
",
        escape(name),
        escape(new_disk)
    )
}
