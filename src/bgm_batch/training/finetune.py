"""LoRA fine-tuning of a causal LM on instruction/input/output pairs (the paper's recipe).

The paper fine-tunes LLaMA-2-7B-Chat with LoRA on 1,972 Alpaca-style pairs. Here:

- each record becomes the exact token sequence the ``hf`` backend builds at inference time (the
  prompt of ``training.pairs.render_prompt`` inside the tokenizer's chat template) followed by
  the answer and EOS; the loss counts only the answer tokens (prompt and padding are -100);
- LoRA (peft) on the attention projections; rank, alpha, dropout and target modules come from
  :class:`FinetuneConfig`; only the adapter trains;
- AdamW with linear warm-up and decay, gradient accumulation with the loss normalised by the
  answer tokens of the whole accumulation window, gradient clipping; base weights in bf16 and
  bf16 autocast on CUDA, float32 on CPU;
- a checkpoint (adapter, optimizer, scheduler, RNG state, position in the epoch) after every
  epoch and every ``save_steps`` optimizer steps, written atomically; ``resume`` continues from
  the newest one exactly where it stopped;
- validation loss (mean over answer tokens) before training and after every epoch;
- the output folder holds ``adapter_config.json`` + ``adapter_model.safetensors`` (loadable by
  the ``hf`` backend's ``--adapter``), ``training_log.json`` and a README model card.

:func:`train_lora` takes a model and encoded examples, so the benchmark runs the same loop on a
7B architecture with random weights.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from bgm_batch.atomic import write_text
from bgm_batch.devices import resolve_device
from bgm_batch.text.hf import encode_prompt
from bgm_batch.training.pairs import read_jsonl, render_prompt

IGNORE = -100
CHECKPOINTS = "checkpoints"


class FinetuneConfig(BaseModel):
    """Everything a fine-tuning run can be told (all recorded in ``training_log.json``)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    epochs: int = 3
    learning_rate: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 4
    max_length: int = 512
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    save_steps: int = 0  # 0: a checkpoint after every epoch only
    keep_checkpoints: int = 2
    gradient_checkpointing: bool = False
    device: str = "auto"
    bf16: bool | None = None  # None: bf16 exactly when training on CUDA
    seed: int = 0
    resume: bool = False


class FinetuneError(ValueError):
    """Unusable pairs or output folder."""


@dataclass(frozen=True)
class Example:
    """One tokenised record: ``labels`` is -100 wherever the loss must not look."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_target(self) -> int:
        return sum(label != IGNORE for label in self.labels[1:])  # position 0 is never predicted


@dataclass
class FinetuneResult:
    """What a run did; ``val_loss[0]`` is before training, then one per epoch."""

    adapter_dir: Path
    base: str
    epochs: int
    steps: int
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: float = 0.0  # mean wall time of an optimizer step in this process
    tokens_per_second: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    peak_memory_gib: float | None = None  # CUDA only
    resumed_from: str | None = None
    n_train: int = 0
    n_validation: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        return {**asdict(self), "adapter_dir": str(self.adapter_dir)}


# --- data ------------------------------------------------------------------------------------


def answer_ids(tokenizer: Any, prompt: str, answer: str) -> list[int]:
    """Token ids of the answer turn: what the chat template puts after the prompt (ending in
    EOS), or ``" answer</s>"`` for a tokenizer without a template."""
    if tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": answer}], tokenize=False
        )
        if full.startswith(head):
            ids = tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"]
            if tokenizer.eos_token_id in ids:
                return ids
    return tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def encode_records(
    records: Sequence[dict[str, Any]], tokenizer: Any, max_length: int
) -> list[Example]:
    """Tokenise records; sequences longer than ``max_length`` lose their end, records whose
    answer would vanish entirely are skipped."""
    examples = []
    for record in records:
        prompt = render_prompt(record)
        head = encode_prompt(tokenizer, prompt)
        answer = answer_ids(tokenizer, prompt, record["output"])
        ids = (head + answer)[:max_length]
        labels = ([IGNORE] * len(head) + answer)[:max_length]
        example = Example(ids, labels)
        if example.n_target:
            examples.append(example)
    return examples


def load_pair_files(pairs: Path, validation: Path | None = None) -> tuple[list[dict], list[dict]]:
    """``(train, validation)`` records: ``pairs`` is a make-pairs folder (train.jsonl,
    validation.jsonl) or one JSONL file, with ``validation`` as an optional second file."""
    pairs = Path(pairs)
    if pairs.is_dir():
        train_file, validation = pairs / "train.jsonl", validation or pairs / "validation.jsonl"
    else:
        train_file = pairs
    if not train_file.is_file():
        raise FinetuneError(f"no training pairs at {train_file}")
    val = read_jsonl(validation) if validation is not None and Path(validation).is_file() else []
    return read_jsonl(train_file), val


def _collate(batch: Sequence[Example], pad_id: int):
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return ids, labels, mask


# --- training --------------------------------------------------------------------------------


def _summed_loss(model: Any, batch: Sequence[Example], pad_id: int, device: str, bf16: bool):
    """Sum of the answer tokens' cross-entropy (shifted) and their count."""
    import torch

    ids, labels, mask = (t.to(device) for t in _collate(batch, pad_id))
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids, attention_mask=mask).logits
    shifted = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    targets = labels[:, 1:].reshape(-1)
    loss = torch.nn.functional.cross_entropy(shifted, targets, ignore_index=IGNORE, reduction="sum")
    return loss, int((targets != IGNORE).sum())


