//! Checks of the host before lab changes anything: acceleration, /dev/kvm permissions, subnet clashes.

use crate::libvirt::{self, Hypervisor};
use crate::model::Lab;
use crate::render::{names, Accel};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Libvirt(#[from] libvirt::Error),
    #[error("the lab's subnet {subnet} overlaps libvirt network `{network}` ({other})")]
    NetworkClash {
        subnet: Ipv4Net,
        network: String,
        other: Ipv4Net,
    },
    #[error("the lab's subnet {subnet} overlaps the host route to {route} on {device}")]
    RouteClash {
        subnet: Ipv4Net,
        route: Ipv4Net,
        device: String,
    },
    #[error("LAB_ACCEL=kvm, but libvirt at {uri} offers no KVM for {arch}")]
    NoKvm { uri: String, arch: String },
    #[error("LAB_ACCEL=`{0}` is not one of auto, kvm, tcg")]
    BadAccel(String),
}

impl HostError {
    pub fn hint(&self) -> Option<String> {
        match self {
            HostError::Libvirt(e) => e.hint(),
            HostError::NetworkClash { .. } | HostError::RouteClash { .. } => Some(
                "choose another [network] subnet in the lab file (`lab doctor` checks the host)".into(),
            ),
            HostError::NoKvm { .. } => Some(
                "check that /dev/kvm exists and is usable (`ls -l /dev/kvm`), or set LAB_ACCEL=tcg to emulate \
                 (`lab doctor` checks the host)"
                    .into(),
            ),
            HostError::BadAccel(_) => Some("set LAB_ACCEL to auto, kvm or tcg".into()),
        }
    }
}

/// A host problem worth a warning that does not stop the command.
pub fn kvm_permission_warning() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/dev/kvm").ok()?;
    if meta.mode() & 0o060 == 0o060 {
        return None;
    }
    Some(
        "/dev/kvm is not group read-writable, so libvirt re-probes QEMU on every call (slow); fix it with \
         `sudo chgrp kvm /dev/kvm && sudo chmod 0660 /dev/kvm`"
            .into(),
    )
}

/// Picks KVM where libvirt offers it, else TCG; `LAB_ACCEL` (`auto`, `kvm`, `tcg`) overrides.
/// Returns the choice and a warning to show, if any.
pub fn choose_accel(
    hv: &dyn Hypervisor,
    arch: &str,
    setting: &str,
) -> Result<(Accel, Option<String>), HostError> {
    match setting {
        "tcg" => Ok((Accel::Tcg, None)),
        "kvm" => {
            if hv.kvm_available(arch)? {
                Ok((Accel::Kvm, None))
            } else {
                Err(HostError::NoKvm {
                    uri: hv.uri().into(),
                    arch: arch.into(),
                })
            }
        }
        "auto" | "" => {
            if hv.kvm_available(arch)? {
                Ok((Accel::Kvm, None))
            } else {
                Ok((
                    Accel::Tcg,
                    Some("KVM is not available: machines run under software emulation (TCG), several times slower".into()),
                ))
            }
        }
        other => Err(HostError::BadAccel(other.into())),
    }
}

/// Fails if the lab's subnet overlaps another libvirt network, or (for a local hypervisor) a host route that is
/// not the lab's own bridge.
pub fn check_subnet(lab: &Lab, hv: &dyn Hypervisor) -> Result<(), HostError> {
    let subnet = lab.network.subnet;
    let own = names::network(&lab.name);
    for n in hv.networks()? {
        if n.name == own {
            continue;
        }
        if let Some(other) = n
            .subnets
            .iter()
            .find(|s| s.contains(&subnet.network()) || subnet.contains(&s.network()))
        {
            return Err(HostError::NetworkClash {
                subnet,
                network: n.name,
                other: *other,
            });
        }
    }
    if hv.is_local() {
        let bridge = names::bridge(&lab.name);
        let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        for (device, route) in parse_routes(&table) {
            if device == bridge || route.prefix_len() == 0 {
                continue;
            }
            if route.contains(&subnet.network()) || subnet.contains(&route.network()) {
                return Err(HostError::RouteClash {
                    subnet,
                    route,
                    device,
                });
            }
        }
    }
    Ok(())
}

/// (device, destination) of each IPv4 route in /proc/net/route.
fn parse_routes(table: &str) -> Vec<(String, Ipv4Net)> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let net = Ipv4Net::new(
                Ipv4Addr::from(u32::from_be(dest)),
                u32::from_be(mask).count_ones() as u8,
            )
            .ok()?;
            Some((f[0].to_string(), net))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_route() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r = parse_routes(t);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].1, "192.168.0.0/24".parse::<Ipv4Net>().unwrap());
    }
}
