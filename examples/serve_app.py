"""Ray Serve with a FastAPI ingress: an HTML page, a streamed response, a file download, JSON.

Deploys the app "raykit-demo" and checks it over HTTP. It keeps running after this
driver (the job) ends: Serve's controller and replicas are detached actors.
Check it later from outside with `python examples/serve_check.py http://HEAD:PORT`;
remove it with `serve.delete("raykit-demo")` (or `serve shutdown`).

Env: RAYKIT_SERVE_PORT (default 8000), RAYKIT_SERVE_REPLICAS (default 2, one per node).
The port is fixed when Serve first starts on a cluster: Serve ignores a new one (with a
warning) until `serve.shutdown()`, so the self-check below then fails.
"""

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator

import ray
import serve_check
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from ray import serve

PORT = int(os.environ.get("RAYKIT_SERVE_PORT", "8000"))
REPLICAS = int(os.environ.get("RAYKIT_SERVE_REPLICAS", "2"))

app = FastAPI()


# A small CPU share: the demo idles and should not hold a core on every host for good.
@serve.deployment(num_replicas=REPLICAS, max_replicas_per_node=1, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(app)
class Demo:
    @app.get("/", response_class=HTMLResponse)
    def index(self) -> str:
        return f"<!doctype html><title>raykit</title><h1>Hello from {socket.gethostname()}</h1>"

    @app.get("/stream")
    def stream(self) -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            for i in range(5):
                yield f"chunk {i}\n"
                await asyncio.sleep(0.1)

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/download")
    def download(self) -> Response:
        rows = "".join(f"{n},{n * n}\r\n" for n in range(10))
        return Response(
            "n,square\r\n" + rows,
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="squares.csv"'},
        )

    @app.get("/api/info")
    def info(self) -> dict[str, str]:
        ctx = ray.get_runtime_context()
        return {"app": "raykit-demo", "hostname": socket.gethostname(), "node_id": ctx.get_node_id()}


def replica_hosts(wait_s: float = 15) -> list[str]:
    """The hosts the replicas run on, as they report them, asking until each host has answered.

    Through a handle, not HTTP: a handle picks among all replicas, while the proxy prefers
    the one on its own node, so requests to the head would keep reaching the same replica.
    """
    handle = serve.get_app_handle("raykit-demo")
    hosts: set[str] = set()
    deadline = time.monotonic() + wait_s
    while len(hosts) < REPLICAS and time.monotonic() < deadline:
        hosts.add(handle.info.remote().result(timeout_s=10)["hostname"])
    return sorted(hosts)


def main() -> None:
    ray.init()
    alive = len([n for n in ray.nodes() if n["Alive"]])
    if alive < REPLICAS:
        # With one replica per node the rest could never be placed and serve.run would wait forever.
        raise SystemExit(f"FAIL: {REPLICAS} replicas need {REPLICAS} nodes, {alive} alive")

    serve.start(http_options={"host": "0.0.0.0", "port": PORT})
    serve.run(Demo.bind(), name="raykit-demo", route_prefix="/", blocking=False)
    replicas = serve.status().applications["raykit-demo"].deployments["Demo"].replica_states
    print(f"replicas: {replicas}")
    if replicas.get("RUNNING") != REPLICAS:
        raise SystemExit(f"FAIL: expected {REPLICAS} running replicas, got {replicas}")

    # The proxy may take a moment to learn the new routes.
    problems = serve_check.check(f"http://127.0.0.1:{PORT}", wait_s=30)
    for p in problems:
        print("FAIL:", p)
    if problems:
        raise SystemExit(1)
    used = replica_hosts()
    print(f"hosts used: {len(used)} ({', '.join(used)})")
    print(f"OK: raykit-demo serves on port {PORT} of the head, and stays up after this job")


if __name__ == "__main__":
    main()
