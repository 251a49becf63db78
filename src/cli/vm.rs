//! `peervisor vm ...`: list, create (from a manifest or flags), lifecycle, stats;
//! and the VM table `status` shows too.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::model::VmView;

use super::VmCommand;
use crate::names::VmName;

/// `peervisor vm ...`.
pub async fn run(control: &ControlClient, command: VmCommand) -> Result<()> {
    let request = match command {
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
            vcpus,
            memory_mib,
            image,
            data_disk_mib,
        } => create_request(name, manifest, vcpus, memory_mib, image, data_disk_mib)?,
        VmCommand::Start { name, force } => Request::VmStart {
            name,
            foreign: force,
        },
        VmCommand::Stop {
            name,
            hard,
            timeout,
            force,
        } => Request::VmStop {
            name,
            force: hard,
            timeout_s: Some(timeout),
            foreign: force,
        },
        VmCommand::Pause { name, force } => Request::VmPause {
            name,
            foreign: force,
        },
        VmCommand::Resume { name, force } => Request::VmResume {
            name,
            foreign: force,
        },
        VmCommand::Rm { name, yes, force } => {
            if !yes && !confirm(&format!("Delete VM '{name}' and its disks?"))? {
                bail!("not removed");
            }
            Request::VmRemove {
                name,
                foreign: force,
            }
        }
        VmCommand::Stats { name, json, watch } => {
            return vm_stats(control, &name, json, watch).await;
        }
        VmCommand::Console { name } => return super::console::attach(control, name).await,
    };
    super::done(control, request).await
}

/// The create request from a manifest file and/or flags (flags win).
fn create_request(
    name: Option<VmName>,
    manifest: Option<PathBuf>,
    vcpus: Option<u32>,
    memory_mib: Option<u64>,
    image: Option<String>,
    data_disk_mib: Option<u64>,
) -> Result<Request> {
    use crate::hypervisor::manifest::VmManifest;
    let base = match &manifest {
        Some(path) => VmManifest::load(path)?,
        None => VmManifest::parse(&format!(
            "name = {:?}",
            name.clone()
                .ok_or_else(|| anyhow::anyhow!("give a VM name or --manifest FILE"))?
        ))?,
    };
    let m = VmManifest {
        name: name.map_or(base.name.clone(), String::from),
        vcpus: vcpus.unwrap_or(base.vcpus),
        memory_mib: memory_mib.unwrap_or(base.memory_mib),
        data_disk_mib: data_disk_mib.or(base.data_disk_mib),
        image: image.or(base.image.clone()),
        services: base.services.clone(),
    };
    m.validate().map_err(|e| match &manifest {
        Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
        None => e,
    })?;
    Ok(Request::VmCreate {
        services: m.service_specs(),
        name: m.name.into(),
        vcpus: m.vcpus,
        memory_mib: m.memory_mib,
        image: m
            .image
            .unwrap_or_else(|| crate::image::DEFAULT_IMAGE.into()),
        data_disk_mib: m.data_disk_mib,
    })
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
