"""Remote functions and ObjectRefs: .remote(), ray.get, ray.wait, and tasks spread over hosts."""

import socket
import time

import ray


@ray.remote
def f(x: int) -> int:
    return x * x


@ray.remote(scheduling_strategy="SPREAD")
def where(i: int) -> str:
    # Long enough that one worker cannot take them all before others start.
    time.sleep(0.5)
    return socket.gethostname()


@ray.remote
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def main() -> None:
    ray.init()

    # A remote call returns an ObjectRef (a future) at once; ray.get waits for the value.
    futures = [f.remote(i) for i in range(4)]
    print("ObjectRef:", futures[0])
    squares = ray.get(futures)
    print("f(x) = x*x for 0..3:", squares)
    assert squares == [0, 1, 4, 9], squares

    # ray.wait splits refs into ready and not ready: here it waits for the first to finish,
    # then, with a timeout, gives up on the slow one instead of blocking.
    refs = [slow.remote(30), slow.remote(0.1)]
    ready, not_ready = ray.wait(refs, num_returns=1)
    print(f"ray.wait: ready {ray.get(ready)}, {len(not_ready)} not ready")
    assert ray.get(ready) == [0.1] and not_ready == refs[:1], (ready, not_ready)
    ready, not_ready = ray.wait(not_ready, timeout=1)
    print(f"ray.wait with a 1 s timeout: {len(ready)} ready, {len(not_ready)} not ready")
    assert not ready, ready
    ray.cancel(not_ready[0], force=True)

    alive = [n for n in ray.nodes() if n["Alive"]]
    hosts = ray.get([where.remote(i) for i in range(4 * len(alive))])
    used = sorted(set(hosts))
    print(f"alive nodes: {len(alive)}")
    print(f"hosts used: {len(used)} ({', '.join(used)})")
    if len(alive) > 1 and len(used) < 2:
        raise SystemExit(f"FAIL: {len(alive)} nodes alive but every task ran on {used[0]}")
    print("OK")


if __name__ == "__main__":
    main()
