//! The workloads, each run against one broker with fresh raw-socket clients.
//!
//! Callers and services are [`Client`]s on blocking sockets, one thread each: a service answers
//! every call with a pre-marshalled reply and writes the answers to everything it has buffered
//! in one write, so that a client costs a few `memcpy`s and a `read`/`write` per batch and the
//! broker stays the bottleneck (the pipelined row reports the broker's CPU use to show it).

use std::io;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zbus::Message;

use crate::client::{Client, driver_template};
use crate::procfs::{CpuMeter, resident_bytes};
use crate::wire::{METHOD_CALL, SIGNAL, Template};

const BENCH_PATH: &str = "/org/telbus/Bench";
const BENCH_INTERFACE: &str = "org.telbus.Bench";

/// How long each throughput workload runs.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub duration: Duration,
    pub round_trips: usize,
    pub pipeline_depth: usize,
    pub pairs: usize,
    pub subscribers: usize,
    pub extra_rules: usize,
    pub idle_connections: usize,
    pub rules_per_idle_connection: usize,
    /// Idle connections open beside the crowded workloads' callers.
    pub crowd: usize,
}

/// A service thread: answers every `Ping` with an empty reply until it gets `Stop`.
struct Service {
    unique_name: String,
    thread: JoinHandle<io::Result<u64>>,
}

impl Service {
    /// Connect a service that answers the calls of `caller` (its replies go to that name).
    fn start(socket: &Path, caller: &str) -> io::Result<Service> {
        let mut client = Client::connect(socket)?;
        let unique_name = client.unique_name.clone();
        let reply = reply_template(caller)?;
        let thread = std::thread::spawn(move || {
            let mut answered = 0u64;
            loop {
                let header = client.recv()?;
                if header.kind == METHOD_CALL {
                    let member = header.member.clone().map(|m| &client.last_message()[m]);
                    if member == Some(b"Stop".as_slice()) {
                        client.flush()?;
                        return Ok(answered);
                    }
                    client.queue(&reply, Some(header.serial));
                    answered += 1;
                }
                if !client.has_buffered_message() {
                    client.flush()?;
                }
            }
        });
        Ok(Service {
            unique_name,
            thread,
        })
    }

    fn stop(self, caller: &mut Client) -> io::Result<u64> {
        let stop = Template::new(
            &Message::method_call(BENCH_PATH, "Stop")
                .destination(self.unique_name.as_str())
                .interface(BENCH_INTERFACE)
                .with_flags(zbus::message::Flags::NO_REPLY_EXPECTED)
                .build(&())
                .map_err(io::Error::other)?,
        );
        caller.queue(&stop, None);
        caller.flush()?;
        self.thread
            .join()
            .map_err(|_| io::Error::other("service thread panicked"))?
    }
}

/// The reply a service sends to `caller`, its reply serial patched per call.
fn reply_template(caller: &str) -> io::Result<Template> {
    let call = Message::method_call(BENCH_PATH, "Ping")
        .sender(caller)
        .build(&())
        .map_err(io::Error::other)?;
    let reply = Message::method_return(&call.header())
        .build(&())
        .map_err(io::Error::other)?;
    Ok(Template::new(&reply))
}

fn ping_template(service: &str) -> io::Result<Template> {
    Ok(Template::new(
        &Message::method_call(BENCH_PATH, "Ping")
            .destination(service)
            .interface(BENCH_INTERFACE)
            .build(&())
            .map_err(io::Error::other)?,
    ))
}

pub struct RoundTrip {
    pub median: Duration,
    pub p99: Duration,
}

/// Serial calls: one in flight, the latency of each.
pub fn round_trip(socket: &Path, settings: &Settings) -> io::Result<RoundTrip> {
    let mut caller = Client::connect(socket)?;
    let service = Service::start(socket, &caller.unique_name)?;
    let ping = ping_template(&service.unique_name)?;
    for _ in 0..200 {
        caller.call(&ping)?;
    }
    let mut samples = Vec::with_capacity(settings.round_trips);
    let deadline = Instant::now() + settings.duration;
    while samples.len() < settings.round_trips && Instant::now() < deadline {
        let start = Instant::now();
        caller.call(&ping)?;
        samples.push(start.elapsed());
    }
    service.stop(&mut caller)?;
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    Ok(RoundTrip {
        median: at(0.5),
        p99: at(0.99),
    })
}

