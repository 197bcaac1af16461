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



@pytest.fixture(scope="session")
def make_trained_tiny(tmp_path_factory):
    """A tiny CLIP (no pretraining) with LoRA whose B and alpha conv are non-zero, as after
    training (so masks change its embeddings), and its tokenizer; built once per vocabulary and
    input size in a session (tests only run it, in eval mode)."""
    built = {}

    def make(phrases, image_size: int = 64):
        from tiny_models import trained_tiny

        key = (tuple(phrases), image_size)
        if key not in built:
            built[key] = trained_tiny(tmp_path_factory.mktemp("tiny"), phrases, image_size)
        return built[key]

    return make


class ShardFaults:
    """Broken copies of a good shard, as real faults leave them: each method writes one file."""

    def __init__(self, good: str, folder):
        import tarfile

        self.good, self.folder = good, folder
        with tarfile.open(good) as archive:
            self.members = [(m.name, archive.extractfile(m).read()) for m in archive if m.isfile()]

    def _write(self, name: str, members) -> str:
        import io
        import tarfile

        path = self.folder / name
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
            for member_name, data in members:
                info = tarfile.TarInfo(member_name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return str(path)

    def zero_bytes(self, name: str = "train-90000.tar") -> str:
        (self.folder / name).write_bytes(b"")
        return str(self.folder / name)

    def text_file(self, name: str = "train-90001.tar") -> str:
        (self.folder / name).write_text("these are not the shards you are looking for\n" * 40)
        return str(self.folder / name)

    def truncated(self, name: str = "train-90002.tar", keep: float = 0.6) -> str:
        data = open(self.good, "rb").read()
        (self.folder / name).write_bytes(data[: int(len(data) * keep)])
        return str(self.folder / name)

    def random_members(self, name: str = "train-90003.tar", extension: str = "jpg", every: int = 1) -> str:
        """Every `every`-th sample's `extension` member replaced by random bytes (a seeded RNG)."""
        import random

        rng = random.Random(0)
        keys = sorted({n.split(".", 1)[0] for n, _ in self.members})
        broken = set(keys[::every])
        members = [
            (n, rng.randbytes(len(d)) if n.split(".", 1)[0] in broken and n.endswith("." + extension) else d)
            for n, d in self.members
        ]
        return self._write(name, members)

    def without_member(self, name: str = "train-90004.tar", extension: str = "json") -> str:
        first = self.members[0][0].split(".", 1)[0]
        return self._write(name, [(n, d) for n, d in self.members if n != f"{first}.{extension}"])

    def empty_tar(self, name: str = "train-90005.tar") -> str:
        return self._write(name, [])


@pytest.fixture(scope="module")
def good_shards(make_shards):
    """A shard folder of a small generated dataset: train shards of 8 images, and a val split."""
    return make_shards(images=24, seed=3, shard_samples=8, val_fraction=0.15)


@pytest.fixture
def shard_faults(good_shards, tmp_path):
    """ShardFaults over the first train shard of `good_shards`, written into tmp_path."""
    return ShardFaults(str(sorted(good_shards.glob("train-*.tar"))[0]), tmp_path)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only file system: a read-only bind mount when running as root (chmod does
    not stop root), a folder without write permission otherwise."""
    import os
    import subprocess

    source, target = tmp_path / "ro-source", tmp_path / "read-only"
    source.mkdir(), target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o555)
        yield target
        target.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {mounted.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)
