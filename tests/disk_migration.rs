//! Live migration of a VM with a qcow2 data disk: between peers that do not share
//! their disk dirs (`--disk-dir` of their own) the disk is copied during the
//! migration over the overlay; between peers sharing one, it is not. Slow (real guests under TCG): nextest runs these
//! in the `vm` group.

mod common;

use std::path::Path;
use std::time::Duration;

use common::guests::{
    GUEST_BOOT, Rig, disk_of, guest_state, guest_state_within, kv, sha256_of, write_known_values,
};
use common::{TestNetns, TestNode, cut_connections, eventually, stderr, virsh};
use serde_json::Value;

/// sha256 of what the guest sees on a disk (its raw contents, whatever the
/// qcow2 layout), read while the VM is paused.
fn contents_sha256(disk: &str) -> String {
    let raw = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw", disk])
        .arg(raw.path())
        .output()
        .expect("qemu-img");
    assert!(out.status.success(), "qemu-img convert: {}", stderr(&out));
    sha256_of(&raw.path().to_string_lossy())
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn defined_names(node: &TestNode) -> Vec<String> {
    virsh(&node.hypervisor_uri(), &["list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// peer-a and peer-b, each with a disk dir of its own; B lets A migrate VMs in.
fn pair(rig: &Rig, disk_a: &Path, disk_b: &Path, extra_b: &[&str]) -> (TestNode, TestNode) {
    let da = disk_a.to_string_lossy().into_owned();
    let db = disk_b.to_string_lossy().into_owned();
    let mut b_args = vec!["--disk-dir", db.as_str()];
    b_args.extend_from_slice(extra_b);
    rig.pair_with(&["--disk-dir", &da], &b_args)
}

/// Creates a VM with a 64 MiB data disk, an HTTP and a kv service; waits for it to answer.
fn boot_with_disk(a: &TestNode, netns: &TestNetns, name: &str) -> String {
    let manifest = a.data_dir().join(format!("{name}.toml"));
    std::fs::write(
        &manifest,
        format!(
            "name = \"{name}\"\ndata_disk_mib = 64\n\
             [[services]]\nname = \"{name}-site\"\ntype = \"http\"\nport = 80\n\
             [[services]]\nname = \"{name}-store\"\ntype = \"kv\"\nport = 7000\n"
        ),
    )
    .unwrap();
    let out = a.cli(&["vm", "create", "-f", &manifest.to_string_lossy()]);
    assert!(out.status.success(), "vm create: {}", stderr(&out));
    let ip = a.vm(name).expect("listed")["ip"]
        .as_str()
        .expect("guest ip")
        .to_string();
    assert!(
        guest_state_within(netns, &ip, GUEST_BOOT).is_some(),
        "guest HTTP never answered at {ip}; console:\n{}\n{}",
        std::fs::read_to_string(format!("/var/lib/peervisor/console/{name}.log"))
            .unwrap_or_default(),
        a.log()
    );
    ip
}

fn migrate(a: &TestNode, vm: &str, extra: &[&str]) -> Result<Value, String> {
    let mut args = vec!["migrate", vm, "--to", "peer-b", "--wait", "--json"];
    args.extend_from_slice(extra);
    let out = a.cli(&args);
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("report is JSON"))
    } else {
        Err(stderr(&out))
    }
}

#[test]
fn vm_data_disk_is_copied_when_the_peers_do_not_share_their_disk_dirs() {
    let rig = Rig::new("dmig");
    let netns = &rig.netns;
    let (disk_a, disk_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = pair(&rig, disk_a.path(), disk_b.path(), &[]);
    let ip = boot_with_disk(&a, netns, "dm-web");

    // Known data on the disk, flushed.
    let values = write_known_values(netns, &ip);
    let source_disk = disk_of(&a, "dm-web");
    assert!(source_disk.starts_with(&*disk_a.path().to_string_lossy()));
    // The contents, read while the guest cannot write.
    assert!(a.cli(&["vm", "pause", "dm-web"]).status.success());
    let before = contents_sha256(&source_disk);
    assert!(a.cli(&["vm", "resume", "dm-web"]).status.success());

    let report = migrate(&a, "dm-web", &[]).unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    eprintln!("data-disk migration over the overlay: {report}");
    let disk_bytes = report["disk_bytes"].as_u64().expect("disk bytes reported");
    let sent = report["transferred_bytes"].as_u64().unwrap();
    assert!(disk_bytes > 0 && sent > disk_bytes, "{report}");

    // B runs it on a file in its own disk dir; A keeps neither definition nor file.
    assert_eq!(b.vm("dm-web").expect("dm-web on B")["state"], "running");
    let dest_disk = disk_of(&b, "dm-web");
    assert!(
        dest_disk.starts_with(&*disk_b.path().to_string_lossy()),
        "{dest_disk}"
    );
    let persistent = virsh(&b.hypervisor_uri(), &["dumpxml", "--inactive", "dm-web"]);
    assert!(
        persistent.contains(&dest_disk) && !persistent.contains(&source_disk),
        "B's persistent definition names its own file:\n{persistent}"
    );
    assert!(defined_names(&a).is_empty(), "A keeps a definition");
    assert!(
        !Path::new(&source_disk).exists(),
        "A's disk file is deleted once B runs the VM"
    );

    // Same contents, and the data answers from B.
    assert!(b.cli(&["vm", "pause", "dm-web"]).status.success());
    let after = contents_sha256(&dest_disk);
    assert!(b.cli(&["vm", "resume", "dm-web"]).status.success());
    assert_eq!(after, before, "the disk's contents survived the move");
    for (k, v) in &values {
        assert_eq!(&kv(netns, &ip, &format!("GET {k}")), v);
    }
    let ops = b.status()["operations"].clone();
    assert_eq!(ops[0]["phase"], "done", "{ops}");
}

/// Peers sharing one disk dir (the default on one machine): the destination opens
/// the very file, nothing is copied and the file stays where it is.
#[test]
fn vm_data_disk_in_a_shared_disk_dir_moves_without_a_copy() {
    let rig = Rig::new("dshr");
    let netns = &rig.netns;
    let shared = tempfile::tempdir().unwrap();
    let (a, b) = pair(&rig, shared.path(), shared.path(), &[]);
    let ip = boot_with_disk(&a, netns, "ds-web");
    assert_eq!(kv(netns, &ip, "SET moved-with yes"), "OK");
    let disk = disk_of(&a, "ds-web");
    let files_before = files_in(shared.path());

    let report = migrate(&a, "ds-web", &[]).unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    eprintln!("shared-disk migration over the overlay: {report}");
    assert!(
        report["disk_bytes"].is_null(),
        "nothing crosses the NBD channel: {report}"
    );
    assert_eq!(b.vm("ds-web").expect("ds-web on B")["state"], "running");
    assert_eq!(disk_of(&b, "ds-web"), disk, "B opens the same file");
    assert!(defined_names(&a).is_empty(), "A keeps a definition");
    assert_eq!(
        files_in(shared.path()),
        files_before,
        "no file made or deleted"
    );
    assert_eq!(kv(netns, &ip, "GET moved-with"), "yes");
}

#[test]
fn vm_data_disk_migrations_that_fail_leave_the_vm_on_the_source_and_no_file_behind() {
    let rig = Rig::new("dmfail");
    let netns = &rig.netns;
    let disk_a = tempfile::tempdir().unwrap();
    // B's disk dir: a 32 MiB filesystem, too small for the 64 MiB disk; the lent
    // disk is large, so only the free space at migration time can refuse.
    let disk_b = Tmpfs::mount("32m");
    let (a, b) = pair(
        &rig,
        disk_a.path(),
        disk_b.dir.path(),
        &["--lend-disk", "1GiB"],
    );
    let ip = boot_with_disk(&a, netns, "dm-fail");

    let err = migrate(&a, "dm-fail", &[]).expect_err("no room on B");
    assert!(
        err.contains("peer-b refuses dm-fail: needs 64 MiB free in"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(a.vm("dm-fail").unwrap()["state"], "running");
    assert!(files_in(disk_b.dir.path()).is_empty());

    // Room on B now (the same tmpfs, grown: B's libvirtd, in a mount namespace
    // of its own, keeps seeing it), but the overlay is cut mid-transfer (1 MiB/s: the copy
    // takes far longer than the test waits).
    disk_b.resize("512m");
    let err = std::thread::scope(|scope| {
        let migration = scope.spawn(|| migrate(&a, "dm-fail", &["--bandwidth", "1"]));
        // Mid-transfer: B's new disk file is growing with copied data.
        let copying = eventually(Duration::from_secs(60), || {
            files_in(disk_b.dir.path()).iter().any(|f| {
                std::fs::metadata(disk_b.dir.path().join(f)).is_ok_and(|m| m.len() > 1 << 20)
            })
        });
        if !copying {
            let _ = a.cli(&["migrate", "--abort", "dm-fail"]);
            panic!("the disk copy never started:\n{}\n{}", a.log(), b.log());
        }
        cut_connections(&[a.port, b.port]);
        migration.join().unwrap()
    })
    .expect_err("a cut migration cannot succeed");
    assert!(
        err.contains("VM 'dm-fail' did not move") && err.contains("it keeps running on this peer"),
        "{err}"
    );
    assert_eq!(a.vm("dm-fail").unwrap()["state"], "running");
    assert!(guest_state(netns, &ip).is_some(), "the guest answers on A");
    assert!(Path::new(&disk_of(&a, "dm-fail")).exists());
    assert!(
        eventually(Duration::from_secs(30), || defined_names(&b).is_empty()
            && files_in(disk_b.dir.path()).is_empty()),
        "B keeps {:?} and {:?}:\n{}",
        defined_names(&b),
        files_in(disk_b.dir.path()),
        b.log()
    );
    eprintln!("source said: {err}");
}

#[test]
fn vm_destination_killed_mid_copy_deletes_its_half_made_disk_when_it_starts_again() {
    let rig = Rig::new("dmkill");
    let netns = &rig.netns;
    let (disk_a, disk_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, mut b) = pair(&rig, disk_a.path(), disk_b.path(), &[]);
    let ip = boot_with_disk(&a, netns, "dm-kill");

    let err = std::thread::scope(|scope| {
        let migration = scope.spawn(|| migrate(&a, "dm-kill", &["--bandwidth", "1"]));
        let copying = eventually(Duration::from_secs(60), || {
            files_in(disk_b.path())
                .iter()
                .any(|f| std::fs::metadata(disk_b.path().join(f)).is_ok_and(|m| m.len() > 1 << 20))
        });
        if !copying {
            let _ = a.cli(&["migrate", "--abort", "dm-kill"]);
            panic!("the disk copy never started:\n{}\n{}", a.log(), b.log());
        }
        // The node dies; its libvirtd (and the half-received QEMU) live on.
        b.kill_hard();
        migration.join().unwrap()
    })
    .expect_err("migration to a dead peer cannot succeed");
    assert!(
        err.contains("VM 'dm-kill' did not move") && err.contains("it keeps running on this peer"),
        "{err}"
    );
    assert_eq!(a.vm("dm-kill").unwrap()["state"], "running");
    assert!(guest_state(netns, &ip).is_some(), "the guest answers on A");
    assert!(Path::new(&disk_of(&a, "dm-kill")).exists());
    // Nobody on B could delete the file; B does when it starts again.
    assert_eq!(files_in(disk_b.path()).len(), 1);
    b.restart();
    assert!(
        eventually(Duration::from_secs(30), || defined_names(&b).is_empty()
            && files_in(disk_b.path()).is_empty()),
        "B keeps {:?} and {:?}:\n{}",
        defined_names(&b),
        files_in(disk_b.path()),
        b.log()
    );
}

/// A tmpfs of a given size on a temporary dir, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", stderr(&out));
        Tmpfs { dir }
    }

    fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "remount: {}", stderr(&out));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .output();
    }
}
