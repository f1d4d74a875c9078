//! A tiny HTTP/1.1 web backend for load-balancer tests and benchmarks: every request gets
//! `200 OK` with the server's name as the body, over keep-alive connections, one thread per
//! connection. [`WebServer::stop`] stops like a real server going away: no new connections,
//! requests in flight are answered, idle keep-alive connections are closed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

struct Conn {
    stream: TcpStream,
    busy: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Shared {
    body: Vec<u8>,
    served: AtomicU64,
    /// Request-body bytes read, over every request.
    received: AtomicU64,
    stopping: AtomicBool,
    conns: Mutex<Vec<Conn>>,
}

/// A running web backend on one loopback address. Dropping it stops it.
pub struct WebServer {
    addr: SocketAddr,
    name: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WebServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebServer")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("served", &self.served())
            .finish()
    }
}

impl WebServer {
    /// Listens on `addr` (loopback only) and answers every request with `NAME\n`.
    pub fn start(addr: SocketAddr, name: &str) -> io::Result<Self> {
        assert!(
            addr.ip().is_loopback(),
            "{addr} is not a loopback address; tests stay on 127.0.0.0/8"
        );
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            body: format!("{name}\n").into_bytes(),
            served: AtomicU64::new(0),
            received: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("web-{name}"))
            .spawn(move || accept_loop(listener, s))?;
        Ok(WebServer {
            addr,
            name: name.to_owned(),
            shared,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// Request-body bytes read so far, over every request.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets requests in flight finish (their responses say
    /// `Connection: close`), and closes idle keep-alive connections. Idempotent.
    pub fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop, which then drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = accept.join();
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        for c in &conns {
            if !c.busy.load(Ordering::SeqCst) {
                let _ = c.stream.shutdown(Shutdown::Both);
            }
        }
        for c in conns {
            let _ = c.thread.join();
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let busy = Arc::new(AtomicBool::new(false));
        let (s, b) = (shared.clone(), busy.clone());
        let Ok(thread) = std::thread::Builder::new()
            .name("web-conn".into())
            .spawn(move || serve(stream, &s, &b))
        else {
            continue;
        };
        let mut conns = shared.conns.lock().unwrap();
        conns.retain(|c| !c.thread.is_finished());
        conns.push(Conn {
            stream: handle,
            busy,
            thread,
        });
    }
}

/// Serves requests on one connection until the peer closes it, asks to, or we stop.
fn serve(stream: TcpStream, shared: &Shared, busy: &AtomicBool) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue; // stray CRLF between requests
        }
        busy.store(true, Ordering::SeqCst);
        let http10 = line.trim_end().ends_with("HTTP/1.0");
        let mut content_length = 0usize;
        let mut close = http10;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close")
                        || (http10 && !v.eq_ignore_ascii_case("keep-alive"));
                }
            }
        }
        if content_length > 0 {
            match io::copy(
                &mut (&mut reader).take(content_length as u64),
                &mut CountingSink(&shared.received),
            ) {
                Ok(n) if n == content_length as u64 => {}
                _ => return,
            }
        }
        close |= shared.stopping.load(Ordering::SeqCst);
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
            shared.body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        response.extend_from_slice(&shared.body);
        if writer.write_all(&response).is_err() {
            return;
        }
        shared.served.fetch_add(1, Ordering::Relaxed);
        busy.store(false, Ordering::SeqCst);
        if close || shared.stopping.load(Ordering::SeqCst) {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Discards what it is given, counting the bytes.
struct CountingSink<'a>(&'a AtomicU64);

impl Write for CountingSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Loopback;

    fn http_get(addr: SocketAddr) -> Result<String, String> {
        crate::http_get_ok(addr)
    }

    /// Waits (≤ 5 s) until `web` has counted `count` requests.
    #[track_caller]
    fn wait_served(web: &WebServer, count: u64) {
        crate::wait_until(
            Duration::from_secs(5),
            &format!("the count to reach {count}"),
            || match web.served() {
                n if n == count => Ok(()),
                n => Err(format!("served {n}")),
            },
        );
    }

    #[test]
    fn answers_with_its_name_and_counts_requests() {
        let lo = Loopback::fresh();
        let mut web = WebServer::start(lo.addr(), "w1").unwrap();
        assert_eq!(http_get(web.addr()).unwrap(), "w1\n");
        assert_eq!(http_get(web.addr()).unwrap(), "w1\n");
        wait_served(&web, 2);
        web.stop();
        assert!(http_get(web.addr()).is_err(), "stopped servers refuse");
    }

    #[test]
    fn keep_alive_serves_several_requests_on_one_connection() {
        let lo = Loopback::fresh();
        let web = WebServer::start(lo.addr(), "w2").unwrap();
        let mut s = TcpStream::connect(web.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", web.addr());
        s.write_all(format!("{req}{req}").as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut lines = Vec::new();
        while lines.iter().filter(|l| *l == "w2\n").count() < 2 {
            let mut line = String::new();
            let n = r.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed early after {lines:?}");
            lines.push(line);
        }
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("HTTP/1.1 200"))
                .count(),
            2,
            "{lines:?}"
        );
        assert!(!lines.iter().any(|l| l.starts_with("Connection: close")));
        // The count goes up just after the write, so it may trail what the client has read.
        wait_served(&web, 2);
    }
}
