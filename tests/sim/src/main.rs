//! `freezeframe-do-sim`: the DigitalOcean API simulator as a program, for tests and the demo.
//! Prints `listening on http://ADDR` once it accepts connections; stops on SIGINT/SIGTERM.

use clap::Parser;
use freezeframe_do_sim::{Capture, Fault, PowerFault, PowerModel, RateLimit, Sim, SimConfig, SimVolume};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// A stateful simulator of the DigitalOcean API v2 subset that freezeframe uses.
#[derive(Debug, Parser)]
#[command(name = "freezeframe-do-sim", version)]
struct Args {
    /// Address to listen on (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The bearer token the API accepts
    #[arg(long, env = "FREEZEFRAME_SIM_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, default_value_t = 3164444)]
    droplet_id: u64,
    #[arg(long, default_value = "sim-droplet")]
    droplet_name: String,
    /// Block device (or file) standing for the Droplet's disk, copied at each snapshot
    #[arg(long)]
    disk: Option<PathBuf>,
    /// Where snapshot images are written
    #[arg(long, default_value = ".")]
    image_dir: PathBuf,
    /// How long a snapshot action stays in progress, e.g. 2s
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    action_delay: Duration,
    /// When the disk is read: at registration (while the agent freezes), at completion, or
    /// part-way (front to back over the action's duration)
    #[arg(long, default_value = "registration", value_parser = parse_capture)]
    capture: Capture,
    /// Latency added to every API call, e.g. 300ms
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Fault to inject, `[METHOD ]PATH_PREFIX=KIND[*COUNT]` (repeatable)
    #[arg(long = "fault")]
    faults: Vec<Fault>,
    /// An attached volume, `NAME=DEVICE` (repeatable)
    #[arg(long = "volume", value_parser = parse_volume)]
    volumes: Vec<(String, PathBuf)>,
    /// The token's rate limits, `PER_MINUTE[/PER_HOUR]` (the real API: 250/5000); past them,
    /// 429 with `retry-after` [default: none]
    #[arg(long, value_parser = RateLimit::parse)]
    rate_limit: Option<std::sync::Arc<RateLimit>>,
    /// How long the guest takes to power off after a `shutdown` action
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    shutdown_takes: Duration,
    /// The guest ignores `shutdown` (the action completes, the Droplet stays on)
    #[arg(long)]
    guest_ignores_shutdown: bool,
    /// How long the Droplet takes to boot after a `power_on` action
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    boot_takes: Duration,
    /// Fault a power action meets, `ACTION=KIND[*COUNT]`: `power_on=500*3`, `power_on=429:90`,
    /// `power_on=hang`, `power_on=lost` (taken, never answered) (repeatable)
    #[arg(long = "power-fault")]
    power_faults: Vec<PowerFault>,
}

fn parse_capture(text: &str) -> Result<Capture, String> {
    match text {
        "registration" => Ok(Capture::Registration),
        "completion" => Ok(Capture::Completion),
        "part-way" => Ok(Capture::PartWay),
        other => Err(format!(
            "`{other}`: the disk is read at `registration`, at `completion` or `part-way`"
        )),
    }
}

fn parse_volume(spec: &str) -> Result<(String, PathBuf), String> {
    let (name, device) = spec
        .split_once('=')
        .ok_or_else(|| format!("`{spec}`: write a volume as NAME=DEVICE"))?;
    Ok((name.to_string(), PathBuf::from(device)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.image_dir)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let sim = Sim::new(SimConfig {
        token: args.token,
        droplet_id: args.droplet_id,
        droplet_name: args.droplet_name,
        disk: args.disk,
        image_dir: args.image_dir,
        action_delay: args.action_delay,
        capture: args.capture,
        latency: args.latency,
        faults: args.faults,
        volumes: args
            .volumes
            .into_iter()
            .enumerate()
            .map(|(i, (name, device))| SimVolume {
                id: format!("506f78a4-e098-11e5-ad9f-{:012}", i + 1),
                name,
                device,
            })
            .collect(),
        fleet: Vec::new(),
        rate_limit: args.rate_limit,
    });
    sim.set_power(PowerModel {
        shutdown_takes: args.shutdown_takes,
        guest_ignores_shutdown: args.guest_ignores_shutdown,
        boot_takes: args.boot_takes,
    });
    sim.set_power_faults(args.power_faults);
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let stop = sim.clone();
    sim.serve(listener, async move {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        }
        stop.release();
    })
    .await
}
