"""Which recipe makes `fc demo`'s model tell "A left of B" from "B left of A" (issue 11).

The demo's data and the tiny CLIP's pretrainings come from fcbench.recipe_sweep's Sweep (made
once, under WORK/demo and WORK/pretrain-*); every arm fine-tunes from a pretrained tiny model with
the demo's recipe plus the arm's overrides and is scored on:
- the relation benchmark (fctrain.evaluation.relations) on the validation images and on as many
  TRAINING images (is the objective learned at all, before asking whether it generalises), with
  the number of relations and the standard error of the swap accuracy;
- box selection of the same model (`focus`; a relation recipe must not cost region accuracy);
- the text tower's word order: mean cosine of "A p B" with "B p A" (the inverse phrases the
  loss uses as negatives) over the validation relations, beside the mean cosine of two unrelated
  relation phrases; after fine-tuning, so an arm that trains the text tower shows its effect;
- CPU seconds of the fine-tuning and of the evaluation (this process and its loader workers).
Rows go to WORK/relation-rows.jsonl as they finish (an arm already there is not rerun).

    python -m fcbench.relation_sweep --work /tmp/rel --arms ratio_0.5,ratio_1_train --record
"""

from __future__ import annotations

import sys
from pathlib import Path

from fcbench.common import emit
from fcbench.recipe_sweep import PRETRAININGS, Sweep, cpu_seconds, record_results, sweep_options, sweep_parser
from fctrain.config import DemoOptions
from fctrain.demo import one_torch_thread

OBJECT_GUIDED = 'model.architecture="object_guided"'
TEXT_LORA = 'lora.text_targets=["q_proj", "k_proj", "v_proj", "out_proj"]'
# Arm -> (pretraining of fcbench.recipe_sweep.PRETRAININGS, overrides of the demo's training config).
ARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ratio_0": ("crops+full", ("data.relation_ratio=0.0",)),
    "ratio_0.5": ("crops+full", ("data.relation_ratio=0.5",)),
    "ratio_1": ("crops+full", ("data.relation_ratio=1.0",)),
    "ratio_1_steps_900": ("crops+full", ("data.relation_ratio=1.0", "run.steps=900")),
    "ratio_0.5_text": ("crops+full", ("data.relation_ratio=0.5", TEXT_LORA)),
    "ratio_1_text": ("crops+full", ("data.relation_ratio=1.0", TEXT_LORA)),
    "ratio_0.5_og": ("crops+full", ("data.relation_ratio=0.5", OBJECT_GUIDED)),
    "ratio_0.5_og_text": ("crops+full", ("data.relation_ratio=0.5", OBJECT_GUIDED, TEXT_LORA)),
    "ratio_1_scale_100": ("crops+full", ("data.relation_ratio=1.0", "loss.logit_scale=100")),
    "ratio_1_text_scale_100": ("crops+full", ("data.relation_ratio=1.0", TEXT_LORA, "loss.logit_scale=100")),
    "ratio_0.5_scale_100": ("crops+full", ("data.relation_ratio=0.5", "loss.logit_scale=100")),
    "ratio_0.5_text_scale_100": ("crops+full", ("data.relation_ratio=0.5", TEXT_LORA, "loss.logit_scale=100")),
    "ratio_0_scale_100": ("crops+full", ("data.relation_ratio=0.0", "loss.logit_scale=100")),
    "ratio_1_w0.25": ("crops+full", ("data.relation_ratio=1.0", "data.relation_weights=[1.0, 0.25, 0.0]")),
    "ratio_0.5_w0.25_text": ("crops+full", ("data.relation_ratio=0.5", "data.relation_weights=[1.0, 0.25, 0.0]", TEXT_LORA)),
    "ratio_1_w0.25_text": ("crops+full", ("data.relation_ratio=1.0", "data.relation_weights=[1.0, 0.25, 0.0]", TEXT_LORA)),
    "ratio_0.5_w0.25": ("crops+full", ("data.relation_ratio=0.5", "data.relation_weights=[1.0, 0.25, 0.0]")),
    "ratio_1_og": ("crops+full", ("data.relation_ratio=1.0", OBJECT_GUIDED)),
    "ratio_1_text_og": ("crops+full", ("data.relation_ratio=1.0", TEXT_LORA, OBJECT_GUIDED)),
}


