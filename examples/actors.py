"""Actors: a remote instance of a class that keeps its own state; and ending one."""

import socket
import time

import ray
from ray.exceptions import RayActorError


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

    def stop(self) -> None:
        # Ends the actor from inside; the caller sees RayActorError, not a return value.
        ray.actor.exit_actor()


def gone(counter: ray.actor.ActorHandle, timeout_s: float = 30) -> str:
    """Call the actor until it is gone; returns the error a call then gets."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(counter.read.remote())
        except RayActorError as e:
            return type(e).__name__
        time.sleep(0.1)
    raise SystemExit(f"FAIL: the actor still answers after {timeout_s:.0f} s")


def main() -> None:
    ray.init()

    # Each instance is its own process with its own state; calls to one run in order.
    counters = [Counter.remote() for _ in range(4)]
    for i, c in enumerate(counters):
        for _ in range(i + 1):
            c.increment.remote()
    values = ray.get([c.read.remote() for c in counters])
    print("counter values:", values)
    assert values == [1, 2, 3, 4], values
    used = sorted(set(ray.get([c.where.remote() for c in counters])))
    print(f"hosts used: {len(used)} ({', '.join(used)})")

    # Ending an actor from outside: ray.kill returns at once, the actor dies soon after,
    # and from then on calls fail with RayActorError.
    ray.kill(counters[0])
    print("after ray.kill:", gone(counters[0]))

    # Ending an actor from inside: the call that ran exit_actor() fails, and so do later ones.
    try:
        ray.get(counters[1].stop.remote())
        raise SystemExit("FAIL: exit_actor() returned a value")
    except RayActorError as e:
        print("the call that ran exit_actor():", type(e).__name__)
    print("after exit_actor():", gone(counters[1]))

    # The others are untouched.
    rest = ray.get([c.read.remote() for c in counters[2:]])
    assert rest == [3, 4], rest
    print("OK")


if __name__ == "__main__":
    main()
