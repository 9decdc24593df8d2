"""Real Ray programs on the deployed lab cluster: invoke run, invoke examples, Serve over HTTP."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from raykit.jobs import auth_headers
from tests.helpers import HEAD, ROOT, TOKEN_FILE, LabHost, invoke, write_inventory_variant

pytestmark = pytest.mark.lab


def get(url: str) -> tuple[int, str, str, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers.get_content_type(), response.read().decode(), dict(response.headers)


def test_every_example_passes_and_tasks_spread_over_hosts(deployed: dict[str, LabHost]) -> None:
    result = invoke("examples", check=False, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    row = re.compile(r"^(\w+\.py)\s+(passed|FAILED.*?)\s+[\d.]+ s\s+(\S+)\s*$", re.MULTILINE)
    table = {m.group(1): (m.group(2), m.group(3)) for m in row.finditer(result.stdout)}
    expected = {"tasks.py", "actors.py", "actor_handles.py", "actor_pool.py", "passing_functions.py",
                "failures.py", "serve_app.py"}  # fmt: skip
    assert set(table) == expected, result.stdout[-3000:]
    assert {name: r[0] for name, r in table.items()} == {name: "passed" for name in expected}
    assert int(table["tasks.py"][1]) >= 2, table["tasks.py"]


def test_failures_example_really_retries_and_restarts(deployed) -> None:
    result = invoke("run", "examples/failures.py", check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"^task attempts: 2$", result.stdout, re.MULTILINE), result.stdout[-3000:]
    assert re.search(r"^actor restarts: 1$", result.stdout, re.MULTILINE), result.stdout[-3000:]


def test_a_failing_driver_fails_run_and_shows_the_error(deployed, tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(
        "import ray\nray.init()\n\n"
        "@ray.remote\ndef boom():\n    raise ValueError('boom-7f3a')\n\n"
        "ray.get(boom.remote())\n"
    )
    result = invoke("run", str(script), check=False, timeout=600)
    assert result.returncode == 1
    assert "ValueError: boom-7f3a" in result.stdout
    assert f"{script} failed" in result.stderr


def test_run_passes_arguments_after_the_double_dash(deployed, tmp_path: Path) -> None:
    script = tmp_path / "echo.py"
    script.write_text("import sys\nprint('args:', sys.argv[1:])\n")
    result = invoke("run", "--no-follow", str(script), "--", "alpha", "beta", timeout=600)
    assert "args: ['alpha', 'beta']" in result.stdout


def test_serve_answers_every_response_kind_over_http(deployed: dict[str, LabHost]) -> None:
    invoke("serve.deploy", timeout=600)
    base = f"http://{deployed[HEAD].address}:8000"
    try:
        status, ctype, body, _ = get(base + "/")
        assert (status, ctype) == (200, "text/html") and "<h1>Hello from raylab-" in body

        status, ctype, body, _ = get(base + "/stream")
        assert (status, ctype) == (200, "text/plain")
        assert body.splitlines() == [f"chunk {i}" for i in range(5)]

        status, ctype, body, headers = get(base + "/download")
        assert (status, ctype) == (200, "text/csv")
        assert 'attachment; filename="squares.csv"' in headers["content-disposition"]
        assert body.splitlines()[:3] == ["n,square", "0,0", "1,1"]

        status, ctype, body, _ = get(base + "/api/info")
        assert (status, ctype) == (200, "application/json")
        assert json.loads(body)["app"] == "raykit-demo"

        assert "raykit-demo" in invoke("serve.status").stdout
    finally:
        invoke("serve.shutdown")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get(base + "/api/info")


def test_run_reaches_the_cluster_without_ssh(deployed, tmp_path: Path) -> None:
    # A copy of the inventory with a user and a key the hosts do not know (and so no ssh master
    # of Ansible's to reuse): every playbook fails on it.
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    stranger = write_inventory_variant(
        tmp_path,
        lambda inv: inv["vars"].update(
            ansible_user="stranger", ansible_ssh_private_key_file=str(tmp_path / "stranger")
        ),
    )
    assert invoke("status", "--inventory", str(stranger), check=False).returncode != 0
    script = tmp_path / "job" / "hello.py"
    script.parent.mkdir()
    script.write_text("import ray\nray.init()\nprint('nodes:', sum(n['Alive'] for n in ray.nodes()))\n")
    result = invoke("run", "--inventory", str(stranger), str(script), timeout=600)
    assert f"nodes: {len(deployed)}" in result.stdout, result.stdout[-2000:]


def test_rays_own_job_cli_works_after_invoke_env(deployed, tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text("print('hello from', __file__.rsplit('/', 1)[-1])\n")
    bin_dir = Path(sys.executable).parent
    # As the README shows it: invoke from the repository, Ray's CLI from the job's folder.
    script = (
        f'settings="$({bin_dir}/invoke env)" && eval "$settings" && cd {tmp_path}'
        f" && {bin_dir}/ray job submit --working-dir . -- python hello.py && {bin_dir}/ray job list"
    )
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "hello from hello.py" in done.stdout
    assert re.search(r"Job 'raysubmit_\w+' succeeded", done.stdout + done.stderr), done.stdout[-2000:]
    assert "entrypoint='python hello.py'" in done.stdout


def test_ctrl_c_asks_and_stops_the_job_on_the_cluster(deployed, tmp_path: Path) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
    run = subprocess.Popen(
        [str(Path(sys.executable).parent / "invoke"), "run", str(script)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in run.stdout or []:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 180
    while not any(line.startswith("sleeping") for line in seen):
        assert time.monotonic() < deadline and run.poll() is None, "".join(seen)
        with contextlib.suppress(queue.Empty):
            seen.append(lines.get(timeout=1))
    job_id = next(m.group(1) for line in seen if (m := re.match(r"job (raysubmit_\w+) submitted", line)))
    run.send_signal(signal.SIGINT)
    assert run.stdin is not None
    run.stdin.write("y\n")
    run.stdin.close()
    assert run.wait(timeout=120) == 130, "".join(seen) + "".join(lines.queue)
    # Ray's own Jobs API, not the kit, says the job is over.
    client = JobSubmissionClient(f"http://{deployed[HEAD].address}:8265", headers=auth_headers(TOKEN_FILE.read_text()))
    assert client.get_job_status(job_id) == JobStatus.STOPPED


def test_run_says_in_one_line_when_the_dashboard_refuses_the_token_or_does_not_answer(deployed, tmp_path: Path) -> None:
    endpoint = TOKEN_FILE.with_name(f"{HEAD}.endpoint.json")
    kept = endpoint.read_text()
    (tmp_path / "wrong.token").write_text("0" * 64)
    script = tmp_path / "job" / "never.py"
    script.parent.mkdir()
    script.write_text("raise SystemExit('must not run')\n")
    try:
        for change, said in (
            ({"token_file": str(tmp_path / "wrong.token")}, "is it the cluster's token?"),
            ({"dashboard_url": f"http://{deployed[HEAD].address}:1"}, "Failed to connect"),
        ):
            endpoint.write_text(json.dumps({**json.loads(kept), **change}))
            result = invoke("run", str(script), check=False)
            assert result.returncode == 2, result.stdout + result.stderr
            error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
            assert len(error) == 1 and said in error[0], result.stderr
            assert "`invoke status` and `invoke doctor`" in error[0], error
    finally:
        endpoint.write_text(kept)
