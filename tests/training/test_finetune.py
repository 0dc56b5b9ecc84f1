"""A real LoRA fine-tune of a tiny local Llama on template-teacher pairs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import characterized  # noqa: E402

from bgm_batch.settings import TextSettings  # noqa: E402
from bgm_batch.testing.tiny_llm import build_tiny_llm  # noqa: E402
from bgm_batch.text.protocol import TEXT_BACKENDS  # noqa: E402
from bgm_batch.training import finetune as F  # noqa: E402
from bgm_batch.training.pairs import make_pairs, read_jsonl, render_prompt  # noqa: E402

FAST = dict(
    epochs=3,
    learning_rate=1e-2,
    batch_size=4,
    grad_accum=1,
    dropout=0.0,
    warmup_ratio=0.0,
    device="cpu",
    max_length=256,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("base") / "llm", seed=0)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    settings = TextSettings(backend="template", cache_dir=None)
    out = tmp_path_factory.mktemp("pairs")
    make_pairs(
        out,
        TEXT_BACKENDS.create("template", settings),
        frame=characterized(5, 2),
        text_settings=settings,
        val_fraction=0.2,
    )
    return out


@pytest.fixture(scope="module")
def tokenizer(base: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


@pytest.fixture(scope="module")
def trained(base: Path, pairs: Path, tmp_path_factory) -> tuple[Path, F.FinetuneResult]:
    out = tmp_path_factory.mktemp("run") / "adapter"
    return out, F.finetune(pairs, str(base), out, F.FinetuneConfig(**FAST), log=lambda _: None)


def hf(base: Path, adapter: Path | None = None):
    settings = TextSettings(backend="hf", model=str(base), adapter=adapter, device="cpu")
    return TEXT_BACKENDS.create("hf", settings)


def test_loss_counts_only_the_answer_and_prompts_match_inference(base, pairs, tokenizer) -> None:
    record = read_jsonl(pairs / "train.jsonl")[0]
    (example,) = F.encode_records([record], tokenizer, max_length=1024)
    prompt = render_prompt(record)
    head = hf(base).encode(prompt)  # the backend's own prompt encoding
    assert example.input_ids[: len(head)] == head
    assert set(example.labels[: len(head)]) == {F.IGNORE}
    answer = example.labels[len(head) :]
    assert answer == example.input_ids[len(head) :] and answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer, skip_special_tokens=True).strip() == record["output"]
    (cut,) = F.encode_records([record], tokenizer, max_length=len(head) + 2)
    assert len(cut.input_ids) == len(head) + 2 and cut.n_target == 2
    assert F.encode_records([record], tokenizer, max_length=len(head)) == []


def test_validation_loss_falls_and_outputs_are_complete(trained) -> None:
    out, result = trained
    assert len(result.val_loss) == FAST["epochs"] + 1 and len(result.train_loss) == FAST["epochs"]
    assert result.val_loss[-1] < result.val_loss[0] - 0.05
    assert result.train_loss[-1] < result.train_loss[0]
    assert 0 < result.trainable_params < result.total_params / 5
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and sorted(config["target_modules"]) == [
        "k_proj",
        "o_proj",
        "q_proj",
        "v_proj",
    ]
    assert (out / "adapter_model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "bgm-batch finetune" in card and f"{result.val_loss[-1]:.4f}" in card
    log = json.loads((out / "training_log.json").read_text())
    assert log["result"]["val_loss"] == result.val_loss and log["config"]["rank"] == 8


def test_adapter_loads_in_the_hf_backend_and_changes_generation(base, pairs, trained) -> None:
    out, _ = trained
    prompts = [render_prompt(r) for r in read_jsonl(pairs / "validation.jsonl")[:2]]
    plain = hf(base).generate(prompts, max_new_tokens=12, seed=0)
    tuned_backend = hf(base, out)
    assert tuned_backend.identity()["adapter"] != "none"
    assert tuned_backend.generate(prompts, max_new_tokens=12, seed=0) != plain


def test_existing_adapter_is_not_overwritten(base, pairs, trained) -> None:
    out, _ = trained
    with pytest.raises(F.FinetuneError, match="already holds an adapter"):
        F.finetune(pairs, str(base), out, F.FinetuneConfig(**FAST))


def _adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_resume_continues_exactly(base, pairs, tmp_path) -> None:
    config = F.FinetuneConfig(**{**FAST, "epochs": 2, "dropout": 0.1, "keep_checkpoints": 5})
    full = tmp_path / "full"
    F.finetune(pairs, str(base), full, config, log=lambda _: None)
    checkpoints = sorted((full / "checkpoints").iterdir())
    assert len(checkpoints) == 2  # one per epoch
    # a run killed during epoch 2: only the epoch-1 checkpoint survives
    crashed = tmp_path / "crashed"
    (crashed / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoints[0], crashed / "checkpoints" / checkpoints[0].name)
    resumed = F.finetune(
        pairs, str(base), crashed, config.model_copy(update={"resume": True}), log=lambda _: None
    )
    assert (
        resumed.resumed_from
        and resumed.steps == json.loads((checkpoints[-1] / "state.json").read_text())["step"]
    )
    first, second = _adapter_weights(full), _adapter_weights(crashed)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name])


def test_gradient_accumulation_matches_a_bigger_batch(base, pairs, tokenizer, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    examples = F.encode_records(read_jsonl(pairs / "train.jsonl")[:4], tokenizer, 256)
    weights = []
    for batch, accum in ((4, 1), (1, 4)):
        config = F.FinetuneConfig(**{**FAST, "epochs": 1, "batch_size": batch, "grad_accum": accum})
        model = AutoModelForCausalLM.from_pretrained(base)
        peft_model, result = F.train_lora(
            model,
            examples,
            [],
            config,
            tmp_path / f"{batch}",
            pad_id=tokenizer.pad_token_id,
            base=str(base),
            log=lambda _: None,
        )
        assert result.steps == 1 and result.val_loss == [None, None]
        weights.append(
            {k: v.detach().clone() for k, v in peft_model.named_parameters() if v.requires_grad}
        )
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-4, atol=1e-5)


def test_scores_with_the_adapter_end_to_end(base, trained, tmp_path) -> None:
    """make-pairs -> finetune -> score: the adapter is a row of the comparison table."""
    import polars as pl

    from bgm_batch.evaluation.compare import compare_table
    from bgm_batch.settings import Settings

    out, _ = trained
    frame = characterized(1, 2)
    refs = frame.select("recording", "index", caption=pl.lit("calm piano at 80 BPM in C major"))
    settings = Settings(
        text=TextSettings(
            device="cpu", cache_dir=None, narrative_max_new_tokens=12, caption_max_new_tokens=12
        )
    )
    table = compare_table(
        frame, [f"hf:{base}@{out}"], settings, refs, modes=("two-stage",), embed=False
    )
    assert table["model"].to_list() == [
        "template + Two-Stage Generation",
        "hf:llm + LoRA + Two-Stage Generation",
    ]
    assert table["adapter"][1] == str(out) and table["n_pairs"].to_list() == [2, 2]
