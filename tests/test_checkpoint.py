"""Checkpoints and the run directory: atomic checksummed .npz, keep-last-N, corrupt fallback, restore."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from backends.config import GANConfig
from service import checkpoint as ckpt
from service.data import dataset_fingerprint
from service.errors import UserError
from service.rundir import create_run_dir, load_config


def sample_arrays(step: int) -> dict[str, np.ndarray]:
    return {
        "generator/dense_0/kernel": np.full((3, 2), step, np.float32),
        "opt/generator/iterations": np.array(step, np.int64),
        "rng/numpy/key": np.arange(4, dtype=np.uint32) + step,
        "rng/tf/seed": np.arange(2, dtype=np.int64),
        "rng/trainer/state": np.arange(16, dtype=np.uint8),
        "rng/trainer/permutation": np.zeros(0, np.int64),
        "meta/step": np.array(step, np.int64),
    }


def test_save_and_load_round_trip_every_array_exactly(tmp_path):
    arrays = sample_arrays(7)
    path = ckpt.save_checkpoint(tmp_path, 7, arrays)
    assert path.name == "ckpt-000000007.npz"
    loaded = ckpt.load_checkpoint(path)
    assert loaded.keys() == arrays.keys()
    for name in arrays:
        assert loaded[name].dtype == arrays[name].dtype and np.array_equal(loaded[name], arrays[name])
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.suffix != ".npz"]  # no temp file left


def test_only_the_last_few_are_kept_in_step_order(tmp_path):
    for step in (5, 10, 100, 1000, 20):
        ckpt.save_checkpoint(tmp_path, step, sample_arrays(step), keep=3)
    assert [ckpt.step_of(p) for p in ckpt.list_checkpoints(tmp_path)] == [20, 100, 1000]
    assert ckpt.latest_checkpoint(tmp_path).name == "ckpt-000001000.npz"


def test_no_checkpoint_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        ckpt.latest_checkpoint(tmp_path)
    with pytest.raises(UserError, match="no checkpoint"):
        ckpt.load_latest_valid(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "empty"])
def test_a_torn_or_corrupt_newest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, damage):
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, sample_arrays(step))
    newest = ckpt.latest_checkpoint(tmp_path)
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        data = data[: len(data) * 2 // 3]
    elif damage == "flip_byte":
        # inside the weight array's data (after its .npy header), where only a checksum notices
        offset = data.index(np.full((3, 2), 3, np.float32).tobytes())
        data[offset + 1] ^= 0x40
    else:
        data = b""
    newest.write_bytes(bytes(data))
    with pytest.raises(ckpt.CorruptCheckpoint):
        ckpt.load_checkpoint(newest)
    with pytest.warns(ckpt.CheckpointWarning, match="ckpt-000000003.npz"):
        path, arrays = ckpt.load_latest_valid(tmp_path)
    assert path.name == "ckpt-000000002.npz" and int(arrays["meta/step"]) == 2


def test_a_modified_array_fails_the_checksum(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 1, sample_arrays(1))
    with np.load(path) as npz:
        arrays = {n: npz[n] for n in npz.files}
    arrays["generator/dense_0/kernel"] = arrays["generator/dense_0/kernel"] + 1  # re-saved with the old checksum
    np.savez(path, **arrays)
    with pytest.raises(ckpt.CorruptCheckpoint, match="checksum"):
        ckpt.load_checkpoint(path)


def test_every_checkpoint_corrupt_is_an_error(tmp_path):
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, sample_arrays(step)).write_bytes(b"not a zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ckpt.CorruptCheckpoint, match="every checkpoint"):
            ckpt.load_latest_valid(tmp_path)


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(TypeError, match="object"):
        ckpt.save_checkpoint(tmp_path, 1, {"meta/x": np.array([{"a": 1}], dtype=object)})


def test_split_and_backend_rng_keep_each_backend_to_its_own_stream():
    arrays = sample_arrays(4)
    parts = ckpt.split_arrays(arrays)
    assert list(parts["weights"]) == ["generator/dense_0/kernel"]
    assert list(ckpt.weights_only(arrays)) == ["generator/dense_0/kernel"]
    assert set(ckpt.backend_rng_state(arrays, "numpy")) == {"rng/numpy/key"}
    assert set(ckpt.backend_rng_state(arrays, "tf")) == {"rng/tf/seed"}
    assert ckpt.backend_rng_state(arrays, "other") == {}


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    path = ckpt.save_checkpoint(tmp_path, 1, sample_arrays(1))
    assert ckpt.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- run directory


def test_run_dir_config_round_trips_and_refuses_to_overwrite(tmp_path):
    config = GANConfig(image_size=32, width=4, max_width=16, num_classes=3, preset="default")
    run = create_run_dir(
        tmp_path / "run", config, "numpy", {"fingerprint": "abc", "count": 12}, {"trainer": 0}, training={"epochs": 2}
    )
    loaded, full = load_config(run)
    assert loaded == config
    assert full["backend"] == "numpy" and full["data"]["count"] == 12 and full["seeds"] == {"trainer": 0}
    assert full["training"] == {"epochs": 2} and full["created"]
    assert (run / "checkpoints").is_dir() and (run / "samples").is_dir()
    # a run that saved no checkpoint (its start failed) does not block its --out
    create_run_dir(run, config, "numpy", {"count": 5}, {})
    assert load_config(run)[1]["data"] == {"count": 5}
    ckpt.save_checkpoint(run, 1, sample_arrays(1))
    with pytest.raises(UserError, match="already holds a run"):
        create_run_dir(run, config, "numpy", {}, {})
    assert load_config(run)[1]["data"] == {"count": 5}


def test_load_config_of_a_non_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": {"no_such_field": 1}}))
    with pytest.raises(UserError, match="no_such_field"):
        load_config(tmp_path)


def test_dataset_fingerprint_sees_pixels_and_labels():
    images = np.zeros((2, 4, 4, 3), np.float32)
    base = dataset_fingerprint(images, np.array([0, 1]))
    assert base == dataset_fingerprint(images.copy(), np.array([0, 1]))
    changed = images.copy()
    changed[1, 2, 3, 0] = 1e-6
    assert dataset_fingerprint(changed, np.array([0, 1])) != base
    assert dataset_fingerprint(images, np.array([1, 0])) != base
    assert dataset_fingerprint(images, None) != base


def test_a_folder_named_like_a_checkpoint_is_skipped_with_a_warning(tmp_path, capsys):
    ckpt.save_checkpoint(tmp_path, 1, sample_arrays(1))
    ckpt.checkpoint_path(tmp_path, 2).mkdir()
    assert ckpt.list_checkpoints(tmp_path) == [ckpt.checkpoint_path(tmp_path, 1)]
    assert "ckpt-000000002.npz is not a regular file; ignored" in capsys.readouterr().err


def test_check_arrays_names_what_is_missing_misshapen_or_not_finite():
    from backends.spec import weight_shapes

    config = GANConfig(image_size=32, width=4, max_width=16, latent_dim=8)
    arrays = {name: np.zeros(shape, np.float32) for name, shape in weight_shapes(config).items()}
    ckpt.check_arrays(arrays, config, "c.npz")
    name = next(iter(arrays))
    for broken, message in (({**arrays, name: arrays[name][..., :1]}, "has shape"),
                            ({k: v for k, v in arrays.items() if k != name}, f"lacks {name}"),
                            ({**arrays, "opt/generator/m/x": np.array([np.inf], np.float32)}, "non-finite values in opt/")):
        with pytest.raises(UserError, match=message):
            ckpt.check_arrays(broken, config, "c.npz")
    with pytest.raises(UserError, match="lacks meta/step, so it cannot be resumed"):
        ckpt.check_arrays(arrays, config, "c.npz", resume=True)
