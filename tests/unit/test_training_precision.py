"""The trainer's device decisions (dtype, checkpointing, 4-bit, batch-token cap, CUDA RNG), each with fake devices."""

from pathlib import Path

import pytest

from workers.training.config import TrainConfig, TrainingError
from workers.training.precision import (
    DeviceCapabilities,
    activation_bytes_per_token,
    batch_token_cap,
    check_batch_tokens,
    plan_training,
)

CPU = DeviceCapabilities("cpu")
H100 = DeviceCapabilities("cuda", bf16=True, name="H100")
T4 = DeviceCapabilities("cuda", bf16=False, name="T4")
LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_layers=32)
GIB = 2**30


def test_a_cpu_keeps_fp32_weights_and_no_checkpointing_as_before():
    plan = plan_training(CPU)
    assert (plan.weights_dtype, plan.autocast_dtype, plan.gradient_checkpointing) == ("float32", None, False)
    assert plan.quantization is None and not plan.loss_scaling


def test_a_bf16_gpu_loads_the_base_in_bf16_with_checkpointing():
    plan = plan_training(H100)
    assert (plan.weights_dtype, plan.autocast_dtype, plan.gradient_checkpointing) == ("bfloat16", "bfloat16", True)
    assert not plan.loss_scaling


def test_a_gpu_without_bf16_uses_fp16_with_a_gradient_scaler():
    plan = plan_training(T4)
    assert (plan.weights_dtype, plan.autocast_dtype, plan.loss_scaling) == ("float16", "float16", True)


def test_checkpointing_can_be_forced_either_way():
    assert plan_training(CPU, gradient_checkpointing=True).gradient_checkpointing
    assert not plan_training(H100, gradient_checkpointing=False).gradient_checkpointing


def test_4bit_is_planned_only_on_cuda_with_bitsandbytes():
    with_bnb = DeviceCapabilities("cuda", bf16=True, bitsandbytes=True)
    assert plan_training(with_bnb, quantization="4bit").quantization == "4bit"
    with pytest.raises(TrainingError, match="pip install bitsandbytes"):
        plan_training(H100, quantization="4bit")
    with pytest.raises(TrainingError, match="needs a CUDA GPU"):
        plan_training(DeviceCapabilities("cpu", bitsandbytes=True), quantization="4bit")
    with pytest.raises(TrainingError, match="not offered"):
        plan_training(with_bnb, quantization="8bit")


def test_checkpointing_cuts_the_activation_estimate_of_an_8b_model_by_an_order_of_magnitude():
    full = activation_bytes_per_token(**LLAMA_8B, dtype_bytes=2, gradient_checkpointing=False)
    checkpointed = activation_bytes_per_token(**LLAMA_8B, dtype_bytes=2, gradient_checkpointing=True)
    assert 5e6 < full < 15e6  # MB per token: 4 x 512 tokens of an unchecked 8B run take ~20 GB
    assert checkpointed * 10 < full


def test_the_cap_follows_the_free_memory():
    per_token = activation_bytes_per_token(**LLAMA_8B, dtype_bytes=2, gradient_checkpointing=True)
    on_h100 = batch_token_cap(free_bytes=60 * GIB, bytes_per_token=per_token)  # 80 GB card, 16 GB of bf16 weights
    on_24gb = batch_token_cap(free_bytes=6 * GIB, bytes_per_token=per_token)
    assert on_h100 > 10 * 2048 and 2048 < on_24gb < on_h100
    assert batch_token_cap(free_bytes=0, bytes_per_token=per_token) == 0


def test_a_batch_over_the_cap_is_refused_with_the_ways_to_fit():
    plan = plan_training(H100, gradient_checkpointing=False)
    check_batch_tokens(batch_tokens=2048, cap=2048, free_bytes=4 * GIB, plan=plan)
    with pytest.raises(TrainingError) as refused:
        check_batch_tokens(batch_tokens=4096, cap=2048, free_bytes=4 * GIB, plan=plan)
    message = str(refused.value)
    assert "--grad-accum" in message and "checkpointing" in message and "--quantization 4bit" in message


def _tiny_base(dtype):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=3,
        pad_token_id=0,
    )
    return LlamaForSequenceClassification(config).to(dtype)


def _train_config() -> TrainConfig:
    return TrainConfig(
        sources=[], output_dir=Path("unused"), base_model="unused", rank=4, alpha=8, target_modules=("q_proj", "v_proj")
    )


def test_a_checkpointed_bf16_base_trains_fp32_lora_weights_and_leaves_the_base_alone():
    import numpy as np
    import torch

    from workers.training.model import build_optimizer, optimizer_step, prepare_lora_model

    plan = plan_training(CPU, gradient_checkpointing=True)
    model = prepare_lora_model(_tiny_base(torch.bfloat16), _train_config(), plan)
    assert model.base_model.model.is_gradient_checkpointing
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    lora_b = {name: p.detach().clone() for name, p in trainable.items() if "lora_B" in name}
    frozen_name, frozen = next((name, p) for name, p in model.named_parameters() if "q_proj.base_layer" in name)
    assert frozen.dtype == torch.bfloat16
    frozen_before = frozen.detach().clone()
    optimizer, scheduler = build_optimizer(model, _train_config(), total_steps=4)
    targets = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for _ in range(2):  # LoRA B starts at zero: the first step moves the head and B, the second reaches through A
        loss = optimizer_step(
            model,
            optimizer,
            scheduler,
            [([[5, 6, 7, 8], [9, 10, 11]], targets, np.ones(2))],
            pad_token_id=0,
            device="cpu",
        )
    assert np.isfinite(loss)
    assert any(not torch.equal(before, trainable[name]) for name, before in lora_b.items())
    assert torch.equal(frozen_before, dict(model.named_parameters())[frozen_name])


def test_the_cuda_rng_state_is_saved_and_restored_on_cuda_only(monkeypatch):
    import torch

    from workers.training.checkpoints import capture_rng_state, restore_rng_state

    device_states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored: list = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: device_states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    assert "cuda_rng" not in capture_rng_state("cpu")
    state = capture_rng_state("cuda")
    assert state["cuda_rng"] == [device_state.tolist() for device_state in device_states]

    torch.manual_seed(1)
    expected_next = torch.rand(3)
    torch.manual_seed(1)
    saved = capture_rng_state("cuda")
    torch.rand(3)
    restore_rng_state(saved, "cuda")
    assert torch.equal(torch.rand(3), expected_next)  # the CPU generator continues where it was saved
    assert [device_state.tolist() for device_state in restored] == [device_states[0].tolist()]  # one device here

    restored.clear()
    restore_rng_state(saved, "cpu")
    restore_rng_state({"torch_rng": saved["torch_rng"]}, "cuda")  # a checkpoint of a CPU run, resumed on CUDA
    assert restored == []
