"""Compare training recipes at a fixed budget, on real images or on the embedded stand-in.

    python bench/preset_experiment.py --data ../shared/data/real-dermoscopy-dev/patches32.npz \\
        --budget 600 --variants dcgan,default --seeds 0,1
    python bench/preset_experiment.py --budget 600 --image-size 64 --variants dcgan,default --seeds 0,1
    python bench/preset_experiment.py --data ../shared/data/isic2017-train/ISIC-2017_Training_Data \\
        --labels ../shared/data/isic2017-train/ISIC-2017_Training_Classes.csv --image-size 64 \\
        --budget 600 --variants "dcgan;default;default+conditional=true" --seeds 0,1

Two protocols:

- **Real images** (`--data` a folder or `.npz`; `--labels` for a folder's label file when it is
  not found beside it). A fixed draw holds out `--holdout` of the images: whole groups where
  the data names a group per image (its source image or patient), else stratified by class
  (e.g. ISIC 2017 at 64x64: 400 of the 2,000, 75 of them melanomas). The audit counts held-out
  images that are likely copies of training images (the same lesion imaged twice): near-twins
  across the split, printed first. Every variant trains on the rest and generates as many
  images as the held-out set holds, and is scored against the held-out images. The floor is
  the same metrics for random sets of training images of that count (real images the
  generator trained on: what a perfect generator would score). A conditional variant
  (`PRESET+conditional=true`, labelled data) generates each class as many times as the
  held-out set holds it, and adds each class's SWD and recall against that class's held-out
  images beside a per-class floor.
- **Stand-in** (no `--data`): trains on the embedded dataset at --image-size (default 64),
  scores --count generated images against --count fresh embedded images of another seed; the
  floor is a second fresh set. It checks whole-lesion layout, which patches cannot.

Scores per run: SWD (x1e3) per pyramid level and their mean; in the validation tooling's
random-net feature space, Frechet distance, precision and recall (k=3), density and coverage
(k=5); the Frechet distance of the pixels' leading principal components (`pca_fd`: the PCA fitted
on the training images); and the memorization audit's likely copies of training images. With
--seeds, each variant runs once per seed and its mean and range are printed beside the floor.

    --variants dcgan,default,default+ema_kimg=10    names of presets, or PRESET+field=value+...
    --budget 600          seconds of wall clock per run (the learning-rate schedule follows it)
    --epochs N            train N epochs instead: the same steps on any machine, for screening
                          while the machine does other work
    --calibrate           only print the SWD of the reference against altered copies of it

Results go to stdout and OUT/results.json. Not collected by pytest; docs/presets.md records
the runs behind the presets.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HOLDOUT_SEED = 2017  # the fixed draw of held-out groups
PCA_COMPONENTS = 64
METRICS = ("swd", "fd", "pca_fd", "precision", "recall", "density", "coverage", "mean_hp", "mean_hp_inner",
           "mean_hp_border", "copies")
BORDER = 3  # pixels: mean_hp_border's frame, where zero padding and translation's fill act


def parse_variant(spec: str) -> tuple[str, dict]:
    """A preset name, or "PRESET+field=value+...", e.g. "default+width=32+ema_kimg=10"."""
    preset, *pairs = spec.split("+")
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"bad variant {spec!r}: expected field=value after '+'")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return preset, overrides


@dataclass
class Protocol:
    """What every variant trains on and is scored against."""

    name: str
    train: object  # service.data.Dataset, or None for the embedded dataset
    train_uint8: np.ndarray  # for the memorization audit and the pixel PCA
    reference: np.ndarray  # uint8 images the generated ones are compared with
    floors: list  # uint8 real sets scored against `reference` the same way
    image_size: int
    reference_labels: np.ndarray | None = None  # class of each reference image, when labelled
    train_labels: np.ndarray | None = None
    class_names: tuple = ()
    near_twins: int | None = None  # held-out images the audit calls likely copies of training ones


def held_out_part(held, part: str):
    """The validation or test half of the held-out images (stratified by class, fixed draw), or
    all of them: recipes are chosen on the validation half and reported once on the test half."""
    if part == "all":
        return held
    from service import data

    validation, test = data.split(held, 0.5, seed=HOLDOUT_SEED + 1)
    return validation if part == "validation" else test


def fresh_part(dataset, holdout: float):
    """(train, held) for a check on images no recipe was scored on: as many images as the usual
    held-out set, drawn (by group, else stratified by class, another fixed draw) from the usual
    training images; the usual held-out images join the training images instead."""
    from service import data

    index = data.Dataset(np.arange(len(dataset), dtype=np.float32)[:, None, None, None], dataset.labels,
                         dataset.class_names, groups=dataset.groups)
    kept, held = data.split(index, holdout, seed=HOLDOUT_SEED)
    rest, fresh = data.split(kept, len(held) / len(kept), seed=HOLDOUT_SEED + 2)
    positions = lambda d: d.images[:, 0, 0, 0].astype(np.int64)
    train = np.sort(np.concatenate([positions(rest), positions(held)]))
    return dataset.subset(train), dataset.subset(np.sort(positions(fresh)))


def real_protocol(path: str, image_size: int | None, holdout: float, labels: str | None = None,
                  part: str = "all") -> Protocol:
    from service import data
    from service.imageio import to_uint8
    from service.validation.memorization import memorization_audit

    size = image_size or data.native_image_size(path) or 64
    dataset = data.load_images(path, size, labels_csv=labels, progress=False)
    # By group where the data names one (patches of one image never on both sides), else
    # stratified by class: data.split does whichever applies.
    if part == "fresh":
        train, held = fresh_part(dataset, holdout)
    else:
        train, held = data.split(dataset, holdout, seed=HOLDOUT_SEED)
        held = held_out_part(held, part)
    train_uint8, reference = to_uint8(train.images), to_uint8(held.images)
    rng = np.random.default_rng(HOLDOUT_SEED)
    floors = [train_uint8[np.sort(rng.choice(len(train_uint8), len(reference), replace=False))] for _ in range(2)]
    if dataset.groups is not None:
        how = (f"{len(np.unique(dataset.groups))} groups; training on {len(train)} ({len(np.unique(train.groups))} groups), "
               f"scoring against {len(held)} held-out ({len(np.unique(held.groups))} groups)")
    else:
        counts = lambda d: "" if d.labels is None else " (" + ", ".join(
            f"{n} {name}" for name, n in zip(d.class_names, np.bincount(d.labels, minlength=len(d.class_names)))) + ")"
        how = (f"no groups: split stratified by class; training on {len(train)}{counts(train)}, "
               f"scoring against {len(held)} held-out{counts(held)} ({part} part)")
    # Held-out images that are likely copies of training images (the same lesion imaged
    # twice, or a duplicate): they make every score, the floor's too, look better.
    twins = memorization_audit(train_uint8, reference, train.groups)["copies"]
    print(f"{path}: {len(dataset)} images at {size}x{size}, {how}; near-twins across the split "
          f"(held-out images the audit calls likely copies of training images): {twins}", flush=True)
    return Protocol(f"real-{Path(path).stem}" + ("" if part == "all" else f"-{part}"), train, train_uint8, reference, floors, size,
                    held.labels, train.labels, tuple(train.class_names), twins)


def standin_protocol(image_size: int | None, count: int) -> Protocol:
    from service import data
    from service.imageio import to_uint8
    from service.training import DEFAULT_DATA_COUNT

    size = image_size or 64
    fresh = to_uint8(data.default_dataset(size, count=2 * count, seed=7, progress=False).images)
    train = to_uint8(data.default_dataset(size, count=DEFAULT_DATA_COUNT, progress=False).images)
    return Protocol("standin", None, train, fresh[:count], [fresh[count:]], size)


class Scorer:
    """Every score of one generated (or floor) set against the protocol's reference."""

    def __init__(self, protocol: Protocol):
        from sklearn.decomposition import PCA

        from service.validation.features import random_net_features

        self.protocol = protocol
        self.reference_features = random_net_features(protocol.reference)
        pixels = protocol.train_uint8.reshape(len(protocol.train_uint8), -1).astype(np.float32) / 255.0
        self.pca = PCA(n_components=min(PCA_COMPONENTS, *pixels.shape), random_state=0).fit(pixels)
        self.reference_pca = self._pca(protocol.reference)
        self.reference_mean_hp = mean_image_highpass(protocol.reference)
        self._fidelity = None  # (classifier, its probabilities on the reference), fitted on first use

    def class_fidelity(self, images: np.ndarray, labels: np.ndarray) -> dict:
        """service.validation.fidelity: a classifier fitted once on the training images scores
        the generated images of each class, beside its score on the held-out reference."""
        from service.validation import fidelity

        protocol = self.protocol
        if self._fidelity is None:
            classifier = fidelity.fit_classifier(protocol.train_uint8, protocol.train_labels, seed=HOLDOUT_SEED)
            self._fidelity = classifier, classifier.probabilities(protocol.reference)
        classifier, reference_probabilities = self._fidelity
        return fidelity.class_fidelity(classifier, None, protocol.reference_labels, images, labels,
                                       protocol.class_names, real_probabilities=reference_probabilities)

    def per_class(self, images: np.ndarray, labels: np.ndarray) -> dict:
        """SWD and recall of each class's images against the reference images of that class."""
        from service.validation.features import random_net_features
        from service.validation.metrics import precision_recall, swd

        protocol, scores = self.protocol, {}
        for index, name in enumerate(protocol.class_names):
            reference = protocol.reference[protocol.reference_labels == index]
            mine = images[labels == index]
            if len(reference) < 2 or len(mine) < 2:
                continue
            scores[name] = {"count": int(len(mine)), "swd": swd(reference, mine)["mean"],
                            "recall": precision_recall(random_net_features(reference), random_net_features(mine))["recall"]}
        return scores

    def class_floor(self, seed: int = HOLDOUT_SEED) -> tuple[np.ndarray, np.ndarray]:
        """Training images drawn per class as many as the reference holds: the per-class floor set."""
        protocol, rng = self.protocol, np.random.default_rng(seed)
        images, labels = [], []
        for index in range(len(protocol.class_names)):
            pool = np.flatnonzero(protocol.train_labels == index)
            count = int(np.sum(protocol.reference_labels == index))
            chosen = np.sort(rng.choice(pool, min(count, len(pool)), replace=False))
            images.append(protocol.train_uint8[chosen])
            labels.append(np.full(len(chosen), index))
        return np.concatenate(images), np.concatenate(labels)

    def _pca(self, images: np.ndarray) -> np.ndarray:
        return self.pca.transform(images.reshape(len(images), -1).astype(np.float32) / 255.0)

    def __call__(self, images: np.ndarray, audit: bool = True) -> dict:
        from service.validation.features import random_net_features
        from service.validation.memorization import audit_summary, memorization_audit
        from service.validation.metrics import density_coverage, frechet_distance, precision_recall, swd

        swd_scores = swd(self.protocol.reference, images)
        features = random_net_features(images)
        mean_hp = mean_image_highpass(images)
        return {
            "swd": swd_scores["mean"],
            "swd_levels": {str(k): v for k, v in swd_scores["levels"].items()},
            "fd": frechet_distance(self.reference_features, features),
            "pca_fd": frechet_distance(self.reference_pca, self._pca(images)),
            **precision_recall(self.reference_features, features),
            **density_coverage(self.reference_features, features),
            # marks at fixed places survive averaging over images; real images average to a
            # smooth field: high-pass energy of the mean image, over the reference's
            "mean_hp": mean_hp["all"] / self.reference_mean_hp["all"],
            # the same split: inside the frame (a lattice of marks) and the frame (border bands)
            "mean_hp_inner": mean_hp["inner"] / self.reference_mean_hp["inner"],
            "mean_hp_border": mean_hp["border"] / self.reference_mean_hp["border"],
            # a floor set is training images: the audit would flag every one of them
            "copies": audit_summary(memorization_audit(self.protocol.train_uint8, images))["copies"] if audit else None,
        }


