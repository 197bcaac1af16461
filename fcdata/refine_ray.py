"""`fc masks --ray ADDRESS`: the same job spread over a Ray cluster with Ray Data, one SAM actor per GPU.

Each input shard is one row of a Ray dataset; `map_batches` hands rows to a pool of actors that
each load the model once (one GPU each, or CPU actors where the cluster has no GPU) and run
`fcdata.refine.refine_shard` on them. Outputs, resumability and the summary are exactly those of
the single-process job (the same functions write them), so a job can be started on one machine
and finished on a cluster. OUT must be a folder every node can write (a shared filesystem).
"""

from __future__ import annotations

from pathlib import Path

from fcdata import refine
from fcdata.errors import UserError
from fcdata.options import MaskOptions


class _ShardWorker:
    """A Ray actor: one SAM, many shards."""

    def __init__(self, out_dir: str, sam_dir: str, options: MaskOptions, device: str):
        from fcdata.sam import SamMasker

        self.out_dir, self.options = Path(out_dir), options
        self.masker = SamMasker.load(sam_dir, device)

    def __call__(self, batch: dict) -> dict:
        images = []
        for shard in batch["shard"].tolist():
            counts = refine.refine_shard(Path(shard), self.out_dir, self.masker, self.options, None)
            images.append(counts["images"])
        return {"shard": batch["shard"], "images": images}


def refine_shards_ray(
    in_dir: Path, out_dir: Path, sam_dir: Path, options: MaskOptions, address: str,
    cpu_actors: int = 1, progress: refine.MaskProgress | None = None,
) -> dict:
    """The job of fcdata.refine.refine_shards on the Ray cluster at `address` ("local" starts
    one on this machine); `cpu_actors` actors where the cluster has no GPU."""
    import time

    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray Data: pip install 'focus-clip[ray]'") from None
    started = time.perf_counter()
    shards, todo = refine.prepare(in_dir, out_dir, sam_dir, options)
    if todo:
        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
            except ConnectionError as exc:
                raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({exc})") from None
        gpus = int(ray.cluster_resources().get("GPU", 0))
        on_gpu = gpus > 0 and options.device != "cpu"
        dataset = ray.data.from_items([{"shard": str(p)} for p in todo], override_num_blocks=len(todo))
        results = dataset.map_batches(
            _ShardWorker,
            fn_constructor_kwargs=dict(out_dir=str(out_dir), sam_dir=str(sam_dir), options=options, device="cuda" if on_gpu else "cpu"),
            batch_size=1,
            concurrency=gpus if on_gpu else cpu_actors,
            num_gpus=1 if on_gpu else 0,
        )
        if progress:
            progress.start(refine._count_images(in_dir, todo), len(shards), len(shards) - len(todo))
        for row in results.iter_rows():
            if progress:
                progress.advance(int(row["images"]), 0, 0.0)
                progress.shard_done()
    return refine.finish(in_dir, out_dir, shards, time.perf_counter() - started)
