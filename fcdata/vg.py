"""Visual Genome annotations -> columnar pyarrow tables, parsed in parallel chunks.

VG's annotation files are single JSON arrays of hundreds of MB; `json.load` would hold millions of
dicts (several GB), and converting records one by one in one process takes over a minute for VG.
Instead a numba scan of the memory-mapped file finds where each top-level record starts and ends
(~1 GB/s), the records are cut into chunks of similar size, and worker processes decode one chunk
at a time into an Arrow record batch. Peak memory: the Arrow tables plus one chunk's Python
objects per worker.

Field names differ between releases (see ../shared/BRIEF.md); every variant maps to one schema:
- images:  image_id int64, stated_width int32, stated_height int32 (0 = not stated), coco_id int64
           (null unless the image is a COCO photo)
- regions: image_id int64, region_id int64, phrase string (as written), x, y, w, h float64
- objects: image_id int64, object_id int64, x, y, w, h float64, names list<string>,
           synsets list<string>
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
from numba import njit

from fcdata import reasons
from fcdata.errors import UserError

IMAGE_FOLDERS = ("VG_100K", "VG_100K_2", "images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Chunks per worker: several, so that a slow chunk does not leave the others idle at the end.
_CHUNKS_PER_WORKER = 4
# Files smaller than this are parsed in this process: starting workers would cost more.
_PARALLEL_MIN_BYTES = 32 << 20

IMAGES_SCHEMA = pa.schema(
    [("image_id", pa.int64()), ("stated_width", pa.int32()), ("stated_height", pa.int32()),
     ("coco_id", pa.int64())]  # null for images that are not COCO photos
)
REGIONS_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("region_id", pa.int64()),
        ("phrase", pa.string()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("w", pa.float64()),
        ("h", pa.float64()),
    ]
)
OBJECTS_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("object_id", pa.int64()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("w", pa.float64()),
        ("h", pa.float64()),
        ("names", pa.list_(pa.string())),
        ("synsets", pa.list_(pa.string())),
    ]
)


@dataclass
class VgAnnotations:
    images: pa.Table  # IMAGES_SCHEMA, one row per listed image, in file order
    regions: pa.Table  # REGIONS_SCHEMA, only regions of listed images, in file order
    objects: pa.Table | None  # OBJECTS_SCHEMA, or None where objects.json is absent
    region_drops: Counter[str] = field(default_factory=Counter)  # parse-time drops by reason
    files: dict[str, Path] = field(default_factory=dict)  # annotation name -> file read


def find_annotation(vg_root: Path, stem: str, required: bool = True) -> Path | None:
    """`stem`.json directly in the root or in a folder directly below it (e.g. 1.2/)."""
    candidates = [vg_root / f"{stem}.json"]
    candidates += sorted(vg_root.glob(f"*/{stem}.json"))
    for path in candidates:
        if path.is_file():
            return path
    if required:
        raise UserError(f"{stem}.json not found in {vg_root} (nor in a folder directly below it)")
    return None


# ----------------------------------------------------------------------------- splitting the array

_SCAN_ERRORS = {
    1: "expected a JSON array at the top level",
    2: "the JSON array is not closed (truncated file?)",
    3: "unexpected content after the JSON array",
    4: "an empty element (two commas, or a comma next to a bracket)",
    5: "unbalanced brackets",
}


@njit(cache=True, nogil=True)
def json_array_elements(data: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Byte spans [start, stop) of the elements of the top-level JSON array in `data` (uint8).

    Returns (spans, error code, error offset); error 0 means well formed as far as structure goes
    (strings, escapes and bracket depth); the elements themselves are checked by json.loads.
    """
    size = data.shape[0]
    spans = np.empty((1024, 2), np.int64)
    count = 0
    position = 0
    if size >= 3 and data[0] == 0xEF and data[1] == 0xBB and data[2] == 0xBF:
        position = 3  # UTF-8 byte order mark
    while position < size and (data[position] == 32 or 9 <= data[position] <= 13):
        position += 1
    if position >= size or data[position] != 91:  # "["
        return spans[:0], 1, position
    depth = 1
    start = -1
    last = -1  # last non-space byte of the current element
    in_string = False
    position += 1
    while position < size:
        byte = data[position]
        if in_string:  # most bytes are inside strings: skip to the closing quote in a tight loop
            while position < size:
                byte = data[position]
                if byte == 92:  # backslash: the next byte is escaped
                    position += 2
                elif byte == 34:  # quote
                    break
                else:
                    position += 1
            if position >= size:
                break
            in_string = False
            last = position
            position += 1
            continue
        if byte == 32 or 9 <= byte <= 13:
            position += 1
            continue
        if depth == 1 and (byte == 44 or byte == 93):  # "," or "]" ends an element
            if start < 0:
                if byte == 93 and count == 0:
                    depth = 0
                    position += 1
                    break
                return spans[:count], 4, position
            if count == spans.shape[0]:
                grown = np.empty((2 * count, 2), np.int64)
                grown[:count] = spans
                spans = grown
            spans[count, 0] = start
            spans[count, 1] = last + 1
            count += 1
            start = -1
            position += 1
            if byte == 93:
                depth = 0
                break
            continue
        if start < 0:
            start = position
        last = position
        if byte == 34:
            in_string = True
        elif byte == 91 or byte == 123:  # "[" or "{"
            depth += 1
        elif byte == 93 or byte == 125:  # "]" or "}"
            depth -= 1
            if depth < 1:
                return spans[:count], 5, position
        position += 1
    if depth != 0:
        return spans[:count], 2, size
    while position < size:
        if not (data[position] == 32 or 9 <= data[position] <= 13):
            return spans[:count], 3, position
        position += 1
    return spans[:count], 0, 0


