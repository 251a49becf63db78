//! The one place domain XML is written: a typed description of a peervisor guest
//! rendered to libvirt's format, and the peervisor metadata read back from it.

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::accel::Accel;

/// XML namespace of the metadata peervisor keeps inside the domain, so it travels
/// with the VM on migration.
pub const METADATA_NS: &str = "urn:peervisor:vm:1";
const METADATA_PREFIX: &str = "pv";

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct GuestNic {
    pub bridge: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// What peervisor stores in `<metadata>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmMetadata {
    pub ip: Option<String>,
    pub image: Option<String>,
}

impl DomainSpec {
    /// The guest's kernel command line: its init reads `pv.*` from here.
    pub fn cmdline(&self) -> String {
        format!(
            "console=ttyS0 quiet panic=-1 pv.name={} pv.ip={}/{} pv.gw={}",
            self.name, self.network.ip, self.network.prefix, self.network.gateway
        )
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
        let _ = writeln!(x, "  <name>{}</name>", esc(&self.name));
        let _ = writeln!(x, "  <uuid>{}</uuid>", esc(&self.uuid));
        let _ = writeln!(x, "  <metadata>");
        let _ = writeln!(
            x,
            "    <{p}:vm xmlns:{p}='{METADATA_NS}'><{p}:ip>{ip}</{p}:ip><{p}:image>{image}</{p}:image></{p}:vm>",
            p = METADATA_PREFIX,
            ip = self.network.ip,
            image = esc(&self.image),
        );
        let _ = writeln!(x, "  </metadata>");
        let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", self.memory_mib);
        let _ = writeln!(x, "  <vcpu>{}</vcpu>", self.vcpus);
        let _ = writeln!(x, "  <os>");
        let _ = writeln!(x, "    <type arch='x86_64' machine='pc'>hvm</type>");
        let _ = writeln!(x, "    <kernel>{}</kernel>", esc_path(&self.kernel));
        let _ = writeln!(x, "    <initrd>{}</initrd>", esc_path(&self.initrd));
        let _ = writeln!(x, "    <cmdline>{}</cmdline>", esc(&self.cmdline()));
        let _ = writeln!(x, "  </os>");
        let _ = writeln!(x, "  {cpu}");
        let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
        let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
        let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
        let _ = writeln!(x, "  <devices>");
        let _ = writeln!(x, "    <interface type='bridge'>");
        let _ = writeln!(x, "      <source bridge='{}'/>", esc(&self.network.bridge));
        let _ = writeln!(x, "      <mac address='{}'/>", esc(&self.network.mac));
        let _ = writeln!(x, "      <model type='virtio'/>");
        let _ = writeln!(x, "    </interface>");
        let _ = writeln!(x, "    <serial type='file'>");
        let _ = writeln!(
            x,
            "      <source path='{}' append='on'/>",
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
    VmMetadata {
        ip: element_text(xml, "ip"),
        image: element_text(xml, "image"),
    }
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn esc_path(p: &std::path::Path) -> String {
    esc(&p.to_string_lossy())
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
                bridge: "pvbr0".into(),
                mac: mac_for("x"),
                ip: Ipv4Addr::new(10, 77, 3, 4),
                prefix: 16,
                gateway: Ipv4Addr::new(10, 77, 0, 1),
            },
            console_log: "/data/console/web-1.log".into(),
            image: "peervisor-guest".into(),
        }
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
}
