//! The error channel's content: how the session ended, as upstream's kubelet writes it. Protocol
//! v4 and later send a `metav1.Status` JSON object; older ones send the failure's message as text
//! (and nothing on success).

use serde::Serialize;

/// `metav1.Status` reason of a process that exited with a non-zero code.
pub const NON_ZERO_EXIT_CODE: &str = "NonZeroExitCode";
/// `metav1.StatusCause` type (JSON `reason`) that carries the exit code.
pub const EXIT_CODE_CAUSE: &str = "ExitCode";

/// How an exec or attach session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The process exited with this code (0 is success).
    Code(i32),
    /// The session failed without an exit code (the process could not run, the backend broke).
    Failed(String),
}

impl ExitStatus {
    /// The `metav1.Status` JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let status = match self {
            ExitStatus::Code(0) => Status {
                status: "Success",
                ..Status::default()
            },
            ExitStatus::Code(code) => {
                let code = wire_code(*code);
                Status {
                    status: "Failure",
                    message: Some(format!(
                        "command terminated with non-zero exit code: command terminated with exit code {code}"
                    )),
                    reason: Some(NON_ZERO_EXIT_CODE),
                    details: Some(Details {
                        causes: vec![Cause {
                            reason: Some(EXIT_CODE_CAUSE),
                            message: code.to_string(),
                        }],
                    }),
                    ..Status::default()
                }
            }
            ExitStatus::Failed(err) => {
                let err = format!("error executing command in container: {err}");
                Status {
                    status: "Failure",
                    message: Some(format!("Internal error occurred: {err}")),
                    reason: Some("InternalError"),
                    details: Some(Details {
                        causes: vec![Cause {
                            reason: None,
                            message: err,
                        }],
                    }),
                    code: Some(500),
                    ..Status::default()
                }
            }
        };
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(&status).unwrap_or_default()
    }

    /// The text older protocols (v1–v3) send: the failure's message, nothing on success.
    pub fn to_text(&self) -> Vec<u8> {
        match self {
            ExitStatus::Code(0) => Vec::new(),
            ExitStatus::Code(code) => format!(
                "command terminated with non-zero exit code: command terminated with exit code {}",
                wire_code(*code)
            )
            .into_bytes(),
            ExitStatus::Failed(err) => {
                format!("error executing command in container: {err}").into_bytes()
            }
        }
    }
}

/// Clients parse the code as an unsigned byte: keep a non-zero code non-zero within 1..=255.
fn wire_code(code: i32) -> i32 {
    match code {
        1..=255 => code,
        _ if code & 0xff != 0 => code & 0xff,
        _ => 255,
    }
}

#[derive(Serialize, Default)]
struct Status {
    metadata: Metadata,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Serialize, Default)]
struct Metadata {}

#[derive(Serialize)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(Serialize)]
struct Cause {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_status_json() {
        assert_eq!(
            String::from_utf8(ExitStatus::Code(0).to_json()).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(
            String::from_utf8(ExitStatus::Code(3).to_json()).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: command terminated with exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        assert_eq!(
            String::from_utf8(ExitStatus::Failed("no such file".into()).to_json()).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: no such file","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: no such file"}]},"code":500}"#
        );
    }

    #[test]
    fn codes_stay_in_a_byte() {
        let cause = |code| {
            let v: serde_json::Value =
                serde_json::from_slice(&ExitStatus::Code(code).to_json()).unwrap();
            v["details"]["causes"][0]["message"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(cause(255), "255");
        assert_eq!(cause(257), "1");
        assert_eq!(cause(256), "255");
        assert_eq!(cause(-1), "255");
    }

    #[test]
    fn text_status() {
        assert!(ExitStatus::Code(0).to_text().is_empty());
        assert_eq!(
            String::from_utf8(ExitStatus::Code(2).to_text()).unwrap(),
            "command terminated with non-zero exit code: command terminated with exit code 2"
        );
    }
}
