//! `kubia get URL…`: the client side for tests that need a pod to reach a Service — the book
//! runs `curl` in a pod; this image has no curl, and busybox `wget` crashes in this host's
//! guests. `http://host[:port]/path` is fetched with one GET, `tcp://host:port` only connected
//! to; names resolve through the pod's resolv.conf (search domains included). Each target is
//! tried every two seconds, forever, and each attempt prints one line.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A target parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// GET `path` from `host:port`.
    Http {
        /// Host name or address.
        host: String,
        /// Port (default 80).
        port: u16,
        /// Request path (default `/`).
        path: String,
    },
    /// Connect only.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Parses `http://host[:port][/path]` or `tcp://host:port`.
pub fn parse(url: &str) -> Result<Target, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url}: expected http://… or tcp://…"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(
                p.parse::<u16>()
                    .map_err(|e| format!("{url}: port {p}: {e}"))?,
            ),
        ),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    match scheme {
        "http" => Ok(Target::Http {
            host: host.into(),
            port: port.unwrap_or(80),
            path: path.into(),
        }),
        "tcp" => Ok(Target::Tcp {
            host: host.into(),
            port: port.ok_or_else(|| format!("{url}: tcp:// needs a port"))?,
        }),
        other => Err(format!("{url}: unknown scheme {other}")),
    }
}

fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
        }
    }
    Err(last)
}

/// One attempt at `t`: the line to print.
pub fn attempt(t: &Target) -> String {
    match t {
        Target::Tcp { host, port } => match connect(host, *port) {
            Ok(s) => format!(
                "connected to {host}:{port} ({})",
                s.peer_addr().map(|a| a.to_string()).unwrap_or_default()
            ),
            Err(e) => format!("connect {host}:{port}: {e}"),
        },
        Target::Http { host, port, path } => {
            let fetch = || -> io::Result<String> {
                let mut s = connect(host, *port)?;
                s.set_read_timeout(Some(TIMEOUT))?;
                // One write: a request split over several segments reaches a server that reads
                // once only in part.
                let req =
                    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
                s.write_all(req.as_bytes())?;
                let mut out = Vec::new();
                s.take(64 * 1024).read_to_end(&mut out)?;
                let text = String::from_utf8_lossy(&out);
                let status = text.lines().next().unwrap_or("").to_string();
                let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                Ok(format!("{status} | {}", body.trim()))
            };
            match fetch() {
                Ok(r) => format!("GET http://{host}:{port}{path} -> {r}"),
                Err(e) => format!("GET http://{host}:{port}{path} failed: {e}"),
            }
        }
    }
}

/// Runs the client forever over `urls`.
pub fn run(urls: &[String]) -> Result<(), String> {
    let targets = urls
        .iter()
        .map(|u| parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err("usage: kubia get URL…".into());
    }
    loop {
        for t in &targets {
            println!("{}", attempt(t));
        }
        let _ = io::stdout().flush();
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            parse("http://kubia.default/x?y").unwrap(),
            Target::Http {
                host: "kubia.default".into(),
                port: 80,
                path: "/x?y".into()
            }
        );
        assert_eq!(
            parse("http://10.96.0.5:8080").unwrap(),
            Target::Http {
                host: "10.96.0.5".into(),
                port: 8080,
                path: "/".into()
            }
        );
        assert_eq!(
            parse("tcp://kubernetes.default.svc:443").unwrap(),
            Target::Tcp {
                host: "kubernetes.default.svc".into(),
                port: 443
            }
        );
        for bad in [
            "kubia",
            "tcp://x",
            "ftp://x/",
            "http://:80/",
            "http://x:99999/",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fetches_from_a_local_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // Read the whole request head: closing with unread bytes would reset the connection.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nYou've hi")
                .unwrap();
        });
        let line = attempt(&parse(&format!("http://127.0.0.1:{port}/")).unwrap());
        assert_eq!(
            line,
            format!("GET http://127.0.0.1:{port}/ -> HTTP/1.1 200 OK | You've hi")
        );
        let refused = attempt(&Target::Tcp {
            host: "127.0.0.1".into(),
            port: 1,
        });
        assert!(refused.starts_with("connect 127.0.0.1:1: "), "{refused}");
    }
}
