"""compose.yaml, checked statically against the code its containers run."""

from __future__ import annotations

import importlib.resources
import json
import re
from urllib.parse import urlsplit

import click
import jsonschema
import pytest
from sqlalchemy.engine import make_url

from deploy.deployfiles import DOCKERFILES, REPO_ROOT, resolve_prebook_command
from prebook_common.settings import Settings

PREBOOK_SERVICES = ("gateway", "executor", "scheduler")
DEMO_SERVICES = ("sim", "demo-seed")
SECRET_VARIABLES = (
    "PREBOOK_TOKEN_SECRET",
    "PREBOOK_QSTASH_CURRENT_SIGNING_KEY",
    "PREBOOK_QSTASH_NEXT_SIGNING_KEY",
    "PREBOOK_SESSION_ENCRYPTION_KEYS",
)
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message} or ${NAME?message}.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?])(?P<rest>[^}]*))?\}")


def _environment(service: dict) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment must be a mapping, so the tests can read it"
    return {name: str(value) for name, value in environment.items()}


def _default_of(value: str) -> str:
    """The value Compose substitutes when the variables are unset and have defaults."""
    return INTERPOLATION.sub(lambda match: match["rest"] if match["operator"] in (":-", "-") else "", value)


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in _strings(value)]
    return []


def _container_ports(service: dict) -> set[int]:
    ports = set()
    for mapping in service.get("ports", []):
        ports.add(int(str(mapping).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_valid_against_spec(compose: dict) -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())

    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(compose), key=lambda error: list(error.path))

    assert [f"{list(error.path)}: {error.message}" for error in errors] == []


def test_compose_has_every_service(services: dict) -> None:
    expected = {"nats", "postgres", "jaeger", *PREBOOK_SERVICES, *DEMO_SERVICES, "qstash"}

    assert set(services) == expected


@pytest.mark.parametrize("name", [*PREBOOK_SERVICES, *DEMO_SERVICES])
def test_service_command_exists(services: dict, prebook_command: click.Command, name: str) -> None:
    command = services[name]["command"]

    assert command[0] == "prebook"
    resolve_prebook_command(prebook_command, command[1:])


def test_core_commands_match_names(services: dict) -> None:
    for name in PREBOOK_SERVICES:
        assert services[name]["command"] == ["prebook", name]


@pytest.mark.parametrize("name", [*PREBOOK_SERVICES, *DEMO_SERVICES])
def test_prebook_variables_are_settings(services: dict, name: str) -> None:
    fields = {f"PREBOOK_{field.upper()}" for field in Settings.model_fields}

    unknown = {
        variable
        for variable in _environment(services[name])
        if variable.startswith("PREBOOK_") and variable not in fields
    }

    assert unknown == set()


