//! The query parameters of `exec`, `attach` and `portforward` requests. Both spellings upstream uses
//! are accepted: the API server's (`stdin=true&stdout=true&stderr=true&tty=false`, `ports=80,443`)
//! and kubelet's (`input=1&output=1&error=1&tty=1`, `port=80`).

/// Errors of a query string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("bad percent-encoding in the query near {0:?}")]
    Encoding(String),
    #[error("query parameter {name:?} must be a boolean, not {value:?}")]
    NotBool { name: String, value: String },
    #[error("you must specify at least one command for the container")]
    NoCommand,
    #[error("you must specify at least 1 of stdin, stdout, stderr")]
    NoStreams,
    #[error("query parameter \"ports\" is required")]
    NoPorts,
    #[error("query parameter \"ports\" cannot be empty")]
    EmptyPort,
    #[error("unable to parse {0:?} as a port")]
    BadPort(String),
    #[error("port {0:?} must be > 0")]
    ZeroPort(String),
}

/// What an exec or attach asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The command and its arguments (empty for attach).
    pub command: Vec<String>,
    /// The container, when named.
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// Parses an exec request's query: `command` (repeated) is required, and one stream at least.
    pub fn exec_from_query(query: Option<&str>) -> Result<Self, QueryError> {
        let opts = Self::parse(query)?;
        if opts.command.is_empty() {
            return Err(QueryError::NoCommand);
        }
        Ok(opts)
    }

    /// Parses an attach request's query (a `command` there is ignored).
    pub fn attach_from_query(query: Option<&str>) -> Result<Self, QueryError> {
        let mut opts = Self::parse(query)?;
        opts.command.clear();
        Ok(opts)
    }

    fn parse(query: Option<&str>) -> Result<Self, QueryError> {
        let mut opts = ExecOptions::default();
        for (name, value) in parse_query(query.unwrap_or(""))? {
            match name.as_str() {
                "command" => opts.command.push(value),
                "container" if !value.is_empty() => opts.container = Some(value),
                "stdin" | "input" => opts.stdin = parse_bool(&name, &value)?,
                "stdout" | "output" => opts.stdout = parse_bool(&name, &value)?,
                "stderr" | "error" => opts.stderr = parse_bool(&name, &value)?,
                "tty" => opts.tty = parse_bool(&name, &value)?,
                _ => {}
            }
        }
        if !(opts.stdin || opts.stdout || opts.stderr) {
            return Err(QueryError::NoStreams);
        }
        Ok(opts)
    }

    /// True when the client sends a separate stderr stream (never with a tty, whose output is one).
    pub fn stderr_stream(&self) -> bool {
        self.stderr && !self.tty
    }
}

/// What a port-forward asks for. SPDY clients name each stream's port in its headers, so the
/// list may be empty there; the WebSocket protocol needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortForwardOptions {
    pub ports: Vec<u16>,
}

impl PortForwardOptions {
    /// Parses `ports=` (or kubelet's `port=`), repeated or comma-separated.
    pub fn from_query(query: Option<&str>) -> Result<Self, QueryError> {
        let mut ports = Vec::new();
        for (name, value) in parse_query(query.unwrap_or(""))? {
            if name != "ports" && name != "port" {
                continue;
            }
            if value.is_empty() {
                return Err(QueryError::EmptyPort);
            }
            for p in value.split(',') {
                ports.push(parse_port(p)?);
            }
        }
        Ok(Self { ports })
    }
}

/// Parses a port number as upstream does: decimal, 1..=65535.
pub fn parse_port(text: &str) -> Result<u16, QueryError> {
    let port: u16 = text
        .trim()
        .parse()
        .map_err(|_| QueryError::BadPort(text.to_string()))?;
    if port == 0 {
        return Err(QueryError::ZeroPort(text.to_string()));
    }
    Ok(port)
}

/// Go's `strconv.ParseBool`.
fn parse_bool(name: &str, value: &str) -> Result<bool, QueryError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(QueryError::NotBool {
            name: name.to_string(),
            value: value.to_string(),
        }),
    }
}

/// Splits an `application/x-www-form-urlencoded` query into decoded pairs, in order.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn decode(text: &str) -> Result<String, QueryError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| QueryError::Encoding(text.to_string()))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| QueryError::Encoding(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_exec_query() {
        let q =
            "command=sh&command=-c&command=echo+out%3B+exit+3&container=c&stderr=true&stdout=true";
        let o = ExecOptions::exec_from_query(Some(q)).unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo out; exit 3"]);
        assert_eq!(o.container.as_deref(), Some("c"));
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        assert!(o.stderr_stream());
    }

    #[test]
    fn kubelet_exec_query() {
        let o = ExecOptions::exec_from_query(Some("command=ls&input=1&output=1&tty=1")).unwrap();
        assert!(o.stdin && o.stdout && o.tty && !o.stderr);
        let o = ExecOptions::attach_from_query(Some("stdin=true&stderr=true&tty=true&command=x"))
            .unwrap();
        assert!(o.command.is_empty());
        assert!(!o.stderr_stream(), "a tty has no stderr stream");
    }

    #[test]
    fn bad_exec_queries() {
        assert_eq!(
            ExecOptions::exec_from_query(Some("stdout=true")),
            Err(QueryError::NoCommand)
        );
        assert_eq!(
            ExecOptions::exec_from_query(Some("command=ls")),
            Err(QueryError::NoStreams)
        );
        assert_eq!(
            ExecOptions::exec_from_query(None),
            Err(QueryError::NoStreams)
        );
        assert!(matches!(
            ExecOptions::exec_from_query(Some("command=ls&stdout=yes")),
            Err(QueryError::NotBool { .. })
        ));
        assert!(matches!(
            ExecOptions::exec_from_query(Some("command=%zz&stdout=1")),
            Err(QueryError::Encoding(_))
        ));
        assert!(matches!(
            ExecOptions::exec_from_query(Some("command=%+1&stdout=1")),
            Err(QueryError::Encoding(_))
        ));
    }

    #[test]
    fn ports() {
        let o = PortForwardOptions::from_query(Some("ports=8080,9090&ports=80&port=443")).unwrap();
        assert_eq!(o.ports, [8080, 9090, 80, 443]);
        assert!(PortForwardOptions::from_query(None)
            .unwrap()
            .ports
            .is_empty());
        assert_eq!(
            PortForwardOptions::from_query(Some("ports=")),
            Err(QueryError::EmptyPort)
        );
        assert_eq!(
            PortForwardOptions::from_query(Some("ports=0")),
            Err(QueryError::ZeroPort("0".into()))
        );
        assert_eq!(
            PortForwardOptions::from_query(Some("ports=65536")),
            Err(QueryError::BadPort("65536".into()))
        );
        assert_eq!(
            PortForwardOptions::from_query(Some("ports=http")),
            Err(QueryError::BadPort("http".into()))
        );
    }
}
