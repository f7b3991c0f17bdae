//! A container's environment, built as kubelet's `makeEnvironmentVariables` builds it
//! (`pkg/kubelet/kubelet_pods.go`), from objects the caller has already fetched.
//!
//! Precedence, lowest first: service variables, then `envFrom` sources in order, then `env`
//! entries in order; a later definition of a name replaces an earlier one. `env` values expand
//! `$(NAME)` against everything defined before them plus the service variables, with upstream's
//! rules ([`expand`]). Values taken from `valueFrom` are never expanded.
//!
//! Order of the result. Upstream collects the declared variables in a Go map, so its order is
//! unspecified; its stated intent is "declared variables in declaration order, then the remaining
//! service variables". That is what this returns: every name once, at the position where it was
//! first declared (holding its final value), followed by the service variables no declaration
//! replaced, ordered by service name.
//!
//! Service variables (`pkg/kubelet/envvars`): for every Service with a cluster IP (not `None`,
//! not empty), `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORTNAME>` and
//! the Docker-link set `<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}`, with
//! names upper-cased and `-` replaced by `_`. The `kubernetes` Service of `default` is always
//! included, even with `enableServiceLinks: false`; the pod's own namespace's Services only when
//! service links are enabled (the default), and a Service there named `kubernetes` wins.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::admit::effective_request;
use crate::admit::quantity::{parse_quantity, ParsedQuantity, QuantityError};

/// Why a container's environment could not be built. The messages are kubelet's; the caller
/// reports them as the `CreateContainerConfigError` waiting message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A required ConfigMap does not exist.
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound {
        /// The ConfigMap's name.
        name: String,
    },
    /// A required Secret does not exist.
    #[error("secret \"{name}\" not found")]
    SecretNotFound {
        /// The Secret's name.
        name: String,
    },
    /// A required key is missing from a ConfigMap.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        /// The pod's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// A required key is missing from a Secret.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        /// The pod's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// A Secret value that is not UTF-8 cannot become an environment variable.
    #[error("value of key {key} in Secret {namespace}/{name} is not valid UTF-8")]
    SecretValueNotUtf8 {
        /// The pod's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The key whose value is not text.
        key: String,
    },
    /// A `fieldRef.apiVersion` other than `v1`.
    #[error("unsupported pod version: {0}")]
    UnsupportedPodVersion(String),
    /// A `fieldRef.fieldPath` the downward API does not know.
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
    /// A subscript on a field other than labels or annotations.
    #[error("field label does not support subscript: {0}")]
    SubscriptNotSupported(String),
    /// A known field that cannot be used as an environment variable.
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    /// A label or annotation subscript that is not a qualified name.
    #[error("invalid key subscript in {path}: {reason}")]
    InvalidSubscript {
        /// The whole field path.
        path: String,
        /// What is wrong with the key.
        reason: String,
    },
    /// `status.hostIP` or `status.hostIPs` asked for while the node has no address.
    #[error("host IP unknown; known addresses: []")]
    HostIpUnknown,
    /// A `resourceFieldRef.resource` that is not a container resource.
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    /// A `resourceFieldRef.containerName` naming no container of the pod.
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// A quantity (limit, request, allocatable or divisor) that does not parse.
    #[error("invalid quantity for {what}")]
    Quantity {
        /// Which quantity.
        what: String,
        /// The parse failure.
        #[source]
        source: QuantityError,
    },
}

/// Everything a container's environment is computed from, already fetched by the caller.
#[derive(Debug, Clone, Copy)]
pub struct EnvContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// This node's name; used for `spec.nodeName` when the pod does not carry one.
    pub node_name: &'a str,
    /// The node's IPs, primary first (`status.hostIP`, `status.hostIPs`).
    pub host_ips: &'a [String],
    /// The pod's IPs (`status.podIP`, `status.podIPs`); re-ordered so the node's primary IP
    /// family comes first, as kubelet does.
    pub pod_ips: &'a [String],
    /// Node allocatable cpu: the `limits.cpu` of a container that sets no cpu limit.
    pub allocatable_cpu: Option<&'a Quantity>,
    /// Node allocatable memory: the `limits.memory` of a container that sets no memory limit.
    pub allocatable_memory: Option<&'a Quantity>,
    /// Node allocatable ephemeral storage: the `limits.ephemeral-storage` default.
    pub allocatable_ephemeral_storage: Option<&'a Quantity>,
    /// ConfigMaps of the pod's namespace that the pod references, by name; absent = not found.
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    /// Secrets of the pod's namespace that the pod references, by name; absent = not found.
    pub secrets: &'a BTreeMap<String, Secret>,
    /// Services of the pod's namespace (others are ignored).
    pub services: &'a [Service],
    /// The `kubernetes` Service of the `default` namespace, if it exists.
    pub master_service: Option<&'a Service>,
}

impl EnvContext<'_> {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// `spec.enableServiceLinks`, defaulting to true as the API does.
    pub fn enable_service_links(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true)
    }
}

/// ConfigMaps and Secrets a pod's containers reference through `env` and `envFrom`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    /// ConfigMap name → `true` when every reference to it is optional (its absence is no error).
    pub config_maps: BTreeMap<String, bool>,
    /// Secret name → `true` when every reference to it is optional.
    pub secrets: BTreeMap<String, bool>,
}

impl Refs {
    /// Whether the pod references nothing.
    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty() && self.secrets.is_empty()
    }
}

/// Lists the ConfigMaps and Secrets referenced by `env` (`configMapKeyRef`, `secretKeyRef`) and
/// `envFrom` (`configMapRef`, `secretRef`) of the pod's init and app containers, so the caller
/// knows what to fetch before calling [`container_env`].
pub fn referenced_objects(pod: &Pod) -> Refs {
    let mut refs = Refs::default();
    let Some(spec) = pod.spec.as_ref() else {
        return refs;
    };
    let note = |map: &mut BTreeMap<String, bool>, name: &str, optional: Option<bool>| {
        let all_optional = map.entry(name.to_string()).or_insert(true);
        *all_optional &= optional == Some(true);
    };
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                note(&mut refs.config_maps, &r.name, r.optional);
            }
            if let Some(r) = &from.secret_ref {
                note(&mut refs.secrets, &r.name, r.optional);
            }
        }
        for var in c.env.iter().flatten() {
            let Some(source) = &var.value_from else {
                continue;
            };
            if let Some(r) = &source.config_map_key_ref {
                note(&mut refs.config_maps, &r.name, r.optional);
            }
            if let Some(r) = &source.secret_key_ref {
                note(&mut refs.secrets, &r.name, r.optional);
            }
        }
    }
    refs
}

/// Names in first-definition order with their latest values.
#[derive(Debug, Default)]
struct OrderedEnv {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl OrderedEnv {
    fn set(&mut self, name: &str, value: String) {
        if self.values.insert(name.to_string(), value).is_none() {
            self.order.push(name.to_string());
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn into_pairs(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .map(|name| {
                let value = self.values.remove(&name).unwrap_or_default();
                (name, value)
            })
            .collect()
    }
}

/// Builds `container`'s environment: `(name, value)` pairs, each name once. See the module
/// documentation for precedence and order.
pub fn container_env(
    ctx: &EnvContext,
    container: &Container,
) -> Result<Vec<(String, String)>, EnvError> {
    let services = service_env(ctx);
    let mut declared = OrderedEnv::default();
    let namespace = ctx.namespace();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let Some(cm) = ctx.config_maps.get(&r.name) else {
                if r.optional == Some(true) {
                    continue;
                }
                return Err(EnvError::ConfigMapNotFound {
                    name: r.name.clone(),
                });
            };
            for (k, v) in cm.data.iter().flatten() {
                let name = format!("{prefix}{k}");
                if is_env_var_name(&name) {
                    declared.set(&name, v.clone());
                }
            }
        } else if let Some(r) = &from.secret_ref {
            let Some(secret) = ctx.secrets.get(&r.name) else {
                if r.optional == Some(true) {
                    continue;
                }
                return Err(EnvError::SecretNotFound {
                    name: r.name.clone(),
                });
            };
            for (k, v) in secret.data.iter().flatten() {
                let name = format!("{prefix}{k}");
                if is_env_var_name(&name) {
                    declared.set(&name, secret_text(namespace, &r.name, k, &v.0)?);
                }
            }
        }
    }

    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or_default();
        let value = if !literal.is_empty() {
            expand(literal, |name| {
                declared.get(name).or_else(|| services.get(name))
            })
        } else if let Some(source) = &var.value_from {
            if let Some(fs) = &source.field_ref {
                field_ref_value(ctx, fs)?
            } else if let Some(fs) = &source.resource_field_ref {
                resource_field_value(ctx, container, fs)?
            } else if let Some(r) = &source.config_map_key_ref {
                let optional = r.optional == Some(true);
                let Some(cm) = ctx.config_maps.get(&r.name) else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::ConfigMapNotFound {
                        name: r.name.clone(),
                    });
                };
                match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            namespace: namespace.to_string(),
                            name: r.name.clone(),
                            key: r.key.clone(),
                        })
                    }
                }
            } else if let Some(r) = &source.secret_key_ref {
                let optional = r.optional == Some(true);
                let Some(secret) = ctx.secrets.get(&r.name) else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::SecretNotFound {
                        name: r.name.clone(),
                    });
                };
                match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(v) => secret_text(namespace, &r.name, &r.key, &v.0)?,
                    None if optional => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            namespace: namespace.to_string(),
                            name: r.name.clone(),
                            key: r.key.clone(),
                        })
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        declared.set(&var.name, value);
    }

    let mut out = Vec::with_capacity(declared.order.len() + services.order.len());
    let declared_names: HashSet<String> = declared.values.keys().cloned().collect();
    out.extend(declared.into_pairs());
    out.extend(
        services
            .into_pairs()
            .into_iter()
            .filter(|(name, _)| !declared_names.contains(name)),
    );
    Ok(out)
}

