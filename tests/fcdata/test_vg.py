import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from fcdata import reasons, vg
from fcdata.errors import UserError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


ELEMENTS = [{"a": [1, 2, "]"]}, 123456789012, -1.5e3, "x, \\\"y", True, None, [], {"é": "ü,}"}]


@pytest.mark.parametrize("chunks", [1, 3, 100])
def test_json_array_is_split_and_decoded_in_order(tmp_path, monkeypatch, chunks):
    """Elements of every kind (brackets and commas inside strings, escapes, unicode) come back
    intact and in order, however the array is cut into chunks."""
    monkeypatch.setattr(vg, "_CHUNKS_PER_WORKER", chunks)
    path = write(tmp_path / "a.json", "\ufeff [ " + " ,\n ".join(json.dumps(e, ensure_ascii=False) for e in ELEMENTS) + " ] \n")
    data = np.fromfile(path, np.uint8)
    spans, error, _ = vg.json_array_elements(data)
    assert error == 0
    assert [json.loads(data[a:b].tobytes()) for a, b in spans] == ELEMENTS
    pieces = vg._chunks(spans, chunks)
    assert 1 <= len(pieces) <= chunks
    decoded = [e for f, l in pieces for e in json.loads(b"[" + data[spans[f, 0] : spans[l - 1, 1]].tobytes() + b"]")]
    assert decoded == ELEMENTS


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected a JSON array"),
        ("{}", "expected a JSON array"),
        ('[{"a": 1}', "not closed"),
        ('[{"a": "1]}', "not closed"),
        ("[1,,2]", "empty element"),
        ("[1,]", "empty element"),
        ("[1] 2", "after the JSON array"),
        ("[1}]", "unbalanced"),
        ('[{"a": 1} {"b": 2}]', "invalid JSON"),
        ('[{"a": }]', "invalid JSON"),
    ],
)
def test_broken_json_is_a_one_line_user_error(tmp_path, text, message):
    """Truncated or malformed annotation files raise UserError naming the file and the problem."""
    path = write(tmp_path / "bad.json", text)
    with pytest.raises(UserError, match=f"bad.json.*{message}"):
        vg.read_annotation(path, "regions")


def test_empty_array_gives_an_empty_table(tmp_path):
    """`[]` is a valid (if useless) annotation file."""
    table, drops = vg.read_annotation(write(tmp_path / "e.json", " [ ] "), "regions")
    assert table.num_rows == 0 and not drops


def make_root(tmp_path, images, regions, objects=None):
    tmp_path.mkdir(exist_ok=True)
    write(tmp_path / "image_data.json", json.dumps(images))
    write(tmp_path / "region_descriptions.json", json.dumps(regions))
    if objects is not None:
        write(tmp_path / "objects.json", json.dumps(objects))
    return tmp_path


def test_v10_and_v12_field_names_give_the_same_tables(tmp_path):
    """v1.0 (`id`, `image`) and v1.2 (`image_id`, `region_id`) region fields map to one schema."""
    big_id = 900100184613
    v12 = make_root(
        tmp_path / "v12",
        [{"image_id": 5, "width": 800, "height": 600, "url": "u"}],
        [{"id": 5, "regions": [{"region_id": big_id, "image_id": 5, "phrase": "a cat", "x": 1, "y": 2, "width": 3, "height": 4}]}],
        [{"image_id": 5, "objects": [{"object_id": 9, "x": 1, "y": 2, "w": 3, "h": 4, "names": ["cat"], "synsets": ["cat.n.01"]}]}],
    )
    v10 = make_root(
        tmp_path / "v10",
        [{"id": 5, "width": 800, "height": 600, "image_url": "u"}],
        [{"id": 5, "regions": [{"id": big_id, "image": 5, "phrase": "a cat", "x": 1, "y": 2, "width": 3, "height": 4}]}],
        [{"id": 5, "objects": [{"id": 9, "x": 1, "y": 2, "w": 3, "h": 4, "name": "cat"}]}],
    )
    a, b = vg.load_vg(v12), vg.load_vg(v10)
    assert a.images.to_pylist() == b.images.to_pylist() == [{"image_id": 5, "stated_width": 800, "stated_height": 600, "coco_id": None}]
    assert a.regions.to_pylist() == b.regions.to_pylist()
    assert a.regions.column("region_id").to_pylist() == [big_id]
    assert a.objects.column("names").to_pylist() == b.objects.column("names").to_pylist() == [["cat"]]
    assert b.objects.column("synsets").to_pylist() == [[]]


