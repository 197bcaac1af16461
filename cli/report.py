"""Presenting evaluation results: the rich table, eval.json and the example pictures."""

from __future__ import annotations

from pathlib import Path


def eval_table(report):
    from rich.table import Table

    from fctrain.evaluation.regions import METHOD_TITLES

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
        table.add_row(METHOD_TITLES.get(method, method), *(f"{row.get(key, float('nan')):.3f}" for _, key in columns))
    return table


def write_eval_outputs(report, out_dir: Path) -> tuple[Path, Path]:
    """eval.json (atomically) and eval-examples.png: the focus method's box choices."""
    import os

    from fcdata.show import render_box_choice, save_grid

    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "eval.json"
    temporary = results.with_name(f".{results.name}.tmp{os.getpid()}")
    temporary.write_text(report.to_json())
    os.replace(temporary, results)
    pictures = out_dir / "eval-examples.png"
    tiles = []
    for example in report.examples:
        image = report.example_images[example["image_id"]]
        phrase = image.phrases[example["phrase"]]
        tiles.append(render_box_choice(image.letterboxed, image.model_boxes, phrase, example["chosen"], example["phrase"]))
    if tiles:
        save_grid(tiles, pictures)
    return results, pictures
