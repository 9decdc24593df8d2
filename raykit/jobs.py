"""Run a driver program on the cluster through Ray's Jobs API (behind `invoke run`).

The script's folder is uploaded as the job's working_dir and `python SCRIPT ARGS...`
runs on the head, so the script calls `ray.init()` with no address.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from ray.job_submission import JobStatus, JobSubmissionClient

# The SDK prefers these environment variables over the address it is given.
ADDRESS_ENV_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
POLL_S = 0.5
DEFAULT_TIMEOUT_S = 3600.0


class JobsError(Exception):
    """A problem with talking to the Jobs API; shown as one line."""


class JobTimeout(JobsError):
    """The job did not end before its deadline."""


class JobInterrupted(JobsError):
    """Ctrl-C while the job ran: it was stopped, or left running as asked."""


def stop_without_asking(job_id: str) -> bool:
    return True


class _StatusSource(Protocol):
    def get_job_status(self, job_id: str) -> JobStatus: ...


@dataclass(frozen=True)
class JobResult:
    job_id: str
    status: JobStatus
    duration_s: float
    logs: str
    # Why the job ended as it did (e.g. the entrypoint's exit code): the first line of Ray's
    # message, whose rest repeats the end of the logs.
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "SUCCEEDED"


def auth_headers(token: str | None) -> dict[str, str]:
    """The header a token-authenticated cluster expects, or none without a token."""
    return {"Authorization": f"Bearer {token.strip()}"} if token else {}


def check_address_env(address: str, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse to run when an environment variable would silently redirect the SDK."""
    for name in ADDRESS_ENV_VARS:
        value = environ.get(name)
        if value and value.rstrip("/") != address.rstrip("/"):
            raise JobsError(f"{name}={value} would override the address {address}; unset it")


def client(address: str, token: str | None) -> JobSubmissionClient:
    """A Jobs API client for `address` (e.g. "http://10.77.0.11:8265").

    The token goes in an explicit Authorization header: the SDK then leaves it alone
    instead of loading one from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token,
    and only does that at all when RAY_AUTH_MODE=token is set in this process.
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    check_address_env(address)
    try:
        return JobSubmissionClient(address, headers=auth_headers(token))
    except AuthenticationError as e:
        # The SDK's message names the env vars its own loader reads; ours is the token file.
        first = str(e).splitlines()[0]
        hint = "is it the cluster's token?" if token else "no token was given"
        raise JobsError(f"{address}: {first} ({hint})") from None
    except ConnectionError as e:
        raise JobsError(str(e)) from None


def entrypoint(script: Path, args: list[str]) -> str:
    """The shell command the job runs, from inside the script's folder."""
    return shlex.join(["python", script.name, *args])


def runtime_env(script: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Upload the script's folder as working_dir; `env` reaches the driver and its workers."""
    renv: dict[str, Any] = {"working_dir": str(script.resolve().parent)}
    if env:
        renv["env_vars"] = dict(env)
    return renv


def submit(client: JobSubmissionClient, script: Path, args: list[str], env: dict[str, str] | None = None) -> str:
    """Submit `python SCRIPT ARGS...`; returns the job's submission id."""
    if not script.is_file():
        raise JobsError(f"{script}: no such file")
    return client.submit_job(entrypoint=entrypoint(script, args), runtime_env=runtime_env(script, env))


def wait(client: _StatusSource, job_id: str, timeout_s: float, poll_s: float = POLL_S) -> JobStatus:
    """Poll until the job ends; raises JobTimeout after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            raise JobTimeout(f"job {job_id} still {status} after {timeout_s:.0f} s")
        time.sleep(min(poll_s, left))


def follow(client: JobSubmissionClient, job_id: str, out: TextIO, timeout_s: float = DEFAULT_TIMEOUT_S) -> JobStatus:
    """Stream the job's logs to `out` until it ends, then return its final status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    start = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(tail(), timeout_s))
    except TimeoutError:
        raise JobTimeout(f"job {job_id} still running after {timeout_s:.0f} s") from None
    # The log stream closes when the job ends; the status may lag it by a moment: poll it closely.
    return wait(client, job_id, max(timeout_s - (time.monotonic() - start), 10.0), poll_s=0.05)


# run() takes a `follow` flag, which hides the function of that name inside it.
_follow = follow


def run(
    address: str,
    token: str | None,
    script: Path,
    args: list[str],
    follow: bool,
    out: TextIO,
    env: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    stop_on_interrupt: Callable[[str], bool] = stop_without_asking,
) -> JobResult:
    """Submit `script`, wait for it to end (streaming its logs to `out` if `follow`).

    A job still running at the deadline is stopped, so nothing keeps running unattended; so is
    one interrupted (Ctrl-C), unless `stop_on_interrupt(job_id)` says to leave it running.
    """
    c = client(address, token)
    start = time.monotonic()
    job_id = submit(c, script, args, env)
    out.write(f"job {job_id} submitted to {address}\n")
    out.flush()
    try:
        status = _follow(c, job_id, out, timeout_s) if follow else wait(c, job_id, timeout_s)
    except JobTimeout:
        c.stop_job(job_id)
        raise
    except KeyboardInterrupt:
        if not stop_on_interrupt(job_id):
            raise JobInterrupted(f"job {job_id} keeps running on the cluster") from None
        c.stop_job(job_id)
        status = wait(c, job_id, 60)
        raise JobInterrupted(f"job {job_id} interrupted: {status.value}") from None
    info = c.get_job_info(job_id)
    if info.start_time and info.end_time:
        duration_s = (info.end_time - info.start_time) / 1000
    else:
        duration_s = time.monotonic() - start
    # Ray appends ", last available logs ...:" and the log tail, which `logs` already has.
    message = (info.message or "").partition("\n")[0].partition(", last available logs")[0]
    # Followed, the logs were streamed already.
    return JobResult(job_id, status, duration_s, "" if follow else c.get_job_logs(job_id), message)
