//! `peervisor image build`: the guest image from Debian packages.

use std::path::PathBuf;

use anyhow::Result;

/// `peervisor image build`.
pub async fn build(dir: PathBuf, name: String, json: bool) -> Result<()> {
    let report = tokio::task::spawn_blocking(move || {
        crate::image::build(&dir, &crate::image::ImageSpec { name }, &mut |step| {
            eprintln!("  {step}");
        })
    })
    .await??;
    let image = &report.image;
    if json {
        let value = serde_json::json!({
            "name": image.name,
            "built": report.built,
            "kernel_version": image.kernel_version,
            "size_bytes": image.size_bytes,
            "dir": image.dir,
            "seconds": report.seconds,
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
    Ok(())
}
