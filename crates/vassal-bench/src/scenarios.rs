//! The benchmark proper: for each size, rep and kind, one cluster lifetime running the
//! scenarios in order (convergence, idle resources, user events, queries, failure, graceful
//! leave), one record each.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::seq::{index, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use tokio::process::Command;
use vassal_rpc::protocol::{query_record, QueryRequest};
use vassal_rpc::Client;

use crate::cli::{Kind, RunArgs};
use crate::cluster::{self, procs, Cluster, Plan, State};
use crate::observe::{rtt_summary, watch_all, Conn, Probe, Watch};
use crate::report::{median, now, pct_time, spread, utc_timestamp, Sink};
use crate::resources::{self, round, LoadMeter};

/// Version of the record layout.
pub const HARNESS_VERSION: &str = "vassal-bench 1";

/// The default observer sample above this size: a random `DEFAULT_OBSERVERS` plus the seed.
const DEFAULT_OBSERVERS: usize = 100;

fn log(msg: &str) {
    eprintln!(
        "[cluster-bench {}] {msg}",
        &utc_timestamp(now() as u64)[11..19]
    );
}

fn r4(x: Option<f64>) -> Value {
    json!(x.map(|x| round(x, 4)))
}

/// `BIN version`'s first line (run with a time limit; killed if it hangs).
async fn agent_version(bin: &Path) -> Result<String, String> {
    let child = Command::new(bin)
        .arg("version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let pid = child.id();
    if let Some(pid) = pid {
        procs::track(pid);
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await;
    if let Some(pid) = pid {
        procs::forget(pid);
    }
    match out {
        Ok(Ok(o)) => Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned()),
        Ok(Err(e)) => Err(format!("{} version: {e}", bin.display())),
        Err(_) => Err(format!("{} version: no answer in 10 s", bin.display())),
    }
}

/// One cluster lifetime in progress.
struct Life {
    cluster: Cluster,
    rep: usize,
    /// The observed agents' connections (victims are removed as they go).
    conns: Vec<Conn>,
    observers: usize,
}

pub struct Bench {
    args: RunArgs,
    rng: ChaCha8Rng,
    seed: u64,
    sink: Sink,
    versions: BTreeMap<Kind, String>,
}

impl Bench {
    pub async fn new(args: RunArgs) -> Result<Bench, String> {
        if args.sizes.iter().any(|&n| n < 3) {
            return Err("every size must be at least 3 (the failure and leave scenarios each take a non-seed agent)".into());
        }
        let mut kinds = args.kinds.clone();
        kinds.dedup();
        if kinds.is_empty() {
            return Err("no --kinds".into());
        }
        let mut versions = BTreeMap::new();
        for &k in &kinds {
            let bin = match k {
                Kind::Go => &args.go,
                Kind::Vassal => &args.vassal,
            };
            versions.insert(k, agent_version(bin).await?);
        }
        // Not secret, only varied between runs (and recorded, so a run can be repeated).
        let seed = args.seed.unwrap_or_else(|| {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ u64::from(std::process::id()).rotate_left(32)
        });
        Ok(Bench {
            sink: Sink::open(args.out.as_deref())?,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            versions,
            args,
        })
    }

    fn binary(&self, kind: Kind) -> &Path {
        match kind {
            Kind::Go => &self.args.go,
            Kind::Vassal => &self.args.vassal,
        }
    }

    fn meta(&mut self) {
        let a = &self.args;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mut m = Map::new();
        m.insert("scenario".into(), json!("meta"));
        m.insert("ts".into(), json!(utc_timestamp(now() as u64)));
        m.insert("harness_version".into(), json!(HARNESS_VERSION));
        m.insert("host".into(), json!(host.trim()));
        m.insert("cpus".into(), json!(cpus));
        m.insert("seed".into(), json!(self.seed));
        m.insert(
            "agents".into(),
            json!(self
                .versions
                .iter()
                .map(|(k, v)| (
                    k.as_str().to_owned(),
                    json!({"binary": self.binary(*k).display().to_string(), "version": v})
                ))
                .collect::<Map<_, _>>()),
        );
        m.insert(
            "config".into(),
            json!({
                "sizes": a.sizes, "reps": a.reps,
                "kinds": a.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                "start_mode": a.start.as_str(), "join_mode": a.join_mode.as_str(),
                "addr_mode": a.addr_mode.as_str(), "observers": a.observers,
                "settle_s": a.settle.as_secs_f64(), "idle_s": a.idle.as_secs_f64(),
                "events": a.events, "queries": a.queries,
                "poll_interval_s": a.poll_interval.as_secs_f64(), "gap_s": a.gap.as_secs_f64(),
                "conv_timeout_s": a.conv_timeout.as_secs_f64(),
                "status_timeout_s": a.status_timeout.as_secs_f64(),
                "event_timeout_s": a.event_timeout.as_secs_f64(),
                "handler_timeout_s": a.handler_timeout.as_secs_f64(),
            }),
        );
        self.sink.emit(&m);
    }

    /// Every size, rep and kind. Kinds alternate within a rep (their order flips every rep),
    /// so both share the machine's conditions.
    pub async fn run(&mut self) -> Result<(), String> {
        self.meta();
        let mut kinds = self.args.kinds.clone();
        kinds.dedup();
        for &n in &self.args.sizes.clone() {
            for rep in 0..self.args.reps {
                let mut order = kinds.clone();
                if rep % 2 == 1 {
                    order.reverse();
                }
                for &kind in &order {
                    self.lifetime(kind, n, rep).await?;
                }
            }
        }
        Ok(())
    }

    fn base(&self, life: &Life, scenario: &str) -> Map<String, Value> {
        let kind = life.cluster.plan.kind;
        let mut m = Map::new();
        m.insert("ts".into(), json!(utc_timestamp(now() as u64)));
        m.insert("harness_version".into(), json!(HARNESS_VERSION));
        m.insert("kind".into(), json!(kind.as_str()));
        m.insert(
            "agent".into(),
            json!(life.cluster.plan.binary.display().to_string()),
        );
        m.insert("agent_version".into(), json!(self.versions.get(&kind)));
        m.insert("scenario".into(), json!(scenario));
        m.insert("n".into(), json!(life.cluster.n()));
        m.insert("start_mode".into(), json!(self.args.start.as_str()));
        m.insert("join_mode".into(), json!(self.args.join_mode.as_str()));
        m.insert("addr_mode".into(), json!(self.args.addr_mode.as_str()));
        m.insert("observers".into(), json!(life.observers));
        m.insert("rep".into(), json!(life.rep));
        m.insert("seed".into(), json!(self.seed));
        // Every `failed` verdict any agent has logged so far in this lifetime: read phase by
        // phase, the counts say when false ones (before the kill) arose.
        m.insert(
            "failed_logged_so_far".into(),
            json!(life.cluster.logged("EventMemberFailed:")),
        );
        m
    }

    /// Which agents are polled over the RPC: the seed plus a random `--observers` (default
    /// 100) of the others, or all of them when that covers everyone.
    fn pick_observers(&mut self, n: usize) -> Vec<usize> {
        let k = self.args.observers.unwrap_or(DEFAULT_OBSERVERS).max(1);
        if k >= n - 1 {
            return (0..n).collect();
        }
        let mut obs = vec![0];
        let sample = index::sample(&mut self.rng, n - 1, k.min(n - 1));
        obs.extend(sample.into_iter().map(|i| i + 1));
        obs.sort_unstable();
        obs
    }

    /// One cluster: start, scenarios, teardown. An agent failing to start or a cluster not
    /// converging is recorded and the run goes on; only harness errors (writing files) stop it.
    async fn lifetime(&mut self, kind: Kind, n: usize, rep: usize) -> Result<(), String> {
        let addrs = cluster::addresses(&mut self.rng, n, self.args.addr_mode)?;
        let plan = Plan {
            kind,
            binary: self.binary(kind).to_path_buf(),
            start: self.args.start,
            join: self.args.join_mode,
            member_handlers: self.args.member_handlers,
        };
        if let Err(e) = resources::evict_from_page_cache(&plan.binary) {
            log(&format!("cannot drop the binary from the page cache: {e}"));
        }
        let cluster = Cluster::prepare(plan, &addrs, &format!("n{n}-r{rep}"), self.args.keep)?;
        let observers = self.pick_observers(n);
        log(&format!(
            "{} N={n} rep={rep}: starting ({}, join={}, {} observers, first address {})",
            kind.as_str(),
            self.args.start.as_str(),
            self.args.join_mode.as_str(),
            observers.len(),
            addrs[0].0
        ));
        let mut life = Life {
            cluster,
            rep,
            conns: Vec::new(),
            observers: observers.len(),
        };
        let result = self.scenarios(&mut life, &observers).await;
        life.conns.clear();
        life.cluster.teardown().await;
        if let Err(e) = result {
            log(&format!("  {} N={n} rep={rep}: {e}", kind.as_str()));
        }
        Ok(())
    }

    async fn scenarios(&mut self, life: &mut Life, observers: &[usize]) -> Result<(), String> {
        self.convergence(life, observers).await?;
        self.resources(life).await;
        for k in 0..self.args.events {
            self.user_event(life, k).await;
            tokio::time::sleep(self.args.gap).await;
        }
        for k in 0..self.args.queries {
            self.query(life, k).await;
            tokio::time::sleep(self.args.gap).await;
        }
        log("  failure (kill -9)");
        self.failure(life).await;
        tokio::time::sleep(self.args.gap).await;
        log("  graceful leave");
        self.leave(life).await;
        Ok(())
    }

    /// How long to wait for member-event handlers: not at all when they do not run.
    fn member_handler_timeout(&self) -> Duration {
        if self.args.member_handlers {
            self.args.handler_timeout
        } else {
            Duration::ZERO
        }
    }

    /// Polls `events` every `every` until `done` or `limit`.
    async fn wait_handlers(
        cluster: &mut Cluster,
        limit: Duration,
        every: Duration,
        done: impl Fn(&Cluster) -> bool,
    ) {
        let end = Instant::now() + limit;
        loop {
            cluster.events.poll();
            if done(cluster) || Instant::now() >= end {
                return;
            }
            tokio::time::sleep(every).await;
        }
    }

    fn poll_info(rec: &mut Map<String, Value>, watches: &[Watch]) {
        let (med, p99) = rtt_summary(watches);
        rec.insert(
            "poll_requests".into(),
            json!(watches.iter().map(|w| w.requests).sum::<u64>()),
        );
        rec.insert(
            "poll_errors".into(),
            json!(watches.iter().map(|w| w.errors).sum::<u64>()),
        );
        rec.insert("poll_rtt_median_s".into(), r4(med.map(|x| round(x, 5))));
        rec.insert("poll_rtt_p99_s".into(), r4(p99.map(|x| round(x, 5))));
        if let Some(e) = watches.iter().rev().find_map(|w| w.last_error.clone()) {
            rec.insert("poll_last_error".into(), json!(e));
        }
    }

    // -- convergence ---------------------------------------------------------------------

    async fn convergence(&mut self, life: &mut Life, observers: &[usize]) -> Result<(), String> {
        let n = life.cluster.n();
        let lm = LoadMeter::start();
        let clients = match life.cluster.start(observers).await {
            Ok(c) => c,
            Err(e) => {
                let mut rec = self.base(life, "convergence");
                rec.insert("converged".into(), json!(false));
                rec.insert("error".into(), json!(e));
                rec.insert(
                    "agents_started".into(),
                    json!(life
                        .cluster
                        .agents
                        .iter()
                        .filter(|a| a.t_spawn.is_some())
                        .count()),
                );
                rec.extend(lm.result());
                self.sink.emit(&rec);
                return Err(format!("did not start: {e}"));
            }
        };
        let c = &life.cluster;
        let t0 = c.t_last_spawn;
        log(&format!(
            "  started {n} agents in {:.2} s (last spawn to last ready {:.3} s)",
            t0 - c.t_first_spawn,
            c.t_last_ready - t0
        ));
        let mut by_idx: BTreeMap<usize, Client> = clients.into_iter().collect();
        let conns: Vec<Conn> = observers
            .iter()
            .map(|&i| {
                let a = &c.agents[i];
                Conn::new(i, a.name.clone(), a.rpc.to_string(), by_idx.remove(&i))
            })
            .collect();
        let deadline = Instant::now() + self.args.conv_timeout;
        let (conns, watches) = watch_all(
            conns,
            Probe::Converge { n },
            self.args.poll_interval,
            deadline,
        )
        .await;
        life.conns = conns;
        let conv: Vec<f64> = watches.iter().filter_map(|w| w.done_at).collect();
        let converged = conv.len() == watches.len();

        // The handlers' view: every agent ran its handler for a member-join of every other.
        let names: Vec<String> = life.cluster.agents.iter().map(|a| a.name.clone()).collect();
        let pairs_seen = |c: &Cluster| {
            names
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    c.events.seen("member-join", m).map_or(0, |s| {
                        s.len() - usize::from(s.contains_key(&i)) // the local join is optional
                    })
                })
                .sum::<usize>()
        };
        if converged && self.args.member_handlers {
            Self::wait_handlers(
                &mut life.cluster,
                self.args.handler_timeout,
                Duration::from_millis(50),
                |c| pairs_seen(c) >= n * (n - 1),
            )
            .await;
        } else {
            life.cluster.events.poll();
        }
        let mut handler_done = Vec::new();
        for i in 0..n {
            let mut last: Option<f64> = Some(0.0);
            for (j, m) in names.iter().enumerate() {
                if i == j {
                    continue;
                }
                let t = life
                    .cluster
                    .events
                    .seen("member-join", m)
                    .and_then(|s| s.get(&i).copied());
                last = match (last, t) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            if let Some(t) = last {
                handler_done.push(t);
            }
        }
        let c = &life.cluster;
        let ready: Vec<f64> = c
            .agents
            .iter()
            .filter_map(|a| Some(a.t_ready? - a.t_spawn?))
            .collect();
        let rel: Vec<f64> = conv.iter().map(|t| t - t0).collect();
        let hrel: Vec<f64> = handler_done.iter().map(|t| t - t0).collect();
        let mut rec = self.base(life, "convergence");
        rec.insert("converged".into(), json!(converged));
        rec.insert("observers_converged".into(), json!(conv.len()));
        // How far the observers got: the alive count each listed last (N for those done).
        let mut last: Vec<i64> = watches.iter().filter_map(|w| w.last_alive).collect();
        last.sort_unstable();
        if let (Some(min), Some(mid)) = (last.first(), last.get(last.len() / 2)) {
            rec.insert("alive_seen_min".into(), json!(min));
            rec.insert("alive_seen_median".into(), json!(mid));
        }
        let k = watches.len();
        rec.insert("t50_s".into(), r4(pct_time(&rel, k, 0.5)));
        rec.insert("t99_s".into(), r4(pct_time(&rel, k, 0.99)));
        rec.insert("t100_s".into(), r4(pct_time(&rel, k, 1.0)));
        rec.insert("handler_agents_complete".into(), json!(hrel.len()));
        rec.insert("handler_t50_s".into(), r4(pct_time(&hrel, n, 0.5)));
        rec.insert("handler_t99_s".into(), r4(pct_time(&hrel, n, 0.99)));
        rec.insert("handler_t100_s".into(), r4(pct_time(&hrel, n, 1.0)));
        rec.insert(
            "bringup_s".into(),
            r4(Some(c.t_last_spawn - c.t_first_spawn)),
        );
        rec.insert(
            "last_spawn_to_ready_s".into(),
            r4(Some(c.t_last_ready - t0)),
        );
        rec.insert(
            "agent_start_to_rpc_ready_median_s".into(),
            r4(median(&ready)),
        );
        rec.insert(
            "verify_failed".into(),
            json!(watches.iter().filter(|w| w.verify_failed).count()),
        );
        rec.insert(
            "poll_interval_s".into(),
            json!(self.args.poll_interval.as_secs_f64()),
        );
        Self::poll_info(&mut rec, &watches);
        rec.extend(lm.result());
        self.sink.emit(&rec);
        if converged {
            Ok(())
        } else {
            Err(format!(
                "only {} of {k} observers saw {n} alive within {:.0} s; skipping the other scenarios",
                conv.len(),
                self.args.conv_timeout.as_secs_f64()
            ))
        }
    }

    // -- idle resources ------------------------------------------------------------------

    async fn resources(&mut self, life: &mut Life) {
        let a = &self.args;
        log(&format!(
            "  resources: settle {:.0} s, idle window {:.0} s",
            a.settle.as_secs_f64(),
            a.idle.as_secs_f64()
        ));
        tokio::time::sleep(a.settle).await;
        let pids: Vec<u32> = life
            .cluster
            .agents
            .iter()
            .filter(|a| a.state == State::Running)
            .filter_map(|a| a.pid)
            .collect();
        let c0: Vec<Option<u64>> = pids.iter().map(|&p| resources::cpu_ticks(p)).collect();
        let lo0 = resources::loopback_rx();
        let lm = LoadMeter::start();
        let w0 = Instant::now();
        tokio::time::sleep(a.idle).await;
        let w = w0.elapsed().as_secs_f64();
        let c1: Vec<Option<u64>> = pids.iter().map(|&p| resources::cpu_ticks(p)).collect();
        let lo1 = resources::loopback_rx();
        let load = lm.result();
        let mem: Vec<resources::Memory> =
            pids.iter().filter_map(|&p| resources::memory(p)).collect();
        let hz = resources::clock_ticks();
        let cpu: Vec<f64> = c0
            .iter()
            .zip(&c1)
            .filter_map(|(a, b)| Some(100.0 * (b.as_ref()? - a.as_ref()?) as f64 / hz / w))
            .collect();
        let mib = |f: fn(&resources::Memory) -> u64| -> Vec<f64> {
            mem.iter().map(|m| f(m) as f64 / 1024.0).collect()
        };
        let rss = mib(|m| m.rss_kib);
        let pss = mib(|m| m.pss_kib);
        let uss = mib(|m| m.uss_kib);
        let hwm = mib(|m| m.hwm_kib);
        let threads: Vec<f64> = mem.iter().map(|m| m.threads as f64).collect();
        let agents = pids.len().max(1) as f64;
        let r = |x: Option<f64>, d| json!(x.map(|x| round(x, d)));
        let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
        let sum = |v: &[f64]| Some(v.iter().sum::<f64>());
        let mut rec = self.base(life, "resources");
        rec.insert("window_s".into(), r(Some(w), 2));
        rec.insert("agents".into(), json!(pids.len()));
        rec.insert("agents_measured".into(), json!(mem.len()));
        for (name, v) in [("rss", &rss), ("pss", &pss), ("uss", &uss)] {
            rec.insert(format!("{name}_mib_median"), r(median(v), 2));
            rec.insert(format!("{name}_mib_max"), r(max(v), 2));
            rec.insert(format!("{name}_mib_total"), r(sum(v), 1));
        }
        rec.insert("hwm_mib_median".into(), r(median(&hwm), 2));
        rec.insert("threads_median".into(), r(median(&threads), 1));
        rec.insert("threads_max".into(), r(max(&threads), 0));
        rec.insert("cpu_pct_median".into(), r(median(&cpu), 3));
        rec.insert("cpu_pct_mean".into(), r(sum(&cpu).map(|s| s / agents), 3));
        rec.insert("cpu_pct_max".into(), r(max(&cpu), 3));
        rec.insert("cpu_pct_total".into(), r(sum(&cpu), 2));
        let bytes = lo1.0.saturating_sub(lo0.0) as f64 / w;
        let packets = lo1.1.saturating_sub(lo0.1) as f64 / w;
        rec.insert("lo_bytes_per_s".into(), r(Some(bytes), 1));
        rec.insert(
            "lo_bytes_per_s_per_agent".into(),
            r(Some(bytes / agents), 1),
        );
        rec.insert(
            "lo_pkts_per_s_per_agent".into(),
            r(Some(packets / agents), 2),
        );
        rec.extend(load);
        self.sink.emit(&rec);
    }

    // -- user events ---------------------------------------------------------------------

    async fn user_event(&mut self, life: &mut Life, k: usize) {
        let live = life.cluster.live();
        let Some(&origin) = live.choose(&mut self.rng) else {
            return;
        };
        let name = format!("bench-ev-{}-{k}", life.rep);
        let addr = life.cluster.agents[origin].rpc.to_string();
        let lm = LoadMeter::start();
        life.cluster.events.poll();
        let t0 = now();
        let sent = async {
            let c = Client::connect(&addr, "").await?;
            c.user_event(&name, Some(format!("p{k}").as_bytes()), false)
                .await
        }
        .await;
        let t_return = now();
        let mut rec = self.base(life, "event");
        if let Err(e) = &sent {
            rec.insert("error".into(), json!(e.to_string()));
        } else {
            // Every 10 ms up to 100 agents; less often above, to keep the harness cheap (each
            // scan reads every agent's handler log).
            let every = Duration::from_millis(10 * (live.len() as u64 / 100).max(1));
            Self::wait_handlers(&mut life.cluster, self.args.event_timeout, every, |c| {
                c.events.all_seen("user", &name, &live)
            })
            .await;
        }
        let times = life.cluster.events.times("user", &name, &live);
        rec.extend(spread("", &times, live.len(), t0));
        rec.insert("k".into(), json!(k));
        rec.insert(
            "origin".into(),
            json!(life.cluster.agents[origin].name.clone()),
        );
        rec.insert("coalesce".into(), json!(false));
        rec.insert("dispatch_return_s".into(), r4(Some(t_return - t0)));
        rec.extend(lm.result());
        self.sink.emit(&rec);
    }

    // -- queries ---------------------------------------------------------------------------

    async fn query(&mut self, life: &mut Life, k: usize) {
        let live = life.cluster.live();
        let Some(&origin) = live.choose(&mut self.rng) else {
            return;
        };
        let name = format!("bench-q-{}-{k}", life.rep);
        let addr = life.cluster.agents[origin].rpc.to_string();
        let names: BTreeMap<String, usize> = live
            .iter()
            .map(|&i| (life.cluster.agents[i].name.clone(), i))
            .collect();
        let expected = live.len();
        let lm = LoadMeter::start();
        let t0 = now();
        let deadline = Instant::now() + self.args.event_timeout;
        let mut acks: BTreeMap<String, f64> = BTreeMap::new();
        let mut resps: BTreeMap<String, f64> = BTreeMap::new();
        let mut done_at = None;
        let mut error = None;
        let mut unknown = 0usize;
        match Client::connect(&addr, "").await {
            Err(e) => error = Some(e.to_string()),
            Ok(client) => {
                let req = QueryRequest {
                    request_ack: true,
                    name: name.clone(),
                    payload: Some(format!("q{k}").into_bytes()),
                    ..QueryRequest::default()
                };
                match client.query(&req).await {
                    Err(e) => error = Some(e.to_string()),
                    Ok(mut rx) => {
                        while acks.len() < expected || resps.len() < expected {
                            let left = deadline.saturating_duration_since(Instant::now());
                            let Ok(Some(rec)) = tokio::time::timeout(left, rx.recv()).await else {
                                break;
                            };
                            let t = now();
                            if !names.contains_key(&rec.from) && rec.kind != query_record::DONE {
                                unknown += 1;
                                continue;
                            }
                            match rec.kind.as_str() {
                                query_record::ACK => {
                                    acks.entry(rec.from).or_insert(t);
                                }
                                query_record::RESPONSE => {
                                    resps.entry(rec.from).or_insert(t);
                                }
                                query_record::DONE => {
                                    done_at = Some(t);
                                    break;
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        life.cluster.events.poll();
        let handler = life.cluster.events.times("query", &name, &live);
        let mut rec = self.base(life, "query");
        let a: Vec<f64> = acks.values().copied().collect();
        let r: Vec<f64> = resps.values().copied().collect();
        rec.extend(spread("acks_", &a, expected, t0));
        rec.extend(spread("resp_", &r, expected, t0));
        rec.extend(spread("handler_", &handler, expected, t0));
        rec.insert("k".into(), json!(k));
        rec.insert(
            "origin".into(),
            json!(life.cluster.agents[origin].name.clone()),
        );
        rec.insert("done_s".into(), r4(done_at.map(|t| t - t0)));
        if unknown > 0 {
            rec.insert("records_from_unknown_nodes".into(), json!(unknown));
        }
        if let Some(e) = error {
            rec.insert("error".into(), json!(e));
        }
        rec.extend(lm.result());
        self.sink.emit(&rec);
    }

    /// A random live agent other than the seed and those in `taken`; its observer
    /// connection is dropped.
    fn pick_victim(&mut self, life: &mut Life, taken: &[usize]) -> Option<usize> {
        let cands: Vec<usize> = life
            .cluster
            .live()
            .into_iter()
            .filter(|&i| i != 0 && !taken.contains(&i))
            .collect();
        let victim = *cands.choose(&mut self.rng)?;
        life.conns.retain(|c| c.idx != victim);
        Some(victim)
    }

    // -- failure ---------------------------------------------------------------------------

    async fn failure(&mut self, life: &mut Life) {
        let mut victims = Vec::new();
        for _ in 0..self.args.kill.max(1) {
            match self.pick_victim(life, &victims) {
                Some(v) => victims.push(v),
                None => break,
            }
        }
        if victims.is_empty() {
            return;
        }
        let targets: Vec<String> = victims
            .iter()
            .map(|&v| life.cluster.agents[v].name.clone())
            .collect();
        // Failures handled before this point are false verdicts: nobody had been killed yet.
        life.cluster.events.poll();
        let false_failed = life.cluster.events.count("member-failed");
        let false_failed_logged = life.cluster.logged("EventMemberFailed:");
        let lm = LoadMeter::start();
        let t0 = now();
        for &v in &victims {
            life.cluster.agents[v].kill().await;
            life.cluster.agents[v].state = State::Killed;
        }
        let deadline = Instant::now() + self.args.status_timeout;
        let probe = Probe::Failed {
            targets: targets.clone(),
        };
        let conns = std::mem::take(&mut life.conns);
        let (conns, watches) = watch_all(conns, probe, self.args.poll_interval, deadline).await;
        life.conns = conns;
        let live = life.cluster.live();
        Self::wait_handlers(
            &mut life.cluster,
            self.member_handler_timeout(),
            Duration::from_millis(50),
            |c| {
                targets
                    .iter()
                    .all(|t| c.events.all_seen("member-failed", t, &live))
            },
        )
        .await;
        // An agent's handler time for the whole set: its last one (none if any is missing).
        let per_target: Vec<Vec<Option<f64>>> = targets
            .iter()
            .map(|t| {
                let seen = life.cluster.events.seen("member-failed", t);
                live.iter()
                    .map(|a| seen.and_then(|m| m.get(a).copied()))
                    .collect()
            })
            .collect();
        let handler: Vec<f64> = (0..live.len())
            .filter_map(|i| {
                per_target
                    .iter()
                    .map(|v| v[i])
                    .try_fold(0.0_f64, |acc, t| Some(acc.max(t?)))
            })
            .collect();
        let seen: Vec<f64> = watches.iter().filter_map(|w| w.done_at).collect();
        let mut rec = self.base(life, "failure");
        rec.extend(spread("", &seen, watches.len(), t0));
        rec.extend(spread("handler_", &handler, live.len(), t0));
        rec.insert("victim".into(), json!(targets.join(",")));
        rec.insert("killed".into(), json!(targets.len()));
        if self.args.member_handlers {
            rec.insert("false_failed_before".into(), json!(false_failed));
        }
        rec.insert(
            "false_failed_logged_before".into(),
            json!(false_failed_logged),
        );
        Self::poll_info(&mut rec, &watches);
        rec.extend(lm.result());
        self.sink.emit(&rec);
    }

    // -- graceful leave ----------------------------------------------------------------------

    async fn leave(&mut self, life: &mut Life) {
        let Some(victim) = self.pick_victim(life, &[]) else {
            return;
        };
        let target = life.cluster.agents[victim].name.clone();
        let addr = life.cluster.agents[victim].rpc.to_string();
        let lm = LoadMeter::start();
        let t0 = now();
        // The leave runs on its own task: its answer and the agent's exit are timed while the
        // observers watch.
        let leave = tokio::spawn(async move {
            let r = async { Client::connect(&addr, "").await?.leave().await }.await;
            (now(), r.err().map(|e| e.to_string()))
        });
        let deadline = Instant::now() + self.args.status_timeout;
        let probe = Probe::Status {
            target: target.clone(),
            want: "left",
            also: Some("leaving"),
        };
        let conns = std::mem::take(&mut life.conns);
        let exit_limit = Duration::from_secs(30);
        let ((conns, watches), exit_t) = tokio::join!(
            watch_all(conns, probe, self.args.poll_interval, deadline),
            life.cluster.agents[victim].wait_exit(exit_limit),
        );
        life.conns = conns;
        let (leave_t, leave_err) = match tokio::time::timeout(Duration::from_secs(5), leave).await {
            Ok(Ok((t, e))) => (Some(t), e),
            Ok(Err(e)) => (None, Some(format!("leave task: {e}"))),
            Err(_) => (None, Some("leave did not return".to_owned())),
        };
        let agent = &mut life.cluster.agents[victim];
        agent.kill().await; // if it did not exit by itself
        agent.state = State::Left;
        let live = life.cluster.live();
        Self::wait_handlers(
            &mut life.cluster,
            self.member_handler_timeout(),
            Duration::from_millis(50),
            |c| c.events.all_seen("member-leave", &target, &live),
        )
        .await;
        let handler = life.cluster.events.times("member-leave", &target, &live);
        let seen: Vec<f64> = watches.iter().filter_map(|w| w.done_at).collect();
        let leaving: Vec<f64> = watches.iter().filter_map(|w| w.also_at).collect();
        let mut rec = self.base(life, "leave");
        rec.extend(spread("", &seen, watches.len(), t0));
        rec.insert(
            "leaving_t_first_s".into(),
            r4(leaving.iter().copied().reduce(f64::min).map(|t| t - t0)),
        );
        rec.insert("leaving_observed".into(), json!(leaving.len()));
        rec.extend(spread("handler_", &handler, live.len(), t0));
        rec.insert("victim".into(), json!(target));
        rec.insert("leave_cmd_return_s".into(), r4(leave_t.map(|t| t - t0)));
        rec.insert("agent_exit_s".into(), r4(exit_t.map(|t| t - t0)));
        if let Some(e) = leave_err {
            rec.insert("leave_error".into(), json!(e));
        }
        Self::poll_info(&mut rec, &watches);
        rec.extend(lm.result());
        self.sink.emit(&rec);
    }
}
