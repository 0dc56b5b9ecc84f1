"""The hf backend on a tiny random Llama saved to disk and loaded back through from_pretrained."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from transformers import AutoModelForCausalLM, LlamaForCausalLM  # noqa: E402

from bgm_batch.settings import TextSettings  # noqa: E402
from bgm_batch.testing.tiny_llm import build_tiny_llm  # noqa: E402
from bgm_batch.text.cache import generation_key  # noqa: E402
from bgm_batch.text.hf import load_hf_backend  # noqa: E402
from bgm_batch.text.prompts import narrative_prompt  # noqa: E402
from bgm_batch.text.protocol import TEXT_BACKENDS, TextBackend  # noqa: E402

PROMPTS = [
    narrative_prompt('{"Biome": {"Plains": 100.0}}'),
    narrative_prompt(
        '{"Biome": {"Deep Dark": 100.0}, "Time": {"Night": 100.0}, '
        '"Motion": {"Sprinting": 27.09}, "Placing": {"On Ground": 100.0}}'
    ),
    "short",
    narrative_prompt('{"Biome": {"Desert": 60.0, "River": 40.0}}'),
    "a slightly longer prompt about the sea",
    narrative_prompt('{"Biome": {"Forest": 100.0}, "Climate": {"Raining": 100.0}}'),
]
NEW = 12


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_llm(tmp_path_factory.mktemp("tiny") / "llm", seed=0)


def settings_for(model_dir, **changes) -> TextSettings:
    return TextSettings(backend="hf", model=str(model_dir), device="cpu", **changes)


@pytest.fixture(scope="module")
def backend(model_dir):
    return TEXT_BACKENDS.create("hf", settings_for(model_dir, token_budget=700))


def one_by_one(backend, prompts, seed=0):
    return [backend.generate([p], max_new_tokens=NEW, seed=seed)[0] for p in prompts]


def test_loads_by_path_through_the_registry(backend, model_dir):
    assert isinstance(backend, TextBackend)
    assert backend.tokenizer.padding_side == "left"
    assert next(backend.model.parameters()).dtype == torch.float32
    identity = backend.identity()
    assert identity["backend"] == "hf" and identity["model"] == str(model_dir.resolve())
    assert identity["revision"].startswith("local-") and identity["adapter"] == "none"
    assert load_hf_backend(settings_for(model_dir)).identity() == identity


def test_batched_greedy_equals_one_by_one(backend):
    backend.batch_sizes.clear()
    batched = backend.generate(PROMPTS, max_new_tokens=NEW, seed=0)
    assert len(batched) == len(PROMPTS) and all(isinstance(t, str) and t for t in batched)
    assert max(backend.batch_sizes) > 1 and len(backend.batch_sizes) > 1  # really batched, padded
    assert batched == one_by_one(backend, PROMPTS)
    assert backend.generate(PROMPTS, max_new_tokens=NEW, seed=5) == batched  # greedy


def test_batches_fit_the_token_budget(backend):
    lengths = [len(backend.encode(p)) for p in PROMPTS]
    batches = backend.plan_batches(lengths, NEW)
    assert sorted(i for batch in batches for i in batch) == list(range(len(PROMPTS)))
    for batch in batches:
        width = max(lengths[i] for i in batch) + NEW
        assert len(batch) == 1 or len(batch) * width <= backend.token_budget
    assert [lengths[b[0]] for b in batches] == sorted(
        (lengths[b[0]] for b in batches), reverse=True
    )


def test_sampling_is_seeded_and_independent_of_batching(model_dir):
    sampler = load_hf_backend(
        settings_for(model_dir, do_sample=True, temperature=1.0, token_budget=700)
    )
    first = sampler.generate(PROMPTS, max_new_tokens=NEW, seed=1)
    assert first == sampler.generate(PROMPTS, max_new_tokens=NEW, seed=1)
    assert first == one_by_one(sampler, PROMPTS, seed=1)
    assert first != sampler.generate(PROMPTS, max_new_tokens=NEW, seed=2)
    assert "sample" in sampler.identity()["decoding"]


class OutOfMemoryAboveTwo(LlamaForCausalLM):
    """The real tiny model, failing like a full GPU whenever more than two rows come in."""

    def forward(self, input_ids=None, **kwargs):
        if input_ids is not None and input_ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
        return super().forward(input_ids=input_ids, **kwargs)


def test_out_of_memory_halves_the_batch_and_goes_on(model_dir, backend):
    failing = load_hf_backend(
        settings_for(model_dir, token_budget=100_000), model_class=OutOfMemoryAboveTwo
    )
    assert isinstance(failing.model, OutOfMemoryAboveTwo)
    out = failing.generate(PROMPTS, max_new_tokens=NEW, seed=0)
    assert failing.oom_splits == 2  # 6 -> 3 -> 1 (then chunks of one)
    assert max(failing.batch_sizes) <= 2
    assert out == backend.generate(PROMPTS, max_new_tokens=NEW, seed=0)


def test_a_single_prompt_out_of_memory_is_raised(model_dir):
    class AlwaysOutOfMemory(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            raise torch.cuda.OutOfMemoryError("simulated")

    failing = load_hf_backend(settings_for(model_dir), model_class=AlwaysOutOfMemory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        failing.generate(PROMPTS[:2], max_new_tokens=NEW, seed=0)


def test_lora_adapter_changes_output_and_cache_key(model_dir, backend, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
        init_lora_weights=False,
    )
    torch.manual_seed(3)
    peft.get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    tuned = load_hf_backend(settings_for(model_dir, adapter=tmp_path / "adapter"))
    assert tuned.identity()["adapter"] not in ("", "none")
    prompt = PROMPTS[1]
    assert tuned.generate([prompt], max_new_tokens=NEW, seed=0) != backend.generate(
        [prompt], max_new_tokens=NEW, seed=0
    )
    key = {
        b: generation_key(b.identity(), prompt, max_new_tokens=NEW, seed=0)
        for b in (tuned, backend)
    }
    assert key[tuned] != key[backend]


def test_fixed_length_generates_exactly_max_new_tokens(model_dir):
    fixed = load_hf_backend(settings_for(model_dir))
    fixed.fixed_length = True
    fixed.generate(PROMPTS[:3], max_new_tokens=NEW, seed=0)
    assert fixed.tokens_generated == 3 * NEW
    assert "fixed_length" in fixed.identity()["decoding"]