def test_bad_region_records_are_counted_not_fatal(tmp_path):
    """Missing phrase, non-numeric coordinates and unknown images are counted drops."""
    root = make_root(
        tmp_path,
        [{"image_id": 1, "width": 10, "height": 10}],
        [
            {"id": 1, "regions": [
                {"region_id": 1, "image_id": 1, "phrase": "ok", "x": 0, "y": 0, "width": 5, "height": 5},
                {"region_id": 2, "image_id": 1, "x": 0, "y": 0, "width": 5, "height": 5},
                {"region_id": 3, "image_id": 1, "phrase": "p", "x": "abc", "y": 0, "width": 5, "height": 5},
                {"region_id": 4, "image_id": 1, "phrase": "p", "x": True, "y": 0, "width": 5, "height": 5},
            ]},
            {"id": 77, "regions": [{"region_id": 5, "image_id": 77, "phrase": "p", "x": 0, "y": 0, "width": 5, "height": 5}]},
            "not a record",
        ],
    )
    annotations = vg.load_vg(root)
    assert annotations.regions.column("region_id").to_pylist() == [1]
    assert annotations.region_drops == {reasons.DROP_BAD_RECORD: 3, reasons.DROP_NO_IMAGE_RECORD: 1}
    assert annotations.objects is None


def test_missing_root_or_annotation_is_a_user_error(tmp_path):
    """A wrong --vg-root or a missing region_descriptions.json is one clear error."""
    with pytest.raises(UserError, match="not a directory"):
        vg.load_vg(tmp_path / "nope")
    write(tmp_path / "image_data.json", "[]")
    with pytest.raises(UserError, match="region_descriptions.json not found"):
        vg.load_vg(tmp_path)


def test_annotations_are_found_one_folder_down(tmp_path):
    """Releases unpacked into a version folder (e.g. 1.2/) are found from the root."""
    (tmp_path / "1.2").mkdir()
    write(tmp_path / "1.2" / "region_descriptions.json", "[]")
    assert vg.find_annotation(tmp_path, "region_descriptions") == tmp_path / "1.2" / "region_descriptions.json"


def test_image_index_looks_in_all_vg_folders(tmp_path):
    """Images are found in VG_100K/, VG_100K_2/ and images/ whatever the URL says; non-images are ignored."""
    for folder, name in (("VG_100K", "1.jpg"), ("VG_100K_2", "2.jpg"), ("images", "3.JPG"), ("images", "notes.txt")):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_bytes(b"x")
    found = vg.index_image_files(tmp_path)
    assert sorted(found) == [1, 2, 3]
    assert found[2].parent.name == "VG_100K_2"


def test_parallel_parse_equals_serial(tmp_path, monkeypatch):
    """Decoding chunks in worker processes gives exactly the tables of the one-process path."""
    regions = [
        {"id": i, "regions": [{"region_id": i * 10 + k, "image_id": i, "phrase": f"p{k}", "x": k, "y": 1, "width": 5, "height": 5} for k in range(3)]}
        for i in range(1, 60)
    ]
    root = make_root(tmp_path, [{"image_id": i, "width": 9, "height": 9} for i in range(1, 50)], regions)
    serial = vg.load_vg(root)
    monkeypatch.setattr(vg, "_PARALLEL_MIN_BYTES", 0)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel = vg.load_vg(root, pool, workers=2)
    assert parallel.regions.equals(serial.regions) and parallel.images.equals(serial.images)
    assert parallel.region_drops == serial.region_drops == {"no_image_record": 30}


