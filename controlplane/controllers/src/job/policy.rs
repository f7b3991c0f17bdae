//! `spec.podFailurePolicy` (upstream's `matchPodFailurePolicy`): the first rule that matches a
//! failed pod decides whether the Job fails at once (`FailJob`), the failure is not counted
//! against `backoffLimit` (`Ignore`) or counted as usual (`Count`, and no rule matching).

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::Pod;

/// What a failed pod means for its Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fail the Job; the message names the rule and the container.
    FailJob(String),
    /// Do not count the failure (the pod is replaced).
    Ignore,
    /// Count it against `backoffLimit`.
    Count,
}

/// Terminated containers of `pod` as `(name, exit code)`, init containers first.
fn exit_codes(pod: &Pod) -> Vec<(String, i32)> {
    let Some(st) = pod.status.as_ref() else {
        return Vec::new();
    };
    st.init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .filter_map(|c| {
            let t = c.state.as_ref()?.terminated.as_ref()?;
            Some((c.name.clone(), t.exit_code))
        })
        .collect()
}

/// The first container exit code matching the rule's `onExitCodes` (exit code 0 never matches).
fn match_exit_codes(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<(String, i32)> {
    let req = rule.on_exit_codes.as_ref()?;
    exit_codes(pod).into_iter().find(|(name, code)| {
        if *code == 0 {
            return false;
        }
        if req.container_name.as_deref().is_some_and(|n| n != name) {
            return false;
        }
        let listed = req.values.contains(code);
        match req.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        }
    })
}

/// Whether one of the rule's `onPodConditions` holds on the pod (status defaults to True).
fn match_conditions(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<String> {
    let patterns = rule.on_pod_conditions.as_ref()?;
    let conds = pod.status.as_ref()?.conditions.as_ref()?;
    patterns.iter().find_map(|p| {
        let want = p.status.as_str();
        conds
            .iter()
            .find(|c| c.type_ == p.type_ && c.status == want)
            .map(|c| c.type_.clone())
    })
}

/// The verdict of `policy` for the failed `pod`.
pub fn evaluate(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::Count;
    };
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    for (i, rule) in policy.rules.iter().enumerate() {
        let why = if let Some((container, code)) = match_exit_codes(rule, pod) {
            format!("Container {container} for pod {pod_name} failed with exit code {code} matching {} rule at index {i}", rule.action)
        } else if let Some(cond) = match_conditions(rule, pod) {
            format!(
                "Pod {pod_name} has condition {cond} matching {} rule at index {i}",
                rule.action
            )
        } else {
            continue;
        };
        match rule.action.as_str() {
            "FailJob" => return Verdict::FailJob(why),
            "Ignore" => return Verdict::Ignore,
            "Count" => return Verdict::Count,
            // FailIndex needs backoffLimitPerIndex (not implemented): counted as usual.
            _ => return Verdict::Count,
        }
    }
    Verdict::Count
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
    };

    fn failed(codes: &[(&str, i32)], conds: &[&str]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.status = Some(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: Some(
                codes
                    .iter()
                    .map(|(n, c)| ContainerStatus {
                        name: (*n).into(),
                        state: Some(ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                exit_code: *c,
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            conditions: Some(
                conds
                    .iter()
                    .map(|t| PodCondition {
                        type_: (*t).into(),
                        status: "True".into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        p
    }

    fn codes_rule(
        action: &str,
        op: &str,
        values: &[i32],
        container: Option<&str>,
    ) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: container.map(Into::into),
                operator: op.into(),
                values: values.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    fn cond_rule(action: &str, t: &str) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: None,
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                type_: t.into(),
                status: "True".into(),
            }]),
        }
    }

    #[test]
    fn rule_table() {
        let policy = PodFailurePolicy {
            rules: vec![
                cond_rule("Ignore", "DisruptionTarget"),
                codes_rule("FailJob", "In", &[42], Some("main")),
                codes_rule("Count", "In", &[1], None),
                codes_rule("FailJob", "NotIn", &[0, 1, 2, 42], None),
            ],
        };
        let cases: Vec<(Pod, &str)> = vec![
            (failed(&[("main", 1)], &["DisruptionTarget"]), "Ignore"),
            (failed(&[("main", 42)], &[]), "FailJob"),
            (failed(&[("side", 42)], &[]), "Count"),
            (failed(&[("main", 1)], &[]), "Count"),
            (failed(&[("main", 2)], &[]), "Count"),
            (failed(&[("main", 3)], &[]), "FailJob"),
            (failed(&[("main", 0), ("side", 0)], &[]), "Count"),
            (failed(&[], &[]), "Count"),
        ];
        for (i, (pod, want)) in cases.iter().enumerate() {
            let got = match evaluate(Some(&policy), pod) {
                Verdict::FailJob(_) => "FailJob",
                Verdict::Ignore => "Ignore",
                Verdict::Count => "Count",
            };
            assert_eq!(got, *want, "case {i}");
        }
        assert_eq!(
            evaluate(None, &failed(&[("main", 42)], &[])),
            Verdict::Count
        );
    }

    #[test]
    fn fail_message_names_container_and_rule() {
        let policy = PodFailurePolicy {
            rules: vec![codes_rule("FailJob", "In", &[7], None)],
        };
        let Verdict::FailJob(msg) = evaluate(Some(&policy), &failed(&[("c", 7)], &[])) else {
            panic!("expected FailJob");
        };
        assert!(
            msg.contains("Container c") && msg.contains("exit code 7") && msg.contains("index 0")
        );
    }
}
