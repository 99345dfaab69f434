//! telbus-bench: telbusd beside dbus-daemon, dbus-broker and busd, in one run.
//!
//! Every broker is started on a private socket in a temp dir with an equivalent permissive
//! configuration and driven by the same raw-socket clients (see `client.rs`); the table gives
//! one column per broker and the ratio telbusd/other. Not a test: run it with
//! `scripts/bench.sh` (or `target/release/telbus-bench --help`).

mod brokers;
mod client;
mod procfs;
mod wire;
mod workloads;

use std::path::{Path, PathBuf};
use std::time::Duration;

use brokers::{Broker, Kind};
use workloads::Settings;

const USAGE: &str = "\
usage: telbus-bench [--json] [--only NAME,...] [--workloads NAME,...] [--seconds S] [--rounds N]
                    [--telbusd PATH] [--busd PATH]

Runs telbusd, dbus-daemon, dbus-broker and busd (those found) side by side on private sockets
and prints a table of the results with the ratio telbusd/other.
  --json          print the results as JSON instead of a table
  --only LIST     brokers to run, of telbusd,telbusd-nopolicy,telbusd-syspolicy,
                  telbusd-bindings,dbus-daemon,dbus-broker,busd (telbusd-nopolicy: telbusd
                  without <policy> checks, the baseline of the policy-cost table;
                  telbusd-syspolicy: telbusd with this machine's system-bus policy;
                  telbusd-bindings: telbusd with 1,000 TelAF bindings loaded)
  --workloads LIST  workloads to run, of round-trip,pipelined,pairs,fan-out,connections,crowded,
                  memory
                  (e.g. only pipelined, to profile a broker started through a --telbusd wrapper)
  --seconds S     length of each throughput workload (default 1)
  --rounds N      rounds over all brokers; each figure is the best of them (default 3)
  --telbusd PATH  default: telbusd beside this binary
  --busd PATH     default: target/bench-tools/bin/busd, then busd on PATH";

/// Whether a bigger or a smaller figure is better, for the reader of the table.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
    Neither,
}

struct Metric {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    better: Better,
}

/// Clients connecting at once in the connections workload. Each waits for two round trips (the
/// SASL OK, the Hello reply), so with only as many clients as cores the broker idled between
/// them (about a quarter of a core, the same for every broker) and the figure measured wake-up
/// latency more than the broker; four keep it busy.
const CONNECTING_THREADS: usize = 4;

const WORKLOADS: &[&str] = &[
    "round-trip",
    "pipelined",
    "pairs",
    "fan-out",
    "connections",
    "crowded",
    "memory",
];

const METRICS: &[Metric] = &[
    Metric {
        key: "round_trip_median_us",
        label: "round trip, serial calls, median",
        unit: "µs",
        better: Better::Lower,
    },
    Metric {
        key: "round_trip_p99_us",
        label: "round trip, serial calls, p99",
        unit: "µs",
        better: Better::Lower,
    },
    Metric {
        key: "pipelined_calls_per_s",
        label: "pipelined calls (128 in flight)",
        unit: "calls/s",
        better: Better::Higher,
    },
    Metric {
        key: "pipelined_broker_cpu_per_call_us",
        label: "broker CPU per pipelined call",
        unit: "µs",
        better: Better::Lower,
    },
    Metric {
        key: "pipelined_broker_load",
        label: "broker CPU use, pipelined (1 = a core)",
        unit: "",
        better: Better::Neither,
    },
    Metric {
        key: "pairs_calls_per_s",
        label: "8 caller/service pairs",
        unit: "calls/s",
        better: Better::Higher,
    },
    Metric {
        key: "fan_out_deliveries_per_s",
        label: "signal to 100 subscribers (+1000 rules)",
        unit: "deliveries/s",
        better: Better::Higher,
    },
    Metric {
        key: "fan_out_lost",
        label: "signal deliveries lost",
        unit: "",
        better: Better::Lower,
    },
    Metric {
        key: "fan_out_broker_load",
        label: "broker CPU use, signal (1 = a core)",
        unit: "",
        better: Better::Neither,
    },
    Metric {
        key: "connections_per_s",
        label: "connect + authenticate + Hello",
        unit: "per s",
        better: Better::Higher,
    },
    Metric {
        key: "connections_broker_load",
        label: "broker CPU use, connecting (1 = a core)",
        unit: "",
        better: Better::Neither,
    },
    Metric {
        key: "crowded_round_trip_median_us",
        label: "round trip median, 1000 idle connections open",
        unit: "µs",
        better: Better::Lower,
    },
    Metric {
        key: "crowded_pipelined_calls_per_s",
        label: "pipelined calls, 1000 idle connections open",
        unit: "calls/s",
        better: Better::Higher,
    },
    Metric {
        key: "idle_connection_kib",
        label: "memory per idle connection, 5 rules",
        unit: "KiB",
        better: Better::Lower,
    },
];

