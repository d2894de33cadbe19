"""X-MOD pre-training: masked language modelling with one adapter per language.

  make_pretrain_step   jitted MLM train step: dynamic masking inside jit, the vocabulary
                       projection at the masked positions only, the loss on them
  with_unigram_output_bias  the output bias set to the training text's unigram log-probabilities
  HeldOutMLM           per-language held-out sets with fixed masks: top-1 accuracy, perplexity,
                       the unigram baseline, and the text-language x adapter loss matrix
  PretrainConfig       steps, batch, schedule, evaluation and checkpoint cadence
  pretrain             the loop: orbax checkpoints, exact resume, progress bar, log.jsonl,
                       host data time as a fraction of step time; on one device, or on a mesh
                       through a `Placement` (`xmod_jax.parallel.MeshPlacement`)

Every batch mixes languages (`mlm_data.MixedLanguageBatches`): each row is routed to its own
adapter in one compiled call, which is the point of X-MOD. All parameters train during
pre-training (the paper freezes nothing then); the optimizer is `make_optimizer(freeze=None)`,
AdamW with RoBERTa's betas (0.9, 0.98), linear warmup, the peak held, then linear decay over
the last `decay_fraction` of the steps (warmup-stable-decay). Holding the peak matters at small
budgets: a tiny MLM first sits on a plateau where it predicts each language's unigram
distribution and ignores context, and a learning rate that decays from the end of warmup on
keeps it there for the whole run (seen on a 2,600-step run of the bundled model's size).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xmod_jax.config import XmodConfig
from xmod_jax.nn.losses import IGNORE_INDEX
from xmod_jax.train.checkpoints import TrainCheckpoints
from xmod_jax.train.freezing import freeze_labels
from xmod_jax.train.masking import MaskingSpec, mask_tokens
from xmod_jax.train.mlm_data import MixedLanguageBatches
from xmod_jax.train.optim import make_optimizer
from xmod_jax.train.steps import TrainState, make_train_step

Batch = dict[str, Any]
HELD_OUT_SEED = 1234  # HeldOutMLM's default: language n of a set draws its masks from key 1234 + n


def masking_transform(spec: MaskingSpec) -> Callable[[Batch, jax.Array], Batch]:
    """`(batch, key) -> batch` that masks `input_ids` and adds `logits_positions` and `labels`."""

    def prepare(batch: Batch, key: jax.Array) -> Batch:
        masked, positions, labels = mask_tokens(key, batch["input_ids"], spec)
        return {**batch, "input_ids": masked, "logits_positions": positions, "labels": labels}

    return prepare


def unigram_log_probs(rows: Any, spec: MaskingSpec) -> np.ndarray:
    """Add-one unigram log-probabilities float32 [V] of the regular tokens in `rows` (an array
    or a list / dict of arrays); specials and `<mask>` get the smallest log-probability."""
    counts = _regular_token_counts(rows, spec) + 1.0
    return np.log(counts / counts.sum()).astype(np.float32)


def _regular_token_counts(rows: Any, spec: MaskingSpec) -> np.ndarray:
    """Token counts float64 [V] of `rows` (an array, or a list / dict of arrays), with the
    specials and `<mask>` at 0."""
    arrays = rows.values() if isinstance(rows, dict) else rows
    arrays = [arrays] if isinstance(arrays, np.ndarray) else arrays
    counts = sum(np.bincount(np.ravel(a), minlength=spec.vocab_size) for a in arrays)
    counts = counts.astype(np.float64)
    counts[[*spec.special_ids, spec.mask_id]] = 0.0
    return counts


def with_unigram_output_bias(params: Any, log_probs: np.ndarray) -> Any:
    """MLM params whose output bias (`lm_head/bias`, [V]) is the centred `log_probs`.

    A fresh model predicts a uniform distribution and AdamW moves each bias by about the learning
    rate per step, so reaching the unigram distribution (biases spread over ~10 nats) takes
    thousands of steps of a short run; starting there lets the steps go to context."""
    bias = params["lm_head"]["bias"]
    if bias.shape != log_probs.shape:
        raise ValueError(f"log_probs {log_probs.shape} do not fit lm_head/bias {bias.shape}")
    centred = jnp.asarray(log_probs - log_probs.mean(), bias.dtype)
    return {**params, "lm_head": {**params["lm_head"], "bias": centred}}


def make_pretrain_step(
    model: Any, tx: optax.GradientTransformation, labels: Any, spec: MaskingSpec
):
    """`train_step(state, batch) -> (state, {"loss", "grad_norm"})` on unmasked packed rows
    (`MixedLanguageBatches.batch`); masks are drawn inside jit from the state's key and step."""
    return make_train_step(model, tx, labels, prepare_batch=masking_transform(spec))


