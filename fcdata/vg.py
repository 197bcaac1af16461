"""Visual Genome annotations -> columnar pyarrow tables, parsed in parallel chunks.

VG's annotation files are single JSON arrays of hundreds of MB; `json.load` would hold millions of
dicts (several GB), and converting records one by one in one process takes over a minute for VG.
Instead a numba scan of the memory-mapped file finds where each top-level record starts and ends
(at the speed of a plain loop over the bytes), the records are cut into chunks of similar size
(at most 32 MB), and worker processes decode one chunk at a time into an Arrow record batch with
pyarrow's JSON reader and clean the phrases there (see "records -> columns"). Peak memory: the
Arrow tables plus one chunk per worker.

Field names differ between releases 1.0, 1.2 and 1.4, so each field is read under every name it
has had: an image's id `image_id` or `id`; a region's image `image_id` or `image` (else the record's
`id` or `image_id`) and its own id `region_id` or `id`; an object's id `object_id` or `id`, its
names `names` (a list), `name` (one) or `object_names`, and `synsets`, which may be absent. Image
URLs are never used (v1.0's point at an old path): images are looked up in IMAGE_FOLDERS. Every
variant maps to one schema:
- images:  image_id int64, stated_width int32, stated_height int32 (0 = not stated), coco_id int64
           (null unless the image is a COCO photo)
- regions: image_id int64, region_id int64, phrase string (normalised: see
           fcdata.regions.normalise_phrases), x, y, w, h float64, phrase_key int64,
           whitespace_fixed bool, long_fixed bool
- objects: image_id int64, object_id int64, x, y, w, h float64, names list<string>,
           synsets list<string>
- relations: image_id int64, relationship_id int64, predicate string (lower case, whitespace
           collapsed), subject_id int64 (-1 = not stated), subject_name string, subject x, y,
           w, h float64, the same five for the object, then phrase, phrase_key,
           whitespace_fixed, long_fixed as for regions

A relationship's id is `relationship_id` or `id`; its subject and object carry an object's fields
(`object_id` or `id`, `x`, `y`, `w`, `h`) and a name as `name` or `names` (the first is used). Its
phrase is "subject predicate object" ("man riding horse"), normalised like region phrases;
empty where any of the three is missing, so the sharder drops it as `empty_phrase`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from fcdata import reasons
from fcdata.regions import normalise_phrases
from fcdata.errors import UserError

IMAGE_FOLDERS = ("VG_100K", "VG_100K_2", "images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Chunks per worker: several, so that a slow chunk does not leave the others idle at the end.
_CHUNKS_PER_WORKER = 4
# Files smaller than this are parsed in this process: starting workers would cost more.
_PARALLEL_MIN_BYTES = 32 << 20
# Chunks are at most this big, so that progress moves and a refused chunk costs little.
_CHUNK_BYTES = 32 << 20

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
        ("phrase_key", pa.int64()),
        ("whitespace_fixed", pa.bool_()),
        ("long_fixed", pa.bool_()),
    ]
)
_RELATION_BOX_FIELDS = [(f"{role}_{k}", pa.float64()) for role in ("subject", "object") for k in "xywh"]
RELATIONS_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("relationship_id", pa.int64()),
        ("predicate", pa.string()),
        ("subject_id", pa.int64()),
        ("subject_name", pa.string()),
        ("object_id", pa.int64()),
        ("object_name", pa.string()),
    ]
    + _RELATION_BOX_FIELDS
    + [
        ("phrase", pa.string()),
        ("phrase_key", pa.int64()),
        ("whitespace_fixed", pa.bool_()),
        ("long_fixed", pa.bool_()),
    ]
)
_RELATION_RAW_COLUMNS = 15  # the columns before the phrase: what both decoding paths produce
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
    relations: pa.Table | None = None  # RELATIONS_SCHEMA, or None where relationships.json is absent or not read
    region_drops: Counter[str] = field(default_factory=Counter)  # parse-time drops by reason
    relation_drops: Counter[str] = field(default_factory=Counter)  # the same for relationships
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


_SPANS_PER_CALL = 1 << 14  # elements the scan kernel finds per call: bounds its buffer, paces progress


@njit(cache=True, nogil=True, inline="always")
def _is_space(byte) -> bool:
    return byte == 32 or byte == 10 or byte == 13 or byte == 9


@njit(cache=True, nogil=True)
def _array_start(data: np.ndarray) -> tuple[int, int]:
    """(position of the first element, or of the closing bracket of an empty array; error code)."""
    size = data.shape[0]
    position = 0
    if size >= 3 and data[0] == 0xEF and data[1] == 0xBB and data[2] == 0xBF:
        position = 3  # UTF-8 byte order mark
    while position < size and _is_space(data[position]):
        position += 1
    if position >= size or data[position] != 91:  # "["
        return position, 1
    position += 1
    while position < size and _is_space(data[position]):
        position += 1
    return position, 0


@njit(cache=True, nogil=True)
def _scan_elements(data: np.ndarray, position: int, spans: np.ndarray) -> tuple[int, int, int]:
    """Element spans from `position` (the first byte of an element at depth 1) into `spans`,
    until the array closes (error -1), `spans` is full (0, resume at the returned position) or
    the input is malformed (an error code of _SCAN_ERRORS). Returns (spans found, code, position).

    Why it is shaped like this (it runs at the speed of a plain loop over the bytes; the first
    version ran at a tenth of that): the hot path is one compare chain per byte outside strings
    and a two-compare loop inside them, with no per-byte bookkeeping: an element's end is found
    by stepping back over whitespace once per element, not by recording the last non-space byte
    at every byte. The output buffer is fixed and refilled by the caller: growing a reassigned
    array inside the loop made numba keep reference counts and reload pointers on every
    iteration.
    """
    size = data.shape[0]
    capacity = spans.shape[0]
    count = 0
    depth = 1
    start = position
    while position < size:
        byte = data[position]
        if byte == 34:  # a string: skip to its closing quote, stepping over escapes
            position += 1
            while position < size:
                byte = data[position]
                if byte == 92:
                    position += 2
                elif byte == 34:
                    break
                else:
                    position += 1
        elif byte == 123 or byte == 91:  # "{" or "["
            depth += 1
        elif byte == 125 or byte == 93:  # "}" or "]"
            depth -= 1
            if depth == 0:
                if byte == 125:
                    return count, 5, position
                stop = position
                while stop > start and _is_space(data[stop - 1]):
                    stop -= 1
                if stop == start:
                    return count, 4, position
                spans[count, 0] = start
                spans[count, 1] = stop
                return count + 1, -1, position + 1
        elif byte == 44 and depth == 1:  # "," between elements
            stop = position
            while stop > start and _is_space(data[stop - 1]):
                stop -= 1
            if stop == start:
                return count, 4, position
            spans[count, 0] = start
            spans[count, 1] = stop
            count += 1
            position += 1
            while position < size and _is_space(data[position]):
                position += 1
            start = position
            if count == capacity:
                return count, 0, position
            continue
        position += 1
    return count, 2, size


@njit(cache=True, nogil=True)
def _trailing_content(data: np.ndarray, position: int) -> int:
    """Position of the first non-space byte from `position` on, or -1."""
    for index in range(position, data.shape[0]):
        if not _is_space(data[index]):
            return index
    return -1


def json_array_elements(
    data: np.ndarray, report: Callable[[int], None] | None = None
) -> tuple[np.ndarray, int, int]:
    """Byte spans [start, stop) of the elements of the top-level JSON array in `data` (uint8).

    Returns (spans, error code, error offset); error 0 means well formed as far as structure goes
    (strings, escapes and bracket depth); the elements themselves are checked when decoded.
    `report(bytes scanned)` is called as the scan moves on."""
    position, error = _array_start(data)
    if error:
        return np.zeros((0, 2), np.int64), error, position
    if position < data.shape[0] and data[position] == 93:  # "]": an empty array
        found, code, position = [], -1, position + 1
    else:
        found, buffer = [], np.empty((_SPANS_PER_CALL, 2), np.int64)
        code = 0
        while code == 0:
            count, code, position = _scan_elements(data, position, buffer)
            found.append(buffer[:count].copy())
            if report:
                report(position)
    spans = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    if code != -1:
        return spans, code, position
    trailing = _trailing_content(data, position)
    if trailing >= 0:
        return spans, 3, trailing
    return spans, 0, 0


def _chunks(spans: np.ndarray, pieces: int) -> list[tuple[int, int]]:
    """Consecutive elements grouped into up to `pieces` runs of similar byte size: [first, last)
    element indices."""
    if len(spans) == 0:
        return []
    ends = spans[:, 1]
    targets = np.linspace(spans[0, 0], ends[-1], pieces + 1)[1:-1]
    cuts = np.unique(np.searchsorted(ends, targets))
    firsts = np.concatenate(([0], cuts + 1))
    lasts = np.concatenate((cuts + 1, [len(spans)]))
    return [(int(f), int(l)) for f, l in zip(firsts, lasts) if f < l]


# ----------------------------------------------------------------------------- records -> columns
#
# A chunk is decoded by pyarrow's JSON reader (C++, no Python object per value) after its
# top-level commas are turned into newlines, which makes the chunk newline-delimited JSON. The
# reader is given the raw shape of each file, every release's field names included, and the
# columns are then picked and checked with Arrow compute. Anything it refuses (a value of an
# unexpected type, such as VG's odd `"x": "abc"`, a record that is not an object, a name given as
# a list where a string was expected) sends that chunk down the Python path instead, which
# decodes with json.loads and checks value by value. The two paths give identical tables on
# anything both accept (tested): a key holding null counts as absent in both.

_REGION_RAW = pa.struct(
    [("region_id", pa.int64()), ("id", pa.int64()), ("image_id", pa.int64()), ("image", pa.int64()),
     ("phrase", pa.string())] + [(name, pa.float64()) for name in ("x", "y", "width", "height")]
)
_OBJECT_RAW = pa.struct(
    [("object_id", pa.int64()), ("id", pa.int64())]
    + [(name, pa.float64()) for name in ("x", "y", "w", "h")]
    + [("names", pa.list_(pa.string())), ("name", pa.string()), ("object_names", pa.list_(pa.string())),
       ("synsets", pa.list_(pa.string()))]
)
_RELATION_END_RAW = pa.struct(
    [("object_id", pa.int64()), ("id", pa.int64())]
    + [(name, pa.float64()) for name in ("x", "y", "w", "h")]
    + [("name", pa.string()), ("names", pa.list_(pa.string()))]
)
_RELATION_RAW = pa.struct(
    [("relationship_id", pa.int64()), ("id", pa.int64()), ("predicate", pa.string()),
     ("subject", _RELATION_END_RAW), ("object", _RELATION_END_RAW)]
)
_RAW_SCHEMAS = {
    "images": pa.schema([(name, pa.int64()) for name in ("image_id", "id", "width", "height", "coco_id")]),
    "regions": pa.schema([("id", pa.int64()), ("image_id", pa.int64()), ("regions", pa.list_(_REGION_RAW))]),
    "objects": pa.schema([("image_id", pa.int64()), ("id", pa.int64()), ("objects", pa.list_(_OBJECT_RAW))]),
    "relations": pa.schema(
        [("image_id", pa.int64()), ("id", pa.int64()), ("relationships", pa.list_(_RELATION_RAW))]
    ),
}


def _first(record: dict, *names: str):
    """The value of the first of `names` that the record holds and that is not null."""
    for name in names:
        value = record.get(name)
        if value is not None:
            return value
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


def _image_columns(table: pa.Table) -> tuple[pa.RecordBatch, Counter]:
    """Fast path: the reader's raw table -> the columns of _image_rows."""
    ids = pc.coalesce(table.column("image_id"), table.column("id")).combine_chunks()
    sizes = []
    for name in ("width", "height"):
        value = table.column(name).combine_chunks()
        stated = pc.and_kleene(value.is_valid(), pc.greater(value, 0))
        sizes.append(pc.if_else(pc.fill_null(stated, False), value, 0).filter(ids.is_valid()).cast(pa.int32()))
    coco_ids = table.column("coco_id").combine_chunks().filter(ids.is_valid())
    return pa.RecordBatch.from_arrays([ids.drop_null()] + sizes + [coco_ids], schema=IMAGES_SCHEMA), Counter()


