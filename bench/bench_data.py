"""Loading 2,000 ISIC-layout JPEGs (1024x768, 767x576, 640x480) at 64x64: first load and cached load.

Run: `pytest bench/bench_data.py --benchmark-only -s`. Targets (issue 2, on 2 cores): first load
under 60 s, cached load under 3 s. Measures and prints; asserts no wall time.
"""

import os
import shutil
import tempfile
import time

import pytest

from service.data import load_images
from service.synthetic import write_isic_layout

IMAGE_COUNT = int(os.environ.get("BENCH_DATA_COUNT", "2000"))
IMAGE_SIZE = 64
timings = {}


@pytest.fixture(scope="module")
def isic_folder():
    """The stand-in dataset written once in ISIC 2017 layout (JPEGs + superpixel PNGs + CSV)."""
    root = tempfile.mkdtemp(prefix="bench-data-")
    started = time.perf_counter()
    write_isic_layout(os.path.join(root, "isic"), IMAGE_COUNT, seed=0, progress=False)
    print(f"\nwrote {IMAGE_COUNT} ISIC-layout images in {time.perf_counter() - started:.1f} s "
          f"({os.cpu_count()} CPU cores)")
    yield os.path.join(root, "isic")
    shutil.rmtree(root, ignore_errors=True)


def test_first_load_without_cache(benchmark, isic_folder, tmp_path):
    caches = iter(range(1000))

    def fresh_cache():  # each round starts from an empty cache folder
        return (), {"cache_dir": str(tmp_path / f"cache{next(caches)}")}

    def load(cache_dir):
        return load_images(isic_folder, IMAGE_SIZE, cache_dir=cache_dir, progress=False)

    dataset = benchmark.pedantic(load, setup=fresh_cache, rounds=1, iterations=1)
    assert dataset.images.shape == (IMAGE_COUNT, IMAGE_SIZE, IMAGE_SIZE, 3)
    timings["first"] = benchmark.stats.stats.mean
    print(f"\nfirst load (decode + resize + write cache): {timings['first']:.2f} s "
          f"for {IMAGE_COUNT} images, {IMAGE_COUNT / timings['first']:.0f} images/s")


def test_cached_load(benchmark, isic_folder, tmp_path):
    cache_dir = str(tmp_path / "cache")
    load_images(isic_folder, IMAGE_SIZE, cache_dir=cache_dir, progress=False)  # fill the cache
    dataset = benchmark.pedantic(
        lambda: load_images(isic_folder, IMAGE_SIZE, cache_dir=cache_dir, progress=False), rounds=3, iterations=1
    )
    assert dataset.images.shape == (IMAGE_COUNT, IMAGE_SIZE, IMAGE_SIZE, 3)
    timings["cached"] = benchmark.stats.stats.mean
    message = f"\ncached load: {timings['cached']:.2f} s"
    if "first" in timings:
        message += f" ({timings['first'] / timings['cached']:.0f}x faster than the first load)"
    print(message)
