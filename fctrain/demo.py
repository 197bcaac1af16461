"""The quick start on an embedded default, offline: generate a Visual-Genome-format dataset (with
VG's quirks planted), shard it, create and pretrain a tiny CLIP, fine-tune it with LoRA twice (as
Object-Guided CLIP, the exported model, and with Alpha-CLIP's alpha conv), evaluate both beside
the training-free baselines, draw pictures, export the model.
The generated scenes plant spatial relations ("red circle left of blue square"): the alpha-conv
fine-tuning mixes relation views in (DEMO_RELATION_SETTINGS) and the evaluation adds relation
selection and swap accuracy for that model (fctrain.evaluation.relations).

The tiny model stands in for CLIP (fctrain.pretrain), so the run takes minutes on two cores; its
settings (64 px, LoRA lr 5e-4, alpha conv 4x) are the ones this pipeline was measured with.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from fcdata.options import ShardOptions, SynthOptions
from fcdata.shard import ShardProgress, ShardSummary, shard_vg
from fcdata.synth import SynthReport, generate_vg
from fcdata.synth_coco import INSTANCES_FILE
from fctrain.config import DemoOptions, EvalOptions, TrainConfig, load_config
from fctrain.evaluation.regions import EvalReport, evaluate
from fctrain.evaluation.relations import RelationEvalOptions, evaluate_relations
from fctrain.train import TrainProgress, TrainResult, train


# The object-guided fine-tuning's settings on top of demo_train_config, for DemoOptions.object_guided_steps
# (600) steps: the softmax temperature fixed at 100 (the tiny CLIP's pretraining ends at 13.6) and its
# fresh paths at 20x the LoRA rate (the alpha conv's 4x is too slow for convs trained from scratch).
# Box / phrase selection, seeds 0 and 1: 0.885 / 0.869 and 0.869 / 0.866 (crop 0.875 / 0.852); on
# 200 holdout images 0.845 / 0.839 and 0.835 / 0.838 (crop 0.837 / 0.812). Temperature alone:
# 0.875 / 0.849 and 0.875 / 0.856 (benchmarks/results/2026-12-02-recipe-sweep.md).
DEMO_OBJECT_GUIDED_RECIPE: tuple[str, ...] = ("loss.logit_scale=100", "optim.alpha_lr_multiplier=20")

# Relation views in the alpha-conv model's fine-tuning, with LoRA on the text tower too
# (NegCLIP's lever: a frozen tower's "A p B" and "B p A" differ too little to learn from).
# Measured on this demo, seed 0, 300 steps (benchmarks/results/2026-12-02-relation-sweep.md):
# swap accuracy 0.812 +- 0.020 on 389 validation relations (subject alpha 0.805, union methods
# 0.5), box selection 0.551 (0.544 without relation views); frozen text tower 0.717 (subject
# 0.730); object weight 0.5 0.763; ratio 1 0.810 with box 0.531.
DEMO_RELATION_RATIO = 0.5
DEMO_RELATION_WEIGHTS = (1.0, 0.25, 0.0)  # subject, object, background
DEMO_RELATION_SETTINGS = (
    f"data.relation_ratio={DEMO_RELATION_RATIO}", f"data.relation_weights={list(DEMO_RELATION_WEIGHTS)}",
    'lora.text_targets=["q_proj", "k_proj", "v_proj", "out_proj"]',
)


@dataclass
class DemoResult:
    vg_root: Path
    shard_dir: Path
    synth: SynthReport
    shards: ShardSummary
    training: TrainResult  # the alpha-conv fine-tuning (its run folder holds the tiny CLIP)
    evaluation: EvalReport
    relations: dict  # fctrain.evaluation.relations.evaluate_relations' report
    object_guided: TrainResult | None = None  # the object-guided fine-tuning, when it ran

    @property
    def exported_run(self) -> Path:
        """The run the demo exports: the object-guided one when it ran (its box and phrase selection
        lead the table), else the alpha-conv one."""
        return (self.object_guided or self.training).run_dir


def demo_train_config(options: DemoOptions, shard_dir: Path, *overrides: str) -> TrainConfig:
    workers = min(2, options.workers) if options.workers else 2
    return load_config(None, [
        f'data.shards="{shard_dir}"', f'run.out_dir="{options.out_dir / "run"}"', f"run.steps={options.steps}",
        f"run.seed={options.seed}", f"data.seed={options.seed}", 'model.name_or_path="tiny"', "model.image_size=64",
        # Half the pretraining images also whole (with a region's caption), as CLIP saw whole images:
        # +0.01-0.04 box selection for both architectures (benchmarks/results/2026-12-02-recipe-sweep.md).
        f"model.tiny_pretrain_steps={options.pretrain_steps}", "model.tiny_pretrain_full_images=0.5",
        "data.batch_size=64", f"data.workers={workers}",
        "optim.lr=5e-4", "optim.alpha_lr_multiplier=4", "optim.warmup_steps=30", "run.log_every=25",
        "run.val_every=100", "run.val_batches=5", f"checkpoint.every_steps={options.steps}", *overrides,
    ])


def make_demo_data(
    options: DemoOptions, synth_progress: Callable[[int], None] | None = None, shard_progress: ShardProgress | None = None,
) -> tuple[Path, Path, SynthReport, ShardSummary]:
    """The demo's dataset (OUT/vg) and its shards (OUT/shards): what every demo run and the recipe
    sweep (benchmarks/recipe_sweep.py) train and evaluate on."""
    vg_root, shard_dir = options.out_dir / "vg", options.out_dir / "shards"
    synth = generate_vg(vg_root, SynthOptions(num_images=options.images, seed=options.seed, quirks=True, workers=options.workers), synth_progress)
    # The synthetic COCO file gives the object regions of half the images their true shapes.
    shard_options = ShardOptions(
        shard_samples=64, val_fraction=0.1, workers=options.workers,
        coco_instances=(str(vg_root / INSTANCES_FILE),),
    )
    return vg_root, shard_dir, synth, shard_vg(vg_root, shard_dir, shard_options, shard_progress)


def run_demo(
    options: DemoOptions,
    synth_progress: Callable[[int], None] | None = None,
    shard_progress: ShardProgress | None = None,
    train_progress: TrainProgress | None = None,
    eval_progress: Callable[[str], None] | None = None,
) -> DemoResult:
    vg_root, shard_dir, synth, shards = make_demo_data(options, synth_progress, shard_progress)
    config = demo_train_config(options, shard_dir, *DEMO_RELATION_SETTINGS)
    with one_torch_thread():
        training = train(config, train_progress, overwrite=True)  # OUT/run is the demo's own: run again, it starts over
        from fctrain.checkpoint import load_trained

        model, tokenizer, _ = load_trained(config.run.out_dir)
        eval_options = EvalOptions(shards=str(shard_dir), max_images=options.eval_images)
        report = evaluate(model, tokenizer, eval_options, model.logit_scale.device, eval_progress)
        guided_training = None
        if options.object_guided:
            guided_training, guided = _object_guided_rows(options, shard_dir, config, eval_options, train_progress)
            rows = list(report.results.items())
            after = 1 + max(i for i, (method, _) in enumerate(rows) if method.startswith("focus"))  # beside the focus rows
            report.results = dict(rows[:after] + list(guided.items()) + rows[after:])
        if eval_progress:
            eval_progress("relations")
        relation_options = RelationEvalOptions(
            shards=str(shard_dir), max_images=options.eval_images, weights=tuple(config.data.relation_weights)
        )
        relations = evaluate_relations(model, tokenizer, relation_options)  # the model trained with relation views
        relations["model"] = f"Focus-CLIP alpha conv, relation_ratio {DEMO_RELATION_RATIO:g}, text LoRA"
    return DemoResult(vg_root, shard_dir, synth, shards, training, report, relations, guided_training)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """PyTorch's intra-op threads off while the tiny model trains and is evaluated on CPU. Its ops
    are too small to split, so a second thread only waits at every op's barrier for a core the
    loader workers (or anything else) hold: measured under load, its pretraining took 9 CPU
    minutes with 2 threads and 69 s with 1 (benchmarks/results/2026-12-02-recipe-sweep.md)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _object_guided_rows(
    options: DemoOptions, shard_dir: Path, first: TrainConfig, eval_options: EvalOptions, progress,
) -> tuple[TrainResult, dict]:
    """The focus and focus_whole rows of the object_guided architecture (as focus_object_guided,
    focus_whole_object_guided), fine-tuned from the first run's tiny CLIP (its pretraining is not
    repeated) with the demo's recipe and DEMO_OBJECT_GUIDED_RECIPE, in OUT/run-object-guided."""
    from fctrain.checkpoint import load_trained

    tiny = Path(first.run.out_dir) / "tiny-model"
    steps = options.object_guided_steps
    config = demo_train_config(
        options, shard_dir, f'run.out_dir="{options.out_dir / "run-object-guided"}"', f'model.name_or_path="{tiny}"',
        'model.architecture="object_guided"', f"run.steps={steps}", f"checkpoint.every_steps={steps}", *DEMO_OBJECT_GUIDED_RECIPE,
    )
    training = train(config, progress, overwrite=True)
    model, tokenizer, _ = load_trained(config.run.out_dir)
    methods = ("focus", "focus_whole")
    results = evaluate(model, tokenizer, dataclasses.replace(eval_options, methods=methods), model.logit_scale.device).results
    return training, {f"{method}_object_guided": results[method] for method in methods}
