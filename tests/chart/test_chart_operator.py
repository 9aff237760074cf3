"""The operator Deployment and its least-privilege RBAC, per watchNamespace."""

from chartlib import FULLNAME, NAMESPACE, SCENARIOS, render

OPERATOR_SA = f"{FULLNAME}-operator"

# (apiGroup, resource) -> verbs the operator needs (see the operator spec and its code).
NEEDED_WHERE_WATCHED = {
    ("rollcall.dev", "presencenamespaces"): {"get", "list", "watch", "patch", "update"},
    ("rollcall.dev", "presencenamespaces/status"): {"get", "patch", "update"},
    ("rollcall.dev", "presencenamespaces/finalizers"): {"update"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "update"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
NEEDED_IN_OWN_NAMESPACE = {("coordination.k8s.io", "leases"): {"get", "create", "update", "patch"}}


def granted(manifests, namespace):
    """(apiGroup, resource) -> verbs the operator's ServiceAccount gets in `namespace`, with the
    resourceNames of each grant ("*" standing for unrestricted)."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in manifests if d["kind"] in ("Role", "ClusterRole")}
    out = {}
    for b in manifests:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == OPERATOR_SA and s["namespace"] == NAMESPACE
                   for s in b["subjects"]):
            continue
        if b["kind"] == "RoleBinding" and b["metadata"]["namespace"] != namespace:
            continue
        ref = b["roleRef"]
        role_ns = None if ref["kind"] == "ClusterRole" else b["metadata"]["namespace"]
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        assert role is not None, f"{b['kind']}/{b['metadata']['name']} refers to a missing {ref['kind']}/{ref['name']}"
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        for name in rule.get("resourceNames", ["*"]):
                            out.setdefault((g, r), {}).setdefault(v, set()).add(name)
    return out


def assert_covers(grants, needed, where):
    for key, verbs in needed.items():
        have = set(grants.get(key, {}))
        assert verbs <= have, f"{where}: {key} lacks {sorted(verbs - have)} (has {sorted(have)})"


def test_no_wildcards_anywhere():
    for scenario in ("default", "operator-cluster-wide", "operator-other-namespace"):
        for d in render(SCENARIOS[scenario]):
            if d["kind"] in ("Role", "ClusterRole"):
                for rule in d["rules"]:
                    for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                        assert "*" not in rule.get(field, []), f"{scenario}: wildcard in {d['kind']}/{d['metadata']['name']}: {rule}"
                        assert not any("*" in x for x in rule.get(field, [])), rule


def test_default_role_in_the_release_namespace():
    m = render()
    m.none("ClusterRole")
    m.none("ClusterRoleBinding")
    grants = granted(m, NAMESPACE)
    assert_covers(grants, NEEDED_WHERE_WATCHED, NAMESPACE)
    assert_covers(grants, NEEDED_IN_OWN_NAMESPACE, NAMESPACE)
    # Nothing beyond what it needs.
    assert set(grants) == set(NEEDED_WHERE_WATCHED) | set(NEEDED_IN_OWN_NAMESPACE)
    # Writes to ConfigMaps and the Lease are limited to the operator's own objects.
    assert grants[("", "configmaps")]["patch"] == {f"{FULLNAME}-namespaces"}
    assert grants[("", "configmaps")]["get"] == {f"{FULLNAME}-namespaces"}
    assert grants[("coordination.k8s.io", "leases")]["update"] == {f"{FULLNAME}-operator"}
    args = operator_args(m)
    assert args[args.index("--lease-name") + 1] == f"{FULLNAME}-operator"


def test_cluster_wide_uses_a_cluster_role():
    m = render(SCENARIOS["operator-cluster-wide"])
    cr = m.one("ClusterRole")
    crb = m.one("ClusterRoleBinding")
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cr["metadata"]["name"]}
    assert cr["metadata"]["name"] == f"{NAMESPACE}-{FULLNAME}-operator", "unique per release and namespace"
    for ns in (NAMESPACE, "some-other-namespace"):
        assert_covers(granted(m, ns), NEEDED_WHERE_WATCHED, ns)
    # The Lease stays a namespaced grant in the release namespace.
    assert_covers(granted(m, NAMESPACE), NEEDED_IN_OWN_NAMESPACE, NAMESPACE)
    assert ("coordination.k8s.io", "leases") not in granted(m, "some-other-namespace")
    assert not any(r["apiGroups"] == ["coordination.k8s.io"] for r in cr["rules"])
    args = operator_args(m)
    assert args[args.index("--watch-namespace") + 1] == "all"
    assert args[args.index("--selector") + 1] == "team=chat"
    assert m.one("Deployment", component="operator")["spec"]["replicas"] == 2


def test_other_namespace_gets_a_role_there():
    m = render(SCENARIOS["operator-other-namespace"])
    m.none("ClusterRole")
    m.none("ClusterRoleBinding")
    assert_covers(granted(m, "apps"), NEEDED_WHERE_WATCHED, "apps")
    assert ("rollcall.dev", "presencenamespaces") not in granted(m, NAMESPACE)
    assert_covers(granted(m, NAMESPACE), NEEDED_IN_OWN_NAMESPACE, NAMESPACE)
    args = operator_args(m)
    assert args[args.index("--watch-namespace") + 1] == "apps"


def operator_args(m):
    dep = m.one("Deployment", component="operator")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["rollcall"] and c["args"][0] == "operator"
    return c["args"]


def test_operator_deployment():
    m = render()
    dep = m.one("Deployment", component="operator")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = operator_args(m)
    assert args[args.index("--watch-namespace") + 1] == NAMESPACE
    assert args[args.index("--configmap-name") + 1] == f"{FULLNAME}-namespaces"
    assert args[args.index("--metrics-port") + 1] == "8080"
    assert "--selector" not in args
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert pod["serviceAccountName"] == OPERATOR_SA
    m.one("ServiceAccount", name=OPERATOR_SA)
    # Same image as the server by default.
    assert c["image"] == m.server_container["image"]
    assert dep["spec"]["replicas"] == 1


def test_operator_image_override():
    m = render(SCENARIOS["kitchen-sink"])
    c = m.one("Deployment", component="operator")["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "registry.example.com/rollcall-operator:0.1.1"


def test_operator_disabled_renders_none_of_it():
    m = render(SCENARIOS["operator-disabled"])
    for kind in ("Deployment", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        m.none(kind, component="operator")
    # The server still mounts the (optional) namespaces ConfigMap, e.g. written by hand.
    vols = {v["name"]: v for v in m.server_pod["spec"]["volumes"]}
    assert vols["namespaces"]["configMap"]["optional"] is True


def test_rbac_can_be_left_to_an_administrator():
    m = render({"operator": {"rbac": {"create": False}}})
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        m.none(kind)
    m.one("Deployment", component="operator")
