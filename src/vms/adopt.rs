//! VMs defined outside peervisor (virsh, virt-manager, other tools): listed as
//! foreign and left alone until the operator adopts one (`vm adopt`), which
//! writes our metadata with its services into its definition, so they are
//! published and it can be migrated; `vm release` takes the metadata out again.
//! An adopted VM is never destroyed by peervisor on its own (not with the node's
//! --destroy-vms-on-exit either).

use anyhow::{Result, bail};

use super::Vms;
use crate::hypervisor::domain::adopted_metadata_xml;
use crate::hypervisor::manifest::{ManifestService, VmManifest};
use crate::model::ServiceSpec;
use crate::names::VmName;

impl Vms {
    pub async fn adopt(&self, name: &VmName, services: Vec<ServiceSpec>) -> Result<String> {
        // The services as a manifest would have them: same checks, same errors.
        VmManifest {
            name: name.to_string(),
            vcpus: 1,
            memory_mib: 128,
            data_disk_mib: None,
            image: None,
            network: None,
            bridge: None,
            disk: None,
            overlay: true,
            cloud_init: None,
            services: services.iter().map(ManifestService::from).collect(),
        }
        .validate()?;
        let vm = self.host.vm(name).await?;
        if vm.adopted {
            bail!("VM '{name}' is adopted already (`vm release {name}` undoes it)");
        }
        if vm.managed {
            bail!("VM '{name}' was created by peervisor: there is nothing to adopt");
        }
        self.host
            .set_metadata(name, Some(adopted_metadata_xml(&services)))
            .await?;
        self.changed.notify_one();
        let published = if services.is_empty() {
            format!("its HTTP service (port 80) is published as '{name}'")
        } else {
            let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
            format!("its services are published: {}", names.join(", "))
        };
        Ok(format!("VM '{name}' adopted; {published}"))
    }

    pub async fn release(&self, name: &VmName) -> Result<String> {
        let vm = self.host.vm(name).await?;
        if !vm.adopted {
            if vm.managed {
                bail!("VM '{name}' was created by peervisor, not adopted (`vm rm` removes it)");
            }
            bail!("VM '{name}' is not adopted");
        }
        self.host.set_metadata(name, None).await?;
        self.changed.notify_one();
        Ok(format!(
            "VM '{name}' released: listed as foreign again, its services withdrawn"
        ))
    }
}
