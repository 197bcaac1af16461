"""Visual Genome's real defects, planted on chosen images so the sharder's counts can be checked.

`quirks` injects Visual Genome's real defects, each a fixed number of times, on distinct images
chosen by the seed; the report counts them under the names of `fcdata.reasons`:

    images (one each):  missing (listed, no file), truncated (first 40% of a JPEG), undecodable
                        (an HTML error page plus random bytes), known_corrupt (id 1592, a valid
                        JPEG), no_regions (an empty regions list), grayscale (L JPEG), cmyk (CMYK
                        JPEG), format_mismatch x2 (an RGB PNG and a palette PNG named .jpg),
                        palette (that palette PNG), size_mismatch (image_data states twice the size)
    regions:            whitespace x3 (leading/trailing spaces, a tab, a newline), empty_phrase,
                        empty_box x2 (zero width, negative height), outside_image (x beyond the
                        width), clipped (x < 0, partly inside), too_small (2 x 2 px), duplicate
                        (an earlier region's phrase in title case, box shifted 1-2 px, IoU >= 0.75),
                        bad_record x2 (no `phrase` key; x = "abc"), long_phrase (about 400
                        characters), no_image_record (a regions record for an unlisted image id:
                        its 3 regions)
    big_region_ids:     two regions of a clean image get ids above 2**32 (as in VG)

Region quirks sit on images without an image quirk, and their phrases repeat no other phrase except
the one intended duplicate. The counts assume the sharder's defaults, and trigger with margin:
images stored with a shorter side of 256 px (never upscaled), boxes need 4 stored px per side
(every generated box keeps at least 6.4; the too_small box keeps under 2), duplicates need IoU
above 0.7, phrases are cut at 200 characters. Fix counts only cover regions the sharder keeps.

"""

from __future__ import annotations

import io
import itertools
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fcdata.options import SynthOptions
from fcdata.reasons import (
    DROP_BAD_RECORD,
    DROP_DUPLICATE,
    DROP_EMPTY_BOX,
    DROP_EMPTY_PHRASE,
    DROP_OUTSIDE_IMAGE,
    DROP_TOO_SMALL,
    FIX_CLIPPED,
    FIX_CMYK,
    FIX_FORMAT_MISMATCH,
    FIX_GRAYSCALE,
    FIX_LONG_PHRASE,
    FIX_PALETTE,
    FIX_SIZE_MISMATCH,
    FIX_WHITESPACE,
    IMAGE_FIXES,
    IMAGE_SKIPS,
    SKIP_KNOWN_CORRUPT,
    SKIP_MISSING,
    SKIP_NO_REGIONS,
    SKIP_TRUNCATED,
    SKIP_UNDECODABLE,
)
from fcdata.synth.scenes import _PLAN_STREAM, RenderedImage

if TYPE_CHECKING:
    from fcdata.synth.writer import _AnnotationWriter


KNOWN_CORRUPT_QUIRK_ID = 1592
BIG_REGION_IDS = (900100184613, 900100184614)  # the first is a real VG region id
TRUNCATE_FRACTION = 0.4
# Random bytes alone can pass the header check of formats with no magic number (e.g. TGA);
# an HTML error page, which is what failed downloads really contain, cannot.
GARBAGE_PREFIX = b"<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
LONG_PHRASE_CLAUSES = (
    "that sits on a rough and speckled piece of ground",
    "drawn with soft shading from a light on one side",
    "with a thin and slightly blurred outline around its edges",
    "in a photo that looks a little out of focus near the corners",
    "seen from straight above on a cloudy afternoon",
    "which someone clearly painted by hand with a wide brush",
)
# Image-level quirks: the file on disk or the image's records is wrong. Each on its own image.
FILE_QUIRKS = (
    SKIP_MISSING, SKIP_TRUNCATED, SKIP_UNDECODABLE, FIX_GRAYSCALE, FIX_CMYK, FIX_FORMAT_MISMATCH,
    FIX_PALETTE,
)
RECORD_QUIRKS = (SKIP_NO_REGIONS, FIX_SIZE_MISMATCH)
BIG_REGION_IDS_QUIRK = "big_region_ids"
# Region-level quirks, each on its own otherwise clean image.
REGION_QUIRKS = (
    FIX_WHITESPACE, DROP_EMPTY_PHRASE, DROP_EMPTY_BOX, DROP_OUTSIDE_IMAGE, FIX_CLIPPED,
    DROP_TOO_SMALL, DROP_DUPLICATE, DROP_BAD_RECORD, FIX_LONG_PHRASE, BIG_REGION_IDS_QUIRK,
)
ORPHAN_REGIONS = 3  # regions in the record whose image id is not in image_data.json