def _region_rows(records: list) -> tuple[pa.RecordBatch, Counter]:
    """Python path: records -> (image_id, region_id, phrase as written, x, y, w, h), drops."""
    columns: list[list] = [[] for _ in range(7)]
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
            except (KeyError, TypeError, ValueError, AttributeError):
                drops[reasons.DROP_BAD_RECORD] += 1
                continue
            for append, value in zip(appends, values):
                append(value)
    types = [field.type for field in REGIONS_SCHEMA][:7]
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=t) for c, t in zip(columns, types)], names=REGIONS_SCHEMA.names[:7]
    ), drops


def _region_columns(table: pa.Table) -> tuple[pa.RecordBatch, Counter]:
    """Fast path: the reader's raw table -> the columns of _region_rows, drops."""
    listed = table.column("regions").combine_chunks()
    regions = pc.list_flatten(listed)
    record_ids = pc.coalesce(table.column("id"), table.column("image_id")).combine_chunks()
    record_ids = record_ids.take(pc.list_parent_indices(listed))
    field = lambda name: pc.struct_field(regions, name)  # noqa: E731 - nulls where the region is null
    columns = [
        pc.coalesce(field("image_id"), field("image"), record_ids),
        pc.coalesce(field("region_id"), field("id")),
        field("phrase"),
    ] + [field(name) for name in ("x", "y", "width", "height")]
    valid = columns[0].is_valid()
    for column in columns[1:]:
        valid = pc.and_(valid, column.is_valid())
    bad = len(valid) - pc.sum(valid).as_py() if len(valid) else 0
    if bad:
        columns = [column.filter(valid) for column in columns]
    drops = Counter({reasons.DROP_BAD_RECORD: bad} if bad else {})
    return pa.RecordBatch.from_arrays(columns, names=REGIONS_SCHEMA.names[:7]), drops


