//! cloud-init NoCloud seeds (`vm create --cloud-init FILE`): the user-data is
//! checked before anything is made, then written with a meta-data file onto a
//! small FAT volume labelled CIDATA, the standard seed cloud images read
//! (cloud-init's NoCloud datasource; our guest image reads the same volume).
//!
//! Crates: yaml-rust2 (a maintained pure-Rust YAML 1.2 parser; its errors carry
//! the line and column) and fatfs (formats and fills a FAT image in-process, so
//! creating a VM needs no mkfs.vfat, mtools or genisoimage on the host).

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use yaml_rust2::{Yaml, YamlLoader};

/// The volume label cloud-init's NoCloud looks for (it accepts either case;
/// FAT labels are conventionally upper case).
pub const SEED_LABEL: &[u8; 11] = b"CIDATA     ";
/// Larger user-data is almost certainly a mistake (EC2 takes 16 KiB), and it
/// travels in one control request.
const MAX_USER_DATA: usize = 1 << 20;

/// What kind of user-data a file holds; both are run by cloud-init and by our
/// guest image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDataKind {
    /// `#cloud-config`: YAML.
    CloudConfig,
    /// `#!`: a script run once at first boot.
    Script,
}

/// Reads and checks a user-data file; errors are one line naming the file (and
/// the line, for YAML errors).
pub fn load_user_data(path: &Path) -> Result<String> {
    let bytes = fs::read(path)
        .map_err(|e| anyhow!("cannot read cloud-init file {}: {e}", path.display()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))?;
    check_user_data(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(text)
}

/// Checks user-data as cloud-init would take it: `#cloud-config` YAML whose
/// document is a mapping, or a `#!` script.
pub fn check_user_data(text: &str) -> Result<UserDataKind> {
    if text.len() > MAX_USER_DATA {
        bail!(
            "{} bytes of user-data (at most {} MiB)",
            text.len(),
            MAX_USER_DATA >> 20
        );
    }
    let first = text.lines().next().unwrap_or("").trim_end();
    if first.starts_with("#!") {
        return Ok(UserDataKind::Script);
    }
    if first != "#cloud-config" {
        bail!(
            "line 1: user-data must start with '#cloud-config' (YAML) or '#!' (a script), not {:?}",
            first.chars().take(40).collect::<String>()
        );
    }
    let docs = YamlLoader::load_from_str(text).map_err(|e| {
        anyhow!(
            "line {}: not valid YAML: {} (column {})",
            e.marker().line(),
            e.info(),
            e.marker().col() + 1
        )
    })?;
    match docs.first() {
        None | Some(Yaml::Null) => {}
        Some(Yaml::Hash(keys)) => check_known_keys(keys)?,
        Some(other) => bail!(
            "the #cloud-config document must be a mapping (hostname:, runcmd:, ...), not {}",
            kind_of(other)
        ),
    }
    Ok(UserDataKind::CloudConfig)
}

/// The keys our guest image applies must have the shape cloud-init documents;
/// anything else is left to a real cloud-init (and our guest ignores it).
fn check_known_keys(keys: &yaml_rust2::yaml::Hash) -> Result<()> {
    let get = |k: &str| keys.get(&Yaml::String(k.into()));
    if let Some(h) = get("hostname")
        && h.as_str().is_none()
    {
        bail!("hostname: must be a string, not {}", kind_of(h));
    }
    for list in ["runcmd", "bootcmd", "ssh_authorized_keys"] {
        if let Some(v) = get(list)
            && v.as_vec().is_none()
        {
            bail!("{list}: must be a list, not {}", kind_of(v));
        }
    }
    if let Some(files) = get("write_files") {
        let Some(items) = files.as_vec() else {
            bail!("write_files: must be a list, not {}", kind_of(files));
        };
        for (i, item) in items.iter().enumerate() {
            if item["path"].as_str().is_none() {
                bail!("write_files[{i}]: no path");
            }
        }
    }
    Ok(())
}

fn kind_of(y: &Yaml) -> &'static str {
    match y {
        Yaml::Hash(_) => "a mapping",
        Yaml::Array(_) => "a list",
        Yaml::String(_) => "a string",
        Yaml::Integer(_) | Yaml::Real(_) => "a number",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Null => "empty",
        _ => "something else",
    }
}

