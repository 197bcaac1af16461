"""Which fine-tuning recipe makes `fc demo`'s Focus-CLIP beat its own crop baseline (issue 12).

The demo's data (fctrain.demo.make_demo_data: 600 generated images, 10% val) is generated and
sharded once, and each pretraining of the tiny CLIP (fctrain.pretrain) runs once; every arm then
fine-tunes from that tiny model with the demo's recipe plus the arm's overrides, so an arm costs
one fine-tuning and one evaluation. Per arm: box selection and phrase selection of the box-alpha
model (`focus`), whole-image retrieval and zero-shot classification of the same model with an
all-ones alpha (`focus_whole`), beside the untrained model's whole image and the crop baseline of
the same pretraining; and the CPU seconds of the fine-tuning + evaluation (this process and its
loader workers). Rows go to WORK/rows.jsonl as they finish (an arm already there is not rerun),
and `--record` writes every row of WORK to benchmarks/results/<date>-recipe-sweep.json (rows
already recorded there under other names are kept, beside the machine they were measured on).

The demo's val split is 61 images, 305 regions: one standard error of an accuracy is ~0.025, the
size of the differences the arms are after. `--holdout N` also evaluates every arm (and each
pretraining's baselines) on N more images that no run trains on: a second generated dataset
(seed + HOLDOUT_SEED_OFFSET, the same generator and quirks), all of it sharded as one split.

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
    # object_guided on the demo's pretraining: its paths' learning rate (alpha_lr_multiplier is
    # theirs in that architecture), views per image (same-image negatives are box selection's task).
    "og_pf_alpha_lr_1": ("crops+full", (OBJECT_GUIDED, "optim.alpha_lr_multiplier=1")),
    "og_pf_alpha_lr_20": ("crops+full", (OBJECT_GUIDED, "optim.alpha_lr_multiplier=20")),
    "og_pf_views_4": ("crops+full", (OBJECT_GUIDED, "data.regions_per_image=4")),
    "og_pf_views_8": ("crops+full", (OBJECT_GUIDED, "data.regions_per_image=8")),
    "og_pf_views_4_steps_600": ("crops+full", (OBJECT_GUIDED, "data.regions_per_image=4", "run.steps=600")),
    "og_pf_crop_scale_0.1": ("crops+full", (OBJECT_GUIDED, "data.crop_scale=[0.1, 1.0]")),
    "og_pf_crop_scale_0.8": ("crops+full", (OBJECT_GUIDED, "data.crop_scale=[0.8, 1.0]")),
    "og_pf_lr_1e-3": ("crops+full", (OBJECT_GUIDED, "optim.lr=1e-3")),
    "og_pf_logit_scale_100": ("crops+full", (OBJECT_GUIDED, "loss.logit_scale=100")),
    "og_pf_label_smoothing_0.1": ("crops+full", (OBJECT_GUIDED, "loss.label_smoothing=0.1")),
    # The demo's object-guided recipe (fctrain.demo.DEMO_OBJECT_GUIDED_RECIPE, 600 steps) is the last; before it.
    "og_pf_ls100_steps_600": ("crops+full", (OBJECT_GUIDED, "loss.logit_scale=100", "run.steps=600")),
    "og_pf_ls100_alpha_lr_20": ("crops+full", (OBJECT_GUIDED, "loss.logit_scale=100", "optim.alpha_lr_multiplier=20")),
    "og_pf_ls100_alpha_lr_20_steps_600": ("crops+full", (OBJECT_GUIDED, "loss.logit_scale=100", "optim.alpha_lr_multiplier=20", "run.steps=600")),
    "pre_full_96": ("crops+full@96", ()),
    "pre_full_128": ("crops+full@128", ()),
}

HOLDOUT_SEED_OFFSET = 1000  # the holdout dataset's synthesis seed, apart from the demo's
EVAL_ROWS = ("focus", "focus_whole")  # the trained model's rows
BASELINE_ROWS = ("untrained", "whole_image", "crop")  # the pretrained tiny model's: once per pretraining


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (loader and shard workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Sweep:
    def __init__(self, work: Path, options: DemoOptions, holdout_images: int = 0):
        self.work, self.options, self.holdout_images = work, options, holdout_images
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

    @property
    def holdout_dir(self) -> Path:
        return self.work / "holdout"

    def holdout_data(self) -> dict:
        """The holdout images (module doc), generated and sharded once, every image in "train"
        (val_fraction 0): the split name is only where the evaluation reads them from."""
        if done := self._done("data", "holdout"):
            return done
        from fcdata.options import ShardOptions, SynthOptions
        from fcdata.shard import shard_vg
        from fcdata.synth import generate_vg
        from fcdata.synth_coco import INSTANCES_FILE

        start, wall = cpu_seconds(), time.perf_counter()
        vg_root = self.holdout_dir / "vg"
        seed = self.options.seed + HOLDOUT_SEED_OFFSET
        synth = generate_vg(vg_root, SynthOptions(num_images=self.holdout_images, seed=seed, quirks=True, workers=self.options.workers))
        shard_options = ShardOptions(shard_samples=64, val_fraction=0.0, workers=self.options.workers, coco_instances=(str(vg_root / INSTANCES_FILE),))
        shard_vg(vg_root, self.holdout_dir / "shards", shard_options)
        return self._add({
            "kind": "data", "name": "holdout", "images": synth.images_written, "seed": seed,
            "cpu_s": round(cpu_seconds() - start, 1), "wall_s": round(time.perf_counter() - wall, 1),
        })

    def _eval_options(self, methods: tuple[str, ...], holdout: bool) -> EvalOptions:
        if holdout:
            return EvalOptions(shards=str(self.holdout_dir / "shards"), split="train", max_images=self.holdout_images, methods=methods)
        return EvalOptions(shards=str(self.shard_dir), max_images=self.options.eval_images, methods=methods)

    def holdout(self, name: str, kind: str) -> dict:
        """The holdout rows of an arm (its saved run) or a pretraining (its baselines)."""
        if done := self._done(f"holdout_{kind}", name):
            return done
        import torch

        from fctrain.evaluation.regions import evaluate

        self.holdout_data()
        start = cpu_seconds()
        if kind == "arm":
            from fctrain.checkpoint import load_trained

            model, tokenizer, _ = load_trained(self.work / "runs" / name)
            methods = EVAL_ROWS
        else:
            model, tokenizer = self._base_model(name, self.pretrain(name)["image_size"])
            methods = BASELINE_ROWS
        results = evaluate(model, tokenizer, self._eval_options(methods, holdout=True), torch.device("cpu")).results
        return self._add({"kind": f"holdout_{kind}", "name": name, "cpu_s": round(cpu_seconds() - start, 1), "results": results})

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

    def _base_model(self, pretraining: str, size: int):
        from fctrain.config import LoraConfig, ModelConfig
        from fctrain.model import build_model

        return build_model(ModelConfig(name_or_path=str(self.tiny_dir(pretraining)), image_size=size), LoraConfig(), None)

    def _evaluate_base(self, pretraining: str, size: int) -> dict:
        import torch

        from fctrain.evaluation.regions import evaluate

        model, tokenizer = self._base_model(pretraining, size)
        return evaluate(model, tokenizer, self._eval_options(BASELINE_ROWS, holdout=False), torch.device("cpu")).results

    def fine_tune(self, name: str, arms: dict[str, tuple[str, tuple[str, ...]]]) -> "FineTuned":
        """Fine-tune arm `name` of `arms` from its pretrained tiny CLIP. NAME@SEED runs arm NAME
        with another run seed (LoRA init and data order; the tiny model is the same)."""
        from fctrain.checkpoint import load_trained
        from fctrain.demo import demo_train_config
        from fctrain.train import train

        base, _, seed = name.partition("@")
        pretraining, overrides = arms[base]
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
        fields = {
            "kind": "arm", "name": name, "pretraining": pretraining, "overrides": list(overrides[3:]), "seed": options.seed,
            "last_loss": result.metrics.get("loss"), "val_loss": result.metrics.get("val_loss"),
            "train_cpu_s": round(train_cpu, 1),
        }
        return FineTuned(model, tokenizer, config, fields, start, wall, pretrained)

    def arm(self, name: str) -> dict:
        """Fine-tune arm `name` (see fine_tune) and evaluate it on the demo's validation split."""
        if done := self._done("arm", name):
            return done
        import torch

        from fctrain.evaluation.regions import evaluate

        tuned = self.fine_tune(name, ARMS)
        results = evaluate(tuned.model, tuned.tokenizer, self._eval_options(EVAL_ROWS, holdout=False), torch.device("cpu")).results
        return self._add({
            **tuned.fields, "cpu_s": round(cpu_seconds() - tuned.start_cpu, 1),
            "wall_s": round(time.perf_counter() - tuned.start_wall, 1), "results": {**results, **tuned.pretrained["results"]},
        })


