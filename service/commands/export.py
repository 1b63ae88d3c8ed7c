"""`export`: a run's generator as a standard Keras 3 model (see service.export).

    python -m service.run export --run runs/a --out G.keras
    python -m service.run export --run runs/a --out G-savedmodel --format savedmodel
"""

from __future__ import annotations

from service.export import FORMATS


def add_arguments(p):
    p.add_argument("--run", metavar="RUN", required=True, help="run directory (config.json + checkpoints/)")
    p.add_argument("--out", metavar="PATH", required=True, help="the .keras file (or SavedModel folder) to write")
    p.add_argument("--format", choices=FORMATS, default=FORMATS[0],
                   help="keras: one .keras file for keras.saving.load_model (default); "
                        "savedmodel: a TensorFlow SavedModel for serving")


def run(args) -> int:
    from service.export import export_generator
    from service.rundir import load_config

    written = export_generator(args.run, args.out, args.format)
    maps = load_config(args.run)[0].noise_map_size  # G's noise inputs: z's tail (service.export)
    then = f", then {maps} standard normal noise-map values" if maps else ""
    print(f"exported the {written['weights']} of {written['checkpoint']} as a {written['format']} model: {written['path']}")
    print(f"inputs: {written['inputs']} (z: {written['latent_dim']} {written['noise']} numbers{then}); "
          f"output: {written['image_size']}x{written['image_size']} RGB in [-1, 1]")
    if "privacy" in written:  # a private run's guarantee travels with its model
        privacy = written["privacy"]
        print(f"differentially private: epsilon {privacy['epsilon']:.3g} at delta {privacy['delta']:g} "
              f"({privacy['steps']} private D steps)")
    return 0
