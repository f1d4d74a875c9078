//! Serf's RPC session rules and bad input (spec §6.2, §6.5), raw on the socket: the Vassal agent
//! answers each misuse with the Go agent's exact words (or closes the connection where Go
//! does), and keeps serving every other client throughout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use vassal_rpc::msgpack::{self, Value};
use vassal_rpc::protocol::map;
use vassal_testkit::{run_cli, serf_cli, vassal_bin, wait_until, GoSerf, Loopback, VassalAgent};

const WAIT: Duration = Duration::from_secs(10);

/// A bare RPC connection.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

/// What came back: a value, the connection closing, or nothing within the wait.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Value(Value),
    Closed,
    Nothing,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Raw { s, buf: Vec::new() }
    }

    fn send_bytes(&mut self, b: &[u8]) {
        // The agent may already have closed on us; that is what some tests expect.
        let _ = self.s.write_all(b);
    }

    fn send(&mut self, cmd: &str, seq: u64, body: Option<Value>) {
        let mut b = msgpack::encode(&map(vec![
            ("Command", Value::str(cmd)),
            ("Seq", Value::Uint(seq)),
        ]));
        if let Some(body) = body {
            msgpack::encode_into(&body, &mut b);
        }
        self.send_bytes(&b);
    }

    fn recv_within(&mut self, wait: Duration) -> Got {
        let start = Instant::now();
        loop {
            if let Some((v, n)) = msgpack::decode(&self.buf).unwrap() {
                self.buf.drain(..n);
                return Got::Value(v);
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Got::Closed,
                Err(_) if start.elapsed() > wait => return Got::Nothing,
                Err(_) => {}
            }
        }
    }

    fn recv(&mut self) -> Got {
        self.recv_within(WAIT)
    }

    /// The next response header's `(Seq, Error)`.
    #[track_caller]
    fn header(&mut self) -> (u64, String) {
        match self.recv() {
            Got::Value(v) => {
                let seq = match v.get("Seq") {
                    Some(Value::Uint(n)) => *n,
                    other => panic!("no Seq in {v:?}: {other:?}"),
                };
                let err = match v.get("Error") {
                    Some(Value::Str(s)) => String::from_utf8_lossy(s).into_owned(),
                    other => panic!("no Error in {v:?}: {other:?}"),
                };
                (seq, err)
            }
            other => panic!("expected a response header, got {other:?}"),
        }
    }

    fn handshake(&mut self, seq: u64) {
        self.send(
            "handshake",
            seq,
            Some(map(vec![("Version", Value::Uint(1))])),
        );
        assert_eq!(self.header(), (seq, String::new()));
    }
}

fn body(pairs: Vec<(&str, Value)>) -> Option<Value> {
    Some(map(pairs))
}

