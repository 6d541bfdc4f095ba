//! Every name, MAC address and UUID the lab gives to libvirt, derived deterministically from the lab and machine
//! names, so that `status` and `destroy` find everything again without any record.

use sha2::{Digest, Sha256};

/// Prefix of every libvirt object a lab owns.
pub const PREFIX: &str = "lab-";

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

pub fn domain(lab: &str, machine: &str) -> String {
    format!("{PREFIX}{lab}-{machine}")
}

pub fn network(lab: &str) -> String {
    format!("{PREFIX}{lab}")
}

pub fn pool(lab: &str) -> String {
    format!("{PREFIX}{lab}")
}

/// Linux bridge names are at most 15 bytes: `lab` and 8 hex digits of the lab name's hash.
pub fn bridge(lab: &str) -> String {
    format!("lab{}", &hex::encode(digest(&["bridge", lab]))[..8])
}

/// The DNS domain of the lab's network.
pub fn dns_domain(lab: &str) -> String {
    format!("{lab}.lab")
}

/// A locally administered MAC in QEMU's 52:54:00 range.
pub fn mac(lab: &str, machine: &str) -> String {
    let d = digest(&["mac", lab, machine]);
    format!("52:54:00:{:02x}:{:02x}:{:02x}", d[0], d[1], d[2])
}

pub fn bridge_mac(lab: &str) -> String {
    let d = digest(&["bridge-mac", lab]);
    format!("52:54:00:{:02x}:{:02x}:{:02x}", d[0], d[1], d[2])
}

pub fn uuid(kind: &str, lab: &str, machine: &str) -> String {
    let d = digest(&["uuid", kind, lab, machine]);
    uuid::Builder::from_sha1_bytes(d[..16].try_into().expect("16 bytes"))
        .into_uuid()
        .to_string()
}

/// Volume names inside the lab's pool.
pub mod vol {
    /// The base image, named by its content.
    pub fn image(sha256: &str, format: &str) -> String {
        format!("image-{}.{format}", &sha256[..16])
    }
    pub fn seed(machine: &str) -> String {
        format!("{machine}.seed.img")
    }
    pub fn console_log(machine: &str) -> String {
        format!("{machine}.console.log")
    }
    /// The memory state saved with the disk layer `active(machine, generation)`.
    pub fn memory(machine: &str, generation: u64) -> String {
        format!("{machine}.mem-{generation}")
    }
    /// The disk a machine runs on; `generation` changes whenever a checkpoint freezes the previous one.
    pub fn active(machine: &str, generation: u64) -> String {
        format!("{machine}.active-{generation}.qcow2")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_short() {
        assert_eq!(domain("k8s", "worker-1"), "lab-k8s-worker-1");
        assert_eq!(bridge("k8s-hard-way").len(), 11);
        assert_eq!(bridge("a"), bridge("a"));
        assert_ne!(mac("a", "m1"), mac("a", "m2"));
        assert!(mac("a", "m1").starts_with("52:54:00:"));
        assert_eq!(uuid("domain", "a", "m").len(), 36);
    }
}