/// NoCloud's meta-data: the instance id (a new one means "first boot" to
/// cloud-init) and the hostname.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
}

/// Writes a seed volume at `path` (raw FAT, label CIDATA) holding `user-data`
/// and `meta-data`. Nothing is left behind on failure.
pub fn write_seed(path: &Path, user_data: &str, meta_data: &str) -> Result<()> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating cloud-init seed {}", path.display()))?;
    let result = fill_seed(file, user_data, meta_data);
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result.with_context(|| format!("writing cloud-init seed {}", path.display()))
}

fn fill_seed(mut file: fs::File, user_data: &str, meta_data: &str) -> Result<()> {
    // FAT12 needs room for its tables; 1 MiB plus twice the payload is plenty.
    let size = (1u64 << 20) + 2 * (user_data.len() + meta_data.len()) as u64;
    file.set_len(size.div_ceil(1 << 16) << 16)?;
    fatfs::format_volume(
        &mut file,
        fatfs::FormatVolumeOptions::new().volume_label(*SEED_LABEL),
    )?;
    let volume = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new())?;
    {
        let root = volume.root_dir();
        for (name, body) in [("user-data", user_data), ("meta-data", meta_data)] {
            root.create_file(name)?.write_all(body.as_bytes())?;
        }
    }
    volume.unmount()?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn err(text: &str) -> String {
        check_user_data(text).unwrap_err().to_string()
    }

    #[test]
    fn cloud_config_and_scripts_pass_and_bad_yaml_names_the_line() {
        let good = "#cloud-config\nhostname: web\nruncmd:\n  - [httpd, -p, '8080']\n  - echo hi\nwrite_files:\n  - path: /srv/a\n    content: |\n      hello\n";
        assert_eq!(check_user_data(good).unwrap(), UserDataKind::CloudConfig);
        assert_eq!(
            check_user_data("#cloud-config\n").unwrap(),
            UserDataKind::CloudConfig
        );
        assert_eq!(
            check_user_data("#!/bin/sh\necho hi\n").unwrap(),
            UserDataKind::Script
        );
        // An unclosed flow list on line 3.
        let bad = err("#cloud-config\nhostname: web\nruncmd: [ls, -l\nbootcmd: []\n");
        assert!(bad.starts_with("line 4: not valid YAML"), "{bad}");
        // A tab where YAML wants spaces, on line 3.
        let tab = err("#cloud-config\nruncmd:\n\t- ls\n");
        assert!(tab.starts_with("line 3: not valid YAML"), "{tab}");
        assert_eq!(tab.lines().count(), 1);
    }

    #[test]
    fn other_formats_and_wrong_shapes_are_refused_saying_what() {
        assert!(err("hostname: web\n").starts_with("line 1: user-data must start with"));
        assert!(err("").starts_with("line 1: user-data must start with"));
        assert!(err("#cloud-config\n- a\n- b\n").contains("must be a mapping"));
        assert_eq!(
            err("#cloud-config\nruncmd: ls -l\n"),
            "runcmd: must be a list, not a string"
        );
        assert_eq!(
            err("#cloud-config\nwrite_files:\n  - content: x\n"),
            "write_files[0]: no path"
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = load_user_data(&missing).unwrap_err().to_string();
        assert!(e.starts_with("cannot read cloud-init file"), "{e}");
        assert!(e.contains("nope.yaml"), "{e}");
    }

    /// The seed as the tools cloud-init relies on see it: blkid finds the
    /// label, mtools reads the two files back.
    #[test]
    fn the_seed_is_a_fat_volume_labelled_cidata_with_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed.img");
        let user = "#cloud-config\nhostname: web\n";
        write_seed(&seed, user, &meta_data("iid-1", "web-1")).unwrap();
        let blkid = Command::new("blkid")
            .args(["-o", "value", "-s", "LABEL"])
            .arg(&seed)
            .output()
            .expect("blkid");
        assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), "CIDATA");
        let read = |name: &str| {
            let out = Command::new("mtype")
                .arg("-i")
                .arg(&seed)
                .arg(format!("::{name}"))
                .output()
                .expect("mtype (mtools)");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(read("user-data"), user);
        assert_eq!(
            read("meta-data"),
            "instance-id: iid-1\nlocal-hostname: web-1\n"
        );
        // Never over an existing file.
        assert!(write_seed(&seed, user, "").is_err());
    }
}
