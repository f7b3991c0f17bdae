//! The guest hostname of a pod sandbox.
//!
//! A config's `hostname` is used as given, once checked against what the guest agent accepts
//! (so a bad one fails RunPodSandbox with InvalidArgument before a VM is started). Without one,
//! kennel-cri derives it from the pod name as kubelet does (cut to 63 characters), made a valid
//! RFC 1123 hostname: lower case, every character other than a letter, digit, `-` or `.` turned
//! into `-`, empty labels dropped, no label starting or ending with `-`; [`FALLBACK`] when
//! nothing is left.

/// Longest hostname: kubelet's cut (an RFC 1123 label).
pub const MAX_LEN: usize = 63;
/// The hostname of a sandbox whose name leaves nothing usable.
pub const FALLBACK: &str = "localhost";

/// Why `h` is not a hostname the guest accepts (the agent's rule: at most 64 bytes; dot-separated
/// non-empty labels of ASCII letters, digits and `-`, not starting with `-`), or None.
pub fn problem(h: &str) -> Option<String> {
    if h.len() > 64 {
        return Some(format!("{} bytes, more than 64", h.len()));
    }
    for label in h.split('.') {
        if label.is_empty() {
            return Some("an empty label".into());
        }
        if label.starts_with('-') {
            return Some(format!("label {label:?} starts with '-'"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Some(format!("{c:?} is not a letter, digit or '-'"));
        }
    }
    None
}

/// The hostname for a sandbox named `name` whose config gives none.
pub fn from_pod_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let mut out = String::new();
    for label in mapped.split('.') {
        let label = label.trim_matches('-');
        if label.is_empty() {
            continue;
        }
        let room = MAX_LEN.saturating_sub(out.len() + usize::from(!out.is_empty()));
        if room == 0 {
            break;
        }
        let cut = label[..label.len().min(room)].trim_end_matches('-');
        if cut.is_empty() {
            break;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(cut);
        if cut.len() < label.len() {
            break;
        }
    }
    if out.is_empty() {
        FALLBACK.to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_become_valid_hostnames() {
        let long = "a".repeat(67);
        let cases = [
            ("pod-a", "pod-a".to_string()),
            ("web.1", "web.1".to_string()),
            (long.as_str(), "a".repeat(63)),
            ("my_pod", "my-pod".to_string()),
            ("My_Pod", "my-pod".to_string()),
            ("_x_", "x".to_string()),
            ("-lead.trail-", "lead.trail".to_string()),
            ("a..b", "a.b".to_string()),
            ("péché", "p-ch".to_string()),
            ("___", FALLBACK.to_string()),
            ("...", FALLBACK.to_string()),
        ];
        for (name, want) in cases {
            let h = from_pod_name(name);
            assert_eq!(h, want, "{name:?}");
            assert_eq!(problem(&h), None, "{name:?} → {h:?}");
        }
    }

    #[test]
    fn the_cut_never_leaves_a_trailing_dash_or_dot() {
        // 62 letters then "-b": the cut at 63 ends in '-', which goes
        let name = format!("{}-b", "a".repeat(62));
        assert_eq!(from_pod_name(&name), "a".repeat(62));
        // labels: the second is cut to the room left
        let name = format!("{}.{}", "a".repeat(60), "bcdef");
        assert_eq!(from_pod_name(&name), format!("{}.bc", "a".repeat(60)));
        // no room for a second label after a full first one
        let name = format!("{}.b", "a".repeat(63));
        assert_eq!(from_pod_name(&name), "a".repeat(63));
        for n in 1..140 {
            let name: String = (0..n).map(|i| ['a', '-', '.', '_', 'Z'][i % 5]).collect();
            let h = from_pod_name(&name);
            assert!(h.len() <= MAX_LEN, "{name:?} → {h:?}");
            assert_eq!(problem(&h), None, "{name:?} → {h:?}");
            assert!(!h.ends_with('-') && !h.ends_with('.'), "{h:?}");
        }
    }

    #[test]
    fn problems_are_named() {
        assert_eq!(problem("pod-a"), None);
        assert_eq!(problem("Node-1.example"), None);
        assert!(problem("bad host").unwrap().contains("' '"));
        assert!(problem("-x").unwrap().contains("starts with"));
        assert!(problem("a..b").unwrap().contains("empty label"));
        assert!(problem(&"a".repeat(65)).unwrap().contains("65 bytes"));
        assert!(problem("my_pod").unwrap().contains("'_'"));
    }
}