# ----------------------------------------------------------------------------- the scan vs a reference


def reference_spans(text: str) -> list[tuple[int, int]]:
    """The element spans of a top-level JSON array found by the standard library's decoder
    (byte offsets of UTF-8 `text`): what the numba scan must reproduce."""
    decoder = json.JSONDecoder()
    raw = text.encode()
    spans, position = [], raw.index(b"[") + 1
    while True:
        while raw[position : position + 1].isspace():
            position += 1
        if raw[position : position + 1] == b"]":
            return spans
        start = position
        _, stop_chars = decoder.raw_decode(text, len(raw[:start].decode()))
        stop = len(text[:stop_chars].encode())
        spans.append((start, stop))
        position = stop
        while raw[position : position + 1].isspace():
            position += 1
        if raw[position : position + 1] == b",":
            position += 1


TRICKY_STRINGS = ['say "hi", [ok]', "\\", "\\\"", "]}],[{", "tab\tnew\nline", "é ü 🌧", "", "\\u005d"]


@pytest.mark.parametrize("spacing", ["", " ", "\n  ", "\t\r\n"])
def test_scan_equals_the_json_module_on_tricky_json(spacing):
    """Escaped quotes and backslashes, brackets and commas inside strings, nested arrays and
    objects, non-ASCII and any whitespace between tokens: the scan finds the spans json does."""
    elements = [
        {"phrase": s, "nested": [[1, [2, {"k": s}]], []], "n": -1.5e3} for s in TRICKY_STRINGS
    ] + TRICKY_STRINGS + [[[[]]], {}, 0, None, True, 12345678901234567890]
    separator = f"{spacing},{spacing}"
    text = f"{spacing}[{spacing}" + separator.join(
        json.dumps(e, ensure_ascii=False, separators=(f"{spacing},{spacing}", f"{spacing}:{spacing}")) for e in elements
    ) + f"{spacing}]{spacing}"
    spans, error, _ = vg.json_array_elements(np.frombuffer(text.encode(), np.uint8))
    assert error == 0
    assert [tuple(span) for span in spans.tolist()] == reference_spans(text)


def test_scan_resumes_across_its_output_buffer(monkeypatch):
    """More elements than one kernel call holds: the scan refills its buffer and loses none."""
    monkeypatch.setattr(vg, "_SPANS_PER_CALL", 3)
    elements = [{"i": i, "s": "a,]" * (i % 3)} for i in range(10)]
    text = json.dumps(elements)
    reported = []
    spans, error, _ = vg.json_array_elements(np.frombuffer(text.encode(), np.uint8), reported.append)
    assert error == 0 and [tuple(s) for s in spans.tolist()] == reference_spans(text)
    assert reported == sorted(reported) and len(reported) == 4 and reported[-1] == len(text)


# ----------------------------------------------------------------------------- the two decoding paths


def decode_both(tmp_path, records, kind):
    """One chunk through pyarrow's reader and through json.loads: the two batches."""
    path = write(tmp_path / f"{kind}.json", json.dumps(records))
    data = np.fromfile(path, np.uint8)
    spans, error, _ = vg.json_array_elements(data)
    assert error == 0
    text = data[spans[0, 0] : spans[-1, 1]].copy()
    fast = vg._FAST_CONVERTERS[kind](vg._decode_fast(text, spans - spans[0, 0], kind))
    slow = vg._CONVERTERS[kind](json.loads(path.read_text()))
    return fast, slow


