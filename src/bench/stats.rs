//! `peervisor bench stats`: what one stats tick costs with many domains, on
//! libvirt's in-process test driver (no daemon, no guests: it measures our code
//! plus libvirt's API path). Baseline in the same run: the per-domain way
//! (list the domains, then one info call each), as tools without the bulk API do.

use std::fmt::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use virt::connect::Connect;

use crate::hypervisor::sampler::{self, SamplerConfig, StatsBoard};

pub fn stats_tick(domains: usize, rounds: usize) -> Result<String> {
    if domains == 0 || rounds == 0 {
        return Err(anyhow!("--domains and --rounds must be at least 1"));
    }
    virt::error::clear_error_callback();
    let conn = Connect::open(Some("test:///default"))
        .map_err(|e| anyhow!("opening test:///default: {}", e.message()))?;
    let setup = Instant::now();
    for i in 0..domains {
        let xml = format!(
            "<domain type='test'><name>bench-{i}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>\
             <devices><interface type='network'><source network='default'/></interface></devices></domain>"
        );
        let d = conn
            .define_domain_xml(&xml)
            .map_err(|e| anyhow!("defining bench-{i}: {}", e.message()))?;
        d.create()
            .map_err(|e| anyhow!("starting bench-{i}: {}", e.message()))?;
    }
    let setup_s = setup.elapsed().as_secs_f64();

    let board = StatsBoard::new(SamplerConfig::default());
    let origin = Instant::now();
    let mut bulk = Vec::with_capacity(rounds);
    let mut records_seen = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let records =
            sampler::collect(&conn).map_err(|e| anyhow!("bulk stats: {}", e.message()))?;
        board.update(&records, origin.elapsed() + Duration::from_secs(1), 2);
        bulk.push(t.elapsed());
        records_seen = records.len();
    }

    let mut per_domain = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let list = conn
            .list_all_domains(0)
            .map_err(|e| anyhow!("listing: {}", e.message()))?;
        for d in &list {
            let _ = d.info();
        }
        per_domain.push(t.elapsed());
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "stats tick, libvirt test driver, {records_seen} domains ({domains} defined+started in {setup_s:.2} s), {rounds} rounds"
    );
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>10} {:>10} {:>12}",
        "method", "median ms", "p95 ms", "max ms", "per VM us"
    );
    for (label, times) in [
        ("bulk GetAllDomainStats + rates (ours)", &mut bulk),
        ("baseline: list + info per domain", &mut per_domain),
    ] {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = times[times.len() / 2];
        let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
        let max = times[times.len() - 1];
        let _ = writeln!(
            out,
            "{:<44} {:>10.2} {:>10.2} {:>10.2} {:>12.1}",
            label,
            ms(median),
            ms(p95),
            ms(max),
            median.as_secs_f64() * 1e6 / records_seen.max(1) as f64
        );
    }
    Ok(out)
}

/// `peervisor bench boot`: seconds from "create" (define + start) to the guest's
/// HTTP service answering, on a running node's libvirt. Ours (PVH kernel + qboot)
/// against the baseline in the same run (the bzImage through SeaBIOS).
pub async fn boot(
    host: &crate::hypervisor::Host,
    image: &crate::image::Image,
    network: &crate::hypervisor::netns::GuestNetwork,
    accel: crate::hypervisor::accel::Accel,
    rounds: usize,
) -> Result<String> {
    use crate::hypervisor::domain::{DomainSpec, fast_firmware};
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
    for _ in 0..rounds.max(1) {
        for (i, (_, kernel, firmware)) in variants.iter().enumerate() {
            let uuid = crate::hypervisor::domain::new_uuid();
            let ip = network.guest_ip_for(&uuid);
            let console_log = crate::paths::console_log_dir().join(format!("{name}.log"));
            let _ = std::fs::create_dir_all(crate::paths::console_log_dir());
            let spec = DomainSpec {
                name: name.clone(),
                network: network.nic(&uuid, ip),
                uuid,
                vcpus: 1,
                memory_mib: 128,
                accel,
                kernel: kernel.clone(),
                initrd: image.initrd.clone(),
                console_log: console_log.clone(),
                image: image.name.clone(),
                services: Vec::new(),
                data_disk: None,
                firmware: firmware.clone(),
            };
            let started = Instant::now();
            host.create(&spec).await?;
            let addr = std::net::SocketAddr::new(ip.into(), 80);
            let net = network.clone();
            let answered = tokio::task::spawn_blocking(move || {
                wait_for_http(&net, addr, Duration::from_secs(120))
            })
            .await?;
            let seconds = started.elapsed().as_secs_f64();
            host.remove(&name).await?;
            let _ = std::fs::remove_file(&console_log);
            if !answered {
                return Err(anyhow!("guest at {ip} never answered HTTP within 120 s"));
            }
            times[i].push(seconds);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "boot: create -> first HTTP answer, {} round(s), accel {accel}, image {} ({})",
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
