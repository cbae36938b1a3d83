#!/usr/bin/env python3
"""Writes Sources/API/APIServer/ProtobufSchema.swift: the protobuf field numbers of the built-in
objects kubectl's generators send, from the generated.proto files of kubernetes/api and
kubernetes/apimachinery (at the commits named in the output). Usage:

  scripts/gen-protobuf-schema.py API_REPO APIMACHINERY_REPO > Sources/API/APIServer/ProtobufSchema.swift

where each REPO is a checkout (or bare clone) of that repository."""
import re, subprocess, sys

api, machinery = sys.argv[1], sys.argv[2]
files = [(api, "core/v1/generated.proto", "k8s.io.api.core.v1"),
         (api, "apps/v1/generated.proto", "k8s.io.api.apps.v1"),
         (api, "rbac/v1/generated.proto", "k8s.io.api.rbac.v1"),
         (api, "authorization/v1/generated.proto", "k8s.io.api.authorization.v1"),
         (api, "authentication/v1/generated.proto", "k8s.io.api.authentication.v1"),
         (api, "certificates/v1/generated.proto", "k8s.io.api.certificates.v1"),
         (api, "networking/v1/generated.proto", "k8s.io.api.networking.v1"),
         (machinery, "pkg/apis/meta/v1/generated.proto", "k8s.io.apimachinery.pkg.apis.meta.v1"),
         (machinery, "pkg/runtime/generated.proto", "k8s.io.apimachinery.pkg.runtime"),
         (machinery, "pkg/util/intstr/generated.proto", "k8s.io.apimachinery.pkg.util.intstr"),
         (machinery, "pkg/api/resource/generated.proto", "k8s.io.apimachinery.pkg.api.resource")]

def show(repo, path):
    return subprocess.run(["git", "-C", repo, "show", "HEAD:" + path], check=True, capture_output=True, text=True).stdout

def head(repo):
    return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()

messages = {}   # qualified name -> [(number, name, label, type)]
for repo, path, pkg in files:
    text = show(repo, path)
    depth, current = 0, []
    for line in text.splitlines():
        line = line.split("//")[0].strip()
        m = re.match(r"message (\w+) \{", line)
        if m:
            current.append(m.group(1))
            messages[pkg + "." + ".".join(current)] = []
            continue
        if line == "}" and current:
            current.pop()
            continue
        m = re.match(r"(optional|repeated)?\s*(map<\s*\w+\s*,\s*[\w.]+\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)", line)
        if m and current:
            label, typ, name, num = m.groups()
            messages[pkg + "." + ".".join(current)].append((int(num), name, label or "", typ.replace(" ", ""), pkg))

def resolve(typ, pkg):
    typ = typ.lstrip(".")
    if typ in ("string", "int32", "int64", "bool", "bytes", "double"):
        return typ
    if typ in messages: return typ
    if pkg + "." + typ in messages: return pkg + "." + typ
    raise SystemExit(f"unknown type {typ} in {pkg}")

special = {"k8s.io.apimachinery.pkg.apis.meta.v1.Time": "time", "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "time",
           "k8s.io.apimachinery.pkg.api.resource.Quantity": "quantity",
           "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "intorstring",
           "k8s.io.apimachinery.pkg.runtime.RawExtension": "raw",
           # `extra`'s values: a message of one repeated string, a plain list in JSON.
           "k8s.io.api.authorization.v1.ExtraValue": "strings", "k8s.io.api.authentication.v1.ExtraValue": "strings",
           "k8s.io.api.certificates.v1.ExtraValue": "strings"}
roots = ["k8s.io.api.core.v1." + n for n in ["ConfigMap", "Secret", "Namespace", "Service", "Pod", "ServiceAccount", "Endpoints"]] + \
        ["k8s.io.api.apps.v1." + n for n in ["Deployment", "ReplicaSet"]] + \
        ["k8s.io.api.rbac.v1." + n for n in ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"]] + \
        ["k8s.io.api.authorization.v1." + n for n in ["SelfSubjectAccessReview", "SubjectAccessReview", "LocalSubjectAccessReview", "SelfSubjectRulesReview"]] + \
        ["k8s.io.api.authentication.v1." + n for n in ["SelfSubjectReview", "TokenReview", "TokenRequest"]] + \
        ["k8s.io.api.certificates.v1." + n for n in ["CertificateSigningRequest"]] + \
        ["k8s.io.api.networking.v1." + n for n in ["Ingress", "IngressClass"]]

# Fields whose JSON name differs from their protobuf name (Go's json tag against protobuf's name=).
json_names = {"uID": "uid", "aPIGroup": "apiGroup"}
# Embedded structs Go writes inline (`json:",inline"`): their fields are the parent's in JSON;
# the name `-` says so.
inline = {("k8s.io.api.networking.v1.IngressRule", "ingressRuleValue")}

needed, queue = {}, list(roots)
while queue:
    q = queue.pop()
    if q in needed or q in special: continue
    fields = []
    for num, name, label, typ, pkg in messages[q]:
        mm = re.match(r"map<(\w+),([\w.]+)>", typ)
        if mm:
            v = mm.group(2)
            v = v if v in ("string", "bytes") else special.get(resolve(v, pkg)) or resolve(v, pkg)
            fields.append(f"{num} {name} map:{v}")
            continue
        t = resolve(typ, pkg)
        if t in special:
            k = special[t]
        elif t in messages:
            k = "m:" + t.split(".")[-1]
            queue.append(t)
        else:
            k = t
        jname = "-" if (q, name) in inline else json_names.get(name, name)
        fields.append(f"{num} {jname} {'[]' if label == 'repeated' else ''}{k}")
    needed[q] = fields

names = {}
for q in needed:
    s = q.split(".")[-1]
    if s in names and names[s] != q: raise SystemExit(f"two messages named {s}: {names[s]} and {q}")
    names[s] = q

print("// Generated by scripts/gen-protobuf-schema.py from kubernetes/api " + head(api)[:12] +
      " and kubernetes/apimachinery " + head(machinery)[:12] + ". Do not edit.")
print("// Each message: `number jsonName kind` per field; kind is string, int32, int64, bool, bytes,")
print("// double, time, quantity, intorstring, raw, m:Message, map:ValueKind, with [] for repeated.")
print("")
print("extension KubeProtobuf {")
print("    static let schemaText: [String: String] = [")
for q in sorted(needed, key=lambda q: q.split(".")[-1]):
    print(f'        "{q.split(".")[-1]}": "{";".join(needed[q])}",')
print("    ]")
print("}")
