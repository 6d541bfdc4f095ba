//! The one thing a kit changes in a qcow2 layer: its backing file name. On the instructor's host a layer names its
//! base by absolute path (`/var/lib/libvirt/images/lab-k8s/worker-1.active-3.qcow2`); in a kit it names it by file
//! name alone, which QEMU and libvirt resolve in the layer's own folder, so the chain works in any pool on any host.
//! The name lives in the image's first cluster; a shorter name is written in place, as `qemu-img rebase -u` does.

/// qcow2's magic, `QFI\xfb`.
const MAGIC: [u8; 4] = [b'Q', b'F', b'I', 0xfb];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Qcow2Error {
    #[error("not a qcow2 image")]
    NotQcow2,
    #[error("the qcow2 header is cut short")]
    Short,
    #[error("the new backing file name is longer than the old one")]
    Longer,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, Qcow2Error> {
    Ok(u32::from_be_bytes(
        b.get(at..at + 4)
            .ok_or(Qcow2Error::Short)?
            .try_into()
            .expect("4 bytes"),
    ))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, Qcow2Error> {
    Ok(u64::from_be_bytes(
        b.get(at..at + 8)
            .ok_or(Qcow2Error::Short)?
            .try_into()
            .expect("8 bytes"),
    ))
}

/// The backing file name in a qcow2 image's first bytes (None: no backing file).
pub fn backing(head: &[u8]) -> Result<Option<String>, Qcow2Error> {
    if head.get(..4) != Some(&MAGIC[..]) {
        return Err(Qcow2Error::NotQcow2);
    }
    let (offset, size) = (u64_at(head, 8)? as usize, u32_at(head, 16)? as usize);
    if offset == 0 || size == 0 {
        return Ok(None);
    }
    let name = head.get(offset..offset + size).ok_or(Qcow2Error::Short)?;
    Ok(Some(String::from_utf8_lossy(name).into_owned()))
}

/// Rewrites the backing file name in place to `name`, which must not be longer than the current one (the bytes
/// it frees stay unused, as after `qemu-img rebase -u`). The backing format header extension is left as it is.
pub fn set_backing(head: &mut [u8], name: &str) -> Result<(), Qcow2Error> {
    backing(head)?;
    let (offset, size) = (u64_at(head, 8)? as usize, u32_at(head, 16)? as usize);
    if name.len() > size {
        return Err(Qcow2Error::Longer);
    }
    head[offset..offset + name.len()].copy_from_slice(name.as_bytes());
    head[offset + name.len()..offset + size].fill(0);
    head[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A real overlay made by qemu-img, its backing named by absolute path.
    fn overlay(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let base = dir.join("base.qcow2");
        let top = dir.join("top.qcow2");
        let ok = |args: &[&str]| {
            let out = Command::new("qemu-img")
                .args(args)
                .output()
                .expect("qemu-img (qemu-utils)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ok(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "16M"]);
        ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            top.to_str().unwrap(),
        ]);
        (base, top)
    }

    #[test]
    fn a_relative_backing_name_is_what_qemu_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (base, top) = overlay(dir.path());
        let mut bytes = std::fs::read(&top).unwrap();
        assert_eq!(backing(&bytes).unwrap().as_deref(), base.to_str());
        set_backing(&mut bytes, "base.qcow2").unwrap();
        std::fs::write(&top, &bytes).unwrap();
        let info = Command::new("qemu-img")
            .args(["info", "--output=json", top.to_str().unwrap()])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(v["backing-filename"], "base.qcow2");
        assert_eq!(
            v["full-backing-filename"],
            base.to_str().unwrap(),
            "resolved in the layer's folder"
        );
        let check = Command::new("qemu-img")
            .args(["check", "-q", top.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(check.success());
        assert_eq!(
            set_backing(&mut bytes, &"x".repeat(500)),
            Err(Qcow2Error::Longer)
        );
        assert_eq!(backing(b"not an image at all"), Err(Qcow2Error::NotQcow2));
    }
}
