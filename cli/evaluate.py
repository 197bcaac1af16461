"""`fc eval`: region accuracy beside training-free baselines, on our VG validation shards or on the
field's yardsticks (RefCOCO/RefCOCO+/RefCOCOg REC, ImageNet-S), as a table, JSON and pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fctrain.config import EvalOptions

_DEFAULTS = EvalOptions()
BENCHMARKS = ("vg-regions", "vg-relations", "refcoco", "refcoco+", "refcocog", "imagenet-s")


def evaluate(
    run: Annotated[Optional[Path], typer.Option(help="A training run folder (from fc train).")] = None,
    checkpoint: Annotated[str, typer.Option(help="'latest' or a checkpoint folder of the run.")] = "latest",
    benchmark: Annotated[str, typer.Option(help="One of: " + ", ".join(BENCHMARKS) + ".")] = "vg-regions",
    model: Annotated[Optional[Path], typer.Option(help="Instead of --run (REC, ImageNet-S): a Focus-CLIP export (fc export; Alpha-CLIP via fc convert) or a Hugging Face CLIP folder.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="REC: the folder holding refcoco/, refcoco+/, refcocog/; ImageNet-S: the ImageNetS919 folder.")] = None,
    split: Annotated[Optional[str], typer.Option(help="REC split: val, testA, testB (RefCOCO, RefCOCO+) or val, test (RefCOCOg).")] = None,
    images: Annotated[Optional[Path], typer.Option(help="REC: COCO train2014/ (default DATA/train2014).")] = None,
    proposals: Annotated[Optional[Path], typer.Option(help="REC: detections JSON mapping each image id to its list of x, y, w, h boxes; default: the ground-truth boxes.")] = None,
    subtract: Annotated[bool, typer.Option(help="REC: subtract each proposal's mean score over 500 other expressions of the split.")] = False,
    categories: Annotated[Optional[Path], typer.Option(help="ImageNet-S: the categories file (default DATA/ImageNetS_categories_im919.txt).")] = None,
    class_names: Annotated[Optional[Path], typer.Option(help="ImageNet-S: class names, 'wnid name' per line (default: nltk WordNet if installed).")] = None,
    shards: Annotated[Optional[str], typer.Option(help="vg-regions: validation shards (default: the val split beside the run's training shards).")] = None,
    max_images: Annotated[Optional[int], typer.Option(help=f"Images to evaluate (vg-regions default {_DEFAULTS.max_images}; others: all).", min=1)] = None,
    max_regions: Annotated[int, typer.Option(help="vg-regions: candidate regions per image (distinct phrases).", min=2)] = _DEFAULTS.max_regions,
    methods: Annotated[Optional[str], typer.Option(help="Comma-separated subset of the benchmark's methods (default: all of them).")] = None,
    batch_size: Annotated[int, typer.Option(help="Model inputs per forward pass.")] = 64,
    workers: Annotated[int, typer.Option(help="REC, ImageNet-S: threads building the views; 0 = one per available core.", min=0)] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the JSON and pictures (default: the run folder, or . with --model).")] = None,
    device: Annotated[str, typer.Option(help="'cpu', 'cuda', 'cuda:1'...")] = "cpu",
) -> None:
    """Evaluate a trained model beside training-free baselines (whole image, crop, blur, red circle,
    gray outside, FALIP's attention bias) on the same base CLIP.

    vg-regions (default): box selection, phrase selection, retrieval and zero-shot region
    classification on the run's Visual Genome validation shards. vg-relations: relation selection
    and swap accuracy (graded subject + object alpha vs union and subject baselines) and the
    graded-control curve, on validation shards that hold relations. refcoco, refcoco+, refcocog:
    zero-shot referring expressions (ReCLIP's protocol). imagenet-s: zero-shot ImageNet-S919
    classification with mask, box and whole-image alphas (Alpha-CLIP's protocol).

    Examples:
      fc eval --run runs/tiny --max-images 200
      fc eval --run runs/vg --benchmark refcoco --data /data/refer --split testA --images /data/coco/train2014
      fc eval --model models/alpha-clip-b16 --benchmark imagenet-s --data /data/ImageNetS919 --class-names names.txt
    """
    from fcdata.errors import UserError

    if benchmark not in BENCHMARKS:
        raise UserError(f"--benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None
    if benchmark == "vg-regions":
        return _vg_regions(run, checkpoint, shards, max_images, max_regions, chosen, out, device)
    if benchmark == "vg-relations":
        return _vg_relations(run, checkpoint, shards, max_images, chosen, batch_size, out, device)
    if (run is None) == (model is None):
        raise UserError("give exactly one of --run RUN or --model DIR")
    if data is None:
        raise UserError(f"--benchmark {benchmark} needs --data DIR")
    from rich.console import Console

    from fc.progress import PlainEvalProgress, RichEvalProgress, display
    from fc.report import benchmark_table, write_benchmark_outputs
    from fctrain.evaluation import imagenet_s, rec
    from fctrain.evaluation.common import load_eval_model
    from fctrain.evaluation.methods import needs_masks

    common = dict(max_images=max_images or 0, batch_size=batch_size, workers=workers)
    # The data is read and checked first: a wrong path or split fails before the model loads.
    if benchmark == "imagenet-s":
        options = imagenet_s.ImageNetSOptions(data_dir=data, categories=categories, class_names=class_names,
                                              methods=chosen or imagenet_s.DEFAULT_METHODS, **common)
        prepared = imagenet_s.read_dataset(options)
    else:
        if split is None:
            raise UserError(f"--benchmark {benchmark} needs --split (val, testA, testB or test)")
        defaults = tuple(m for m in rec.DEFAULT_METHODS if not (proposals and needs_masks(m)))
        options = rec.RecOptions(dataset=benchmark, data_dir=data, split=split, images_dir=images, proposals=proposals,
                                 methods=chosen or defaults, subtract=subtract, **common)
        prepared = rec.read_split(options)
    if run is not None:
        from fctrain.checkpoint import load_trained

        loaded, tokenizer, _ = load_trained(run, checkpoint, device)
        note = f"run {run} ({checkpoint}): baseline rows on its base CLIP (LoRA off, alpha off)"
    else:
        loaded, tokenizer, note = load_eval_model(model, device)
    with display(Console(stderr=True), RichEvalProgress, PlainEvalProgress) as progress:
        if benchmark == "imagenet-s":
            report = imagenet_s.evaluate_imagenet_s(loaded, tokenizer, options, progress, note, prepared)
        else:
            report = rec.evaluate_rec(loaded, tokenizer, options, progress, note, prepared)
    Console().print(benchmark_table(report, loaded.base_clip.config.vision_config))
    paths = write_benchmark_outputs(report, out or run or Path("."))
    typer.echo(f"results in {paths[0]}" + (f"; pictures in {paths[1]}" if paths[1] else ""))


def _vg_regions(run, checkpoint, shards, max_images, max_regions, methods, out, device) -> None:
    from fcdata.errors import UserError

    if run is None:
        raise UserError("--benchmark vg-regions needs --run RUN (the run's validation shards and base model)")
    from rich.console import Console

    from fc.progress import PlainPhases, RichPhases, display
    from fc.report import eval_table, write_eval_outputs
    from fcdata.outputs import check_output_dir
    from fctrain.checkpoint import load_trained
    from fctrain.evaluation.regions import evaluate as run_evaluation

    check_output_dir(out or run, "--out" if out else "--run")
    model, tokenizer, config = load_trained(run, checkpoint, device)
    options = EvalOptions(
        shards=shards or config.data.shards, max_images=max_images or _DEFAULTS.max_images, max_regions=max_regions,
        methods=methods or _DEFAULTS.methods,
    )
    phases = len(options.methods)
    with display(Console(stderr=True), lambda: RichPhases("eval", phases), lambda: PlainPhases("fc eval", phases)) as progress:
        report = run_evaluation(model, tokenizer, options, model.logit_scale.device, progress)
    Console().print(eval_table(report))
    paths = write_eval_outputs(report, out or run)
    from fcdata.errors import format_counts

    typer.echo(f"results in {paths[0]}; pictures in {paths[1]}; skipped {format_counts(report.skipped)}")


def _vg_relations(run, checkpoint, shards, max_images, methods, batch_size, out, device) -> None:
    from fcdata.errors import UserError

    if run is None:
        raise UserError("--benchmark vg-relations needs --run RUN (the run's validation shards and base model)")
    from rich.console import Console

    from fc.report import relations_table
    from fcdata.outputs import check_output_dir
    from fctrain.checkpoint import load_trained
    from fcdata.outputs import write_json_atomically
    from fctrain.evaluation.relations import METHODS, RelationEvalOptions, evaluate_relations

    check_output_dir(out or run, "--out" if out else "--run")
    model, tokenizer, config = load_trained(run, checkpoint, device)
    options = RelationEvalOptions(
        shards=shards or config.data.shards, batch_size=batch_size, weights=tuple(config.data.relation_weights),
        **({"max_images": max_images} if max_images else {}))
    report = evaluate_relations(model, tokenizer, options, methods or tuple(METHODS))
    Console().print(relations_table(report))
    curve = report["graded_control"]
    typer.echo("graded control (object weight -> similarity to the object's phrase): " + ", ".join(
        f"{w:g}: {s:.3f}" for w, s in zip(curve["weights"], curve["object_similarity"])
    ))
    path = write_json_atomically(Path(out or run) / "eval-relations.json", report)
    typer.echo(f"results in {path}")
