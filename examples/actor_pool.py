"""ray.util.ActorPool: schedule calls over a fixed set of actors, like multiprocessing.Pool."""

import os
import random
import socket
import time

import ray
from ray.util import ActorPool


@ray.remote
class Actor:
    def double(self, v: int) -> int:
        return 2 * v

    def slow_double(self, v: int) -> tuple[int, tuple[str, int]]:
        # Random delays so results come back out of submission order.
        time.sleep(random.uniform(0, 0.3))
        # The worker process that did it: a pid is only unique on its own host.
        return 2 * v, (socket.gethostname(), os.getpid())


def main() -> None:
    ray.init()
    a1, a2 = Actor.remote(), Actor.remote()
    pool = ActorPool([a1, a2])

    # map yields results in the order of the inputs.
    doubled = list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))
    print("map:", doubled)
    assert doubled == [2, 4, 6, 8], doubled

    # map_unordered yields each result as soon as it is ready.
    values = list(range(10))
    results = list(pool.map_unordered(lambda a, v: a.slow_double.remote(v), values))
    unordered = [r for r, _ in results]
    workers = {worker for _, worker in results}
    used = sorted({host for host, _ in workers})
    print("map_unordered:", unordered)
    print(f"actor processes used: {len(workers)}")
    print(f"hosts used: {len(used)} ({', '.join(used)})")
    assert sorted(unordered) == [2 * v for v in values], unordered
    assert len(workers) == 2, f"expected both actors to work, saw {len(workers)} process(es)"

    # submit/get_next: the lower-level interface map is built on.
    pool.submit(lambda a, v: a.double.remote(v), 21)
    answer = pool.get_next(timeout=10)
    print("submit/get_next:", answer)
    assert answer == 42, answer
    print("OK")


if __name__ == "__main__":
    main()