/// Calls with `depth` in flight on one caller for `duration`; returns the calls completed.
fn pipeline(
    caller: &mut Client,
    ping: &Template,
    depth: usize,
    duration: Duration,
) -> io::Result<u64> {
    for _ in 0..depth {
        caller.queue(ping, None);
    }
    caller.flush()?;
    let mut in_flight = depth;
    let mut completed = 0u64;
    let deadline = Instant::now() + duration;
    let mut sending = true;
    while in_flight > 0 {
        let header = caller.recv()?;
        if header.reply_serial.is_none() {
            continue;
        }
        if header.kind != crate::wire::METHOD_RETURN {
            return Err(io::Error::other(caller.error_text(&header)));
        }
        in_flight -= 1;
        completed += 1;
        // Check the clock once per window only: it is not free.
        if sending && completed.is_multiple_of(depth as u64) && Instant::now() >= deadline {
            sending = false;
        }
        if sending {
            caller.queue(ping, None);
            in_flight += 1;
        }
        if !caller.has_buffered_message() {
            caller.flush()?;
        }
    }
    Ok(completed)
}

pub struct Throughput {
    pub calls_per_second: f64,
    /// Broker CPU time per call.
    pub cpu_per_call: Option<Duration>,
    /// Broker CPU time over wall time: near 1 when the single-threaded broker is the bottleneck.
    pub broker_load: Option<f64>,
}

/// `pairs` caller/service pairs, each with `depth` calls in flight, at the same time.
pub fn pipelined(
    socket: &Path,
    broker_pid: u32,
    pairs: usize,
    depth: usize,
    duration: Duration,
) -> io::Result<Throughput> {
    let mut setups = Vec::new();
    for _ in 0..pairs {
        let caller = Client::connect(socket)?;
        let service = Service::start(socket, &caller.unique_name)?;
        let ping = ping_template(&service.unique_name)?;
        setups.push((caller, service, ping));
    }
    // Warm up every pair (buffers grown, routes cached) before the clock starts.
    for (caller, _, ping) in &mut setups {
        pipeline(caller, ping, depth, Duration::ZERO)?;
    }
    let barrier = Arc::new(Barrier::new(pairs + 1));
    let threads: Vec<_> = setups
        .into_iter()
        .map(|(mut caller, service, ping)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> io::Result<u64> {
                barrier.wait();
                let completed = pipeline(&mut caller, &ping, depth, duration)?;
                service.stop(&mut caller)?;
                Ok(completed)
            })
        })
        .collect();
    barrier.wait();
    let meter = CpuMeter::start(broker_pid);
    let mut completed = 0;
    for thread in threads {
        completed += thread
            .join()
            .map_err(|_| io::Error::other("caller thread panicked"))??;
    }
    let (cpu, wall) = meter.stop();
    Ok(Throughput {
        calls_per_second: completed as f64 / wall.as_secs_f64(),
        cpu_per_call: cpu.map(|c| c / completed.max(1) as u32),
        broker_load: cpu.map(|c| c.as_secs_f64() / wall.as_secs_f64()),
    })
}

pub struct FanOut {
    pub deliveries_per_second: f64,
    pub lost: u64,
    pub broker_load: Option<f64>,
}

