"""doctor's findings from a cluster state, one fault at a time (the lab tests make them for real)."""

from __future__ import annotations

import copy

import pytest

from raykit.doctor import Finding, diagnose, render

TOKEN = "a" * 64


def healthy() -> tuple[dict, list[dict]]:
    hosts: dict[str, dict] = {}
    nodes: list[dict] = []
    for i, name in enumerate(["h1", "h2"]):
        ip = f"10.0.0.{i + 1}"
        hosts[name] = {
            "ip": ip,
            "role": "head" if i == 0 else "worker",
            "service": {"installed": True, "active": "active", "restarts": 0, "uptime_s": 100},
            "environment": {"problems": []},
            "checks": {
                "time": 1000.2, "controller_before": 1000.0, "controller_after": 1000.5, "shm_bytes": 2 * 10**9,
                "token_sha256": TOKEN,
                "ports": [] if i == 0 else [{"address": "10.0.0.1:6379", "name": "the GCS port of h1", "error": ""}],
                "journal": "a journal line\n",
            },
        }  # fmt: skip
        nodes.append({"node_ip": ip, "state": "ALIVE", "resources_total": {"object_store_memory": 10**9}})
    state = {"inventory": ["h1", "h2"], "hosts": hosts, "head": "h1", "dashboard_url": "http://10.0.0.1:8265"}
    return state, nodes


def findings(edit, auth_mode: str | None = "token") -> list[Finding]:
    state, nodes = healthy()
    state, nodes = copy.deepcopy(state), copy.deepcopy(nodes)
    edit(state, nodes)
    return diagnose(state, nodes, TOKEN, auth_mode)


def test_a_healthy_cluster_has_no_findings() -> None:
    assert findings(lambda s, n: None) == []
    assert render([], 2) == "doctor: all 2 hosts healthy"


def _unreachable(s, n):
    del s["hosts"]["h2"]


def _drift(s, n):
    s["hosts"]["h2"]["environment"]["problems"] = ["ray 2.59.0 (lock 2.60.0)"]


def _failing(s, n):
    s["hosts"]["h2"]["service"].update(active="activating", restarts=7)


def _young_after_restarts(s, n):
    s["hosts"]["h2"]["service"].update(restarts=7, uptime_s=1)


def _deactivating_after_a_crash(s, n):
    s["hosts"]["h2"]["service"].update(active="deactivating", restarts=1, uptime_s=0)


def _stopped(s, n):
    s["hosts"]["h2"]["service"].update(active="inactive")


def _outside(s, n):
    n[1]["state"] = "DEAD"


def _port(s, n):
    s["hosts"]["h2"]["checks"]["ports"][0]["error"] = "timed out"


def _token(s, n):
    s["hosts"]["h2"]["checks"]["token_sha256"] = "b" * 64


def _shm(s, n):
    s["hosts"]["h2"]["checks"]["shm_bytes"] = 256 * 2**20


def _clock(s, n):
    s["hosts"]["h2"]["checks"]["time"] = 1300.0


def _no_dashboard(s, n):
    n.clear()


PLANTED = "added: /opt/ray/venvs/ray-2.60.0-py3.11.2/lib/python3.11/site-packages/x.pth"


def _planted(s, n):
    s["hosts"]["h2"]["environment"].update(problems=[PLANTED], files=[PLANTED])


def _hooks(s, n):
    s["hosts"]["h2"]["checks"]["start_up_hooks"] = ["/var/lib/ray/sitecustomize.py"]


def _no_manifest(s, n):
    line = "no manifest /opt/ray/venvs/ray-2.60.0-py3.11.2.manifest.json: not installed by this kit as root"
    s["hosts"]["h2"]["environment"].update(problems=[line], files=[line])


def _edited(s, n):
    s["hosts"]["h2"]["checks"]["settings_edited"] = ["/etc/ray/ray.env"]


@pytest.mark.parametrize(
    ("edit", "host", "problem", "fix"),
    [
        (_unreachable, "h2", "did not answer over SSH", "powered on"),
        (_drift, "h2", "differs from the pins: ray 2.59.0 (lock 2.60.0)", "invoke provision"),
        (_failing, "h2", "keeps failing (activating, restarted 7 times)", "journal"),
        (_young_after_restarts, "h2", "keeps failing", "invoke deploy"),
        (_deactivating_after_a_crash, "h2", "keeps failing (deactivating, restarted 1 times)", "journal"),
        (_stopped, "h2", "Ray is inactive", "invoke start --hosts h2"),
        (_outside, "h2", "its node (10.0.0.2) is not in the cluster", "invoke restart --hosts h2"),
        (_port, "h2", "cannot reach the GCS port of h1 at 10.0.0.1:6379: timed out", "open that TCP port"),
        (_token, "h2", "token differs from the controller's", "invoke deploy"),
        (_shm, "h2", "object store (1.0 GB) is larger than /dev/shm (0.3 GB)", "ray_object_store_memory"),
        (_clock, "h2", "clock is 300 s ahead of the controller's", "chrony"),
        (_no_dashboard, "h1", "does not answer", "invoke restart"),
        (_planted, "h2", "1 file(s) of its Ray environment differ from what provision installed", "invoke provision"),
        (_hooks, "h2", "start-up code in the ray user's home", "remove these files"),
        (_no_manifest, "h2", "its Ray environment has no manifest: an earlier version of the kit", "invoke provision"),
        (_edited, "h2", "/etc/ray/ray.env differs from what deploy writes", "invoke deploy"),
    ],
)
def test_each_fault_is_one_finding_naming_the_host_and_the_fix(edit, host: str, problem: str, fix: str) -> None:
    found = findings(edit)
    assert len(found) == 1, found
    assert (found[0].host, problem in found[0].problem, fix in found[0].fix) == (host, True, True), found[0]


def test_render_shows_the_journal_of_a_failing_unit_and_counts_the_problems() -> None:
    text = render(findings(_failing), 2)
    assert "  | a journal line" in text
    assert text.endswith("doctor: 1 problem(s) on 1 of 2 hosts")


def test_a_planted_file_is_named_with_its_path_and_not_as_drift() -> None:
    found = findings(_planted)
    assert [f.details for f in found] == [PLANTED]
    assert "differs from the pins" not in found[0].problem


def test_a_dashboard_without_token_authentication_is_a_finding_on_the_head() -> None:
    found = findings(lambda s, n: None, auth_mode="disabled")
    assert [(f.host, "authentication mode is 'disabled'" in f.problem) for f in found] == [("h1", True)]
    assert findings(lambda s, n: None, auth_mode=None) == []  # the head down: named by its own finding


def test_a_drained_worker_is_no_finding_but_a_stopped_one_is() -> None:
    def stopped(s, n, drained: bool) -> None:
        s["hosts"]["h2"]["service"].update(active="inactive", drained=drained)
        n.pop()

    assert findings(lambda s, n: stopped(s, n, drained=True)) == []
    assert [f.problem for f in findings(lambda s, n: stopped(s, n, drained=False))] == ["Ray is inactive"]
