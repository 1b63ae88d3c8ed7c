"""`validate`: compare real and generated images; writes OUT/metrics.json and OUT/report.html.

    python -m service.run validate --real PATH --fake PATH [--train PATH] --out DIR
        [--image-size S] [--labels CSV] [--run RUN_DIR] [--inception-weights PATH]

Each PATH is anything service.data.load_images reads (ISIC folder, image folder, .npz).
Per-class values need labels on both sides: the real set's from its CSV or .npz, the generated
set's from the manifest.csv that `generate` writes beside its images (or a .npz's labels).
"""

from __future__ import annotations

from pathlib import Path

from service.commands.common import add_crop, add_image_size, add_progress, add_seed, show_progress, workers_count
from service.errors import UserError
from service.validation.report import REPORT_FILE

DEFAULT_SAMPLE = 10_000


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
    p.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, metavar="N",
                   help="when a generated folder holds more images, the distribution metrics and maps use a fixed random "
                        f"sample of N (drawn from --seed, recorded) and the memorization audit covers every image (default: {DEFAULT_SAMPLE})")
    p.add_argument("--workers", type=workers_count, default=0, metavar="K",
                   help="Ray tasks for the audit of every image when sampling (default: 0, in process)")
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
    if args.inception_weights is not None:
        # TensorFlow comes in through Keras for these weights: import it as the tf backend does
        # (TF_CPP_MIN_LOG_LEVEL set first, its start-up lines held aside; --verbose keeps them),
        # so a weights file Keras refuses is the one line of the error, not after CUDA's chatter.
        import backends.tf.runtime  # noqa: F401
    from service.data import DEFAULT_IMAGE_SIZE, native_image_size

    image_size = args.image_size or native_image_size(args.real) or native_image_size(args.fake) or DEFAULT_IMAGE_SIZE
    source, sample = sample_plan(args)
    real = _load(args.real, image_size, args, args.labels)
    train = _load(args.train, image_size, args, args.labels) if args.train else None

    from service.generation import real_class_indices

    # generated classes as the real set's class indices; no per-class values if they do not match
    if sample is not None:
        fake_images, fake_names = read_fitted_sample(source, sample, image_size, args.crop)
    else:
        fake = _load(args.fake, image_size, args)
        fake_images = fake.images
        fake_names = [fake.class_names[i] for i in fake.labels] if fake.labels is not None else generated_class_names(fake)
    real_labels, class_names = real.labels, real.class_names
    fake_labels = real_class_indices(fake_names, real)
    result = validate_sets(
        real.images,
        fake_images,
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
        # the class-fidelity classifier trains on the training set when its classes are the real set's
        train_labels=None if train is None or tuple(train.class_names) != tuple(class_names) else train.labels,
    )
    if sample is not None:
        from service.validation.every_image import audit_every_image

        result = audit_every_image(result, args.out, source, sample, train if train is not None else real,
                                   train_name=str(Path(args.train or args.real).resolve()), seed=args.seed,
                                   workers=args.workers, progress=show_progress(args))
    main, reference = result["real_vs_generated"], result["real_vs_real"]
    print(
        f"SWD {main['swd_mean']:.3f} (real vs real {reference['swd_mean']:.3f}), "
        f"FD {main['fd']:.4g} ({reference['fd']:.4g}), precision {main['precision']:.3f}, recall {main['recall']:.3f}, "
        f"likely copies {main['copies']}/{result['counts']['generated']}"
    )
    print(f"report: {Path(args.out) / REPORT_FILE}")
    return 0


def sample_plan(args):
    """(the generated set, the sorted sample of its indices) when --fake is a generated folder or
    tar shards holding more than --sample images; (None, None) otherwise (all are loaded)."""
    from service.audit.source import open_generated_set, sample_indices
    from service.generation import MANIFEST_FILE

    if args.sample < 1:
        raise UserError(f"--sample must be a positive number of images, got {args.sample}")
    fake = Path(args.fake)
    if not ((fake / MANIFEST_FILE).is_file() or fake.suffix.lower() == ".tar" or (fake.is_dir() and any(fake.glob("*.tar")))):
        return None, None
    source = open_generated_set(fake)
    if source.count <= args.sample:
        return None, None
    return source, sample_indices(source.count, args.sample, args.seed)


def read_fitted_sample(source, sample, image_size: int, crop: str):
    """The sampled images at image_size (as load_images fits them) and their class names."""
    import numpy as np

    from service.audit.source import read_sample
    from service.data import fit_square

    images, names = read_sample(source, sample)
    if images.shape[1:3] != (image_size, image_size):
        images = np.stack([fit_square(image, image_size, crop) for image in images])
    return images, names
