"""Programs on the cluster: `run`, `examples` and the Serve example (`invoke serve.*`)."""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Context, Exit, task

from raykit import cluster, jobs
from raykit.endpoint import Endpoint, reach
from tasks.common import (
    INVENTORY_HELP,
    ROOT,
    cluster_endpoint,
    print_table,
    say,
)

EXAMPLES = ROOT / "examples"
# The dashboard is reached from the endpoint file, not a probe: this says where to look when it fails.
HINT = "; `invoke status` and `invoke doctor` check the cluster"


@contextmanager
def reached(inventory: str | None) -> Iterator[tuple[Endpoint, dict[str, str]]]:
    """The cluster's endpoint, and a state raykit.cluster's readers take, while the block runs:
    no playbook, no ssh (but the tunnel's, with ray_dashboard_access: tunnel)."""
    ep = cluster_endpoint(inventory)
    for name in jobs.ADDRESS_ENV_VARS:
        # `invoke env`'s RAY_ADDRESS names this cluster; behind a tunnel the kit's own is another port.
        if os.environ.get(name, "").rstrip("/") == ep.dashboard_url.rstrip("/"):
            del os.environ[name]
    try:
        with reach(ep) as url:
            yield ep, {"dashboard_url": url, "token_file": ep.token_file}
    except (cluster.ClusterError, jobs.JobTimeout) as exc:
        raise Exit(f"error: {exc}{HINT}", code=2) from None
    except jobs.JobInterrupted as exc:
        raise Exit(f"error: {exc}", code=130) from None
    except jobs.JobsError as exc:
        raise Exit(f"error: {exc}{HINT}", code=2) from None


def run_job(
    state: dict[str, str],
    script: Path,
    args: list[str],
    follow: bool,
    env: dict | None = None,
    stop_on_interrupt: Callable[[str], bool] = jobs.stop_without_asking,
) -> jobs.JobResult:
    token = cluster.read_token(state)
    return jobs.run(
        state["dashboard_url"], token, script, args, follow=follow, out=sys.stdout, env=env,
        stop_on_interrupt=stop_on_interrupt,
    )  # fmt: skip


def ask_to_stop(job_id: str) -> bool:
    """Ctrl-C during `invoke run`: stop the job unless the user says no (no answer stops it)."""
    try:
        answer = input(f"\nstop job {job_id} on the cluster? [Y/n] ")
    except (EOFError, KeyboardInterrupt):
        return True
    stop = not answer.strip().lower().startswith("n")
    if not stop:
        say(
            f'job {job_id} keeps running; after `eval "$(invoke env)"`: ray job logs -f {job_id}, ray job stop {job_id}'
        )
    return stop


@task(
    help={
        "path": "the driver program, e.g. examples/tasks.py; its folder is the job's working directory",
        "follow": "stream the job's logs (default; --no-follow waits and prints them at the end)",
        "inventory": INVENTORY_HELP,
    }
)
def run(c: Context, path: str, follow: bool = True, inventory: str | None = None) -> None:
    """Run a driver on the cluster through the Jobs API (args after --); exits with the job's
    outcome; Ctrl-C asks, then stops the job."""
    script = Path(path).resolve()
    if not script.is_file():
        raise Exit(f"error: no file {path}", code=2)
    with reached(inventory) as (_, state):
        result = run_job(state, script, shlex.split(c.remainder), follow, stop_on_interrupt=ask_to_stop)
    if not follow:
        print(result.logs, end="")
    say(f"job {result.job_id}: {result.status.value} in {result.duration_s:.1f} s {result.message}".rstrip())
    if not result.ok:
        raise Exit(f"error: {path} failed: {result.message or result.status.value}", code=1)


def serve_env(c: Context, ep: Endpoint, state: dict[str, str]) -> dict[str, str]:
    """One replica per alive node (a drained one runs none), up to serve.max_replicas."""
    replicas = max(1, min(len(cluster.alive_nodes(state)), int(c.config.serve.max_replicas)))
    return {"RAYKIT_SERVE_PORT": str(ep.serve_port), "RAYKIT_SERVE_REPLICAS": str(replicas)}


def run_examples(c: Context, inventory: str | None) -> list[dict[str, str]]:
    """Every example in examples/ on the cluster, one job each: a row per example."""
    rows = []
    with reached(inventory) as (ep, state):
        for script in sorted(EXAMPLES.glob("*.py")):
            if script.name == "serve_check.py":  # a helper of serve_app.py, run from outside
                continue
            say(f"example {script.name} ...")
            env = serve_env(c, ep, state) if script.name == "serve_app.py" else None
            result = run_job(state, script, [], follow=False, env=env)
            if not result.ok:
                print(result.logs, end="")
            used = re.search(r"^hosts used: (\d+)", result.logs, re.MULTILINE)
            rows.append(
                {
                    "example": script.name,
                    "result": "passed" if result.ok else f"FAILED ({result.message or result.status.value})",
                    "duration": f"{result.duration_s:.1f} s",
                    "hosts_used": used.group(1) if used else "-",
                }
            )
    return rows


@task(help={"inventory": INVENTORY_HELP})
def examples(c: Context, inventory: str | None = None) -> None:
    """Run every example in examples/ on the cluster and print a summary table."""
    rows = run_examples(c, inventory)
    print_table(rows)
    failed = [r["example"] for r in rows if r["result"] != "passed"]
    if failed:
        raise Exit(f"error: {len(failed)} example(s) failed: {', '.join(failed)}", code=1)


@task(name="deploy", help={"inventory": INVENTORY_HELP})
def serve_deploy(c: Context, inventory: str | None = None) -> None:
    """Deploy the Serve example (examples/serve_app.py) on ray_serve_port; it stays up."""
    with reached(inventory) as (ep, state):
        result = run_job(state, EXAMPLES / "serve_app.py", [], follow=True, env=serve_env(c, ep, state))
    if not result.ok:
        raise Exit(f"error: the Serve app failed to deploy: {result.message}", code=1)
    say(f"serving on http://{ep.head_ip}:{ep.serve_port}/")


@task(name="status", help={"inventory": INVENTORY_HELP})
def serve_status(c: Context, inventory: str | None = None) -> None:
    """Show the Serve applications and their deployments (dashboard REST API)."""
    with reached(inventory) as (_, state):
        apps = cluster.ray_api(state, "/api/serve/applications/").get("applications", {})
    rows = [
        {"application": name, "status": app["status"], "route": str(app.get("route_prefix")),
         "deployments": ", ".join(f"{d}={info['status']}" for d, info in app.get("deployments", {}).items())}
        for name, app in apps.items()
    ]  # fmt: skip
    print_table(rows) if rows else say("no Serve application is running")


@task(name="shutdown", help={"inventory": INVENTORY_HELP})
def serve_shutdown(c: Context, inventory: str | None = None) -> None:
    """Remove every Serve application (and Serve's proxies) from the cluster."""
    with reached(inventory) as (_, state):
        cluster.ray_api(state, "/api/serve/applications/", method="DELETE")
    say("Serve shut down")
