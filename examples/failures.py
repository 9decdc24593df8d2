"""What happens when things fail (the notes' question 11), and how Ray recovers.

(a) an exception in a task comes back to the caller, with its type and traceback;
(b) a task whose worker process dies is retried (max_retries);
(c) an actor whose process dies is restarted (max_restarts) and keeps serving;
    its state starts over, since __init__ runs again.
"""

import os
import socket

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.state import get_actor


@ray.remote
def parse(text: str) -> int:
    return int(text)


@ray.remote
class Attempts:
    def __init__(self) -> None:
        self.n = 0

    def bump(self) -> int:
        self.n += 1
        return self.n


@ray.remote(max_retries=2)
def flaky(attempts: ray.actor.ActorHandle) -> tuple[str, str]:
    n = ray.get(attempts.bump.remote())
    if n == 1:
        os._exit(1)  # the worker process dies, as on a crash or the OOM killer
    return f"succeeded on attempt {n}", socket.gethostname()


@ray.remote(max_restarts=1, max_task_retries=1)
class Service:
    def __init__(self) -> None:
        self.calls = 0

    # Not retried: rerunning it on the restarted actor would crash that one too.
    @ray.method(max_task_retries=0)
    def crash(self) -> None:
        os._exit(1)

    def handle(self) -> tuple[int, int, str, str]:
        self.calls += 1
        return self.calls, os.getpid(), ray.get_runtime_context().get_actor_id(), socket.gethostname()


def main() -> None:
    ray.init()

    # (a) The driver gets a RayTaskError that is also a ValueError, like the original.
    try:
        ray.get(parse.remote("not a number"))
        raise SystemExit("FAIL: expected the task's ValueError")
    except RayTaskError as e:
        print("task error, as the driver sees it:\n", e)
        assert isinstance(e, ValueError) and isinstance(e.cause, ValueError), repr(e)
        # Its text holds the remote traceback (the raised object has no traceback_str).
        assert "in parse" in str(e), "expected the remote traceback"

    # (b) A dead worker is a system failure: Ray reruns the task, up to max_retries times.
    attempts = Attempts.remote()
    message, flaky_host = ray.get(flaky.remote(attempts))
    print(message)
    n = ray.get(attempts.bump.remote()) - 1
    print(f"task attempts: {n}")
    assert n == 2, f"expected 2 attempts, saw {n}"

    # (c) A dead actor process is restarted, up to max_restarts times.
    service = Service.remote()
    ray.get([service.handle.remote() for _ in range(3)])
    calls, pid_before, actor_id, host_before = ray.get(service.handle.remote())
    try:
        ray.get(service.crash.remote())
        raise SystemExit("FAIL: the crash call returned")
    except RayActorError as e:
        print("the call that killed the actor:", type(e).__name__)
    # Calls made while it restarts wait for it (max_task_retries=1 retries one that is cut off).
    calls_after, pid_after, _, host_after = ray.get(service.handle.remote())
    restarts = get_actor(actor_id).num_restarts
    print(f"calls before crash: {calls}, after restart: {calls_after} (state starts over)")
    print(f"actor pid {pid_before} on {host_before} -> {pid_after} on {host_after}")
    print(f"actor restarts: {restarts}")
    # A restart may land on another host, where the same pid could come up again.
    new_process = (host_after, pid_after) != (host_before, pid_before)
    assert restarts == 1 and new_process and calls_after == 1, (restarts, pid_before, pid_after, host_after)

    used = sorted({flaky_host, host_before, host_after})
    print(f"hosts used: {len(used)} ({', '.join(used)})")
    print("OK")


if __name__ == "__main__":
    main()