def mean_image_highpass(images: np.ndarray) -> dict[str, float]:
    """Energy (mean square) of the Laplacian of the set's mean image, per pixel and channel: over
    the whole image ("all"), inside a BORDER-pixel frame ("inner") and on that frame ("border")."""
    import cv2

    mean = images.astype(np.float64).mean(axis=0)
    energy = cv2.Laplacian(mean, cv2.CV_64F) ** 2
    frame = np.ones(energy.shape[:2], bool)
    frame[BORDER:-BORDER, BORDER:-BORDER] = False
    return {"all": float(np.mean(energy)), "inner": float(np.mean(energy[~frame])), "border": float(np.mean(energy[frame]))}


def format_scores(scores: dict) -> str:
    levels = ", ".join(f"{v:.1f}" for v in scores["swd_levels"].values())
    return (f"SWD {scores['swd']:6.1f} ({levels})  FD {scores['fd']:7.3f}  pcaFD {scores['pca_fd']:6.2f}  "
            f"P {scores['precision']:.2f} R {scores['recall']:.2f} D {scores['density']:.2f} "
            f"C {scores['coverage']:.2f}  meanHP {scores['mean_hp']:.2f} (inner {scores['mean_hp_inner']:.2f}, "
            f"border {scores['mean_hp_border']:.2f})" + ("" if scores["copies"] is None else f"  copies {scores['copies']}")
            + "".join(f"  [{name}: SWD {c['swd']:.1f} R {c['recall']:.2f}]" for name, c in scores.get("per_class", {}).items())
            + "".join(f"  [{name}: AUC gen {c['generated_auc']:.3f} real {c['real_auc']:.3f}]"
                      for name, c in (scores.get("class_fidelity") or {}).get("classes", {}).items()
                      if c["ratio"] is not None and name == list(scores["class_fidelity"]["classes"])[-1]))


