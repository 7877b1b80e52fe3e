#!/usr/bin/env python3
"""Writes manifests/classes/policy.yaml (and the Helm chart's copy): the ValidatingAdmissionPolicy (and its binding)
that enforces ApiKeyClasses at admission. Its rules and messages are those of
src/plan/class.rs; tests/classes/cases.yaml holds both to one table of cases
(tests/classes.rs for the Rust rules, tests/real_cluster_classes.rs for this policy on
the real API server). Run from the repository root: python3 tools/class-policy.py
With --check it writes nothing and fails when either file differs from what it would write
(`make manifests-check` runs it, so an edit of the YAML by hand cannot drift from this table).
"""
import json
import sys

# Whole seconds of a duration string, days included: CEL has no day unit
# (keyward_contract::duration::CEL_SECONDS_MACRO, the same expression as the CRD's rules).
SECONDS = "(X.endsWith('d') ? int(X.substring(0, X.size() - 1)) * 86400 : duration(X).getSeconds())"


def sec(path):
    return SECONDS.replace("X", path)


C = "'ApiKeyClass ' + params.metadata.name + "
MR = "params.spec.maxRateLimit"
RATE = "variables.rate"

VARIABLES = [
    ("isDefault", "has(params.metadata.annotations) && 'apikeyclass.keyward.dev/is-default-class' in params.metadata.annotations && params.metadata.annotations['apikeyclass.keyward.dev/is-default-class'] == 'true'"),
    ("applies", "has(object.spec.className) ? object.spec.className == params.metadata.name : variables.isDefault"),
    ("prefix", "has(object.spec.prefix) ? object.spec.prefix : 'kw'"),
    ("keySet", "has(object.spec.keySet) ? object.spec.keySet : 'default'"),
    ("rate", "has(object.spec.rateLimit) ? object.spec.rateLimit : has(params.spec.defaultRateLimit) ? params.spec.defaultRateLimit : null"),
    ("nsLabels", "has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}"),
    ("deniedScopes", "object.spec.scopes.filter(s, !params.spec.allowedScopes.exists(r, (r.resource == '*' || r.resource == s.substring(0, s.lastIndexOf(':')) || (r.resource.endsWith('*') && s.startsWith(r.resource.substring(0, r.resource.size() - 1)))) && (r.actions.exists(a, a == 'admin' || a == s.substring(s.lastIndexOf(':') + 1)))))"),
]

# (rule, expression, messageExpression, message), in the order of src/plan/class.rs.
VALIDATIONS = [
    ("allowedScopes",
     "!variables.applies || !has(params.spec.allowedScopes) || size(variables.deniedScopes) == 0",
     C + "' (allowedScopes): not allowed: ' + variables.deniedScopes.join(', ')",
     "a scope of the key is not allowed by its ApiKeyClass (allowedScopes)"),
    ("maxLifetime",
     "!variables.applies || !has(params.spec.maxLifetime) || (has(object.spec.expiresAt) && (timestamp(object.spec.expiresAt) - timestamp(object.metadata.creationTimestamp)).getSeconds() <= " + sec("params.spec.maxLifetime") + ")",
     C + "' (maxLifetime): expiresAt is required, at most ' + params.spec.maxLifetime + ' after the key was created'",
     "expiresAt is missing or too far ahead for the key's ApiKeyClass (maxLifetime)"),
    ("maxRotationInterval",
     "!variables.applies || !has(params.spec.maxRotationInterval) || (has(object.spec.rotation) && has(object.spec.rotation.every) && " + sec("object.spec.rotation.every") + " <= " + sec("params.spec.maxRotationInterval") + ")",
     C + "' (maxRotationInterval): rotation.every is required, at most ' + params.spec.maxRotationInterval",
     "rotation.every is missing or too long for the key's ApiKeyClass (maxRotationInterval)"),
    ("maxGracePeriod",
     "!variables.applies || !has(params.spec.maxGracePeriod) || !has(object.spec.rotation) || (has(object.spec.rotation.gracePeriod) ? " + sec("object.spec.rotation.gracePeriod") + " : 3600) <= " + sec("params.spec.maxGracePeriod"),
     C + "' (maxGracePeriod): rotation.gracePeriod (1h when absent) must be at most ' + params.spec.maxGracePeriod",
     "rotation.gracePeriod is too long for the key's ApiKeyClass (maxGracePeriod)"),
    ("maxRateLimit",
     "!variables.applies || !has(params.spec.maxRateLimit) || (variables.rate != null && " + RATE + ".requests * " + sec(MR + ".period") + " <= " + MR + ".requests * " + sec(RATE + ".period") + " && (has(" + RATE + ".burst) ? " + RATE + ".burst : " + RATE + ".requests) <= (has(" + MR + ".burst) ? " + MR + ".burst : " + MR + ".requests))",
     C + "' (maxRateLimit): rateLimit (or the class defaultRateLimit) is required, at most ' + string(" + MR + ".requests) + ' per ' + " + MR + ".period + ' with a burst of at most ' + string(has(" + MR + ".burst) ? " + MR + ".burst : " + MR + ".requests)",
     "rateLimit is missing or above the key's ApiKeyClass maximum (maxRateLimit)"),
    ("allowedPrefixes",
     "!variables.applies || !has(params.spec.allowedPrefixes) || variables.prefix in params.spec.allowedPrefixes",
     C + "' (allowedPrefixes): prefix ' + variables.prefix + ' is not allowed'",
     "the token prefix is not allowed by the key's ApiKeyClass (allowedPrefixes)"),
    ("allowedKeySets",
     "!variables.applies || !has(params.spec.allowedKeySets) || variables.keySet in params.spec.allowedKeySets",
     C + "' (allowedKeySets): key set ' + variables.keySet + ' is not allowed'",
     "the key set is not allowed by the key's ApiKeyClass (allowedKeySets)"),
    ("namespaceSelector",
     "!variables.applies || !has(params.spec.namespaceSelector) || ((!has(params.spec.namespaceSelector.matchLabels) || params.spec.namespaceSelector.matchLabels.all(k, k in variables.nsLabels && variables.nsLabels[k] == params.spec.namespaceSelector.matchLabels[k])) && (!has(params.spec.namespaceSelector.matchExpressions) || params.spec.namespaceSelector.matchExpressions.all(e, e.operator == 'In' ? (e.key in variables.nsLabels && has(e.values) && variables.nsLabels[e.key] in e.values) : e.operator == 'NotIn' ? !(e.key in variables.nsLabels && has(e.values) && variables.nsLabels[e.key] in e.values) : e.operator == 'Exists' ? e.key in variables.nsLabels : e.operator == 'DoesNotExist' ? !(e.key in variables.nsLabels) : false)))",
     C + "' (namespaceSelector): namespace ' + namespaceObject.metadata.name + ' is not selected by the class'",
     "the namespace is not selected by the key's ApiKeyClass (namespaceSelector)"),
]

