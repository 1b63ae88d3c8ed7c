"""The memorization audit at generation scale: time per generated image against 2,000 and
25,000 training images at 32x32 and 64x64, the `audit` command's peak memory at two
generated-set sizes, and two nodes against one.

Run: `pytest bench/bench_audit.py --benchmark-only -s`

1. Per image: the training index (stand-in images of service.synthetic, through
   data.default_dataset and its cache: 25,000 is ISIC 2019's size) is built once (its time
   printed apart: it includes every training image's own gap), then BENCH_AUDIT_QUERIES
   generated images (stand-in images of another seed) are audited as one shard would be
   (prepare, candidates, exact aligned distance, ratio), on one core. Prints ms per image (wall
   and CPU: CPU time is what a shared, loaded machine does not distort) and the 25,000 / 2,000
   ratio of CPU time (target <= 3).
2. Memory: `python -m service.run audit --workers 0` in a fresh process on a generated folder
   (PNG + manifest.csv, 64x64) of each size in BENCH_AUDIT_MEMORY_COUNTS against 2,000 training
   images; prints each run's peak RSS (VmHWM), wall time and time per image, and the ratio of
   the two peaks (target: within 10%).
3. Nodes: the same audit on a multi-node Ray cluster on this machine (ray.cluster_utils.Cluster)
   of 1 node with 1 CPU, then of 2 nodes with 1 CPU each; prints the time from the first task
   to the last row of each and the ratio (target >= 1.7), and checks the rows are identical.
4. Copy-free release: `generate --workers 0` of BENCH_AUDIT_RELEASE_COUNT 64x64 images from a
   small random-weight generator (what G is does not change the audit's cost), plain and with
   `--exclude-copies` against 2,000 stand-in training images, on one core; prints the added
   time per image (wall and CPU), the index's one-off time apart, and the images replaced.

Knobs:
  BENCH_AUDIT_TRAIN_COUNTS   default 2000,25000
  BENCH_AUDIT_SIZES          default 32,64
  BENCH_AUDIT_QUERIES        default 1000
  BENCH_AUDIT_MEMORY_COUNTS  default 2000,20000
  BENCH_AUDIT_NODES_COUNT    default 20000
  BENCH_AUDIT_RELEASE_COUNT  default 10000
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRAIN_COUNTS = tuple(int(c) for c in os.environ.get("BENCH_AUDIT_TRAIN_COUNTS", "2000,25000").split(","))
SIZES = tuple(int(s) for s in os.environ.get("BENCH_AUDIT_SIZES", "32,64").split(","))
QUERIES = int(os.environ.get("BENCH_AUDIT_QUERIES", 1000))
MEMORY_COUNTS = tuple(int(c) for c in os.environ.get("BENCH_AUDIT_MEMORY_COUNTS", "2000,20000").split(","))
MEMORY_TRAIN = 2000
DISTINCT_GENERATED = 2000  # the memory case's set repeats these, each copy lightly noised


def stand_in(count: int, size: int, seed: int) -> np.ndarray:
    from service.data import default_cache_dir, default_dataset
    from service.imageio import to_uint8

    return to_uint8(default_dataset(size, count, seed=seed, cache_dir=default_cache_dir(), progress=False).images)


def test_time_per_image(benchmark):
    from threadpoolctl import threadpool_limits

    from service.audit import build_training_index
    from service.audit.shard import audit_images

    results = {}

    def measure():
        for size in SIZES:
            queries = stand_in(QUERIES, size, seed=7)
            for count in TRAIN_COUNTS:
                train = stand_in(count, size, seed=0)
                with threadpool_limits(limits=1):
                    started = time.perf_counter()
                    index = build_training_index(train, None)
                    built = time.perf_counter() - started
                    audit_images(index, queries[:64])  # warm-up
                    started, cpu_started = time.perf_counter(), time.process_time()
                    audit_images(index, queries)
                    per_image = (time.perf_counter() - started) / len(queries)
                    cpu_per_image = (time.process_time() - cpu_started) / len(queries)
                results[(size, count)] = (per_image, built, cpu_per_image)
                del train, index

    benchmark.pedantic(measure, rounds=1, iterations=1)
    print(f"\n[audit time per generated image] {QUERIES} queries, one core")
    for size in SIZES:
        for count in TRAIN_COUNTS:
            per_image, built, cpu_per_image = results[(size, count)]
            print(f"  {size}x{size}, {count:>6} training images: {1000 * per_image:6.2f} ms/image wall, "
                  f"{1000 * cpu_per_image:6.2f} ms CPU (index and training gaps once: {built:6.1f} s)")
        if len(TRAIN_COUNTS) == 2:
            ratio = results[(size, TRAIN_COUNTS[1])][2] / results[(size, TRAIN_COUNTS[0])][2]
            print(f"  {size}x{size}: {TRAIN_COUNTS[1]} / {TRAIN_COUNTS[0]} training images = {ratio:.2f}x CPU per image (target <= 3)")
    benchmark.extra_info.update({f"{s}px_{c}_ms": 1000 * results[(s, c)][0] for s in SIZES for c in TRAIN_COUNTS})


_AUDIT_RUN = r"""
import json, sys, time
from service.run import main
started = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - started
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "seconds": seconds, "peak_rss": peak}))
"""


def write_generated(folder: Path, count: int, distinct: np.ndarray) -> None:
    """`count` 64x64 PNGs and a manifest: the distinct images repeated, each copy noised."""
    from service.imageio import encode_png

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["index,file,class,seed,checkpoint_sha256,device"]
    for i in range(count):
        noise = rng.integers(-3, 4, distinct.shape[1:], dtype=np.int16)
        image = np.clip(distinct[i % len(distinct)].astype(np.int16) + noise, 0, 255).astype(np.uint8)
        (folder / f"img_{i:09d}.png").write_bytes(encode_png(image))
        lines.append(f"{i},img_{i:09d}.png,,0,0,cpu")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_peak_memory_in_the_generated_count(benchmark, tmp_path):
    train = stand_in(MEMORY_TRAIN, 64, seed=0)
    np.savez(tmp_path / "train.npz", images=train)
    distinct = stand_in(DISTINCT_GENERATED, 64, seed=7)
    runs = {}

    def measure():
        for count in MEMORY_COUNTS:
            synth = tmp_path / f"synth-{count}"
            write_generated(synth, count, distinct)
            done = subprocess.run(
                [sys.executable, "-c", _AUDIT_RUN, "audit", "--fake", str(synth), "--train", str(tmp_path / "train.npz"),
                 "--out", str(tmp_path / f"audit-{count}"), "--workers", "0", "--no-progress"],
                cwd=REPO, capture_output=True, text=True, check=True,
            )
            runs[count] = json.loads(done.stdout.strip().splitlines()[-1])

    benchmark.pedantic(measure, rounds=1, iterations=1)
    print(f"\n[audit memory] 64x64 generated images, {MEMORY_TRAIN} training images, --workers 0")
    for count in MEMORY_COUNTS:
        run = runs[count]
        print(f"  {count:>7} generated: peak RSS {run['peak_rss'] / 2**20:6.0f} MB, {run['seconds']:6.1f} s "
              f"({1000 * run['seconds'] / count:.2f} ms/image, index and start-up included)")
    small, large = (runs[c]["peak_rss"] for c in (MEMORY_COUNTS[0], MEMORY_COUNTS[-1]))
    print(f"  peak RSS {MEMORY_COUNTS[-1]} / {MEMORY_COUNTS[0]} = {large / small:.2f} (target <= 1.10)")
    benchmark.extra_info.update({f"peak_rss_{c}": runs[c]["peak_rss"] for c in MEMORY_COUNTS})


def _audit_on_cluster(source, train, out, nodes: int):
    """AuditResult of the audit on a fresh cluster of `nodes` nodes with 1 CPU each (started,
    and the driver connected, before the audit starts)."""
    from clusters import one_cpu_nodes  # bench/clusters.py

    from service.audit import run_audit

    with one_cpu_nodes(nodes):
        return run_audit(source, train, out, workers=None)  # one task per CPU of the cluster


def test_two_nodes_against_one_node(benchmark, tmp_path):
    from service.audit import ROWS_FILE, open_generated_set

    count = int(os.environ.get("BENCH_AUDIT_NODES_COUNT", 20000))
    train = stand_in(MEMORY_TRAIN, 64, seed=0)
    write_generated(tmp_path / "synth", count, stand_in(DISTINCT_GENERATED, 64, seed=7))
    source = open_generated_set(tmp_path / "synth")
    results = {}

    def measure():
        for nodes in (1, 2):
            results[nodes] = _audit_on_cluster(source, train, tmp_path / f"nodes{nodes}", nodes)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    ratio = results[1].shard_seconds / results[2].shard_seconds
    same = (tmp_path / "nodes1" / ROWS_FILE).read_bytes() == (tmp_path / "nodes2" / ROWS_FILE).read_bytes()
    print(f"\n[audit on nodes] {count} generated 64x64 images, {MEMORY_TRAIN} training images, nodes of 1 CPU "
          f"on one machine with {os.cpu_count()} CPUs; first task to last row:")
    for nodes in (1, 2):
        print(f"  {nodes} node(s): {results[nodes].shard_seconds:6.1f} s ({count / results[nodes].shard_seconds:.0f} img/s; "
              f"index {results[nodes].index_seconds:.1f} s before)")
    print(f"  ratio 2 nodes / 1 node = {ratio:.2f} (target >= 1.7); rows identical: {same}")
    assert same  # a correctness check, not a timing one


def test_release_cost_per_image(benchmark, tmp_path):
    """`generate --exclude-copies`: its cost per generated image over a plain `generate`."""
    from threadpoolctl import threadpool_limits

    from backends.config import GANConfig
    from run_fixtures import init_random_run  # tests/run_fixtures.py, on the path by bench/conftest.py
    from service.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, weights_only
    from service.generation import plan_job
    from service.generation.release import count_replaced, plan_release
    from service.run import main

    count = int(os.environ.get("BENCH_AUDIT_RELEASE_COUNT", 10000))
    run = init_random_run(tmp_path / "run", GANConfig(image_size=64, width=8, max_width=32, latent_dim=16), seed=3)
    weights = weights_only(load_checkpoint(latest_checkpoint(run)))  # kernels scaled: images as varied as a trained G's
    save_checkpoint(run, 1, {k: v * 4 if k.endswith("kernel") else v for k, v in weights.items()})
    np.savez(tmp_path / "train.npz", images=stand_in(MEMORY_TRAIN, 64, seed=0))
    times = {}

    def generate(name, *extra):
        argv = ["generate", "--run", str(run), "--count", str(count), "--out", str(tmp_path / name), "--backend", "numpy",
                "--workers", "0", "--no-progress", *extra]  # a later --count wins
        started, cpu_started = time.perf_counter(), time.process_time()
        assert main(argv) == 0
        times[name] = (time.perf_counter() - started, time.process_time() - cpu_started)

    def measure():
        with threadpool_limits(limits=1):
            # imports, JIT compilation and first-call costs of both paths, before anything is timed
            generate("warm-plain", "--count", "100")
            generate("warm-release", "--count", "100", "--exclude-copies", str(tmp_path / "train.npz"))
            generate("plain")
            generate("release", "--exclude-copies", str(tmp_path / "train.npz"))
            started, cpu_started = time.perf_counter(), time.process_time()  # the one-off part, alone
            plan_release(plan_job(run, count, tmp_path / "unused", backend="numpy"), tmp_path / "train.npz")
            times["index"] = (time.perf_counter() - started, time.process_time() - cpu_started)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    replaced = count_replaced(tmp_path / "release")
    (plain, plain_cpu), (full, full_cpu), (index, index_cpu) = times["plain"], times["release"], times["index"]
    print(f"\n[copy-free release] {count} generated 64x64 images, {MEMORY_TRAIN} training images, --workers 0, one core")
    print(f"  plain generate: {plain:6.1f} s wall, {plain_cpu:6.1f} s CPU")
    print(f"  --exclude-copies: {full:6.1f} s wall, {full_cpu:6.1f} s CPU; {replaced} images replaced")
    print(f"  once per job (reading the training images, index and gaps): {index:.1f} s wall, {index_cpu:.1f} s CPU")
    print(f"  added per image, the one-off part left out: {1000 * (full - plain - index) / count:.2f} ms wall, "
          f"{1000 * (full_cpu - plain_cpu - index_cpu) / count:.2f} ms CPU")
    benchmark.extra_info.update({"added_ms_per_image_cpu": 1000 * (full_cpu - plain_cpu - index_cpu) / count,
                                 "index_seconds": index, "replaced": replaced})
