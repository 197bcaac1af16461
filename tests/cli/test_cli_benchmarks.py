import json
import pickle
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fc.main import app
from fcdata.synth_benchmarks import write_imagenet_s, write_rec_dataset


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny CLIP exported as a Focus-CLIP model folder (what --model reads)."""
    from fctrain.config import ModelConfig
    from fctrain.export import export_model
    from fctrain.model import RGBAClip, create_tiny_model, load_clip

    root = tmp_path_factory.mktemp("model")
    tiny = create_tiny_model(root / "tiny", ["a red box", "a blue ball", "green thing"] * 4, image_size=32)
    clip, tokenizer = load_clip(ModelConfig(name_or_path=str(tiny), image_size=32))
    return export_model(RGBAClip(clip), tokenizer, root / "export", image_size=32)


def test_rec_and_imagenet_s_from_the_command_line(tmp_path, exported):
    """fc eval --benchmark prints every method's row and writes eval-<benchmark>-<split>.json and the pictures."""
    runner = CliRunner()
    data = write_rec_dataset(tmp_path / "refer")
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "--benchmark", "refcoco", "--model", str(exported), "--data", str(data), "--split", "val",
                                 "--out", str(out), "--methods", "alpha_mask,crop_blur,red_circle,falip"])
    assert result.exit_code == 0, result.output
    assert "CLIP crop+blur" in result.output and "not comparable" in result.output and "input 32 px" in result.output
    report = json.loads((out / "eval-refcoco-val.json").read_text())
    assert report["counts"]["expressions"] == 6 and set(report["results"]) == {"alpha_mask", "crop_blur", "red_circle", "falip"}
    assert report["settings"]["setting"] == "gt-boxes" and (out / "eval-refcoco-examples.png").exists()
    imagenet = write_imagenet_s(tmp_path / "ImageNetS919")
    result = runner.invoke(app, ["eval", "--benchmark", "imagenet-s", "--model", str(exported), "--data", str(imagenet),
                                 "--class-names", str(imagenet / "names.txt"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval-imagenet-s-validation.json").read_text())
    assert report["counts"]["images"] == 4 and {"alpha_mask", "alpha_box", "alpha_whole"} <= set(report["results"])


class _Exploit:
    def __reduce__(self):
        return (print, ("ran code",))


def test_bad_benchmark_input_is_one_line_exit_1(tmp_path, exported):
    """A split the dataset lacks and a refs pickle holding a callable: one-line errors, exit code 1."""
    data = write_rec_dataset(tmp_path / "refer")
    base = [sys.executable, "-m", "fc", "eval", "--benchmark", "refcoco", "--model", str(exported), "--data", str(data)]
    result = subprocess.run(base + ["--split", "test"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == ["error: refcoco has no split 'test'; its splits: testA, testB, val"]
    assert "Loading weights" not in result.stderr  # the data is checked before the model loads
    (data / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([_Exploit()], protocol=2))
    result = subprocess.run(base + ["--split", "val"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "ran code" not in result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "refuses to load __builtin__.print" in result.stderr  # protocol 2 names Python 2 modules


def test_table_puts_published_numbers_only_beside_comparable_rows():
    """A ViT-B/16 at 224 px on RefCOCO testA (ground-truth boxes) shows FALIP's and red circle's
    published numbers with their source; another backbone, setting or split shows none."""
    from types import SimpleNamespace

    from rich.console import Console

    from fc.report import benchmark_table
    from fctrain.evaluation.published import backbone_name, comparable

    b16 = SimpleNamespace(hidden_size=768, num_hidden_layers=12, patch_size=16)
    assert backbone_name(b16) == "ViT-B/16"
    assert set(comparable("refcoco", "testA", "ViT-B/16", 224, "gt-boxes")) == {"red_circle", "falip"}
    assert comparable("refcoco", "testA", "ViT-B/16", 224, "detector") == {}
    assert comparable("refcoco", "testA", "ViT-B/16", 336, "gt-boxes") == {}
    assert comparable("refcoco", "val", "ViT-B/16", 224, "gt-boxes") == {}
    report = SimpleNamespace(
        benchmark="refcoco", split="testA", settings={"image_size": 224, "setting": "gt-boxes"},
        counts={"expressions": 10, "images": 2, "proposals_per_image": 3.0, "chance": 0.3},
        results={"falip": {"accuracy": 0.5}, "crop": {"accuracy": 0.4}},
    )
    console = Console(record=True, width=200)
    console.print(benchmark_table(report, b16))
    text = console.export_text()
    assert "44.2 (FALIP)" in text and "published: FALIP paper" in text and "unverified" in text