HEADER = """# Generated by tools/class-policy.py from the rules of src/plan/class.rs; do not edit by hand.
# ApiKeyClass enforcement at admission, by the API server itself (no webhook):
# every ApiKeyClass is a parameter of this policy (the binding selects them all),
# and each rule applies only for the class the ApiKey names in spec.className, or,
# when it names none, for the class annotated
# apikeyclass.keyward.dev/is-default-class: "true". The policy passes only if it
# passes for every class, so each rule starts with `!variables.applies ||`.
# Updates that leave spec alone (labels, finalizers, deletion) are not checked, so
# a key that broke its class after the class tightened can still be deleted;
# the operator re-checks stored keys (docs/classes.md).
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: keyward-apikey-class
spec:
  failurePolicy: Fail
  paramKind:
    apiVersion: keyward.dev/v1alpha1
    kind: ApiKeyClass
  matchConstraints:
    resourceRules:
      - apiGroups: [keyward.dev]
        apiVersions: [v1alpha1]
        resources: [apikeys]
        operations: [CREATE, UPDATE]
  matchConditions:
    - name: spec-written
      expression: request.operation == 'CREATE' || object.spec != oldObject.spec
  variables:"""

BINDING = """---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: keyward-apikey-class
spec:
  policyName: keyward-apikey-class
  validationActions: [Deny]
  paramRef:
    selector: {}
    parameterNotFoundAction: Allow
"""


def main():
    out = [HEADER]
    for name, expression in VARIABLES:
        out.append(f"    - name: {name}\n      expression: {json.dumps(expression)}")
    out.append("  validations:")
    for rule, expression, message_expression, message in VALIDATIONS:
        out.append(f"    # {rule}\n    - expression: {json.dumps(expression)}\n"
                   f"      messageExpression: {json.dumps(message_expression)}\n      message: {json.dumps(message)}")
    out.append(BINDING)
    text = "\n".join(out)
    # The kustomize base and the Helm chart carry the same objects (tools/chart-drift.py).
    paths = ("manifests/classes/policy.yaml", "charts/keyward/templates/classes-policy.yaml")
    if sys.argv[1:] == ["--check"]:
        stale = [path for path in paths if open(path).read() != text]
        for path in stale:
            print(f"{path} differs from what tools/class-policy.py writes: run python3 tools/class-policy.py")
        return 1 if stale else 0
    if sys.argv[1:]:
        print("usage: python3 tools/class-policy.py [--check]", file=sys.stderr)
        return 2
    for path in paths:
        with open(path, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
