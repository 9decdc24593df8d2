"""A job of retriable tasks spread over every node, long enough to lose a node under it.

Ray retries a task whose worker or node died (max_retries, 3 by default); the sum proves
every result arrived once and is right.
"""

import socket
import sys
import time

import ray

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 120


@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def square(i: int) -> tuple[int, str]:
    time.sleep(1)
    return i * i, socket.gethostname()


ray.init()
refs = [square.remote(i) for i in range(COUNT)]
print(f"{COUNT} tasks submitted", flush=True)
results = ray.get(refs)
total = sum(value for value, _ in results)
assert total == sum(i * i for i in range(COUNT)), total
print(f"sum of squares: {total} (correct)")
print(f"hosts used: {len({host for _, host in results})}")
