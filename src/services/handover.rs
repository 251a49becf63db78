//! Consumer streams that reach this peer while one of its VMs migrates away.
//!
//! Consumers learn where a VM went from gossip, which takes a moment after the
//! switch-over; until then they keep sending streams here. Rather than refusing
//! them (a failed request for the consumer), the source holds a stream while the
//! guest is paused for the switch-over, then forwards it to the destination peer,
//! and keeps forwarding for a while after the move.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use libp2p::PeerId;
use tokio::sync::Notify;

use super::Services;
use super::proxy::{self, Answer};
use crate::names::{ServiceName, VmName};
use crate::node::Client;

/// How long after a move streams for the VM's services are still forwarded.
const FORWARD_FOR: Duration = Duration::from_secs(60);
/// Longest a stream is held while the migration is under way.
const HOLD_MAX: Duration = Duration::from_secs(10);

struct Departure {
    vm: VmName,
    services: Vec<ServiceName>,
    dest: PeerId,
    /// When the VM arrived at `dest`; None while it is still migrating.
    moved: Option<Instant>,
}

#[derive(Default)]
pub struct Handovers {
    departures: Mutex<Vec<Departure>>,
    changed: Notify,
}

impl Handovers {
    /// A migration of `vm` (providing `services`) to `dest` starts.
    pub fn begin(&self, vm: &VmName, services: Vec<ServiceName>, dest: PeerId) {
        let mut list = self.lock();
        list.retain(|d| d.vm != *vm && d.moved.is_none_or(|t| t.elapsed() < FORWARD_FOR));
        list.push(Departure {
            vm: vm.clone(),
            services,
            dest,
            moved: None,
        });
    }

    /// The migration of `vm` ended: moved (forward from now on) or not (serve here).
    pub fn end(&self, vm: &VmName, moved: bool) {
        {
            let mut list = self.lock();
            if moved {
                for d in list.iter_mut().filter(|d| d.vm == *vm && d.moved.is_none()) {
                    d.moved = Some(Instant::now());
                }
            } else {
                list.retain(|d| !(d.vm == *vm && d.moved.is_none()));
            }
        }
        self.changed.notify_waiters();
    }

    /// `vm` is arriving here: forwarding it elsewhere (it left once, within
    /// FORWARD_FOR, and comes back) is over.
    pub fn arriving(&self, vm: &VmName) {
        self.lock().retain(|d| d.vm != *vm);
        self.changed.notify_waiters();
    }

    /// Where a stream for `service` should go instead of here: waits while its VM
    /// is migrating away, then the destination. None when the service is not
    /// leaving (or did not leave) this peer.
    pub async fn destination(&self, service: &str) -> Option<PeerId> {
        let deadline = tokio::time::Instant::now() + HOLD_MAX;
        loop {
            let changed = self.changed.notified();
            let found = self
                .lock()
                .iter()
                .rev()
                .find(|d| d.services.iter().any(|s| s == service))
                .map(|d| (d.dest, d.moved));
            match found {
                None => return None,
                Some((dest, Some(moved))) => {
                    return (moved.elapsed() < FORWARD_FOR).then_some(dest);
                }
                Some((_, None)) => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Departure>> {
        self.departures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Services {
    /// Records that `vm` is leaving for `dest`, with the services it provides.
    pub async fn handover_begin(&self, vm: &VmName, dest: PeerId) {
        let services = self
            .local_services()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.vm.as_ref() == Some(vm))
            .map(|s| s.spec.name)
            .collect();
        self.handovers.begin(vm, services, dest);
    }
}

/// Provider side: carries a consumer's stream for `service` on to `dest`.
pub(super) async fn forward<S>(
    node: &Client,
    stream: &mut S,
    dest: PeerId,
    service: &str,
) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut streams = node.streams();
    let mut upstream = match proxy::open_served_there(&mut streams, dest, service).await {
        Ok(upstream) => upstream,
        Err(e) => {
            let error = Some(format!("'{service}' moved to {dest}, which refused: {e:#}"));
            proxy::write_frame(stream, &Answer { error }).await?;
            return Err(e);
        }
    };
    proxy::write_frame(stream, &Answer { error: None }).await?;
    proxy::pipe(stream, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn streams_wait_for_the_switch_over_then_go_to_the_destination() {
        let h = Arc::new(Handovers::default());
        let dest = PeerId::random();
        assert_eq!(h.destination("web").await, None, "nothing is leaving");
        h.begin(&"web-1".into(), vec!["web".into()], dest);
        let waiting = {
            let h = h.clone();
            tokio::spawn(async move { h.destination("web").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "held while migrating");
        h.end(&"web-1".into(), true);
        assert_eq!(waiting.await.unwrap(), Some(dest));
        assert_eq!(h.destination("web").await, Some(dest));
        assert_eq!(h.destination("other").await, None);
    }

    /// A VM that left and comes back: the peer it came back to forwards its
    /// streams no more (else the two peers would forward to each other).
    #[tokio::test]
    async fn a_vm_arriving_again_is_no_longer_forwarded_away() {
        let h = Handovers::default();
        let other = PeerId::random();
        h.begin(&"web-1".into(), vec!["web".into()], other);
        h.end(&"web-1".into(), true);
        assert_eq!(h.destination("web").await, Some(other));
        h.arriving(&"web-1".into());
        assert_eq!(h.destination("web").await, None);
    }

    #[tokio::test]
    async fn a_failed_migration_releases_held_streams_to_be_served_here() {
        let h = Arc::new(Handovers::default());
        h.begin(&"web-1".into(), vec!["web".into()], PeerId::random());
        let waiting = {
            let h = h.clone();
            tokio::spawn(async move { h.destination("web").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.end(&"web-1".into(), false);
        assert_eq!(waiting.await.unwrap(), None);
    }
}
