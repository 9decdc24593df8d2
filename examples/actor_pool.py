"""ray.util.ActorPool: schedule calls over a fixed set of actors, like multiprocessing.Pool."""

import os
import random
import time

import ray
from ray.util import ActorPool


@ray.remote
class Actor:
    def double(self, v: int) -> int:
        return 2 * v

    def slow_double(self, v: int) -> tuple[int, int]:
        # Random delays so results come back out of submission order.
        time.sleep(random.uniform(0, 0.3))
        return 2 * v, os.getpid()


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
    pids = {pid for _, pid in results}
    print("map_unordered:", unordered)
    print(f"actor processes used: {len(pids)}")
    assert sorted(unordered) == [2 * v for v in values], unordered
    assert len(pids) == 2, f"expected both actors to work, saw {len(pids)} process(es)"

    # submit/get_next: the lower-level interface map is built on.
    pool.submit(lambda a, v: a.double.remote(v), 21)
    answer = pool.get_next(timeout=10)
    print("submit/get_next:", answer)
    assert answer == 42, answer
    print("OK")


if __name__ == "__main__":
    main()