def _image_records(records: list, field: str) -> Iterator[tuple[int, list]]:
    """(image id, the record's `field` list) of each record that has both; others are skipped."""
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get(field), list):
            continue
        image_id = _first(record, "image_id", "id")
        if isinstance(image_id, int) and not isinstance(image_id, bool):
            yield image_id, record[field]


def _object_rows(records: list) -> tuple[pa.RecordBatch, Counter]:
    """Python path: records -> OBJECTS_SCHEMA columns (names and synsets not yet cleaned)."""
    columns: list[list] = [[] for _ in OBJECTS_SCHEMA]
    appends = [column.append for column in columns]
    for image_id, items in _image_records(records, "objects"):
        for obj in items:
            try:
                values = (image_id, int(_first(obj, "object_id", "id"))) + tuple(
                    _number(obj[k]) for k in ("x", "y", "w", "h")
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # objects only annotate regions; a bad one is not worth a count
            names = _first(obj, "names", "name", "object_names")
            names = [names] if isinstance(names, str) else names if isinstance(names, list) else []
            synsets = obj.get("synsets")
            values += (
                [n for n in names if isinstance(n, str)],
                [s for s in synsets if isinstance(s, str)] if isinstance(synsets, list) else [],
            )
            for append, value in zip(appends, values):
                append(value)
    arrays = [pa.array(c, type=f.type) for c, f in zip(columns, OBJECTS_SCHEMA)]
    return pa.RecordBatch.from_arrays(arrays, schema=OBJECTS_SCHEMA), Counter()


def _object_columns(table: pa.Table) -> tuple[pa.RecordBatch, Counter]:
    """Fast path: the reader's raw table -> the columns of _object_rows."""
    image_ids = pc.coalesce(table.column("image_id"), table.column("id")).combine_chunks()
    listed = table.column("objects").combine_chunks()
    listed = listed.filter(image_ids.is_valid())  # a record without an image id is skipped
    image_ids = image_ids.drop_null()
    objects = pc.list_flatten(listed)
    field = lambda name: pc.struct_field(objects, name)  # noqa: E731 - nulls where the object is null
    name = field("name")
    name_as_list = pa.ListArray.from_arrays(
        np.concatenate(([0], np.cumsum(name.is_valid().to_numpy(zero_copy_only=False)))).astype(np.int32),
        name.drop_null(), mask=name.is_null(),
    )
    columns = [
        image_ids.take(pc.list_parent_indices(listed)),
        pc.coalesce(field("object_id"), field("id")),
    ] + [field(k) for k in ("x", "y", "w", "h")] + [
        _strings_only(pc.coalesce(field("names"), name_as_list, field("object_names"))),
        _strings_only(field("synsets")),
    ]
    valid = columns[1].is_valid()
    for column in columns[2:6]:
        valid = pc.and_(valid, column.is_valid())
    if not pc.all(valid).as_py():
        columns = [column.filter(valid) for column in columns]
    return pa.RecordBatch.from_arrays(columns, schema=OBJECTS_SCHEMA), Counter()


def _relation_end(end) -> tuple:
    """A relationship's subject or object -> (object id or -1, first name or None, x, y, w, h);
    raises where a box field is missing or not a number."""
    object_id = _first(end, "object_id", "id")
    name = _first(end, "name", "names")
    if isinstance(name, list):
        name = next((n for n in name if isinstance(n, str)), None)
    return (
        object_id if isinstance(object_id, int) and not isinstance(object_id, bool) else -1,
        name if isinstance(name, str) else None,
    ) + tuple(_number(end[k]) for k in ("x", "y", "w", "h"))


def _relation_rows(records: list) -> tuple[pa.RecordBatch, Counter]:
    """Python path: records -> the first _RELATION_RAW_COLUMNS of RELATIONS_SCHEMA, drops."""
    columns: list[list] = [[] for _ in range(_RELATION_RAW_COLUMNS)]
    drops: Counter[str] = Counter()
    for image_id, items in _image_records(records, "relationships"):
        for relation in items:
            try:
                relationship_id = _first(relation, "relationship_id", "id")
                if not isinstance(relationship_id, int) or isinstance(relationship_id, bool):
                    raise TypeError("no relationship id")
                predicate = relation.get("predicate")
                subject, obj = _relation_end(relation["subject"]), _relation_end(relation["object"])
            except (KeyError, TypeError, ValueError, AttributeError):
                drops[reasons.DROP_BAD_RECORD] += 1
                continue
            values = (
                image_id, relationship_id, predicate if isinstance(predicate, str) else None,
                subject[0], subject[1], obj[0], obj[1],
            ) + subject[2:] + obj[2:]
            for column, value in zip(columns, values):
                column.append(value)
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, RELATIONS_SCHEMA)],
        names=RELATIONS_SCHEMA.names[:_RELATION_RAW_COLUMNS],
    ), drops


