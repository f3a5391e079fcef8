"""cluster.yaml (the `ray up` config for multi-node GPU training) is well-formed and consistent."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    with open(CLUSTER_YAML) as f:
        cfg = yaml.safe_load(f)
    assert isinstance(cfg, dict), "cluster.yaml must be a mapping"
    return cfg


def test_head_node_type_exists(config: dict) -> None:
    types = config["available_node_types"]
    assert config["head_node_type"] in types


def test_every_referenced_node_type_is_defined(config: dict) -> None:
    types = config["available_node_types"]
    referenced = {config["head_node_type"]}
    # Other places a node type can be named: docker overrides per type and worker_default_node_type
    # (older configs).
    if config.get("worker_default_node_type"):
        referenced.add(config["worker_default_node_type"])
    for name in referenced:
        assert name in types, f"node type {name!r} is used but not in available_node_types"


def test_gpu_workers_declare_gpus(config: dict) -> None:
    types = config["available_node_types"]
    workers = {n: t for n, t in types.items() if n != config["head_node_type"]}
    gpu_workers = {n: t for n, t in workers.items() if "gpu" in n.lower() or "GPU" in (t.get("resources") or {})}
    assert gpu_workers, "expected at least one GPU worker node type"
    for name, spec in gpu_workers.items():
        resources = spec.get("resources") or {}
        assert resources.get("GPU", 0) >= 1, f"{name} must declare GPU in resources"
        assert resources.get("CPU", 0) >= 1, f"{name} should declare its CPUs too"
        assert spec["node_config"].get("InstanceType"), f"{name} needs an instance type"
    assert any(t["resources"]["GPU"] == 8 for t in gpu_workers.values()), "expected an 8-GPU node type"


def test_worker_bounds(config: dict) -> None:
    types = config["available_node_types"]
    total_min = 0
    for name, spec in types.items():
        lo, hi = spec.get("min_workers", 0), spec.get("max_workers", config["max_workers"])
        assert 0 <= lo <= hi, f"{name}: min_workers {lo} > max_workers {hi}"
        if name != config["head_node_type"]:
            total_min += lo
    assert config["max_workers"] >= total_min
    assert config["max_workers"] >= max(
        t.get("max_workers", 0) for n, t in types.items() if n != config["head_node_type"]
    )


def test_token_auth_enabled_on_every_node(config: dict) -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts, f"{key} has no `ray start`"
        for cmd in starts:
            assert "RAY_AUTH_MODE=token" in cmd, f"{key}: `ray start` without RAY_AUTH_MODE=token"
    # The token file every node reads (Ray's default path) is shipped to all nodes.
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_head_start_uses_autoscaling_config_and_local_dashboard(config: dict) -> None:
    head = " ".join(config["head_start_ray_commands"])
    assert "--head" in head and "--autoscaling-config" in head
    assert "--dashboard-host=127.0.0.1" in head


def test_setup_installs_the_project(config: dict) -> None:
    setup = " ".join(config["setup_commands"])
    assert "raytune-bsm" in setup and "torch==" in setup and "ray[" in setup


def test_valid_for_ray_cluster_launcher(config: dict) -> None:
    """Ray's own schema check, after filling defaults as `ray up` does (no cloud calls)."""
    util = pytest.importorskip("ray.autoscaler._private.util")
    prepared = util.prepare_config(copy.deepcopy(config))
    util.validate_config(prepared)


def test_cluster_installs_the_ray_version_the_client_pins(config: dict) -> None:
    """The Jobs API client and the cluster must run the same Ray: pyproject pins it, cluster.yaml installs it,
    and any container image it names is one that exists for that version (ray-ml images stopped after 2.49)."""
    import re

    import tomllib

    deps = tomllib.loads((CLUSTER_YAML.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = [re.search(r"==([\d.]+)", d).group(1) for d in deps if d.startswith("ray[")]
    assert len(pinned) == 1, deps
    setup = " ".join(config["setup_commands"])
    assert f"==={pinned[0]}" not in setup and f'=={pinned[0]}"' in setup, setup
    text = CLUSTER_YAML.read_text()
    images = re.findall(r"rayproject/[\w-]+:[\w.-]+", text)
    assert images, "cluster.yaml should name the container image to use"
    for image in images:
        assert image.startswith(f"rayproject/ray:{pinned[0]}-py3") and image.endswith("-gpu"), image
