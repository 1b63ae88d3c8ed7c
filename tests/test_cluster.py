"""Generation on a real multi-node Ray cluster on one machine (ray.cluster_utils.Cluster: a
head and worker nodes, 1 CPU each): the same bytes as one in-process loop, and a worker node
lost without warning mid-job (a replacement added) still ends with every image exactly once."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from backends.config import GANConfig
from run_fixtures import init_random_run
from service import generation

REPO = Path(__file__).resolve().parents[1]
BACKEND = "numpy"
TINY = dict(image_size=32, width=8, max_width=32, latent_dim=16)
COUNT, SHARD = 60, 10


@pytest.fixture
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def run_and_reference(tmp_path_factory):
    run = init_random_run(tmp_path_factory.mktemp("cluster") / "run", GANConfig(**TINY), seed=3)
    out = tmp_path_factory.mktemp("reference") / "out"
    generation.generate_in_process(generation.plan_job(run, COUNT, out, seed=5, backend=BACKEND, shard_size=SHARD))
    return run, digests(out)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("img_*.png"))}


@pytest.mark.slow
def test_generate_on_a_two_node_cluster_gives_the_in_process_bytes(cluster, run_and_reference, tmp_path):
    (head, _), (run, reference) = cluster, run_and_reference
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "service.run", "generate", "--run", str(run), "--count", str(COUNT), "--out", str(out),
         "--seed", "5", "--backend", BACKEND, "--shard-size", str(SHARD), "--address", head.address, "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-1000:]
    assert digests(out) == reference


def gated(started_dir: Path, go: Path):
    """A shard task that marks that it started, then waits for `go` before doing the real work:
    the test knows which tasks are in flight when it pulls a node out. Defined in a function so
    Ray ships it by value."""

    def task(job, shard):
        (started_dir / f"{shard}-{os.getpid()}").touch()
        deadline = time.monotonic() + 300
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return generation.run_shard_task(job, shard)

    return task


def lose_the_worker_node_mid_run(drive, head, worker, started: Path, go: Path):
    """Run `drive()` (a job's or a search's driver) in a thread; once two gated tasks have
    started (one on each node), remove the worker node without warning and add a replacement,
    then let the tasks go. Returns what `drive()` returned; raises what it raised."""
    import threading

    outcome = {}

    def target():
        try:
            outcome["result"] = drive()
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = e

    driver = threading.Thread(target=target)
    driver.start()
    try:
        deadline = time.monotonic() + 300
        while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(started.iterdir())) == 2  # one task in flight on each node
        head.remove_node(worker, allow_graceful=False)  # its task dies with it
        head.add_node(num_cpus=1)
    finally:
        go.touch()
        driver.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    return outcome["result"]


@pytest.mark.slow
def test_a_worker_node_lost_mid_job_still_gives_every_image_once(cluster, run_and_reference, tmp_path):
    (head, worker), (run, reference) = cluster, run_and_reference
    started, go = tmp_path / "started", tmp_path / "go"
    started.mkdir()
    out = tmp_path / "out"
    job = generation.plan_job(run, COUNT, out, seed=5, backend=BACKEND, shard_size=SHARD)
    ray.init(address=head.address, logging_level="ERROR", log_to_driver=False)  # no late worker lines in later tests

    result = lose_the_worker_node_mid_run(
        lambda: generation.generate_on_ray(job, workers=2, progress=False, shard_task=gated(started, go)),
        head, worker, started, go,
    )
    assert len(list(started.iterdir())) > COUNT // SHARD  # a task was started again after the loss
    assert result.shards_run == COUNT // SHARD
    assert digests(out) == reference
    rows = (out / "manifest.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(COUNT))


def gated_trial(started_dir: Path, go: Path):
    """A Tune trial that marks that it started, waits for `go`, then is the real trial."""

    def trial(params, **kwargs):
        from service.tune import run_trial

        (started_dir / f"{os.getpid()}").touch()
        deadline = time.monotonic() + 300
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return run_trial(params, **kwargs)

    return trial


@pytest.mark.slow
def test_a_node_lost_mid_search_still_finishes_every_trial(cluster, tmp_path):
    """Two trials, one on each node; the worker node is removed without warning and a
    replacement added: its trial is started again there, and both finish."""
    from service.tune import TuneSettings, load_dataset, run_tune

    head, worker = cluster
    started, go = tmp_path / "started", tmp_path / "go"
    started.mkdir()
    settings = TuneSettings(trials=2, time_budget=600, out_dir=tmp_path / "search", backend=BACKEND, epochs=2,
                            widths=(8,), batch_sizes=(16,), seed=3, address=head.address)
    settings.base = GANConfig(image_size=32, width=8, max_width=16, latent_dim=16, batch_size=16).to_dict()
    dataset = load_dataset(None, 32, max_images=80, seed=3)
    summary = lose_the_worker_node_mid_run(
        lambda: run_tune(settings, dataset, trial=gated_trial(started, go)), head, worker, started, go,
    )
    rows = summary["rows"]
    # Both trials report; ASHA may stop the worse one after its first epoch, depending on which
    # reaches that rung first, so a trial has 1 or 2 epochs.
    assert len(rows) == 2 and all(r["status"] == "reported" and 1 <= r["epochs"] <= 2 for r in rows)
    assert max(r["epochs"] for r in rows) == 2  # the first to reach a rung is never stopped there
    assert len(list(started.iterdir())) == 3  # the lost trial started once more


@pytest.mark.slow
def test_local_ray_starts_its_own_instead_of_joining_a_cluster_already_on_the_machine(cluster):
    """Without --address the tool runs its own local Ray, even while another program's cluster
    runs on this machine (a plain ray.init() would join that one, or refuse the CPU count)."""
    from service.ray_cluster import ray_session

    head, _ = cluster
    with ray_session(num_cpus=2) as session:
        assert session.cluster_resources().get("CPU") == 2  # the other cluster has 2 one-CPU nodes too
        assert session.get_runtime_context().gcs_address != head.address  # so tell them by address


@pytest.mark.parametrize("environ, short", [
    ({}, False),
    ({"TMPDIR": "/tmp"}, False),
    ({"TMPDIR": "/scratch/" + "t" * 20}, False),
    ({"TMPDIR": "/scratch/" + "t" * 60}, True),
    ({"RAY_TMPDIR": "/scratch/" + "r" * 60, "TMPDIR": "/tmp"}, True),
    ({"RAY_TMPDIR": "/r", "TMPDIR": "/scratch/" + "t" * 60}, False),
])
def test_local_ray_moves_its_session_to_a_short_folder_when_the_temp_folder_is_too_long(environ, short):
    from service.ray_cluster import SOCKET_PATH_LIMIT, SOCKET_TAIL, local_temp_dir

    chosen = local_temp_dir(environ)
    assert (chosen is not None) == short
    if short:
        assert chosen.startswith("/tmp/") and len(chosen) + SOCKET_TAIL - len("/ray") <= SOCKET_PATH_LIMIT


@pytest.mark.slow
def test_a_long_tmpdir_still_runs_local_ray(tmp_path):
    """Ray's socket path under a 100-byte TMPDIR would pass the 107-byte AF_UNIX limit (Ray
    stopped with an OSError traceback): the session goes under /tmp and the task runs."""
    long_tmp = tmp_path / ("t" * max(1, 100 - len(str(tmp_path)) - 1))
    long_tmp.mkdir()
    script = ("from service.ray_cluster import ray_session\n"
              "with ray_session(num_cpus=1) as ray:\n"
              "    print(ray.get(ray.remote(lambda: 41).remote()) + 1)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(long_tmp), "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and done.stdout.strip() == "42", done.stderr[-2000:]