/// Replays one session of misuse against `addr`; everything the agent said, in order.
fn misuse_session(addr: SocketAddr) -> Vec<String> {
    let mut said = Vec::new();
    let mut note = |what: &str, got: Got| {
        said.push(match got {
            Got::Value(v) => format!("{what}: {v}"),
            other => format!("{what}: {other:?}"),
        })
    };
    let mut c = Raw::connect(addr);
    c.send("handshake", 1, body(vec![("Version", Value::Uint(2))]));
    note("version 2", c.recv());
    c.send("handshake", 2, body(vec![("Version", Value::Uint(1))]));
    note("version 1", c.recv());
    c.send("handshake", 3, body(vec![("Version", Value::Uint(1))]));
    note("second handshake", c.recv());
    c.send("stop", 4, body(vec![("Stop", Value::Uint(99))]));
    note("stop unknown", c.recv());
    c.send(
        "respond",
        5,
        body(vec![("ID", Value::Uint(7)), ("Payload", Value::Nil)]),
    );
    note("respond unknown", c.recv());
    c.send("stream", 6, body(vec![("Type", Value::str("member-jion"))]));
    note("bad filter", c.recv());
    c.send(
        "stream",
        7,
        body(vec![("Type", Value::str("user:nothing-sends-this"))]),
    );
    note("stream", c.recv());
    c.send("stream", 7, body(vec![("Type", Value::str("user"))]));
    note("same seq", c.recv());
    c.send("monitor", 8, body(vec![("LogLevel", Value::str("loud"))]));
    note("bad level", c.recv());
    c.send("monitor", 9, body(vec![("LogLevel", Value::str("err"))]));
    note("monitor", c.recv());
    c.send("monitor", 10, body(vec![("LogLevel", Value::str("warn"))]));
    note("second monitor", c.recv());
    c.send("query", 11, body(vec![("Name", Value::str("_serf_x"))]));
    note("internal query", c.recv());
    c.send(
        "event",
        12,
        body(vec![
            ("Name", Value::str("big")),
            ("Payload", Value::Bin(vec![b'x'; 600])),
        ]),
    );
    note("big event", c.recv());
    c.send(
        "get-coordinate",
        13,
        body(vec![("Node", Value::str("nosuch"))]),
    );
    note("coordinate header", c.recv());
    note("coordinate body", c.recv());
    c.send(
        "force-leave",
        14,
        body(vec![
            ("Node", Value::str("nosuch")),
            ("Prune", Value::Bool(true)),
        ]),
    );
    note("force-leave unknown", c.recv());
    c.send("install-key", 15, body(vec![("Key", Value::str("!!!"))]));
    note("bad key header", c.recv());
    note("bad key body", c.recv());
    // Stop the monitor first: the refusal below is logged at ERR.
    c.send("stop", 16, body(vec![("Stop", Value::Uint(9))]));
    note("stop monitor", c.recv());
    c.send("bogus", 17, None);
    note("unknown command", c.recv());
    note("after that", c.recv());

    // A command before the handshake: refused, then closed.
    let mut c = Raw::connect(addr);
    c.send("members", 1, None);
    note("members first", c.recv());
    note("after that", c.recv());

    // A bad regular expression closes the connection without an answer.
    let mut c = Raw::connect(addr);
    c.handshake(1);
    c.send("members-filtered", 2, body(vec![("Name", Value::str("("))]));
    note("bad regex", c.recv());
    said
}

#[test]
fn misuse_gets_the_go_agents_exact_answers() {
    let host = Loopback::fresh();
    let g1 = GoSerf::start("g1", &host);
    let v1 = VassalAgent::builder("v1", &host).spawn_ready();
    let go = misuse_session(g1.rpc_addr());
    let ours = misuse_session(v1.rpc_addr());
    // Spot checks of Serf's strings, then the whole transcript.
    let text = ours.join("\n");
    for s in [
        "Handshake required",
        "Unsupported IPC version",
        "Handshake already performed",
        "No pending queries matching ID",
        "Invalid event filter",
        "Stream with given sequence exists",
        "Unknown log level: LOUD",
        "Monitor already exists",
        "Queries cannot contain the '_serf_' prefix",
        "user event exceeds configured limit of 512 bytes before encoding",
        "illegal base64 data at input byte 0",
        "Unsupported command",
    ] {
        assert!(text.contains(s), "missing {s:?} in\n{text}");
    }
    assert_eq!(
        ours,
        go,
        "\nours:\n{}\n\ngo:\n{}",
        ours.join("\n"),
        go.join("\n")
    );
}

