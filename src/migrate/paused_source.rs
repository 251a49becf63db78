//! A migration failed and libvirt left the VM paused on the source: libvirt
//! could not tell whether the destination resumed it (the switch-over failed
//! half-way). Resuming it blindly could run the VM on two hosts at once, leaving
//! it paused stops its service. So the source asks the destination: once the
//! destination says it has no such VM (name and UUID) or holds it stopped, the VM
//! is resumed here; if the destination runs it, or cannot be asked, the VM stays
//! paused and the operator is told exactly that. A VM someone paused on purpose
//! (libvirt's reason "user") is never resumed.

use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::Migrations;
use crate::api::Role;
use crate::model::VmState;
use crate::node::protocol::{ControlRequest, ControlResponse};

/// The destination's libvirt drops a half-received VM a moment after the tunnel
/// closes: ask again for this long while it still holds one.
const SETTLE: Duration = Duration::from_secs(20);
const ASK_EVERY: Duration = Duration::from_secs(1);

/// What the destination said about the VM.
#[derive(Debug, Clone, PartialEq)]
enum Elsewhere {
    /// No VM of that name and UUID there.
    Absent,
    There(VmState),
    /// It could not be asked (gone, cut off, refused): why.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Resume,
    /// Ask again shortly (the destination still holds a half-received copy).
    Wait,
    /// Leave it paused; the phrase for the operator.
    Leave(String),
}

/// Whether the paused source may resume, given what the destination said.
fn decide(elsewhere: &Elsewhere, dest_name: &str, waited_out: bool) -> Verdict {
    match elsewhere {
        Elsewhere::Absent | Elsewhere::There(VmState::Stopped | VmState::Crashed) => {
            Verdict::Resume
        }
        Elsewhere::There(VmState::Running) => Verdict::Leave(format!(
            "it is paused on this peer and RUNS on {dest_name}: the copy there is the live one; remove this paused one (`peervisor vm rm`) rather than resume it"
        )),
        Elsewhere::There(_) if !waited_out => Verdict::Wait,
        Elsewhere::There(state) => Verdict::Leave(format!(
            "it is paused on this peer and {} on {dest_name}: resume one of them by hand (`peervisor vm resume`), never both",
            state.as_str()
        )),
        Elsewhere::Unknown(why) => Verdict::Leave(format!(
            "it is paused on this peer and {dest_name} cannot be asked whether it runs there ({why}): check {dest_name} before resuming it"
        )),
    }
}

impl Migrations {
    /// Source side, after a failed migration left `vm` paused here: resumes it
    /// if the destination surely does not run it. Returns where the VM is, for
    /// the error the operator reads.
    pub(super) async fn settle_paused_source(
        &self,
        vm: &str,
        uuid: &str,
        dest: PeerId,
        dest_name: &str,
    ) -> String {
        if self.host.paused_by_request(vm).await.unwrap_or(true) {
            return "it is paused on this peer, as someone asked (not by libvirt for the migration): it stays paused".into();
        }
        let deadline = Instant::now() + SETTLE;
        loop {
            let elsewhere = self.ask_vm_state(dest, vm, uuid).await;
            match decide(&elsewhere, dest_name, Instant::now() > deadline) {
                Verdict::Resume => {
                    tracing::warn!(
                        "VM '{vm}' was left paused by the failed migration and {dest_name} does not run it: resuming it here"
                    );
                    return match self.host.resume(vm).await {
                        Ok(()) => format!(
                            "it was left paused and, {dest_name} not running it, resumed: it keeps running on this peer"
                        ),
                        Err(e) => {
                            format!("it is paused on this peer and resuming it failed: {e:#}")
                        }
                    };
                }
                Verdict::Wait => tokio::time::sleep(ASK_EVERY).await,
                Verdict::Leave(why) => {
                    tracing::error!("VM '{vm}': {why}");
                    return why;
                }
            }
        }
    }

    async fn ask_vm_state(&self, dest: PeerId, vm: &str, uuid: &str) -> Elsewhere {
        let request = ControlRequest::VmState {
            vm: vm.to_string(),
            uuid: uuid.to_string(),
        };
        match self.node.request(dest, request).await {
            Ok(ControlResponse::VmState { state: None }) => Elsewhere::Absent,
            Ok(ControlResponse::VmState { state: Some(s) }) => Elsewhere::There(s),
            Ok(ControlResponse::Refused { reason }) => {
                Elsewhere::Unknown(crate::node::protocol::peer_text(&reason))
            }
            Ok(other) => Elsewhere::Unknown(format!("unexpected answer {other:?}")),
            Err(e) => Elsewhere::Unknown(format!("{e:#}")),
        }
    }

    /// Destination side: the state of a VM (name and UUID) here, for a peer that
    /// may migrate VMs here.
    pub async fn vm_state_for(&self, from: PeerId, vm: &str, uuid: &str) -> ControlResponse {
        if !self.access.allows(&from, Role::Control) {
            return ControlResponse::Refused {
                reason: format!("peer {from} is not allowed to control this host"),
            };
        }
        // Fresh from libvirt, not the last listing.
        self.host.refresh().await;
        let state = match self.host.vm(vm).await {
            Ok(v) if v.uuid.eq_ignore_ascii_case(uuid) => Some(v.state),
            // Another VM under that name, or none.
            _ => None,
        };
        ControlResponse::VmState { state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_only_when_the_destination_surely_does_not_run_it() {
        assert_eq!(decide(&Elsewhere::Absent, "b", false), Verdict::Resume);
        assert_eq!(
            decide(&Elsewhere::There(VmState::Stopped), "b", false),
            Verdict::Resume
        );
        let Verdict::Leave(why) = decide(&Elsewhere::There(VmState::Running), "b", false) else {
            panic!("never resumed while the destination runs it");
        };
        assert!(why.contains("RUNS on b"), "{why}");
        // A half-received copy there: wait for its libvirt to drop it...
        assert_eq!(
            decide(&Elsewhere::There(VmState::Paused), "b", false),
            Verdict::Wait
        );
        // ...but not forever.
        let Verdict::Leave(why) = decide(&Elsewhere::There(VmState::Paused), "b", true) else {
            panic!("gives up waiting");
        };
        assert!(why.contains("never both"), "{why}");
        let Verdict::Leave(why) = decide(&Elsewhere::Unknown("gone".into()), "b", false) else {
            panic!("never resumed without an answer");
        };
        assert!(
            why.contains("cannot be asked") && why.contains("gone"),
            "{why}"
        );
    }
}
