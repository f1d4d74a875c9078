//! Real RPC clients against a Vassal agent: PyPI's `serfclient` and `serfio` (installed by
//! `scripts/setup` into target/rpc-clients-venv), each written against Go Serf.

use std::path::PathBuf;
use std::time::Duration;

use vassal_testkit::{
    go_then_vassal, run_cli, wait_until, GoSerf, Loopback, QueryAnswerer, VassalAgent,
};

/// The venv `scripts/setup` makes.
fn python() -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/rpc-clients-venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run scripts/setup (it installs serfclient and serfio)",
        p.display()
    );
    p
}

/// Runs a Python program with `HOST` and `PORT` of the agent's RPC address; its stdout.
#[track_caller]
fn run_python(agent: &VassalAgent, program: &str) -> String {
    let rpc = agent.rpc_addr();
    let run = run_cli(
        &python(),
        &["-c".into(), program.into()],
        &[
            ("HOST", &rpc.ip().to_string()),
            ("PORT", &rpc.port().to_string()),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(
        run.code,
        0,
        "python failed:\n{}\nagent log:\n{}",
        run.combined(),
        agent.log_tail(20)
    );
    run.stdout
}

/// g1 (Go, role=web) and v1 (Vassal, role=db), both answering queries with
/// `resp-from-<name>`.
fn cluster() -> (Loopback, QueryAnswerer, GoSerf, VassalAgent) {
    let host = Loopback::fresh();
    let answer = QueryAnswerer::create();
    let (g1, vs) = go_then_vassal(
        GoSerf::builder("g1", &host)
            .tag("role", "web")
            .event_handler(answer.handler()),
        vec![VassalAgent::builder("v1", &host)
            .tag("role", "db")
            .event_handler(answer.handler())],
        Duration::from_secs(20),
    );
    let [v1] = <[VassalAgent; 1]>::try_from(vs).unwrap();
    (host, answer, g1, v1)
}

#[test]
fn serfclient_runs_members_event_stats_and_stream() {
    let (_host, _answer, g1, v1) = cluster();
    let out = run_python(
        &v1,
        r#"
import os, socket, serfclient
c = serfclient.SerfClient(os.environ["HOST"], int(os.environ["PORT"]))
m = c.members()
assert m.head == {"Error": "", "Seq": 1}, m.head
for x in sorted(m.body["Members"], key=lambda x: x["Name"]):
    print("member", x["Name"], socket.inet_ntoa(x["Addr"]), x["Port"], x["Status"], x["Tags"], x["DelegateCur"])
f = c.members(tags={"role": "d.*"})
print("filtered", [x["Name"] for x in f.body["Members"]])
e = c.event("py-deploy", "v7", coalesce=False)
print("event", e.head["Error"] == "")
s = c.stats()
print("stats", sorted(s.body), s.body["agent"]["name"], s.body["serf"]["members"])
st = serfclient.SerfClient(os.environ["HOST"], int(os.environ["PORT"]))
stream = st.stream("user:py-stream")
print("stream", stream.head)
c.event("py-stream", "hello", coalesce=False)
for rec in stream.body:
    print("record", rec.head["Error"], rec.body["Event"], rec.body["Name"], rec.body["Payload"])
    break
"#,
    );
    let members: Vec<&str> = out.lines().filter(|l| l.starts_with("member ")).collect();
    assert_eq!(members.len(), 2, "{out}");
    assert!(
        members[0].starts_with(&format!(
            "member g1 {} {} alive {{'role': 'web'}} 5",
            g1.addr().ip(),
            g1.addr().port()
        )),
        "{out}"
    );
    assert!(
        members[1].starts_with(&format!(
            "member v1 {} {} alive {{'role': 'db'}} 5",
            v1.addr().ip(),
            v1.addr().port()
        )),
        "{out}"
    );
    assert!(out.contains("filtered ['v1']"), "{out}");
    assert!(out.contains("event True"), "{out}");
    assert!(
        out.contains("stats ['agent', 'event_handlers', 'runtime', 'serf', 'tags'] v1 2"),
        "{out}"
    );
    assert!(out.contains("record  user py-stream b'hello'"), "{out}");
    // The event sent through the Vassal agent reached the Go agent.
    wait_until(Duration::from_secs(10), "g1 to receive py-deploy", || {
        if g1.log().contains("Received event: user-event: py-deploy") {
            Ok(())
        } else {
            Err(g1.log_tail(10))
        }
    });
}

#[test]
fn serfio_runs_members_event_and_query() {
    let (_host, _answer, g1, v1) = cluster();
    let out = run_python(
        &v1,
        r#"
import asyncio, os, serfio
async def main():
    async with serfio.Serf(os.environ["HOST"], int(os.environ["PORT"])) as serf:
        m = await serf.members()
        print("members", sorted(x["Name"] for x in m))
        await serf.event("io-deploy", b"v3")
        print("event ok")
        answers = {}
        async for r in serf.query("io-q", b"ping", request_ack=True, timeout=1_000_000_000):
            answers[r["From"]] = r["Payload"]
        print("answers", sorted(answers.items()))
asyncio.run(main())
"#,
    );
    assert!(out.contains("members ['g1', 'v1']"), "{out}");
    assert!(out.contains("event ok"), "{out}");
    assert!(
        out.contains("answers [('g1', b'resp-from-g1\\n'), ('v1', b'resp-from-v1\\n')]"),
        "{out}"
    );
    wait_until(Duration::from_secs(10), "g1 to receive io-deploy", || {
        if g1.log().contains("Received event: user-event: io-deploy") {
            Ok(())
        } else {
            Err(g1.log_tail(10))
        }
    });
}
