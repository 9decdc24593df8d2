"""Programs on the cluster: `run`, `examples` and the Serve example (`invoke serve.*`)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from invoke import Context, Exit, task

from raykit import cluster, jobs
from tasks.common import (
    INVENTORY_HELP,
    ROOT,
    cluster_state,
    print_table,
    say,
    user_errors,
)

EXAMPLES = ROOT / "examples"


def run_job(
    c: Context, state: dict, script: Path, args: list[str], follow: bool, env: dict | None = None
) -> jobs.JobResult:
    token = cluster.read_token(state)
    return jobs.run(state["dashboard_url"], token, script, args, follow=follow, out=sys.stdout, env=env)


@task(
    help={
        "path": "the driver program, e.g. examples/tasks.py; its folder is the job's working directory",
        "follow": "stream the job's logs (default; --no-follow waits and prints them at the end)",
        "inventory": INVENTORY_HELP,
    }
)
def run(c: Context, path: str, follow: bool = True, inventory: str | None = None) -> None:
    """Run a driver on the cluster through the Jobs API (args after --); exits with the job's outcome."""
    script = Path(path).resolve()
    if not script.is_file():
        raise Exit(f"error: no file {path}", code=2)
    state = cluster_state(c, inventory)
    with user_errors():
        result = run_job(c, state, script, shlex.split(c.remainder), follow)
    if not follow:
        print(result.logs, end="")
    say(f"job {result.job_id}: {result.status.value} in {result.duration_s:.1f} s {result.message}".rstrip())
    if not result.ok:
        raise Exit(f"error: {path} failed: {result.message or result.status.value}", code=1)


def serve_env(c: Context, state: dict) -> dict[str, str]:
    replicas = min(len(state["hosts"]), int(c.config.serve.max_replicas))
    return {"RAYKIT_SERVE_PORT": str(state["serve_port"]), "RAYKIT_SERVE_REPLICAS": str(replicas)}


def run_examples(c: Context, state: dict) -> list[dict[str, str]]:
    """Every example in examples/ on the cluster, one job each: a row per example."""
    rows = []
    for script in sorted(EXAMPLES.glob("*.py")):
        if script.name == "serve_check.py":  # a helper of serve_app.py, run from outside
            continue
        say(f"example {script.name} ...")
        env = serve_env(c, state) if script.name == "serve_app.py" else None
        with user_errors():
            result = run_job(c, state, script, [], follow=False, env=env)
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
    rows = run_examples(c, cluster_state(c, inventory))
    print_table(rows)
    failed = [r["example"] for r in rows if r["result"] != "passed"]
    if failed:
        raise Exit(f"error: {len(failed)} example(s) failed: {', '.join(failed)}", code=1)


@task(name="deploy", help={"inventory": INVENTORY_HELP})
def serve_deploy(c: Context, inventory: str | None = None) -> None:
    """Deploy the Serve example (examples/serve_app.py) on ray_serve_port; it stays up."""
    state = cluster_state(c, inventory)
    with user_errors():
        result = run_job(c, state, EXAMPLES / "serve_app.py", [], follow=True, env=serve_env(c, state))
    if not result.ok:
        raise Exit(f"error: the Serve app failed to deploy: {result.message}", code=1)
    say(f"serving on http://{state['hosts'][state['head']]['ip']}:{state['serve_port']}/")


@task(name="status", help={"inventory": INVENTORY_HELP})
def serve_status(c: Context, inventory: str | None = None) -> None:
    """Show the Serve applications and their deployments (dashboard REST API)."""
    state = cluster_state(c, inventory)
    with user_errors():
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
    state = cluster_state(c, inventory)
    with user_errors():
        cluster.ray_api(state, "/api/serve/applications/", method="DELETE")
    say("Serve shut down")
