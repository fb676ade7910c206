"""The Dockerfiles, read statically, and their uv install steps replayed without Docker.

The replay copies what each builder stage copies into a temporary folder and runs the
stage's `uv sync` commands there, into a temporary virtual environment. It shows that
the lock file fits, that the image gets its own service and the `prebook` command line,
and that it leaves out the other services.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from deploy.deployfiles import IMAGE_MEMBERS, REPO_ROOT, Dockerfile, exec_form, resolve_prebook_command, workspace_members

DOCKERFILE_PATHS = sorted(IMAGE_MEMBERS)
# Every image needs the shared library, which the command line imports too.
SHARED_LIBRARY = "prebook-common"
# After `uv sync --locked`, uv's cache has every locked wheel, so a replay downloads
# nothing. Building the workspace's own wheels takes a few seconds more.
UV_SYNC_TIMEOUT_S = 300


@pytest.fixture(params=DOCKERFILE_PATHS)
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return Dockerfile.read(REPO_ROOT / request.param)


def _member_of(dockerfile: Dockerfile) -> str:
    return IMAGE_MEMBERS[str(dockerfile.path.relative_to(REPO_ROOT))]


def _uv_sync_commands(dockerfile: Dockerfile) -> list[list[str]]:
    commands = []
    for run in dockerfile.all("RUN", dockerfile.stage_named("builder")):
        words = shlex.split(run)
        # Drop BuildKit's --mount flags, which belong to RUN, not to the command.
        while words and words[0].startswith("--mount="):
            words.pop(0)
        if words[:2] == ["uv", "sync"]:
            commands.append(words)
    return commands


def test_dockerfile_multi_stage(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    assert dockerfile.stage_named("builder")


def test_builder_installs_uv(dockerfile: Dockerfile) -> None:
    builder = dockerfile.stage_named("builder")
    copies = dockerfile.all("COPY", builder)
    runs = dockerfile.all("RUN", builder)

    uv_from_image = any("--from=uv" in copy and "/uv" in copy for copy in copies)
    uv_from_pip = any("pip install uv" in run for run in runs)
    assert uv_from_image or uv_from_pip
    if uv_from_image:
        assert dockerfile.stages[0][0].arguments.startswith("ghcr.io/astral-sh/uv:")


def test_uv_sync_locked_without_dev(dockerfile: Dockerfile) -> None:
    commands = _uv_sync_commands(dockerfile)

    assert commands
    for command in commands:
        assert "--locked" in command
        assert "--no-dev" in command


def test_image_leaves_out_other_members(dockerfile: Dockerfile) -> None:
    final_sync = _uv_sync_commands(dockerfile)[-1]
    excluded = {final_sync[i + 1] for i, word in enumerate(final_sync) if word == "--no-install-package"}
    members = set(workspace_members().values())

    assert excluded == members - {_member_of(dockerfile), SHARED_LIBRARY}
    assert "--no-install-workspace" not in final_sync


def test_dependency_layer_copies_every_pyproject(dockerfile: Dockerfile) -> None:
    copies = dockerfile.all("COPY", dockerfile.stage_named("builder"))

    for directory in workspace_members():
        assert f"{directory}/pyproject.toml {directory}/" in copies
    assert "pyproject.toml uv.lock ./" in copies


def test_final_stage_runs_as_non_root(dockerfile: Dockerfile) -> None:
    users = dockerfile.all("USER", dockerfile.final_stage)

    assert users
    assert users[-1] not in ("root", "0", "0:0")


def test_final_stage_has_healthcheck(dockerfile: Dockerfile) -> None:
    healthchecks = dockerfile.all("HEALTHCHECK", dockerfile.final_stage)

    assert len(healthchecks) == 1
    command = exec_form(healthchecks[0].split(" CMD ", 1)[1])
    assert command[:3] == ["python", "-m", "prebook.healthcheck"]


def test_cmd_runs_prebook_command(dockerfile: Dockerfile, prebook_command: click.Command) -> None:
    command = exec_form(dockerfile.all("CMD", dockerfile.final_stage)[-1])

    assert command[0] == "prebook"
    resolve_prebook_command(prebook_command, command[1:])


def test_final_stage_copies_only_venv(dockerfile: Dockerfile) -> None:
    copies = dockerfile.all("COPY", dockerfile.final_stage)

    assert copies == ["--from=builder /app/.venv /app/.venv"]


def test_dockerignore_keeps_secrets_out() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()

    for pattern in (".env", ".venv", ".git", ".prebook"):
        assert pattern in ignored


def _replay_builder_copies(dockerfile: Dockerfile, context: Path) -> None:
    for arguments in dockerfile.all("COPY", dockerfile.stage_named("builder")):
        words = arguments.split()
        if any(word.startswith("--from=") for word in words):
            continue
        *sources, destination = words
        for source in sources:
            origin = REPO_ROOT / source
            target = context / destination / (origin.name if destination.endswith("/") else "")
            if origin.is_dir():
                shutil.copytree(origin, context / destination, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", ".venv", "*.pyc"))  # fmt: skip
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target if destination.endswith("/") else context / destination)


@pytest.mark.timeout(UV_SYNC_TIMEOUT_S * 2 + 60)
def test_builder_steps_replayed(dockerfile: Dockerfile, tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH, so the builder's uv steps cannot be replayed")

    context = tmp_path / "src"
    venv = tmp_path / "venv"
    context.mkdir()
    _replay_builder_copies(dockerfile, context)
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON": sys.executable,
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "copy",
        # The image compiles bytecode; the replay skips it to save time.
        "UV_COMPILE_BYTECODE": "0",
    }
    env.pop("VIRTUAL_ENV", None)

    for command in _uv_sync_commands(dockerfile):
        result = subprocess.run(
            [uv, *command[1:]], cwd=context, env=env, capture_output=True, text=True, timeout=UV_SYNC_TIMEOUT_S
        )
        assert result.returncode == 0, f"{shlex.join(command)} failed:\n{result.stderr}"

    python = venv / "bin" / "python"
    member_module = _member_of(dockerfile).replace("-", "_")
    installed = subprocess.run(
        [python, "-c", "import importlib.util as u, sys; print(*[n for n in sys.argv[1:] if u.find_spec(n)])",
         "prebook", "prebook_common", "prebook_gateway", "prebook_executor", "prebook_scheduler", "prebook_simulator"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    command = exec_form(dockerfile.all("CMD", dockerfile.final_stage)[-1])
    help_result = subprocess.run(
        [venv / "bin" / command[0], *command[1:2], "--help"], capture_output=True, text=True, timeout=60
    )
    usage_result = subprocess.run([python, "-m", "prebook.healthcheck"], capture_output=True, text=True, timeout=60)

    assert set(installed) == {"prebook", "prebook_common", member_module}
    assert help_result.returncode == 0, help_result.stderr
    assert usage_result.returncode == 2
    assert "usage: python -m prebook.healthcheck" in usage_result.stderr
