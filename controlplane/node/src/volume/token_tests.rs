use super::*;
use chrono::TimeZone;
use k8s_openapi::api::authentication::v1::TokenRequestStatus;
use k8s_openapi::api::core::v1::{
    Container, PodSecurityContext, PodSpec, ProjectedVolumeSource, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
}

fn issued(at: DateTime<Utc>, secs: i64) -> IssuedToken {
    IssuedToken {
        token: "t".into(),
        expires: at + Duration::seconds(secs),
        expiration_seconds: secs,
    }
}

#[test]
fn refresh_after_80_percent_of_the_lifetime() {
    let t = issued(t0(), 3600);
    let no_jitter = Duration::zero();
    assert!(!requires_refresh(t0(), &t, no_jitter));
    assert!(!requires_refresh(
        t0() + Duration::seconds(2879),
        &t,
        no_jitter
    ));
    assert!(requires_refresh(
        t0() + Duration::seconds(2881),
        &t,
        no_jitter
    ));
    // Jitter moves the refresh earlier, never later.
    assert!(requires_refresh(
        t0() + Duration::seconds(2871),
        &t,
        Duration::seconds(10)
    ));
    assert!(requires_refresh(
        t0() + Duration::seconds(3601),
        &t,
        no_jitter
    ));
}

#[test]
fn refresh_after_24_hours_whatever_the_lifetime() {
    let year = 365 * 24 * 3600;
    let t = issued(t0(), year);
    let no_jitter = Duration::zero();
    assert!(!requires_refresh(t0() + Duration::hours(23), &t, no_jitter));
    assert!(requires_refresh(
        t0() + Duration::hours(24) + Duration::seconds(1),
        &t,
        no_jitter
    ));
}

/// A stand-in TokenRequest API: records requests, issues `tok-<n>` valid from `issue_at`.
#[derive(Default)]
struct FakeApi {
    seen: Mutex<Vec<(String, String, TokenRequest)>>,
    fail: Mutex<Option<String>>,
    issue_at: Mutex<Option<DateTime<Utc>>>,
}

impl FakeApi {
    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl TokenRequester for FakeApi {
    async fn request(
        &self,
        namespace: &str,
        service_account: &str,
        tr: &TokenRequest,
    ) -> Result<TokenRequest, String> {
        let mut seen = self.seen.lock().unwrap();
        seen.push((namespace.into(), service_account.into(), tr.clone()));
        if let Some(e) = self.fail.lock().unwrap().clone() {
            return Err(e);
        }
        let at = self.issue_at.lock().unwrap().unwrap_or_else(t0);
        let secs = tr.spec.expiration_seconds.unwrap_or(3600);
        let mut out = tr.clone();
        out.status = Some(TokenRequestStatus {
            token: format!("tok-{}", seen.len()),
            expiration_timestamp: Time(
                k8s_openapi::jiff::Timestamp::from_second(
                    (at + Duration::seconds(secs)).timestamp(),
                )
                .unwrap(),
            ),
        });
        Ok(out)
    }
}

fn key(uid: &str) -> TokenKey {
    TokenKey {
        namespace: "ns".into(),
        service_account: "default".into(),
        audiences: vec![],
        expiration_seconds: 3607,
        pod_name: "p".into(),
        pod_uid: uid.into(),
    }
}

#[tokio::test]
async fn tokens_are_cached_until_due() {
    let api = FakeApi::default();
    let m = TokenManager::new();
    let k = key("u1");
    assert_eq!(m.get_at(&api, &k, t0()).await.unwrap(), "tok-1");
    assert_eq!(
        m.get_at(&api, &k, t0() + Duration::seconds(60))
            .await
            .unwrap(),
        "tok-1"
    );
    assert_eq!(api.calls(), 1, "a pass within the lifetime asks nothing");
    // Another pod (or audience, or expiry) is another token.
    assert_eq!(m.get_at(&api, &key("u2"), t0()).await.unwrap(), "tok-2");
    let mut aud = key("u1");
    aud.audiences = vec!["vault".into()];
    assert_eq!(m.get_at(&api, &aud, t0()).await.unwrap(), "tok-3");
    assert_eq!(m.len(), 3);
    // 80 % of 3607 s is 2885.6 s: past it (plus the maximum jitter) a new token is requested.
    let later = t0() + Duration::seconds(2900);
    *api.issue_at.lock().unwrap() = Some(later);
    assert_eq!(m.get_at(&api, &k, later).await.unwrap(), "tok-4");
    assert_eq!(m.get_at(&api, &k, later).await.unwrap(), "tok-4");
    assert_eq!(api.calls(), 4);
    m.forget_pod("u1");
    assert_eq!(m.len(), 1);
}

#[tokio::test]
async fn failed_refresh_keeps_a_valid_token_and_reports_an_expired_one() {
    let api = FakeApi::default();
    let m = TokenManager::new();
    let k = key("u1");
    *api.fail.lock().unwrap() = Some("serviceaccounts \"default\" not found".into());
    let e = m.get_at(&api, &k, t0()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to fetch token: serviceaccounts \"default\" not found"
    );
    *api.fail.lock().unwrap() = None;
    assert_eq!(m.get_at(&api, &k, t0()).await.unwrap(), "tok-2");
    *api.fail.lock().unwrap() = Some("boom".into());
    let due = t0() + Duration::seconds(3000);
    assert_eq!(m.get_at(&api, &k, due).await.unwrap(), "tok-2");
    let expired = t0() + Duration::seconds(4000);
    let e = m.get_at(&api, &k, expired).await.unwrap_err();
    assert!(
        matches!(&e, TokenError::Expired { cause, .. } if cause == "boom"),
        "{e}"
    );
}

fn token_pod(audience: Option<&str>) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("web".into());
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some("uid-1".into());
    p.spec = Some(PodSpec {
        service_account_name: Some("builder".into()),
        containers: vec![Container {
            name: "c".into(),
            ..Default::default()
        }],
        volumes: Some(vec![Volume {
            name: "kube-api-access-abcde".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(420),
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: audience.map(str::to_string),
                        expiration_seconds: Some(3607),
                        path: "token".into(),
                    }),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }]),
        ..Default::default()
    });
    p
}