/// Expands `$(NAME)` references in `input` as Kubernetes does
/// (`third_party/forked/golang/expansion`): `$$` is an escaped `$`; `$(NAME)` is replaced by
/// `lookup(NAME)` and left as written when that is `None`; an unterminated `$(` and a `$` before
/// any other character are kept as they are. There is no nesting and no recursion.
pub fn expand<'v>(input: &str, lookup: impl Fn(&str) -> Option<&'v str>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 >= bytes.len() {
            i += 1;
            continue;
        }
        out.push_str(&input[checkpoint..i]);
        match bytes[i + 1] {
            b'$' => {
                out.push('$');
                i += 2;
            }
            b'(' => match input[i + 2..].find(')') {
                Some(len) => {
                    let name = &input[i + 2..i + 2 + len];
                    match lookup(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    i += 2 + len + 1;
                }
                None => {
                    out.push_str("$(");
                    i += 2;
                }
            },
            _ => {
                out.push('$');
                i += 1;
            }
        }
        checkpoint = i;
    }
    out.push_str(&input[checkpoint..]);
    out
}

/// Expands `$(NAME)` in a container's `command` and `args` against its environment, as kubelet
/// does before creating the container.
pub fn expand_command_and_args(
    container: &Container,
    env: &[(String, String)],
) -> (Vec<String>, Vec<String>) {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter()
            .flatten()
            .map(|s| expand(s, |name| map.get(name).copied()))
            .collect()
    };
    (run(&container.command), run(&container.args))
}

/// Whether a (prefixed) `envFrom` key can be an environment variable name: non-empty printable
/// ASCII without `=`, the rule the API enforces since `RelaxedEnvironmentVariableValidation`.
/// Kubelet skips other keys (upstream, before that gate, skipped non-C-identifier keys and emitted
/// an `InvalidEnvironmentVariableNames` event; the API no longer lets such keys through).
fn is_env_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

fn secret_text(namespace: &str, name: &str, key: &str, bytes: &[u8]) -> Result<String, EnvError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| EnvError::SecretValueNotUtf8 {
        namespace: namespace.to_string(),
        name: name.to_string(),
        key: key.to_string(),
    })
}

fn service_env(ctx: &EnvContext) -> OrderedEnv {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    let has_ip = |s: &Service| {
        s.spec
            .as_ref()
            .and_then(|spec| spec.cluster_ip.as_deref())
            .is_some_and(|ip| !ip.is_empty() && ip != "None")
    };
    if let Some(master) = ctx.master_service.filter(|s| has_ip(s)) {
        if let Some(name) = master.metadata.name.as_deref() {
            chosen.insert(name, master);
        }
    }
    if ctx.enable_service_links() {
        let ns = ctx.namespace();
        for svc in ctx.services {
            let in_ns = svc.metadata.namespace.as_deref().is_none_or(|n| n == ns);
            if let (true, true, Some(name)) = (in_ns, has_ip(svc), svc.metadata.name.as_deref()) {
                chosen.insert(name, svc);
            }
        }
    }
    let mut env = OrderedEnv::default();
    for (name, svc) in chosen {
        service_vars(&mut env, name, svc);
    }
    env
}

fn env_name(s: &str) -> String {
    s.to_uppercase().replace('-', "_")
}

fn service_vars(env: &mut OrderedEnv, name: &str, svc: &Service) {
    let Some(spec) = svc.spec.as_ref() else {
        return;
    };
    let ip = spec.cluster_ip.as_deref().unwrap_or_default();
    let prefix = env_name(name);
    env.set(&format!("{prefix}_SERVICE_HOST"), ip.to_string());
    let ports = spec.ports.as_deref().unwrap_or_default();
    let Some(first) = ports.first() else {
        return;
    };
    env.set(&format!("{prefix}_SERVICE_PORT"), first.port.to_string());
    for p in ports {
        if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            env.set(
                &format!("{prefix}_SERVICE_PORT_{}", env_name(port_name)),
                p.port.to_string(),
            );
        }
    }
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    for (i, p) in ports.iter().enumerate() {
        let protocol = p
            .protocol
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("TCP");
        let lower = protocol.to_lowercase();
        let url = format!("{lower}://{host}:{}", p.port);
        if i == 0 {
            env.set(&format!("{prefix}_PORT"), url.clone());
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
        env.set(&port_prefix, url);
        env.set(&format!("{port_prefix}_PROTO"), lower);
        env.set(&format!("{port_prefix}_PORT"), p.port.to_string());
        env.set(&format!("{port_prefix}_ADDR"), ip.to_string());
    }
}

/// Field paths the downward API accepts (`ConvertDownwardAPIFieldLabel`); some of them are
/// nevertheless not available as environment variables and fail later, as upstream.
const FIELD_LABELS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.serviceAccountName",
    "spec.schedulerName",
    "status.phase",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
    "spec.terminationGracePeriodSeconds",
];

/// Splits `metadata.labels['key']` into (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (head, key) = inner.split_once("['")?;
    (!head.is_empty()).then_some((head, key))
}

pub(crate) fn field_ref_value(
    ctx: &EnvContext,
    fs: &ObjectFieldSelector,
) -> Result<String, EnvError> {
    let version = fs
        .api_version
        .as_deref()
        .filter(|v| !v.is_empty())
        .unwrap_or("v1");
    if version != "v1" {
        return Err(EnvError::UnsupportedPodVersion(version.to_string()));
    }
    let label = fs.field_path.as_str();
    if let Some((path, key)) = split_subscript(label) {
        let (map, checked) = match path {
            "metadata.annotations" => (&ctx.pod.metadata.annotations, key.to_lowercase()),
            "metadata.labels" => (&ctx.pod.metadata.labels, key.to_string()),
            _ => return Err(EnvError::SubscriptNotSupported(label.to_string())),
        };
        let errors = qualified_name_errors(&checked);
        if !errors.is_empty() {
            return Err(EnvError::InvalidSubscript {
                path: label.to_string(),
                reason: errors.join(";"),
            });
        }
        return Ok(map
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    let path = match label {
        "spec.host" => "spec.nodeName",
        l if FIELD_LABELS.contains(&l) => l,
        _ => return Err(EnvError::FieldLabelNotSupported(label.to_string())),
    };
    let pod = ctx.pod;
    let spec = pod.spec.as_ref();
    let pod_ips = sort_pod_ips(ctx.pod_ips, ctx.host_ips.first().map(String::as_str));
    Ok(match path {
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
            .unwrap_or(ctx.node_name)
            .to_string(),
        "spec.serviceAccountName" => spec
            .and_then(|s| {
                s.service_account_name
                    .as_deref()
                    .or(s.service_account.as_deref())
            })
            .unwrap_or_default()
            .to_string(),
        "status.hostIP" => ctx.host_ips.first().ok_or(EnvError::HostIpUnknown)?.clone(),
        "status.hostIPs" => {
            if ctx.host_ips.is_empty() {
                return Err(EnvError::HostIpUnknown);
            }
            ctx.host_ips.join(",")
        }
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
        "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
        "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
        "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        other => return Err(EnvError::UnsupportedFieldPath(other.to_string())),
    })
}

fn is_ipv4(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    }
}

/// Kubelet's `sortPodIPs`: the first IP of the node's primary family, then the first of the
/// other family; strings that are not IPs are dropped.
fn sort_pod_ips(pod_ips: &[String], node_ip: Option<&str>) -> Vec<String> {
    let primary_v4 = node_ip
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .is_none_or(|ip| is_ipv4(&ip));
    let parsed: Vec<(&String, bool)> = pod_ips
        .iter()
        .filter_map(|s| s.parse::<IpAddr>().ok().map(|ip| (s, is_ipv4(&ip))))
        .collect();
    let mut out = Vec::with_capacity(2);
    for want_v4 in [primary_v4, !primary_v4] {
        if let Some((s, _)) = parsed.iter().find(|(_, v4)| *v4 == want_v4) {
            out.push((*s).clone());
        }
    }
    out
}

/// `key="value"` lines sorted by key, values quoted as Go's `%q` quotes them.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `%q` of a string (kubelet's messages quote with it).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Upstream `IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let parts: Vec<&str> = value.split('/').collect();
    let mut errors = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else if let Some(e) = dns_subdomain_error(prefix) {
                errors.push(format!("prefix part {e}"));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_string());
    }
    let b = name.as_bytes();
    let inner_ok = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    let ends_ok = b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    if !name.is_empty() && (!inner_ok || !ends_ok) {
        errors.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    errors
}