def summarise(runs: list[dict]) -> dict:
    """Mean, min and max of every metric (and SWD level) over runs."""
    summary = {}
    for metric in METRICS:
        values = [r["scores"][metric] for r in runs if r["scores"].get(metric) is not None]
        if not values:
            continue
        summary[metric] = {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}
    if runs[0]["scores"].get("class_fidelity"):
        last = list(runs[0]["scores"]["class_fidelity"]["classes"])[-1]  # the positive class of two
        for metric in ("generated_auc", "ratio"):
            values = [r["scores"]["class_fidelity"]["classes"][last][metric] for r in runs]
            if all(v is not None for v in values):
                summary[f"fidelity_{metric}"] = {"mean": float(np.mean(values)), "min": float(min(values)),
                                                 "max": float(max(values))}
    for name in runs[0]["scores"].get("per_class", {}):
        for metric in ("swd", "recall"):
            values = [r["scores"]["per_class"][name][metric] for r in runs]
            summary[f"{name}_{metric}"] = {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}
    for level in runs[0]["scores"]["swd_levels"]:
        values = [r["scores"]["swd_levels"][level] for r in runs]
        summary[f"swd_{level}"] = {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}
    return summary


def format_summary(name: str, summary: dict, count: int) -> str:
    def cell(key, digits=1):
        s = summary[key]
        return f"{s['mean']:.{digits}f} [{s['min']:.{digits}f}, {s['max']:.{digits}f}]"

    levels = "  ".join(f"L{k[4:]} {cell(k)}" for k in summary if k.startswith("swd_"))
    return (f"{name:40s} n={count}  SWD {cell('swd')}  {levels}  FD {cell('fd', 3)}  pcaFD {cell('pca_fd', 2)}  "
            f"P {cell('precision', 2)}  R {cell('recall', 2)}  C {cell('coverage', 2)}  D {cell('density', 2)}  "
            f"meanHP {cell('mean_hp', 2)}"
            + (f" (inner {cell('mean_hp_inner', 2)}, border {cell('mean_hp_border', 2)})" if "mean_hp_inner" in summary else "")
            + (f"  copies {cell('copies', 0)}" if "copies" in summary else "")
            + "".join(f"  [{k[:-4]}: SWD {cell(k)} R {cell(k[:-4] + '_recall', 2)}]" for k in summary
                      if k.endswith("_swd") and not k.startswith("swd_"))
            + (f"  fidelity AUC {cell('fidelity_generated_auc', 3)} ratio {cell('fidelity_ratio', 2)}"
               if "fidelity_ratio" in summary else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", metavar="PATH", help="real images: a folder or .npz (default: the embedded stand-in)")
    parser.add_argument("--labels", metavar="CSV", help="the folder's label file, when not found beside it")
    parser.add_argument("--part", choices=("all", "validation", "test", "fresh"), default="all",
                        help="score against all held-out images, or the validation half (choose recipes on it) "
                             "or the test half (report the chosen recipe on it once); fresh: as many other "
                             "images, drawn from the usual training images, which no screen has scored on")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="share held out (default 0.2): whole groups where the data names them, else stratified by class")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training per run (default 600)")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of --budget")
    parser.add_argument("--image-size", type=int, help="default: the data's own size (64 for the stand-in)")
    parser.add_argument("--backend", default="tf")
    parser.add_argument("--count", type=int, default=1000, help="stand-in protocol: images per set (default 1000)")
    parser.add_argument("--out", default="runs/preset-experiment")
    parser.add_argument("--variants", default="dcgan,default",
                        help="comma list of presets or PRESET+field=value+... specs; separate them with ';' "
                             "when a value holds commas")
    parser.add_argument("--seeds", default="0,1", help="comma list of seeds: each variant runs once per seed")
    parser.add_argument("--calibrate", action="store_true",
                        help="only print the SWD of the reference against altered copies of the floor set")
    args = parser.parse_args()

    protocol = real_protocol(args.data, args.image_size, args.holdout, args.labels, args.part) if args.data else standin_protocol(args.image_size, args.count)
    if args.calibrate:
        calibrate(protocol)
        return
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds takes a comma list of integers, got {args.seeds!r}") from None
    variants = [v for v in args.variants.split(";" if ";" in args.variants else ",") if v]
    if any("seed" in parse_variant(v)[1] for v in variants):
        raise SystemExit("--seeds sets each run's seed; drop seed= from --variants")
    budget = f"{args.epochs}ep" if args.epochs else f"{int(args.budget)}s"
    out = Path(args.out) / f"{protocol.name}-{protocol.image_size}px-{budget}"
    out.mkdir(parents=True, exist_ok=True)

    score = Scorer(protocol)
    results = {"protocol": protocol.name, "image_size": protocol.image_size, "backend": args.backend,
               "budget_s": None if args.epochs else args.budget, "epochs": args.epochs,
               "reference_count": len(protocol.reference), "train_count": len(protocol.train_uint8),
               "near_twins": protocol.near_twins, "floor": [], "runs": []}
    for i, floor in enumerate(protocol.floors):
        results["floor"].append({"scores": score(floor, audit=False)})
        print(f"{'floor (real, other sources)':40s} draw {i}  {format_scores(results['floor'][-1]['scores'])}", flush=True)
    if protocol.reference_labels is not None and any("conditional" in parse_variant(v)[1] for v in variants):
        floor_images, floor_labels = score.class_floor()
        results["class_floor"] = score.per_class(floor_images, floor_labels)
        print("per-class floor: " + "  ".join(f"[{name}: SWD {c['swd']:.1f} R {c['recall']:.2f}]"
                                              for name, c in results["class_floor"].items()), flush=True)
    for variant in variants:
        for seed in seeds:
            run = train_and_score(args, protocol, score, variant, seed, out)
            results["runs"].append(run)
            (out / "results.json").write_text(json.dumps(results, indent=2))

    print(f"\n{protocol.name} {protocol.image_size}x{protocol.image_size}, {budget} per run, "
          f"{args.backend} backend, seeds {seeds}: mean [min, max]")
    results["summary"] = {"floor": summarise(results["floor"])}
    print(format_summary("floor (real, other sources)", results["summary"]["floor"], len(results["floor"])))
    for variant in variants:
        runs = [r for r in results["runs"] if r["variant"] == variant]
        results["summary"][variant] = summarise(runs)
        print(format_summary(variant, results["summary"][variant], len(runs)))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {out / 'results.json'}")


