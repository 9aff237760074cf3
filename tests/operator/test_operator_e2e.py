"""End-to-end: the real `rollcall operator` process against the API emulator, driven with kubectl.

Every test applies its own objects (distinct channel namespaces) in Kubernetes namespace `apps`,
checks the ConfigMap, statuses and Events the operator writes, and deletes what it made.
"""

from __future__ import annotations

import datetime
import json
import time

import yaml
from conftest import CONFIGMAP, NAMESPACE, Kubectl, wait_for


def pns(object_name: str, /, **spec) -> str:
    return json.dumps({"apiVersion": "rollcall.dev/v1alpha1", "kind": "PresenceNamespace",
                       "metadata": {"name": object_name, "namespace": NAMESPACE}, "spec": spec})


def namespaces_file(kubectl: Kubectl) -> dict:
    cm = kubectl.get("configmap", CONFIGMAP)
    assert cm is not None, "the operator has not written ConfigMap rollcall-namespaces"
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rollcall-operator"
    return yaml.safe_load(cm["data"]["namespaces.yaml"])


def entry(kubectl: Kubectl, channel_ns: str) -> dict | None:
    return next((n for n in namespaces_file(kubectl)["namespaces"] if n["name"] == channel_ns), None)


def ready(kubectl: Kubectl, name: str) -> dict | None:
    obj = kubectl.get("pns", name)
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), None)


def wait_ready(kubectl: Kubectl, operator, name: str, status: str, reason: str) -> dict:
    """Waits for the Ready condition of the object's current generation."""
    def check():
        obj = kubectl.get("pns", name)
        cond = next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
        if cond and (cond["status"], cond["reason"]) == (status, reason) \
                and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]:
            return obj
        return None
    return wait_for(f"{name} Ready={status}/{reason}", check, on_fail=lambda: operator.log()[-3000:])


def delete(kubectl: Kubectl, *names: str) -> None:
    # kubectl waits for the object to be gone, i.e. for the operator to drop its finalizer.
    kubectl.run("delete", "pns", *names, "--ignore-not-found", "--timeout=20s")


def next_second() -> None:
    """creationTimestamp has one-second resolution: makes the next object strictly younger."""
    now = datetime.datetime.now()
    time.sleep(1.05 - now.microsecond / 1e6)


def test_operator_is_ready_and_leads(operator, kubectl):
    assert operator.http("/health")[0] == 200
    assert operator.http("/ready")[0] == 200
    status, metrics = operator.http("/metrics")
    assert status == 200 and "rollcall_operator_leader 1" in metrics, metrics
    assert operator.lease["spec"]["leaseDurationSeconds"] > 0
    print(f"\noperator ready and leader {operator.became_leader_after:.2f} s after start")


def test_apply_renders_the_configmap_and_marks_ready(operator, kubectl):
    started = time.monotonic()
    kubectl.apply(pns("chat", presence=True, joinLeave=True, allowPresenceForSubscriber=True))
    obj = wait_ready(kubectl, operator, "chat", "True", "Applied")
    print(f"\napply -> Ready in {time.monotonic() - started:.2f} s")
    assert obj["status"]["channelNamespace"] == "chat"
    assert obj["metadata"]["finalizers"] == ["rollcall.dev/configmap"]
    assert ready(kubectl, "chat")["message"] == f"in ConfigMap {CONFIGMAP}"
    assert entry(kubectl, "chat") == {
        "name": "chat", "presence": True, "join_leave": True, "force_push_join_leave": False,
        "allow_presence_for_client": False, "allow_presence_for_subscriber": True,
        "allow_presence_for_anonymous": False, "allow_subscribe_for_client": False,
        "allow_subscribe_for_anonymous": False,
    }

    # A spec change is a new generation: rendered again, observedGeneration follows.
    kubectl.apply(pns("chat", presence=True, joinLeave=False, channelRegex="^[a-z]+$"))
    obj = wait_ready(kubectl, operator, "chat", "True", "Applied")
    assert obj["metadata"]["generation"] == 2 and obj["status"]["observedGeneration"] == 2
    wait_for("join_leave false in the ConfigMap", lambda: entry(kubectl, "chat")["join_leave"] is False)
    assert entry(kubectl, "chat")["channel_regex"] == "^[a-z]+$"

    # Re-applying the same object rewrites nothing: the ConfigMap is byte-stable.
    before = kubectl.get("configmap", CONFIGMAP)
    kubectl.apply(pns("chat", presence=True, joinLeave=False, channelRegex="^[a-z]+$", forcePushJoinLeave=False))
    kubectl.apply(pns("other-ns", presence=True))
    wait_ready(kubectl, operator, "other-ns", "True", "Applied")
    delete(kubectl, "other-ns")
    after = kubectl.get("configmap", CONFIGMAP)
    assert after["data"] == before["data"]
    delete(kubectl, "chat")


