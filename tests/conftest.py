import pytest

from fcdata.options import ShardOptions, SynthOptions
from fcdata.shard import shard_vg
from fcdata.synth import generate_vg


@pytest.fixture(scope="module")
def make_shards(tmp_path_factory):
    """Shard folders of small generated datasets (images 160-224 px on the long side)."""

    def make(images: int, seed: int, shard_samples: int, val_fraction: float):
        root = tmp_path_factory.mktemp("vg")
        generate_vg(root, SynthOptions(num_images=images, seed=seed, long_side_px=(160, 224)))
        out = tmp_path_factory.mktemp("shards")
        shard_vg(root, out, ShardOptions(shard_samples=shard_samples, val_fraction=val_fraction, workers=1))
        return out

    return make
