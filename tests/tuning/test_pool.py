"""The pool a study runs on: a job stops at the epoch end after it was cancelled, in this process
and in a worker process, and comes back as 'cancelled' (not an error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnntrick.comparison.executor import Job
from dnntrick.spec.config import apply_overrides, read_spec_file, validate
from dnntrick.tuning.pool import Pool
from tests.conftest import write_spec
from tests.tuning.test_tune import SPEC


@pytest.mark.integration
@pytest.mark.parametrize("slots", [1, 2], ids=["this process", "worker processes"])
def test_a_cancelled_job_stops_at_an_epoch_end(tmp_path: Path, tiny_root: Path, slots: int):
    path = write_spec(tmp_path, SPEC.format(root=tiny_root, epochs=200))
    spec = validate(apply_overrides(read_spec_file(path), []), str(path))
    epochs: list[int] = []

    def on_event(event):
        kind, job_id, payload = event
        if kind == "epoch" and payload.get("done"):
            epochs.append(payload["epoch"])
            pool.cancel(job_id)

    pool = Pool(tmp_path / "flags", on_event, slots=slots)
    try:
        pool.submit(Job(7, spec.model_dump(mode="json"), str(tmp_path / "runs")))
        outcomes = []
        while not outcomes:
            outcomes = pool.wait()
    finally:
        pool.close()
    assert [(o.id, o.status) for o in outcomes] == [(7, "cancelled")]
    assert epochs[0] == 1 and len(epochs) < 200  # in this process: exactly 1
    assert slots > 1 or epochs == [1]
