//! `freezeframe-bench`: how long writes are blocked by a live snapshot, freezeframe against what
//! users do instead, side by side in one run, on loop filesystems against the API simulator with
//! a fixed round trip: the `fsfreeze` script that ec2-consistent-snapshot and QEMU guest agent
//! hooks amount to (`fsfreeze -f`, the API call, `fsfreeze -u`), and stopping the database
//! service around the API call. Six parts: the frozen window and an application's write stalls
//! ([`window`]), PostgreSQL under pgbench ([`database`]), scaling to many filesystems and a
//! fleet ([`scaling`]), the agent's footprint ([`footprint`]), and the time from a snapshot to a
//! verified restore, with and without the PostgreSQL quiescer's CHECKPOINT ([`restore`]), and
//! consistency groups of many Droplets ([`group`]). Prints markdown tables and
//! writes JSON. Measurements, not pass/fail tests. Run as root: tests/bench/run.

mod charts;
mod database;
mod footprint;
mod group;
mod limits;
mod record;
mod restore;
mod scaling;
mod window;

use freezeframe_tests::sim::{Capture, SimConfig, SimServer};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const TOKEN: &str = "dop_v1_bench";
pub const DROPLET_ID: u64 = 3164444;

pub struct Args {
    pub runs: usize,
    pub latency: Duration,
    pub dirty_mib: Vec<u64>,
    pub fleet: Vec<usize>,
    pub group: Vec<usize>,
    pub fleet_limits: usize,
    pub filesystems: Vec<usize>,
    pub parts: Vec<String>,
    pub json: PathBuf,
    /// Where the charts and their records go.
    pub charts: PathBuf,
    /// Only redraw the charts from the records in `charts`.
    pub redraw: bool,
    /// The offline strategy in the database part: its runs, and the platform's timings.
    pub offline: database::OfflineTimings,
}

const USAGE: &str = "flags: --runs N (20) --latency-ms N (300) --dirty-mib A,B,C (0,256,1024) \
                     --filesystems A,B,C (1,4,16) --fleet A,B,C (1,10,50) \
                     --group A,B,C (2,10,50) --fleet-limits N (1000) \
                     --offline-runs N (3, 0: none) --offline-snapshot-s N (60) \
                     --offline-shutdown-s N (2) --offline-boot-s N (4) \
                     --parts window,database,scaling,footprint,restore,group,limits (all) --json PATH \
                     --charts DIR (target/bench/charts) --redraw (only draw DIR's records)";

const PARTS: [&str; 7] = [
    "window",
    "database",
    "scaling",
    "footprint",
    "restore",
    "group",
    "limits",
];

fn list<T: std::str::FromStr>(flag: &str, text: &str) -> Vec<T> {
    text.split(',')
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| fail(&format!("{flag}: {v:?} is not a number; {USAGE}")))
        })
        .collect()
}

fn seconds(flag: &str, text: &str) -> Duration {
    Duration::from_secs_f64(list::<f64>(flag, text)[0].max(0.0))
}

fn fail(message: &str) -> ! {
    eprintln!("freezeframe-bench: {message}");
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        runs: 20,
        latency: Duration::from_millis(300),
        dirty_mib: vec![0, 256, 1024],
        fleet: vec![1, 10, 50],
        group: vec![2, 10, 50],
        fleet_limits: 1000,
        filesystems: vec![1, 4, 16],
        parts: PARTS.map(String::from).to_vec(),
        json: "target/bench/results.json".into(),
        charts: "target/bench/charts".into(),
        redraw: false,
        offline: database::OfflineTimings::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| fail(&format!("{flag} needs a value; {USAGE}")))
        };
        match flag.as_str() {
            "--runs" => a.runs = list::<usize>("--runs", &value())[0].max(1),
            "--latency-ms" => a.latency = Duration::from_millis(list("--latency-ms", &value())[0]),
            "--dirty-mib" => a.dirty_mib = list("--dirty-mib", &value()),
            "--filesystems" => a.filesystems = list("--filesystems", &value()),
            "--fleet" => a.fleet = list("--fleet", &value()),
            "--group" => a.group = list("--group", &value()),
            "--fleet-limits" => a.fleet_limits = list::<usize>("--fleet-limits", &value())[0].max(2),
            "--offline-runs" => a.offline.runs = list("--offline-runs", &value())[0],
            "--offline-snapshot-s" => a.offline.snapshot = seconds("--offline-snapshot-s", &value()),
            "--offline-shutdown-s" => a.offline.shutdown = seconds("--offline-shutdown-s", &value()),
            "--offline-boot-s" => a.offline.boot = seconds("--offline-boot-s", &value()),
            "--parts" => a.parts = value().split(',').map(String::from).collect(),
            "--json" => a.json = value().into(),
            "--charts" => a.charts = value().into(),
            "--redraw" => a.redraw = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => fail(&format!("unknown flag {other}; {USAGE}")),
        }
    }
    for part in &a.parts {
        if !PARTS.contains(&part.as_str()) {
            fail(&format!("unknown part {part}; {USAGE}"));
        }
    }
    a
}