def test_tracing_endpoint_points_at_jaeger(services: dict) -> None:
    jaeger_ports = _container_ports(services["jaeger"])

    for name in [*PREBOOK_SERVICES, "demo-seed"]:
        endpoint = urlsplit(_environment(services[name])["PREBOOK_OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert endpoint.hostname == "jaeger"
        assert endpoint.port == 4318
    assert {4317, 4318, 16686} <= jaeger_ports
    assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:2.")


def test_gateway_port_matches_settings(services: dict) -> None:
    gateway = services["gateway"]
    environment = _environment(gateway)
    port = int(environment.get("PREBOOK_GATEWAY_PORT", Settings.model_fields["gateway_port"].default))

    assert environment["PREBOOK_GATEWAY_HOST"] == "0.0.0.0"
    assert port in _container_ports(gateway)
    assert f"EXPOSE {port}" in (REPO_ROOT / DOCKERFILES["gateway"]).read_text()


def test_service_urls_name_compose_services(services: dict) -> None:
    postgres = _environment(services["postgres"])

    for name in [*PREBOOK_SERVICES, "demo-seed"]:
        environment = _environment(services[name])
        nats = urlsplit(environment["PREBOOK_NATS_URL"])
        database = make_url(_default_of(environment["PREBOOK_DATABASE_URL"]))
        public = urlsplit(_default_of(environment["PREBOOK_PUBLIC_URL"]))

        assert (nats.scheme, nats.hostname, nats.port) == ("nats", "nats", 4222)
        assert database.drivername == "postgresql+asyncpg"
        assert (database.host, database.port) == ("postgres", 5432)
        assert database.username == postgres["POSTGRES_USER"]
        assert database.database == postgres["POSTGRES_DB"]
        assert (public.hostname, public.port) == ("gateway", 8000)


def test_local_delivery_reaches_gateway_callback(services: dict) -> None:
    from prebook_gateway.app import create_app

    routes = create_app(Settings()).openapi()["paths"]
    delivery = urlsplit(_environment(services["scheduler"])["PREBOOK_LOCAL_DELIVERY_URL"])

    assert (delivery.hostname, delivery.port) == ("gateway", 8000)
    assert delivery.path in routes
    assert "post" in routes[delivery.path]


def test_secrets_required_without_defaults(compose: dict, services: dict) -> None:
    for name in [*PREBOOK_SERVICES, "demo-seed"]:
        environment = _environment(services[name])
        for variable in SECRET_VARIABLES:
            match = INTERPOLATION.fullmatch(environment[variable])
            assert match is not None, f"{name}: {variable} must come from .env"
            assert (match["name"], match["operator"]) == (variable, ":?")

    password = INTERPOLATION.fullmatch(_environment(services["postgres"])["POSTGRES_PASSWORD"])
    assert password is not None
    assert password["operator"] == ":?"


def test_interpolations_contain_no_braces(compose: dict) -> None:
    # Compose ends ${NAME:-default} at the first closing brace, so a default or message
    # with braces in it would be cut short and the rest pasted after the value.
    for text in _strings(compose):
        for start in [match.start() for match in re.finditer(r"\$\{", text)]:
            match = INTERPOLATION.match(text, start)
            assert match is not None, f"malformed or brace-containing interpolation in {text!r}"
            assert "{" not in (match["rest"] or "")


def test_healthchecks_exist(services: dict) -> None:
    for name in ("nats", "postgres", *PREBOOK_SERVICES, "sim"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", f"{name}: exec form, so no shell is needed in the image"


def test_nats_healthcheck_uses_monitor_port(services: dict) -> None:
    nats = services["nats"]
    monitor_port = _option(nats["command"], "-m")
    url = nats["healthcheck"]["test"][-1]

    assert "-js" in nats["command"]
    assert url == f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true"


def test_postgres_healthcheck_uses_pg_isready(services: dict) -> None:
    postgres = services["postgres"]
    test = postgres["healthcheck"]["test"]

    assert test[1] == "pg_isready"
    assert _option(test, "-U") == postgres["environment"]["POSTGRES_USER"]
    assert _option(test, "-d") == postgres["environment"]["POSTGRES_DB"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("gateway", ["gateway"]), ("executor", ["nats"]), ("scheduler", ["nats"])],
)
def test_service_healthcheck_runs_module(services: dict, name: str, expected: list[str]) -> None:
    from prebook import healthcheck

    test = services[name]["healthcheck"]["test"]

    assert test[1:4] == ["python", "-m", "prebook.healthcheck"]
    assert test[4:] == expected
    assert healthcheck.main(["no-such-check"]) == 2


def test_gateway_healthcheck_route_exists() -> None:
    from prebook_gateway.app import create_app

    routes = create_app(Settings()).openapi()["paths"]

    assert "/readyz" in routes


def test_sim_healthcheck_matches_its_port(services: dict) -> None:
    sim = services["sim"]
    url = urlsplit(sim["healthcheck"]["test"][-1])

    assert sim["healthcheck"]["test"][1:5] == ["python", "-m", "prebook.healthcheck", "http"]
    assert url.port == int(_option(sim["command"], "--port"))
    assert url.path == "/_sim/config"
    assert _option(sim["command"], "--host") == "0.0.0.0"


@pytest.mark.parametrize("name", PREBOOK_SERVICES)
def test_services_wait_for_healthy_storage(services: dict, name: str) -> None:
    depends_on = services[name]["depends_on"]

    assert depends_on["nats"]["condition"] == "service_healthy"
    assert depends_on["postgres"]["condition"] == "service_healthy"


def test_dependencies_have_healthchecks(services: dict) -> None:
    # service_healthy on a service without a health check would never be met.
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy"


def test_dependencies_share_profiles(services: dict) -> None:
    # A service may not depend on one that its profiles can leave out.
    for name, service in services.items():
        profiles = set(service.get("profiles", []))
        for dependency in service.get("depends_on", {}):
            dependency_profiles = set(services[dependency].get("profiles", []))
            assert not dependency_profiles or dependency_profiles >= profiles, f"{name} -> {dependency}"


def test_storage_on_named_volumes(compose: dict, services: dict) -> None:
    nats_store = _option(services["nats"]["command"], "-sd")

    assert f"nats-data:{nats_store}" in services["nats"]["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert {"nats-data", "postgres-data"} <= set(compose["volumes"])


def test_core_services_in_every_profile(services: dict) -> None:
    for name in ("nats", "postgres", "jaeger", *PREBOOK_SERVICES):
        assert "profiles" not in services[name]


def test_demo_profile_seeds_on_simulator(services: dict) -> None:
    seed = services["demo-seed"]["command"]
    sim_url = urlsplit(_option(seed, "--sim-url"))

    for name in DEMO_SERVICES:
        assert services[name]["profiles"] == ["demo"]
    assert seed[1:3] == ["demo", "seed"]
    assert "--wait" in seed
    assert sim_url.hostname == "sim"
    assert sim_url.port == int(_option(services["sim"]["command"], "--port"))
    assert services["demo-seed"]["restart"] == "no"


def test_qstash_dev_profile_avoids_sim_port(services: dict) -> None:
    qstash = services["qstash"]
    port = int(next(argument for argument in qstash["command"] if argument.startswith("-port=")).split("=")[1])

    assert qstash["profiles"] == ["qstash-dev"]
    assert qstash["command"][:2] == ["qstash", "dev"]
    assert port in _container_ports(qstash)
    assert port not in _container_ports(services["sim"])


def test_scheduler_backend_configurable(services: dict) -> None:
    environment = _environment(services["scheduler"])

    for variable in ("PREBOOK_SCHEDULER_BACKEND", "PREBOOK_QSTASH_URL", "PREBOOK_QSTASH_TOKEN"):
        match = INTERPOLATION.fullmatch(environment[variable])
        assert match is not None
        assert match["name"] == variable


def test_built_services_use_dockerfiles(services: dict) -> None:
    for name, dockerfile in DOCKERFILES.items():
        build = services[name]["build"]
        assert build["context"] == "."
        assert build["dockerfile"] == dockerfile
        assert (REPO_ROOT / dockerfile).is_file()
    assert services["demo-seed"]["build"] == services["sim"]["build"]
    assert services["demo-seed"]["image"] == services["sim"]["image"]


def test_env_example_lists_every_setting() -> None:
    text = (REPO_ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^(?:# )?(PREBOOK_[A-Z0-9_]+)=", text, re.MULTILINE))

    assert listed == {f"PREBOOK_{field.upper()}" for field in Settings.model_fields}
