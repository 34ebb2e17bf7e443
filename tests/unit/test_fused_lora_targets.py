"""LoRA targets on models that fuse their projections (Phi-3: qkv_proj, gate_up_proj): the usual names q_proj ...
mean the fused module, at the gateway's check and in the worker's LoRA config alike."""

from pathlib import Path

import pytest

from shared.model_folder import ModelFolder, ModelFolderError, check_lora_options, fused_target_modules
from workers.training.config import TrainConfig, TrainingSource
from workers.training.model import prepare_lora_model
from workers.training.precision import DeviceCapabilities, plan_training

PHI3_MODULES = frozenset(
    f"model.layers.{layer}.{name}"
    for layer in range(2)
    for name in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
) | {"model.embed_tokens", "score"}
LLAMA_MODULES = frozenset(
    f"model.layers.0.{name}"
    for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
)


def test_the_usual_names_mean_the_fused_modules_only_where_the_model_fuses_them():
    default = ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert fused_target_modules(default, PHI3_MODULES) == ["qkv_proj", "o_proj"]
    assert fused_target_modules(["gate_proj", "up_proj", "down_proj"], PHI3_MODULES) == ["gate_up_proj", "down_proj"]
    assert fused_target_modules(default, LLAMA_MODULES) == default
    assert fused_target_modules(["q_proj"], {"model.layers.0.mlp.fc1"}) == ["q_proj"]  # nothing to map: unchanged


def model_folder(modules: frozenset[str]) -> ModelFolder:
    return ModelFolder(path=Path("/nonexistent"), label="model 'x'", num_hidden_layers=2, max_positions=4096,
                       modules=modules)  # fmt: skip


def test_the_gateway_accepts_the_default_targets_on_a_fused_model_and_still_refuses_a_typo():
    check_lora_options(model_folder(PHI3_MODULES), target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                       lora_top_layers=None, max_length=512)  # fmt: skip
    with pytest.raises(ModelFolderError, match="q_prjo"):
        check_lora_options(model_folder(PHI3_MODULES), target_modules=["q_prjo"], lora_top_layers=None, max_length=512)


def test_lora_goes_on_a_phi3_models_fused_modules_with_the_default_targets(tmp_path):
    from transformers import Phi3Config, Phi3ForSequenceClassification

    config = Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0,
                        num_labels=3)  # fmt: skip
    base = Phi3ForSequenceClassification(config)
    train_config = TrainConfig(sources=[TrainingSource(tmp_path / "x.csv", 1.0)], output_dir=tmp_path / "out",
                               base_model=str(tmp_path))  # fmt: skip
    model = prepare_lora_model(base, train_config, plan_training(DeviceCapabilities("cpu")))
    lora = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in model.named_parameters() if ".lora_A" in name}
    assert lora == {"qkv_proj", "o_proj"}
