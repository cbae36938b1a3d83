"""The official Python client's dynamic client against a custom resource: install the
definition, wait until it is established, create, list, patch, apply, watch and delete custom
objects, then the definition. Prints one JSON document of what it saw.

Usage: python3 dynamic_crd.py KUBECONFIG CRD_YAML"""
import json
import sys
import time

import yaml
from kubernetes import client, config, dynamic, watch

config.load_kube_config(config_file=sys.argv[1])
api = client.ApiClient()
dyn = dynamic.DynamicClient(api)
seen = {}

crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
with open(sys.argv[2]) as f:
    dyn.create(crds, body=yaml.safe_load(f))
for _ in range(50):
    got = dyn.get(crds, name="crontabs.stable.example.com")
    if any(c.type == "Established" and c.status == "True" for c in (got.status.conditions or [])):
        break
    time.sleep(0.1)
seen["established"] = True

crontabs = dyn.resources.get(api_version="stable.example.com/v1", kind="CronTab")
dyn.create(crontabs, namespace="default", body={"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                                              "metadata": {"name": "py-a"}, "spec": {"cronSpec": "*/5 * * * *", "image": "busybox"}})
created = dyn.get(crontabs, namespace="default", name="py-a")
seen["defaultedReplicas"] = created.spec.replicas
dyn.patch(crontabs, namespace="default", name="py-a", body={"spec": {"replicas": 3}}, content_type="application/merge-patch+json")
dyn.server_side_apply(crontabs, namespace="default", field_manager="python",
                      body={"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                            "metadata": {"name": "py-b"}, "spec": {"cronSpec": "0 * * * *", "replicas": 2}})
listed = dyn.get(crontabs, namespace="default")
seen["names"] = sorted(i.metadata.name for i in listed.items)
seen["replicas"] = {i.metadata.name: i.spec.replicas for i in listed.items}
applied = dyn.get(crontabs, namespace="default", name="py-b")
seen["managers"] = [m.manager + "/" + m.operation for m in applied.metadata.managedFields]
try:
    dyn.create(crontabs, namespace="default", body={"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                                                  "metadata": {"name": "py-bad"}, "spec": {"cronSpec": "often", "replicas": 20}})
    seen["invalid"] = None
except client.exceptions.ApiException as e:
    seen["invalid"] = {"status": e.status, "message": json.loads(e.body)["message"]}

events = []
w = watch.Watch()
rv = listed.metadata.resourceVersion
dyn.delete(crontabs, namespace="default", name="py-a")
for event in dyn.watch(crontabs, namespace="default", resource_version=rv, timeout=3, watcher=w):
    events.append(event["type"] + " " + event["object"].metadata.name)
    if event["type"] == "DELETED":
        w.stop()
seen["events"] = events

dyn.delete(crds, name="crontabs.stable.example.com")
try:
    dyn.request("GET", "/apis/stable.example.com/v1/namespaces/default/crontabs")
    seen["afterDelete"] = 200
except client.exceptions.ApiException as e:
    seen["afterDelete"] = e.status
print(json.dumps(seen, sort_keys=True))
