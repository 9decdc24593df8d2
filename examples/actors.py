"""Actors: a remote instance of a class that keeps its own state; and ending one."""

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

    def stop(self) -> None:
        # Ends the actor from inside; the caller sees RayActorError, not a return value.
        ray.actor.exit_actor()


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

    # Ending an actor from outside: later calls fail with RayActorError.
    ray.kill(counters[0])
    try:
        ray.get(counters[0].read.remote())
        raise SystemExit("FAIL: a killed actor still answered")
    except RayActorError as e:
        print("after ray.kill:", type(e).__name__)

    # Ending an actor from inside with ray.actor.exit_actor().
    try:
        ray.get(counters[1].stop.remote())
        raise SystemExit("FAIL: exit_actor() returned a value")
    except RayActorError as e:
        print("after exit_actor():", type(e).__name__)
    try:
        ray.get(counters[1].read.remote())
        raise SystemExit("FAIL: an exited actor still answered")
    except RayActorError:
        pass

    # The others are untouched.
    rest = ray.get([c.read.remote() for c in counters[2:]])
    assert rest == [3, 4], rest
    print("OK")


if __name__ == "__main__":
    main()