@dataclasses.dataclass
class FineTuned:
    """An arm's fine-tuned model and what its row records of the run."""

    model: object
    tokenizer: object
    config: object  # its TrainConfig
    fields: dict  # the row's run fields (kind, name, overrides, losses, train_cpu_s)
    start_cpu: float  # cpu_seconds() when its training began
    start_wall: float
    pretrained: dict  # its pretraining's row


SUMMARY_KEYS = {  # table column -> (row, metric)
    "box": ("focus", "box_accuracy"), "phr@1": ("focus", "phrase_r1"),
    "crop box": ("crop", "box_accuracy"), "crop phr@1": ("crop", "phrase_r1"),
    "whole cls@1": ("focus_whole", "zero_shot_top1"), "untrained cls@1": ("whole_image", "zero_shot_top1"),
    "whole r>p@1": ("focus_whole", "region_to_phrase_r1"), "untrained r>p@1": ("whole_image", "region_to_phrase_r1"),
    "whole p>r@1": ("focus_whole", "phrase_to_region_r1"), "untrained p>r@1": ("whole_image", "phrase_to_region_r1"),
}


HOLDOUT_KEYS = {  # holdout table column -> (row, metric)
    "hold box": ("focus", "box_accuracy"), "hold phr@1": ("focus", "phrase_r1"),
    "hold crop box": ("crop", "box_accuracy"), "hold crop phr@1": ("crop", "phrase_r1"),
}


