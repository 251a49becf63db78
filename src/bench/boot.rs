//! `peervisor bench boot`: seconds from "create" (define + start) to the guest's
//! HTTP service answering, on a running node's libvirt. Ours (PVH kernel + qboot)
//! against the baseline in the same run (the bzImage through SeaBIOS). One
//! uncounted boot of each first (files and QEMU cold in the page cache), then
//! the order alternates each round, so neither side always goes first.

use std::fmt::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};

/// `peervisor bench boot`: image build times, then boots on the node's libvirt.
pub async fn command(setup: &super::Setup, rounds: usize) -> Result<()> {
    let control = ControlClient::new(&setup.data_dir.control_socket());
    let Reply::Status(status) = control.call(&Request::Status).await? else {
        bail!("unexpected reply to status");
    };
    let build_dir = setup.image_dir.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::image::build(
            &build_dir,
            &crate::image::ImageSpec {
                name: crate::image::DEFAULT_IMAGE.into(),
            },
            &mut |_| {},
        )
    })
    .await??;
    println!(
        "image: {} in {:.1} s ({}); {:.1} MiB booted (kernel + initrd)",
        if report.built {
            "built"
        } else {
            "cache checked"
        },
        report.seconds,
        report.image.dir.display(),
        report.image.size_bytes as f64 / (1024.0 * 1024.0),
    );
    let accel = match status.local.accel.as_str() {
        "kvm" => crate::hypervisor::accel::Accel::Kvm,
        _ => crate::hypervisor::accel::Accel::Tcg,
    };
    let host = crate::hypervisor::Host::open(&status.local.hypervisor).await?;
    let network = crate::hypervisor::netns::GuestNetwork::named(&setup.guest_netns);
    let table = boot(&host, &report.image, &network, accel, rounds).await?;
    print!("{table}");
    Ok(())
}

/// Boots the image `rounds` times each way on `host`; the table of boot times.
pub async fn boot(
    host: &crate::hypervisor::Host,
    image: &crate::image::Image,
    network: &crate::hypervisor::netns::GuestNetwork,
    accel: crate::hypervisor::accel::Accel,
    rounds: usize,
) -> Result<String> {
    use crate::hypervisor::domain::fast_firmware;
    let bzimage = image.dir.join("vmlinuz");
    let variants: [(&str, std::path::PathBuf, Option<std::path::PathBuf>); 2] = [
        ("baseline: bzImage via SeaBIOS", bzimage, None),
        (
            "ours: PVH vmlinux via qboot",
            image.kernel.clone(),
            fast_firmware(),
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let name = format!("pvbench-boot-{}", std::process::id());
    let boot_one = |i: usize| {
        let (_, kernel, firmware) = &variants[i];
        boot_once(host, image, network, accel, &name, kernel, firmware.clone())
    };
    for i in 0..variants.len() {
        boot_one(i).await?; // warm-up, not counted
    }
    for round in 0..rounds.max(1) {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            times[i].push(boot_one(i).await?);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "boot: create -> first HTTP answer, {} round(s) after one warm-up boot of each, order alternating, accel {accel}, image {} ({})",
        rounds.max(1),
        image.name,
        image.dir.display()
    );
    let _ = writeln!(
        out,
        "{:<34} {:>9} {:>9} {:>9}",
        "variant", "median s", "min s", "max s"
    );
    for ((label, _, _), t) in variants.iter().zip(times.iter_mut()) {
        t.sort_by(|a, b| a.total_cmp(b));
        let _ = writeln!(
            out,
            "{:<34} {:>9.2} {:>9.2} {:>9.2}",
            label,
            t[t.len() / 2],
            t[0],
            t[t.len() - 1]
        );
    }
    Ok(out)
}

/// Creates the guest with `kernel` and `firmware`, waits for its HTTP answer,
/// removes it; the seconds from create to answer.
async fn boot_once(
    host: &crate::hypervisor::Host,
    image: &crate::image::Image,
    network: &crate::hypervisor::netns::GuestNetwork,
    accel: crate::hypervisor::accel::Accel,
    name: &str,
    kernel: &std::path::Path,
    firmware: Option<std::path::PathBuf>,
) -> Result<f64> {
    let uuid = crate::hypervisor::domain::new_uuid();
    let ip = network.guest_ip_for(&uuid);
    let console_log = crate::paths::console_log_dir().join(format!("{name}.log"));
    let _ = std::fs::create_dir_all(crate::paths::console_log_dir());
    let spec = crate::hypervisor::domain::DomainSpec {
        name: name.to_string(),
        network: network.nic(&uuid, ip),
        uuid,
        vcpus: 1,
        memory_mib: 128,
        accel,
        kernel: kernel.to_path_buf(),
        initrd: image.initrd.clone(),
        console_log: console_log.clone(),
        image: image.name.clone(),
        services: Vec::new(),
        data_disk: None,
        firmware,
        boot_disk: None,
    };
    let started = Instant::now();
    host.create(&spec).await?;
    let addr = std::net::SocketAddr::new(ip.into(), 80);
    let net = network.clone();
    let answered =
        tokio::task::spawn_blocking(move || wait_for_http(&net, addr, Duration::from_secs(120)))
            .await?;
    let seconds = started.elapsed().as_secs_f64();
    host.remove(name).await?;
    let _ = std::fs::remove_file(&console_log);
    if !answered {
        return Err(anyhow!("guest at {ip} never answered HTTP within 120 s"));
    }
    Ok(seconds)
}

/// One HTTP exchange every 50 ms until the guest answers.
fn wait_for_http(
    network: &crate::hypervisor::netns::GuestNetwork,
    addr: std::net::SocketAddr,
    limit: Duration,
) -> bool {
    use std::io::{Read, Write};
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(mut s) = network.connect(addr, Duration::from_millis(500)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = [0u8; 5];
            if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                && s.read_exact(&mut head).is_ok()
                && &head == b"HTTP/"
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