def test_fast_and_python_region_paths_agree(tmp_path):
    """Every release's spellings, nulls standing for absent keys, floats and ids beyond 32 bits,
    records without regions and bad regions: the reader's path and json.loads's give the same
    columns and the same drop counts."""
    records = [
        {"id": 1, "regions": [
            {"region_id": 2**40, "image_id": 1, "phrase": "a \"cat\"", "x": 1, "y": 2.5, "width": 3, "height": 4},
            {"id": 7, "image": 1, "phrase": "v1.0 names", "x": 0, "y": 0, "width": 1e3, "height": 2},
            {"region_id": 8, "phrase": "no image id: the record's", "x": 0, "y": 0, "width": 1, "height": 1},
            {"region_id": None, "id": 9, "image_id": None, "image": 1, "phrase": "nulls are absent", "x": 0, "y": 0, "width": 1, "height": 1},
            {"region_id": 10, "image_id": 1, "x": 0, "y": 0, "width": 1, "height": 1},
            {"region_id": 11, "image_id": 1, "phrase": None, "x": 0, "y": 0, "width": 1, "height": 1},
            {"region_id": 12, "image_id": 1, "phrase": "no y", "x": 0, "width": 1, "height": 1},
            None,
        ]},
        {"image_id": 3, "regions": [{"region_id": 13, "phrase": "record id spelt image_id", "x": 0, "y": 0, "width": 1, "height": 1}]},
        {"id": 4},
        {"id": 5, "regions": None},
        {"id": 6, "regions": [], "extra": {"ignored": [1, 2]}},
    ]
    (fast, fast_drops), (slow, slow_drops) = decode_both(tmp_path, records, "regions")
    assert fast.to_pylist() == slow.to_pylist()
    assert fast.column("region_id").to_pylist() == [2**40, 7, 8, 9, 13]
    assert fast_drops == slow_drops == {reasons.DROP_BAD_RECORD: 4}


def test_fast_and_python_object_paths_agree(tmp_path):
    """names as a list (1.4), name as a string (1.0/1.2) or object_names; synsets missing, null
    or holding nulls; objects without an id or a coordinate are left out by both paths."""
    records = [
        {"image_id": 1, "objects": [
            {"object_id": 1, "x": 1, "y": 2, "w": 3, "h": 4, "names": [" cat ", None], "synsets": ["cat.n.01", None]},
            {"id": 2, "x": 1, "y": 2, "w": 3, "h": 4, "name": "dog"},
            {"object_id": 3, "x": 1, "y": 2, "w": 3, "h": 4, "object_names": ["cup"], "synsets": None},
            {"object_id": 4, "x": 1, "y": 2, "w": 3, "h": 4, "names": None, "name": "fallback"},
            {"object_id": 5, "x": 1, "y": 2, "w": 3, "h": 4, "names": []},
            {"object_id": None, "x": 1, "y": 2, "w": 3, "h": 4, "names": ["no id"]},
            {"object_id": 6, "y": 2, "w": 3, "h": 4, "names": ["no x"]},
        ]},
        {"id": 2, "objects": [{"object_id": 7, "x": 0, "y": 0, "w": 1, "h": 1, "names": ["v1.0 record id"]}]},
        {"objects": [{"object_id": 8, "x": 0, "y": 0, "w": 1, "h": 1, "names": ["no record id"]}]},
    ]
    (fast, _), (slow, _) = decode_both(tmp_path, records, "objects")
    assert vg._clean_names(fast).to_pylist() == vg._clean_names(slow).to_pylist()
    cleaned = vg._clean_names(fast)
    assert cleaned.column("object_id").to_pylist() == [1, 2, 3, 4, 5, 7]
    assert cleaned.column("names").to_pylist() == [["cat"], ["dog"], ["cup"], ["fallback"], [], ["v1.0 record id"]]
    assert cleaned.column("synsets").to_pylist() == [["cat.n.01"], [], [], [], [], []]


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b'[{"id": 1, "regions": [{"region_id": 1, "image_id": 1, "phrase": "p", "x": "abc", "y": 0, "width": 1, "height": 1}]}]', "counted"),
        (b'[{"id": 1, "regions": [{"region_id": 1, "image_id": 1, "phrase": "p", "x": true, "y": 0, "width": 1, "height": 1}]}]', "counted"),
        (b'[{"id": 1, "regions": [{"region_id": 1, "image_id": 1, "phrase": "p", "x": NaN, "y": 0, "width": 1, "height": 1}]}]', "kept"),
        (b'[{"id": 1, "regions": [{"region_id": 1, "image_id": 1, "phrase": "\xff", "x": 0, "y": 0, "width": 1, "height": 1}]}]', "invalid JSON"),
        (b'[{"id": 1, "regions": []} {"id": 2, "regions": []}]', "invalid JSON"),
        (b'[{"id": 1, "regions": [{"phrase": "tab\tinside", "region_id": 1}]}]', "invalid JSON"),
    ],
)
def test_what_the_reader_refuses_the_python_path_decides(tmp_path, raw, expected):
    """Values the reader will not type (VG's "x": "abc"), JSON it accepts but json.loads does not
    (invalid UTF-8, two objects in one element, raw control characters): the chunk goes down
    the Python path, which counts the bad region or names the file."""
    path = tmp_path / "r.json"
    path.write_bytes(raw)
    if expected == "invalid JSON":
        with pytest.raises(UserError, match="r.json: invalid JSON"):
            vg.read_annotation(path, "regions")
        return
    table, drops = vg.read_annotation(path, "regions")
    assert (table.num_rows, dict(drops)) == ((0, {reasons.DROP_BAD_RECORD: 1}) if expected == "counted" else (1, {}))


