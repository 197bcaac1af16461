"""`fc train`: LoRA fine-tuning of the RGBA CLIP on region shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def train(
    config: Annotated[Optional[Path], typer.Option("--config", help="A TOML file of settings (sections run, data, model, lora, loss, optim, checkpoint).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override one setting: section.key=value (repeatable; TOML values).")] = None,
    shards: Annotated[Optional[str], typer.Option(help="Training shards: a shard folder, pattern or list (data.shards).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder: checkpoints, metrics.jsonl, config.toml (run.out_dir).")] = None,
    model: Annotated[Optional[str], typer.Option(help="'tiny', or a local CLIP model folder (model.name_or_path).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimiser steps (run.steps).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Region views per batch and process (data.batch_size).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="'latest' or a checkpoint folder (checkpoint.resume).")] = None,
    overwrite: Annotated[bool, typer.Option(help="--out holds another run: delete its files (checkpoints, metrics, config, tiny model) and start over.")] = False,
) -> None:
    """Fine-tune the RGBA CLIP with LoRA on shards from `fc shard`. Settings: defaults < --config
    file < --set overrides < the flags below. Several GPUs: run it under torchrun.

    Examples:
      fc train --shards data/shards --model tiny --steps 300 --out runs/tiny
      fc train --config train.toml --set optim.lr=2e-4 --set model.gradient_checkpointing=true
      fc train --config runs/tiny/config.toml --resume latest --steps 600   # continue a run
      torchrun --nproc_per_node 8 -m fc train --config train.toml
    """
    import json
    import signal

    from rich.console import Console

    from fc.progress import PlainTrainProgress, RichTrainProgress, display
    from fctrain.config import load_config
    from fctrain.train import train as run_training

    overrides = list(set_ or [])
    flags = {"data.shards": shards, "run.out_dir": out, "model.name_or_path": model, "run.steps": steps,
             "data.batch_size": batch_size, "checkpoint.resume": resume}
    overrides += [f"{key}={json.dumps(str(value)) if isinstance(value, (str, Path)) else value}"
                  for key, value in flags.items() if value is not None]
    settings = load_config(config, overrides)
    with display(Console(stderr=True), RichTrainProgress, PlainTrainProgress) as progress:
        result = run_training(settings, progress, overwrite=overwrite)
    if result.stopped_by is not None:
        name = signal.Signals(result.stopped_by).name
        typer.echo(f"stopped by {name} at step {result.step}; checkpoint {result.checkpoint}; "
                   f"continue with --config {result.run_dir / 'config.toml'} --resume latest", err=True)
        raise typer.Exit(128 + result.stopped_by)  # the shell's code for a process ended by that signal
    from fcdata.errors import format_counts

    typer.echo(f"trained to step {result.step}; checkpoint {result.checkpoint}; metrics in {result.run_dir / 'metrics.jsonl'}; "
               f"skipped samples: {format_counts(result.skipped)}")