def summary(row: dict, holdout: dict | None = None) -> dict:
    """An arm's table values; `holdout` is the arm's and its pretraining's holdout results merged."""
    values = {column: round(row["results"][method][metric], 3) for column, (method, metric) in SUMMARY_KEYS.items()}
    if holdout:
        values.update({column: round(holdout[method][metric], 3) for column, (method, metric) in HOLDOUT_KEYS.items()})
    return values


def holdout_results(rows: list[dict], arm: dict) -> dict | None:
    found = {(r["kind"], r["name"]): r["results"] for r in rows if r["kind"].startswith("holdout_")}
    mine, base = found.get(("holdout_arm", arm["name"])), found.get(("holdout_pretrain", arm["pretraining"]))
    return merged_holdout(mine, base) if mine and base else None


def merged_holdout(arm: dict, pretraining: dict) -> dict:
    """The trained model's rows from the arm's holdout results, the baselines from its pretraining's."""
    return {**{m: arm[m] for m in EVAL_ROWS}, **{m: pretraining[m] for m in BASELINE_ROWS}}


def markdown_table(rows: list[dict]) -> str:
    """The arms as a Markdown table, in the order they ran; holdout columns when any arm has them."""
    arms = [r for r in rows if r["kind"] == "arm"]
    holdouts = [holdout_results(rows, r) for r in arms]
    columns = [*SUMMARY_KEYS, *(HOLDOUT_KEYS if any(holdouts) else ())]
    header = ["arm", "pretraining", *columns, "CPU s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row, holdout in zip(arms, holdouts):
        values = summary(row, holdout)
        cells = [f"{values[k]:.3f}" if k in values else "" for k in columns]
        lines.append("| " + " | ".join([row["name"], row["pretraining"], *cells, f"{row['cpu_s']:.0f}"]) + " |")
    return "\n".join(lines)


def record(rows: list[dict], path: Path) -> None:
    """Write WORK's rows to `path`; the rows already there under names WORK does not have stay, in
    "earlier" with the machine they were measured on (a work folder is not kept between sessions)."""
    earlier = []
    if path.is_file():
        before = json.loads(path.read_text())
        ours = {(r["kind"], r["name"]) for r in rows}
        for block in [{"machine": before["machine"], "rows": before["rows"]}, *before.get("earlier", [])]:
            kept = [r for r in block["rows"] if (r["kind"], r["name"]) not in ours]
            if kept:
                earlier.append({"machine": block["machine"], "rows": kept})
    payload = {"machine": machine_info(), "rows": rows, **({"earlier": earlier} if earlier else {})}
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    temporary.replace(path)


def sweep_parser(description: str, work: str, arms_default: str, arms_help: str) -> argparse.ArgumentParser:
    """The options every sweep takes (this one and fcbench.relation_sweep)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", type=Path, default=Path(work))
    parser.add_argument("--arms", default=arms_default, help=arms_help)
    parser.add_argument("--images", type=int, default=DemoOptions.images)
    parser.add_argument("--steps", type=int, default=DemoOptions.steps)
    parser.add_argument("--pretrain-steps", type=int, default=DemoOptions.pretrain_steps)
    parser.add_argument("--record", action="store_true", help="write every row of WORK to benchmarks/results/")
    parser.add_argument("--table", action="store_true", help="print the rows of WORK as a Markdown table, run nothing")
    return parser


def sweep_options(args: argparse.Namespace) -> DemoOptions:
    """The demo's options a sweep's data, pretraining and arms are made with (WORK/demo)."""
    return DemoOptions(out_dir=args.work / "demo", images=args.images, steps=args.steps, pretrain_steps=args.pretrain_steps)


def record_results(rows: list[dict], name: str) -> None:
    """`record` the rows as benchmarks/results/<date>-NAME.json."""
    path = RESULTS_DIR / f"{time.strftime('%Y-%m-%d')}-{name}.json"
    record(rows, path)
    print(f"recorded {len(rows)} rows in {path}")


def main(argv: list[str] | None = None) -> None:
    parser = sweep_parser(__doc__.split("\n\n")[0], "runs/recipe-sweep", "demo", f"comma list (NAME or NAME@SEED) of: {', '.join(ARMS)}")
    parser.add_argument("--holdout", type=int, default=0, help="also evaluate on this many images no run trains on (module doc)")
    args = parser.parse_args(argv)
    names = [n for n in args.arms.split(",") if n]
    unknown = [n for n in names if n.partition("@")[0] not in ARMS]
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r}")
    sweep = Sweep(args.work, sweep_options(args), args.holdout)
    if args.table:
        print(markdown_table(sweep.rows()))
        return
    sweep.data()
    with one_torch_thread():  # as fc demo trains and evaluates
        for name in names:
            row = sweep.arm(name)
            holdout = None
            if args.holdout:
                holdout = merged_holdout(sweep.holdout(name, "arm")["results"], sweep.holdout(row["pretraining"], "pretrain")["results"])
            emit({"arm": name, **summary(row, holdout), "cpu_s": row["cpu_s"]})
    if args.record:
        record_results(sweep.rows(), "recipe-sweep")


if __name__ == "__main__":
    main()
