"""GAE and REINFORCE++ whiten over the global batch on 2 ranks (gloo), as verl and Search-R1 do; GRPO/RLOO untouched.

``whiten_worker.py`` runs ``build_update_batch`` on each rank's shard with the ranks' ``Lockstep`` (one all-reduce
of the whitening moments) and compares with one process over the whole batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow


def test_two_ranks_whiten_like_one_process_over_the_whole_batch(tmp_path):
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*run, str(HERE / "whiten_worker.py"), str(tmp_path)], capture_output=True, text=True,
                          timeout=180, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(ranks[0]["rows"] + ranks[1]["rows"]) == list(range(12))
    for r in ranks:
        for estimator in ("gae", "reinforce_pp"):
            # float32 rounding of the same numbers (the moments are summed in float64 in another order)
            assert r[estimator]["global"] < 1e-6, (estimator, r[estimator])
            # the negative control: each rank whitening its own half is visibly different (0.13-0.77 here)
            assert r[estimator]["per_rank"] > 1e-2, (estimator, r[estimator])
        for estimator in ("grpo", "rloo"):  # groups never span ranks: nothing to reduce, exactly equal
            assert r[estimator] == {"global": 0.0, "per_rank": 0.0}
