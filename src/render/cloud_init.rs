//! The NoCloud documents (user-data, meta-data, network-config) for one machine, rendered from the templates in
//! `cloud-init/`, and packed into a VFAT image labelled CIDATA that the guest reads as its seed.

use super::names;
use crate::model::{Lab, Machine, NetworkMode};
use minijinja::{context, Environment};
use std::io::{Cursor, Write};

const USER_DATA: &str = include_str!("../../cloud-init/user-data.yaml.j2");
const META_DATA: &str = include_str!("../../cloud-init/meta-data.yaml.j2");
const NETWORK_CONFIG: &str = include_str!("../../cloud-init/network-config.yaml.j2");

/// The keys a machine's seed carries: the lab's login key and the machine's own SSH host key.
#[derive(Debug, Clone)]
pub struct SeedKeys {
    /// `ssh-ed25519 AAAA… comment`
    pub authorized_key: String,
    pub host_key_private: String,
    pub host_key_public: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documents {
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.add_template("user-data", USER_DATA)
        .expect("template parses");
    env.add_template("meta-data", META_DATA)
        .expect("template parses");
    env.add_template("network-config", NETWORK_CONFIG)
        .expect("template parses");
    env
}

/// `/etc/hosts` for every machine: all machines of the lab by name, so they resolve each other without DNS.
pub fn hosts_file(lab: &Lab) -> String {
    let mut s = String::from(
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n\n# lab machines\n",
    );
    for m in &lab.machines {
        s.push_str(&format!(
            "{} {}.{} {}\n",
            m.ip,
            m.name,
            names::dns_domain(&lab.name),
            m.name
        ));
    }
    s
}

pub fn documents(lab: &Lab, m: &Machine, keys: &SeedKeys) -> Documents {
    let env = env();
    let render = |name: &str, ctx| {
        env.get_template(name)
            .and_then(|t| t.render(ctx))
            .expect("templates render")
    };
    let user_data = render(
        "user-data",
        context! {
            lab => lab.name,
            hostname => m.name,
            user => m.user,
            authorized_key => keys.authorized_key.trim(),
            host_key_private => keys.host_key_private,
            host_key_public => keys.host_key_public.trim(),
            hosts => hosts_file(lab),
        },
    );
    let meta_data = render(
        "meta-data",
        context! { instance_id => names::domain(&lab.name, &m.name), hostname => m.name },
    );
    let gateway = match lab.network.mode {
        NetworkMode::Nat => Some(lab.network.gateway.to_string()),
        NetworkMode::Isolated => None,
    };
    let network_config = render(
        "network-config",
        context! {
            mac => names::mac(&lab.name, &m.name),
            address => format!("{}/{}", m.ip, lab.network.subnet.prefix_len()),
            gateway => gateway,
            nameserver => lab.network.gateway.to_string(),
            domain => names::dns_domain(&lab.name),
        },
    );
    Documents {
        user_data,
        meta_data,
        network_config,
    }
}

/// Size of the seed image: ample for the three documents, small enough to upload in an instant.
const SEED_BYTES: usize = 2 << 20;

/// Packs the documents into a VFAT image labelled CIDATA (cloud-init's NoCloud seed).
pub fn seed_image(docs: &Documents) -> std::io::Result<Vec<u8>> {
    let mut disk = Cursor::new(vec![0u8; SEED_BYTES]);
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new().volume_label(*b"CIDATA     "),
    )?;
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        for (name, text) in [
            ("user-data", &docs.user_data),
            ("meta-data", &docs.meta_data),
            ("network-config", &docs.network_config),
        ] {
            let mut f = fs.root_dir().create_file(name)?;
            f.truncate()?;
            f.write_all(text.as_bytes())?;
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}
