//! The command line: its arguments (`args.rs`), the commands that ask a node
//! through its control socket (one file per family, each with its plain-text
//! output), `image build`, `keys`, `bench` (handed to bench/) and `peervisor
//! demo`. main.rs starts nodes (`peervisor node`, the console); every other
//! command runs from here.

mod args;
mod console;
pub mod demo;
mod dev;
#[cfg(test)]
mod fuzz;
mod image;
mod migrate;
mod peers;
mod services;
mod status;
mod top;
mod vm;

pub use args::*;

use anyhow::Result;

use crate::console::Look;
use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::paths::DataDir;

/// Runs a command (`node` is main.rs's: it is no `Command`).
pub async fn run(command: Command, data_dir: &DataDir, node: &NodeArgs, look: &Look) -> Result<()> {
    let control = ControlClient::new(&data_dir.control_socket());
    match command {
        Command::Dev(command) => dev::run(data_dir, node, command).await,
        Command::Keys => {
            print!("{}", crate::console::keys_text(look));
            Ok(())
        }
        Command::Status { json } => status::run(&control, json).await,
        Command::Vm(command) => vm::run(&control, command).await,
        Command::Migrate {
            vm,
            to,
            max_downtime,
            bandwidth,
            abort,
            wait,
            force,
            json,
        } => {
            let request = match to {
                Some(to) if !abort => Request::Migrate {
                    vm,
                    to,
                    max_downtime_ms: max_downtime,
                    bandwidth_mib_s: bandwidth,
                    foreign: force,
                    detach: !wait,
                },
                _ => Request::MigrateAbort { vm },
            };
            migrate::migrate(&control, &request, json).await
        }
        Command::Replicate { vm, to, name, json } => {
            migrate::replicate(&control, &Request::Replicate { vm, to, name }, json).await
        }
        Command::Services { kind, tag, json } => {
            services::list(&control, kind.as_deref(), &tag, json).await
        }
        Command::Find { name, json } => services::find(&control, name, json).await,
        Command::Consume {
            service,
            local_port,
            bind,
            json,
        } => {
            let request = Request::Consume {
                service,
                local_port,
                bind,
            };
            services::consume(&control, request, json).await
        }
        Command::Unconsume { service } => done(&control, Request::Unconsume { service }).await,
        Command::Expose {
            name,
            target,
            kind,
            allow,
            max_conns,
        } => {
            let request = Request::Expose {
                name,
                target,
                kind,
                allow,
                max_conns,
            };
            done(&control, request).await
        }
        Command::Unexpose { name } => done(&control, Request::Unexpose { name }).await,
        Command::Image(ImageCommand::Build { name, image_dir }) => {
            let dir = image_dir
                .or_else(|| node.image_dir.clone())
                .unwrap_or_else(crate::image::default_image_dir);
            image::build(dir, name).await
        }
        Command::Demo(args) => demo::run(args, node, look).await,
        Command::Peers(command) => peers::run(&control, command).await,
        Command::Top { delay, iterations } => top::run(&control, delay, iterations).await,
        Command::Bench(command) => {
            let setup = crate::bench::Setup {
                data_dir: data_dir.clone(),
                accel: node.accel,
                image_dir: node
                    .image_dir
                    .clone()
                    .unwrap_or_else(crate::image::default_image_dir),
                guest_netns: node.guest_netns.clone(),
            };
            crate::bench::run(command, &setup).await
        }
    }
}

/// Sends a request whose reply is a message, and prints it.
async fn done(control: &ControlClient, request: Request) -> Result<()> {
    if let Reply::Done { message } = control.call(&request).await? {
        println!("{message}");
    }
    Ok(())
}