def test_phrase_keys_do_not_depend_on_the_chunking(tmp_path, monkeypatch):
    """Keys are a hash of the lower-cased phrase, so a phrase has the same key whichever chunk
    (worker) decoded it, and equal-ignoring-case phrases share it."""
    records = [{"id": i, "regions": [{"region_id": i, "image_id": i, "phrase": p, "x": 0, "y": 0, "width": 1, "height": 1}]}
               for i, p in enumerate(["Red car", "red  car", "blue bus", "RED CAR", "", "blue bus"] * 5)]
    path = write(tmp_path / "r.json", json.dumps(records))
    keyed = []
    for pieces in (1, 7):
        monkeypatch.setattr(vg, "_CHUNKS_PER_WORKER", pieces)
        keyed.append(vg.read_annotation(path, "regions")[0].column("phrase_key").to_pylist())
    assert keyed[0] == keyed[1]
    assert keyed[0][0] == keyed[0][1] == keyed[0][3] != keyed[0][2] == keyed[0][5] and keyed[0][4] == -1


def test_fast_and_python_image_paths_agree(tmp_path):
    """image_id or id, sizes missing, null, zero or negative (0 = not stated), records without an
    id, coco_id given, null or absent."""
    records = [
        {"image_id": 1, "width": 800, "height": 600, "url": "u", "coco_id": 57870},
        {"id": 2, "width": 0, "height": -3},
        {"image_id": None, "id": 3, "width": None},
        {"width": 5, "height": 5, "coco_id": 9},
        {"image_id": 4, "coco_id": None, "flickr_id": 12},
    ]
    (fast, _), (slow, _) = decode_both(tmp_path, records, "images")
    assert fast.to_pylist() == slow.to_pylist() == [
        {"image_id": 1, "stated_width": 800, "stated_height": 600, "coco_id": 57870},
        {"image_id": 2, "stated_width": 0, "stated_height": 0, "coco_id": None},
        {"image_id": 3, "stated_width": 0, "stated_height": 0, "coco_id": None},
        {"image_id": 4, "stated_width": 0, "stated_height": 0, "coco_id": None},
    ]


def test_pretty_printed_files_decode_like_compact_ones(tmp_path):
    """Newlines inside records (an indented file) reach the reader as such and change nothing."""
    records = [{"id": i, "regions": [{"region_id": i, "image_id": i, "phrase": f"p {i}", "x": 0, "y": 0, "width": 1, "height": 1}]}
               for i in range(5)]
    compact = vg.read_annotation(write(tmp_path / "a.json", json.dumps(records)), "regions")
    pretty = vg.read_annotation(write(tmp_path / "b.json", json.dumps(records, indent=2)), "regions")
    assert pretty[0].equals(compact[0]) and compact[0].num_rows == 5
