"""`validate`: compare real and generated images; writes OUT/metrics.json and OUT/report.html.

    python -m service.run validate --real PATH --fake PATH [--train PATH] --out DIR
        [--image-size S] [--labels CSV] [--run RUN_DIR] [--inception-weights PATH]

Each PATH is anything service.data.load_images reads (ISIC folder, image folder, .npz).
Per-class values need labels on both sides: the real set's from its CSV or .npz, the generated
set's from the manifest.csv that `generate` writes beside its images (or a .npz's labels).
"""

from __future__ import annotations

from pathlib import Path

from service.commands.common import add_crop, add_image_size, add_progress, add_seed, show_progress
from service.training import DEFAULT_IMAGE_SIZE
from service.errors import UserError


def add_arguments(p):
    p.add_argument("--real", metavar="PATH", required=True, help="real images: ISIC folder, image folder or .npz")
    p.add_argument("--fake", metavar="PATH", required=True, help="generated images: folder (with generate's manifest.csv) or .npz")
    p.add_argument("--train", metavar="PATH", help="training images for the memorization audit (default: the real set)")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder for metrics.json, report.html and figures")
    add_image_size(p, "compare at this side in pixels")
    p.add_argument("--labels", metavar="CSV", help="ground-truth CSV of the real (and training) images, for per-class values")
    add_crop(p)
    p.add_argument("--run", metavar="RUN_DIR", help="a training run directory: its loss curve goes into the report")
    p.add_argument("--inception-weights", metavar="PATH", help="Keras InceptionV3 weights (.h5/.keras): adds standard FID/KID")
    add_seed(p)
    add_progress(p)


def _load(path, image_size: int, args, labels_csv=None):
    from service.data import load_images

    return load_images(path, image_size, labels_csv=labels_csv, crop=args.crop, progress=show_progress(args))


def generated_class_names(dataset) -> list[str] | None:
    """Class names of a generated folder's images from its manifest.csv, if all are named."""
    from service.generation import MANIFEST_FILE, manifest_classes, read_manifest

    if not dataset.files:
        return None
    folder = Path(dataset.files[0]).parent
    if not (folder / MANIFEST_FILE).is_file():
        return None
    by_file = {row.get("file", ""): row for row in read_manifest(folder)}
    return manifest_classes([by_file.get(Path(name).name, {}) for name in dataset.files])


def run(args) -> int:
    from service.validation import validate_sets

    for option, path in (("--real", args.real), ("--fake", args.fake), ("--train", args.train), ("--run", args.run), ("--inception-weights", args.inception_weights)):
        if path is not None and not Path(path).exists():
            raise UserError(f"{option}: no such file or folder: {path}")
    from service.data import native_image_size

    image_size = args.image_size or native_image_size(args.real) or native_image_size(args.fake) or DEFAULT_IMAGE_SIZE
    real = _load(args.real, image_size, args, args.labels)
    fake = _load(args.fake, image_size, args)
    train = _load(args.train, image_size, args, args.labels) if args.train else None

    from service.generation import class_indices

    # generated classes as the real set's class indices; no per-class values if they do not match
    if fake.labels is not None:
        fake_names = [fake.class_names[i] for i in fake.labels]
    else:
        fake_names = generated_class_names(fake)
    real_labels, class_names = real.labels, real.class_names
    fake_labels = class_indices(fake_names, class_names) if real_labels is not None else None
    result = validate_sets(
        real.images,
        fake.images,
        train=None if train is None else train.images,
        out_dir=args.out,
        real_labels=real_labels,
        fake_labels=fake_labels,
        class_names=list(class_names) if class_names else None,
        run_dir=args.run,
        progress=show_progress(args),
        inception_weights=args.inception_weights,
        seed=args.seed,
        real_groups=real.groups,
        train_groups=None if train is None else train.groups,
    )
    main, reference = result["real_vs_generated"], result["real_vs_real"]
    print(
        f"SWD {main['swd_mean']:.3f} (real vs real {reference['swd_mean']:.3f}), "
        f"FD {main['fd']:.4g} ({reference['fd']:.4g}), precision {main['precision']:.3f}, recall {main['recall']:.3f}, "
        f"likely copies {main['copies']}/{result['counts']['generated']}"
    )
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0
