"""Real Ray programs on the deployed lab cluster: invoke run, invoke examples, Serve over HTTP."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import HEAD, LabHost, invoke

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