def validation_loss(
    model: Any,
    examples: Sequence[Example],
    config: FinetuneConfig,
    pad_id: int,
    device: str,
    bf16: bool,
) -> float | None:
    """Mean cross-entropy per answer token over ``examples`` (None without examples)."""
    import torch

    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), config.batch_size):
            loss, n = _summed_loss(
                model, examples[start : start + config.batch_size], pad_id, device, bf16
            )
            total, count = total + float(loss), count + n
    model.train(was_training)
    return total / count


def _windows(n_examples: int, config: FinetuneConfig, epoch: int) -> list[list[list[int]]]:
    """The epoch's accumulation windows (lists of batches of example indices); the order
    depends only on (seed, epoch), so a resumed run sees the same batches."""
    order = list(range(n_examples))
    random.Random(config.seed * 1_000_003 + epoch).shuffle(order)
    batches = [order[i : i + config.batch_size] for i in range(0, n_examples, config.batch_size)]
    return [batches[i : i + config.grad_accum] for i in range(0, len(batches), config.grad_accum)]


def _checkpoint_dirs(out_dir: Path) -> list[Path]:
    folder = out_dir / CHECKPOINTS
    found = folder.glob("step-*") if folder.is_dir() else []
    return sorted((p for p in found if (p / "state.json").is_file()), key=lambda p: p.name)


