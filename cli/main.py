"""The `fc` command. Each command lives in its own module and imports its heavy libraries inside
the function body, so `fc --help` only pays for typer."""

from __future__ import annotations

import sys

import typer

from fc import bench, convert, demo, evaluate, export, masks, shard, show, synth, train

app = typer.Typer(
    name="fc",
    help="Focus-CLIP: region-aware CLIP. Visual Genome -> shards -> RGBA ViT + LoRA -> region eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command("demo")(demo.demo)
app.command("synth")(synth.synth)
app.command("shard")(shard.shard)
app.command("masks")(masks.masks)
app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)
app.command("export")(export.export)
app.command("show")(show.show)
app.command("convert")(convert.convert)
app.add_typer(bench.app, name="bench")


def main() -> None:
    """Console entry point: a UserError becomes one line on stderr and exit code 1."""
    from fcdata.errors import UserError

    try:
        app()
    except UserError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
