"""The pure parts of raykit.jobs: what gets submitted, headers, waiting. No cluster needed."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest
from ray.job_submission import JobStatus

from raykit import jobs


class FakeClient:
    def __init__(self, statuses: list[str]) -> None:
        self.statuses = [JobStatus(s) for s in statuses]
        self.calls = 0

    def get_job_status(self, job_id: str) -> JobStatus:
        self.calls += 1
        return self.statuses[min(self.calls, len(self.statuses)) - 1]


def test_entrypoint_runs_the_script_by_name_from_its_folder() -> None:
    assert jobs.entrypoint(Path("/repo/examples/tasks.py"), []) == "python tasks.py"


def test_entrypoint_quotes_arguments_for_the_shell() -> None:
    args = ["a b", "$HOME", "it's", "--flag=x;rm -rf /", ""]
    cmd = jobs.entrypoint(Path("examples/my script.py"), args)
    assert shlex.split(cmd) == ["python", "my script.py", *args]


def test_runtime_env_uploads_the_scripts_folder(tmp_path: Path) -> None:
    script = tmp_path / "ex" / "job.py"
    assert jobs.runtime_env(script) == {"working_dir": str(tmp_path / "ex")}


def test_runtime_env_working_dir_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert jobs.runtime_env(Path("job.py"))["working_dir"] == str(tmp_path)


def test_runtime_env_passes_env_vars(tmp_path: Path) -> None:
    env = {"RAYKIT_SERVE_PORT": "28000"}
    renv = jobs.runtime_env(tmp_path / "job.py", env)
    assert renv["env_vars"] == env and renv["env_vars"] is not env


def test_auth_header_is_a_bearer_token_without_the_files_newline() -> None:
    assert jobs.auth_headers("abc123\n") == {"Authorization": "Bearer abc123"}
    assert jobs.auth_headers(None) == {}
    assert jobs.auth_headers("") == {}


@pytest.mark.parametrize("name", jobs.ADDRESS_ENV_VARS)
def test_an_env_var_that_would_redirect_the_sdk_is_refused(name: str) -> None:
    with pytest.raises(jobs.JobsError, match=name):
        jobs.check_address_env("http://10.77.0.11:8265", {name: "http://elsewhere:8265"})


def test_an_env_var_naming_the_same_address_is_fine() -> None:
    jobs.check_address_env("http://10.77.0.11:8265", {"RAY_ADDRESS": "http://10.77.0.11:8265/"})
    jobs.check_address_env("http://10.77.0.11:8265", {})


def test_submit_refuses_a_missing_script(tmp_path: Path) -> None:
    with pytest.raises(jobs.JobsError, match="no such file"):
        jobs.submit(None, tmp_path / "nope.py", [])  # type: ignore[arg-type]


def test_wait_returns_the_terminal_status() -> None:
    c = FakeClient(["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"])
    assert jobs.wait(c, "j", timeout_s=5, poll_s=0.001) == "SUCCEEDED"
    assert c.calls == 4


def test_wait_gives_up_at_the_deadline() -> None:
    c = FakeClient(["RUNNING"])
    with pytest.raises(jobs.JobTimeout, match="still RUNNING"):
        jobs.wait(c, "j", timeout_s=0.05, poll_s=0.01)


def test_job_result_ok_only_when_succeeded() -> None:
    assert jobs.JobResult("j", JobStatus.SUCCEEDED, 1.0, "").ok
    assert not jobs.JobResult("j", JobStatus.FAILED, 1.0, "").ok


class InterruptedClient(FakeClient):
    """A job that runs until Ctrl-C (the first status poll is interrupted), then stops when asked."""

    def __init__(self) -> None:
        super().__init__(["RUNNING"])
        self.stopped: list[str] = []

    def submit_job(self, **kwargs: object) -> str:
        return "raysubmit_x"

    def get_job_status(self, job_id: str) -> JobStatus:
        if self.calls == 0:
            self.calls += 1
            raise KeyboardInterrupt
        return JobStatus.STOPPED if self.stopped else JobStatus.RUNNING

    def stop_job(self, job_id: str) -> bool:
        self.stopped.append(job_id)
        return True


@pytest.mark.parametrize("stop", [True, False])
def test_ctrl_c_stops_the_job_unless_told_to_leave_it_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stop: bool
) -> None:
    fake = InterruptedClient()
    monkeypatch.setattr(jobs, "client", lambda address, token: fake)
    script = tmp_path / "x.py"
    script.write_text("")
    asked: list[str] = []

    def answer(job_id: str) -> bool:
        asked.append(job_id)
        return stop

    message = "interrupted: STOPPED" if stop else "keeps running on the cluster"
    with pytest.raises(jobs.JobInterrupted, match=message):
        jobs.run("http://h:8265", "t", script, [], follow=False, out=io.StringIO(), stop_on_interrupt=answer)
    assert asked == ["raysubmit_x"]
    assert fake.stopped == (["raysubmit_x"] if stop else [])
