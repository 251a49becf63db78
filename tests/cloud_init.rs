//! cloud-init NoCloud seeds (issue 16): a qcow2 disk image booted with a seed
//! whose user-data starts a small HTTP service, consumed through the overlay
//! from another host of the lab (tests/common/lab.rs: stock libvirtd hosts).
//! The guest is our disk image, whose init applies the seed's documented
//! subset of cloud-config (docs/hosting.md); the seed itself is standard.

mod common;

use std::time::Duration;

use common::lab::Lab;
use common::{stderr, stdout};

const USER_DATA: &str = r#"#cloud-config
hostname: seeded-web
write_files:
  - path: /srv/www/index.html
    permissions: '0644'
    content: |
      hello from cloud-init
runcmd:
  - [httpd, -p, "8080", -h, /srv/www]
  - hostname > /srv/www/hostname.txt
  - cp /run/cidata/meta-data /srv/www/meta.txt
"#;

const MANIFEST: &str = r#"name = "web-ci"
disk = "pvdisk"
network = "default"
cloud_init = "user-data.yaml"

[[services]]
name = "hello"
type = "http"
port = 8080
"#;

#[test]
fn vm_disk_image_with_a_cloud_init_seed_serves_its_service_through_the_overlay() {
    let lab = Lab::new("ci", 2);
    let (one, two) = (&lab.hosts[0], &lab.hosts[1]);
    let images = one.image_dir_with_disk();
    let shared = common::image_dir();
    let image_dir = images.to_str().unwrap();
    let (a, b) = one.pair(two, &["--image-dir", image_dir]);
    let disk = shared.join("peervisor-guest").join("disk.qcow2");
    let out = a.cli(&[
        "image",
        "import",
        disk.to_str().unwrap(),
        "--name",
        "pvdisk",
        "--image-dir",
        image_dir,
    ]);
    assert!(out.status.success(), "import: {}", stderr(&out));

    // Bad input: one line naming the file (and the line), nothing defined.
    let dir = one.root().join("seeds");
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "#cloud-config\nruncmd:\n  - [httpd, -p\nhostname: x\n",
    )
    .unwrap();
    let script = dir.join("plain.txt");
    std::fs::write(&script, "echo hi\n").unwrap();
    let cases = [
        (
            vec!["--disk", "pvdisk", "--cloud-init", broken.to_str().unwrap()],
            format!("{}: line 4: not valid YAML", broken.display()),
        ),
        (
            vec!["--disk", "pvdisk", "--cloud-init", "/nonexistent/user-data"],
            "cannot read cloud-init file /nonexistent/user-data".to_string(),
        ),
        (
            vec!["--disk", "pvdisk", "--cloud-init", script.to_str().unwrap()],
            format!(
                "{}: line 1: user-data must start with '#cloud-config'",
                script.display()
            ),
        ),
        (
            vec!["--cloud-init", script.to_str().unwrap()],
            "cloud_init: needs a disk image".to_string(),
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["vm", "create", "bad-1"];
        all.extend_from_slice(&args);
        let out = a.cli(&all);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains(&says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let defined = stdout(&one.virsh(&["list", "--all", "--name"]));
    assert!(!defined.contains("bad-1"), "{defined}");

    // The seeded VM, from a manifest whose cloud_init is relative to it.
    std::fs::write(dir.join("user-data.yaml"), USER_DATA).unwrap();
    let manifest = dir.join("web-ci.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let out = a.cli(&["vm", "create", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "vm create: {}\n{}",
        stderr(&out),
        a.log()
    );
    let xml = stdout(&one.virsh(&["dumpxml", "web-ci"]));
    // The seed, as the VM's metadata records it for removal.
    let seed = xml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<pv:disk>"))
        .find_map(|l| {
            l.strip_suffix("</pv:disk>")
                .filter(|p| p.ends_with("-cidata.img"))
        })
        .unwrap_or_else(|| panic!("no seed disk: {xml}"))
        .to_string();
    assert!(xml.contains(&format!("<source file='{seed}'")), "{xml}");
    assert!(
        xml.contains("<target dev='vdb' bus='virtio'/>") && xml.contains("<readonly/>"),
        "{xml}"
    );
    let label = one.exec(&["blkid", "-o", "value", "-s", "LABEL", &seed]);
    assert_eq!(stdout(&label).trim(), "CIDATA", "{}", stderr(&label));

    // The service the seed's runcmd started, consumed on host-b.
    let (port, page) = two.consume_page(&b, "hello", "/index.html", Duration::from_secs(300));
    assert_eq!(page, "hello from cloud-init\n");
    // user-data's hostname wins over meta-data's local-hostname, as in cloud-init.
    assert_eq!(
        two.http_get(port, "/hostname.txt").as_deref(),
        Some("seeded-web\n")
    );
    let meta = two.http_get(port, "/meta.txt").unwrap_or_default();
    assert!(
        meta.starts_with("instance-id: iid-") && meta.contains("local-hostname: web-ci"),
        "{meta}"
    );

    // Removed with the VM.
    let out = a.cli(&["vm", "rm", "web-ci", "--yes"]);
    assert!(out.status.success(), "vm rm: {}", stderr(&out));
    assert!(
        !one.exec(&["test", "-e", &seed]).status.success(),
        "{seed} left behind"
    );
}
