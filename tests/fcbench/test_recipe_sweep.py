"""The recipe sweep's bookkeeping: arm names, its table with the holdout columns, and a record that
keeps what earlier sessions measured (their work folders are gone)."""

import json

import pytest

from fcbench import recipe_sweep


def _results(box: float) -> dict:
    metrics = {"box_accuracy": box, "phrase_r1": box / 2, "zero_shot_top1": 0.1, "region_to_phrase_r1": 0.0, "phrase_to_region_r1": 0.0}
    return {method: dict(metrics) for method in ("focus", "focus_whole", "untrained", "whole_image", "crop")}


def _arm(name: str, box: float) -> dict:
    return {"kind": "arm", "name": name, "pretraining": "crops", "cpu_s": 40.0, "results": _results(box)}


def test_table_adds_holdout_columns_only_for_arms_that_have_them():
    rows = [
        _arm("demo", 0.5), _arm("views_4", 0.6),
        {"kind": "holdout_arm", "name": "views_4", "results": _results(0.7)},
        {"kind": "holdout_pretrain", "name": "crops", "results": _results(0.8)},
    ]
    lines = recipe_sweep.markdown_table(rows).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    demo, views = ([cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:])
    assert header.index("hold box") > header.index("box")
    assert demo[header.index("hold box")] == ""  # never evaluated on the holdout: no figure
    assert views[header.index("box")] == "0.600"
    assert views[header.index("hold box")] == "0.700" and views[header.index("hold crop box")] == "0.800"


def test_record_keeps_earlier_rows_that_this_work_folder_does_not_replace(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_sweep, "machine_info", lambda: {"session": "new"})
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"machine": {"session": "old"}, "rows": [_arm("demo", 0.5), _arm("alpha_clip", 0.2)]}))
    recipe_sweep.record([_arm("demo", 0.51), _arm("views_4", 0.6)], path)
    first = json.loads(path.read_text())
    assert [r["name"] for r in first["rows"]] == ["demo", "views_4"]
    assert first["earlier"] == [{"machine": {"session": "old"}, "rows": [_arm("alpha_clip", 0.2)]}]
    recipe_sweep.record([_arm("views_4", 0.6)], path)  # a third session: both earlier blocks stay
    second = json.loads(path.read_text())
    assert [[r["name"] for r in block["rows"]] for block in second["earlier"]] == [["demo"], ["alpha_clip"]]
    assert not list(tmp_path.glob(".*.tmp"))


def test_unknown_arm_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        recipe_sweep.main(["--arms", "demo,no_such_arm"])
    assert stopped.value.code == 2 and "no_such_arm" in capsys.readouterr().err