def _save_checkpoint(
    out_dir: Path, peft_model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], keep: int
) -> None:
    import torch

    final = out_dir / CHECKPOINTS / f"step-{state['step']:08d}"
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp)
    rng = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
        tmp / "trainer_state.pt",
    )
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in _checkpoint_dirs(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


def _load_checkpoint(folder: Path, peft_model: Any, optimizer: Any, scheduler: Any) -> dict:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(folder / "adapter_model.safetensors"))
    saved = torch.load(folder / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    random.setstate(saved["rng"]["python"])
    torch.set_rng_state(saved["rng"]["torch"])
    if saved["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return json.loads((folder / "state.json").read_text())


def train_lora(
    model: Any,
    train: Sequence[Example],
    validation: Sequence[Example],
    config: FinetuneConfig,
    out_dir: Path,
    *,
    pad_id: int,
    base: str,
    log: Callable[[str], None] = print,
) -> tuple[Any, FinetuneResult]:
    """Wrap ``model`` with LoRA and train it; returns the peft model and the result.

    ``model`` must already sit on the configured device (bf16 weights on CUDA). Checkpoints go
    to ``out_dir/checkpoints``; the final adapter is saved by the caller (:func:`save_adapter`).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    if not train:
        raise FinetuneError("no training example left after tokenisation")
    device = resolve_device(config.device)
    bf16 = device.startswith("cuda") if config.bf16 is None else config.bf16
    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        model.config.use_cache = False  # the KV cache is useless in training and conflicts
        peft_model.gradient_checkpointing_enable()
        peft_model.enable_input_require_grads()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = len(_windows(len(train), config, 0))
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps
    )
    state: dict[str, Any] = {
        "epoch": 0,
        "window": 0,
        "step": 0,
        "train_loss": [],
        "val_loss": [],
        "epoch_loss": [0.0, 0],
    }
    result = FinetuneResult(
        Path(out_dir), base, config.epochs, 0, n_train=len(train), n_validation=len(validation)
    )
    checkpoints = _checkpoint_dirs(Path(out_dir)) if config.resume else []
    if checkpoints:
        state = _load_checkpoint(checkpoints[-1], peft_model, optimizer, scheduler)
        result.resumed_from = str(checkpoints[-1])
        log(f"resumed from {checkpoints[-1]} (epoch {state['epoch']}, step {state['step']})")
    else:
        state["val_loss"].append(
            validation_loss(peft_model, validation, config, pad_id, device, bf16)
        )
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started, step_time, steps_here, tokens = time.perf_counter(), 0.0, 0, 0
    peft_model.train()
    for epoch in range(state["epoch"], config.epochs):
        windows = _windows(len(train), config, epoch)
        for index in range(state["window"], len(windows)):
            step_start = time.perf_counter()
            batches = [[train[i] for i in batch] for batch in windows[index]]
            n_window = sum(e.n_target for batch in batches for e in batch)
            for batch in batches:
                loss, _ = _summed_loss(peft_model, batch, pad_id, device, bf16)
                (loss / n_window).backward()
                state["epoch_loss"][0] += float(loss.detach())
                tokens += sum(len(e.input_ids) for e in batch)
            state["epoch_loss"][1] += n_window
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            step_time += time.perf_counter() - step_start
            steps_here += 1
            state["step"], state["window"] = state["step"] + 1, index + 1
            if config.save_steps and state["step"] % config.save_steps == 0:
                _save_checkpoint(
                    Path(out_dir), peft_model, optimizer, scheduler, state, config.keep_checkpoints
                )
        loss_sum, count = state["epoch_loss"]
        state["train_loss"].append(loss_sum / max(count, 1))
        state["val_loss"].append(
            validation_loss(peft_model, validation, config, pad_id, device, bf16)
        )
        state.update(epoch=epoch + 1, window=0, epoch_loss=[0.0, 0])
        log(
            f"epoch {epoch + 1}/{config.epochs}: train loss {state['train_loss'][-1]:.4f}, "
            f"validation loss {_fmt(state['val_loss'][-1])}"
        )
        _save_checkpoint(
            Path(out_dir), peft_model, optimizer, scheduler, state, config.keep_checkpoints
        )
    result.steps = state["step"]
    result.train_loss, result.val_loss = state["train_loss"], state["val_loss"]
    result.seconds = round(time.perf_counter() - started, 3)
    result.step_seconds = step_time / steps_here if steps_here else 0.0
    result.tokens_per_second = tokens / step_time if step_time else 0.0
    result.trainable_params = sum(p.numel() for p in params)
    result.total_params = sum(p.numel() for p in peft_model.parameters())
    if device.startswith("cuda"):
        result.peak_memory_gib = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return peft_model, result


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# --- output ----------------------------------------------------------------------------------


def model_card(result: FinetuneResult, config: FinetuneConfig, data: dict[str, Any]) -> str:
    """The README of the adapter folder: what it is, how it was made, how to use it."""
    train = ["-", *(f"{loss:.4f}" for loss in result.train_loss)]
    losses = "\n".join(
        f"| {epoch} | {train[epoch]} | {_fmt(val)} |"
        for epoch, val in enumerate(result.val_loss[: len(train)])
    )
    return f"""---
library_name: peft
base_model: {result.base}
tags: [lora, bgm-batch, metabgm, music-description]
---

# LoRA adapter for MetaBGM-style music descriptions

Fine-tuned by `bgm-batch finetune` (the MetaBGM recipe: LoRA on instruction/input/output pairs
for scene data -> narrative and narrative -> music description).

- Base model: `{result.base}`
- Training pairs: {data.get("train", "?")} ({result.n_train} examples used); validation:
  {data.get("validation", "-")} ({result.n_validation} examples)
- LoRA: rank {config.rank}, alpha {config.alpha}, dropout {config.dropout}, target modules
  {", ".join(config.target_modules)}; {result.trainable_params:,} trainable of
  {result.total_params:,} parameters
- Training: {config.epochs} epochs, {result.steps} optimizer steps, batch {config.batch_size} x
  {config.grad_accum} accumulation, learning rate {config.learning_rate}, max length
  {config.max_length}, seed {config.seed}; loss on the answer tokens only

| epoch | train loss | validation loss |
|---|---|---|
{losses}

## Use

    bgm-batch score ... --text hf --llm {result.base} --adapter <this folder>

or `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)`.
Prompts must be built as in training: the record's instruction with its input in the
`{{payload}}` slot (`training.pairs.render_prompt`), inside the base model's chat template.

## Licence and data

The adapter is a derivative of the base model and is subject to its licence. Pairs built by
reverse generation have MusicCaps captions (CC BY-SA 4.0, Google) as outputs; see
`bgm_batch/resources/ATTRIBUTION_musiccaps_captions.md`.
"""


def save_adapter(
    peft_model: Any, result: FinetuneResult, config: FinetuneConfig, data: dict[str, Any]
) -> None:
    """Adapter weights + adapter_config.json, training_log.json and the README model card."""
    out_dir = result.adapter_dir
    peft_model.save_pretrained(out_dir)
    log = {"config": config.model_dump(), "data": data, "result": result.to_json_dict()}
    write_text(out_dir / "training_log.json", json.dumps(log, indent=2) + "\n")
    write_text(out_dir / "README.md", model_card(result, config, data))


def finetune(
    pairs: Path,
    base: str,
    out: Path,
    config: FinetuneConfig | None = None,
    *,
    validation: Path | None = None,
    log: Callable[[str], None] = print,
) -> FinetuneResult:
    """``bgm-batch finetune PAIRS --base ID --out ADAPTER_DIR``: load, encode, train, save."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = config or FinetuneConfig()
    out = Path(out)
    if (out / "adapter_config.json").exists() and not config.resume:
        raise FinetuneError(f"{out} already holds an adapter; choose another folder or resume")
    train_records, val_records = load_pair_files(pairs, validation)
    device = resolve_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(base)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    train = encode_records(train_records, tokenizer, config.max_length)
    val = encode_records(val_records, tokenizer, config.max_length)
    peft_model, result = train_lora(
        model, train, val, config, out, pad_id=pad_id, base=base, log=log
    )
    data = {
        "train": str(pairs),
        "validation": str(validation or "") or None,
        "n_train_records": len(train_records),
        "n_validation_records": len(val_records),
    }
    save_adapter(peft_model, result, config, data)
    return result