def make_mlm_eval_step(model: Any):
    """Jitted `(params, batch) -> per-row {"loss_sum", "correct", "count"}` (float32 / int32 [B])
    for a batch that already holds masked `input_ids`, `logits_positions` and `labels` [B, K]."""

    def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model.apply({"params": params}, **inputs).logits.astype(jnp.float32)
        labels = batch["labels"]
        keep = labels != IGNORE_INDEX
        safe = jnp.where(keep, labels, 0)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
        correct = (jnp.argmax(logits, -1) == safe) & keep
        return {
            "loss_sum": jnp.sum(jnp.where(keep, losses, 0.0), axis=1),
            "correct": jnp.sum(correct, axis=1),
            "count": jnp.sum(keep, axis=1),
        }

    return jax.jit(eval_step)


class HeldOutMLM:
    """Fixed-mask held-out MLM sets, one per language.

    rows: {code: int [N, S]} packed held-out rows; masks are drawn once from `seed`, so every
    evaluation scores the same positions. `spec.rate` of the tokens are picked as in training,
    but every picked token becomes `<mask>` (no random or kept ones, which a model could score
    by copying its input). `evaluate(params)` gives, per code, "loss" (mean cross-entropy over
    masked tokens), "perplexity" (its exp), "accuracy" (top-1) and "tokens". `adapter=` routes
    every language through one adapter instead of its own; `shuffled=True` scores the same
    masked tokens with each row's other tokens in a fixed random order, so `loss(shuffled) -
    loss` ("context_gain" in `pretrain`'s log) measures how much the model uses word order (0
    for a model that predicts from the bag of words or the unigram distribution). All languages
    share the batches, each row through its own adapter, or through `adapters[code]` where given
    (e.g. every language through the one adapter of a shared baseline). Language n (in sorted
    order) draws its masks from key `seed + n`, or from `seed[code]` when `seed` is a dict: the
    same masks for a language whichever other languages a set holds.
    """

    def __init__(
        self,
        model: Any,
        rows: dict[str, np.ndarray],
        spec: MaskingSpec,
        *,
        pad_id: int,
        batch_size: int = 32,
        seed: int | dict[str, int] = HELD_OUT_SEED,
        adapters: dict[str, str] | None = None,
    ) -> None:
        self.model = model
        self.config = model.config
        self.batch_size = batch_size
        self.spec = spec = dataclasses.replace(spec, mask_fraction=1.0, random_fraction=0.0)
        self.sets: dict[str, Batch] = {}
        if isinstance(seed, dict) and set(rows) - set(seed):
            raise ValueError(f"no mask seed for {sorted(set(rows) - set(seed))}")
        mask = jax.jit(lambda key, ids: mask_tokens(key, ids, spec))
        for n, (code, ids) in enumerate(sorted(rows.items())):
            key = seed[code] if isinstance(seed, dict) else seed + n
            masked, positions, labels = mask(jax.random.key(key), jnp.asarray(ids))
            self.sets[code] = {
                "input_ids": np.asarray(masked),
                "attention_mask": (ids != pad_id).astype(np.int32),
                "logits_positions": np.asarray(positions),
                "labels": np.asarray(labels),
            }
        self.codes = list(self.sets)
        self._rows = {k: np.concatenate([d[k] for d in self.sets.values()]) for k in _MLM_KEYS}
        entropy = sorted(seed.values()) if isinstance(seed, dict) else seed
        self._shuffled_rows = shuffle_context(self._rows, np.random.default_rng(entropy))
        self._owner = np.concatenate(
            [np.full(len(d["input_ids"]), i) for i, d in enumerate(self.sets.values())]
        )
        routes = [(adapters or {}).get(code, code) for code in self.codes]
        self._routed_ids = self.config.lang_ids(routes)[self._owner]  # int32 [rows]; raises early
        self._eval_step = make_mlm_eval_step(model)

    def _row_scores(
        self, params: Any, lang_ids: np.ndarray, shuffled: bool = False
    ) -> dict[str, np.ndarray]:
        """Per held-out row (all languages together, in batches): loss sum, correct, count."""
        rows = self._shuffled_rows if shuffled else self._rows
        n = len(lang_ids)
        parts = []
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            batch = {k: v[start:stop] for k, v in rows.items()}
            batch["lang_ids"] = lang_ids[start:stop]
            out = jax.device_get(self._eval_step(params, _padded(batch, self.batch_size)))
            parts.append({k: v[: stop - start] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def evaluate(
        self, params: Any, adapter: str | None = None, shuffled: bool = False
    ) -> dict[str, dict[str, float]]:
        own = self._routed_ids
        lang_ids = own if adapter is None else np.full_like(own, self.config.lang_ids(adapter))
        scores = self._row_scores(params, lang_ids, shuffled)
        results = {}
        for i, code in enumerate(self.codes):
            mine = self._owner == i
            count = int(scores["count"][mine].sum())
            loss = float(scores["loss_sum"][mine].sum() / max(count, 1))
            results[code] = {
                "loss": loss,
                "perplexity": float(math.exp(min(loss, 50.0))),
                "accuracy": float(scores["correct"][mine].sum() / max(count, 1)),
                "tokens": count,
            }
        return results

    def adapter_matrix(self, params: Any) -> tuple[list[str], list[str], np.ndarray]:
        """(text codes, adapter codes, loss float [T, A]): every held-out language scored through
        every adapter of the model."""
        adapters = list(self.config.languages)
        matrix = np.zeros((len(self.codes), len(adapters)))
        for j, adapter in enumerate(adapters):
            scores = self.evaluate(params, adapter=adapter)
            matrix[:, j] = [scores[code]["loss"] for code in self.codes]
        return list(self.codes), adapters, matrix

    def unigram_baseline(self, train_rows: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
        """Per language: "accuracy" of always predicting the language's most frequent training
        token at the masked positions, and "perplexity" of its (add-one) unigram distribution."""
        results = {}
        for code, data in self.sets.items():
            counts = _regular_token_counts(train_rows[code], self.spec)
            probs = (counts + 1) / (counts + 1).sum()
            targets = data["labels"][data["labels"] != IGNORE_INDEX]
            results[code] = {
                "accuracy": float(np.mean(targets == np.argmax(counts))),
                "perplexity": float(np.exp(-np.mean(np.log(probs[targets])))),
            }
        return results


_MLM_KEYS = ("input_ids", "attention_mask", "logits_positions", "labels")


def shuffle_context(rows: Batch, rng: np.random.Generator) -> Batch:
    """Held-out rows with each row's tokens after `<s>` in a random order: masked tokens move
    with their `<mask>` (`logits_positions` follow them), pads stay at the end."""
    ids = rows["input_ids"].copy()
    positions = rows["logits_positions"].copy()
    for r in range(len(ids)):
        body = np.flatnonzero(rows["attention_mask"][r])[1:]  # real tokens after <s>
        order = rng.permutation(len(body))
        ids[r, body] = rows["input_ids"][r, body[order]]
        new_place = np.arange(ids.shape[1])
        new_place[body[order]] = body  # the token from body[order[j]] now sits at body[j]
        positions[r] = new_place[positions[r]]
    return {**rows, "input_ids": ids, "logits_positions": positions}


def _padded(batch: Batch, size: int) -> Batch:
    """Pad the leading axis to `size` by repeating the first row (its results are dropped)."""
    n = len(next(iter(batch.values())))
    if n == size:
        return batch
    return {k: np.concatenate([v, np.repeat(v[:1], size - n, axis=0)]) for k, v in batch.items()}


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """The loop's budget and cadence (batch size and sequence length live in the batches).

    `freeze`: None trains every parameter (pre-training); a `freeze_labels` preset or rule list
    trains a part, e.g. `("new_language", code)` after `add_language`: only that language's
    adapter rows move, every other parameter stays bit-identical (language adaptation).
    """

    steps: int
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    decay_fraction: float = 0.2
    weight_decay: float = 0.01
    clip_norm: float | None = 1.0
    eval_every: int = 500
    checkpoint_every: int = 250
    log_every: int = 50
    seed: int = 0
    freeze: Any = None

    def __post_init__(self) -> None:
        if self.steps <= self.warmup_steps:
            raise ValueError(f"steps ({self.steps}) must exceed warmup_steps ({self.warmup_steps})")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        for name in ("eval_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def make_pretrain_optimizer(
    params: Any, config: PretrainConfig, model_config: XmodConfig | None = None
) -> optax.GradientTransformation:
    """AdamW over the parameters `config.freeze` leaves trainable (all by default): linear
    warmup, the peak held, then linear decay to 0 over the last `decay_fraction` of the steps
    after warmup. `model_config` is needed for `("new_language", code)`."""
    after_warmup = config.steps - config.warmup_steps
    return make_optimizer(
        params,
        learning_rate=config.learning_rate,
        freeze=config.freeze,
        config=model_config,
        warmup_steps=config.warmup_steps,
        total_steps=config.steps,
        decay_steps=max(1, round(config.decay_fraction * after_warmup)),
        clip_norm=config.clip_norm,
        weight_decay=config.weight_decay,
    )


class Placement(Protocol):
    """Where `pretrain` keeps its train state and feeds its batches; without one, on one device.
    `xmod_jax.parallel.MeshPlacement` spreads them over a mesh (any number of processes)."""

    def distribute(
        self, state: TrainState, step_fn: Callable[[TrainState, Batch], Any]
    ) -> tuple[TrainState, Callable[[TrainState, Batch], Any]]:
        """The state placed, and the step jitted to run where it is."""
        ...

    def local_rows(self, batch: Batch) -> Batch:
        """The rows of a global batch that this process feeds."""
        ...


def pretrain(
    model: Any,
    params: Any,
    batches: MixedLanguageBatches,
    spec: MaskingSpec,
    config: PretrainConfig,
    workdir: str | os.PathLike,
    *,
    held_out: HeldOutMLM | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    placement: Placement | None = None,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Pre-train from `params`, or resume from the latest checkpoint in `workdir/checkpoints`.

    Writes `workdir/log.jsonl`: one record per `log_every` steps (mean loss, tokens/s, host data
    time as a fraction of the wall time) and per evaluation (per-language held-out metrics). A
    resumed run replays the same batches and masks, so it ends bit-identical to an uninterrupted
    one.
    `stop_after` ends the call after that many steps of this call (the schedule still spans
    `config.steps`). `placement` runs the steps on a mesh (`xmod_jax.parallel.MeshPlacement`):
    the same batches, masks and results as one device (to float rounding), checkpoints saved
    and restored sharded. Returns the final state and the log records of this call.
    """
    from tqdm.auto import tqdm

    workdir = os.fspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    tx = make_pretrain_optimizer(params, config, model.config)
    labels = freeze_labels(params, config.freeze, model.config)
    step_fn = make_pretrain_step(model, tx, labels, spec)
    # a copy: the step donates its state, and the caller keeps `params`
    state = TrainState.create(jax.tree.map(jnp.array, params), tx, seed=config.seed)
    if placement is not None:
        state, step_fn = placement.distribute(state, step_fn)
    log_path = os.path.join(workdir, "log.jsonl")
    records: list[dict[str, Any]] = []
    with TrainCheckpoints(
        os.path.join(workdir, "checkpoints"), keep_last=2, keep_best=0, metric="loss", mode="min"
    ) as checkpoints:
        if checkpoints.latest_step() is not None:
            state = checkpoints.restore(state)  # shaped and placed like the fresh state
        start = int(state.step)
        _truncate_log(log_path, start)
        stop = config.steps if stop_after is None else min(config.steps, start + stop_after)
        tokens_per_step = batches.batch_size * batches.seq_len
        window = {"loss": [], "data": 0.0, "t0": time.perf_counter()}
        bar = tqdm(range(start, stop), desc="pre-training", disable=not progress, initial=start,
                   total=config.steps)  # fmt: skip
        for step in bar:
            t_data = time.perf_counter()
            batch = batches.batch(step)
            if placement is not None:
                batch = placement.local_rows(batch)
            window["data"] += time.perf_counter() - t_data
            state, metrics = step_fn(state, batch)
            window["loss"].append(metrics["loss"])
            done = step + 1
            if done % config.log_every == 0 or done == stop:
                losses = [float(x) for x in window["loss"]]  # waits for the device
                elapsed = time.perf_counter() - window["t0"]
                record = {
                    "step": done,
                    "loss": float(np.mean(losses)),
                    "tokens_per_s": tokens_per_step * len(losses) / elapsed,
                    "data_fraction": window["data"] / elapsed,
                    "time": time.time(),
                }
                records.append(record)
                _append_log(log_path, record)
                bar.set_postfix(loss=f"{record['loss']:.3f}")
                window = {"loss": [], "data": 0.0, "t0": time.perf_counter()}
            if held_out is not None and (done % config.eval_every == 0 or done == config.steps):
                scores = held_out.evaluate(state.params)
                shuffled = held_out.evaluate(state.params, shuffled=True)
                for code, row in scores.items():
                    row["context_gain"] = shuffled[code]["loss"] - row["loss"]
                record = {"step": done, "eval": scores}
                records.append(record)
                _append_log(log_path, record)
                window["t0"] = time.perf_counter()  # evaluation is not step time
            if done % config.checkpoint_every == 0 or done == stop:
                checkpoints.save(state)
    return state, records


def _append_log(path: str, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_log(path: str, step: int) -> None:
    """Drop records past `step` (written after the checkpoint a resumed run starts from)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(kept)