def _first_strings(lists: pa.ListArray) -> pa.Array:
    """The first entry of each list, null where the list is null or empty."""
    offsets = lists.offsets.to_numpy()
    present = (offsets[1:] > offsets[:-1]) & lists.is_valid().to_numpy(zero_copy_only=False)
    first = lists.values.take(pa.array(np.where(present, offsets[:-1], 0))) if len(lists.values) else pa.nulls(len(lists), pa.string())
    return pc.if_else(pa.array(present), first, pa.nulls(len(lists), pa.string()))


def _relation_columns(table: pa.Table) -> tuple[pa.RecordBatch, Counter]:
    """Fast path: the reader's raw table -> the columns of _relation_rows, drops."""
    image_ids = pc.coalesce(table.column("image_id"), table.column("id")).combine_chunks()
    listed = table.column("relationships").combine_chunks().filter(image_ids.is_valid())
    image_ids = image_ids.drop_null()
    relations = pc.list_flatten(listed)
    ends = {role: pc.struct_field(relations, role) for role in ("subject", "object")}
    end_ids, end_names, boxes = {}, {}, []
    for role, end in ends.items():
        field = lambda name: pc.struct_field(end, name)  # noqa: E731, B023 - nulls where the end is null
        end_ids[role] = pc.fill_null(pc.coalesce(field("object_id"), field("id")), -1)
        end_names[role] = pc.coalesce(field("name"), _first_strings(field("names")))
        boxes += [field(k) for k in ("x", "y", "w", "h")]
    columns = [
        image_ids.take(pc.list_parent_indices(listed)),
        pc.coalesce(pc.struct_field(relations, "relationship_id"), pc.struct_field(relations, "id")),
        pc.struct_field(relations, "predicate"),
        end_ids["subject"], end_names["subject"], end_ids["object"], end_names["object"],
    ] + boxes
    valid = columns[1].is_valid()
    for column in boxes:
        valid = pc.and_(valid, column.is_valid())
    bad = len(valid) - pc.sum(valid).as_py() if len(valid) else 0
    if bad:
        columns = [column.filter(valid) for column in columns]
    drops = Counter({reasons.DROP_BAD_RECORD: bad} if bad else {})
    return pa.RecordBatch.from_arrays(columns, names=RELATIONS_SCHEMA.names[:_RELATION_RAW_COLUMNS]), drops


