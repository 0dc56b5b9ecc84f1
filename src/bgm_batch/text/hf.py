"""The ``hf`` text backend: a Hugging Face transformers causal LM (LLaMA-2-7B-Chat by default).

Loading (``load_hf_backend``) is apart from generating (``HFTextBackend``), so benchmarks and
tests can hand a model built in memory to the same generation code. Generation:

- each prompt is wrapped in the tokenizer's chat template (a base model without one gets the
  raw prompt), then prompts are sorted by length and packed into batches whose padded size,
  prompt plus new tokens, fits ``token_budget``; left padding keeps every row's last token at
  the end, so a batched row decodes exactly like the same prompt alone under greedy decoding;
- on CUDA out-of-memory the batch is halved and the run goes on (the smaller cap is kept);
- sampling draws each row from its own generator seeded with (seed, prompt), so a completion
  does not depend on which other prompts shared its batch: the cache may reuse it safely.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgm_batch.devices import resolve_device
from bgm_batch.settings import TextSettings
from bgm_batch.text.protocol import TEXT_BACKENDS

if TYPE_CHECKING:
    import torch

_SAMPLED_BYTES = 1 << 20  # files above _FULL_HASH_LIMIT are fingerprinted by size, head and tail
_FULL_HASH_LIMIT = 64 << 20


def folder_fingerprint(folder: Path) -> str:
    """A sha256 over a checkpoint or adapter folder: names and sizes of all files, the full
    content of files up to 64 MiB, the first and last MiB of bigger ones (a 13 GB checkpoint
    is fingerprinted in milliseconds; a retrained one changes size or its edges)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        with open(path, "rb") as handle:
            if size <= _FULL_HASH_LIMIT:
                digest.update(handle.read())
            else:
                digest.update(handle.read(_SAMPLED_BYTES))
                handle.seek(size - _SAMPLED_BYTES)
                digest.update(handle.read())
    return digest.hexdigest()


def _row_seed(seed: int, prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()[:8], "big") >> 1


def _row_sampler(generators: list, temperature: float, top_p: float):
    """A logits processor that samples each row with its own generator (temperature, nucleus)
    and leaves only the drawn token finite, so greedy selection picks it."""
    import torch
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(scores.float() / temperature, dim=-1)
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # keeps the top token
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            picked = torch.stack(
                [
                    order[row, torch.multinomial(sorted_probs[row], 1, generator=generators[row])]
                    for row in range(scores.shape[0])
                ]
            )
            chosen = torch.full_like(scores, float("-inf"))
            return chosen.scatter(1, picked, 0.0)

    return RowSampler()


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt as the backend sends it: one user turn in the chat template with
    the generation prompt, or the raw prompt for a tokenizer without a template. Fine-tuning
    encodes its examples with this too, so training and inference see the same tokens."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


