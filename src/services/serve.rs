//! The provider side: consumers' streams for the services this peer provides,
//! each checked (role, rate, open streams, the service's allow list and
//! connection limit) before anything is connected, then piped to the guest or
//! host service; a stream for a VM migrating away is handed over.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use futures::StreamExt;
use libp2p::PeerId;

use super::proxy::{self, Answer, Hello};
use super::{LocalService, Services};
use crate::admission::limits::{self, OpenGuard};
use crate::api::Role;
use crate::node::protocol::SERVICE_PROTOCOL;
use crate::phases::Phases;

/// Provider side: serves consumers' streams for the services this peer provides.
pub(super) async fn accept_service_streams(services: Arc<Services>) {
    let mut incoming = match services.node.streams().accept(SERVICE_PROTOCOL) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::error!("cannot serve service streams: {e}");
            return;
        }
    };
    while let Some((from, stream)) = incoming.next().await {
        let services = services.clone();
        tokio::spawn(async move {
            services.served.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = serve_stream(&services, from, stream).await {
                tracing::debug!("service stream from {from}: {e:#}");
            }
            services.served.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_stream(
    services: &Services,
    from: PeerId,
    stream: crate::node::Stream,
) -> Result<()> {
    use tokio_util::compat::FuturesAsyncReadCompatExt;
    let phases = Phases::start();
    let mut stream = stream.compat();
    // Counted before the header, so streams that never send one count too.
    let open = services
        .limits
        .open_streams
        .try_open(&from, services.limits.config.streams_per_peer);
    let hello: Hello = match proxy::read_frame(&mut stream).await {
        Ok(hello) => hello,
        Err(e) => {
            if services.limits.log_refusal(&from) {
                tracing::warn!("dropped a service stream from {from}: {e:#}");
            }
            return Ok(());
        }
    };
    phases.mark("header");
    let service_name = hello.service.clone();
    let logged = |outcome: &str| {
        tracing::debug!(
            "service stream for '{service_name}' from {from}: {}{outcome}",
            phases.line()
        )
    };
    // Its VM may be migrating away: held until it moved, then forwarded there
    // (a failed migration leaves it here, admitted below).
    if !hello.served_here
        && services.access.allows(&from, Role::Consume)
        && !services
            .local_services()
            .await
            .is_ok_and(|l| l.iter().any(|s| s.spec.name == hello.service))
        && let Some(dest) = services.handovers.destination(&hello.service).await
    {
        phases.mark("handed over");
        let forwarded =
            super::handover::forward(&services.node, &mut stream, dest, &hello.service).await;
        phases.mark("closed");
        logged(&format!(" (forwarded to {dest})"));
        return forwarded;
    }
    let admitted = match open {
        Some(open) => services
            .admit_stream(from, &hello.service)
            .await
            .map(|(service, guard)| (service, open, guard)),
        None => Err(format!(
            "too many open streams from you (at most {})",
            services.limits.config.streams_per_peer
        )),
    };
    let (service, _open, _slot) = match admitted {
        Ok(admitted) => admitted,
        Err(reason) => {
            if services.limits.log_refusal(&from) {
                tracing::warn!(
                    "refused a stream for '{}' from {from}: {reason}",
                    hello.service
                );
            }
            proxy::write_frame(
                &mut stream,
                &Answer {
                    error: Some(reason),
                },
            )
            .await?;
            return Ok(());
        }
    };
    let upstream = match proxy::connect_target(&service.target, &services.network).await {
        Ok(upstream) => upstream,
        Err(e) => {
            let error = Some(format!("{e:#}"));
            proxy::write_frame(&mut stream, &Answer { error }).await?;
            return Err(e);
        }
    };
    phases.mark("connected");
    let _ = upstream.set_nodelay(true);
    proxy::write_frame(&mut stream, &Answer { error: None }).await?;
    let piped = pipe_timed(&mut stream, upstream, &phases).await;
    logged("");
    piped?;
    Ok(())
}

type ServiceGuard<'a> = Option<OpenGuard<'a, String>>;

impl Services {
    /// May `from` open a stream to `service` now? The service if so, with the
    /// guard of its connection slot; the reason if not, for the consumer to show.
    pub(crate) async fn admit_stream(
        &self,
        from: PeerId,
        service: &str,
    ) -> Result<(LocalService, ServiceGuard<'_>), String> {
        if !self.access.allows(&from, Role::Consume) {
            return Err("this peer may not consume services here".into());
        }
        if let Err(retry) = self.limits.streams.check(&from) {
            let per_s = self.limits.streams.per_s();
            return Err(limits::rate_limited("service streams", per_s, retry));
        }
        let local = self
            .local_services()
            .await
            .map_err(|e| format!("cannot list services here: {e:#}"))?;
        let Some(found) = local.into_iter().find(|s| s.spec.name == service) else {
            return Err(format!("'{service}' is not provided here (any more)"));
        };
        let spec = &found.spec;
        if !spec.allow.is_empty() && !spec.allow.contains(&from.to_string()) {
            return Err(format!(
                "service '{service}' admits only the peers its operator listed (--allow)"
            ));
        }
        let slot = match spec.max_conns {
            None => None,
            Some(max) => match self
                .limits
                .service_streams
                .try_open(&spec.name.to_string(), max)
            {
                Some(guard) => Some(guard),
                None => {
                    return Err(format!(
                        "service '{service}' is at its limit of {max} connection(s); try again later"
                    ));
                }
            },
        };
        Ok((found, slot))
    }
}

/// Pipes a consumer's connection and its upstream, noting when the upstream's
/// first byte came and when both sides were done.
pub(super) async fn pipe_timed<A, B>(
    client: &mut A,
    upstream: B,
    phases: &Phases,
) -> std::io::Result<(u64, u64)>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut upstream = proxy::FirstByte::new(upstream);
    let copied = proxy::pipe(client, &mut upstream).await;
    if let Some(at) = upstream.at {
        phases.mark_at("first byte", at);
    }
    phases.mark("closed");
    copied
}
