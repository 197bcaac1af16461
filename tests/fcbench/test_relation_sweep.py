"""The relation sweep's bookkeeping: rows become the table's columns, unknown arms are refused."""

import pytest

from fcbench import relation_sweep


def _row(name: str, swap: float, subject: float) -> dict:
    metrics = lambda s: {"swap": s, "swap_se": 0.02, "relations": 389, "selection": 0.2, "selection_chance": 0.1}
    relations = {"relation_alpha": metrics(swap), "subject_alpha": metrics(subject)}
    return {
        "kind": "arm", "name": name, "relations_val": relations, "relations_train": relations, "box": 0.55,
        "text_order": {"inverse_cosine": 0.57, "unrelated_cosine": 0.47, "pairs": 389}, "cpu_s": 120.0,
    }


def test_the_table_has_a_row_per_arm_with_its_swap_and_baseline():
    """Each scored row is one line: its swap accuracy, SE, count, the subject-alpha baseline, box, cosines."""
    table = relation_sweep.markdown_table([{"kind": "data", "name": "demo"}, _row("a", 0.812, 0.805), _row("b", 0.7, 0.73)])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| arm: a | 0.812 | 0.02 | 389 | 0.805 |")
    assert "| 0.55 | 0.57 | 0.47 | 120 |" in lines[2] and "| 0.73 |" in lines[3]


def test_unknown_arms_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        relation_sweep.main(["--work", str(tmp_path), "--arms", "no_such_arm"])
