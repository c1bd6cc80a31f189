"""The deployment files: docker-compose.yml parses and has the promised topology, its commands are valid
CLI invocations, the Dockerfile builds the CPU image by default (``docker compose config`` where the
Docker CLI has compose). The same topology runs as processes in ``tests/test_workers.py``."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _defaults(value: str) -> str:
    """Compose interpolation with the defaults: ``${VAR:-default}`` -> ``default``."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_services_and_persistence(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "api", "sampler", "trainer", "energy-worker"}
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    volume, mount = redis["volumes"][0].split(":")[:2]
    assert mount == "/data" and volume in compose["volumes"]
    assert "healthcheck" in redis


def test_app_services_reach_redis_and_share_checkpoints(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("api", "sampler", "trainer", "energy-worker"):
        service = services[name]
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:6379")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["build"]["args"]["TORCH_VARIANT"] == "${TORCH_VARIANT:-cpu}"
    trainer_volume, trainer_mount = services["trainer"]["volumes"][0].split(":")[:2]
    api_volume, _, mode = services["api"]["volumes"][0].split(":")
    assert trainer_volume == api_volume and trainer_volume in compose["volumes"] and mode == "ro"
    out = _defaults(services["trainer"]["command"][services["trainer"]["command"].index("--out") + 1])
    assert out.startswith(trainer_mount + "/")  # the trainer checkpoints onto the shared volume


def test_energy_workers_scale(compose: dict[str, Any]) -> None:
    """``--scale energy-worker=N`` needs no fixed container name and no host port."""
    worker = compose["services"]["energy-worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_commands_are_valid_cli_invocations(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, service in compose["services"].items():
        if name == "redis":
            continue
        argv = [_defaults(str(a)) for a in service["command"]]
        args = parser.parse_args(argv)
        assert args.command == argv[0]
        if name == "trainer":  # the conformer model by default (DW-4: TRAINING=dw4 ENERGY_MODEL=dw4 RUN=dw4)
            assert args.config == "torsional" and args.out == Path("/checkpoints/conformers.pt")
            assert args.run == "conformers" and args.config_file is None
        if name == "energy-worker":
            assert args.model == "mmff"  # serves the trainer's energy (the torsional run trains on MMFF94)
        if name in ("api", "sampler"):  # they serve the run's newest published checkpoint
            assert _defaults(service["environment"]["ADJOINT_SAMPLING_WATCH_RUN"]) == "conformers"
        if name == "api":
            assert args.host == "0.0.0.0" and args.port == 8000 and args.inprocess_workers == 0
        if name == "sampler":
            assert args.worker == "sample"  # the api leaves its queued jobs to these


def test_trainer_command_passes_through_torchrun(compose: dict[str, Any]) -> None:
    """With the documented torchrun entrypoint, torchrun's parser must leave the trainer's command whole."""
    from torch.distributed.run import get_args_parser

    command = [_defaults(str(a)) for a in compose["services"]["trainer"]["command"]]
    args = get_args_parser().parse_args(["--nproc-per-node", "2", "-m", "cli.main", *command])
    assert args.module and args.training_script == "cli.main" and args.training_script_args == command


def test_dockerfile_cpu_default_and_pinned_install() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M)
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"' in text
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", text, re.M)
    assert "pip install -c constraints.txt -e ." in text
    for source in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="the docker CLI with the compose plugin is not installed")
def test_docker_compose_config_parses() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