def _with_relation_phrases(batch: pa.RecordBatch, max_phrase_chars: int) -> pa.RecordBatch:
    """Raw relation columns -> RELATIONS_SCHEMA: names and predicate trimmed (the predicate lower
    case: VG writes "ON" and "on" alike), and the phrase "subject predicate object" normalised."""
    def clean(name: str) -> pa.Array:
        return pc.utf8_trim_whitespace(pc.replace_substring_regex(batch.column(name), r"\s+", " "))

    predicate = pc.utf8_lower(clean("predicate"))
    subject, obj = clean("subject_name"), clean("object_name")
    parts = [pc.fill_null(part, "") for part in (subject, predicate, obj)]
    complete = pc.and_(pc.and_(pc.not_equal(parts[0], ""), pc.not_equal(parts[1], "")), pc.not_equal(parts[2], ""))
    # An incomplete phrase is left empty (not "man  horse"): the sharder drops it as empty_phrase.
    joined = pc.if_else(complete, pc.binary_join_element_wise(*parts, " "), "")
    phrases = normalise_phrases(joined, max_phrase_chars)
    columns = batch.columns
    columns[2], columns[4], columns[6] = predicate, subject, obj
    columns += [phrases.text, pa.array(phrases.keys), pa.array(phrases.whitespace_fixed), pa.array(phrases.long_fixed)]
    return pa.RecordBatch.from_arrays(columns, schema=RELATIONS_SCHEMA)


