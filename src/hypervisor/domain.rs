//! The one place domain XML is written: a typed description of a peervisor guest
//! rendered to libvirt's format, and the peervisor metadata read back from it.

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::accel::Accel;
use super::manifest::services_arg;
use crate::model::ServiceSpec;

/// XML namespace of the metadata peervisor keeps inside the domain, so it travels
/// with the VM on migration.
pub const METADATA_NS: &str = "urn:peervisor:vm:1";
pub const METADATA_PREFIX: &str = "pv";

/// A guest booted directly from a kernel and initramfs (our image).
#[derive(Debug, Clone, PartialEq)]
pub struct DomainSpec {
    pub name: String,
    pub uuid: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub accel: Accel,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub network: GuestNic,
    /// Where QEMU writes the guest's serial console (boot log).
    pub console_log: PathBuf,
    pub image: String,
    /// Services from the VM's manifest: kept in the metadata, started by the guest.
    pub services: Vec<ServiceSpec>,
    /// An optional qcow2 data disk (virtio, `vda` in the guest).
    pub data_disk: Option<PathBuf>,
    /// A firmware ROM in place of SeaBIOS (qboot: boots a direct kernel faster).
    pub firmware: Option<PathBuf>,
    /// Boot from this disk (its own boot loader) instead of `kernel`/`initrd`.
    pub boot_disk: Option<BootDisk>,
}

/// A disk image a VM boots from (`vm create --disk`).
#[derive(Debug, Clone, PartialEq)]
pub struct BootDisk {
    pub path: PathBuf,
    /// qcow2 or raw.
    pub format: String,
    /// An overlay peervisor made for the VM (removed with it); false: the
    /// operator's image itself (`--no-overlay`), never deleted.
    pub owned: bool,
    /// A cloud-init NoCloud seed made for the VM (raw, read-only, removed with it).
    pub seed: Option<PathBuf>,
}

/// QEMU's minimal firmware for direct kernel boot (Debian: qemu-system-data).
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// qboot when installed: halves boot time under TCG together with a PVH kernel.
pub fn fast_firmware() -> Option<PathBuf> {
    let path = PathBuf::from(QBOOT);
    path.is_file().then_some(path)
}

/// A guest's network card: where it is plugged in and how it gets its address.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestNic {
    /// A bridge (ours, or the host's) or a libvirt network.
    pub source: NicSource,
    pub mac: String,
    /// Given on the kernel command line (peervisor's guest bridge); None: the
    /// guest asks DHCP, and the host learns the address from the guest.
    pub address: Option<StaticAddress>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StaticAddress {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// What a NIC is plugged into, as libvirt names it.
#[derive(Debug, Clone, PartialEq)]
pub enum NicSource {
    Bridge(String),
    Network(String),
}

impl GuestNic {
    /// The `<interface>` element.
    fn to_xml(&self) -> String {
        let (kind, source) = match &self.source {
            NicSource::Bridge(name) => {
                ("bridge", format!("<source bridge='{}'/>", xml_escape(name)))
            }
            NicSource::Network(name) => (
                "network",
                format!("<source network='{}'/>", xml_escape(name)),
            ),
        };
        format!(
            "    <interface type='{kind}'>\n      {source}\n      <mac address='{}'/>\n      <model type='virtio'/>\n    </interface>\n",
            xml_escape(&self.mac)
        )
    }
}

/// What peervisor stores in `<metadata>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmMetadata {
    pub ip: Option<String>,
    pub image: Option<String>,
    pub services: Vec<ServiceSpec>,
    /// Disk files peervisor created for the VM (removed with it).
    pub disks: Vec<String>,
    /// Defined by someone else, adopted by the operator (`vm adopt`).
    pub adopted: bool,
}

impl DomainSpec {
    /// The guest's kernel command line: its init reads `pv.*` from here.
    pub fn cmdline(&self) -> String {
        let mut line = format!("console=ttyS0 quiet panic=-1 pv.name={}", self.name);
        match self.network.address {
            Some(a) => {
                let _ = write!(line, " pv.ip={}/{} pv.gw={}", a.ip, a.prefix, a.gateway);
            }
            None => line.push_str(" pv.ip=dhcp"),
        }
        if !self.services.is_empty() {
            let _ = write!(line, " pv.services={}", services_arg(&self.services));
        }
        line
    }