def test_events_on_transitions(operator, kubectl):
    kubectl.apply(pns("evented", presence=True))
    wait_ready(kubectl, operator, "evented", "True", "Applied")

    def reasons():
        events = kubectl.json("get", "events.v1.events.k8s.io")["items"]
        return [e["reason"] for e in events if e["regarding"]["name"] == "evented"]
    wait_for("an Applied event", lambda: "Applied" in reasons())
    delete(kubectl, "evented")
    wait_for("a Removed event", lambda: "Removed" in reasons())
    assert reasons().count("Applied") == 1, reasons()


def test_conflict_the_older_object_wins(operator, kubectl):
    # "z-older" sorts after "a-younger" by name: only its age can make it win.
    kubectl.apply(pns("z-older", name="room", presence=True))
    wait_ready(kubectl, operator, "z-older", "True", "Applied")
    next_second()
    kubectl.apply(pns("a-younger", name="room", presence=False, joinLeave=True))
    wait_ready(kubectl, operator, "a-younger", "False", "Conflict")
    assert '"z-older"' in ready(kubectl, "a-younger")["message"]
    assert entry(kubectl, "room")["presence"] is True
    assert ready(kubectl, "z-older")["status"] == "True"

    # The winner goes: the younger object takes the channel namespace over.
    delete(kubectl, "z-older")
    wait_ready(kubectl, operator, "a-younger", "True", "Applied")
    wait_for("room with the younger object's options", lambda: entry(kubectl, "room")["join_leave"] is True)
    delete(kubectl, "a-younger")


def test_deletion_removes_the_namespace_through_the_finalizer(operator, kubectl):
    kubectl.apply(pns("doomed", presence=True))
    wait_ready(kubectl, operator, "doomed", "True", "Applied")
    assert entry(kubectl, "doomed") is not None
    started = time.monotonic()
    delete(kubectl, "doomed")  # returns once the object is gone
    print(f"\ndelete -> object gone in {time.monotonic() - started:.2f} s")
    assert kubectl.get("pns", "doomed") is None
    # The finalizer was removed only after the ConfigMap was rewritten.
    assert entry(kubectl, "doomed") is None


def test_invalid_object_is_reported_and_left_out(operator, kubectl):
    kubectl.apply(pns("broken", channelRegex="(["))
    wait_ready(kubectl, operator, "broken", "False", "Invalid")
    assert "channel_regex" in ready(kubectl, "broken")["message"]
    assert entry(kubectl, "broken") is None
    # Fixing it makes it Ready.
    kubectl.apply(pns("broken", channelRegex="^[a-z]+$"))
    wait_ready(kubectl, operator, "broken", "True", "Applied")
    assert entry(kubectl, "broken")["channel_regex"] == "^[a-z]+$"
    delete(kubectl, "broken")


def test_without_namespace_options(operator, kubectl):
    kubectl.apply(pns("defaults", withoutNamespace=True, presence=True, allowSubscribeForClient=True))
    obj = wait_ready(kubectl, operator, "defaults", "True", "Applied")
    assert "channelNamespace" not in obj["status"]
    without = wait_for("without_namespace in the ConfigMap", lambda: namespaces_file(kubectl).get("without_namespace"))
    assert without["presence"] is True and without["allow_subscribe_for_client"] is True
    delete(kubectl, "defaults")
    wait_for("without_namespace gone", lambda: "without_namespace" not in namespaces_file(kubectl))