/// One emitter broadcasts signals for `duration` to `subscribers` connections with a matching
/// rule, then a `Done` signal that says how many it sent; `extra_rules` rules that match nothing
/// are spread over the subscribers. (A fixed count would be over in milliseconds on a fast
/// broker and take seconds on a slow one; a fixed time measures each for as long.)
pub fn fan_out(socket: &Path, broker_pid: u32, settings: &Settings) -> io::Result<FanOut> {
    let matching = driver_template(
        "AddMatch",
        &(format!("type='signal',interface='{BENCH_INTERFACE}'"),),
    );
    let mut subscribers = Vec::new();
    for _ in 0..settings.subscribers {
        let mut client = Client::connect(socket)?;
        client.call(&matching)?;
        subscribers.push(client);
    }
    for rule in 0..settings.extra_rules {
        // Half differ in member, half in path and interface: neither matches a Tick.
        let text = if rule % 2 == 0 {
            format!("type='signal',interface='{BENCH_INTERFACE}',member='Tock{rule}'")
        } else {
            format!("type='signal',path='/org/telbus/Other{rule}',interface='org.telbus.Other'")
        };
        let subscriber = &mut subscribers[rule % settings.subscribers];
        subscriber.call(&driver_template("AddMatch", &(text,)))?;
    }
    let barrier = Arc::new(Barrier::new(settings.subscribers + 1));
    let threads: Vec<_> = subscribers
        .into_iter()
        .map(|mut client| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> (u64, Instant) {
                barrier.wait();
                let mut received = 0u64;
                loop {
                    match client.recv() {
                        Ok(header) if header.kind == SIGNAL => {
                            let member = header.member.clone().map(|m| &client.last_message()[m]);
                            match member {
                                Some(b"Tick") => received += 1,
                                Some(b"Done") => break,
                                _ => {}
                            }
                        }
                        Ok(_) => {}
                        // A timeout (nothing for IO_TIMEOUT) or a disconnect: count what came.
                        Err(_) => break,
                    }
                }
                (received, Instant::now())
            })
        })
        .collect();
    let mut emitter = Client::connect(socket)?;
    let tick = Template::new(
        &Message::signal(BENCH_PATH, BENCH_INTERFACE, "Tick")
            .build(&(0u32,))
            .map_err(io::Error::other)?,
    );
    let done = Template::new(
        &Message::signal(BENCH_PATH, BENCH_INTERFACE, "Done")
            .build(&())
            .map_err(io::Error::other)?,
    );
    let get_id = driver_template("GetId", &());
    barrier.wait();
    let start = Instant::now();
    let deadline = start + settings.duration;
    let meter = CpuMeter::start(broker_pid);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            emitter.queue(&tick, None);
        }
        sent += 64;
        emitter.flush()?;
        // A round trip to the driver now and then, so that the emitter cannot run far ahead of
        // the broker (the broker reads the emitter's calls in order).
        if sent.is_multiple_of(256) {
            emitter.call(&get_id)?;
        }
    }
    emitter.queue(&done, None);
    emitter.flush()?;
    let mut received = 0;
    let mut last = start;
    for thread in threads {
        let (count, done) = thread
            .join()
            .map_err(|_| io::Error::other("subscriber thread panicked"))?;
        received += count;
        last = last.max(done);
    }
    let (cpu, wall) = meter.stop();
    let expected = sent * settings.subscribers as u64;
    Ok(FanOut {
        deliveries_per_second: received as f64 / (last - start).as_secs_f64(),
        lost: expected - received,
        broker_load: cpu.map(|c| c.as_secs_f64() / wall.as_secs_f64()),
    })
}

/// Connections per second (and the broker's CPU use meanwhile): connect, authenticate, Hello,
/// close, on `threads` threads at once.
pub fn connections(
    socket: &Path,
    broker_pid: u32,
    threads: usize,
    duration: Duration,
) -> io::Result<(f64, Option<f64>)> {
    let meter = CpuMeter::start(broker_pid);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || -> io::Result<u64> {
                let mut count = 0;
                while start.elapsed() < duration {
                    drop(Client::connect(&socket)?);
                    count += 1;
                }
                Ok(count)
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker
            .join()
            .map_err(|_| io::Error::other("connecting thread panicked"))??;
    }
    let (cpu, wall) = meter.stop();
    Ok((
        total as f64 / wall.as_secs_f64(),
        cpu.map(|c| c.as_secs_f64() / wall.as_secs_f64()),
    ))
}

/// Resident memory the broker gains per idle connection that holds `rules` match rules.
/// `count` connections that said Hello and then do nothing: a broker's work per message must
/// not grow with the connections it holds (a desktop session has hundreds).
pub fn idle_crowd(socket: &Path, count: usize) -> io::Result<Vec<Client>> {
    (0..count).map(|_| Client::connect(socket)).collect()
}

pub fn memory_per_connection(
    socket: &Path,
    broker_pid: u32,
    connections: usize,
    rules: usize,
) -> io::Result<Option<f64>> {
    // Settle the broker (freed connections of earlier workloads) before the baseline.
    std::thread::sleep(Duration::from_millis(200));
    let Some(before) = resident_bytes(broker_pid) else {
        return Ok(None);
    };
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut client = Client::connect(socket)?;
        let mut last = 0;
        for rule in 0..rules {
            let text = format!(
                "type='signal',sender='org.telbus.Peer{i}',path='/org/telbus/Idle{rule}',interface='org.telbus.Idle',member='Changed{rule}'"
            );
            last = client.queue(&driver_template("AddMatch", &(text,)), None);
        }
        client.flush()?;
        client.wait_reply(last)?;
        clients.push(client);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = resident_bytes(broker_pid);
    drop(clients);
    Ok(after.map(|after| after.saturating_sub(before) as f64 / connections as f64))
}