#[test]
fn auth_is_required_when_configured() {
    let host = Loopback::fresh();
    let v1 = VassalAgent::builder("v1", &host)
        .arg("-rpc-auth=s3cret")
        .spawn();
    let addr = v1.rpc_addr();
    let c = wait_until(WAIT, "the agent's RPC port to open", || {
        TcpStream::connect(addr).map_err(|e| e.to_string())
    });
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut c = Raw {
        s: c,
        buf: Vec::new(),
    };
    c.handshake(1);
    // Before auth: refused, and (as in Serf) the body is not read, so it is taken as the next
    // request, which is refused in turn.
    c.send("event", 2, body(vec![("Name", Value::str("x"))]));
    assert_eq!(c.header(), (2, "Authentication required".into()));
    assert_eq!(c.header(), (0, "Authentication required".into()));
    c.send("auth", 3, body(vec![("AuthKey", Value::str("wrong"))]));
    assert_eq!(c.header(), (3, "Invalid authentication token".into()));
    c.send("auth", 4, body(vec![("AuthKey", Value::str("s3cret"))]));
    assert_eq!(c.header(), (4, String::new()));
    c.send("members", 5, None);
    assert_eq!(c.header(), (5, String::new()));
    assert!(matches!(c.recv(), Got::Value(Value::Map(_))));

    // Go's CLI and ours, with the token from the flag or from the environment.
    let run = serf_cli(addr, &["members"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("Authentication required"),
        "{}",
        run.stdout
    );
    let run = serf_cli(addr, &["members", "-rpc-auth=s3cret"]);
    assert!(run.stdout.starts_with("v1 "), "{}", run.combined());
    let env = [
        ("SERF_RPC_ADDR", addr.to_string()),
        ("SERF_RPC_AUTH", "s3cret".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run_cli(&vassal_bin(), &["members".into()], &env, WAIT);
    assert!(run.stdout.starts_with("v1 "), "{}", run.combined());
    let run = run_cli(
        &vassal_bin(),
        &["members".into(), "-rpc-auth=bad".into()],
        &env,
        WAIT,
    );
    assert_eq!(
        (run.code, run.stderr.trim()),
        (
            1,
            "Error connecting to Serf agent: Invalid authentication token"
        )
    );
}

#[test]
fn garbage_oversize_and_disconnects_leave_the_agent_serving() {
    let host = Loopback::fresh();
    let mut v1 = VassalAgent::builder("v1", &host).spawn_ready();
    let addr = v1.rpc_addr();

    // A well-behaved client streams user events throughout.
    let mut watcher = Raw::connect(addr);
    watcher.handshake(1);
    watcher.send("stream", 2, body(vec![("Type", Value::str("user"))]));
    assert_eq!(watcher.header(), (2, String::new()));

    // Garbage: not msgpack, a never-used marker, a header that is not a map.
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\xc1\xc1\xc1",
        b"\x93\x01\x02\x03",
    ] {
        let mut c = Raw::connect(addr);
        c.send_bytes(junk);
        assert_eq!(c.recv(), Got::Closed, "{junk:?}");
    }
    // A request claiming 4 GiB, then more than the 1 MiB limit: closed, not buffered forever.
    let mut c = Raw::connect(addr);
    c.handshake(1);
    c.send_bytes(b"\xdb\xff\xff\xff\xff");
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..20 {
        c.send_bytes(&chunk);
    }
    assert_eq!(c.recv(), Got::Closed);
    // Half a request, then gone.
    let mut c = Raw::connect(addr);
    c.handshake(1);
    c.send_bytes(b"\x82\xa7Command\xa6mem");
    drop(c);
    // Clients that disconnect while their stream and monitor are busy.
    for _ in 0..5 {
        let mut c = Raw::connect(addr);
        c.handshake(1);
        c.send("stream", 2, body(vec![("Type", Value::str("*"))]));
        c.send("monitor", 3, body(vec![("LogLevel", Value::str("debug"))]));
        assert_eq!(c.header(), (2, String::new()));
        drop(c);
    }
    // Many clients at once.
    std::thread::scope(|s| {
        for i in 0..16 {
            s.spawn(move || {
                let mut c = Raw::connect(addr);
                c.handshake(i);
                c.send("members", i + 1, None);
                assert_eq!(c.header(), (i + 1, String::new()));
                assert!(matches!(c.recv(), Got::Value(Value::Map(_))));
            });
        }
    });
    for i in 0..3 {
        let run = serf_cli(
            addr,
            &["event", "-coalesce=false", "after-abuse", &i.to_string()],
        );
        assert_eq!(run.code, 0, "{}", run.combined());
    }
    // The first client still gets its records.
    let mut got = 0;
    while got < 3 {
        assert_eq!(watcher.header().0, 2);
        match watcher.recv() {
            Got::Value(v) if v.get("Name") == Some(&Value::str("after-abuse")) => got += 1,
            other => panic!("expected a user event record, got {other:?}"),
        }
    }
    v1.assert_running();
    assert!(serf_cli(addr, &["members"]).stdout.starts_with("v1 "));
}