class RelationSweep(Sweep):
    def __init__(self, work: Path, options: DemoOptions):
        super().__init__(work, options)
        self.rows_file = work / "relation-rows.jsonl"

    def arm(self, name: str) -> dict:
        if done := self._done("arm", name):
            return done
        tuned = self.fine_tune(name, ARMS)
        row = {**tuned.fields, **self.scores(tuned.model, tuned.tokenizer, tuned.config.data.relation_weights)}
        row["cpu_s"] = round(cpu_seconds() - tuned.start_cpu, 1)
        return self._add(row)

    def base_row(self, pretraining: str) -> dict:
        """The pretrained tiny model's scores with a zero mask module (no fine-tuning): the baselines'
        model, and its text tower's word order before any arm trains it."""
        if done := self._done("base", pretraining):
            return done
        from fctrain.evaluation.relations import RelationEvalOptions

        model, tokenizer = self._base_model(pretraining, self.pretrain(pretraining)["image_size"])
        start = cpu_seconds()
        row = {"kind": "base", "name": pretraining, **self.scores(model, tokenizer, RelationEvalOptions.weights, box=False)}
        row["cpu_s"] = round(cpu_seconds() - start, 1)
        return self._add(row)

    def scores(self, model, tokenizer, weights, box: bool = True) -> dict:
        import torch

        from fctrain.evaluation.regions import evaluate
        from fctrain.evaluation.relations import RelationEvalOptions, evaluate_relations

        start = cpu_seconds()
        out = {}
        for split in ("val", "train"):
            options = RelationEvalOptions(
                shards=str(self.shard_dir), split=split, max_images=self.options.eval_images, weights=tuple(weights)
            )
            report = evaluate_relations(model, tokenizer, options)
            out[f"relations_{split}"] = report["methods"]
            out[f"graded_{split}"] = report["graded_control"]["object_similarity"]
        if box:
            eval_options = self._eval_options(("focus",), holdout=False)
            out["box"] = evaluate(model, tokenizer, eval_options, torch.device("cpu")).results["focus"]["box_accuracy"]
        out["text_order"] = text_order(model, tokenizer, str(self.shard_dir), self.options.eval_images)
        out["eval_cpu_s"] = round(cpu_seconds() - start, 1)
        return out


def text_order(model, tokenizer, shards: str, max_images: int) -> dict:
    """Mean cosine of each validation relation phrase with its inverse ("B p A"), and of
    consecutive unrelated relation phrases, under the model's text tower."""
    import torch

    from fctrain.evaluation.relations import RelationEvalOptions, inverse_phrases
    from fctrain.evaluation.scoring import text_features

    phrases, inverses = inverse_phrases(RelationEvalOptions(shards=shards, max_images=max_images))
    model.eval()
    with torch.inference_mode():
        a = text_features(model, tokenizer, phrases, 64, torch.device("cpu"))
        b = text_features(model, tokenizer, inverses, 64, torch.device("cpu"))
    return {
        "inverse_cosine": float((a * b).sum(-1).mean()),
        "unrelated_cosine": float((a * a.roll(7, 0)).sum(-1).mean()),
        "pairs": len(phrases),
    }


SUMMARY = {  # column -> (scores key, method, metric)
    "swap val": ("relations_val", "relation_alpha", "swap"),
    "SE": ("relations_val", "relation_alpha", "swap_se"),
    "n": ("relations_val", "relation_alpha", "relations"),
    "subject val": ("relations_val", "subject_alpha", "swap"),
    "swap train": ("relations_train", "relation_alpha", "swap"),
    "sel val": ("relations_val", "relation_alpha", "selection"),
}


def summary(row: dict) -> dict:
    values = {column: row[key][method][metric] for column, (key, method, metric) in SUMMARY.items()}
    values["box"] = row.get("box")
    values["cos inverse"] = row["text_order"]["inverse_cosine"]
    values["cos unrelated"] = row["text_order"]["unrelated_cosine"]
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in values.items()}


def markdown_table(rows: list[dict]) -> str:
    scored = [r for r in rows if r["kind"] in ("base", "arm")]
    columns = [*SUMMARY, "box", "cos inverse", "cos unrelated"]
    lines = ["| arm | " + " | ".join(columns) + " | CPU s |", "|" + " --- |" * (len(columns) + 2)]
    for row in scored:
        values = summary(row)
        cells = ["-" if values[c] is None else str(values[c]) for c in columns]
        lines.append(f"| {row['kind']}: {row['name']} | " + " | ".join(cells) + f" | {row['cpu_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    arms_help = f"comma list (NAME, NAME@SEED or base:PRETRAINING) of: {', '.join(ARMS)}"
    parser = sweep_parser(__doc__.split("\n\n")[0], "runs/relation-sweep", "ratio_0.5", arms_help)
    args = parser.parse_args(argv)
    names = [n for n in args.arms.split(",") if n]
    unknown = [n for n in names if (n[5:] not in PRETRAININGS if n.startswith("base:") else n.partition("@")[0] not in ARMS)]
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r}")
    sweep = RelationSweep(args.work, sweep_options(args))
    if args.table:
        print(markdown_table(sweep.rows()))
        return
    sweep.data()
    with one_torch_thread():  # as fc demo trains and evaluates
        for name in names:
            row = sweep.base_row(name[5:]) if name.startswith("base:") else sweep.arm(name)
            emit({"arm": name, **summary(row), "cpu_s": row["cpu_s"]})
            print(markdown_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
    if args.record:
        record_results(sweep.rows(), "relation-sweep")  # atomic; rows recorded before under other names stay


if __name__ == "__main__":
    main()
