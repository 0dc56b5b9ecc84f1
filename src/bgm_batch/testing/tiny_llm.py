"""Small random Llama models with a real tokenizer and chat template, built without any download.

Tests, benchmarks and the CLI demo need a causal LM that goes through exactly the loading and
generation code of the ``hf`` backend, on a machine that cannot reach a model hub. These
builders make one from a ``LlamaConfig`` (random weights) and a byte-level BPE tokenizer trained
in milliseconds on the project's own prompt text, with a Llama-2-style Jinja chat template and
left padding. ``build_tiny_llm`` saves one with ``save_pretrained`` so it loads back through
``from_pretrained`` like any checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgm_batch.text.prompts import PROMPT_SETS

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

# Llama-2-chat's turn format: [INST] user [/INST] answer</s>
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% else %} {{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
}

TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
}
# Published LLaMA-2-7B sizes, for GPU benchmarks with random weights.
LLAMA2_7B_CONFIG: dict[str, Any] = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 11008,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
}

_CORPUS_EXTRA = (
    'A lone traveller sprints across the plains under a night sky. {"Biome": {"Plains": 100.0}, '
    '"Time": {"Night": 100.0}, "Climate": {"Clear": 100.0}, "Motion": {"Sprinting": 27.09}} '
    "A tense cinematic piece at 152 BPM in D minor, with staccato strings and intense drumming. "
    "Slow tempo at 64 BPM in E minor: eerie ambient music with continuous drone and soft bells."
)


def train_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) with a chat template and left padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [t for s in PROMPT_SETS.values() for t in (s.narrative, s.caption, s.direct)]
    backend.train_from_iterator([*corpus, _CORPUS_EXTRA] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        **SPECIAL_TOKENS,
    )


def random_llama(
    tokenizer: PreTrainedTokenizerFast,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    **config: Any,
) -> LlamaForCausalLM:
    """A ``LlamaForCausalLM`` with random weights; ``config`` overrides ``TINY_CONFIG``.

    ``dtype``/``device`` build the weights there directly (a 7B model in bf16 on a GPU
    without a float32 copy in host memory).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    settings = {**TINY_CONFIG, "vocab_size": len(tokenizer), **config}
    llama_config = LlamaConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **settings,
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    try:
        if dtype is not None:
            torch.set_default_dtype(dtype)
        with torch.device(device or "cpu"):
            model = LlamaForCausalLM(llama_config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model.eval()


def build_tiny_llm(out_dir: Path, *, seed: int = 0) -> Path:
    """Save a tiny random Llama chat model and its tokenizer into ``out_dir``; return it.

    Loadable with ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained(out_dir)``.
    """
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer()
    random_llama(tokenizer, seed=seed).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
