//! The compose demo (`deploy/compose.yaml`) on the real Docker engine, checked as a user would:
//! `up --build` with 3 web nodes, requests from the host go round robin, `docker kill` takes a
//! node out of rotation, `--scale web=5` adds nodes, `docker network disconnect` fails a node
//! and reconnecting brings it back, and `down` leaves nothing behind. Then its nginx variant
//! (`deploy/compose-nginx.yaml`, the image from `deploy/build-nginx-image.sh`): the same round
//! robin through Debian's nginx, kept in step by template mode, with nginx reloaded and never
//! restarted.
//!
//! Needs Docker Engine, Docker Compose (`docker compose` or `docker-compose`) and the static
//! binary in `deploy/image/vassal` (`deploy/build-image.sh --binary-only`; scripts/test runs
//! it). Without them the test fails and says so; it never skips silently.
//!
//! Membership is read from the agents' logs (`docker logs`; the image has no shell for `docker
//! exec`), with the interop tests' contract, Go Serf's lines: `EventMemberJoin: NAME ADDR`,
//! `EventMemberFailed: NAME ADDR`, `EventMemberLeave: NAME ADDR`. If the binary does not know the role flags (`-lb-listen`,
//! `-web-listen`), the HTTP checks cannot run: the test then starts the same topology without
//! those flags, checks membership only, and prints a loud notice saying the HTTP half was
//! skipped. Everything runs in one compose project with a unique name, on ports picked free on
//! 127.0.0.1, and is removed at the end, also when the test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vassal_testkit::wait_until;

/// From `up` to every web node alive at the LB (includes the agents' start and retry-join).
const CONVERGE: Duration = Duration::from_secs(60);
/// From SIGKILL or a cut cable to `member-failed` at the LB: Lifeguard's suspicion timeout
/// (≥ 4 × log10(n) s in the LAN profile, longer without confirmations) plus probing.
const FAIL: Duration = Duration::from_secs(40);
/// From reconnecting a node to it being alive at the LB again: its refutation reaches the LB by
/// gossip or, at the latest, the next push/pull (every 30 s).
const HEAL: Duration = Duration::from_secs(75);
/// Any one docker or compose command.
const COMMAND: Duration = Duration::from_secs(180);

const SUBNET: &str = "10.0.0.0/24";
const LB_ADDR: &str = "10.0.0.5";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a command to completion within [`COMMAND`]; its stdout, or an error with its stderr.
fn run(program: &str, args: &[&str], env: &[(&str, String)]) -> Result<String, String> {
    let shown = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > COMMAND {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`{shown}` still running after {COMMAND:?}; killed it"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    if status.success() {
        Ok(out)
    } else {
        Err(format!("`{shown}` failed ({status}):\n{err}{out}"))
    }
}

fn docker(args: &[&str]) -> Result<String, String> {
    run("docker", args, &[])
}

/// `docker compose` if the plugin is there, else the standalone `docker-compose`.
fn compose_program() -> Vec<&'static str> {
    if docker(&["compose", "version"]).is_ok() {
        vec!["docker", "compose"]
    } else if run("docker-compose", &["version"], &[]).is_ok() {
        vec!["docker-compose"]
    } else {
        panic!(
            "Docker Compose is missing: neither `docker compose` nor `docker-compose` runs. \
             This test needs it (apt-get install docker-compose)."
        )
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

fn progress(start: Instant, what: &str) {
    eprintln!(
        "compose test [{:5.1}s] {what}",
        start.elapsed().as_secs_f64()
    );
}

/// One web container as Docker sees it.
#[derive(Debug, Clone)]
struct Web {
    id: String,
    /// The container's hostname, which is the agent's default node name.
    hostname: String,
    ip: Option<String>,
    running: bool,
    exit_code: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Alive,
    Failed,
    Left,
}

/// The latest status of every member named in an agent's log.
fn members_from_log(log: &str) -> BTreeMap<String, (Status, String)> {
    let mut view: BTreeMap<String, (Status, String)> = BTreeMap::new();
    for line in log.lines() {
        let after = |marker: &str| line.find(marker).map(|i| &line[i + marker.len()..]);
        if let Some(rest) = after("serf: EventMemberJoin: ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(addr)) = (words.next(), words.next()) {
                view.insert(name.to_owned(), (Status::Alive, addr.to_owned()));
            }
        } else if let Some(rest) = after("serf: EventMemberFailed: ") {
            if let Some(name) = rest.split_whitespace().next() {
                let addr = view.get(name).map(|m| m.1.clone()).unwrap_or_default();
                view.insert(name.to_owned(), (Status::Failed, addr));
            }
        } else if let Some(rest) = after("serf: EventMemberLeave: ") {
            if let Some(name) = rest.split_whitespace().next() {
                let addr = view.get(name).map(|m| m.1.clone()).unwrap_or_default();
                view.insert(name.to_owned(), (Status::Left, addr));
            }
        }
    }
    view
}

