"""Readers of the deployment files for the tests in this folder."""

from __future__ import annotations

import json
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
# compose service name -> Dockerfile of its image, relative to the repository root.
DOCKERFILES = {
    "gateway": "services/gateway/Dockerfile",
    "executor": "services/executor/Dockerfile",
    "scheduler": "services/scheduler/Dockerfile",
    "sim": "simulator/Dockerfile",
}
# The workspace member each image runs.
IMAGE_MEMBERS = {
    "services/gateway/Dockerfile": "prebook-gateway",
    "services/executor/Dockerfile": "prebook-executor",
    "services/scheduler/Dockerfile": "prebook-scheduler",
    "simulator/Dockerfile": "prebook-simulator",
}


def workspace_members() -> dict[str, str]:
    """Workspace member directory -> distribution name, from the root pyproject.toml."""
    root = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    members = {}
    for directory in root["tool"]["uv"]["workspace"]["members"]:
        project = tomllib.loads((REPO_ROOT / directory / "pyproject.toml").read_text())
        members[directory] = project["project"]["name"]
    return members


def resolve_prebook_command(group: click.Command, args: list[str]) -> click.Command:
    """Return the subcommand that ``prebook ARGS`` runs, after parsing its options.

    Raises click.UsageError for an unknown command or option, or a missing argument.
    """
    command = group
    remaining = list(args)
    path = ["prebook"]
    while isinstance(command, click.Group):
        if not remaining:
            raise click.UsageError(f"`{' '.join(path)}` needs a subcommand")
        name = remaining.pop(0)
        subcommand = command.get_command(click.Context(command), name)
        if subcommand is None:
            raise click.UsageError(f"`{' '.join(path)}` has no subcommand {name!r}")
        command = subcommand
        path.append(name)
    command.make_context(" ".join(path), remaining)
    return command


@dataclass
class Instruction:
    keyword: str
    arguments: str


@dataclass
class Dockerfile:
    """A Dockerfile split into stages of instructions, continuation lines joined."""

    path: Path
    stages: list[list[Instruction]]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        stages: list[list[Instruction]] = []
        logical = ""
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if not logical and (not stripped or stripped.startswith("#")):
                continue
            if stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                logical += stripped[:-1] + " "
                continue
            logical += stripped
            keyword, _, arguments = logical.partition(" ")
            instruction = Instruction(keyword.upper(), arguments.strip())
            logical = ""
            if instruction.keyword == "FROM":
                stages.append([instruction])
            elif stages:
                stages[-1].append(instruction)
            # An ARG before the first FROM only parameterizes the FROM lines.
        return cls(path, stages)

    @property
    def final_stage(self) -> list[Instruction]:
        return self.stages[-1]

    def stage_named(self, name: str) -> list[Instruction]:
        for stage in self.stages:
            words = stage[0].arguments.split()
            if len(words) >= 3 and words[-2].upper() == "AS" and words[-1] == name:
                return stage
        raise LookupError(f"{self.path} has no stage named {name!r}")

    def all(self, keyword: str, stage: list[Instruction] | None = None) -> list[str]:
        instructions = stage if stage is not None else [i for s in self.stages for i in s]
        return [instruction.arguments for instruction in instructions if instruction.keyword == keyword]


def exec_form(arguments: str) -> list[str]:
    """The argument list of an exec-form (JSON) or shell-form CMD/HEALTHCHECK."""
    text = arguments.strip()
    if text.startswith("["):
        return json.loads(text)
    return shlex.split(text)