/// One broker's results: a value per metric key, or why it has none.
#[derive(Clone)]
struct Column {
    broker: Broker,
    version: String,
    values: Vec<(&'static str, f64)>,
    errors: Vec<String>,
}

impl Column {
    /// Keep the better figure of this column and `other` (another round of the same broker).
    fn merge(&mut self, other: Column) {
        for (key, value) in other.values {
            let better = METRICS
                .iter()
                .find(|m| m.key == key)
                .map_or(Better::Neither, |m| m.better);
            match self.values.iter_mut().find(|(k, _)| *k == key) {
                Some((_, old)) => {
                    *old = match better {
                        Better::Lower if key != "fan_out_lost" => old.min(value),
                        // Higher, Neither (CPU use) and losses: the largest.
                        _ => old.max(value),
                    }
                }
                None => self.values.push((key, value)),
            }
        }
        for error in other.errors {
            if !self.errors.contains(&error) {
                self.errors.push(error);
            }
        }
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

fn main() {
    let mut json = false;
    let mut only: Option<Vec<String>> = None;
    let mut seconds = 1.0;
    let mut rounds = 3;
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_default();
    let mut telbusd = exe_dir.join("telbusd");
    let mut busd: Option<PathBuf> = None;
    let mut workloads: Vec<String> = WORKLOADS.iter().map(|w| w.to_string()).collect();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value\n{USAGE}");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--json" => json = true,
            "--only" => {
                let names: Vec<String> = value("--only").split(',').map(String::from).collect();
                if let Some(bad) = names.iter().find(|n| Kind::from_name(n).is_none()) {
                    eprintln!("unknown broker {bad}\n{USAGE}");
                    std::process::exit(2)
                }
                only = Some(names);
            }
            "--workloads" => {
                workloads = value("--workloads").split(',').map(String::from).collect();
                if let Some(bad) = workloads.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
                    eprintln!("unknown workload {bad}\n{USAGE}");
                    std::process::exit(2)
                }
            }
            "--rounds" => {
                rounds = value("--rounds")
                    .parse()
                    .ok()
                    .filter(|&n: &u32| n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("--rounds takes a positive number");
                        std::process::exit(2)
                    })
            }
            "--seconds" => {
                seconds = value("--seconds").parse().unwrap_or_else(|_| {
                    eprintln!("--seconds takes a number");
                    std::process::exit(2)
                })
            }
            "--telbusd" => telbusd = value("--telbusd").into(),
            "--busd" => busd = Some(value("--busd").into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("unknown argument {other}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    let busd = busd.or_else(|| {
        let built = exe_dir.join("../bench-tools/bin/busd");
        if built.exists() {
            Some(built)
        } else {
            find_on_path("busd")
        }
    });
    let candidates = [
        (Kind::Telbusd, Some(telbusd.clone())),
        (Kind::TelbusdNoPolicy, Some(telbusd.clone())),
        (
            Kind::TelbusdSystemPolicy,
            Some(telbusd.clone()).filter(|_| Path::new("/usr/share/dbus-1/system.conf").exists()),
        ),
        (Kind::TelbusdBindings, Some(telbusd.clone())),
        (Kind::DbusDaemon, find_on_path("dbus-daemon")),
        (Kind::DbusBroker, find_on_path("dbus-broker")),
        (Kind::Busd, busd),
    ];
    let settings = Settings {
        duration: Duration::from_secs_f64(seconds),
        round_trips: 20_000,
        pipeline_depth: 128,
        pairs: 8,
        subscribers: 100,
        extra_rules: 1000,
        idle_connections: 2000,
        rules_per_idle_connection: 5,
        crowd: 1000,
    };
    let mut brokers = Vec::new();
    let mut missing = Vec::new();
    for (kind, binary) in candidates {
        if only
            .as_ref()
            .is_some_and(|names| !names.iter().any(|n| n == kind.name()))
        {
            continue;
        }
        match binary.filter(|b| b.exists()) {
            Some(binary) => brokers.push(Broker { kind, binary }),
            None => missing.push(kind.name()),
        }
    }
    // Rounds interleave the brokers, so that a burst of load from elsewhere on the machine
    // hits them alike; each figure is the best of the rounds (losses: the worst). Every other
    // round runs them in the reverse order, so that no broker always runs first or right after
    // the same one (the order alone moved figures by a few percent).
    let mut columns: Vec<Column> = Vec::new();
    // Every round's own figures too: the cost of policy compares figures of the same round.
    let mut by_round: Vec<Vec<Column>> = Vec::new();
    for round in 1..=rounds {
        by_round.push(Vec::new());
        let order: Vec<&Broker> = if round % 2 == 1 {
            brokers.iter().collect()
        } else {
            brokers.iter().rev().collect()
        };
        for broker in order {
            eprintln!(
                "round {round}/{rounds}: {} ({})",
                broker.kind.name(),
                broker.binary.display()
            );
            let result = run_broker(broker.clone(), &settings, &workloads);
            by_round.last_mut().expect("pushed").push(result.clone());
            match columns.iter_mut().find(|c| c.broker.kind == broker.kind) {
                Some(column) => column.merge(result),
                None => columns.push(result),
            }
        }
    }
    if json {
        print_json(&columns, &missing);
    } else {
        print_table(&columns, &by_round, &missing, &settings, rounds);
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Run every workload against a fresh instance of `broker`; a workload that fails leaves its
/// rows empty and its error in the column.
fn run_broker(broker: Broker, settings: &Settings, workloads: &[String]) -> Column {
    let version = broker.version();
    let mut column = Column {
        broker: broker.clone(),
        version,
        values: Vec::new(),
        errors: Vec::new(),
    };
    let mut running = match broker.start() {
        Ok(running) => running,
        Err(e) => {
            column.errors.push(format!("cannot start: {e}"));
            return column;
        }
    };
    let socket = running.socket.clone();
    let pid = running.pid;
    let selected = |name: &str| workloads.iter().any(|w| w == name);
    let mut step = |name: &str, column: &mut Column, result: std::io::Result<()>| {
        if let Err(e) = result {
            let alive = running.check_alive().err().unwrap_or_default();
            column.errors.push(format!("{name}: {e} {alive}"));
        }
    };
    if selected("round-trip") {
        let r = workloads::round_trip(&socket, settings).map(|rt| {
            column
                .values
                .push(("round_trip_median_us", micros(rt.median)));
            column.values.push(("round_trip_p99_us", micros(rt.p99)));
        });
        step("round trip", &mut column, r);
    }
    if selected("pipelined") {
        let r = workloads::pipelined(&socket, pid, 1, settings.pipeline_depth, settings.duration)
            .map(|t| {
                column
                    .values
                    .push(("pipelined_calls_per_s", t.calls_per_second));
                if let Some(cpu) = t.cpu_per_call {
                    column
                        .values
                        .push(("pipelined_broker_cpu_per_call_us", micros(cpu)));
                }
                if let Some(load) = t.broker_load {
                    column.values.push(("pipelined_broker_load", load));
                }
            });
        step("pipelined", &mut column, r);
    }
    if selected("pairs") {
        let r =
            workloads::pipelined(&socket, pid, settings.pairs, 32, settings.duration).map(|t| {
                column
                    .values
                    .push(("pairs_calls_per_s", t.calls_per_second))
            });
        step("pairs", &mut column, r);
    }
    if selected("fan-out") {
        let r = workloads::fan_out(&socket, pid, settings).map(|f| {
            column
                .values
                .push(("fan_out_deliveries_per_s", f.deliveries_per_second));
            column.values.push(("fan_out_lost", f.lost as f64));
            if let Some(load) = f.broker_load {
                column.values.push(("fan_out_broker_load", load));
            }
        });
        step("fan-out", &mut column, r);
    }
    if selected("connections") {
        let r = workloads::connections(&socket, pid, CONNECTING_THREADS, settings.duration).map(
            |(rate, load)| {
                column.values.push(("connections_per_s", rate));
                if let Some(load) = load {
                    column.values.push(("connections_broker_load", load));
                }
            },
        );
        step("connections", &mut column, r);
    }
    if selected("crowded") {
        let r = workloads::idle_crowd(&socket, settings.crowd).and_then(|crowd| {
            let rt = workloads::round_trip(&socket, settings)?;
            let depth = settings.pipeline_depth;
            let t = workloads::pipelined(&socket, pid, 1, depth, settings.duration)?;
            drop(crowd);
            column
                .values
                .push(("crowded_round_trip_median_us", micros(rt.median)));
            column
                .values
                .push(("crowded_pipelined_calls_per_s", t.calls_per_second));
            Ok(())
        });
        step("crowded", &mut column, r);
    }
    if selected("memory") {
        // On a broker of its own: one that has just served the other workloads has memory
        // freed in its heap to hand out again, and its connections would look free.
        drop(running);
        match broker.start() {
            Ok(mut fresh) => {
                let r = workloads::memory_per_connection(
                    &fresh.socket,
                    fresh.pid,
                    settings.idle_connections,
                    settings.rules_per_idle_connection,
                )
                .map(|bytes| {
                    if let Some(bytes) = bytes {
                        column.values.push(("idle_connection_kib", bytes / 1024.0));
                    }
                });
                if let Err(e) = r {
                    let alive = fresh.check_alive().err().unwrap_or_default();
                    column.errors.push(format!("memory: {e} {alive}"));
                }
            }
            Err(e) => column.errors.push(format!("memory: cannot start: {e}")),
        }
    }
    column
}

fn format_value(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0} k", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn print_table(
    columns: &[Column],
    by_round: &[Vec<Column>],
    missing: &[&str],
    settings: &Settings,
    rounds: u32,
) {
    let (cpu, cores, kernel) = procfs::machine();
    println!(
        "telbus-bench: {cpu}, {cores} cores, Linux {kernel}; {:.1} s per throughput workload, \
         best of {rounds} rounds",
        settings.duration.as_secs_f64()
    );
    for column in columns {
        println!(
            "  {}: {} ({})",
            column.broker.kind.name(),
            column.version,
            column.broker.binary.display()
        );
    }
    let telbusd = columns.iter().find(|c| c.broker.kind == Kind::Telbusd);
    let others: Vec<&Column> = columns
        .iter()
        .filter(|c| c.broker.kind != Kind::Telbusd)
        .collect();
    let mut header = vec!["workload".to_string(), "unit".to_string()];
    header.extend(columns.iter().map(|c| c.broker.kind.name().to_string()));
    if telbusd.is_some() {
        header.extend(
            others
                .iter()
                .map(|c| format!("telbusd/{}", c.broker.kind.name())),
        );
    }
    let mut rows = vec![header];
    for metric in METRICS {
        let arrow = match metric.better {
            Better::Higher => " ↑",
            Better::Lower => " ↓",
            Better::Neither => "",
        };
        let mut row = vec![format!("{}{arrow}", metric.label), metric.unit.to_string()];
        row.extend(columns.iter().map(|c| {
            c.get(metric.key)
                .map_or_else(|| "—".to_string(), format_value)
        }));
        if let Some(telbusd) = telbusd {
            row.extend(others.iter().map(|other| {
                match (telbusd.get(metric.key), other.get(metric.key)) {
                    (Some(ours), Some(theirs))
                        if theirs > 0.0
                            && ours > 0.0
                            && !matches!(metric.better, Better::Neither) =>
                    {
                        format!("{:.2}", ours / theirs)
                    }
                    _ => "—".to_string(),
                }
            }));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for (n, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                let pad = width - cell.chars().count();
                if i < 2 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        println!("{}", cells.join("  "));
        if n == 0 {
            println!(
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
            );
        }
    }
    println!(
        "↑ higher is better, ↓ lower is better; a ratio is telbusd's figure over the other's."
    );
    print_policy_cost(columns, by_round);
    for column in columns {
        for error in &column.errors {
            println!("{}: {error}", column.broker.kind.name());
        }
    }
    for name in missing {
        println!("{name}: not found, not run");
    }
}

/// What policy costs: each telbusd variant's figure over telbusd-nopolicy's, for the workloads
/// with a direction (1.00: no cost; within 5% is 0.95–1.05).
///
/// Each cell is the median, over the rounds, of the two figures of one round: the variant and
/// the baseline run one after the other in a round, so what the machine does at the time
/// (other processes, the host) weighs on both. The ratio of the two best figures instead
/// compares the two luckiest runs, which moved by ±6% between identical binaries here.
fn print_policy_cost(columns: &[Column], by_round: &[Vec<Column>]) {
    let Some(base) = columns
        .iter()
        .find(|c| c.broker.kind == Kind::TelbusdNoPolicy)
    else {
        return;
    };
    let variants: Vec<&Column> = columns
        .iter()
        .filter(|c| {
            matches!(
                c.broker.kind,
                Kind::Telbusd | Kind::TelbusdSystemPolicy | Kind::TelbusdBindings
            )
        })
        .collect();
    if variants.is_empty() {
        return;
    }
    println!();
    println!(
        "cost of policy: each figure over telbusd-nopolicy's in the same round, median of the rounds (telbusd: permissive session policy)"
    );
    let label_width = METRICS
        .iter()
        .map(|m| m.label.chars().count())
        .max()
        .unwrap_or(0)
        + 2;
    let mut header = format!("{:label_width$}", "workload");
    for v in &variants {
        header.push_str(&format!("  {:>18}", v.broker.kind.name()));
    }
    println!("{header}");
    for metric in METRICS {
        let arrow = match metric.better {
            Better::Higher => " ↑",
            Better::Lower => " ↓",
            Better::Neither => continue,
        };
        if base.get(metric.key).filter(|v| *v > 0.0).is_none() {
            continue;
        }
        let mut line = format!("{:label_width$}", format!("{}{arrow}", metric.label));
        for v in &variants {
            let cell = median_ratio(by_round, v.broker.kind, metric.key)
                .map_or_else(|| "—".to_string(), |ratio| format!("{ratio:.2}"));
            line.push_str(&format!("  {cell:>18}"));
        }
        println!("{line}");
    }
}

/// The median over the rounds of `kind`'s figure over telbusd-nopolicy's in the same round.
fn median_ratio(by_round: &[Vec<Column>], kind: Kind, key: &str) -> Option<f64> {
    let figure = |round: &[Column], kind: Kind| {
        round
            .iter()
            .find(|c| c.broker.kind == kind)
            .and_then(|c| c.get(key))
            .filter(|v| *v > 0.0)
    };
    let mut ratios: Vec<f64> = by_round
        .iter()
        .filter_map(|round| Some(figure(round, kind)? / figure(round, Kind::TelbusdNoPolicy)?))
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let middle = ratios.len() / 2;
    Some(if ratios.len() % 2 == 1 {
        ratios[middle]
    } else {
        (ratios[middle - 1] + ratios[middle]) / 2.0
    })
}

fn print_json(columns: &[Column], missing: &[&str]) {
    let (cpu, cores, kernel) = procfs::machine();
    let brokers: serde_json::Map<String, serde_json::Value> = columns
        .iter()
        .map(|c| {
            let values: serde_json::Map<String, serde_json::Value> = c
                .values
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect();
            (
                c.broker.kind.name().to_string(),
                serde_json::json!({
                    "binary": c.broker.binary.display().to_string(),
                    "version": c.version,
                    "results": values,
                    "errors": c.errors,
                }),
            )
        })
        .collect();
    let output = serde_json::json!({
        "machine": { "cpu": cpu, "cores": cores, "kernel": kernel },
        "brokers": brokers,
        "not_found": missing,
    });
    println!("{}", serde_json::to_string_pretty(&output).expect("JSON"));
}