def test_printer_columns(operator, kubectl):
    kubectl.apply(pns("columns", presence=True, joinLeave=True))
    wait_ready(kubectl, operator, "columns", "True", "Applied")
    table = kubectl.run("get", "pns", "columns").stdout.splitlines()
    assert table[0].split() == ["NAME", "CHANNEL-NS", "PRESENCE", "JOIN-LEAVE", "READY", "AGE"], table
    assert table[1].split()[:5] == ["columns", "columns", "true", "true", "True"], table
    delete(kubectl, "columns")


def test_standby_replica_takes_over_when_the_leader_stops(operator, kubectl, rollcall_bin, kubeconfig, tmp_path):
    from conftest import Operator
    standby = Operator(rollcall_bin, kubeconfig, tmp_path / "standby.log", "operator-1")
    try:
        wait_for("the standby's /ready", lambda: standby.http("/ready")[0] == 200)
        status, metrics = standby.http("/metrics")
        assert "rollcall_operator_leader 0" in metrics, metrics
        assert kubectl.get("lease", "rollcall-operator")["spec"]["holderIdentity"] == operator.name

        # The leader stops cleanly and releases the Lease: the standby leads at once.
        stopped = time.monotonic()
        assert operator.terminate() == 0, operator.log()[-3000:]
        wait_for("the standby to hold the Lease",
                 lambda: kubectl.get("lease", "rollcall-operator")["spec"].get("holderIdentity") == standby.name,
                 on_fail=lambda: standby.log()[-3000:])
        print(f"\nleader stopped -> standby leads in {time.monotonic() - stopped:.2f} s")
        kubectl.apply(pns("after-failover", presence=True))
        wait_ready(kubectl, standby, "after-failover", "True", "Applied")
        delete(kubectl, "after-failover")
    finally:
        code = standby.terminate()
    assert code == 0, standby.log()[-3000:]
    lease = kubectl.get("lease", "rollcall-operator")
    assert not lease["spec"].get("holderIdentity"), f"the Lease was not released on SIGTERM: {lease['spec']}"


def test_missing_crd_is_one_clear_line_until_installed(rollcall_bin, tmp_path):
    """Started before its CRD exists, the operator says so once, stays up and not ready, and
    starts reconciling as soon as the CRD is applied."""
    from conftest import CRD_FILE, REAL_CLUSTER, EmulatorThread, Operator, find_tool
    if REAL_CLUSTER:
        return  # needs a cluster without the CRD: only on the emulator
    fresh = EmulatorThread().start()
    config = tmp_path / "config"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "e",
        "clusters": [{"name": "e", "cluster": {"server": f"http://127.0.0.1:{fresh.port}"}}],
        "users": [{"name": "e", "user": {"token": "e"}}],
        "contexts": [{"name": "e", "context": {"cluster": "e", "user": "e", "namespace": NAMESPACE}}]}))
    kubectl = Kubectl(find_tool("kubectl"), config)
    op = Operator(rollcall_bin, config, tmp_path / "operator.log", "no-crd")
    try:
        wait_for("the missing-CRD line", lambda: "not installed" in op.log(), on_fail=op.log)
        assert op.http("/health")[0] == 200
        assert op.http("/ready")[0] == 503
        # Retries go on (every 1, 2, 4 s ...) without repeating the line or a stack trace.
        wait_for("two retries", lambda: sum(1 for r in fresh.call(lambda: list(fresh.emulator._requests))
                                            if "presencenamespaces" in str(r.url)) >= 3)
        assert op.log().count("not installed") == 1, op.log()
        assert op.process.poll() is None, "the operator exited instead of waiting for the CRD"
        kubectl.run("apply", "-f", str(CRD_FILE))
        wait_for("/ready once the CRD exists", lambda: op.http("/ready")[0] == 200, on_fail=op.log)
        kubectl.apply(pns("late", presence=True))
        wait_ready(kubectl, op, "late", "True", "Applied")
    finally:
        code = op.terminate()
        fresh.stop()
    assert code == 0, op.log()