def _strings_only(lists: pa.ListArray) -> pa.ListArray:
    """Each list without its null entries; a null list becomes []."""
    values = pc.list_flatten(lists)
    if values.null_count == 0 and lists.null_count == 0:
        return lists
    parents = pc.list_parent_indices(lists).to_numpy()
    keep = values.is_valid().to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lists) + 1, np.int32)
    np.cumsum(np.bincount(parents[keep], minlength=len(lists)), out=offsets[1:])
    return pa.ListArray.from_arrays(offsets, values.filter(keep))


def _clean_names(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Object names stripped of surrounding whitespace (the same Arrow kernel on both paths)."""
    names = batch.column("names")
    stripped = pa.ListArray.from_arrays(names.offsets, pc.utf8_trim_whitespace(names.flatten()))
    return batch.set_column(OBJECTS_SCHEMA.get_field_index("names"), "names", stripped)


def _with_clean_phrases(batch: pa.RecordBatch, max_phrase_chars: int) -> pa.RecordBatch:
    """Raw region columns -> REGIONS_SCHEMA: the phrase normalised, its key and what was fixed."""
    phrases = normalise_phrases(batch.column("phrase"), max_phrase_chars)
    columns = batch.columns
    columns[2] = phrases.text
    columns += [pa.array(phrases.keys), pa.array(phrases.whitespace_fixed), pa.array(phrases.long_fixed)]
    return pa.RecordBatch.from_arrays(columns, schema=REGIONS_SCHEMA)


_CONVERTERS = {
    "images": _image_rows, "regions": _region_rows, "objects": _object_rows, "relations": _relation_rows,
}
_FAST_CONVERTERS = {
    "images": _image_columns, "regions": _region_columns, "objects": _object_columns,
    "relations": _relation_columns,
}
_SCHEMAS = {
    "images": IMAGES_SCHEMA, "regions": REGIONS_SCHEMA, "objects": OBJECTS_SCHEMA, "relations": RELATIONS_SCHEMA,
}


@njit(cache=True, nogil=True)
def _elements_as_lines(text: np.ndarray, spans: np.ndarray) -> bool:
    """Turn the array's separators in `text` into one newline each (spans relative to `text`), so
    that the elements become newline-delimited JSON. Returns whether an element holds a newline
    (pretty-printed JSON), which the reader must then be told about."""
    for k in range(spans.shape[0] - 1):
        text[spans[k, 1]] = 10
        for position in range(spans[k, 1] + 1, spans[k + 1, 0]):
            text[position] = 32
    for k in range(spans.shape[0]):
        for position in range(spans[k, 0], spans[k, 1]):
            if text[position] == 10 or text[position] == 13:
                return True
    return False


def _decode_fast(text: np.ndarray, spans: np.ndarray, kind: str) -> pa.Table:
    """The chunk through pyarrow's JSON reader; raises pa.ArrowInvalid where it refuses it."""
    import pyarrow.json as pa_json

    multiline = _elements_as_lines(text, spans)
    longest = int((spans[:, 1] - spans[:, 0]).max())
    table = pa_json.read_json(
        pa.BufferReader(pa.py_buffer(text)),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=max(1 << 20, 2 * longest + 2)),
        parse_options=pa_json.ParseOptions(
            explicit_schema=_RAW_SCHEMAS[kind], unexpected_field_behavior="ignore", newlines_in_values=multiline,
        ),
    )
    if table.num_rows != len(spans):  # e.g. `{...} {...}` as one element: invalid, let json.loads say so
        raise pa.ArrowInvalid("an element is not one JSON object")
    table.validate(full=True)  # the reader passes invalid UTF-8 through; json.loads refuses it
    return table


