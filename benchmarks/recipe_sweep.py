"""Which fine-tuning recipe makes `fc demo`'s Focus-CLIP beat its own crop baseline (issue 12).

The demo's data (fctrain.demo.make_demo_data: 600 generated images, 10% val) is generated and
sharded once, and each pretraining of the tiny CLIP (fctrain.pretrain) runs once; every arm then
fine-tunes from that tiny model with the demo's recipe plus the arm's overrides, so an arm costs
one fine-tuning and one evaluation. Per arm: box selection and phrase selection of the box-alpha
model (`focus`), whole-image retrieval and zero-shot classification of the same model with an
all-ones alpha (`focus_whole`), beside the untrained model's whole image and the crop baseline of
the same pretraining; and the CPU seconds of the fine-tuning + evaluation (this process and its
loader workers). Rows go to WORK/rows.jsonl as they finish (an arm already there is not rerun),
and `--record` writes every row of WORK to benchmarks/results/<date>-recipe-sweep.json.

    python -m fcbench.recipe_sweep --work runs/sweep --arms demo,alpha_lr_100 --record
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import resource
import sys
import time
from pathlib import Path

from fcbench.common import RESULTS_DIR, emit, machine_info
from fctrain.config import DemoOptions, EvalOptions
from fctrain.demo import one_torch_thread

# Pretrainings of the tiny CLIP: PretrainOptions fields, plus the input size it is built at.
PRETRAININGS: dict[str, dict] = {
    "crops": {},  # region crops only (the demo before this sweep)
    "crops+full": {"full_image_ratio": 0.5},  # and half the images whole, captioned with one region phrase
    "crops+full_all": {"full_image_ratio": 1.0},
    "crops+full@96": {"full_image_ratio": 0.5, "image_size": 96},  # 6 x 6 patches instead of 4 x 4
    "crops+full@128": {"full_image_ratio": 0.5, "image_size": 128},
}

OBJECT_GUIDED = 'model.architecture="object_guided"'
# Arm -> (pretraining, overrides of the demo's training config).
ARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "demo": ("crops", ()),  # the demo as it was before this sweep (its recipe now is og_pre_full + the alpha-conv pre_full)
    "alpha_lr_1": ("crops", ("optim.alpha_lr_multiplier=1",)),
    "alpha_lr_20": ("crops", ("optim.alpha_lr_multiplier=20",)),
    "alpha_lr_100": ("crops", ("optim.alpha_lr_multiplier=100",)),
    "lora_mlp": ("crops", ('lora.targets=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]',)),
    "lora_rank_4": ("crops", ("lora.rank=4", "lora.alpha=4")),
    "lora_rank_64": ("crops", ("lora.rank=64", "lora.alpha=64")),
    "lr_2e-3": ("crops", ("optim.lr=2e-3",)),
    "lr_1e-4": ("crops", ("optim.lr=1e-4",)),
    "warmup_0": ("crops", ("optim.warmup_steps=0",)),
    "warmup_100": ("crops", ("optim.warmup_steps=100",)),
    "views_1": ("crops", ("data.regions_per_image=1",)),
    "views_4": ("crops", ("data.regions_per_image=4",)),
    "views_8": ("crops", ("data.regions_per_image=8",)),
    "full_0": ("crops", ("data.full_image_ratio=0.0",)),
    "full_0.3": ("crops", ("data.full_image_ratio=0.3",)),
    "crop_scale_0.8": ("crops", ("data.crop_scale=[0.8, 1.0]",)),
    "crop_scale_0.1": ("crops", ("data.crop_scale=[0.1, 1.0]",)),
    # Alpha-CLIP's own choices: alpha conv at ~100x, temperature frozen at 100, label smoothing 0.1.
    "alpha_clip": ("crops", ("optim.alpha_lr_multiplier=100", "loss.logit_scale=100", "loss.label_smoothing=0.1")),
    "logit_scale_100": ("crops", ("loss.logit_scale=100",)),
    "label_smoothing_0.1": ("crops", ("loss.label_smoothing=0.1",)),
    "object_guided": ("crops", (OBJECT_GUIDED,)),
    "pre_full": ("crops+full", ()),
    "pre_full_all": ("crops+full_all", ()),
    "steps_1200": ("crops", ("run.steps=1200",)),
    "og_pre_full": ("crops+full", (OBJECT_GUIDED,)),
    "og_pre_full_steps_600": ("crops+full", (OBJECT_GUIDED, "run.steps=600")),
    "og_steps_600": ("crops", (OBJECT_GUIDED, "run.steps=600")),
    "og_alpha_lr_20": ("crops", (OBJECT_GUIDED, "optim.alpha_lr_multiplier=20")),
    "pre_full_96": ("crops+full@96", ()),
    "pre_full_128": ("crops+full@128", ()),
}

EVAL_ROWS = ("focus", "focus_whole")  # the trained model's rows
BASELINE_ROWS = ("untrained", "whole_image", "crop")  # the pretrained tiny model's: once per pretraining


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (loader and shard workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Sweep:
    def __init__(self, work: Path, options: DemoOptions):
        self.work, self.options = work, options
        self.rows_file = work / "rows.jsonl"

    def rows(self) -> list[dict]:
        if not self.rows_file.is_file():
            return []
        return [json.loads(line) for line in self.rows_file.read_text().splitlines() if line.strip()]

    def _add(self, row: dict) -> dict:
        self.work.mkdir(parents=True, exist_ok=True)
        with open(self.rows_file, "a") as out:
            out.write(json.dumps(row, sort_keys=True) + "\n")
        return row

    def _done(self, kind: str, name: str) -> dict | None:
        return next((r for r in self.rows() if r["kind"] == kind and r["name"] == name), None)

    @property
    def shard_dir(self) -> Path:
        return self.options.out_dir / "shards"

    def data(self) -> dict:
        if done := self._done("data", "demo"):
            return done
        from fctrain.demo import make_demo_data

        start, wall = cpu_seconds(), time.perf_counter()
        _, _, synth, shards = make_demo_data(self.options)
        return self._add({
            "kind": "data", "name": "demo", "images": synth.images_written,
            "cpu_s": round(cpu_seconds() - start, 1), "wall_s": round(time.perf_counter() - wall, 1),
        })

    def tiny_dir(self, pretraining: str) -> Path:
        return self.work / f"pretrain-{pretraining}" / "tiny-model"

    def pretrain(self, pretraining: str) -> dict:
        """The tiny CLIP of `pretraining`, built as fc train builds it, and its baseline rows."""
        if done := self._done("pretrain", pretraining):
            return done
        from fcdata.loader import resolve_shards
        from fctrain.model import create_tiny_model
        from fctrain.pretrain import PretrainOptions, pretrain_tiny_clip
        from fctrain.train import train_phrases

        spec = dict(PRETRAININGS[pretraining])
        size = spec.pop("image_size", 64)
        shards = resolve_shards(str(self.shard_dir), "train")
        options = PretrainOptions(steps=self.options.pretrain_steps, seed=self.options.seed, **spec)
        start, wall = cpu_seconds(), time.perf_counter()
        report = lambda step, loss: print(f"pretrain {pretraining}: step {step} loss {loss:.3f}", file=sys.stderr, flush=True)
        pretrain = functools.partial(pretrain_tiny_clip, shards=shards, options=options, report=report)
        if not (self.tiny_dir(pretraining) / "config.json").is_file():  # a run stopped after it was built keeps it
            create_tiny_model(self.tiny_dir(pretraining), train_phrases(shards), image_size=size, seed=self.options.seed, pretrain=pretrain)
        cpu, elapsed = cpu_seconds() - start, time.perf_counter() - wall
        results = self._evaluate_base(pretraining, size)
        return self._add({
            "kind": "pretrain", "name": pretraining, "options": dataclasses.asdict(options), "image_size": size,
            "cpu_s": round(cpu, 1), "wall_s": round(elapsed, 1), "results": results,
        })

    def _evaluate_base(self, pretraining: str, size: int) -> dict:
        import torch

        from fctrain.config import LoraConfig, ModelConfig
        from fctrain.evaluation.regions import evaluate
        from fctrain.model import build_model

        model, tokenizer = build_model(ModelConfig(name_or_path=str(self.tiny_dir(pretraining)), image_size=size), LoraConfig(), None)
        options = EvalOptions(shards=str(self.shard_dir), max_images=self.options.eval_images, methods=BASELINE_ROWS)
        return evaluate(model, tokenizer, options, torch.device("cpu")).results

    def arm(self, name: str) -> dict:
        """Fine-tune from the arm's pretrained tiny CLIP and evaluate. NAME@SEED runs arm NAME with
        another run seed (LoRA init and data order; the tiny model is the same)."""
        if done := self._done("arm", name):
            return done
        import torch

        from fctrain.checkpoint import load_trained
        from fctrain.demo import demo_train_config
        from fctrain.evaluation.regions import evaluate
        from fctrain.train import train

        base, _, seed = name.partition("@")
        pretraining, overrides = ARMS[base]
        pretrained = self.pretrain(pretraining)
        options = dataclasses.replace(self.options, seed=int(seed) if seed else self.options.seed)
        overrides = (
            f'run.out_dir="{self.work / "runs" / name}"', f'model.name_or_path="{self.tiny_dir(pretraining)}"',
            f"model.image_size={pretrained['image_size']}", *overrides,
        )
        config = demo_train_config(options, self.shard_dir, *overrides)
        start, wall = cpu_seconds(), time.perf_counter()
        result = train(config, overwrite=True)
        if result.stopped_by is not None:  # a stopped run is not the arm: record nothing
            raise SystemExit(f"arm {name}: stopped by signal {result.stopped_by} at step {result.step}")
        train_cpu = cpu_seconds() - start
        model, tokenizer, _ = load_trained(config.run.out_dir)
        eval_options = EvalOptions(shards=str(self.shard_dir), max_images=self.options.eval_images, methods=EVAL_ROWS)
        results = evaluate(model, tokenizer, eval_options, torch.device("cpu")).results
        return self._add({
            "kind": "arm", "name": name, "pretraining": pretraining, "overrides": list(overrides[3:]), "seed": options.seed,
            "last_loss": result.metrics.get("loss"), "val_loss": result.metrics.get("val_loss"),
            "train_cpu_s": round(train_cpu, 1), "cpu_s": round(cpu_seconds() - start, 1),
            "wall_s": round(time.perf_counter() - wall, 1), "results": {**results, **pretrained["results"]},
        })


SUMMARY_KEYS = {  # table column -> (row, metric)
    "box": ("focus", "box_accuracy"), "phr@1": ("focus", "phrase_r1"),
    "crop box": ("crop", "box_accuracy"), "crop phr@1": ("crop", "phrase_r1"),
    "whole cls@1": ("focus_whole", "zero_shot_top1"), "untrained cls@1": ("whole_image", "zero_shot_top1"),
    "whole r>p@1": ("focus_whole", "region_to_phrase_r1"), "untrained r>p@1": ("whole_image", "region_to_phrase_r1"),
    "whole p>r@1": ("focus_whole", "phrase_to_region_r1"), "untrained p>r@1": ("whole_image", "phrase_to_region_r1"),
}


def summary(row: dict) -> dict:
    results = row["results"]
    return {column: round(results[method][metric], 3) for column, (method, metric) in SUMMARY_KEYS.items()}


def markdown_table(rows: list[dict]) -> str:
    """The arms as a Markdown table, in the order they ran."""
    arms = [r for r in rows if r["kind"] == "arm"]
    header = ["arm", "pretraining", *SUMMARY_KEYS, "CPU s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in arms:
        values = summary(row)
        lines.append("| " + " | ".join([row["name"], row["pretraining"], *(f"{values[k]:.3f}" for k in SUMMARY_KEYS), f"{row['cpu_s']:.0f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/recipe-sweep"))
    parser.add_argument("--arms", default="demo", help=f"comma list (NAME or NAME@SEED) of: {', '.join(ARMS)}")
    parser.add_argument("--images", type=int, default=DemoOptions.images)
    parser.add_argument("--steps", type=int, default=DemoOptions.steps)
    parser.add_argument("--pretrain-steps", type=int, default=DemoOptions.pretrain_steps)
    parser.add_argument("--record", action="store_true", help="write every row of WORK to benchmarks/results/")
    parser.add_argument("--table", action="store_true", help="print every arm of WORK as a Markdown table, run nothing")
    args = parser.parse_args(argv)
    names = [n for n in args.arms.split(",") if n]
    unknown = [n for n in names if n.partition("@")[0] not in ARMS]
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r}")
    options = DemoOptions(out_dir=args.work / "demo", images=args.images, steps=args.steps, pretrain_steps=args.pretrain_steps)
    sweep = Sweep(args.work, options)
    if args.table:
        print(markdown_table(sweep.rows()))
        return
    sweep.data()
    with one_torch_thread():  # as fc demo trains and evaluates
        for name in names:
            row = sweep.arm(name)
            emit({"arm": name, **summary(row), "cpu_s": row["cpu_s"]})
    if args.record:
        path = RESULTS_DIR / f"{time.strftime('%Y-%m-%d')}-recipe-sweep.json"
        rows = sweep.rows()
        path.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(rows)} rows in {path}")


if __name__ == "__main__":
    main()
