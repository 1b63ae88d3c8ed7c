"""Generation at scale: N images from a run's checkpoint, sharded over Ray, resumable.

Image i is a pure function of (checkpoint, seed, i, class): its noise comes from a
counter-based generator keyed by (seed, i) (Philox with key = [seed, i]), and G runs in
inference mode, so an image depends only on its own noise. The output is therefore
byte-identical for any number of workers, and a killed job can be finished by running it again.

Indices are cut into fixed shards (`shard_size`, recorded in the job file). A shard writes its
PNG files atomically, then its manifest part, atomically, last: a part file marks the shard
done. A re-run (or --resume) skips shards with a part, redoes the others (rewriting identical
bytes), and merges the parts into manifest.csv in index order.

Layout of the output folder:
    OUT/img_000000000.png ...      one PNG per index (9 digits)
    OUT/manifest.csv               index,file,class,seed,checkpoint_sha256 (index order)
    OUT/.generation/job.json       what the job is; a re-run must match it
    OUT/.generation/parts/shard_000000.csv   a shard's manifest rows = its done marker
    OUT/.lesiongan.json            the folder marker: `generate` made OUT (service.files), so a
                                   re-run resumes it; any other existing folder is refused
    OUT/.lesiongan.lock            held (flock) while a job writes: a second job on OUT fails fast

Class of image i on a conditional run: the class named by --class, or else classes cycle by
index (i % num_classes: nevus, melanoma, seborrheic_keratosis, nevus, ...), a balanced set.

`job` holds the job and the folder's contract; `runners` executes it; `release` makes it a
copy-free release (--exclude-copies: each shard audited, likely copies replaced from a reserved
index range).
"""

from service.sharded import MANIFEST_FILE, PARTS_DIR
from service.generation.job import (
    STATE_DIR, GenerationJob, class_indices, image_file_name, manifest_classes, noise_for_indices,
    plan_job, read_generated, read_manifest, real_class_indices,
)
from service.generation.runners import (
    GenerationResult, describe, generate_in_process, generate_on_ray, load_generator, run_shard_task,
)

__all__ = [
    "MANIFEST_FILE", "PARTS_DIR", "STATE_DIR", "GenerationJob", "GenerationResult", "class_indices", "describe", "generate_in_process",
    "generate_on_ray", "image_file_name", "load_generator", "manifest_classes", "noise_for_indices", "plan_job",
    "read_generated", "read_manifest", "real_class_indices", "run_shard_task",
]
