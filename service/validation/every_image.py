"""`validate --sample N` on a set larger than N: the distribution metrics and maps on the sample
(evaluate.validate_sets), the memorization audit on every image (service.audit, streamed in
shards), its counts, closest pairs and panel written into the report's metrics and page."""

from __future__ import annotations

from pathlib import Path

from service.audit import PANEL_FILE, ROWS_FILE, run_audit
from service.files import copy_regular_file, output_lock, write_json
from service.imageio import to_uint8
from service.validation.report import RESULTS_FILE, write_report

AUDIT_FOLDER = "audit"  # the streaming audit's folder inside validate's


def audit_every_image(result: dict, out_dir, source, sample, train, train_name: str, seed: int,
                      workers: int = 0, progress: bool = True) -> dict:
    """Audit every image of the generated set `source` against `train` (a Dataset) into
    OUT/audit/; its counts, closest pairs and panel replace the sample's in `result`, which is
    written again as metrics.json and the report. Returns the updated result."""
    out = Path(out_dir)
    with output_lock(out, "a report"):
        audited = run_audit(source, to_uint8(train.images), out / AUDIT_FOLDER, train_groups=train.groups,
                            train_files=train.files, train_name=train_name, workers=workers, progress=progress)
        summary = audited.summary
        result["counts"].update(generated=summary["generated"], generated_sample=len(sample))
        result["sample"] = {
            "size": len(sample), "of": summary["generated"], "seed": seed, "draw": "numpy default_rng([seed, 5])",
            "note": "distribution metrics and maps on the sample: proportions (precision, recall, density, coverage) "
                    f"carry a standard error of at most 0.5/sqrt({len(sample)}); SWD, FD and KID the sampling noise "
                    "of that many images; the memorization counts cover every image",
        }
        result["real_vs_generated"].update(copies=summary["copies"], copy_share=summary["copy_share"],
                                           median_copy_ratio=summary["median_ratio"])
        result["memorization"].update(closest_pairs=summary["closest_pairs"], every_image={
            key: summary[key] for key in ("generated", "copies", "copy_share", "training_images_copied", "min_ratio",
                                          "median_ratio", "ratio_quantiles")} | {"rows": f"{AUDIT_FOLDER}/{ROWS_FILE}"})
        if summary["files"]["panel"]:
            copy_regular_file(out / AUDIT_FOLDER / PANEL_FILE, out / "memorization_pairs.png", inside=out / AUDIT_FOLDER)
        write_json(out / RESULTS_FILE, result)
        write_report(out, result)
    return result