#[tokio::test]
async fn the_request_is_bound_to_the_pod() {
    let api = FakeApi::default();
    let m = TokenManager::new();
    let p = token_pod(None);
    assert!(m.refresh_due(&p, Utc::now()));
    let tokens = m.pod_tokens(&api, &p).await.unwrap();
    assert_eq!(
        tokens,
        PodTokens::from([(
            ("kube-api-access-abcde".to_string(), "token".to_string()),
            "tok-1".to_string()
        )])
    );
    let seen = api.seen.lock().unwrap().clone();
    let (ns, sa, tr) = &seen[0];
    assert_eq!((ns.as_str(), sa.as_str()), ("shop", "builder"));
    assert_eq!(
        serde_json::to_value(tr).unwrap(),
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {},
            "spec": {
                "audiences": [],
                "expirationSeconds": 3607,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "uid-1"},
            },
        })
    );
    let with_aud = token_sources(&token_pod(Some("vault")));
    assert_eq!(with_aud[0].2.audiences, vec!["vault".to_string()]);
}

#[tokio::test]
async fn refresh_is_due_only_for_missing_or_aging_tokens() {
    let api = FakeApi::default();
    let m = TokenManager::new();
    let p = token_pod(None);
    *api.issue_at.lock().unwrap() = Some(Utc::now());
    m.pod_tokens(&api, &p).await.unwrap();
    assert!(!m.refresh_due(&p, Utc::now()));
    assert!(m.refresh_due(&p, Utc::now() + Duration::seconds(2900)));
    let mut other = p.clone();
    other.metadata.uid = Some("uid-2".into());
    assert!(m.refresh_due(&other, Utc::now()));
}

#[test]
fn token_mode_follows_default_mode_unless_fs_user_or_group() {
    let mut p = token_pod(None);
    assert_eq!(token_mode(&p, Some(420)), 0o644);
    assert_eq!(token_mode(&p, None), 0o644);
    assert_eq!(token_mode(&p, Some(0o440)), 0o440);
    let spec = p.spec.as_mut().unwrap();
    spec.security_context = Some(PodSecurityContext {
        fs_group: Some(2000),
        ..Default::default()
    });
    assert_eq!(token_mode(&p, Some(420)), 0o600);

    let mut p = token_pod(None);
    let spec = p.spec.as_mut().unwrap();
    spec.security_context = Some(PodSecurityContext {
        run_as_user: Some(1000),
        ..Default::default()
    });
    assert_eq!(fs_user(&p), Some(1000));
    assert_eq!(token_mode(&p, Some(420)), 0o600);
    // Containers running as different users: no fsUser.
    let spec = p.spec.as_mut().unwrap();
    spec.containers.push(Container {
        name: "other".into(),
        security_context: Some(SecurityContext {
            run_as_user: Some(1001),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(fs_user(&p), None);
    assert_eq!(token_mode(&p, Some(420)), 0o644);
}

#[tokio::test]
async fn a_failed_request_is_not_due_again_for_a_while() {
    let api = FakeApi::default();
    let m = TokenManager::new();
    let p = token_pod(None);
    *api.fail.lock().unwrap() = Some("forbidden".into());
    let now = Utc::now();
    assert!(m.pod_tokens(&api, &p).await.is_err());
    assert!(!m.refresh_due(&p, now + Duration::seconds(1)));
    assert!(m.refresh_due(&p, now + Duration::seconds(11)));
    *api.fail.lock().unwrap() = None;
    *api.issue_at.lock().unwrap() = Some(Utc::now());
    m.pod_tokens(&api, &p).await.unwrap();
    assert!(!m.refresh_due(&p, Utc::now()));
}