def train_and_score(args, protocol: Protocol, score: Scorer, variant: str, seed: int, out: Path) -> dict:
    from service.generation import generate_in_process, plan_job
    from service.imageio import read_png
    from service.training import TrainingRequest, run_training

    preset, overrides = parse_variant(variant)
    conditional = bool(overrides.pop("conditional", False))
    if conditional and protocol.reference_labels is None:
        raise SystemExit(f"{variant}: a conditional variant needs labelled data (--labels, or labels in the .npz)")
    run_dir = out / f"{variant}+seed={seed}"
    started = time.perf_counter()
    outcome = run_training(TrainingRequest(
        out=run_dir, backend=args.backend, preset=preset, image_size=protocol.image_size, seed=seed,
        epochs=args.epochs, time_budget=None if args.epochs else args.budget, conditional=conditional,
        config_overrides=overrides or None, progress=False, dataset=protocol.train,
    ))
    result = outcome.result
    if result.status.startswith("stopped:SIG"):  # Ctrl-C or kill: end the experiment
        raise SystemExit(f"{run_dir.name}: {result.status} at step {result.step}; its checkpoint is in {run_dir}")
    # As many images as the reference holds; a conditional run, as many of each class.
    wanted = ({None: len(protocol.reference)} if not conditional else
              {name: int(np.sum(protocol.reference_labels == i)) for i, name in enumerate(protocol.class_names)})
    images, labels = [], []
    for index, (name, count) in enumerate(wanted.items()):
        folder = run_dir / ("generated" if name is None else f"generated-{name}")
        generate_in_process(plan_job(run_dir, count, folder, seed=1000 + seed, class_name=name, backend=args.backend))
        images += [read_png(p) for p in sorted(folder.glob("img_*.png"))]
        labels += [index] * count
    images = np.stack(images)
    scores = score(images)
    if conditional:
        scores["per_class"] = score.per_class(images, np.array(labels))
        scores["class_fidelity"] = score.class_fidelity(images, np.array(labels))
    privacy = json.loads((run_dir / "config.json").read_text()).get("privacy")  # a private run's epsilon spent
    spent = "" if not privacy else f"  epsilon {privacy['epsilon']:.2f} ({privacy['steps']} private D steps, {result.status})"
    print(f"{variant + f' seed {seed}':40s} steps {result.step:5d} (+{result.rebalance_d} D, +{result.rebalance_g} G)  "
          f"{format_scores(scores)}{spent}", flush=True)
    return {"variant": variant, "seed": seed, "preset": preset, "overrides": overrides, "conditional": conditional,
            "steps": result.step, "epochs": result.epoch, "rebalance_d": result.rebalance_d,
            "rebalance_g": result.rebalance_g, "train_s": result.seconds, "status": result.status, "privacy": privacy,
            "wall_s": time.perf_counter() - started, "scores": scores}


def calibrate(protocol: Protocol) -> None:
    """SWD of the reference against a floor set altered in known ways: a scale for the numbers."""
    import cv2

    from service.validation.metrics import swd

    other = protocol.floors[0]
    noisy = other.astype(np.float64) + np.random.default_rng(0).normal(0.0, 8.0, other.shape)
    altered = {
        "unaltered (the floor)": other,
        "3x3 Gaussian blur": np.stack([cv2.GaussianBlur(x, (3, 3), 0) for x in other]),
        "5x5 Gaussian blur": np.stack([cv2.GaussianBlur(x, (5, 5), 0) for x in other]),
        "Gaussian pixel noise, sigma 8": np.clip(np.rint(noisy), 0, 255).astype(np.uint8),
        "the set's mean image": np.repeat(np.rint(other.mean(axis=0, keepdims=True)).astype(np.uint8), len(other), 0),
    }
    for name, images in altered.items():
        scores = swd(protocol.reference, images)
        levels = ", ".join(f"{v:.1f}" for v in scores["levels"].values())
        print(f"{protocol.name} {protocol.image_size}px  {name:32s} SWD {scores['mean']:7.1f} ({levels})", flush=True)


if __name__ == "__main__":
    main()
