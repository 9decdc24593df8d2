"""Passing functions and objects into tasks and getting them back (the notes' question 10)."""

import socket
from collections.abc import Callable
from typing import Any

import numpy as np
import ray


def cube(x: int) -> int:
    return x**3


@ray.remote
def apply(fn: Callable[[int], int], x: int) -> int:
    # Plain functions, lambdas and closures travel by value (cloudpickle).
    return fn(x)


@ray.remote
def make_multiplier(k: int) -> Callable[[int], int]:
    return lambda x: k * x


@ray.remote
def square(x: int) -> int:
    return x * x


@ray.remote
def fan_out(remote_fn: Any, n: int) -> list[int]:
    # A remote function is a handle too: tasks can start more tasks with it.
    return ray.get([remote_fn.remote(i) for i in range(n)])


@ray.remote
def describe(arg: Any) -> str:
    return type(arg).__name__ if not isinstance(arg, list) else f"list of {type(arg[0]).__name__}"


@ray.remote
def column_sum(a: np.ndarray, col: int) -> tuple[float, bool, str]:
    # Arrays from the object store are zero-copy and read-only in the worker.
    return float(a[:, col].sum()), a.flags.writeable, socket.gethostname()


def main() -> None:
    ray.init()

    got = ray.get([apply.remote(cube, 3), apply.remote(lambda x: x + 1, 41)])
    print("function passed in and called remotely:", got)
    assert got == [27, 42], got

    triple = ray.get(make_multiplier.remote(3))
    print("closure returned from a task, called here: triple(5) =", triple(5))
    assert triple(5) == 15

    squares = ray.get(fan_out.remote(square, 4))
    print("remote function passed to a task that calls .remote():", squares)
    assert squares == [0, 1, 4, 9], squares

    # A top-level ObjectRef argument is resolved to its value before the task runs;
    # one inside a list arrives as the ObjectRef itself (ray.get it in the task if needed).
    ref = ray.put(7)
    top, nested = ray.get([describe.remote(ref), describe.remote([ref])])
    print(f"top-level ref arrives as {top}; ref in a list arrives as {nested}")
    assert (top, nested) == ("int", "list of ObjectRef"), (top, nested)

    # ray.put once, pass the ref to many tasks: the array is stored once per node, not per task.
    a = np.arange(1_000_000, dtype=np.float64).reshape(-1, 4)
    a_ref = ray.put(a)
    results = ray.get([column_sum.remote(a_ref, c) for c in range(4)])
    sums = [s for s, _, _ in results]
    print("column sums from the shared array:", sums, "writeable in tasks:", results[0][1])
    assert np.allclose(sums, a.sum(axis=0)), sums
    assert not any(w for _, w, _ in results), "expected read-only zero-copy arrays"
    # The nodes that ran these tasks, each holding one copy of the array.
    used = sorted({host for _, _, host in results})
    print(f"hosts used: {len(used)} ({', '.join(used)})")
    print("OK")


if __name__ == "__main__":
    main()
