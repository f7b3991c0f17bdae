#!/usr/bin/env python3
"""Regenerates the message table in controlplane/src/api/protobuf_schema.rs.

Usage (k8s-pb source from the cargo registry, e.g. after `cargo add k8s-pb` in a scratch crate):
    python3 tools/gen_protobuf_schema.py ~/.cargo/registry/src/*/k8s-pb-0.9.0/src > /tmp/table.txt
then replace the lines between `pub static MESSAGES ... = &[` and `];` with /tmp/table.txt.
Field names are converted to the JSON (camelCase) names, with Kubernetes acronyms restored.
"""
import re, os, sys
root = sys.argv[1]
msgs = {}
def modkey(parts):
    p = "::".join(parts)
    m = {"api::core::v1":"core/v1","api::apps::v1":"apps/v1","api::batch::v1":"batch/v1","api::policy::v1":"policy/v1",
         "api::networking::v1":"networking/v1","api::coordination::v1":"coordination/v1","api::autoscaling::v2":"autoscaling/v2",
         "api::autoscaling::v1":"autoscaling/v1","api::discovery::v1":"discovery/v1","api::events::v1":"events/v1",
         "api::storage::v1":"storage/v1","api::rbac::v1":"rbac/v1",
         "api::authorization::v1":"authorization/v1","api::authentication::v1":"authentication/v1",
         "apimachinery::pkg::apis::meta::v1":"meta/v1","apimachinery::pkg::api::resource":"resource",
         "apimachinery::pkg::util::intstr":"intstr","apimachinery::pkg::runtime":"runtime"}
    return m.get(p)
for dp, dn, fn in os.walk(root):
    for f in fn:
        if f != "mod.rs": continue
        path = os.path.join(dp, f)
        mod = os.path.relpath(dp, root).split(os.sep)
        mk = modkey(mod)
        if mk is None: continue
        lines = open(path).read().split("\n")
        i = 0
        cur = None
        while i < len(lines):
            l = lines[i]
            m = re.match(r'pub struct (\w+) \{', l.strip())
            if m:
                cur = mk + "." + m.group(1); msgs[cur] = []
            elif l.strip() == "}":
                cur = None
            a = re.match(r'\s*#\[prost\((.*)\)\]\s*$', l)
            if a and cur:
                attr = a.group(1)
                j = i + 1; decl = ""
                while True:
                    s = lines[j].strip()
                    if s.startswith("///") or s.startswith("#["):
                        j += 1; continue
                    decl += s
                    if decl.count("<") == decl.count(">") and decl.endswith(","):
                        break
                    j += 1
                dm = re.match(r'pub (r#)?(\w+):\s*(.*),$', decl)
                name, ty = dm.group(2), dm.group(3)
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                repeated = "repeated" in attr
                kind = attr.split(",")[0].strip()
                def resolve(t):
                    t = re.sub(r',\s*>', '>', t.strip()).rstrip(",").strip()
                    for w in ["::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"]:
                        while t.startswith(w): t = t[len(w):-1].strip()
                    parts = t.split("::")
                    base = list(mod)
                    while parts and parts[0] == "super":
                        base.pop(); parts.pop(0)
                    if len(parts) == 1:
                        return mk + "." + parts[0]
                    mp = base + parts[:-1]
                    k = modkey(mp)
                    return (k or "::".join(mp)) + "." + parts[-1]
                if kind.startswith("btree_map") or kind.startswith("map"):
                    spec = re.search(r'map = "([^"]+)"', attr).group(1)
                    v = spec.split(",")[1].strip()
                    if v == "string": t = 'T::MapS'
                    elif v == "bytes": t = 'T::MapY'
                    else:
                        inner = ty[ty.index(",")+1:].rstrip(">").strip()
                        t = 'T::MapM("%s")' % resolve(inner.rstrip(",").strip().rstrip(">"))
                elif kind == "string": t = "T::S"
                elif kind in ("int32","int64","uint32","uint64","sint32","sint64"): t = "T::I"
                elif kind == "bool": t = "T::B"
                elif kind in ("double","float"): t = "T::D"
                elif kind.startswith("bytes"): t = "T::Y"
                elif kind == "message": t = 'T::M("%s")' % resolve(ty)
                else: raise Exception(attr)
                def camel(n):
                    p = n.split("_"); s = p[0] + "".join(x[:1].upper()+x[1:] for x in p[1:])
                    for a, b in [("Ips","IPs"),("Ip","IP"),("Pid","PID"),("Ipc","IPC"),("Url","URL"),("Uri","URI"),("Id","ID"),("Cidrs","CIDRs"),("Cidr","CIDR")]:
                        s = re.sub(a + r'(?=[A-Z]|$)', b, s)
                    return s
                msgs[cur].append((tag, camel(name), t, repeated))
                i = j
            i += 1
roots = ["core/v1."+k for k in "Namespace ConfigMap Secret Service ServiceAccount ResourceQuota LimitRange Pod Endpoints Node Event PersistentVolume PersistentVolumeClaim Binding".split()]
roots += ["apps/v1."+k for k in "Deployment ReplicaSet StatefulSet DaemonSet".split()]
roots += ["core/v1.ReplicationController","batch/v1.CronJob","apps/v1.ControllerRevision","discovery/v1.EndpointSlice","events/v1.Event","storage/v1.StorageClass"]
roots += ["rbac/v1."+k for k in "Role ClusterRole RoleBinding ClusterRoleBinding".split()]
roots += ["authorization/v1."+k for k in "SelfSubjectAccessReview SelfSubjectRulesReview SubjectAccessReview LocalSubjectAccessReview".split()]
roots += ["authentication/v1."+k for k in "TokenRequest TokenReview SelfSubjectReview".split()]
roots += ["batch/v1.Job","policy/v1.PodDisruptionBudget","networking/v1.Ingress","coordination/v1.Lease","autoscaling/v2.HorizontalPodAutoscaler","autoscaling/v1.Scale","runtime.Unknown"]
seen = []
stack = list(roots)
special = {"meta/v1.Time","meta/v1.MicroTime","resource.Quantity","intstr.IntOrString","meta/v1.Duration","runtime.RawExtension","meta/v1.FieldsV1"}
while stack:
    k = stack.pop()
    if k in seen: continue
    if k not in msgs: raise Exception("missing " + k)
    seen.append(k)
    if k in special: continue
    for (_, _, t, _) in msgs[k]:
        m = re.search(r'"([^"]+)"', t)
        if m: stack.append(m.group(1))
seen.sort()
out = []
for k in seen:
    fs = ", ".join('F(%d, "%s", %s, %s)' % (tag, n, t, "true" if r else "false") for (tag, n, t, r) in msgs[k])
    out.append('    ("%s", &[%s]),' % (k, fs))
print("\n".join(out))
print(len(seen), file=sys.stderr)
