"""TensorFlow's thread count follows LESIONGAN_TF_THREADS, and its deprecated name still works."""

import json
import os
import subprocess
import sys

import pytest

PROBE = "import json; from backends.tf.runtime import THREADS; print(json.dumps(THREADS))"


def _threads(env_overrides: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LESIONGAN_TF_THREADS", "DCGAN_TF_THREADS", "LESIONGAN_TF_INTER_THREADS")}
    env.update(env_overrides)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_deprecated_name_still_sets_the_intra_op_pool():
    assert _threads({"DCGAN_TF_THREADS": "3"})["intra_op"] == 3


@pytest.mark.slow
def test_the_new_name_sets_the_pool_and_wins_over_the_deprecated_one():
    assert _threads({"LESIONGAN_TF_THREADS": "2", "DCGAN_TF_THREADS": "3"})["intra_op"] == 2


@pytest.mark.slow
def test_the_inter_op_pool_follows_its_variable_and_stays_small_without_it():
    assert _threads({"LESIONGAN_TF_THREADS": "1", "LESIONGAN_TF_INTER_THREADS": "2"}) == {"intra_op": 1, "inter_op": 2}
    assert _threads({"LESIONGAN_TF_THREADS": "2"})["inter_op"] == 1