def _file_bytes(
    image: Image.Image, file_quirk: str | None, quality: int, rng: np.random.Generator
) -> bytes | None:
    """The bytes stored as {image_id}.jpg; None means no file (the `missing` quirk)."""
    if file_quirk == SKIP_MISSING:
        return None
    if file_quirk == FIX_FORMAT_MISMATCH:
        return _encode(image, "PNG")
    if file_quirk == FIX_PALETTE:
        return _encode(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG")
    if file_quirk == FIX_GRAYSCALE:
        image = image.convert("L")
    elif file_quirk == FIX_CMYK:
        image = image.convert("CMYK")
    data = _encode(image, "JPEG", quality=quality)
    if file_quirk == SKIP_TRUNCATED:
        return data[: int(len(data) * TRUNCATE_FRACTION)]
    if file_quirk == SKIP_UNDECODABLE:
        return GARBAGE_PREFIX + rng.bytes(len(data) // 4)
    return data


def _encode(image: Image.Image, image_format: str, **params: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def _quirk_plan(options: SynthOptions, image_ids: list[int]) -> dict[int, str]:
    """image id -> its one quirk; each quirk on a different image, chosen by the seed."""
    if not options.quirks:
        return {}
    kinds = FILE_QUIRKS + RECORD_QUIRKS + REGION_QUIRKS
    rng = np.random.default_rng([options.seed, _PLAN_STREAM])
    candidates = [i for i in image_ids if i != KNOWN_CORRUPT_QUIRK_ID]
    chosen = rng.choice(candidates, size=len(kinds), replace=False)
    plan = {int(image_id): kind for image_id, kind in zip(chosen, kinds)}
    plan[KNOWN_CORRUPT_QUIRK_ID] = SKIP_KNOWN_CORRUPT
    return plan


def _file_quirk(quirk: str | None) -> str | None:
    return quirk if quirk in FILE_QUIRKS else None


def _image_quirk_counts(quirk: str | None) -> Counter[str]:
    if quirk == FIX_PALETTE:  # a palette PNG named .jpg is also a format mismatch
        return Counter({FIX_PALETTE: 1, FIX_FORMAT_MISMATCH: 1})
    if quirk in IMAGE_SKIPS or quirk in IMAGE_FIXES:
        return Counter({quirk: 1})
    return Counter()


def _inject_region_quirk(
    rendered: RenderedImage, quirk: str | None, writer: _AnnotationWriter
) -> tuple[list[dict], Counter[str]]:
    """The image's region records in neutral field names, with its region quirk, if any, applied.

    Drop quirks append a defective region, so the clean ones all survive; fix quirks alter an
    object region, which the sharder keeps after repairing.
    """
    if quirk == SKIP_NO_REGIONS:
        return [], Counter()
    regions = [writer.new_region(r.phrase, r.box) for r in rendered.regions]
    if quirk not in REGION_QUIRKS:
        return regions, Counter()
    width, height = rendered.width, rendered.height
    first = rendered.objects[0]
    fx, fy, fw, fh = first.box
    if quirk == FIX_WHITESPACE:
        regions[0]["phrase"] = f"  {regions[0]['phrase']} "
        regions[1]["phrase"] = regions[1]["phrase"].replace(" ", "\t", 1)
        regions[2]["phrase"] = "\n".join(regions[2]["phrase"].rsplit(" ", 1))
        return regions, Counter({FIX_WHITESPACE: 3})
    if quirk == DROP_EMPTY_PHRASE:
        regions.append(writer.new_region(" \t \n ", first.box))
    elif quirk == DROP_EMPTY_BOX:
        regions.append(writer.new_region("a thin crack in the ground", (fx, fy, 0, fh)))
        shadow = f"a shadow under the {first.label}"
        regions.append(writer.new_region(shadow, (fx, fy + fh, fw, -12)))
    elif quirk == DROP_OUTSIDE_IMAGE:
        beyond = (width + 15, height // 4, 40, 30)
        regions.append(writer.new_region("a sign beyond the right edge", beyond))
    elif quirk == FIX_CLIPPED:
        index = min(range(len(rendered.objects)), key=lambda i: rendered.objects[i].box[0])
        x, y, w, h = rendered.objects[index].box
        overhang = 3 + rendered.image_id % 10  # px left of the image: 3-12, as in VG's few cases
        regions[index].update(x=-overhang, width=x + w + overhang)
        return regions, Counter({FIX_CLIPPED: 1})
    elif quirk == DROP_TOO_SMALL:
        speck = (fx + fw // 2, fy + fh // 2, 2, 2)
        regions.append(writer.new_region("a tiny speck of dust", speck))
    elif quirk == DROP_DUPLICATE:
        areas = [obj.box[2] * obj.box[3] for obj in rendered.objects]
        index = areas.index(max(areas))
        x, y, w, h = rendered.objects[index].box
        shifted = (x + _nudge(x, w, width), y + _nudge(y, h, height), w, h)
        regions.append(writer.new_region(regions[index]["phrase"].title(), shifted))
    elif quirk == DROP_BAD_RECORD:
        missing_phrase = writer.new_region("", first.box)
        del missing_phrase["phrase"]
        not_a_number = writer.new_region("a blurry corner of the picture", first.box)
        not_a_number["x"] = "abc"
        regions += [missing_phrase, not_a_number]
        return regions, Counter({DROP_BAD_RECORD: 2})
    elif quirk == FIX_LONG_PHRASE:
        regions[0]["phrase"] = _long_phrase(regions[0]["phrase"])
        return regions, Counter({FIX_LONG_PHRASE: 1})
    elif quirk == BIG_REGION_IDS_QUIRK:
        for region, big_id in zip(regions, BIG_REGION_IDS):
            region["region_id"] = big_id
        return regions, Counter()
    return regions, Counter({quirk: len(regions) - len(rendered.regions)})


def _nudge(start: int, side: int, limit: int) -> int:
    """A shift of 0-2 px along one axis that keeps IoU above 0.75 (worst: 1 px on 16 px, 0.78
    over both axes) and the box inside [0, limit)."""
    step = 2 if side >= 40 else 1 if side >= 16 else 0
    return step if start + side + step <= limit else -step


def _long_phrase(start: str) -> str:
    """`start` followed by clauses until about 400 characters (the sharder cuts at 200)."""
    clauses = itertools.cycle(LONG_PHRASE_CLAUSES)
    phrase = f"{start} {next(clauses)}"
    while len(phrase) < 400:
        phrase += f" and {next(clauses)}"
    return phrase