/// One markdown table and its rows as JSON.
pub struct Section {
    pub title: String,
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    pub json: Vec<Value>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: String, header: Vec<&'static str>) -> Section {
        Section {
            title,
            header,
            rows: Vec::new(),
            json: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn print(&self) {
        println!("### {}\n", self.title);
        println!("| {} |", self.header.join(" | "));
        println!("|{}", "---|".repeat(self.header.len()));
        for row in &self.rows {
            println!("| {} |", row.join(" | "));
        }
        for note in &self.notes {
            println!("\n{note}");
        }
        println!();
    }
}

pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

/// "median / max" of `values`, one decimal.
pub fn median_max(values: &[f64]) -> String {
    format!(
        "{:.1} / {:.1}",
        percentile(values, 50.0),
        percentile(values, 100.0)
    )
}

pub fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

pub fn run_cmd(cmd: &str, args: &[&str]) {
    let ok = Command::new(cmd).args(args).status().is_ok_and(|s| s.success());
    assert!(ok, "{cmd} {args:?} failed");
}

/// The API simulator for one Droplet, answering after `latency`.
pub fn simulator(dir: &Path, latency: Duration) -> SimServer {
    SimServer::start(sim_config(dir, latency))
}

/// The benchmark's simulated Droplet, its images in `dir`, answering after `latency`.
pub fn sim_config(dir: &Path, latency: Duration) -> SimConfig {
    SimConfig {
        token: TOKEN.into(),
        droplet_id: DROPLET_ID,
        droplet_name: "bench".into(),
        disk: None,
        image_dir: dir.join("sim-images"),
        action_delay: Duration::from_millis(100),
        capture: Capture::Registration,
        latency,
        faults: Vec::new(),
        volumes: Vec::new(),
        fleet: Vec::new(),
        rate_limit: None,
    }
}

/// An agent configuration in `dir` freezing `mountpoints` for a Droplet at `api`, with
/// `extra` appended.
pub fn agent_config(dir: &Path, mountpoints: &[&Path], api: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("etc/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let list: Vec<String> = mountpoints
        .iter()
        .map(|m| format!("{:?}", m.display().to_string()))
        .collect();
    std::fs::write(
        &config,
        format!(
            "{kept}[agent]\nruntime_dir = {:?}\n[freeze]\nmountpoints = [{}]\nmax_freeze = \"60s\"\n\
             [quiesce]\nhooks_dir = {:?}\n[digitalocean]\napi_url = {api:?}\nmetadata_url = {api:?}\n\
             token_file = {:?}\n{extra}",
            dir.join("run").display().to_string(),
            list.join(", "),
            dir.join("etc/hooks.d").display().to_string(),
            token.display().to_string(),
            kept = freezeframe_tests::kept_here(dir),
        ),
    )
    .unwrap();
    config
}

/// One `freezeframe-agent snapshot --json`; its report.
pub fn agent_snapshot(config: &Path, name: &str) -> Value {
    let out = Command::new(freezeframe_tests::agent_bin())
        .arg("--config")
        .arg(config)
        .args(["snapshot", "--json", "--name", name])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["status"], "succeeded", "{report:#}");
    report
}

/// The script's API call: POST a snapshot action, as `curl` in such a script would.
pub struct ApiCall {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    url: String,
}

impl ApiCall {
    pub fn new(api: &str) -> ApiCall {
        ApiCall {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::new(),
            url: format!("{api}/v2/droplets/{DROPLET_ID}/actions"),
        }
    }

