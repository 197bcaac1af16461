"""`fc eval`: region-level accuracy beside training-free baselines, as a table, JSON and pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fctrain.config import EvalOptions

_DEFAULTS = EvalOptions()


def evaluate(
    run: Annotated[Path, typer.Option(help="A training run folder (from fc train).")],
    checkpoint: Annotated[str, typer.Option(help="'latest' or a checkpoint folder of the run.")] = "latest",
    shards: Annotated[Optional[str], typer.Option(help="Validation shards (default: the val split beside the run's training shards).")] = None,
    max_images: Annotated[int, typer.Option(help="Images to evaluate.", min=1)] = _DEFAULTS.max_images,
    max_regions: Annotated[int, typer.Option(help="Candidate regions per image (distinct phrases).", min=2)] = _DEFAULTS.max_regions,
    methods: Annotated[Optional[str], typer.Option(help="Comma-separated subset of: " + ", ".join(_DEFAULTS.methods))] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for eval.json and the pictures (default: the run folder).")] = None,
    device: Annotated[str, typer.Option(help="'cpu', 'cuda', 'cuda:1'...")] = "cpu",
) -> None:
    """Box selection (which box does this phrase mean), phrase selection (which phrase does this
    box mean), global retrieval and zero-shot region classification, for the fine-tuned model and
    the training-free baselines on the same base weights.

    Example: fc eval --run runs/tiny --max-images 200
    """
    from fc.report import eval_table, write_eval_outputs
    from fcdata.outputs import check_output_dir
    from fctrain.checkpoint import load_trained
    from fctrain.evaluate import evaluate as run_evaluation

    check_output_dir(out or run, "--out" if out else "--run")
    model, tokenizer, config = load_trained(run, checkpoint, device)
    options = EvalOptions(
        shards=shards or config.data.shards, max_images=max_images, max_regions=max_regions,
        methods=tuple(m.strip() for m in methods.split(",")) if methods else _DEFAULTS.methods,
    )
    report = run_evaluation(model, tokenizer, options, model.logit_scale.device)
    from rich.console import Console

    Console().print(eval_table(report))
    paths = write_eval_outputs(report, out or run)
    from fcdata.errors import format_counts

    typer.echo(f"results in {paths[0]}; pictures in {paths[1]}; skipped {format_counts(report.skipped)}")
