//! What a VM needs from the host it runs on, beyond vCPUs and memory: the files
//! its definition boots from (kernel, initramfs, firmware) and its disks with
//! their virtual sizes. A destination checks these before accepting a VM.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use virt::sys;

use super::{Host, blocking, lookup};

/// The files and disks of one VM, read from its domain XML.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Footprint {
    /// Kernel, initramfs and firmware paths: each must exist on a destination.
    pub boot_files: Vec<PathBuf>,
    /// Disk image files (`<disk type='file' device='disk'>`).
    pub disks: Vec<PathBuf>,
    /// Sum of the disks' virtual sizes, MiB (rounded up), as far as readable.
    pub disk_mib: u64,
}

impl Host {
    /// The footprint of one VM.
    pub async fn footprint(&self, name: &str) -> Result<Footprint> {
        let owned = name.to_string();
        let link = self.link.clone();
        let xml = blocking(move || match lookup(&*link.conn()?, &owned)? {
            Some(d) => d
                .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
                .map(Some)
                .map_err(|e| anyhow!("definition of VM '{owned}': {}", e.message())),
            None => Ok(None),
        })
        .await?;
        match xml {
            Some(xml) => Ok(tokio::task::spawn_blocking(move || footprint_of(&xml)).await?),
            None => Err(self.unknown_vm(name).await),
        }
    }

    /// Virtual size of the disks of every VM defined here, MiB.
    pub async fn disk_mib_in_use(&self) -> Result<u64> {
        let link = self.link.clone();
        blocking(move || {
            let domains = link
                .conn()?
                .list_all_domains(0)
                .map_err(|e| anyhow!("listing domains: {}", e.message()))?;
            Ok(domains
                .iter()
                .filter_map(|d| d.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE).ok())
                .map(|xml| footprint_of(&xml).disk_mib)
                .sum())
        })
        .await
    }
}

/// Parses the footprint out of domain XML and sizes the disks (reads their headers).
fn footprint_of(xml: &str) -> Footprint {
    let (boot_files, disks) = parse_paths(xml);
    let disk_mib = disks
        .iter()
        .map(|d| virtual_bytes(d).unwrap_or(0).div_ceil(1 << 20))
        .sum();
    Footprint {
        boot_files,
        disks,
        disk_mib,
    }
}

/// `<os><kernel|initrd|loader>` texts and `<disk device='disk'><source file>`.
fn parse_paths(xml: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut boot, mut disks) = (Vec::new(), Vec::new());
    let mut path: Vec<String> = Vec::new();
    let mut in_disk = false;
    loop {
        match reader.read_event() {
            Ok(event @ (Event::Start(_) | Event::Empty(_))) => {
                let empty = matches!(event, Event::Empty(_));
                let (Event::Start(e) | Event::Empty(e)) = event else {
                    continue;
                };
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let attr = |key: &str| {
                    e.attributes().flatten().find_map(|a| {
                        (a.key.local_name().as_ref() == key.as_bytes())
                            .then(|| a.unescape_value().ok().map(|v| v.into_owned()))
                            .flatten()
                    })
                };
                if name == "disk" && path.last().is_some_and(|p| p == "devices") {
                    in_disk = attr("device").as_deref().unwrap_or("disk") == "disk";
                }
                if name == "source"
                    && in_disk
                    && let Some(file) = attr("file")
                {
                    disks.push(PathBuf::from(file));
                }
                if !empty {
                    path.push(name);
                }
            }
            Ok(Event::Text(t)) => {
                let in_os = path.len() == 3 && path[1] == "os";
                let boot_element = path
                    .last()
                    .is_some_and(|n| ["kernel", "initrd", "loader"].contains(&n.as_str()));
                if in_os
                    && boot_element
                    && let Ok(text) = t.decode()
                    && !text.trim().is_empty()
                {
                    boot.push(PathBuf::from(text.trim()));
                }
            }
            Ok(Event::End(_)) => {
                let closed = path.pop();
                in_disk &= closed.as_deref() != Some("disk");
            }
            Ok(Event::Eof) | Err(_) => return (boot, disks),
            _ => {}
        }
    }
}

/// The size a guest sees: a qcow2 image's virtual size from its header, else the
/// file's length (raw).
pub fn virtual_bytes(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut header = [0u8; 32];
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    if file.read_exact(&mut header).is_ok() && header[..4] == *b"QFI\xfb" {
        return Some(u64::from_be_bytes(header[24..32].try_into().ok()?));
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_files_and_disks_come_from_the_domain_xml() {
        let xml = "<domain type='qemu'><name>web-1</name>\
            <metadata><pv:vm xmlns:pv='x'><pv:disk>/not/this</pv:disk></pv:vm></metadata>\
            <os><type>hvm</type><loader readonly='yes'>/fw/qboot.rom</loader>\
            <kernel>/img/vmlinux</kernel><initrd>/img/initrd.gz</initrd>\
            <cmdline>pv.name=web-1</cmdline></os>\
            <devices><disk type='file' device='cdrom'><source file='/iso/x.iso'/></disk>\
            <disk type='file' device='disk'><driver type='qcow2'/><source file='/d/web-1.qcow2'/></disk>\
            <serial type='file'><source path='/log/web-1.log'/></serial></devices></domain>";
        let (boot, disks) = parse_paths(xml);
        assert_eq!(
            boot,
            ["/fw/qboot.rom", "/img/vmlinux", "/img/initrd.gz"].map(PathBuf::from)
        );
        assert_eq!(disks, [PathBuf::from("/d/web-1.qcow2")]);
        assert_eq!(parse_paths("<domain><os><kernel>"), (vec![], vec![]));
    }

    #[test]
    fn qcow2_virtual_size_is_read_from_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let qcow = dir.path().join("d.qcow2");
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"QFI\xfb");
        header[24..32].copy_from_slice(&(3u64 << 30).to_be_bytes());
        std::fs::write(&qcow, &header).unwrap();
        assert_eq!(virtual_bytes(&qcow), Some(3 << 30));
        let raw = dir.path().join("d.raw");
        std::fs::write(&raw, vec![1u8; 5000]).unwrap();
        assert_eq!(virtual_bytes(&raw), Some(5000));
        assert_eq!(virtual_bytes(&dir.path().join("none")), None);
    }
}