    /// Our `<metadata>` child: the manifest travels with the domain.
    fn metadata_xml(&self) -> String {
        let p = METADATA_PREFIX;
        let mut x = format!("<{p}:vm xmlns:{p}='{METADATA_NS}'>");
        // A DHCP guest's address is learned, not kept: it may change.
        if let Some(a) = self.network.address {
            let _ = write!(x, "<{p}:ip>{}</{p}:ip>", a.ip);
        }
        let _ = write!(x, "<{p}:image>{}</{p}:image>", xml_escape(&self.image));
        services_xml(&mut x, &self.services, &format!("{p}:"));
        let owned_boot = self.boot_disk.iter().filter(|b| b.owned).map(|b| &b.path);
        let seed = self.boot_disk.iter().filter_map(|b| b.seed.as_ref());
        for disk in self.data_disk.iter().chain(owned_boot).chain(seed) {
            let _ = write!(x, "<{p}:disk>{}</{p}:disk>", esc_path(disk));
        }
        let _ = write!(x, "</{p}:vm>");
        x
    }

    pub fn to_xml(&self) -> String {
        let mut x = String::new();
        let (domain_type, cpu) = match self.accel {
            Accel::Kvm => ("kvm", "<cpu mode='host-model'/>".to_string()),
            // qemu64 is what TCG emulates well; -cpu host is not available without KVM.
            Accel::Tcg => (
                "qemu",
                "<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>"
                    .to_string(),
            ),
        };
        let _ = writeln!(x, "<domain type='{domain_type}'>");
        let _ = writeln!(x, "  <name>{}</name>", xml_escape(&self.name));
        let _ = writeln!(x, "  <uuid>{}</uuid>", xml_escape(&self.uuid));
        let _ = writeln!(x, "  <metadata>");
        let _ = writeln!(x, "    {}", self.metadata_xml());
        let _ = writeln!(x, "  </metadata>");
        let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", self.memory_mib);
        let _ = writeln!(x, "  <vcpu>{}</vcpu>", self.vcpus);
        let _ = writeln!(x, "  <os>");
        let _ = writeln!(x, "    <type arch='x86_64' machine='pc'>hvm</type>");
        match &self.boot_disk {
            // SeaBIOS runs the disk's own boot loader.
            Some(_) => {
                let _ = writeln!(x, "    <boot dev='hd'/>");
            }
            None => {
                if let Some(rom) = &self.firmware {
                    let _ = writeln!(
                        x,
                        "    <loader readonly='yes' type='rom'>{}</loader>",
                        esc_path(rom)
                    );
                }
                let _ = writeln!(x, "    <kernel>{}</kernel>", esc_path(&self.kernel));
                let _ = writeln!(x, "    <initrd>{}</initrd>", esc_path(&self.initrd));
                let _ = writeln!(x, "    <cmdline>{}</cmdline>", xml_escape(&self.cmdline()));
            }
        }
        let _ = writeln!(x, "  </os>");
        // ACPI: the guest powers off on the power button (graceful shutdown).
        let _ = writeln!(x, "  <features><acpi/></features>");
        let _ = writeln!(x, "  {cpu}");
        let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
        let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
        let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
        let _ = writeln!(x, "  <devices>");
        if let Some(boot) = &self.boot_disk {
            let _ = writeln!(x, "    <disk type='file' device='disk'>");
            let _ = writeln!(
                x,
                "      <driver name='qemu' type='{}'/>",
                xml_escape(&boot.format)
            );
            let _ = writeln!(x, "      <source file='{}'/>", esc_path(&boot.path));
            let _ = writeln!(x, "      <target dev='vda' bus='virtio'/>");
            let _ = writeln!(x, "    </disk>");
            if let Some(seed) = &boot.seed {
                let _ = writeln!(x, "    <disk type='file' device='disk'>");
                let _ = writeln!(x, "      <driver name='qemu' type='raw'/>");
                let _ = writeln!(x, "      <source file='{}'/>", esc_path(seed));
                let _ = writeln!(x, "      <target dev='vdb' bus='virtio'/>");
                let _ = writeln!(x, "      <readonly/>");
                let _ = writeln!(x, "    </disk>");
            }
        }
        if let Some(disk) = &self.data_disk {
            // cache='none': libvirt allows live migration of a disk both hosts see.
            let _ = writeln!(x, "    <disk type='file' device='disk'>");
            let _ = writeln!(x, "      <driver name='qemu' type='qcow2' cache='none'/>");
            let _ = writeln!(x, "      <source file='{}'/>", esc_path(disk));
            let _ = writeln!(x, "      <target dev='vda' bus='virtio'/>");
            let _ = writeln!(x, "    </disk>");
        }
        x.push_str(&self.network.to_xml());
        // A pty, so `vm console` can attach (virDomainOpenConsole); QEMU
        // also writes everything the guest prints to the log (boot log).
        let _ = writeln!(x, "    <serial type='pty'>");
        let _ = writeln!(
            x,
            "      <log file='{}' append='on'/>",
            esc_path(&self.console_log)
        );
        let _ = writeln!(x, "      <target port='0'/>");
        let _ = writeln!(x, "    </serial>");
        let _ = writeln!(x, "    <memballoon model='none'/>");
        let _ = writeln!(x, "  </devices>");
        let _ = writeln!(x, "</domain>");
        x
    }
}