def _read_range(path: str, start: int, stop: int) -> np.ndarray:
    text = np.empty(stop - start, np.uint8)
    with open(path, "rb") as stream:
        stream.seek(start)
        stream.readinto(memoryview(text))
    return text


def _parse_chunk(
    path: str, spans: np.ndarray, kind: str, max_phrase_chars: int = 200
) -> tuple[pa.RecordBatch, Counter]:
    """Decode the elements at `spans` (consecutive, absolute offsets) of `path` into one batch."""
    start, stop = int(spans[0, 0]), int(spans[-1, 1])
    result = None
    try:
        result = _FAST_CONVERTERS[kind](_decode_fast(_read_range(path, start, stop), spans - start, kind))
    except pa.ArrowInvalid:
        pass  # the Python path decides: either it reads the chunk or it names the problem
    if result is None:
        try:
            records = json.loads(b"[" + _read_range(path, start, stop).tobytes() + b"]")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: invalid JSON near byte {start}: {exc}") from None
        result = _CONVERTERS[kind](records)
    batch, drops = result
    if kind == "regions":
        batch = _with_clean_phrases(batch, max_phrase_chars)
    elif kind == "objects":
        batch = _clean_names(batch)
    elif kind == "relations":
        batch = _with_relation_phrases(batch, max_phrase_chars)
    return batch, drops


# (file name, bytes scanned, bytes in the file, records decoded, records in the file or -1 while
# the scan runs): called as each file is scanned and its chunks come back.
AnnotationProgress = Callable[[str, int, int, int, int], None]


