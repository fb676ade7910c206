"""Fixtures for the deployment files: compose.yaml, the Dockerfiles and the command line.

No Docker engine is needed. compose.yaml and the Dockerfiles are read as text and
checked against the code they run: the typer app's commands, the Settings fields and
the gateway's routes.
"""

from __future__ import annotations

import click
import pytest
import typer
import yaml

from deploy.deployfiles import COMPOSE_FILE


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="session")
def prebook_command() -> click.Command:
    """The click command behind ``prebook``, with every registered subcommand."""
    from prebook.cli import app

    return typer.main.get_command(app)
