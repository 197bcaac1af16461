"""A synthetic Visual Genome: same layout and field names, scenes where the region matters.

Layout written under the output folder (exactly Visual Genome's):

    image_data.json  region_descriptions.json  objects.json  relationships.json
    VG_100K/{image_id}.jpg  VG_100K_2/{image_id}.jpg      (odd ids in the first, even in the second)
    synth_report.json                                     (what was written and injected)

Every file is written under a temporary name and renamed into place; synth_report.json comes last,
so its presence marks a finished dataset.

Each image shows 3-6 distinct objects: no two share (colour, shape), so a phrase such as
"a small red triangle" names one object and cannot be guessed from the whole image. There is one
region per object whose box is the object's tight bounding box (0-based integer pixels, x + width
<= image width). `regions_per_image` adds relational regions ("the red circle left of the blue
square", union box), part regions ("the left half of the red circle") and background patches
("a mottled patch of ground near the top left", box sides log-uniform from the minimum region side
to most of the image). Every phrase of an image is unique ignoring case.

Modules: `scenes` (what an image shows, and its pixels), `phrases` (region and relation
phrases), `quirks` (Visual Genome's defects, planted), `writer` (the files, and `generate_vg`).
"""

from __future__ import annotations


from fcdata.options import SynthOptions
from fcdata.synth.scenes import COLOURS, SHAPES, min_region_side
from fcdata.synth.quirks import BIG_REGION_IDS
from fcdata.synth.writer import (
    ANNOTATION_FILES,
    IMAGE_FOLDERS,
    REPORT_FILE,
    SynthReport,
    _image_ids,  # the tests check the id plan
    generate_vg,
    image_path,
)

__all__ = [
    "ANNOTATION_FILES", "BIG_REGION_IDS", "COLOURS", "IMAGE_FOLDERS", "REPORT_FILE", "SHAPES", "SynthOptions",
    "SynthReport", "generate_vg", "image_path", "min_region_side",
]
