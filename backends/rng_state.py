"""A NumPy PCG64 generator's exact state as named arrays, for checkpoints (allow_pickle=False)."""

from __future__ import annotations

import numpy as np

_FIELDS = ("state", "inc", "has_uint32", "uinteger")


def _int128_to_bytes(value: int) -> np.ndarray:
    return np.frombuffer(int(value).to_bytes(16, "little"), dtype=np.uint8).copy()


def rng_to_arrays(rng: np.random.Generator, prefix: str) -> dict[str, np.ndarray]:
    """The generator's state under "<prefix>state", "<prefix>inc", ... (128-bit ints as 16 bytes)."""
    state = rng.bit_generator.state
    if state["bit_generator"] != "PCG64":
        raise ValueError(f"only PCG64 state is serialised, got {state['bit_generator']}")
    return {
        prefix + "state": _int128_to_bytes(state["state"]["state"]),
        prefix + "inc": _int128_to_bytes(state["state"]["inc"]),
        prefix + "has_uint32": np.array(state["has_uint32"], dtype=np.int64),
        prefix + "uinteger": np.array(state["uinteger"], dtype=np.int64),
    }


def set_rng_from_arrays(rng: np.random.Generator, arrays: dict[str, np.ndarray], prefix: str) -> None:
    """Restore `rng` in place (objects holding a reference to it follow the restored stream)."""
    missing = [prefix + f for f in _FIELDS if prefix + f not in arrays]
    if missing:
        raise ValueError(f"rng state: missing {missing[0]!r}")
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(bytes(arrays[prefix + "state"]), "little"),
            "inc": int.from_bytes(bytes(arrays[prefix + "inc"]), "little"),
        },
        "has_uint32": int(arrays[prefix + "has_uint32"]),
        "uinteger": int(arrays[prefix + "uinteger"]),
    }


def rng_from_arrays(arrays: dict[str, np.ndarray], prefix: str) -> np.random.Generator:
    rng = np.random.Generator(np.random.PCG64())
    set_rng_from_arrays(rng, arrays, prefix)
    return rng
