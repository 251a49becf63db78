//! `peervisor vm ...`: list, create (from a manifest or flags), lifecycle, stats;
//! and the VM table `status` shows too.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::model::VmView;

use super::VmCommand;
use super::args::CreateFlags;
use crate::names::VmName;

/// `peervisor vm ...`.
pub async fn run(control: &ControlClient, command: VmCommand) -> Result<()> {
    let (request, json) = match command {
        VmCommand::List { json } => {
            let Reply::Vms { vms } = control.call(&Request::VmList).await? else {
                bail!("unexpected reply to vm list");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
            } else {
                print!("{}", vms_text(&vms));
            }
            return Ok(());
        }
        VmCommand::Create {
            name,
            manifest,
            flags,
            json,
        } => (create_request(name, manifest, flags)?, json),
        VmCommand::Adopt {
            name,
            manifest,
            json,
        } => (adopt_request(name, manifest)?, json),
        VmCommand::Release { name, json } => (Request::VmRelease { name }, json),
        VmCommand::Start { name, force, json } => (
            Request::VmStart {
                name,
                foreign: force,
            },
            json,
        ),
        VmCommand::Stop {
            name,
            hard,
            timeout,
            force,
            json,
        } => (
            Request::VmStop {
                name,
                force: hard,
                timeout_s: Some(timeout),
                foreign: force,
            },
            json,
        ),
        VmCommand::Pause { name, force, json } => (
            Request::VmPause {
                name,
                foreign: force,
            },
            json,
        ),
        VmCommand::Resume { name, force, json } => (
            Request::VmResume {
                name,
                foreign: force,
            },
            json,
        ),
        VmCommand::Rm {
            name,
            yes,
            force,
            json,
        } => {
            if !yes && !confirm(&format!("Delete VM '{name}' and its disks?"))? {
                bail!("not removed");
            }
            let request = Request::VmRemove {
                name,
                foreign: force,
            };
            (request, json)
        }
        VmCommand::Stats { name, json, watch } => {
            return vm_stats(control, &name, json, watch).await;
        }
        VmCommand::Console { name } => return super::console::attach(control, name).await,
    };
    super::done(control, request, json).await
}

/// The create request from a manifest file and/or flags (flags win).
fn create_request(
    name: Option<VmName>,
    manifest: Option<PathBuf>,
    flags: CreateFlags,
) -> Result<Request> {
    let CreateFlags {
        vcpus,
        memory_mib,
        image,
        data_disk_mib,
        network,
        bridge,
        disk,
        no_overlay,
        cloud_init,
    } = flags;
    use crate::hypervisor::manifest::VmManifest;
    let base = match &manifest {
        Some(path) => VmManifest::load(path)?,
        None => VmManifest::parse(&format!(
            "name = {:?}",
            name.clone()
                .ok_or_else(|| anyhow::anyhow!("give a VM name or --manifest FILE"))?
        ))?,
    };
    let flag_nic = network.is_some() || bridge.is_some();
    let m = VmManifest {
        name: name.map_or(base.name.clone(), String::from),
        vcpus: vcpus.unwrap_or(base.vcpus),
        memory_mib: memory_mib.unwrap_or(base.memory_mib),
        data_disk_mib: data_disk_mib.or(base.data_disk_mib),
        image: image.or(base.image.clone()),
        // A flag replaces the manifest's choice, network or bridge alike.
        network: if flag_nic {
            network
        } else {
            base.network.clone()
        },
        bridge: if flag_nic {
            bridge
        } else {
            base.bridge.clone()
        },
        // A path is the operator's, relative to where they typed it.
        disk: disk.map(absolute_disk).or(base.disk.clone()),
        overlay: base.overlay && !no_overlay,
        cloud_init: cloud_init.or(base.cloud_init.clone()),
        services: base.services.clone(),
    };
    m.validate().map_err(|e| match &manifest {
        Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
        None => e,
    })?;
    let nic = m.nic()?;
    // Read here, where the operator's file is; the node may run elsewhere.
    let user_data = m
        .cloud_init
        .as_deref()
        .map(crate::image::cloud_init::load_user_data)
        .transpose()?;
    Ok(Request::VmCreate {
        services: m.service_specs(),
        name: m.name.into(),
        vcpus: m.vcpus,
        memory_mib: m.memory_mib,
        image: m
            .image
            .unwrap_or_else(|| crate::image::DEFAULT_IMAGE.into()),
        data_disk_mib: m.data_disk_mib,
        nic,
        disk: m.disk,
        no_overlay: !m.overlay,
        user_data,
    })
}

/// A disk image path made absolute (the node runs elsewhere); a bare name
/// (an imported image) stays as it is.
fn absolute_disk(disk: String) -> String {
    if disk.contains('/') {
        std::path::absolute(&disk)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or(disk)
    } else {
        disk
    }
}

/// `vm adopt NAME [-f manifest.toml]`: the manifest's services; its name must
/// be the VM's (a manifest for another VM is a mistake worth a word).
fn adopt_request(name: VmName, manifest: Option<PathBuf>) -> Result<Request> {
    use crate::hypervisor::manifest::VmManifest;
    let services = match manifest {
        Some(path) => {
            let m = VmManifest::load(&path)?;
            if m.name != name.as_str() {
                bail!(
                    "{}: name: the manifest is for VM '{}', not '{name}'",
                    path.display(),
                    m.name
                );
            }
            m.service_specs()
        }
        None => Vec::new(),
    };
    Ok(Request::VmAdopt { name, services })
}

/// Asks on the terminal; without one, the operator must pass --yes.
fn confirm(question: &str) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!("{question} Not a terminal: pass --yes to confirm");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn vm_stats(control: &ControlClient, name: &VmName, json: bool, watch: bool) -> Result<()> {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let request = Request::VmStats { name: name.clone() };
        let Reply::Vms { vms } = control.call(&request).await? else {
            bail!("unexpected reply to vm stats");
        };
        let vm = vms
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no VM named '{name}'"))?;
        if json {
            // One JSON object per line when watching, so scripts can stream it.
            if watch {
                println!("{}", serde_json::to_string(&vm)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&vm)?);
            }
        } else {
            println!("{}", super::top::stats_line(&vm));
        }
        if !watch {
            return Ok(());
        }
    }
}

/// VMs as a plain table.
pub fn vms_text(vms: &[VmView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<8} {:>5} {:>8}  {:<15}",
        "VM", "STATE", "VCPU", "MEM", "IP"
    );
    for vm in vms {
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:>5} {:>5}MiB  {:<15}{}",
            vm.name,
            vm.state.as_str(),
            vm.vcpus,
            vm.memory_mib,
            vm.ip.as_deref().unwrap_or("-"),
            if vm.managed { "" } else { "  (foreign)" }
        );
    }
    out
}
