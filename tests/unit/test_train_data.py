"""Training data plumbing that needs no model: the validation split and the length-bucketed batches."""

import numpy as np

from workers.training.data import epoch_batches, validation_mask
from workers.training.splits import holdout_mask


def test_validation_split_finds_groups_inside_a_file_made_by_arena_split():
    groups = np.arange(1, 20_001, dtype=np.int64) * 7919
    train_groups = groups[~holdout_mask(groups, holdout_fraction=0.2, seed=0)]
    # `arena split` used seed 0; the same seed and hash here would find nothing in its train file.
    assert not holdout_mask(train_groups, holdout_fraction=0.1, seed=0).any()
    mask = validation_mask(train_groups, fraction=0.1, seed=0)
    assert 0.08 < mask.mean() < 0.12
    assert (validation_mask(train_groups, fraction=0.1, seed=0) == mask).all(), "deterministic"
    assert (validation_mask(train_groups, fraction=0.1, seed=1) != mask).any(), "the seed matters"


def test_validation_split_keeps_a_group_together_and_never_takes_everything():
    groups = np.array([5, 5, 9, 9, 9, 12])
    for seed in range(5):
        mask = validation_mask(groups, fraction=0.3, seed=seed)
        assert mask.any() and not mask.all()
        for group in np.unique(groups):
            assert len(set(mask[groups == group])) == 1


def test_epoch_batches_cover_every_example_once_in_similar_lengths():
    lengths = list(np.random.default_rng(0).integers(10, 500, size=301))
    batches = epoch_batches(lengths, batch_size=4, seed=3, epoch=0)
    assert sorted(index for batch in batches for index in batch) == list(range(301))
    assert all(len(batch) <= 4 for batch in batches)
    spread = np.mean([np.ptp([lengths[index] for index in batch]) for batch in batches if len(batch) > 1])
    assert spread < 60, "examples of one batch should have similar lengths (little padding)"
    assert batches != epoch_batches(lengths, batch_size=4, seed=3, epoch=1), "a fresh order every epoch"
    assert batches == epoch_batches(lengths, batch_size=4, seed=3, epoch=0), "and the same order on resume"


def test_validation_holds_real_rows_only_and_drops_their_synthetic_copies(tmp_path):
    import pandas as pd

    from tests.api.arena_rows import arena_csv
    from workers.common.pairs import prompt_groups
    from workers.training.config import TrainConfig, TrainingSource
    from workers.training.data import split_rows

    (tmp_path / "real.csv").write_bytes(arena_csv(12))
    synthetic = pd.read_csv(tmp_path / "real.csv")
    synthetic["id"] += 100_000  # the same prompts and responses, relabelled by a teacher
    synthetic.to_csv(tmp_path / "synth.csv", index=False)
    config = TrainConfig(
        sources=[TrainingSource(tmp_path / "real.csv"), TrainingSource(tmp_path / "synth.csv", 0.5)],
        output_dir=tmp_path / "out",
        base_model="unused",
        val_fraction=0.4,
    )
    train, validation = split_rows(config)
    assert validation.pairs and all(int(pair.id) < 100_000 for pair in validation.pairs)
    assert not set(prompt_groups(validation.pairs)) & set(prompt_groups(train.pairs))
    assert any(int(pair.id) >= 100_000 for pair in train.pairs)
    assert len(train.pairs) + 2 * len(validation.pairs) == 24
