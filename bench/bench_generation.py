"""Generation at scale: Ray with 2 workers against one in-process loop, a 2-node cluster against
1 node, and memory flatness in N.

Run: `pytest bench/bench_generation.py --benchmark-only -s`

1. Throughput: the same job (thesis architecture, GANConfig() defaults, 64x64, random weights
   saved as a checkpoint: what G learnt does not change its speed) once in this process and
   once on a local Ray with 2 workers, side by side; prints images/s of both and the ratio
   (target >= 0.9). The local Ray cluster is started before the clock starts (as an existing
   cluster would be); worker start-up and model loading are inside the timed part.
2. Memory: peak RSS of the driver and of each worker, each job in a fresh process with a fresh
   local Ray, for a small and a 10x larger count; prints the ratios (target <= 1.2).
3. Nodes: the same job on a multi-node Ray cluster on this machine (ray.cluster_utils.Cluster)
   of 1 node with 1 CPU, then of 2 nodes with 1 CPU each; prints images/s of both and the
   ratio (target >= 1.8), and checks that both gave the same bytes.

Sizes are environment knobs because a full-size run takes hours on a small CPU machine:
  BENCH_GEN_COUNT          images for the throughput case (default 10000)
  BENCH_GEN_BACKEND        tf (default) or numpy
  BENCH_GEN_MEMORY_COUNTS  "small,large" counts for the memory case (default 10000,100000)
  BENCH_GEN_MEMORY_ARCH    "thesis" (default) or "small" (32x32, width 8: same machinery, faster)
  BENCH_GEN_FORMAT         png (default) or tar: the output format of the memory case
  BENCH_GEN_NODES_COUNT    images for the nodes case (default 2000)
The figures printed name the sizes actually used.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

from backends.config import GANConfig
from run_fixtures import init_random_run  # tests/run_fixtures.py, on the path by bench/conftest.py
from service import generation

COUNT = int(os.environ.get("BENCH_GEN_COUNT", 10_000))
BACKEND = os.environ.get("BENCH_GEN_BACKEND", "tf")
MEMORY_COUNTS = tuple(int(c) for c in os.environ.get("BENCH_GEN_MEMORY_COUNTS", "10000,100000").split(","))
MEMORY_ARCH = os.environ.get("BENCH_GEN_MEMORY_ARCH", "thesis")
OUTPUT_FORMAT = os.environ.get("BENCH_GEN_FORMAT", "png")
NODES_COUNT = int(os.environ.get("BENCH_GEN_NODES_COUNT", 2_000))
SMALL_ARCH = dict(image_size=32, width=8, max_width=32, latent_dim=16)


def _mb(value: float) -> str:
    return f"{value / 2**20:.0f} MB"


def test_throughput_ray_2_workers_vs_in_process(benchmark, tmp_path):
    import ray

    run = init_random_run(tmp_path / "run", GANConfig())  # the thesis's architecture
    local_job = generation.plan_job(run, COUNT, tmp_path / "local", backend=BACKEND)
    started = time.perf_counter()
    generation.generate_in_process(local_job)
    local_seconds = time.perf_counter() - started

    init_started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, object_store_memory=200 * 2**20)
    init_seconds = time.perf_counter() - init_started
    try:
        ray_job = generation.plan_job(run, COUNT, tmp_path / "ray", backend=BACKEND)
        result = benchmark.pedantic(
            generation.generate_on_ray, args=(ray_job,), kwargs={"workers": 2, "progress": False},
            rounds=1, iterations=1,
        )
    finally:
        ray.shutdown()
    ray_seconds = result.seconds
    sampled = [generation.image_file_name(i) for i in range(0, COUNT, max(1, COUNT // 50))]
    same = sum((tmp_path / "local" / n).read_bytes() == (tmp_path / "ray" / n).read_bytes() for n in sampled)
    largest_difference = max(_pixel_difference(tmp_path / "local" / n, tmp_path / "ray" / n) for n in sampled)
    ratio = local_seconds / ray_seconds
    benchmark.extra_info.update(count=COUNT, local_seconds=local_seconds, ray_seconds=ray_seconds, ratio=ratio)
    print(
        f"\n[generation throughput] {COUNT} images 64x64, thesis architecture, backend {BACKEND}, "
        f"{os.cpu_count()} CPUs\n"
        f"  in-process loop : {COUNT / local_seconds:8.1f} img/s ({local_seconds:.1f} s)\n"
        f"  Ray, 2 workers  : {COUNT / ray_seconds:8.1f} img/s ({ray_seconds:.1f} s; local Ray start "
        f"{init_seconds:.1f} s not included, {COUNT / (ray_seconds + init_seconds):.1f} img/s with it)\n"
        f"  ratio Ray / in-process = {ratio:.2f} (target >= 0.9)\n"
        f"  sampled files byte-identical: {same}/{len(sampled)}, largest pixel difference "
        f"{largest_difference} (the in-process loop runs TF with all cores' threads, the workers with one)"
    )
    assert largest_difference <= 1  # a correctness check, not a timing one


def _pixel_difference(a, b) -> int:
    import cv2
    import numpy as np

    return int(np.abs(cv2.imread(str(a)).astype(int) - cv2.imread(str(b)).astype(int)).max())


_MEMORY_JOB = r"""
import json, sys
from backends.config import GANConfig
from service import generation
run, count, out, backend, output_format = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
job = generation.plan_job(run, count, out, backend=backend, output_format=output_format)
result = generation.generate_on_ray(job, workers=2, progress=False)
print(json.dumps(generation.describe(result)))
"""


def _memory_run(run, count: int, out) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_JOB, str(run), str(count), str(out), BACKEND, OUTPUT_FORMAT],
        capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_peak_memory_is_flat_in_count(benchmark, tmp_path):
    config = GANConfig() if MEMORY_ARCH == "thesis" else GANConfig(**SMALL_ARCH)
    run = init_random_run(tmp_path / "run", config)
    small, large = MEMORY_COUNTS
    results = {}

    def measure():
        for count in (small, large):
            results[count] = _memory_run(run, count, tmp_path / f"out{count}")

    benchmark.pedantic(measure, rounds=1, iterations=1)
    lines = [f"\n[generation memory] {MEMORY_ARCH} architecture {config.image_size}x{config.image_size}, "
             f"backend {BACKEND}, {OUTPUT_FORMAT} output, 2 workers, fresh local Ray per job"]
    for count in (small, large):
        r = results[count]
        workers = sorted(r["worker_peak_rss"].values())
        lines.append(f"  {count:>7} images: driver {_mb(r['driver_peak_rss'])}, workers "
                     f"{', '.join(_mb(w) for w in workers)} ({r['seconds']:.0f} s)")
    driver_ratio = results[large]["driver_peak_rss"] / results[small]["driver_peak_rss"]
    worker_ratio = max(results[large]["worker_peak_rss"].values()) / max(results[small]["worker_peak_rss"].values())
    lines.append(f"  peak ratio {large} / {small}: driver {driver_ratio:.2f}, worker (max) {worker_ratio:.2f} "
                 "(target <= 1.2)")
    benchmark.extra_info.update(driver_ratio=driver_ratio, worker_ratio=worker_ratio, counts=[small, large])
    print("\n".join(lines))


def _generate_on_cluster(job, nodes: int) -> float:
    """Seconds for `job` on a fresh cluster of `nodes` nodes with 1 CPU each (started, and the
    driver connected, before the clock starts)."""
    from clusters import one_cpu_nodes  # bench/clusters.py

    with one_cpu_nodes(nodes):
        return generation.generate_on_ray(job, progress=False).seconds  # one task per CPU of the cluster


def test_two_nodes_against_one_node(benchmark, tmp_path):
    run = init_random_run(tmp_path / "run", GANConfig())  # the thesis's architecture, 64x64
    seconds = {}

    def measure():
        for nodes in (1, 2):
            job = generation.plan_job(run, NODES_COUNT, tmp_path / f"nodes{nodes}", backend=BACKEND)
            seconds[nodes] = _generate_on_cluster(job, nodes)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    names = [generation.image_file_name(i) for i in range(NODES_COUNT)]
    same = sum((tmp_path / "nodes1" / n).read_bytes() == (tmp_path / "nodes2" / n).read_bytes() for n in names)
    ratio = seconds[1] / seconds[2]
    benchmark.extra_info.update(count=NODES_COUNT, one_node_seconds=seconds[1], two_node_seconds=seconds[2], ratio=ratio)
    print(
        f"\n[generation on nodes] {NODES_COUNT} images 64x64, thesis architecture, backend {BACKEND}, "
        f"nodes of 1 CPU on one machine with {os.cpu_count()} CPUs\n"
        f"  1 node : {NODES_COUNT / seconds[1]:8.1f} img/s ({seconds[1]:.1f} s)\n"
        f"  2 nodes: {NODES_COUNT / seconds[2]:8.1f} img/s ({seconds[2]:.1f} s)\n"
        f"  ratio 2 nodes / 1 node = {ratio:.2f} (target >= 1.8)\n"
        f"  byte-identical images: {same}/{NODES_COUNT}"
    )
    assert same == NODES_COUNT  # a correctness check, not a timing one