class HFTextBackend:
    """Batched generation with a loaded causal LM and its tokenizer (see module docstring)."""

    name = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        revision: str,
        adapter_hash: str | None = None,
        token_budget: int = 8192,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        fixed_length: bool = False,
    ) -> None:
        from transformers import GenerationConfig

        self.model, self.tokenizer = model.eval(), tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token
        # Decoding is ours alone: a checkpoint's own sampling defaults must not leak in.
        self.model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        self.model_id, self.revision, self.adapter_hash = model_id, revision, adapter_hash
        self.token_budget = token_budget
        self.do_sample, self.temperature, self.top_p = do_sample, temperature, top_p
        self.fixed_length = fixed_length  # min_new_tokens = max_new_tokens, for benchmarks
        # Ids past the tokenizer (a padded embedding matrix) would decode to nothing.
        vocab = model.get_output_embeddings().weight.shape[0]
        self.suppressed = list(range(len(tokenizer), vocab)) or None
        self.batch_cap: int | None = None  # set by an out-of-memory error
        self.oom_splits = 0
        self.batch_sizes: list[int] = []  # rows of every batch run, for stats and tests
        self.tokens_generated = 0  # new tokens, padding after an early stop not counted

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def identity(self) -> dict[str, str]:
        """Model, revision, adapter hash, dtype, device kind and decoding settings."""
        decoding = (
            f"sample(temperature={self.temperature},top_p={self.top_p})"
            if self.do_sample
            else "greedy"
        )
        return {
            "backend": self.name,
            "model": self.model_id,
            "revision": self.revision,
            "adapter": self.adapter_hash or "none",
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "device": self.device.type,
            "decoding": decoding + (",fixed_length" if self.fixed_length else ""),
        }

    def encode(self, prompt: str) -> list[int]:
        """Token ids of one prompt inside the chat template (raw prompt without a template)."""
        return encode_prompt(self.tokenizer, prompt)

    def plan_batches(self, lengths: Sequence[int], max_new_tokens: int) -> list[list[int]]:
        """Prompt indices grouped longest first, each batch's padded tokens (rows x (longest
        prompt + new tokens)) within the token budget; at least one prompt per batch."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for index in order:
            current = batches[-1] if batches else None
            if current is not None:
                width = lengths[current[0]] + max_new_tokens
                fits = (len(current) + 1) * width <= self.token_budget
                if fits and (self.batch_cap is None or len(current) < self.batch_cap):
                    current.append(index)
                    continue
            batches.append([index])
        return batches

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, seed: int) -> list[str]:
        """Completions in prompt order (see the module docstring for batching and OOM)."""
        import torch

        encoded = [self.encode(prompt) for prompt in prompts]
        results: dict[int, str] = {}
        queue = self.plan_batches([len(ids) for ids in encoded], max_new_tokens)
        while queue:
            batch = queue.pop(0)
            if self.batch_cap is not None and len(batch) > self.batch_cap:
                queue[:0] = list(_chunks(batch, self.batch_cap))
                continue
            try:
                texts = self._run(
                    [encoded[i] for i in batch], [prompts[i] for i in batch], max_new_tokens, seed
                )
            except torch.cuda.OutOfMemoryError:
                if len(batch) == 1:
                    raise
                self.batch_cap, self.oom_splits = len(batch) // 2, self.oom_splits + 1
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                queue.insert(0, batch)
                continue
            results.update(zip(batch, texts, strict=True))
        return [results[i] for i in range(len(prompts))]

    def _run(
        self, ids: list[list[int]], prompts: list[str], max_new_tokens: int, seed: int
    ) -> list[str]:
        import torch
        from transformers import LogitsProcessorList

        inputs = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        processors = LogitsProcessorList()
        if self.do_sample:
            generators = [
                torch.Generator(device=self.device).manual_seed(_row_seed(seed, prompt))
                for prompt in prompts
            ]
            processors.append(_row_sampler(generators, self.temperature, self.top_p))
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens if self.fixed_length else None,
                do_sample=False,
                suppress_tokens=self.suppressed,
                logits_processor=processors,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        self.batch_sizes.append(len(ids))
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        self.tokens_generated += int((new_tokens != self.tokenizer.pad_token_id).sum())
        return [
            text.strip()
            for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        ]


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load_hf_backend(settings: TextSettings, *, model_class: Any = None) -> HFTextBackend:
    """Load ``settings.model`` (hub id or local folder) and the optional LoRA adapter.

    bf16 on CUDA, float32 on CPU. The adapter is merged into the weights (same output, faster).
    ``model_class`` replaces ``AutoModelForCausalLM`` (tests use a subclass that fails on
    purpose). The revision recorded in the cache key is the requested one, else the hub commit
    the files came from, else a fingerprint of the local folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(settings.device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    loader = model_class or AutoModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(settings.model, revision=settings.revision)
    model = loader.from_pretrained(
        settings.model, revision=settings.revision, dtype=dtype, device_map=device
    )
    adapter_hash = None
    if settings.adapter is not None:
        from peft import PeftModel

        adapter_hash = folder_fingerprint(settings.adapter)
        model = PeftModel.from_pretrained(model, str(settings.adapter)).merge_and_unload()
    local = Path(settings.model).is_dir()
    revision = settings.revision or (
        f"local-{folder_fingerprint(Path(settings.model))[:16]}"
        if local
        else getattr(model.config, "_commit_hash", None) or "unpinned"
    )
    return HFTextBackend(
        model,
        tokenizer,
        model_id=str(Path(settings.model).resolve()) if local else settings.model,
        revision=revision,
        adapter_hash=adapter_hash,
        token_budget=settings.token_budget,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        top_p=settings.top_p,
    )


@TEXT_BACKENDS.register("hf")
def create_hf_backend(settings: TextSettings) -> HFTextBackend:
    """Registry factory: load the model named in the settings."""
    return load_hf_backend(settings)
