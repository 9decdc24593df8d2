"""Passing an actor handle into tasks: many tasks update one actor's state."""

import socket
import time

import ray

TASKS = 3
INCREMENTS = 10


@ray.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> None:
        self.n += 1

    def read(self) -> int:
        return self.n

    def where(self) -> str:
        return socket.gethostname()


@ray.remote
def f(counter: ray.actor.ActorHandle) -> str:
    calls = []
    for _ in range(INCREMENTS):
        time.sleep(0.1)
        calls.append(counter.increment.remote())
    # Without this the task can end while its last calls are still on their way to the actor.
    ray.get(calls)
    return socket.gethostname()


def main() -> None:
    ray.init()
    counter = Counter.remote()

    # Start some tasks that use the actor.
    tasks = [f.remote(counter) for _ in range(TASKS)]

    # Watch the count grow while they run (the notes call `get_counter`; Counter has `read`).
    while True:
        done, _ = ray.wait(tasks, num_returns=len(tasks), timeout=0.5)
        print("count:", ray.get(counter.read.remote()))
        if len(done) == len(tasks):
            break

    final = ray.get(counter.read.remote())
    print("final count:", final)
    if final != TASKS * INCREMENTS:
        raise SystemExit(f"FAIL: expected {TASKS * INCREMENTS}, got {final}")
    # The tasks' hosts and the actor's.
    used = sorted(set(ray.get(tasks)) | {ray.get(counter.where.remote())})
    print(f"hosts used: {len(used)} ({', '.join(used)})")
    print("OK")


if __name__ == "__main__":
    main()