def _chunks(spans: np.ndarray, pieces: int) -> list[tuple[int, int]]:
    """Consecutive elements grouped into up to `pieces` byte ranges of similar size."""
    if len(spans) == 0:
        return []
    ends = spans[:, 1]
    targets = np.linspace(spans[0, 0], ends[-1], pieces + 1)[1:-1]
    cuts = np.unique(np.searchsorted(ends, targets))
    firsts = np.concatenate(([0], cuts + 1))
    lasts = np.concatenate((cuts, [len(spans) - 1]))
    return [(int(spans[f, 0]), int(spans[l, 1])) for f, l in zip(firsts, lasts) if f <= l]


# ----------------------------------------------------------------------------- records -> columns


def _first(record: dict, *names: str):
    for name in names:
        if name in record:
            return record[name]
    return None


def _number(value) -> float:
    """A coordinate as float; raises for anything that is not a real number (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def _image_rows(records: list) -> tuple[pa.RecordBatch, Counter]:
    ids, widths, heights, coco_ids = [], [], [], []
    for record in records:
        if not isinstance(record, dict):
            continue
        image_id = _first(record, "image_id", "id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            continue
        width, height = record.get("width"), record.get("height")
        ids.append(image_id)
        widths.append(width if isinstance(width, int) and width > 0 else 0)
        heights.append(height if isinstance(height, int) and height > 0 else 0)
        coco_id = record.get("coco_id")
        coco_ids.append(coco_id if isinstance(coco_id, int) and not isinstance(coco_id, bool) else None)
    return pa.RecordBatch.from_arrays(
        [pa.array(ids, pa.int64()), pa.array(widths, pa.int32()), pa.array(heights, pa.int32()),
         pa.array(coco_ids, pa.int64())],
        schema=IMAGES_SCHEMA,
    ), Counter()


def _region_rows(records: list) -> tuple[pa.RecordBatch, Counter]:
    columns: list[list] = [[] for _ in REGIONS_SCHEMA]
    appends = [column.append for column in columns]
    drops: Counter[str] = Counter()
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("regions"), list):
            continue
        record_image_id = _first(record, "id", "image_id")
        for region in record["regions"]:
            try:
                image_id = _first(region, "image_id", "image")
                values = (
                    int(record_image_id if image_id is None else image_id),
                    int(_first(region, "region_id", "id")),
                    region["phrase"],
                    _number(region["x"]),
                    _number(region["y"]),
                    _number(region["width"]),
                    _number(region["height"]),
                )
                if not isinstance(values[2], str):
                    raise TypeError("phrase is not a string")
            except (KeyError, TypeError, ValueError):
                drops[reasons.DROP_BAD_RECORD] += 1
                continue
            for append, value in zip(appends, values):
                append(value)
    arrays = [pa.array(c, type=f.type) for c, f in zip(columns, REGIONS_SCHEMA)]
    return pa.RecordBatch.from_arrays(arrays, schema=REGIONS_SCHEMA), drops


def _object_rows(records: list) -> tuple[pa.RecordBatch, Counter]:
    columns: list[list] = [[] for _ in OBJECTS_SCHEMA]
    appends = [column.append for column in columns]
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("objects"), list):
            continue
        image_id = _first(record, "image_id", "id")
        if not isinstance(image_id, int):
            continue
        for obj in record["objects"]:
            try:
                values = (image_id, int(_first(obj, "object_id", "id"))) + tuple(
                    _number(obj[k]) for k in ("x", "y", "w", "h")
                )
            except (KeyError, TypeError, ValueError):
                continue  # objects only annotate regions; a bad one is not worth a count
            names = _first(obj, "names", "name", "object_names")
            names = [names] if isinstance(names, str) else list(names or [])
            synsets = obj.get("synsets") or []
            values += (
                [n.strip() for n in names if isinstance(n, str)],
                [s for s in synsets if isinstance(s, str)],
            )
            for append, value in zip(appends, values):
                append(value)
    arrays = [pa.array(c, type=f.type) for c, f in zip(columns, OBJECTS_SCHEMA)]
    return pa.RecordBatch.from_arrays(arrays, schema=OBJECTS_SCHEMA), Counter()


_CONVERTERS = {"images": _image_rows, "regions": _region_rows, "objects": _object_rows}
_SCHEMAS = {"images": IMAGES_SCHEMA, "regions": REGIONS_SCHEMA, "objects": OBJECTS_SCHEMA}


def _parse_chunk(path: str, start: int, stop: int, kind: str) -> tuple[pa.RecordBatch, Counter]:
    """Decode the elements in bytes [start, stop) of `path` into one record batch."""
    with open(path, "rb") as stream:
        stream.seek(start)
        text = stream.read(stop - start)
    try:
        records = json.loads(b"[" + text + b"]")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: invalid JSON near byte {start}: {exc}") from None
    return _CONVERTERS[kind](records)


def read_annotation(
    path: Path, kind: str, pool: ProcessPoolExecutor | None = None, workers: int = 1
) -> tuple[pa.Table, Counter]:
    """One annotation file (kind: images, regions or objects) -> (table in file order, drops).

    With a pool (of `workers` processes) the chunks are decoded in parallel."""
    data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
    spans, error, offset = json_array_elements(data)
    if error:
        raise UserError(f"{path}: {_SCAN_ERRORS[error]} (byte {offset})")
    del data
    chunks = _chunks(spans, _CHUNKS_PER_WORKER * workers)
    if pool is None:
        results = [_parse_chunk(str(path), start, stop, kind) for start, stop in chunks]
    else:
        results = list(pool.map(_parse_chunk, *zip(*[(str(path), a, b, kind) for a, b in chunks])))
    drops: Counter[str] = Counter()
    for _, chunk_drops in results:
        drops.update(chunk_drops)
    table = pa.Table.from_batches([batch for batch, _ in results], schema=_SCHEMAS[kind])
    return table, drops


def _keep_first(table: pa.Table, column: str) -> pa.Table:
    """Rows whose `column` value appears for the first time, in file order."""
    values = table.column(column).to_numpy()
    _, first = np.unique(values, return_index=True)
    return table.take(np.sort(first)) if len(first) != len(values) else table


def _listed(table: pa.Table, listed_ids: np.ndarray) -> np.ndarray:
    return np.isin(table.column("image_id").to_numpy(), listed_ids)


def annotation_files(vg_root: Path) -> dict[str, Path]:
    """The annotation files to read, by name; a UserError if the root or a required file is missing."""
    if not vg_root.is_dir():
        raise UserError(f"--vg-root {vg_root} is not a directory")
    files = {
        "image_data": find_annotation(vg_root, "image_data"),
        "region_descriptions": find_annotation(vg_root, "region_descriptions"),
    }
    objects_path = find_annotation(vg_root, "objects", required=False)
    if objects_path is not None:
        files["objects"] = objects_path
    return files


def load_vg(vg_root: Path, pool: ProcessPoolExecutor | None = None, workers: int = 1) -> VgAnnotations:
    """Read image_data.json, region_descriptions.json and (if present) objects.json, decoding
    chunks on `pool` (of `workers` processes) when the files are big enough for that to pay."""
    files = annotation_files(vg_root)
    objects_path = files.get("objects")
    if sum(path.stat().st_size for path in files.values()) < _PARALLEL_MIN_BYTES:
        pool, workers = None, 1
    images, _ = read_annotation(files["image_data"], "images", pool, workers)
    images = _keep_first(images, "image_id")
    listed_ids = np.sort(images.column("image_id").to_numpy())
    regions, drops = read_annotation(files["region_descriptions"], "regions", pool, workers)
    listed = _listed(regions, listed_ids)
    drops[reasons.DROP_NO_IMAGE_RECORD] += int(np.count_nonzero(~listed))
    regions = regions.filter(listed)
    objects = None
    if objects_path is not None:
        objects, _ = read_annotation(objects_path, "objects", pool, workers)
        objects = objects.filter(_listed(objects, listed_ids))
    drops = Counter({reason: count for reason, count in drops.items() if count})
    return VgAnnotations(images, regions, objects, drops, files)


def index_image_files(vg_root: Path) -> dict[int, Path]:
    """image id -> file, from VG_100K/, VG_100K_2/ and images/ (first folder wins)."""
    found: dict[int, Path] = {}
    for folder in IMAGE_FOLDERS:
        directory = vg_root / folder
        if not directory.is_dir():
            continue
        with os.scandir(directory) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix.lower() in IMAGE_SUFFIXES and stem.isdigit():
                    found.setdefault(int(stem), Path(entry.path))
    return found


def input_fingerprint(files: dict[str, Path]) -> dict[str, list[int]]:
    """Size and mtime of each annotation file: enough to notice that the input changed."""
    fingerprint = {}
    for name, path in sorted(files.items()):
        stat = path.stat()
        fingerprint[name] = [stat.st_size, stat.st_mtime_ns]
    return fingerprint