/// Our `<metadata>` for a VM defined by someone else and adopted by the
/// operator (`vm adopt`): its services, and the mark that says peervisor did not
/// make it (so it is never destroyed with the node, and `vm release` undoes it).
/// Without prefix or namespace declaration: virDomainSetMetadata adds them.
pub fn adopted_metadata_xml(services: &[ServiceSpec]) -> String {
    let mut x = "<vm><adopted>yes</adopted>".to_string();
    services_xml(&mut x, services, "");
    x.push_str("</vm>");
    x
}

/// `<service name type port [max-conns]><tag/><allow/></service>`, each element
/// name after `p` (our prefix and a colon, or nothing).
fn services_xml(x: &mut String, services: &[ServiceSpec], p: &str) {
    for s in services {
        let _ = write!(
            x,
            "<{p}service name='{}' type='{}' port='{}'",
            xml_escape(&s.name),
            xml_escape(&s.kind),
            s.port
        );
        if let Some(max) = s.max_conns {
            let _ = write!(x, " max-conns='{max}'");
        }
        let _ = write!(x, ">");
        for (k, v) in &s.tags {
            let _ = write!(
                x,
                "<{p}tag name='{}' value='{}'/>",
                xml_escape(k),
                xml_escape(v)
            );
        }
        for peer in &s.allow {
            let _ = write!(x, "<{p}allow peer='{}'/>", xml_escape(peer));
        }
        let _ = write!(x, "</{p}service>");
    }
}

/// A raw disk image as a virtio disk `target` (e.g. "vda"), host page cache
/// bypassed (cache=none: QEMU opens it O_DIRECT), as the penalty benchmark needs.
/// The guest sees `serial` in /sys/block/<dev>/serial.
pub fn raw_disk_xml(path: &std::path::Path, target: &str, serial: &str) -> String {
    format!(
        "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw' cache='none' io='native'/>\n      <source file='{}'/>\n      <target dev='{}' bus='virtio'/>\n      <serial>{}</serial>\n    </disk>\n",
        esc_path(path),
        xml_escape(target),
        xml_escape(serial)
    )
}

/// Domain XML with extra device elements appended inside `<devices>`.
pub fn with_devices(xml: &str, devices: &str) -> String {
    xml.replacen("  </devices>", &format!("{devices}  </devices>"), 1)
}

/// A random (version 4) UUID for a new VM.
pub fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A locally administered unicast MAC derived from the VM's UUID (stable, no registry).
pub fn mac_for(uuid: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(uuid.as_bytes());
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2]
    )
}

/// Reads our `<metadata>` element (as returned by virDomainGetMetadata).
pub fn parse_metadata(xml: &str) -> VmMetadata {
    let (services, disks) = services_and_disks(xml);
    VmMetadata {
        ip: element_text(xml, "ip"),
        image: element_text(xml, "image"),
        services,
        disks,
        adopted: element_text(xml, "adopted").is_some(),
    }
}

