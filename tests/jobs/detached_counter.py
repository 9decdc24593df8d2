"""A detached counter actor on a worker node, kept by the cluster between jobs.

create   make it (on a worker: the head's own actors end with the head) and count once
count    find it by name and count once more
remove   end it
"""

import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

NAME = "raykit-detached-counter"


@ray.remote(num_cpus=0)
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def increment(self) -> tuple[int, str]:
        self.count += 1
        return self.count, ray.util.get_node_ip_address()


ray.init(namespace="raykit-tests")
if sys.argv[1] == "remove":
    ray.kill(ray.get_actor(NAME))
    print("removed")
    sys.exit(0)
if sys.argv[1] == "create":
    worker = next(n for n in ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"])
    on_worker = NodeAffinitySchedulingStrategy(worker["NodeID"], soft=False)
    counter = Counter.options(name=NAME, lifetime="detached", scheduling_strategy=on_worker).remote()
else:
    counter = ray.get_actor(NAME)
count, ip = ray.get(counter.increment.remote())
print(f"count: {count} on {ip}")
