"""The quick-start pipeline on an embedded default: generate a VG-format dataset, then shard it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fcdata.options import ShardOptions, SynthOptions
from fcdata.shard import ShardProgress, ShardSummary, shard_vg
from fcdata.synth import SynthReport, generate_vg


@dataclass(frozen=True)
class DemoOptions:
    out_dir: Path = Path("fc-demo")  # everything goes below this folder
    images: int = 240  # generated images (VG quirks included, to show they are survived)
    seed: int = 0  # seed of the generated data
    workers: int = 0  # processes for generating and sharding, 0 = all cores


@dataclass
class DemoResult:
    vg_root: Path
    shard_dir: Path
    synth: SynthReport
    shards: ShardSummary


def run_data_demo(
    options: DemoOptions,
    synth_progress: Callable[[int], None] | None = None,
    shard_progress: ShardProgress | None = None,
) -> DemoResult:
    vg_root = options.out_dir / "vg"
    shard_dir = options.out_dir / "shards"
    synth = SynthOptions(num_images=options.images, seed=options.seed, quirks=True, workers=options.workers)
    report = generate_vg(vg_root, synth, synth_progress)
    # Small shards, so the demo's few hundred images still spread over several workers.
    shards = shard_vg(vg_root, shard_dir, ShardOptions(shard_samples=64, workers=options.workers), shard_progress)
    return DemoResult(vg_root, shard_dir, report, shards)
