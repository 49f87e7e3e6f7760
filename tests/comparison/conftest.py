"""Fixtures of the comparison tests: one local Ray instance for the whole session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory):
    import ray

    # the workers start now, before any test's environment: give them the tests' rules
    env = {"DNNTRICK_NO_DOWNLOAD": "1", "DNNTRICK_CACHE": str(tmp_path_factory.mktemp("ray"))}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={"env_vars": env},
    )
    yield ray
    ray.shutdown()