/// A compose project of our own: unique name, image tag and host ports; removed on drop.
struct Project {
    name: String,
    image: String,
    /// The nginx variant's lb image, built by the test.
    nginx_image: Option<String>,
    http_port: u16,
    stats_port: u16,
    compose: Vec<&'static str>,
    files: Vec<PathBuf>,
    start: Instant,
    _override_dir: Option<tempfile::TempDir>,
}

impl Project {
    fn new(roles: bool) -> Project {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("vassal-compose-{}-{nanos}", std::process::id());
        let mut files = vec![repo().join("deploy/compose.yaml")];
        let mut override_dir = None;
        if !roles {
            // The same topology without the role flags this binary refuses (see the module doc).
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("no-roles.yaml");
            std::fs::write(
                &path,
                format!(
                    "services:\n  lb:\n    command: [agent, -node=lb, -tag, role=lb, -bind={LB_ADDR}]\n  \
                     web:\n    command: [agent, -tag, role=web, -retry-join={LB_ADDR}, -retry-interval=2s]\n"
                ),
            )
            .unwrap();
            files.push(path);
            override_dir = Some(dir);
        }
        Project {
            image: format!("{name}:test"),
            nginx_image: None,
            name,
            http_port: free_port(),
            stats_port: free_port(),
            compose: compose_program(),
            files,
            start: Instant::now(),
            _override_dir: override_dir,
        }
    }

    /// The nginx variant: `deploy/compose-nginx.yaml`, its lb image built under a tag of its
    /// own.
    fn nginx() -> Project {
        let mut p = Project::new(true);
        p.files = vec![repo().join("deploy/compose-nginx.yaml")];
        let image = format!("{}-nginx:test", p.name);
        let script = repo().join("deploy/build-nginx-image.sh");
        run(script.to_str().unwrap(), &["--tag", &image], &[]).unwrap_or_else(|e| panic!("{e}"));
        p.nginx_image = Some(image);
        p
    }