/// `<service name type port><tag name value/></service>` and `<disk>path</disk>`
/// elements, whatever their prefix; malformed ones are skipped.
fn services_and_disks(xml: &str) -> (Vec<ServiceSpec>, Vec<String>) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut services, mut disks) = (Vec::new(), Vec::new());
    let mut current: Option<ServiceSpec> = None;
    let mut in_disk = false;
    loop {
        match reader.read_event() {
            Ok(event @ (Event::Start(_) | Event::Empty(_))) => {
                let empty = matches!(event, Event::Empty(_));
                let (Event::Start(e) | Event::Empty(e)) = event else {
                    continue;
                };
                let attrs = attributes(&e);
                let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                match e.local_name().as_ref() {
                    b"service" => {
                        let port = get("port").and_then(|p| p.parse().ok());
                        current = match (get("name"), get("type"), port) {
                            (Some(name), Some(kind), Some(port)) => Some(ServiceSpec {
                                name: name.into(),
                                kind,
                                port,
                                tags: Vec::new(),
                                max_conns: get("max-conns").and_then(|n| n.parse().ok()),
                                allow: Vec::new(),
                            }),
                            _ => None,
                        };
                        if empty {
                            services.extend(current.take());
                        }
                    }
                    b"tag" => {
                        if let (Some(s), Some(k), Some(v)) =
                            (current.as_mut(), get("name"), get("value"))
                        {
                            s.tags.push((k, v));
                        }
                    }
                    b"allow" => {
                        if let (Some(s), Some(peer)) = (current.as_mut(), get("peer")) {
                            s.allow.push(peer);
                        }
                    }
                    b"disk" => in_disk = !empty,
                    _ => {}
                }
            }
            Ok(Event::Text(t)) if in_disk => {
                if let Ok(text) = t.decode() {
                    disks.push(
                        quick_xml::escape::unescape(&text)
                            .map(|s| s.trim().to_string())
                            .unwrap_or_default(),
                    );
                }
            }
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                b"service" => services.extend(current.take()),
                b"disk" => in_disk = false,
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    (services, disks)
}

fn attributes(e: &quick_xml::events::BytesStart) -> Vec<(String, String)> {
    e.attributes()
        .flatten()
        .filter_map(|a| {
            let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
            let value = a.unescape_value().ok()?.into_owned();
            Some((key, value))
        })
        .collect()
}

/// Text of the first element with this local name, whatever its prefix.
fn element_text(xml: &str, local_name: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut inside = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => inside = e.local_name().as_ref() == local_name.as_bytes(),
            Ok(Event::Text(t)) if inside => {
                return t.decode().ok().map(|s| s.trim().to_string());
            }
            Ok(Event::End(_)) => inside = false,
            Ok(Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

/// Text or attribute value escaped for XML (the domain XML, and definitions or
/// snapshot requests built elsewhere).
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn esc_path(p: &std::path::Path) -> String {
    xml_escape(&p.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "web-1".into(),
            uuid: "6f1d3a52-53b4-4d0e-9a39-0d5f4b1e2a10".into(),
            vcpus: 1,
            memory_mib: 128,
            accel: Accel::Tcg,
            kernel: "/img/vmlinuz".into(),
            initrd: "/img/initrd.img".into(),
            network: GuestNic {
                source: NicSource::Bridge("pvbr0".into()),
                mac: mac_for("x"),
                address: Some(StaticAddress {
                    ip: Ipv4Addr::new(10, 77, 3, 4),
                    prefix: 16,
                    gateway: Ipv4Addr::new(10, 77, 0, 1),
                }),
            },
            console_log: "/data/console/web-1.log".into(),
            image: "peervisor-guest".into(),
            services: vec![
                ServiceSpec {
                    name: "web".into(),
                    kind: "http".into(),
                    port: 80,
                    tags: vec![("tier".into(), "front & <back>".into())],
                    max_conns: Some(20),
                    allow: vec!["12D3KooWPeerA".into(), "12D3KooWPeerB".into()],
                },
                ServiceSpec {
                    name: "store".into(),
                    kind: "kv".into(),
                    port: 7000,
                    ..Default::default()
                },
            ],
            data_disk: Some("/disks/web-1-abcd.qcow2".into()),
            firmware: Some(QBOOT.into()),
            boot_disk: None,
        }
    }

    /// Our `<pv:vm>` element of a domain XML we wrote, parsed.
    fn metadata_in(xml: &str) -> VmMetadata {
        let start = xml.find("<pv:vm").unwrap();
        let end = xml.find("</pv:vm>").unwrap() + "</pv:vm>".len();
        parse_metadata(&xml[start..end])
    }

    /// Our metadata element as libvirt hands it back.
    fn our_metadata(domain: &virt::domain::Domain) -> String {
        domain
            .metadata(
                virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some(METADATA_NS),
                0,
            )
            .unwrap()
    }

    /// libvirt's own parser accepts the XML and hands our metadata back intact.
    #[test]
    fn xml_round_trips_through_libvirt() {
        use virt::connect::Connect;
        virt::error::clear_error_callback();
        let conn = Connect::open(Some("test:///default")).unwrap();
        // The test driver only runs domains of type 'test'; the rest is ours as is.
        let xml = spec()
            .to_xml()
            .replace("<domain type='qemu'>", "<domain type='test'>");
        let domain = conn
            .define_domain_xml(&xml)
            .expect("libvirt accepts our XML");
        let back = domain.xml_desc(0).unwrap();
        assert!(back.contains("<name>web-1</name>"), "{back}");
        assert!(
            back.contains("pv.services=web:http:80,store:kv:7000"),
            "{back}"
        );
        assert!(back.contains("<acpi/>"), "{back}");
        assert!(back.contains("/disks/web-1-abcd.qcow2"), "{back}");
        assert!(back.contains("<source bridge='pvbr0'/>"), "{back}");
        let meta = our_metadata(&domain);
        let parsed = parse_metadata(&meta);
        assert_eq!(parsed.ip.as_deref(), Some("10.77.3.4"));
        assert_eq!(parsed.services, spec().services);
        assert_eq!(parsed.disks, vec!["/disks/web-1-abcd.qcow2".to_string()]);
        domain.undefine().unwrap();
    }

    #[test]
    fn xml_carries_the_guest_configuration() {
        let xml = spec().to_xml();
        assert!(xml.contains("<domain type='qemu'>"));
        assert!(xml.contains("<name>web-1</name>"));
        assert!(xml.contains("pv.ip=10.77.3.4/16 pv.gw=10.77.0.1"));
        assert!(xml.contains("<source bridge='pvbr0'/>"));
        assert!(xml.contains("<memory unit='MiB'>128</memory>"));
        let kvm = DomainSpec {
            accel: Accel::Kvm,
            ..spec()
        };
        assert!(kvm.to_xml().contains("<domain type='kvm'>"));
    }

    #[test]
    fn a_guest_on_a_libvirt_network_asks_dhcp_and_keeps_no_address() {
        let s = DomainSpec {
            network: GuestNic {
                source: NicSource::Network("default".into()),
                mac: mac_for("x"),
                address: None,
            },
            ..spec()
        };
        let xml = s.to_xml();
        assert!(xml.contains("<interface type='network'>"), "{xml}");
        assert!(xml.contains("<source network='default'/>"), "{xml}");
        assert!(xml.contains("pv.ip=dhcp"), "{xml}");
        assert!(!xml.contains("pv.gw="), "{xml}");
        assert_eq!(metadata_in(&xml).ip, None);
    }

    /// What `vm adopt` writes, as libvirt takes it (virDomainSetMetadata adds
    /// the namespace itself) and hands it back.
    #[test]
    fn adopted_metadata_round_trips_through_libvirt() {
        use virt::connect::Connect;
        virt::error::clear_error_callback();
        let conn = Connect::open(Some("test:///default")).unwrap();
        let domain = conn
            .define_domain_xml(
                "<domain type='test'><name>adopt-me</name><memory>65536</memory>\
                 <os><type>hvm</type></os></domain>",
            )
            .unwrap();
        domain
            .set_metadata(
                virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some(&adopted_metadata_xml(&spec().services)),
                Some(METADATA_PREFIX),
                Some(METADATA_NS),
                virt::sys::VIR_DOMAIN_AFFECT_CONFIG,
            )
            .expect("libvirt takes the adopted metadata");
        let meta = our_metadata(&domain);
        let parsed = parse_metadata(&meta);
        assert!(parsed.adopted, "{meta}");
        assert_eq!(parsed.services, spec().services);
        domain.undefine().unwrap();
    }

    #[test]
    fn a_disk_booted_guest_has_no_kernel_and_its_overlay_is_recorded() {
        let s = DomainSpec {
            data_disk: None,
            boot_disk: Some(BootDisk {
                path: "/disks/web-1-abcd.qcow2".into(),
                format: "qcow2".into(),
                owned: true,
                seed: None,
            }),
            ..spec()
        };
        let xml = s.to_xml();
        assert!(xml.contains("<boot dev='hd'/>"), "{xml}");
        assert!(
            !xml.contains("<kernel>") && !xml.contains("<loader"),
            "{xml}"
        );
        assert!(
            xml.contains("<source file='/disks/web-1-abcd.qcow2'/>"),
            "{xml}"
        );
        assert_eq!(
            metadata_in(&xml).disks,
            vec!["/disks/web-1-abcd.qcow2".to_string()]
        );
        // The operator's own image (--no-overlay) is never recorded for removal.
        let mut own = s.clone();
        own.boot_disk.as_mut().unwrap().owned = false;
        assert!(metadata_in(&own.to_xml()).disks.is_empty());

        // A cloud-init seed: a second, read-only raw disk, removed with the VM.
        let mut seeded = s.clone();
        seeded.boot_disk.as_mut().unwrap().seed = Some("/disks/web-1-abcd-cidata.img".into());
        let xml = seeded.to_xml();
        assert!(
            xml.contains(
                "<driver name='qemu' type='raw'/>\n      <source file='/disks/web-1-abcd-cidata.img'/>\n      <target dev='vdb' bus='virtio'/>\n      <readonly/>"
            ),
            "{xml}"
        );
        assert_eq!(
            metadata_in(&xml).disks,
            vec![
                "/disks/web-1-abcd.qcow2".to_string(),
                "/disks/web-1-abcd-cidata.img".to_string()
            ]
        );
    }

    #[test]
    fn adopted_metadata_carries_the_services_and_the_mark() {
        let services = spec().services;
        let meta = parse_metadata(&adopted_metadata_xml(&services));
        assert!(meta.adopted);
        assert_eq!(meta.services, services);
        assert_eq!((meta.ip, meta.image), (None, None));
        assert!(meta.disks.is_empty());
        assert!(!metadata_in(&spec().to_xml()).adopted);
    }

    #[test]
    fn metadata_round_trips() {
        let xml = spec().to_xml();
        let start = xml.find("<pv:vm").unwrap();
        let end = xml.find("</pv:vm>").unwrap() + "</pv:vm>".len();
        let meta = parse_metadata(&xml[start..end]);
        assert_eq!(meta.ip.as_deref(), Some("10.77.3.4"));
        assert_eq!(meta.image.as_deref(), Some("peervisor-guest"));
        // libvirt may hand the element back with another prefix
        let other = "<x:vm xmlns:x='urn:peervisor:vm:1'><x:ip>10.0.0.9</x:ip></x:vm>";
        assert_eq!(parse_metadata(other).ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(parse_metadata("garbage<").ip, None);
    }

    #[test]
    fn names_are_escaped() {
        let s = DomainSpec {
            name: "a<b>&'".into(),
            ..spec()
        };
        assert!(s.to_xml().contains("<name>a&lt;b&gt;&amp;&apos;</name>"));
    }

    #[test]
    fn mac_is_stable_and_local() {
        assert_eq!(mac_for("u"), mac_for("u"));
        assert_ne!(mac_for("u"), mac_for("v"));
        assert!(mac_for("u").starts_with("52:54:00:"));
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, config, text_like};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(config(CASES))]
            /// Our `<metadata>` in domain XML: it travels with a VM migrated in
            /// from another peer.
            #[test]
            fn fuzz_domain_metadata(xml in text_like(vec![spec().to_xml()])) {
                let meta = parse_metadata(&xml);
                prop_assert!(meta.services.len() <= xml.len());
            }
        }
    }
}
