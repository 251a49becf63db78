//! The migrating VM's service as a client sees it: while a migration runs, the
//! source probes the VM's first service every few tens of milliseconds, both
//! directly (the guest on this peer's guest network) and through the overlay at
//! the destination peer (which serves it once the VM runs there), and keeps the
//! longest time without an answer. Between machines only the second path reaches
//! the moved VM; on one machine both do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::select_ok;
use libp2p::PeerId;

use super::Migrations;
use crate::services::probe::GapProbe;
use crate::services::proxy;
use crate::services::{LocalService, Target};

/// A direct probe of a paused guest gives up after this (the next probe has
/// started long before).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A direct probe slower than this means the guest is pausing or gone: from then
/// on every probe also asks the destination. Until then only the direct probe
/// runs, so the destination's libvirtd, busy receiving the VM, is not asked to
/// list its domains 40 times a second.
const DIRECT_SLOW: Duration = Duration::from_millis(100);

impl Migrations {
    /// Starts probing the service of `vm` (here, and at `dest` once it runs there).
    /// None when the VM has no service on the guest network to probe.
    pub(super) async fn probe_migrating_service(
        self: &Arc<Self>,
        vm: &str,
        dest: PeerId,
    ) -> Option<(GapProbe, String)> {
        let local = self.services.local_services().await.ok()?;
        let service = local
            .into_iter()
            .find(|s| s.vm.as_deref() == Some(vm) && matches!(s.target, Target::Guest { .. }))?;
        let Target::Guest { ip, port } = service.target else {
            return None;
        };
        let described = format!("{} ({ip}:{port})", service.spec.name);
        let migrations = self.clone();
        let service = Arc::new(service);
        let switching = Arc::new(AtomicBool::new(false));
        let probe = GapProbe::start(move || {
            let (migrations, service, switching) =
                (migrations.clone(), service.clone(), switching.clone());
            async move { migrations.service_answers(&service, dest, &switching).await }
        });
        Some((probe, described))
    }

    /// True when the service accepts a connection here or through `dest` (asked
    /// once `switching`, see DIRECT_SLOW).
    async fn service_answers(
        self: &Arc<Self>,
        service: &LocalService,
        dest: PeerId,
        switching: &AtomicBool,
    ) -> bool {
        let Target::Guest { ip, port } = service.target else {
            return false;
        };
        let network = self.network.clone();
        let mut direct: Probe = Box::pin(async move {
            let addr = SocketAddr::from((ip, port));
            match tokio::task::spawn_blocking(move || network.connect(addr, CONNECT_TIMEOUT)).await
            {
                Ok(Ok(_)) => Ok(()),
                _ => Err(()),
            }
        });
        if !switching.load(Ordering::Relaxed) {
            match tokio::time::timeout(DIRECT_SLOW, &mut direct).await {
                Ok(answer) => return answer.is_ok(),
                Err(_) => switching.store(true, Ordering::Relaxed),
            }
        }
        let mut streams = self.node.streams();
        let name = service.spec.name.clone();
        let services = self.services.clone();
        let vm = service.vm.clone().unwrap_or_default();
        let overlay: Probe = Box::pin(async move {
            proxy::open_served_there(&mut streams, dest, &name)
                .await
                .map_err(|_| ())?;
            // The destination serves it: the VM runs there. Consumer streams
            // held here go there now, not when libvirt returns (after it has
            // stopped the QEMU here, a few hundred ms later).
            services.handovers().end(&vm, true);
            Ok(())
        });
        select_ok([direct, overlay]).await.is_ok()
    }
}

type Probe = std::pin::Pin<Box<dyn Future<Output = Result<(), ()>> + Send>>;
