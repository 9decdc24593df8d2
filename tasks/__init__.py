"""raykit: a supervised, secured Ray cluster on plain machines.

Run `invoke --list` for the tasks; defaults come from invoke.yaml.
"""

from __future__ import annotations

import time

from invoke import Collection, Context, task

from tasks.bench import (
    bench_cluster,
    bench_faults,
    bench_grow,
    bench_lab,
    bench_monitoring,
    bench_python,
    bench_rayup,
    bench_run,
    bench_scale,
    bench_tls,
    bench_upgrade,
)
from tasks.cluster import (
    dashboard,
    deploy,
    doctor,
    drain,
    env,
    lock,
    logs,
    metrics,
    provision,
    reboot_hosts,
    remove,
    reset,
    restart,
    rollback,
    start,
    status,
    stop,
    token_rotate,
    undrain,
    versions,
)
from tasks.common import print_table, say
from tasks.dev import lint, test
from tasks.lab import block_port, down, lab_status, plug, poweroff, poweron, reboot, unblock_ports, unplug, up
from tasks.serve import examples, run, serve_deploy, serve_shutdown, serve_status


@task
def demo(c: Context) -> None:
    """The whole job on the local lab: lab.up, provision, deploy, examples, status (steps timed)."""
    started = time.monotonic()
    timings = []
    for name, action in (
        ("lab.up", lambda: up(c)),
        ("provision", lambda: provision(c)),
        ("deploy", lambda: deploy(c)),
        ("examples", lambda: examples(c)),
        ("status", lambda: status(c)),
    ):
        t0 = time.monotonic()
        say(f"demo step {name} ...")
        action()
        timings.append({"step": name, "seconds": f"{time.monotonic() - t0:.1f}"})
    print_table(timings)
    say(f"demo finished in {time.monotonic() - started:.1f} s")


lab = Collection("lab", up, down, lab_status, reboot, poweroff, poweron, unplug, plug, block_port, unblock_ports)
serve = Collection("serve", serve_deploy, serve_status, serve_shutdown)
bench = Collection("bench")
bench.add_task(bench_lab, name="lab")
bench.add_task(bench_cluster, name="cluster")
bench.add_task(bench_faults, name="faults")
bench.add_task(bench_python, name="python")
bench.add_task(bench_tls, name="tls")
bench.add_task(bench_run, name="run")
bench.add_task(bench_grow, name="grow")
bench.add_task(bench_monitoring, name="monitoring")
bench.add_task(bench_upgrade, name="upgrade")
bench.add_task(bench_scale, name="scale")
bench.add_task(bench_rayup, name="rayup")
ns = Collection(
    demo,
    lint,
    test,
    lock,
    provision,
    deploy,
    versions,
    status,
    doctor,
    metrics,
    stop,
    start,
    restart,
    logs,
    dashboard,
    env,
    drain,
    undrain,
    remove,
    reboot_hosts,
    rollback,
    reset,
    run,
    examples,
)
ns.add_collection(lab)
ns.add_collection(Collection("token", token_rotate))
ns.add_collection(serve)
ns.add_collection(bench)
