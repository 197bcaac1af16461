"""Presenting evaluation results: the rich table, eval.json and the example pictures."""

from __future__ import annotations

from pathlib import Path


def eval_table(report):
    from rich.table import Table

    any_row = next(iter(report.results.values()))
    chance = any_row.get("box_chance", float("nan"))
    table = Table(
        title=f"{report.images} images, {report.regions} regions; box chance {chance:.3f}",
        caption="box: phrase -> its box among the image's; phr: box -> its phrase (R@1, R@5, mean rank); "
        "r>p / p>r: region <-> phrase over all images (R@1); cls: zero-shot object class (top-1, top-5)",
    )
    columns = [
        ("box", "box_accuracy"), ("phr@1", "phrase_r1"), ("phr@5", "phrase_r5"), ("rank", "phrase_mean_rank"),
        ("r>p@1", "region_to_phrase_r1"), ("p>r@1", "phrase_to_region_r1"), ("cls@1", "zero_shot_top1"), ("cls@5", "zero_shot_top5"),
    ]
    table.add_column("method")
    for title, _ in columns:
        table.add_column(title, justify="right")
    for method, row in report.results.items():
        table.add_row(report.title(method), *(f"{row.get(key, float('nan')):.3f}" for _, key in columns))
    return table


RELATION_TITLES = {
    "relation_alpha": "Focus-CLIP (relation alpha)", "subject_alpha": "Focus-CLIP (subject alpha)",
    "union_alpha": "Focus-CLIP (union alpha)", "whole_image": "whole image", "union_crop": "union crop",
    "union_blur": "union blur",
}


def relations_table(report: dict):
    """fctrain.evaluation.relations' report as a table: a row per method."""
    from rich.table import Table

    weights = ", ".join(f"{w:g}" for w in report["weights"])
    model = report.get("model") or report.get("architecture", "")
    relations = next(iter(report["methods"].values()))["relations"] if report["methods"] else 0
    table = Table(
        title=f"relations{f' ({model})' if model else ''}: {relations} relations in {report['images']} images, "
        f"weights (subject, object, background) {weights}",
        caption="selection: phrase -> its (subject, object) pair among the image's, swaps included; "
        "swap: the pair against its swap alone (chance 0.5), +- its standard error",
    )
    for column in ("method", "selection", "chance", "swap", "+- SE"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, row in report["methods"].items():
        table.add_row(
            RELATION_TITLES.get(method, method), f"{row['selection']:.3f}", f"{row['selection_chance']:.3f}", f"{row['swap']:.3f}",
            f"{row.get('swap_se', float('nan')):.3f}",
        )
    return table


def write_eval_outputs(report, out_dir: Path) -> tuple[Path, Path]:
    """eval.json (atomically) and eval-examples.png: the focus method's box choices."""
    from fcdata.outputs import write_text_atomically
    from fcdata.show import render_box_choice, save_grid

    out_dir.mkdir(parents=True, exist_ok=True)
    results = write_text_atomically(out_dir / "eval.json", report.to_json())
    pictures = out_dir / "eval-examples.png"
    tiles = []
    for example in report.examples:
        image = report.example_images[example["image_id"]]
        phrase = image.phrases[example["phrase"]]
        tiles.append(render_box_choice(image.letterboxed, image.model_boxes, phrase, example["chosen"], example["phrase"]))
    if tiles:
        save_grid(tiles, pictures)
    return results, pictures


def benchmark_table(report, vision_config):
    """A REC or ImageNet-S report as a rich table, with the published numbers for the same
    protocol and backbone beside the measured ones (labelled, with their source)."""
    from rich.table import Table

    from fctrain.evaluation.methods import METHOD_TITLES
    from fctrain.evaluation.published import NOT_COMPARABLE, backbone_name, comparable

    backbone = backbone_name(vision_config)
    published = comparable(report.benchmark, report.split, backbone, report.settings["image_size"], report.settings["setting"])
    counts = report.counts
    if report.benchmark == "imagenet-s":
        title = f"ImageNet-S919 {report.split}: {counts['images']} images, {counts['classes']} classes; {backbone}"
        columns = [("top-1", "top1"), ("top-5", "top5")]
    else:
        skipped = counts.get("expressions_skipped", 0)
        title = (f"{report.benchmark} {report.split}: {counts['expressions']} expressions, {counts['images']} images"
                 + (f" ({skipped} expressions of unreadable images left out)" if skipped else "")
                 + f"; {counts['proposals_per_image']:.1f} proposals/image, chance {100 * counts['chance']:.1f}; {backbone}")
        columns = [("accuracy", "accuracy")]
    sources = sorted({p.source for p in published.values()})
    notes = [f"published: {s}" for s in sources] + [f"not comparable: {NOT_COMPARABLE[report.benchmark]}"]
    if report.settings["image_size"] != 224:
        notes.insert(0, f"input {report.settings['image_size']} px: the published numbers are at 224 px and not shown")
    caption = "; ".join(notes)
    table = Table(title=title, caption=caption)
    table.add_column("method")
    for name, _ in columns:
        table.add_column(name, justify="right")
    table.add_column("published", justify="right")
    for method, row in report.results.items():
        entry = published.get(method)
        table.add_row(METHOD_TITLES.get(method, method), *(f"{100 * row[key]:.1f}" for _, key in columns),
                      f"{entry.value:.1f} ({entry.who})" if entry else "")
    return table


def write_benchmark_outputs(report, out_dir: Path) -> tuple[Path, Path | None]:
    """eval-<benchmark>-<split>.json (atomically) and eval-<benchmark>-examples.png."""
    from fcdata.show import render_labelled, save_grid
    from fcdata.outputs import write_json_atomically

    results = write_json_atomically(Path(out_dir) / f"eval-{report.benchmark}-{report.split}.json", report.to_dict())
    green, red, grey, black = (40, 200, 60), (230, 30, 30), (170, 170, 170), (0, 0, 0)
    tiles = []
    for example in report.examples:
        if report.benchmark == "imagenet-s":
            image = report.example_images[example["image"]]
            right = example["truth"] == example["predicted"]
            lines = [(black, f"class: {example['truth']}"), (green if right else red, f"{example['method']}: {example['predicted']}")]
            tiles.append(render_labelled(image, [(green, example["box"])], lines))
        else:
            image = report.example_images[example["file_name"]]
            boxes = [(grey, b) for b in example["boxes"]] + [(green, example["gold"])]
            if not example["correct"]:
                boxes.append((red, example["boxes"][example["chosen"]]))
            verdict = "right" if example["correct"] else "wrong (red); referred box green"
            tiles.append(render_labelled(image, boxes, [(black, f'"{example["expression"]}"'), (grey, f"{example['method']}: {verdict}")]))
    pictures = None
    if tiles:
        pictures = save_grid(tiles, Path(out_dir) / f"eval-{report.benchmark}-examples.png")
    return results, pictures