    fn compose(&self, args: &[&str]) -> Result<String, String> {
        let mut all: Vec<String> = self.compose[1..].iter().map(|s| s.to_string()).collect();
        all.extend(["-p".to_owned(), self.name.clone()]);
        for f in &self.files {
            all.extend(["-f".to_owned(), f.display().to_string()]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let env = [
            ("VASSAL_IMAGE", self.image.clone()),
            ("VASSAL_HTTP_PORT", self.http_port.to_string()),
            ("VASSAL_STATS_PORT", self.stats_port.to_string()),
            ("VASSAL_SUBNET", SUBNET.to_owned()),
            ("VASSAL_LB_ADDR", LB_ADDR.to_owned()),
            (
                "VASSAL_NGINX_IMAGE",
                self.nginx_image.clone().unwrap_or_default(),
            ),
        ];
        run(self.compose[0], &all, &env)
    }

    #[track_caller]
    fn must_compose(&self, args: &[&str]) -> String {
        self.compose(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn label(&self) -> String {
        format!("label=com.docker.compose.project={}", self.name)
    }

    fn container_ids(&self, service: &str) -> Vec<String> {
        let out = docker(&[
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &self.label(),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        out.split_whitespace().map(str::to_owned).collect()
    }

    fn lb_id(&self) -> String {
        let ids = self.container_ids("lb");
        assert_eq!(ids.len(), 1, "one lb container, saw {ids:?}");
        ids[0].clone()
    }

    fn network(&self) -> String {
        let out = docker(&[
            "network",
            "ls",
            "--filter",
            &self.label(),
            "--format",
            "{{.Name}}",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let nets: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(nets.len(), 1, "one network in the project, saw {nets:?}");
        nets[0].to_owned()
    }

    fn webs(&self) -> Vec<Web> {
        let ids = self.container_ids("web");
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["inspect"];
        args.extend(ids.iter().map(String::as_str));
        let json: Value =
            serde_json::from_str(&docker(&args).unwrap_or_else(|e| panic!("{e}"))).unwrap();
        let mut webs: Vec<Web> = json
            .as_array()
            .expect("docker inspect prints an array")
            .iter()
            .map(|c| Web {
                id: c["Id"].as_str().unwrap().to_owned(),
                hostname: c["Config"]["Hostname"].as_str().unwrap().to_owned(),
                ip: c["NetworkSettings"]["Networks"]
                    .as_object()
                    .and_then(|n| n.values().next())
                    .and_then(|n| n["IPAddress"].as_str())
                    .filter(|ip| !ip.is_empty())
                    .map(str::to_owned),
                running: c["State"]["Running"] == true,
                exit_code: c["State"]["ExitCode"].as_i64().unwrap_or(-1),
            })
            .collect();
        webs.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        webs
    }

    fn running_webs(&self) -> Vec<Web> {
        self.webs().into_iter().filter(|w| w.running).collect()
    }

    fn log(&self, id: &str) -> String {
        // `docker logs` replays the container's stdout on stdout and its stderr on stderr.
        let out = Command::new("docker")
            .args(["logs", id])
            .output()
            .expect("docker logs runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits until the LB lists exactly `alive` as alive web members (checking each one's address
    /// when known) and every name in `failed` as failed.
    #[track_caller]
    fn wait_lb_view(&self, alive: &[Web], failed: &[&str], deadline: Duration, what: &str) {
        let lb = self.lb_id();
        let want: BTreeSet<&str> = alive.iter().map(|w| w.hostname.as_str()).collect();
        wait_until(deadline, what, || {
            let log = self.log(&lb);
            let view = members_from_log(&log);
            let seen: BTreeSet<&str> = view
                .iter()
                .filter(|(n, m)| m.0 == Status::Alive && n.as_str() != "lb")
                .map(|(n, _)| n.as_str())
                .collect();
            let addrs_ok = alive.iter().all(|w| match (&w.ip, view.get(&w.hostname)) {
                (Some(ip), Some((_, addr))) => addr.split(':').next() == Some(ip.as_str()),
                _ => true,
            });
            let failed_ok = failed
                .iter()
                .all(|n| view.get(*n).map(|m| m.0) == Some(Status::Failed));
            if seen == want && addrs_ok && failed_ok {
                Ok(())
            } else {
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                Err(format!(
                    "want alive {want:?} (at {:?}), failed {failed:?}; LB's view {view:?}\n\
                     LB log, last lines:\n{}",
                    alive.iter().map(|w| &w.ip).collect::<Vec<_>>(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ))
            }
        });
        progress(self.start, &format!("{what}: done"));
    }

    /// Waits until requests to the LB from the host go round robin over exactly `webs`, and
    /// the stats page lists them.
    #[track_caller]
    fn wait_rotation(&self, webs: &[Web], what: &str) {
        let want: BTreeSet<&str> = webs.iter().map(|w| w.hostname.as_str()).collect();
        let k = want.len();
        wait_until(FAIL, what, || {
            let served = (0..2 * k)
                .map(|_| served_by(self.http_port))
                .collect::<Result<Vec<String>, String>>()?;
            let first: BTreeSet<&str> = served[..k].iter().map(String::as_str).collect();
            if first != want || served[k..] != served[..k] {
                return Err(format!(
                    "want round robin over {want:?}; {} requests were served by {served:?}",
                    2 * k
                ));
            }
            if self.nginx_image.is_some() {
                // nginx has no stats page of ours.
                return Ok(());
            }
            let vassal_testkit::HttpResponse { status, body, .. } = http_get(self.stats_port)?;
            let missing: Vec<&Web> = webs
                .iter()
                .filter(|w| {
                    !body.contains(&w.hostname)
                        && !w.ip.as_ref().is_some_and(|ip| body.contains(ip))
                })
                .collect();
            if status != 200 || !missing.is_empty() {
                return Err(format!(
                    "stats page: status {status}, does not mention {missing:?}:\n{body}"
                ));
            }
            Ok(())
        });
        progress(self.start, &format!("{what}: done"));
    }

    /// What is left of the project in Docker: containers, networks, our image tag.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let list = |args: &[&str]| -> Vec<String> {
            docker(args)
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_else(|e| vec![format!("(listing failed: {e})")])
        };
        for c in list(&["ps", "-a", "-q", "--filter", &self.label()]) {
            left.push(format!("container {c}"));
        }
        for n in list(&["network", "ls", "-q", "--filter", &self.label()]) {
            left.push(format!("network {n}"));
        }
        for image in std::iter::once(&self.image).chain(&self.nginx_image) {
            for i in list(&["image", "ls", "-q", image]) {
                left.push(format!("image {image} ({i})"));
            }
        }
        left
    }
}

impl Drop for Project {
    /// Removes whatever the test created, also after a failure, and only that: the project's
    /// containers and network (by compose label) and the image tag it built.
    fn drop(&mut self) {
        if self.leftovers().is_empty() {
            return;
        }
        if let Err(e) = self.compose(&[
            "down",
            "--rmi",
            "all",
            "--volumes",
            "--remove-orphans",
            "--timeout",
            "2",
        ]) {
            eprintln!("cleanup: {e}");
        }
        for what in self.leftovers() {
            let mut words = what.split_whitespace();
            let (kind, id) = (words.next().unwrap(), words.next().unwrap_or(""));
            let r = match kind {
                "container" => docker(&["rm", "-f", id]),
                "network" => docker(&["network", "rm", id]),
                "image" => docker(&["rmi", "-f", id]),
                _ => Ok(String::new()),
            };
            if let Err(e) = r {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// One `GET /` to 127.0.0.1:`port` (the LB's published ports).
fn http_get(port: u16) -> Result<vassal_testkit::HttpResponse, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    vassal_testkit::http_get(addr, "/", Duration::from_secs(5))
}

/// The `X-Served-By` of one request through the LB.
fn served_by(port: u16) -> Result<String, String> {
    let r = http_get(port)?;
    if r.status != 200 {
        return Err(format!("LB answered {}: {}", r.status, r.body));
    }
    r.header("x-served-by")
        .map(str::to_owned)
        .ok_or_else(|| "LB's answer has no X-Served-By header".to_owned())
}

/// The static binary the image is built from, checked; and whether it has the role flags.
fn image_binary_has_roles() -> bool {
    let bin = repo().join("deploy/image/vassal");
    assert!(
        bin.exists(),
        "{} is missing: build it with deploy/build-image.sh --binary-only (scripts/test does)",
        bin.display()
    );
    let ldd = Command::new("ldd").arg(&bin).output().expect("ldd runs");
    let ldd =
        String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        ldd.contains("not a dynamic executable") || ldd.contains("statically linked"),
        "{} is not static (ldd: {ldd}); rebuild it with deploy/build-image.sh --binary-only",
        bin.display()
    );
    let help = Command::new(&bin)
        .args(["agent", "-h"])
        .output()
        .expect("the image's binary runs on the host");
    let help =
        String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    assert!(
        help.contains("-retry-join"),
        "unexpected `vassal agent -h`:\n{help}"
    );
    help.contains("-lb-listen") && help.contains("-web-listen")
}

#[test]
fn compose_demo_balances_fails_scales_heals_and_cleans_up() {
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        panic!("this test needs a running Docker Engine: {e}");
    }
    let roles = image_binary_has_roles();
    if !roles {
        eprintln!(
            "\n{bar}\n!! compose test: deploy/image/vassal has no -lb-listen/-web-listen flags yet.\n\
             !! Membership checks run for real; the HTTP round-robin and stats checks are SKIPPED.\n{bar}\n",
            bar = "!".repeat(88)
        );
    }
    let p = Project::new(roles);
    progress(p.start, &format!("project {} (roles: {roles})", p.name));

    // Three web nodes: each joins the LB at 10.0.0.5 under its hostname.
    p.must_compose(&["up", "--build", "-d", "--scale", "web=3"]);
    progress(p.start, "up --build --scale web=3");
    let webs = p.running_webs();
    assert_eq!(webs.len(), 3, "three web containers running: {webs:?}");
    p.wait_lb_view(
        &webs,
        &[],
        CONVERGE,
        "LB sees the 3 web nodes alive under their hostnames",
    );
    if roles {
        p.wait_rotation(&webs, "round robin over 3 web nodes");
    }

    // A web node dies without a word.
    let killed = webs[0].clone();
    docker(&["kill", &killed.id]).unwrap_or_else(|e| panic!("{e}"));
    progress(p.start, &format!("docker kill {}", killed.hostname));
    let survivors = &webs[1..];
    p.wait_lb_view(
        survivors,
        &[&killed.hostname],
        FAIL,
        "LB marks the killed node failed",
    );
    if roles {
        p.wait_rotation(survivors, "killed node out of rotation");
    }

    // Scale to 5: compose starts the killed container again and adds two; all five join.
    p.must_compose(&["up", "-d", "--scale", "web=5"]);
    progress(p.start, "up --scale web=5");
    let webs = p.running_webs();
    assert_eq!(webs.len(), 5, "five web containers running: {webs:?}");
    p.wait_lb_view(&webs, &[], CONVERGE, "LB sees 5 web nodes alive");
    if roles {
        p.wait_rotation(&webs, "round robin over 5 web nodes");
    }

    // Cut one node's cable, then plug it back in at the same address.
    let net = p.network();
    let cut = webs
        .iter()
        .find(|w| w.id != killed.id)
        .expect("a node that was not restarted")
        .clone();
    let ip = cut.ip.clone().expect("the node has an address");
    docker(&["network", "disconnect", &net, &cut.id]).unwrap_or_else(|e| panic!("{e}"));
    progress(
        p.start,
        &format!("docker network disconnect {}", cut.hostname),
    );
    let others: Vec<Web> = webs.iter().filter(|w| w.id != cut.id).cloned().collect();
    p.wait_lb_view(
        &others,
        &[&cut.hostname],
        FAIL,
        "LB marks the disconnected node failed",
    );
    if roles {
        p.wait_rotation(&others, "disconnected node out of rotation");
    }
    docker(&["network", "connect", "--ip", &ip, &net, &cut.id]).unwrap_or_else(|e| panic!("{e}"));
    progress(p.start, &format!("docker network connect {}", cut.hostname));
    p.wait_lb_view(&webs, &[], HEAL, "reconnected node alive again at the LB");
    if roles {
        p.wait_rotation(&webs, "reconnected node back in rotation");
    }

    // `stop` sends the service's stop signal (SIGINT): every web node leaves gracefully and
    // exits, then the LB does.
    p.must_compose(&["stop", "web"]);
    progress(p.start, "stop web");
    let lb = p.lb_id();
    wait_until(FAIL, "LB sees every web node leave (not fail)", || {
        let view = members_from_log(&p.log(&lb));
        let statuses: Vec<_> = webs
            .iter()
            .map(|w| view.get(&w.hostname).map(|m| m.0))
            .collect();
        if statuses.iter().all(|s| *s == Some(Status::Left)) {
            Ok(())
        } else {
            Err(format!("web nodes' statuses at the LB: {statuses:?}"))
        }
    });
    // Serf's contract for SIGINT: leave, then exit 0 (not hang until Docker's SIGKILL, 137).
    let stopped = p.webs();
    assert!(
        stopped.iter().all(|w| !w.running && w.exit_code == 0),
        "every web agent exits 0 after its graceful leave: {stopped:?}"
    );
    p.must_compose(&["stop", "lb"]);
    let lb_exit = docker(&["inspect", "--format", "{{.State.ExitCode}}", &lb])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lb_exit.trim(),
        "0",
        "the LB agent exits 0 after its graceful leave"
    );

    p.must_compose(&["down", "--rmi", "all", "--volumes", "--timeout", "10"]);
    progress(p.start, "down");
    let left = p.leftovers();
    assert!(left.is_empty(), "down left behind: {left:?}");
}

/// How many times nginx in the lb container has reloaded: its own line for each `-s reload`
/// (at notice, to the container's log).
fn nginx_reloads(p: &Project, lb: &str) -> usize {
    p.log(lb).matches("reconfiguring").count()
}

/// Waits until nginx has reloaded since it had reloaded `before` times.
#[track_caller]
fn wait_reloaded(p: &Project, lb: &str, before: usize, what: &str) {
    wait_until(FAIL, what, || match nginx_reloads(p, lb) {
        n if n > before => Ok(()),
        n => Err(format!(
            "{n} reload(s), as before; the lb's log:\n{}",
            p.log(lb)
        )),
    });
}

/// The PID (on the host) of the nginx master in the lb container.
fn nginx_master(lb: &str) -> Result<String, String> {
    let top = docker(&["top", lb, "-eo", "pid,args"])?;
    top.lines()
        .find(|l| l.contains("nginx: master process"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .ok_or_else(|| format!("no nginx master in the lb container:\n{top}"))
}

// Issue 15: the compose variant with nginx. Round robin through nginx over 3 web nodes, a
// docker kill and a graceful leave each leave the upstream, new nodes enter it, and nginx is
// reloaded at each change, never restarted.
#[test]
fn compose_with_nginx_follows_kills_leaves_and_new_nodes_without_restarting_nginx() {
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        panic!("this test needs a running Docker Engine: {e}");
    }
    assert!(
        image_binary_has_roles(),
        "deploy/image/vassal lacks -web-listen"
    );
    let p = Project::nginx();
    progress(p.start, &format!("project {} (nginx)", p.name));
    p.must_compose(&["up", "--build", "-d", "--scale", "web=3"]);
    progress(p.start, "up --build --scale web=3");
    let webs = p.running_webs();
    assert_eq!(webs.len(), 3, "three web containers running: {webs:?}");
    p.wait_lb_view(&webs, &[], CONVERGE, "the lb agent sees the 3 web nodes");
    p.wait_rotation(&webs, "round robin through nginx over 3 web nodes");
    let lb = p.lb_id();
    let master = nginx_master(&lb).unwrap_or_else(|e| panic!("{e}"));

    // kill -9 of a web node: out of the upstream once the agent marks it failed.
    let reloads = nginx_reloads(&p, &lb);
    let killed = webs[0].clone();
    docker(&["kill", &killed.id]).unwrap_or_else(|e| panic!("{e}"));
    progress(p.start, &format!("docker kill {}", killed.hostname));
    p.wait_lb_view(
        &webs[1..],
        &[&killed.hostname],
        FAIL,
        "the killed node failed",
    );
    wait_reloaded(&p, &lb, reloads, "nginx reloaded for the kill");
    p.wait_rotation(&webs[1..], "the killed node out of nginx's rotation");

    // Scale to 4: the killed container starts again and one more joins.
    let reloads = nginx_reloads(&p, &lb);
    p.must_compose(&["up", "-d", "--scale", "web=4"]);
    progress(p.start, "up --scale web=4");
    let webs = p.running_webs();
    assert_eq!(webs.len(), 4, "four web containers running: {webs:?}");
    p.wait_lb_view(&webs, &[], CONVERGE, "the lb agent sees 4 web nodes");
    p.wait_rotation(&webs, "round robin through nginx over 4 web nodes");
    wait_reloaded(&p, &lb, reloads, "nginx reloaded for the new nodes");

    // A graceful leave (docker stop sends the service's SIGINT).
    let reloads = nginx_reloads(&p, &lb);
    let leaving = webs[1].clone();
    docker(&["stop", "-t", "10", &leaving.id]).unwrap_or_else(|e| panic!("{e}"));
    progress(p.start, &format!("docker stop {}", leaving.hostname));
    let rest: Vec<Web> = webs
        .iter()
        .filter(|w| w.id != leaving.id)
        .cloned()
        .collect();
    wait_until(
        FAIL,
        "the lb agent sees the stopped node leave",
        || match members_from_log(&p.log(&lb)).get(&leaving.hostname) {
            Some((Status::Left, _)) => Ok(()),
            other => Err(format!("its status at the lb: {other:?}")),
        },
    );
    wait_reloaded(&p, &lb, reloads, "nginx reloaded for the leave");
    p.wait_rotation(&rest, "the leaving node out of nginx's rotation");

    let after = nginx_master(&lb).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        master,
        after,
        "nginx was restarted; the lb's log:\n{}",
        p.log(&lb)
    );
    p.must_compose(&["down", "--rmi", "all", "--volumes", "--timeout", "10"]);
    progress(p.start, "down");
    let left = p.leftovers();
    assert!(left.is_empty(), "down left behind: {left:?}");
}

#[test]
fn members_from_log_keeps_each_members_latest_status() {
    let log = "    2026/11/24 14:16:00 [INFO] serf: EventMemberJoin: lb 10.0.0.5\n\
               ==> Caught signal: interrupt\n\
               [INFO] serf: EventMemberJoin: a1 10.0.0.2\n\
               [INFO] serf: EventMemberJoin: b2 10.0.0.3\n\
               [INFO] serf: EventMemberFailed: a1 10.0.0.2\n\
               [INFO] serf: EventMemberLeave: b2 10.0.0.3\n\
               [INFO] agent: Received event: member-join\n\
               [INFO] serf: EventMemberJoin: a1 10.0.0.2\n";
    let view = members_from_log(log);
    assert_eq!(view["lb"], (Status::Alive, "10.0.0.5".to_owned()));
    assert_eq!(view["a1"], (Status::Alive, "10.0.0.2".to_owned()));
    assert_eq!(view["b2"], (Status::Left, "10.0.0.3".to_owned()));
    assert_eq!(view.len(), 3);
}
