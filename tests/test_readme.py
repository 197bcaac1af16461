"""Every ```python block of README.md runs as written, so the README cannot drift from the code.

The convention every README python block follows (a new block that needs more must add it to the
`readme_dir` fixture below and to this list):

- It is self-contained: its own imports, no names defined by another block (each runs in a fresh
  namespace), and it reads as something a user would paste.
- It runs with the working directory holding exactly:
      train-00000.tar     a shard as `fc shard` writes it (fcdata.shard.shard_vg on generated
                          Visual-Genome-format scenes; binary masks, the default)
      models/focus-vg/    a model folder as `fc export` writes it (fctrain.export.export_model of a
                          tiny 64 px CLIP with trained-looking LoRA and alpha conv, standing in
                          for a ViT-B/16 export)
      street.jpg          an RGB photo (the first image of train-00000.tar)
- It is quick (seconds), needs no network or GPU, and leaves the directory as it found it.

What a block computes is checked where it matters by the tests of that feature (the PIL and NumPy
recipe in tests/fcdata/test_shard.py); here each block must run without error.
"""

import shutil

import pytest
from PIL import Image

from fcdata.reader import read_shard
from fctrain.export import export_model
from readme import python_blocks, run_block

BLOCKS = python_blocks()
PHRASES = ["a red car", "a blue bus", "the red car on the left", "a man riding a horse", "a tall tree"] * 3


@pytest.fixture(scope="module")
def readme_dir(make_shards, make_trained_tiny, tmp_path_factory):
    """The working directory the README's blocks are written against (see the module docstring)."""
    work = tmp_path_factory.mktemp("readme")
    shards = make_shards(images=12, seed=2, shard_samples=8, val_fraction=0.0)
    shutil.copy(shards / "train-00000.tar", work / "train-00000.tar")
    first = next(read_shard(work / "train-00000.tar"))
    Image.fromarray(first.image).save(work / "street.jpg", quality=90)
    model, tokenizer = make_trained_tiny(PHRASES + first.phrases, image_size=64)
    export_model(model, tokenizer, work / "models" / "focus-vg", image_size=64)
    return work


def test_the_readme_has_python_blocks():
    """The extractor finds the README's blocks (an empty list would make the test below vacuous)."""
    assert len(BLOCKS) >= 2 and all(block.code.strip() for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_readme_block_runs_as_written(block, readme_dir):
    """A README python block runs unchanged in the documented working directory."""
    before = sorted(p.relative_to(readme_dir) for p in readme_dir.rglob("*"))
    run_block(block, readme_dir)
    assert sorted(p.relative_to(readme_dir) for p in readme_dir.rglob("*")) == before  # reads only
