#!/usr/bin/env python3
"""Fails when the Helm chart's rendering drifts from the kustomize base's.

Usage: chart-drift.py KUSTOMIZE.yaml HELM.yaml

KUSTOMIZE.yaml is `kubectl kustomize manifests/`; HELM.yaml is `helm template` of
charts/keyward with its default values plus namespace.create=true, in namespace
keyward-system, with --include-crds. Every object of the kustomize base must be in the
chart's rendering (same kind, namespace and name) with:

- the same spec (Deployment, PodDisruptionBudget, Service, CRD), rules (ClusterRole, Role),
  roleRef and subjects (bindings): container args, ports, probes, env, security contexts,
  resources, selectors and strategy included;
- at least the same labels (Helm adds its own) on the object and the pod template.

Objects only the chart renders (Helm's optional ones) are listed, not refused.
"""

import json
import sys

import yaml


def load(path):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}


def without_template_labels(spec):
    """The spec with the pod template's labels left out (compared as a subset)."""
    spec = json.loads(json.dumps(spec))
    spec.get("template", {}).get("metadata", {}).pop("labels", None)
    return spec


def diff(path, a, b, out):
    """Every path where a (kustomize) and b (helm) differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff(f"{path}.{key}", a.get(key), b.get(key), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff(f"{path}[{i}]", x, y, out)
    elif a != b:
        out.append(f"{path}: kustomize {json.dumps(a)} != helm {json.dumps(b)}")


def missing_labels(path, want, have, out):
    for key, value in (want or {}).items():
        if (have or {}).get(key) != value:
            out.append(f"{path}: label {key}={value} missing (helm has {(have or {}).get(key)!r})")


COMPARED = {
    "Namespace": [],
    "ServiceAccount": [],
    "CustomResourceDefinition": ["spec"],
    "ClusterRole": ["rules"],
    "Role": ["rules"],
    "ClusterRoleBinding": ["roleRef", "subjects"],
    "RoleBinding": ["roleRef", "subjects"],
    "Deployment": ["spec"],
    "PodDisruptionBudget": ["spec"],
    "Service": ["spec"],
    "ValidatingAdmissionPolicy": ["spec"],
    "ValidatingAdmissionPolicyBinding": ["spec"],
}


def main():
    kustomize, helm = load(sys.argv[1]), load(sys.argv[2])
    problems = []
    for key, want in sorted(kustomize.items()):
        kind = key[0]
        where = "/".join(p for p in key if p)
        have = helm.get(key)
        if have is None:
            problems.append(f"{where}: rendered by kustomize, not by the chart")
            continue
        if kind not in COMPARED:
            problems.append(f"{where}: kind {kind} is new to the kustomize base; teach tools/chart-drift.py to compare it")
            continue
        missing_labels(f"{where}.metadata", want["metadata"].get("labels"), have["metadata"].get("labels"), problems)
        for field in COMPARED[kind]:
            a, b = want.get(field), have.get(field)
            if kind == "Deployment":
                missing_labels(
                    f"{where}.spec.template.metadata",
                    a["template"]["metadata"].get("labels"),
                    b["template"]["metadata"].get("labels"),
                    problems,
                )
                a, b = without_template_labels(a), without_template_labels(b)
            diff(f"{where}.{field}", a, b, problems)
    extra = sorted("/".join(p for p in key if p) for key in set(helm) - set(kustomize))
    compared = len(kustomize)
    if problems:
        print(f"the chart drifts from the kustomize base ({len(problems)} differences):")
        for p in problems:
            print(f"  {p}")
        sys.exit(1)
    print(f"chart matches the kustomize base: {compared} objects compared", end="")
    print(f"; only in the chart: {', '.join(extra)}" if extra else "")


if __name__ == "__main__":
    main()
