//! `peervisor services`, `find` and `consume`, and the services table.

use std::fmt::Write;

use anyhow::{Result, bail};

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::model::ServiceView;
use crate::names::ServiceName;

/// `peervisor services`: the overlay's services, filtered.
pub async fn list(
    control: &ControlClient,
    kind: Option<&str>,
    tags: &[String],
    json: bool,
) -> Result<()> {
    let Reply::Services { services } = control.call(&Request::Services).await? else {
        bail!("unexpected reply to services");
    };
    let services = filter_services(services, kind, tags)?;
    print_services(&services, json)
}

/// `peervisor find`: a service resolved through the DHT.
pub async fn find(control: &ControlClient, name: ServiceName, json: bool) -> Result<()> {
    let Reply::Services { services } = control.call(&Request::Find { name }).await? else {
        bail!("unexpected reply to find");
    };
    print_services(&services, json)
}

/// `peervisor consume`.
pub async fn consume(control: &ControlClient, request: Request, json: bool) -> Result<()> {
    let Reply::Consuming(c) = control.call(&request).await? else {
        bail!("unexpected reply to consume");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        println!(
            "consuming '{}' on {} (stop with `peervisor unconsume {}`)",
            c.service, c.listen, c.service
        );
    }
    Ok(())
}

fn print_services(services: &[crate::model::ServiceView], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(services)?);
    } else {
        print!("{}", services_text(services));
    }
    Ok(())
}

/// `peervisor services` filters: `--type`, and `--tag KEY=VALUE` (all must match).
pub fn filter_services(
    services: Vec<ServiceView>,
    kind: Option<&str>,
    tags: &[String],
) -> Result<Vec<ServiceView>> {
    let mut wanted = Vec::new();
    for tag in tags {
        let Some((k, v)) = tag.split_once('=') else {
            bail!("--tag {tag}: expected KEY=VALUE");
        };
        wanted.push((k.to_string(), v.to_string()));
    }
    Ok(services
        .into_iter()
        .filter(|s| kind.is_none_or(|k| s.kind == k))
        .filter(|s| wanted.iter().all(|t| s.tags.contains(t)))
        .collect())
}

pub fn services_text(services: &[ServiceView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<6} {:<16} {:<12} {:>10}  {:>5} {:>5}",
        "SERVICE", "TYPE", "PROVIDER", "VM", "LATENCY", "CPU%", "CONNS"
    );
    for s in services {
        for (i, p) in s.providers.iter().enumerate() {
            let (name, kind) = if i == 0 {
                (s.name.as_str(), s.kind.as_str())
            } else {
                ("", "")
            };
            let latency = match p.latency_ms {
                _ if p.local => "local".into(),
                Some(ms) => format!("{ms:.2} ms"),
                None => "-".into(),
            };
            let (cpu, conns) = p
                .load
                .as_ref()
                .map(|l| (format!("{:.0}", l.cpu_pct), l.connections.to_string()))
                .unwrap_or_else(|| ("-".into(), "-".into()));
            let who = if p.local {
                format!("{} (here)", p.peer_nick)
            } else {
                p.peer_nick.clone()
            };
            let _ = writeln!(
                out,
                "{:<16} {:<6} {:<16} {:<12} {:>10}  {:>5} {:>5}",
                name,
                kind,
                who,
                p.vm.as_deref().unwrap_or("(host)"),
                latency,
                cpu,
                conns
            );
        }
    }
    out
}