fn dns_subdomain_error(value: &str) -> Option<String> {
    if value.len() > 253 {
        return Some("must be no more than 253 characters".to_string());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    (!value.split('.').all(label_ok)).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()
    })
}

fn parse(what: impl FnOnce() -> String, q: &Quantity) -> Result<ParsedQuantity, EnvError> {
    parse_quantity(&q.0).map_err(|source| EnvError::Quantity {
        what: what(),
        source,
    })
}

/// `ceil(a / b)` for any signs, `b != 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    let (q, r) = (a / b, a % b);
    if r != 0 && ((r > 0) == (b > 0)) {
        q + 1
    } else {
        q
    }
}

pub(crate) fn resource_field_value(
    ctx: &EnvContext,
    container: &Container,
    fs: &ResourceFieldSelector,
) -> Result<String, EnvError> {
    let target = match fs.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => {
            let spec = ctx.pod.spec.as_ref();
            spec.into_iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name)
                .ok_or_else(|| EnvError::ContainerNotFound(name.to_string()))?
        }
    };
    let unsupported = || EnvError::UnsupportedResource(fs.resource.clone());
    let (side, resource) = fs.resource.split_once('.').ok_or_else(unsupported)?;
    let is_cpu = match resource {
        "cpu" => true,
        "memory" | "ephemeral-storage" => false,
        r if r.starts_with("hugepages-") => false,
        _ => return Err(unsupported()),
    };
    let quantity = match side {
        "limits" => {
            let own = target
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get(resource));
            let own = match own {
                Some(q) => Some(parse(|| format!("limits.{resource}"), q)?),
                None => None,
            };
            match own.filter(|q| !q.is_zero()) {
                Some(q) => q,
                None => {
                    let allocatable = match resource {
                        "cpu" => ctx.allocatable_cpu,
                        "memory" => ctx.allocatable_memory,
                        "ephemeral-storage" => ctx.allocatable_ephemeral_storage,
                        _ => None,
                    };
                    match allocatable {
                        Some(q) => parse(|| format!("allocatable {resource}"), q)?,
                        None => own.unwrap_or_default(),
                    }
                }
            }
        }
        "requests" => match effective_request(target, resource) {
            Some(q) => parse(|| format!("requests.{resource}"), q)?,
            None => ParsedQuantity::ZERO,
        },
        _ => return Err(unsupported()),
    };
    let divisor = match &fs.divisor {
        Some(q) => parse(|| "divisor".to_string(), q)?,
        None => ParsedQuantity::ZERO,
    };
    let divisor = if divisor.is_zero() {
        ParsedQuantity::ONE
    } else {
        divisor
    };
    let (value, per) = if is_cpu {
        (quantity.milli_value(), divisor.milli_value())
    } else {
        (quantity.value(), divisor.value())
    };
    Ok(ceil_div(value, if per == 0 { 1 } else { per }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, PodSpec,
        ResourceRequirements, SecretEnvSource, SecretKeySelector, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    /// A built environment, and what a case expects.
    type Env = Vec<(String, String)>;
    type Want = Result<Env, EnvError>;

    const HOST_IP: &str = "127.0.0.1";
    const HOST_IPV6: &str = "::1";

    fn svc(name: &str, ns: &str, ip: &str, proto: &str, port: i32) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(vec![ServicePort {
                    protocol: Some(proto.into()),
                    port,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The services of upstream's TestMakeEnvironmentVariables.
    fn cluster_services() -> Vec<Service> {
        vec![
            svc("kubernetes", "default", "1.2.3.1", "TCP", 8081),
            svc("test", "test1", "1.2.3.3", "TCP", 8083),
            svc("kubernetes", "test2", "1.2.3.4", "TCP", 8084),
            svc("test", "test2", "1.2.3.5", "TCP", 8085),
            svc("test", "test2", "None", "TCP", 8085),
            svc("test", "test2", "", "TCP", 8085),
            svc("not-special", "default", "1.2.3.8", "TCP", 8088),
            svc("not-special", "default", "None", "TCP", 8088),
            svc("not-special", "default", "", "TCP", 8088),
        ]
    }

    fn link_vars(prefix: &str, ip: &str, port: i32) -> Vec<(String, String)> {
        let url = format!("tcp://{ip}:{port}");
        vec![
            (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
            (format!("{prefix}_SERVICE_PORT"), port.to_string()),
            (format!("{prefix}_PORT"), url.clone()),
            (format!("{prefix}_PORT_{port}_TCP"), url),
            (format!("{prefix}_PORT_{port}_TCP_PROTO"), "tcp".to_string()),
            (format!("{prefix}_PORT_{port}_TCP_PORT"), port.to_string()),
            (format!("{prefix}_PORT_{port}_TCP_ADDR"), ip.to_string()),
        ]
    }

    fn kube(ip: &str, port: i32) -> Vec<(String, String)> {
        link_vars("KUBERNETES", ip, port)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn lit(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(source),
            ..Default::default()
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        from(
            name,
            EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: path.into(),
                }),
                ..Default::default()
            },
        )
    }

    fn resource(name: &str, res: &str, divisor: Option<&str>, container: Option<&str>) -> EnvVar {
        from(
            name,
            EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    resource: res.into(),
                    divisor: divisor.map(|d| Quantity(d.into())),
                    container_name: container.map(str::to_string),
                }),
                ..Default::default()
            },
        )
    }

    fn cm_key(name: &str, cm: &str, key: &str, optional: Option<bool>) -> EnvVar {
        from(
            name,
            EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: cm.into(),
                    key: key.into(),
                    optional,
                }),
                ..Default::default()
            },
        )
    }

    fn secret_key(name: &str, secret: &str, key: &str, optional: Option<bool>) -> EnvVar {
        from(
            name,
            EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: key.into(),
                    optional,
                }),
                ..Default::default()
            },
        )
    }

    fn env_from_cm(name: &str, prefix: Option<&str>, optional: Option<bool>) -> EnvFromSource {
        EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: name.into(),
                optional,
            }),
            prefix: prefix.map(str::to_string),
            ..Default::default()
        }
    }

    fn env_from_secret(name: &str, prefix: Option<&str>, optional: Option<bool>) -> EnvFromSource {
        EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.into(),
                optional,
            }),
            prefix: prefix.map(str::to_string),
            ..Default::default()
        }
    }

    fn container(env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> Container {
        Container {
            name: "c".into(),
            env: Some(env),
            env_from: Some(env_from),
            ..Default::default()
        }
    }

    fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn secret(name: &str, data: &[(&str, &[u8])]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// Owned inputs for one test case; `ctx()` borrows them.
    struct World {
        pod: Pod,
        config_maps: BTreeMap<String, ConfigMap>,
        secrets: BTreeMap<String, Secret>,
        services: Vec<Service>,
        master: Option<Service>,
        host_ips: Vec<String>,
        pod_ips: Vec<String>,
        cpu: Option<Quantity>,
        memory: Option<Quantity>,
    }

    impl World {
        fn new(ns: &str, links: Option<bool>) -> World {
            let services = cluster_services();
            let master = services.first().cloned();
            World {
                pod: Pod {
                    metadata: ObjectMeta {
                        name: Some("dapi-test-pod-name".into()),
                        namespace: Some(ns.into()),
                        uid: Some("uid-1".into()),
                        ..Default::default()
                    },
                    spec: Some(PodSpec {
                        service_account_name: Some("special".into()),
                        node_name: Some("node-name".into()),
                        enable_service_links: links,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                config_maps: BTreeMap::new(),
                secrets: BTreeMap::new(),
                services,
                master,
                host_ips: vec![HOST_IP.into(), HOST_IPV6.into()],
                pod_ips: vec![],
                cpu: Some(Quantity("4".into())),
                memory: Some(Quantity("8Gi".into())),
            }
        }

        /// No services at all (upstream's nil lister).
        fn without_services(mut self) -> World {
            self.services.clear();
            self.master = None;
            self
        }

        fn with_cm(mut self, cm: ConfigMap) -> World {
            self.config_maps
                .insert(cm.metadata.name.clone().unwrap_or_default(), cm);
            self
        }

        fn with_secret(mut self, s: Secret) -> World {
            self.secrets
                .insert(s.metadata.name.clone().unwrap_or_default(), s);
            self
        }

        fn ctx(&self) -> EnvContext<'_> {
            EnvContext {
                pod: &self.pod,
                node_name: "kennel-node",
                host_ips: &self.host_ips,
                pod_ips: &self.pod_ips,
                allocatable_cpu: self.cpu.as_ref(),
                allocatable_memory: self.memory.as_ref(),
                allocatable_ephemeral_storage: None,
                config_maps: &self.config_maps,
                secrets: &self.secrets,
                services: &self.services,
                master_service: self.master.as_ref(),
            }
        }
    }

    fn cat(parts: Vec<Vec<(String, String)>>) -> Vec<(String, String)> {
        parts.into_iter().flatten().collect()
    }

    #[test]
    fn service_links_as_upstream() {
        let test_vars_declared = vec![
            lit("FOO", "BAR"),
            lit("TEST_SERVICE_HOST", "1.2.3.3"),
            lit("TEST_SERVICE_PORT", "8083"),
            lit("TEST_PORT", "tcp://1.2.3.3:8083"),
            lit("TEST_PORT_8083_TCP", "tcp://1.2.3.3:8083"),
            lit("TEST_PORT_8083_TCP_PROTO", "tcp"),
            lit("TEST_PORT_8083_TCP_PORT", "8083"),
            lit("TEST_PORT_8083_TCP_ADDR", "1.2.3.3"),
        ];
        let declared_as_pairs = cat(vec![
            pairs(&[("FOO", "BAR")]),
            link_vars("TEST", "1.2.3.3", 8083),
        ]);
        // (name, namespace, enableServiceLinks, env, want)
        type Case = (&'static str, &'static str, Option<bool>, Vec<EnvVar>, Env);
        let cases: Vec<Case> = vec![
            (
                "api server = Y, kubelet = Y",
                "test1",
                Some(false),
                test_vars_declared,
                cat(vec![declared_as_pairs, kube("1.2.3.1", 8081)]),
            ),
            (
                "api server = N; kubelet = Y",
                "test1",
                Some(false),
                vec![lit("FOO", "BAZ")],
                cat(vec![pairs(&[("FOO", "BAZ")]), kube("1.2.3.1", 8081)]),
            ),
            (
                "api server = N; kubelet = Y; service env vars",
                "test1",
                Some(true),
                vec![lit("FOO", "BAZ")],
                cat(vec![
                    pairs(&[("FOO", "BAZ")]),
                    kube("1.2.3.1", 8081),
                    link_vars("TEST", "1.2.3.3", 8083),
                ]),
            ),
            (
                "service links default to on",
                "test1",
                None,
                vec![],
                cat(vec![
                    kube("1.2.3.1", 8081),
                    link_vars("TEST", "1.2.3.3", 8083),
                ]),
            ),
            (
                "master service in pod ns",
                "test2",
                Some(false),
                vec![lit("FOO", "ZAP")],
                cat(vec![pairs(&[("FOO", "ZAP")]), kube("1.2.3.1", 8081)]),
            ),
            (
                "master service in pod ns, service env vars",
                "test2",
                Some(true),
                vec![lit("FOO", "ZAP")],
                cat(vec![
                    pairs(&[("FOO", "ZAP")]),
                    kube("1.2.3.4", 8084),
                    link_vars("TEST", "1.2.3.5", 8085),
                ]),
            ),
            (
                "pod in master service ns",
                "default",
                Some(false),
                vec![],
                kube("1.2.3.1", 8081),
            ),
            (
                "pod in master service ns, service env vars",
                "default",
                Some(true),
                vec![],
                cat(vec![
                    kube("1.2.3.1", 8081),
                    link_vars("NOT_SPECIAL", "1.2.3.8", 8088),
                ]),
            ),
        ];
        for (name, ns, links, env, want) in cases {
            let world = World::new(ns, links);
            let got = container_env(&world.ctx(), &container(env, vec![]));
            assert_eq!(got, Ok(want), "{name}");
        }
    }

    #[test]
    fn no_master_service_means_no_kubernetes_vars() {
        let world = World::new("test1", Some(false)).without_services();
        let got = container_env(&world.ctx(), &container(vec![lit("A", "1")], vec![]));
        assert_eq!(got, Ok(pairs(&[("A", "1")])));
    }

    /// The API server's own Service as `kennel up` bootstraps it (`default/kubernetes`, port
    /// `https` 443): in-cluster clients (kube-rs `Config::incluster`, client-go, `kubectl`) read
    /// `KUBERNETES_SERVICE_HOST`/`_PORT`, which every pod gets, in every namespace, with or
    /// without service links.
    #[test]
    fn every_pod_gets_the_api_servers_service_vars() {
        let mut master = svc("kubernetes", "default", "10.96.0.1", "TCP", 443);
        master.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].name = Some("https".into());
        let url = "tcp://10.96.0.1:443";
        let want = pairs(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", url),
            ("KUBERNETES_PORT_443_TCP", url),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ]);
        for (ns, links) in [
            ("shop", Some(false)),
            ("shop", None),
            ("default", Some(false)),
            ("kube-system", Some(true)),
        ] {
            let mut world = World::new(ns, links).without_services();
            world.master = Some(master.clone());
            let got = container_env(&world.ctx(), &container(vec![], vec![]));
            assert_eq!(got, Ok(want.clone()), "{ns} {links:?}");
        }
    }

    #[test]
    fn service_vars_as_from_services() {
        // Upstream TestFromServices.
        let mut abc = svc("abc-123", "ns", "5.6.7.8", "UDP", 8081);
        abc.spec.as_mut().unwrap().ports = Some(vec![
            ServicePort {
                name: Some("u-d-p".into()),
                port: 8081,
                protocol: Some("UDP".into()),
                ..Default::default()
            },
            ServicePort {
                name: Some("t-c-p".into()),
                port: 8081,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]);
        let mut quux = svc("q-u-u-x", "ns", "9.8.7.6", "TCP", 8082);
        quux.spec.as_mut().unwrap().ports = Some(vec![
            ServicePort {
                port: 8082,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ServicePort {
                name: Some("8083".into()),
                port: 8083,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]);
        let mut world = World::new("ns", Some(true));
        world.master = None;
        world.services = vec![
            svc("foo-bar", "ns", "1.2.3.4", "TCP", 8080),
            abc,
            quux,
            svc("svrc-clusterip-none", "ns", "None", "TCP", 8082),
            svc("svrc-clusterip-empty", "ns", "", "TCP", 8082),
            svc("ipv6", "ns", "fd00::1", "", 53),
        ];
        let want = pairs(&[
            ("ABC_123_SERVICE_HOST", "5.6.7.8"),
            ("ABC_123_SERVICE_PORT", "8081"),
            ("ABC_123_SERVICE_PORT_U_D_P", "8081"),
            ("ABC_123_SERVICE_PORT_T_C_P", "8081"),
            ("ABC_123_PORT", "udp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_UDP", "udp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_UDP_PROTO", "udp"),
            ("ABC_123_PORT_8081_UDP_PORT", "8081"),
            ("ABC_123_PORT_8081_UDP_ADDR", "5.6.7.8"),
            ("ABC_123_PORT_8081_TCP", "tcp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_TCP_PROTO", "tcp"),
            ("ABC_123_PORT_8081_TCP_PORT", "8081"),
            ("ABC_123_PORT_8081_TCP_ADDR", "5.6.7.8"),
            ("FOO_BAR_SERVICE_HOST", "1.2.3.4"),
            ("FOO_BAR_SERVICE_PORT", "8080"),
            ("FOO_BAR_PORT", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP_PROTO", "tcp"),
            ("FOO_BAR_PORT_8080_TCP_PORT", "8080"),
            ("FOO_BAR_PORT_8080_TCP_ADDR", "1.2.3.4"),
            ("IPV6_SERVICE_HOST", "fd00::1"),
            ("IPV6_SERVICE_PORT", "53"),
            ("IPV6_PORT", "tcp://[fd00::1]:53"),
            ("IPV6_PORT_53_TCP", "tcp://[fd00::1]:53"),
            ("IPV6_PORT_53_TCP_PROTO", "tcp"),
            ("IPV6_PORT_53_TCP_PORT", "53"),
            ("IPV6_PORT_53_TCP_ADDR", "fd00::1"),
            ("Q_U_U_X_SERVICE_HOST", "9.8.7.6"),
            ("Q_U_U_X_SERVICE_PORT", "8082"),
            ("Q_U_U_X_SERVICE_PORT_8083", "8083"),
            ("Q_U_U_X_PORT", "tcp://9.8.7.6:8082"),
            ("Q_U_U_X_PORT_8082_TCP", "tcp://9.8.7.6:8082"),
            ("Q_U_U_X_PORT_8082_TCP_PROTO", "tcp"),
            ("Q_U_U_X_PORT_8082_TCP_PORT", "8082"),
            ("Q_U_U_X_PORT_8082_TCP_ADDR", "9.8.7.6"),
            ("Q_U_U_X_PORT_8083_TCP", "tcp://9.8.7.6:8083"),
            ("Q_U_U_X_PORT_8083_TCP_PROTO", "tcp"),
            ("Q_U_U_X_PORT_8083_TCP_PORT", "8083"),
            ("Q_U_U_X_PORT_8083_TCP_ADDR", "9.8.7.6"),
        ]);
        assert_eq!(
            container_env(&world.ctx(), &container(vec![], vec![])),
            Ok(want)
        );
    }

    #[test]
    fn downward_api_fields() {
        let env = vec![
            field("POD_NAME", "metadata.name"),
            field("POD_NAMESPACE", "metadata.namespace"),
            field("POD_UID", "metadata.uid"),
            field("POD_NODE_NAME", "spec.nodeName"),
            field("POD_SERVICE_ACCOUNT_NAME", "spec.serviceAccountName"),
            field("POD_IP", "status.podIP"),
            field("POD_IPS", "status.podIPs"),
            field("HOST_IP", "status.hostIP"),
            field("HOST_IPS", "status.hostIPs"),
            field("LEGACY_HOST", "spec.host"),
        ];
        // (pod IPs, host IPs, POD_IP, POD_IPS)
        let cases: &[(&[&str], &[&str], &str, &str)] = &[
            (
                &["1.2.3.4", "fd00::6"],
                &[HOST_IP, HOST_IPV6],
                "1.2.3.4",
                "1.2.3.4,fd00::6",
            ),
            // Upstream "downward api pod ips reverse order".
            (
                &["fd00::6", "1.2.3.4"],
                &[HOST_IP, HOST_IPV6],
                "1.2.3.4",
                "1.2.3.4,fd00::6",
            ),
            // Upstream "downward api pod ips multiple ips": one per family.
            (
                &["1.2.3.4", "1.2.3.5", "fd00::6", "fd00::7"],
                &[HOST_IP, HOST_IPV6],
                "1.2.3.4",
                "1.2.3.4,fd00::6",
            ),
            // IPv6-primary node: its family comes first.
            (
                &["1.2.3.4", "fd00::6"],
                &[HOST_IPV6, HOST_IP],
                "fd00::6",
                "fd00::6,1.2.3.4",
            ),
            (&[], &[HOST_IP, HOST_IPV6], "", ""),
            (
                &["not-an-ip", "10.0.0.1"],
                &[HOST_IP],
                "10.0.0.1",
                "10.0.0.1",
            ),
        ];
        for &(pod_ips, host_ips, pod_ip, pod_ips_joined) in cases {
            let mut world = World::new("downward-api", Some(false)).without_services();
            world.pod_ips = pod_ips.iter().map(|s| s.to_string()).collect();
            world.host_ips = host_ips.iter().map(|s| s.to_string()).collect();
            let want = pairs(&[
                ("POD_NAME", "dapi-test-pod-name"),
                ("POD_NAMESPACE", "downward-api"),
                ("POD_UID", "uid-1"),
                ("POD_NODE_NAME", "node-name"),
                ("POD_SERVICE_ACCOUNT_NAME", "special"),
                ("POD_IP", pod_ip),
                ("POD_IPS", pod_ips_joined),
                ("HOST_IP", host_ips[0]),
                ("HOST_IPS", &host_ips.join(",")),
                ("LEGACY_HOST", "node-name"),
            ]);
            let got = container_env(&world.ctx(), &container(env.clone(), vec![]));
            assert_eq!(got, Ok(want), "pod IPs {pod_ips:?}, host IPs {host_ips:?}");
        }
    }

    #[test]
    fn node_name_falls_back_to_this_node() {
        let mut world = World::new("ns", Some(false)).without_services();
        world.pod.spec.as_mut().unwrap().node_name = None;
        let got = container_env(
            &world.ctx(),
            &container(vec![field("N", "spec.nodeName")], vec![]),
        );
        assert_eq!(got, Ok(pairs(&[("N", "kennel-node")])));
    }

    #[test]
    fn labels_and_annotations() {
        let mut world = World::new("ns", Some(false)).without_services();
        world.pod.metadata.labels = Some(BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "front \"end\"\n".to_string()),
        ]));
        world.pod.metadata.annotations = Some(BTreeMap::from([(
            "example.com/Owner".to_string(),
            "team-a".to_string(),
        )]));
        let cases: Vec<(&str, Result<&str, EnvError>)> = vec![
            ("metadata.labels['app']", Ok("web")),
            ("metadata.labels['missing']", Ok("")),
            ("metadata.annotations['example.com/Owner']", Ok("team-a")),
            ("metadata.labels", Ok("app=\"web\"\ntier=\"front \\\"end\\\"\\n\"")),
            ("metadata.annotations", Ok("example.com/Owner=\"team-a\"")),
            (
                "metadata.labels['a/b/c']",
                Err(EnvError::InvalidSubscript {
                    path: "metadata.labels['a/b/c']".into(),
                    reason: format!("a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
                }),
            ),
            (
                "metadata.labels['-bad']",
                Err(EnvError::InvalidSubscript {
                    path: "metadata.labels['-bad']".into(),
                    reason: format!("name part {QUALIFIED_NAME_MSG}"),
                }),
            ),
            (
                "metadata.labels['Example.com/x']",
                Err(EnvError::InvalidSubscript {
                    path: "metadata.labels['Example.com/x']".into(),
                    reason: "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into(),
                }),
            ),
            (
                "metadata.name['x']",
                Err(EnvError::SubscriptNotSupported("metadata.name['x']".into())),
            ),
        ];
        for (path, want) in cases {
            let got = container_env(&world.ctx(), &container(vec![field("V", path)], vec![]));
            let want = want.map(|v| pairs(&[("V", v)]));
            assert_eq!(got, want, "{path}");
        }
    }

    #[test]
    fn field_ref_errors() {
        let bad_version = from(
            "V",
            EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v2".into()),
                    field_path: "metadata.name".into(),
                }),
                ..Default::default()
            },
        );
        let no_version = from(
            "V",
            EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: "metadata.name".into(),
                }),
                ..Default::default()
            },
        );
        let cases: Vec<(EnvVar, Want)> = vec![
            (
                bad_version,
                Err(EnvError::UnsupportedPodVersion("v2".into())),
            ),
            (no_version, Ok(pairs(&[("V", "dapi-test-pod-name")]))),
            (
                field("V", "spec.containers"),
                Err(EnvError::FieldLabelNotSupported("spec.containers".into())),
            ),
            (
                field("V", "status.phase"),
                Err(EnvError::UnsupportedFieldPath("status.phase".into())),
            ),
            (
                field("V", "spec.restartPolicy"),
                Err(EnvError::UnsupportedFieldPath("spec.restartPolicy".into())),
            ),
        ];
        for (var, want) in cases {
            let world = World::new("ns", Some(false)).without_services();
            let name = var
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path
                .clone();
            assert_eq!(
                container_env(&world.ctx(), &container(vec![var], vec![])),
                want,
                "{name}"
            );
        }

        let mut world = World::new("ns", Some(false)).without_services();
        world.host_ips.clear();
        for path in ["status.hostIP", "status.hostIPs"] {
            let got = container_env(&world.ctx(), &container(vec![field("H", path)], vec![]));
            assert_eq!(got, Err(EnvError::HostIpUnknown), "{path}");
        }
        assert_eq!(
            EnvError::HostIpUnknown.to_string(),
            "host IP unknown; known addresses: []"
        );
    }

    #[test]
    fn expansion_of_declared_values() {
        // Upstream "env expansion" case.
        let env = vec![
            lit("TEST_LITERAL", "test-test-test"),
            field("POD_NAME", "metadata.name"),
            lit("OUT_OF_ORDER_TEST", "$(OUT_OF_ORDER_TARGET)"),
            lit("OUT_OF_ORDER_TARGET", "FOO"),
            EnvVar {
                name: "EMPTY_VAR".into(),
                ..Default::default()
            },
            lit("EMPTY_TEST", "foo-$(EMPTY_VAR)"),
            lit("POD_NAME_TEST2", "test2-$(POD_NAME)"),
            lit("POD_NAME_TEST3", "$(POD_NAME_TEST2)-3"),
            lit("LITERAL_TEST", "literal-$(TEST_LITERAL)"),
            lit(
                "SERVICE_VAR_TEST",
                "$(TEST_SERVICE_HOST):$(TEST_SERVICE_PORT)",
            ),
            lit("TEST_UNDEFINED", "$(UNDEFINED_VAR)"),
            lit("ESCAPED", "$$(TEST_LITERAL)"),
        ];
        let world = World::new("test1", Some(true));
        let got = container_env(&world.ctx(), &container(env, vec![])).unwrap();
        let want = cat(vec![
            pairs(&[
                ("TEST_LITERAL", "test-test-test"),
                ("POD_NAME", "dapi-test-pod-name"),
                ("OUT_OF_ORDER_TEST", "$(OUT_OF_ORDER_TARGET)"),
                ("OUT_OF_ORDER_TARGET", "FOO"),
                ("EMPTY_VAR", ""),
                ("EMPTY_TEST", "foo-"),
                ("POD_NAME_TEST2", "test2-dapi-test-pod-name"),
                ("POD_NAME_TEST3", "test2-dapi-test-pod-name-3"),
                ("LITERAL_TEST", "literal-test-test-test"),
                ("SERVICE_VAR_TEST", "1.2.3.3:8083"),
                ("TEST_UNDEFINED", "$(UNDEFINED_VAR)"),
                ("ESCAPED", "$(TEST_LITERAL)"),
            ]),
            kube("1.2.3.1", 8081),
            link_vars("TEST", "1.2.3.3", 8083),
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn value_from_is_not_expanded_and_later_duplicates_win() {
        let world = World::new("ns", Some(false))
            .without_services()
            .with_cm(config_map("cm", &[("k", "$(A)")]));
        let env = vec![
            lit("A", "1"),
            lit("B", "2"),
            cm_key("C", "cm", "k", None),
            lit("A", "3"),
            lit("D", "$(A)"),
        ];
        let got = container_env(&world.ctx(), &container(env, vec![]));
        assert_eq!(
            got,
            Ok(pairs(&[("A", "3"), ("B", "2"), ("C", "$(A)"), ("D", "3")]))
        );
    }

    #[test]
    fn env_from_config_maps_and_secrets() {
        let cm = config_map(
            "test-config-map",
            &[
                ("REPLACE_ME", "FROM_CONFIG_MAP"),
                ("DUPE_TEST", "CONFIG_MAP"),
            ],
        );
        let sec = secret(
            "test-secret",
            &[("REPLACE_ME", b"FROM_SECRET"), ("DUPE_TEST", b"SECRET")],
        );
        let env = || {
            vec![
                lit("TEST_LITERAL", "test-test-test"),
                lit("EXPANSION_TEST", "$(REPLACE_ME)"),
                lit("DUPE_TEST", "ENV_VAR"),
            ]
        };
        let cases: Vec<(&str, Vec<EnvFromSource>, Env)> = vec![
            (
                "configmap",
                vec![
                    env_from_cm("test-config-map", None, None),
                    env_from_cm("test-config-map", Some("p_"), None),
                ],
                cat(vec![
                    pairs(&[
                        ("DUPE_TEST", "ENV_VAR"),
                        ("REPLACE_ME", "FROM_CONFIG_MAP"),
                        ("p_DUPE_TEST", "CONFIG_MAP"),
                        ("p_REPLACE_ME", "FROM_CONFIG_MAP"),
                        ("TEST_LITERAL", "test-test-test"),
                        ("EXPANSION_TEST", "FROM_CONFIG_MAP"),
                    ]),
                    kube("1.2.3.1", 8081),
                ]),
            ),
            (
                "secret",
                vec![
                    env_from_secret("test-secret", None, None),
                    env_from_secret("test-secret", Some("p_"), None),
                ],
                cat(vec![
                    pairs(&[
                        ("DUPE_TEST", "ENV_VAR"),
                        ("REPLACE_ME", "FROM_SECRET"),
                        ("p_DUPE_TEST", "SECRET"),
                        ("p_REPLACE_ME", "FROM_SECRET"),
                        ("TEST_LITERAL", "test-test-test"),
                        ("EXPANSION_TEST", "FROM_SECRET"),
                    ]),
                    kube("1.2.3.1", 8081),
                ]),
            ),
            (
                "later source overrides earlier one",
                vec![
                    env_from_cm("test-config-map", None, None),
                    env_from_secret("test-secret", None, None),
                ],
                cat(vec![
                    pairs(&[
                        ("DUPE_TEST", "ENV_VAR"),
                        ("REPLACE_ME", "FROM_SECRET"),
                        ("TEST_LITERAL", "test-test-test"),
                        ("EXPANSION_TEST", "FROM_SECRET"),
                    ]),
                    kube("1.2.3.1", 8081),
                ]),
            ),
            (
                "configmap_missing_optional",
                vec![env_from_cm("missing-config-map", None, Some(true))],
                cat(vec![
                    pairs(&[
                        ("TEST_LITERAL", "test-test-test"),
                        ("EXPANSION_TEST", "$(REPLACE_ME)"),
                        ("DUPE_TEST", "ENV_VAR"),
                    ]),
                    kube("1.2.3.1", 8081),
                ]),
            ),
            (
                "secret_missing_optional",
                vec![env_from_secret("missing-secret", None, Some(true))],
                cat(vec![
                    pairs(&[
                        ("TEST_LITERAL", "test-test-test"),
                        ("EXPANSION_TEST", "$(REPLACE_ME)"),
                        ("DUPE_TEST", "ENV_VAR"),
                    ]),
                    kube("1.2.3.1", 8081),
                ]),
            ),
        ];
        for (name, sources, want) in cases {
            let world = World::new("test1", Some(false))
                .with_cm(cm.clone())
                .with_secret(sec.clone());
            let got = container_env(&world.ctx(), &container(env(), sources));
            assert_eq!(got, Ok(want), "{name}");
        }
    }

    #[test]
    fn env_from_keys() {
        // Relaxed names pass (upstream "configmap_invalid_keys_valid",
        // "secret_invalid_keys_valid"); names no environment can hold are skipped.
        let world = World::new("ns", Some(false))
            .without_services()
            .with_cm(config_map(
                "cm",
                &[
                    ("1234", "abc"),
                    ("a=b", "x"),
                    ("tab\tkey", "y"),
                    ("dot.key", "z"),
                ],
            ))
            .with_secret(secret("s", &[("1234.name", b"abc"), ("", b"empty")]));
        let got = container_env(
            &world.ctx(),
            &container(
                vec![],
                vec![
                    env_from_cm("cm", Some("p_"), None),
                    env_from_secret("s", Some("p_"), None),
                ],
            ),
        );
        assert_eq!(
            got,
            Ok(pairs(&[
                ("p_1234", "abc"),
                ("p_dot.key", "z"),
                ("p_", "empty"),
                ("p_1234.name", "abc"),
            ]))
        );
        let world = World::new("ns", Some(false))
            .without_services()
            .with_secret(secret("s", &[("", b"empty")]));
        let got = container_env(
            &world.ctx(),
            &container(vec![], vec![env_from_secret("s", None, None)]),
        );
        assert_eq!(got, Ok(vec![]), "an empty key without prefix is no name");
    }

    #[test]
    fn key_refs() {
        let base = || {
            World::new("test1", Some(false))
                .without_services()
                .with_cm(config_map("cfg", &[("k", "from-cm")]))
                .with_secret(secret(
                    "s",
                    &[("k", b"from-secret"), ("bin", &[0xff, 0xfe])],
                ))
        };
        let missing_cm = || EnvError::ConfigMapNotFound {
            name: "nope".into(),
        };
        let cases: Vec<(&str, EnvVar, Want)> = vec![
            (
                "configmap key",
                cm_key("V", "cfg", "k", None),
                Ok(pairs(&[("V", "from-cm")])),
            ),
            (
                "configmap missing",
                cm_key("V", "nope", "k", None),
                Err(missing_cm()),
            ),
            (
                "configmap missing, optional=false",
                cm_key("V", "nope", "k", Some(false)),
                Err(missing_cm()),
            ),
            (
                "configmap missing, optional",
                cm_key("V", "nope", "k", Some(true)),
                Ok(vec![]),
            ),
            (
                "configmap key missing",
                cm_key("V", "cfg", "other", None),
                Err(EnvError::ConfigMapKeyNotFound {
                    namespace: "test1".into(),
                    name: "cfg".into(),
                    key: "other".into(),
                }),
            ),
            (
                "configmap key missing, optional",
                cm_key("V", "cfg", "other", Some(true)),
                Ok(vec![]),
            ),
            (
                "secret key",
                secret_key("V", "s", "k", None),
                Ok(pairs(&[("V", "from-secret")])),
            ),
            (
                "secret missing",
                secret_key("V", "nope", "k", None),
                Err(EnvError::SecretNotFound {
                    name: "nope".into(),
                }),
            ),
            (
                "secret missing, optional",
                secret_key("V", "nope", "k", Some(true)),
                Ok(vec![]),
            ),
            (
                "secret key missing",
                secret_key("V", "s", "other", None),
                Err(EnvError::SecretKeyNotFound {
                    namespace: "test1".into(),
                    name: "s".into(),
                    key: "other".into(),
                }),
            ),
            (
                "secret key missing, optional",
                secret_key("V", "s", "other", Some(true)),
                Ok(vec![]),
            ),
            (
                "secret value not UTF-8",
                secret_key("V", "s", "bin", None),
                Err(EnvError::SecretValueNotUtf8 {
                    namespace: "test1".into(),
                    name: "s".into(),
                    key: "bin".into(),
                }),
            ),
        ];
        for (name, var, want) in cases {
            let world = base();
            assert_eq!(
                container_env(&world.ctx(), &container(vec![var], vec![])),
                want,
                "{name}"
            );
        }

        // envFrom: missing required sources and non-UTF-8 values.
        let world = base();
        let cases: Vec<(EnvFromSource, EnvError)> = vec![
            (
                env_from_cm("nope", None, None),
                EnvError::ConfigMapNotFound {
                    name: "nope".into(),
                },
            ),
            (
                env_from_secret("nope", None, Some(false)),
                EnvError::SecretNotFound {
                    name: "nope".into(),
                },
            ),
            (
                env_from_secret("s", None, None),
                EnvError::SecretValueNotUtf8 {
                    namespace: "test1".into(),
                    name: "s".into(),
                    key: "bin".into(),
                },
            ),
        ];
        for (source, want) in cases {
            let got = container_env(&world.ctx(), &container(vec![], vec![source]));
            assert_eq!(got, Err(want.clone()), "{want}");
        }
    }

    #[test]
    fn optional_miss_keeps_earlier_value() {
        let world = World::new("ns", Some(false))
            .without_services()
            .with_cm(config_map("cfg", &[("V", "from-env-from")]));
        let got = container_env(
            &world.ctx(),
            &container(
                vec![cm_key("V", "cfg", "absent", Some(true))],
                vec![env_from_cm("cfg", None, None)],
            ),
        );
        assert_eq!(got, Ok(pairs(&[("V", "from-env-from")])));
    }

    #[test]
    fn error_messages_read_like_kubelet() {
        let cases: Vec<(EnvError, &str)> = vec![
            (
                EnvError::ConfigMapNotFound { name: "cfg".into() },
                "configmap \"cfg\" not found",
            ),
            (
                EnvError::ConfigMapKeyNotFound {
                    namespace: "ns".into(),
                    name: "cfg".into(),
                    key: "k".into(),
                },
                "couldn't find key k in ConfigMap ns/cfg",
            ),
            (
                EnvError::SecretNotFound { name: "s".into() },
                "secret \"s\" not found",
            ),
            (
                EnvError::SecretKeyNotFound {
                    namespace: "ns".into(),
                    name: "s".into(),
                    key: "k".into(),
                },
                "couldn't find key k in Secret ns/s",
            ),
            (
                EnvError::UnsupportedFieldPath("status.phase".into()),
                "unsupported fieldPath: status.phase",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

    fn limited(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Option<ResourceRequirements> {
        let list = |l: &[(&str, &str)]| {
            (!l.is_empty()).then(|| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            })
        };
        Some(ResourceRequirements {
            requests: list(requests),
            limits: list(limits),
            ..Default::default()
        })
    }

    #[test]
    fn resource_field_refs() {
        let mut world = World::new("ns", Some(false)).without_services();
        let other = Container {
            name: "other".into(),
            resources: limited(&[("cpu", "100m")], &[("memory", "32Mi")]),
            ..Default::default()
        };
        world.pod.spec.as_mut().unwrap().containers = vec![other];
        let me = |env: Vec<EnvVar>| Container {
            name: "c".into(),
            env: Some(env),
            resources: limited(
                &[("cpu", "250m"), ("memory", "64Mi")],
                &[
                    ("cpu", "1500m"),
                    ("memory", "1500"),
                    ("ephemeral-storage", "1Gi"),
                ],
            ),
            ..Default::default()
        };
        let cases: Vec<(EnvVar, Result<&str, EnvError>)> = vec![
            (resource("V", "requests.cpu", None, None), Ok("1")),
            (resource("V", "requests.cpu", Some("1m"), None), Ok("250")),
            (resource("V", "requests.cpu", Some("0"), None), Ok("1")),
            (resource("V", "limits.cpu", None, None), Ok("2")),
            (resource("V", "limits.cpu", Some("100m"), None), Ok("15")),
            (resource("V", "requests.memory", None, None), Ok("67108864")),
            (
                resource("V", "requests.memory", Some("1Mi"), None),
                Ok("64"),
            ),
            (resource("V", "limits.memory", Some("1Ki"), None), Ok("2")),
            (resource("V", "limits.memory", Some("1k"), None), Ok("2")),
            (
                resource("V", "limits.ephemeral-storage", Some("1Mi"), None),
                Ok("1024"),
            ),
            (
                resource("V", "requests.ephemeral-storage", None, None),
                Ok("1073741824"),
            ),
            // Another container, by name: no cpu limit → node allocatable (4 cores).
            (resource("V", "limits.cpu", None, Some("other")), Ok("4")),
            (
                resource("V", "limits.memory", Some("1Mi"), Some("other")),
                Ok("32"),
            ),
            (
                resource("V", "requests.memory", None, Some("other")),
                Ok("33554432"),
            ),
            (
                resource("V", "limits.cpu", None, Some("ghost")),
                Err(EnvError::ContainerNotFound("ghost".into())),
            ),
            (
                resource("V", "limits.gpu", None, None),
                Err(EnvError::UnsupportedResource("limits.gpu".into())),
            ),
            (
                resource("V", "cpu", None, None),
                Err(EnvError::UnsupportedResource("cpu".into())),
            ),
            (
                resource("V", "requests.cpu", Some("one"), None),
                Err(EnvError::Quantity {
                    what: "divisor".into(),
                    source: QuantityError::NoDigits("one".into()),
                }),
            ),
        ];
        for (var, want) in cases {
            let r = var
                .value_from
                .as_ref()
                .unwrap()
                .resource_field_ref
                .clone()
                .unwrap();
            let got = container_env(&world.ctx(), &me(vec![var]));
            assert_eq!(got, want.map(|v| pairs(&[("V", v)])), "{r:?}");
        }

        // No limits at all: limits default to node allocatable (8Gi memory); without an
        // allocatable value the limit reads as 0.
        let bare = |env| Container {
            name: "c".into(),
            env: Some(env),
            ..Default::default()
        };
        let got = container_env(
            &world.ctx(),
            &bare(vec![
                resource("MEM", "limits.memory", Some("1Gi"), None),
                resource("EPH", "limits.ephemeral-storage", None, None),
                resource("REQ", "requests.cpu", None, None),
            ]),
        );
        assert_eq!(got, Ok(pairs(&[("MEM", "8"), ("EPH", "0"), ("REQ", "0")])));
        // A limit-only container: requests read the limit, as API defaulting sets them.
        let got = container_env(
            &world.ctx(),
            &Container {
                resources: limited(&[], &[("cpu", "2")]),
                ..bare(vec![resource("REQ", "requests.cpu", Some("1m"), None)])
            },
        );
        assert_eq!(got, Ok(pairs(&[("REQ", "2000")])));
    }

    #[test]
    fn expand_as_upstream() {
        // Upstream doExpansionTest, run against both a single and a split context.
        let vars: HashMap<&str, &str> = HashMap::from([
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
        ]);
        let cases: &[(&str, &str, &str)] = &[
            ("whole string", "$(VAR_A)", "A"),
            ("repeat", "$(VAR_A)-$(VAR_A)", "A-A"),
            ("beginning", "$(VAR_A)-1", "A-1"),
            ("middle", "___$(VAR_B)___", "___B___"),
            ("end", "___$(VAR_C)", "___C"),
            ("compound", "$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
            ("escape & expand", "$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
            (
                "compound escape",
                "$$(VAR_A)_$$(VAR_B)",
                "$(VAR_A)_$(VAR_B)",
            ),
            ("mixed in escapes", "f000-$$VAR_A", "f000-$VAR_A"),
            ("backslash escape ignored", "foo\\$(VAR_C)bar", "foo\\Cbar"),
            (
                "backslash escape ignored",
                "foo\\\\$(VAR_C)bar",
                "foo\\\\Cbar",
            ),
            (
                "lots of backslashes",
                "foo\\\\\\\\$(VAR_A)bar",
                "foo\\\\\\\\Abar",
            ),
            (
                "nested var references",
                "$(VAR_A$(VAR_B))",
                "$(VAR_A$(VAR_B))",
            ),
            (
                "nested var references second type",
                "$(VAR_A$(VAR_B)",
                "$(VAR_A$(VAR_B)",
            ),
            ("value is a reference", "$(VAR_REF)", "$(VAR_A)"),
            (
                "value is a reference x 2",
                "%%$(VAR_REF)--$(VAR_REF)%%",
                "%%$(VAR_A)--$(VAR_A)%%",
            ),
            ("empty var", "foo$(VAR_EMPTY)bar", "foobar"),
            (
                "unterminated expression",
                "foo$(VAR_Awhoops!",
                "foo$(VAR_Awhoops!",
            ),
            (
                "expression without operator",
                "f00__(VAR_A)__",
                "f00__(VAR_A)__",
            ),
            ("shell special vars pass through", "$?_boo_$!", "$?_boo_$!"),
            ("bare operators are ignored", "$VAR_A", "$VAR_A"),
            (
                "undefined vars are passed through",
                "$(VAR_DNE)",
                "$(VAR_DNE)",
            ),
            (
                "multiple (even) operators, var undefined",
                "$$$$$$(BIG_MONEY)",
                "$$$(BIG_MONEY)",
            ),
            (
                "multiple (even) operators, var defined",
                "$$$$$$(VAR_A)",
                "$$$(VAR_A)",
            ),
            (
                "multiple (odd) operators, var undefined",
                "$$$$$$$(GOOD_ODDS)",
                "$$$$(GOOD_ODDS)",
            ),
            (
                "multiple (odd) operators, var defined",
                "$$$$$$$(VAR_A)",
                "$$$A",
            ),
            ("missing open expression", "$VAR_A)", "$VAR_A)"),
            ("shell syntax ignored", "${VAR_A}", "${VAR_A}"),
            (
                "trailing incomplete expression not consumed",
                "$(VAR_B)_______$(A",
                "B_______$(A",
            ),
            (
                "trailing incomplete expression, no content, is not consumed",
                "$(VAR_C)_______$(",
                "C_______$(",
            ),
            (
                "operator at end of input string is preserved",
                "$(VAR_A)foobarzab$",
                "Afoobarzab$",
            ),
            (
                "shell escaped incomplete expr",
                "foo-\\$(VAR_A",
                "foo-\\$(VAR_A",
            ),
            ("lots of $( in middle", "--$($($($($--", "--$($($($($--"),
            (
                "lots of $( in beginning",
                "$($($($($--foo$(",
                "$($($($($--foo$(",
            ),
            ("lots of $( at end", "foo0--$($($($(", "foo0--$($($($("),
            (
                "escaped operators in variable names are not escaped",
                "$(foo$$var)",
                "$(foo$$var)",
            ),
            ("newline not expanded", "\n", "\n"),
            ("empty name", "$()", "$()"),
            ("non-ASCII around references", "é$(VAR_A)ü$ß", "éAü$ß"),
        ];
        let first: HashMap<&str, &str> = HashMap::from([("VAR_A", "A"), ("VAR_EMPTY", "")]);
        let second: HashMap<&str, &str> =
            HashMap::from([("VAR_B", "B"), ("VAR_C", "C"), ("VAR_REF", "$(VAR_A)")]);
        for &(name, input, want) in cases {
            assert_eq!(expand(input, |n| vars.get(n).copied()), want, "{name}");
            let dual = expand(input, |n| first.get(n).or_else(|| second.get(n)).copied());
            assert_eq!(dual, want, "{name} (dual)");
        }
    }

    #[test]
    fn command_and_args_expand_against_env() {
        let c = Container {
            name: "c".into(),
            command: Some(vec!["/bin/$(CMD)".into(), "$$(CMD)".into()]),
            args: Some(vec!["--port=$(PORT)".into(), "$(MISSING)".into()]),
            ..Default::default()
        };
        let env = pairs(&[("CMD", "sh"), ("PORT", "8080")]);
        let (command, args) = expand_command_and_args(&c, &env);
        assert_eq!(command, ["/bin/sh", "$(CMD)"]);
        assert_eq!(args, ["--port=8080", "$(MISSING)"]);
        let (command, args) = expand_command_and_args(&Container::default(), &env);
        assert!(command.is_empty() && args.is_empty());
    }

    #[test]
    fn referenced_objects_merges_optionality() {
        let mut pod = World::new("ns", None).pod;
        let spec = pod.spec.as_mut().unwrap();
        spec.init_containers = Some(vec![container(
            vec![
                cm_key("A", "shared", "k", Some(true)),
                secret_key("B", "init-secret", "k", None),
            ],
            vec![],
        )]);
        spec.containers = vec![
            container(
                vec![
                    cm_key("A", "shared", "k", None),
                    cm_key("C", "opt", "k", Some(true)),
                    lit("D", "x"),
                    field("E", "metadata.name"),
                ],
                vec![env_from_secret("from-secret", Some("p_"), Some(true))],
            ),
            container(
                vec![],
                vec![
                    env_from_cm("opt", None, Some(true)),
                    env_from_cm("req", None, None),
                ],
            ),
        ];
        let refs = referenced_objects(&pod);
        assert_eq!(
            refs.config_maps,
            BTreeMap::from([
                ("opt".to_string(), true),
                ("req".to_string(), false),
                ("shared".to_string(), false),
            ])
        );
        assert_eq!(
            refs.secrets,
            BTreeMap::from([
                ("from-secret".to_string(), true),
                ("init-secret".to_string(), false),
            ])
        );
        assert!(!refs.is_empty());
        assert!(referenced_objects(&Pod::default()).is_empty());
    }

    #[test]
    fn go_quoting() {
        let cases: &[(&str, &str)] = &[
            ("plain", "\"plain\""),
            ("a\"b\\c", "\"a\\\"b\\\\c\""),
            ("\n\t\r\u{7}\u{0}\u{7f}", "\"\\n\\t\\r\\a\\x00\\x7f\""),
            ("héllo", "\"héllo\""),
            ("\u{85}", "\"\\u0085\""),
        ];
        for &(input, want) in cases {
            assert_eq!(go_quote(input), want, "{input:?}");
        }
    }

    #[test]
    fn qualified_names() {
        let ok = [
            "a",
            "A",
            "1",
            "a.b-c_d",
            "example.com/name",
            "k8s.io/x",
            &"a".repeat(63),
        ];
        for name in ok {
            assert!(qualified_name_errors(name).is_empty(), "{name}");
        }
        let bad = [
            "",
            "-a",
            "a-",
            "a b",
            "/a",
            "a/",
            "Example.com/a",
            &"a".repeat(64),
            "a/b/c",
        ];
        for name in bad {
            assert!(!qualified_name_errors(name).is_empty(), "{name}");
        }
    }
}
