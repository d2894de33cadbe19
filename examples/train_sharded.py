"""Fine-tune X-MOD with data, FSDP and tensor parallelism at once, on 8 simulated CPU devices.

    python examples/train_sharded.py [--steps 300]

It places one small random XmodForSequenceClassification (hidden 64, 2 layers, 4 languages) by
each sharding preset and prints the parameter and optimizer-state bytes that each device really
holds, counted from its shards. Then it fine-tunes on a `data 2 x fsdp 2 x tensor 2` mesh (the
synthetic sentiment task of `finetune_classification.py`, paper freezing, English lang ids) and
evaluates the held-out accuracy with a sharded eval step. The same code runs on one device, or
on 8 real ones: only the mesh changes. On a 2-core CPU it takes about 25 s; measured there, the
loss (mean of 10 steps) falls from 0.69 to 0.46 and held-out accuracy is 0.87 (chance: 0.5).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from finetune_classification import make_task

import xmod_jax as xj
from xmod_jax import parallel as xp
from xmod_jax.train.steps import batch_indices

LANGUAGES = ["en_XX", "de_DE", "sw_KE", "fr_XX"]
# (preset, lang axis, data, fsdp, tensor)
LAYOUTS = [
    ("data", None, 8, 1, 1),
    ("fsdp", None, 1, 8, 1),
    ("fsdp_tensor", None, 2, 2, 2),
    ("fsdp_tensor", "fsdp", 1, 4, 2),
]
TRAIN_LAYOUT = LAYOUTS[2]


def build_model() -> tuple[xj.XmodForSequenceClassification, dict]:
    config = xj.XmodConfig(
        vocab_size=200,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=40,
        type_vocab_size=1,
        languages=LANGUAGES,
        num_labels=2,
    )
    model = xj.XmodForSequenceClassification(config)
    return model, model.init_params(jax.random.key(0))


def layout_name(preset: str, lang: str | None, *shape: int) -> str:
    return f"{preset}{f' (lang over {lang})' if lang else ''} {'x'.join(map(str, shape))}"


def run(steps: int = 300, batch_size: int = 32, quiet: bool = False) -> dict:
    """Measure per-device bytes per layout, then fine-tune on `TRAIN_LAYOUT`."""
    model, params = build_model()
    tx = xj.make_optimizer(params, learning_rate=2e-3, warmup_steps=steps // 10, total_steps=steps)
    labels = xj.freeze_labels(params, "xmod_paper")
    state = xj.TrainState.create(params, tx, seed=0)

    held = {}
    for preset, lang, *shape in LAYOUTS:
        mesh, rules = xp.make_mesh(*shape), xp.sharding_rules(preset, lang=lang)
        placed = xp.shard(state, xp.train_state_shardings(state, model, mesh, rules))
        held[layout_name(preset, lang, *shape)] = {
            "params": max(xp.bytes_per_device(placed.params).values()),
            "opt_state": max(xp.bytes_per_device(placed.opt_state).values()),
        }

    preset, lang, *shape = TRAIN_LAYOUT
    mesh, rules = xp.make_mesh(*shape), xp.sharding_rules(preset, lang=lang)
    shardings = xp.train_state_shardings(state, model, mesh, rules)
    train_step = xp.shard_train_step(xj.make_train_step(model, tx, labels), shardings, mesh, rules)
    eval_step = xp.shard_forward(xj.make_eval_step(model), shardings.params, mesh, rules)
    state = xp.shard(state, shardings)
    train, test = make_task(2000, seed=1), make_task(512, seed=3)
    english = np.full(batch_size, model.config.lang_ids("en_XX"))
    losses = []
    for step in range(steps):
        idx = batch_indices(0, step, len(train["labels"]), batch_size)
        batch = {**{k: v[idx] for k, v in train.items()}, "lang_ids": english}
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
    test["lang_ids"] = np.full(len(test["labels"]), model.config.lang_ids("en_XX"))
    accuracy = float(eval_step(state.params, test)["accuracy"])

    result = {"bytes": held, "losses": losses, "accuracy": accuracy, "devices": mesh.size}
    if not quiet:
        total = sum(x.nbytes for x in jax.tree.leaves(params))
        print(f"{jax.device_count()} devices; params {total:,} bytes in all. Held per device:")
        for name, sizes in held.items():
            print(f"  {name:<36} params {sizes['params']:>9,}  optimizer {sizes['opt_state']:>9,}")
        print(
            f"fine-tuned on {layout_name(*TRAIN_LAYOUT)}: loss {np.mean(losses[:10]):.3f} -> "
            f"{np.mean(losses[-10:]):.3f}, held-out accuracy {accuracy:.3f}"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    jax.config.update("jax_num_cpu_devices", 8)  # before the first use of a device
    run(steps=args.steps)


if __name__ == "__main__":
    main()