class _PendingFile:
    """One annotation file scanned and handed to the workers: its chunks decode while the next
    file is scanned in this process."""

    def __init__(
        self, path: Path, kind: str, pool: ProcessPoolExecutor | None, workers: int,
        max_phrase_chars: int, progress: AnnotationProgress | None,
    ):
        self.path, self.kind, self.progress = path, kind, progress
        self.size = path.stat().st_size
        data = np.memmap(path, dtype=np.uint8, mode="r") if self.size else np.zeros(0, np.uint8)
        spans, error, offset = json_array_elements(data, progress and (lambda scanned: self._report(scanned, 0, -1)))
        if error:
            raise UserError(f"{path}: {_SCAN_ERRORS[error]} (byte {offset})")
        del data
        self.records = len(spans)
        pieces = max(_CHUNKS_PER_WORKER * workers, -(-self.size // _CHUNK_BYTES))
        self.chunks = [spans[first:last] for first, last in _chunks(spans, pieces)]
        self._report(self.size, 0, self.records)
        arguments = [(str(path), chunk, kind, max_phrase_chars) for chunk in self.chunks]
        if pool is None:
            self.results = []
            for chunk_arguments in arguments:
                self.results.append(_parse_chunk(*chunk_arguments))
                self._report(self.size, sum(len(c) for c in self.chunks[: len(self.results)]), self.records)
            self.futures = None
        else:
            self.futures = [pool.submit(_parse_chunk, *chunk_arguments) for chunk_arguments in arguments]

    def _report(self, scanned: int, decoded: int, records: int) -> None:
        if self.progress:
            self.progress(self.path.name, scanned, self.size, decoded, records)

    def result(self) -> tuple[pa.Table, Counter]:
        """(table in file order, drops), once every chunk is decoded."""
        if self.futures is not None:
            sizes = {future: len(chunk) for future, chunk in zip(self.futures, self.chunks)}
            decoded = 0
            for future in as_completed(self.futures):
                future.result()
                decoded += sizes[future]
                self._report(self.size, decoded, self.records)
            self.results = [future.result() for future in self.futures]
        drops: Counter[str] = Counter()
        for _, chunk_drops in self.results:
            drops.update(chunk_drops)
        table = pa.Table.from_batches([batch for batch, _ in self.results], schema=_SCHEMAS[self.kind])
        self.results = self.futures = None
        return table, drops


def read_annotation(
    path: Path, kind: str, pool: ProcessPoolExecutor | None = None, workers: int = 1,
    max_phrase_chars: int = 200, progress: AnnotationProgress | None = None,
) -> tuple[pa.Table, Counter]:
    """One annotation file (kind: images, regions, objects or relations) -> (table in file order, drops).

    With a pool (of `workers` processes) the chunks are decoded in parallel. Regions come with
    their phrases normalised (see fcdata.regions.normalise_phrases)."""
    return _PendingFile(path, kind, pool, workers, max_phrase_chars, progress).result()


def _keep_first(table: pa.Table, column: str) -> pa.Table:
    """Rows whose `column` value appears for the first time, in file order."""
    values = table.column(column).to_numpy()
    _, first = np.unique(values, return_index=True)
    return table.take(np.sort(first)) if len(first) != len(values) else table


def _only_listed(table: pa.Table, listed_ids: np.ndarray) -> tuple[pa.Table, int]:
    """(the rows of images in `listed_ids`, how many rows were not). The table itself where all
    are: a filtered copy would briefly hold a second copy of a table of up to ~0.4 GB."""
    listed = np.isin(table.column("image_id").to_numpy(), listed_ids)
    unlisted = len(listed) - int(np.count_nonzero(listed))
    return (table.filter(listed) if unlisted else table), unlisted


def annotation_files(vg_root: Path, relations: bool = True) -> dict[str, Path]:
    """The annotation files to read, by name; a UserError if the root or a required file is missing.
    relationships.json is read where present unless `relations` is False."""
    if not vg_root.is_dir():
        raise UserError(f"--vg-root {vg_root} is not a directory")
    files = {
        "image_data": find_annotation(vg_root, "image_data"),
        "region_descriptions": find_annotation(vg_root, "region_descriptions"),
    }
    objects_path = find_annotation(vg_root, "objects", required=False)
    if objects_path is not None:
        files["objects"] = objects_path
    relations_path = find_annotation(vg_root, "relationships", required=False) if relations else None
    if relations_path is not None:
        files["relationships"] = relations_path
    return files


def load_vg(
    vg_root: Path, pool: ProcessPoolExecutor | None = None, workers: int = 1,
    max_phrase_chars: int = 200, progress: AnnotationProgress | None = None, relations: bool = True,
) -> VgAnnotations:
    """Read image_data.json, region_descriptions.json and (if present) objects.json and
    relationships.json (unless `relations` is False), decoding chunks on `pool` (of `workers`
    processes) when the files are big enough for that to pay. Each file is scanned while the
    workers decode the one before."""
    files = annotation_files(vg_root, relations)
    if sum(path.stat().st_size for path in files.values()) < _PARALLEL_MIN_BYTES:
        pool, workers = None, 1
    images, _ = read_annotation(files["image_data"], "images", progress=progress)
    images = _keep_first(images, "image_id")
    listed_ids = np.sort(images.column("image_id").to_numpy())
    pending_regions = _PendingFile(files["region_descriptions"], "regions", pool, workers, max_phrase_chars, progress)
    pending_objects = None
    if "objects" in files:
        pending_objects = _PendingFile(files["objects"], "objects", pool, workers, max_phrase_chars, progress)
    pending_relations = None
    if "relationships" in files:
        pending_relations = _PendingFile(files["relationships"], "relations", pool, workers, max_phrase_chars, progress)
    regions, drops = pending_regions.result()
    regions, unlisted = _only_listed(regions, listed_ids)
    drops[reasons.DROP_NO_IMAGE_RECORD] += unlisted
    objects = None
    if pending_objects is not None:
        objects, _ = _only_listed(pending_objects.result()[0], listed_ids)
    relation_table, relation_drops = None, Counter()
    if pending_relations is not None:
        relation_table, relation_drops = pending_relations.result()
        relation_table, unlisted = _only_listed(relation_table, listed_ids)
        relation_drops[reasons.DROP_NO_IMAGE_RECORD] += unlisted
    drops = Counter({reason: count for reason, count in drops.items() if count})
    relation_drops = Counter({reason: count for reason, count in relation_drops.items() if count})
    return VgAnnotations(images, regions, objects, relation_table, drops, relation_drops, files)


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
