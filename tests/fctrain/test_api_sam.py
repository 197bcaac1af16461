"""fctrain.api.sam_alpha: a mask from a click or a box, as the alpha encode_image takes."""

from __future__ import annotations

import numpy as np
import pytest

from fcdata.sam import SamMasker, tiny_sam
from fctrain.api import sam_alpha
from tests.fctrain.test_export import exported, trained  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def masker(tmp_path_factory):
    return SamMasker.load(tiny_sam(tmp_path_factory.mktemp("sam") / "tiny"), "cpu")


def test_point_and_box_give_the_wrappers_mask_as_uint8(masker):
    """The alpha is SAM's best mask for the prompt, 0/255 at the image's size."""
    image = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    for prompt in ({"point": (30, 20)}, {"box": (10, 5, 60, 50)}):
        alpha = sam_alpha(masker, image, **prompt)
        key = "points" if "point" in prompt else "boxes"
        [prediction] = masker.predict([image], **{key: [np.asarray([next(iter(prompt.values()))], np.float64)]})
        assert alpha.shape == (64, 96) and alpha.dtype == np.uint8
        np.testing.assert_array_equal(alpha, prediction.masks[0].astype(np.uint8) * 255)


def test_exactly_one_prompt(masker):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="a point or a box"):
        sam_alpha(masker, image)
    with pytest.raises(ValueError, match="a point or a box"):
        sam_alpha(masker, image, point=(1, 1), box=(0, 0, 4, 4))


def test_readme_sam_block_runs_and_leaves_the_folder_as_it_was(tmp_path, exported):
    """The README's click-to-alpha block, against a Focus-CLIP export and a photo."""
    import os
    import shutil

    from PIL import Image

    from tests.fcdata.test_segmasks import readme_block

    shutil.copytree(exported, tmp_path / "models" / "focus-vg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(tmp_path / "street.jpg")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    previous = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(readme_block("sam_alpha(masker, image, point"), namespace)
    finally:
        os.chdir(previous)
    assert namespace["alpha"].shape == (200, 300) and tuple(namespace["scores"].shape) == (1, 2)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
