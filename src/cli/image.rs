//! `peervisor image build` (the guest image from Debian packages, optionally as
//! a bootable disk) and `peervisor image import` (a base disk image).

use std::path::PathBuf;

use anyhow::{Result, anyhow};

/// `peervisor image build [--disk] [--json]`.
pub async fn build(dir: PathBuf, name: String, disk: bool, json: bool) -> Result<()> {
    let report = tokio::task::spawn_blocking(move || {
        crate::image::build(&dir, &crate::image::ImageSpec { name }, &mut |step| {
            eprintln!("  {step}");
        })
    })
    .await??;
    let image = &report.image;
    let boot_disk = if disk {
        let (dir, out) = (image.dir.clone(), image.dir.join("disk.qcow2"));
        let made = out.clone();
        tokio::task::spawn_blocking(move || crate::image::disk::build_boot_disk(&dir, &out))
            .await??;
        Some(made)
    } else {
        None
    };
    if json {
        let value = serde_json::json!({
            "name": image.name,
            "built": report.built,
            "kernel_version": image.kernel_version,
            "size_bytes": image.size_bytes,
            "dir": image.dir,
            "seconds": report.seconds,
            "disk": boot_disk,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let verb = if report.built { "built" } else { "up to date" };
    println!(
        "image '{}' {verb}: kernel {} , {:.1} MiB in {} ({:.1} s)",
        image.name,
        image.kernel_version,
        image.size_bytes as f64 / (1024.0 * 1024.0),
        image.dir.display(),
        report.seconds
    );
    if let Some(disk) = boot_disk {
        println!("bootable disk: {}", disk.display());
    }
    Ok(())
}

/// `peervisor image import FILE [--name NAME]`.
pub async fn import(dir: PathBuf, file: PathBuf, name: Option<String>, json: bool) -> Result<()> {
    let name = match name {
        Some(name) => name,
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{}: give --name", file.display()))?,
    };
    let imported =
        tokio::task::spawn_blocking(move || crate::image::disk::import(&dir, &file, &name))
            .await??;
    if json {
        let value = serde_json::json!({
            "name": imported.name,
            "format": imported.info.format,
            "virtual_size_bytes": imported.info.virtual_size,
            "sha256": imported.sha256,
            "path": imported.path,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "disk image '{}' imported: {}, {:.1} MiB virtual, sha256 {} ({})",
        imported.name,
        imported.info.format,
        imported.info.virtual_size as f64 / (1024.0 * 1024.0),
        imported.sha256,
        imported.path.display()
    );
    Ok(())
}