    /// Sends it; the round trip in ms.
    pub fn snapshot(&self, name: &str) -> f64 {
        let started = Instant::now();
        let status = self.rt.block_on(async {
            self.http
                .post(&self.url)
                .bearer_auth(TOKEN)
                .json(&json!({"type": "snapshot", "name": name}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        assert_eq!(status.ok(), Some(201));
        ms(started)
    }
}

/// One snapshot's frozen window (first FIFREEZE to last FITHAW) and its parts, in ms.
pub struct Window {
    pub total: f64,
    /// In the freeze calls.
    pub freezing: f64,
    /// The API round trip.
    pub api: f64,
    /// In the thaw calls.
    pub thawing: f64,
}

impl Window {
    /// The agent's, from its report.
    pub fn of_report(report: &Value) -> Window {
        let ms = |key: &str| {
            report[key]
                .as_f64()
                .unwrap_or_else(|| panic!("no {key} in the report: {report:#}"))
        };
        Window {
            total: ms("frozen_ms"),
            freezing: ms("freezing_ms"),
            api: ms("request_ms"),
            thawing: ms("thawing_ms"),
        }
    }

    /// What the window costs beyond the API round trip.
    pub fn overhead(&self) -> f64 {
        self.total - self.api
    }
}

/// The windows of many snapshots of one tool, for one row.
#[derive(Default)]
pub struct Windows(pub Vec<Window>);

impl Windows {
    /// Headers of [`Windows::cells`], in the order of [`Windows::series`].
    pub const HEADERS: [&'static str; 4] = [
        "frozen window ms (median / max)",
        "window − API ms (median / max)",
        "freezing ms (median / max)",
        "thawing ms (median / max)",
    ];

    /// The window, its overhead, and the freezing and thawing in it, each with its JSON name.
    fn series(&self) -> [(&'static str, Vec<f64>); 4] {
        let each = |part: fn(&Window) -> f64| self.0.iter().map(part).collect();
        [
            ("window", each(|w| w.total)),
            ("overhead", each(Window::overhead)),
            ("freezing", each(|w| w.freezing)),
            ("thawing", each(|w| w.thawing)),
        ]
    }

    /// "median / max" of each series, for one row.
    pub fn cells(&self) -> Vec<String> {
        self.series().iter().map(|(_, v)| median_max(v)).collect()
    }

    /// The same, for the JSON file.
    pub fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (name, values) in self.series() {
            out.insert(format!("{name}_ms_median"), json!(percentile(&values, 50.0)));
            out.insert(format!("{name}_ms_max"), json!(percentile(&values, 100.0)));
        }
        Value::Object(out)
    }
}

/// Adds the fields of the object `more` to the object `into`.
pub fn merge(into: &mut Value, more: Value) {
    if let (Value::Object(into), Value::Object(more)) = (into, more) {
        into.extend(more);
    }
}

/// The `fsfreeze` script on `mountpoints`: freeze each, the API call, thaw each in reverse.
pub fn fsfreeze_script(mountpoints: &[&Path], api: &ApiCall, name: &str) -> Window {
    let started = Instant::now();
    for mp in mountpoints {
        run_cmd("fsfreeze", &["--freeze", mp.to_str().unwrap()]);
    }
    let freezing = ms(started);
    let api_ms = api.snapshot(name);
    let thaw_started = Instant::now();
    for mp in mountpoints.iter().rev() {
        run_cmd("fsfreeze", &["--unfreeze", mp.to_str().unwrap()]);
    }
    Window {
        total: ms(started),
        freezing,
        api: api_ms,
        thawing: ms(thaw_started),
    }
}

/// Draws the charts of `records` into `dir`, saying which could not be drawn and why.
fn draw_charts(records: &record::Recorded, dir: &Path) {
    let (written, skipped) = charts::draw_all(records, dir);
    for path in written {
        println!("chart: {}", path.display());
    }
    for why in skipped {
        eprintln!("freezeframe-bench: not drawn: {why}");
    }
}

fn main() {
    let args = args();
    let mut records = record::Recorded::load(&args.charts).unwrap_or_else(|e| fail(&e));
    if args.redraw {
        draw_charts(&records, &args.charts);
        return;
    }
    freezeframe_tests::require_root();
    let mut sections = Vec::new();
    for part in &args.parts {
        eprintln!("freezeframe-bench: {part}…");
        let mut new = record::Recorded::default();
        let (date, load_before) = (record::date_utc(), record::load_average());
        match part.as_str() {
            "window" => sections.extend(window::run(&args, &mut new)),
            "database" => sections.push(database::run(&args, &mut new)),
            "scaling" => sections.extend(scaling::run(&args)),
            "footprint" => sections.push(footprint::run(&args)),
            "restore" => sections.push(restore::run(&args)),
            "group" => sections.push(group::run(&args, &mut new)),
            "limits" => sections.push(limits::run(&args, &mut new)),
            _ => unreachable!("checked in args()"),
        }
        new.conditions.push(record::Conditions {
            part: part.clone(),
            date,
            load_before,
            load_after: record::load_average(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
        });
        records.replace_part(part, new);
    }
    records.save(&args.charts).unwrap_or_else(|e| fail(&e));
    draw_charts(&records, &args.charts);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    println!(
        "freezeframe-bench: {} runs per measurement, API round trip {} ms; {cpus} CPUs, {mem_gib:.0} GiB, Linux {}\n",
        args.runs,
        args.latency.as_millis(),
        kernel.trim()
    );
    for s in &sections {
        s.print();
    }
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let parts: serde_json::Map<String, Value> = sections
        .iter()
        .map(|s| (s.title.clone(), Value::Array(s.json.clone())))
        .collect();
    let doc = json!({
        "runs": args.runs,
        "latency_ms": args.latency.as_millis() as u64,
        "machine": {"cpus": cpus, "mem_gib": mem_gib.round(), "kernel": kernel.trim()},
        "sections": parts,
    });
    std::fs::write(&args.json, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    println!("JSON: {}", args.json.display());
}
