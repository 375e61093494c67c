"""The offline target-feature cache: round trip, refusal of stale caches, resuming an interrupted build, training."""

from __future__ import annotations

import json

import pytest
import torch

import coral_hf.training.feature_cache as features_module
from coral_hf.training import (
    CoralFeatureCollator,
    CoralTrainer,
    FeatureCacheDataset,
    StaleFeatureCacheError,
    build_feature_cache,
    compute_target_features,
)
from coral_hf.training.objective import CoralLossConfig

from .test_training import new_drafter, single_thread, tiny_args, tiny_setup  # noqa: F401 (autouse fixture)
from .testing_utils import make_tiny_target

SHARD_SIZE = 4


@pytest.fixture(scope="module")
def setup():
    target, tokenizer, train, heldout = tiny_setup(num_train=10, num_heldout=4)
    return target, tokenizer, train, heldout


def build(target, dataset, cache_dir, **options):
    options = {"max_length": 64, "examples_per_shard": SHARD_SIZE, "batch_size": 3, "progress": False, **options}
    return build_feature_cache(target, dataset, cache_dir, **options)


def shard_files(cache_dir):
    return sorted(path.name for path in cache_dir.glob("shard-*.safetensors"))


class CountingFeatures:
    """Wraps `compute_target_features` to count the examples the target runs on."""

    def __init__(self):
        self.examples = 0

    def __call__(self, target, input_ids, attention_mask=None):
        self.examples += input_ids.shape[0]
        return compute_target_features(target, input_ids, attention_mask)


def test_round_trip(setup, tmp_path):
    target, _, train, _ = setup
    cache = build(target, train, tmp_path / "cache")
    assert len(cache) == len(train) == 10
    assert shard_files(tmp_path / "cache") == [f"shard-0000{i}-of-00003.safetensors" for i in range(3)]
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["max_length"] == 64 and manifest["dtype"] == "bfloat16" and manifest["num_examples"] == 10
    assert manifest["hidden_size"] == target.config.hidden_size
    assert manifest["num_tokens"] == sum(len(example["input_ids"]) for example in train)

    for index in (0, 5, 9):
        example, cached = train[index], cache[index]
        assert cached["input_ids"].tolist() == example["input_ids"]
        assert cached["loss_mask"].tolist() == example["loss_mask"]
        assert cached["features"].dtype == torch.bfloat16
        expected = compute_target_features(target, torch.tensor([example["input_ids"]]))[0]
        torch.testing.assert_close(cached["features"].float(), expected, rtol=1e-2, atol=2e-2)
    with pytest.raises(IndexError):
        cache[10]

    # Reopening reuses the cache without running the target.
    counter = CountingFeatures()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features_module, "compute_target_features", counter)
        reopened = build(target, train, tmp_path / "cache")
    assert counter.examples == 0 and len(reopened) == 10

    batch = CoralFeatureCollator(setup[1])([cache[0], cache[1]])
    length = max(len(train[0]["input_ids"]), len(train[1]["input_ids"]))
    assert batch["features"].shape == (2, length, target.config.hidden_size)
    short = 0 if len(train[0]["input_ids"]) < length else 1
    assert batch["features"][short, len(train[short]["input_ids"]) :].eq(0).all()
    assert batch["attention_mask"].sum().item() == len(train[0]["input_ids"]) + len(train[1]["input_ids"])


def test_stale_cache_is_refused(setup, tmp_path):
    target, tokenizer, train, heldout = setup
    cache_dir = tmp_path / "cache"
    build(target, train, cache_dir)
    with pytest.raises(StaleFeatureCacheError, match="target differs"):
        build(make_tiny_target("llama", seed=7, vocab_size=len(tokenizer)), train, cache_dir)
    with pytest.raises(StaleFeatureCacheError, match="tokenized data differs"):
        build(target, train.select(range(9)), cache_dir)
    with pytest.raises(StaleFeatureCacheError, match="max_length: cache has 64, expected 128"):
        build(target, train, cache_dir, max_length=128)
    with pytest.raises(StaleFeatureCacheError, match="dtype: cache has 'bfloat16', expected 'float16'"):
        build(target, train, cache_dir, dtype=torch.float16)
    with pytest.raises(StaleFeatureCacheError, match="does not match"):
        FeatureCacheDataset(
            cache_dir, expected={**json.loads((cache_dir / "manifest.json").read_text()), "data_sha256": "0" * 64}
        )
    (cache_dir / "manifest.json").unlink()  # shards of unknown origin
    with pytest.raises(StaleFeatureCacheError, match="no manifest.json"):
        build(target, train, cache_dir)
    with pytest.raises(ValueError, match="longer than max_length=8"):
        build(target, heldout, tmp_path / "other", max_length=8)


def test_interrupted_build_resumes(setup, tmp_path):
    target, _, train, _ = setup
    cache_dir = tmp_path / "cache"

    # Interrupt the build while it writes the second shard.
    real_save = features_module.save_file
    calls = []

    def failing_save(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            real_save(tensors, path, metadata=metadata)  # the partial file exists when the crash happens
            raise KeyboardInterrupt
        real_save(tensors, path, metadata=metadata)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features_module, "save_file", failing_save)
        with pytest.raises(KeyboardInterrupt):
            build(target, train, cache_dir)
    assert shard_files(cache_dir) == ["shard-00000-of-00003.safetensors"]
    assert not list(cache_dir.glob(".*tmp*"))  # the half-written shard never got its final name
    with pytest.raises(FileNotFoundError, match="incomplete"):
        FeatureCacheDataset(cache_dir)

    # A crash the process could not clean up after (power loss): a temporary file stays behind.
    leftover = cache_dir / ".shard-00002-of-00003.safetensors.tmp-999999"
    leftover.write_bytes(b"partial")
    kept = (cache_dir / "shard-00000-of-00003.safetensors").stat().st_mtime_ns

    counter = CountingFeatures()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features_module, "compute_target_features", counter)
        cache = build(target, train, cache_dir)
    assert counter.examples == len(train) - SHARD_SIZE  # only the two missing shards were computed
    assert (cache_dir / "shard-00000-of-00003.safetensors").stat().st_mtime_ns == kept
    assert not leftover.exists()
    assert len(shard_files(cache_dir)) == 3 and len(cache) == 10

    fresh = build(target, train, tmp_path / "fresh")
    for index in range(10):
        for key in ("input_ids", "loss_mask", "features"):
            assert torch.equal(cache[index][key], fresh[index][key]), (index, key)


def test_training_on_cached_features(setup, tmp_path):
    target, tokenizer, train, heldout = setup
    args = tiny_args(
        tmp_path / "run",
        max_steps=3,
        feature_cache_dir=str(tmp_path / "features"),
        max_length=64,
        eval_strategy="steps",
        eval_steps=3,
        acceptance_eval_on_start=False,
    )
    trainer = CoralTrainer(
        model=new_drafter(target), args=args, train_dataset=train, eval_dataset=heldout, processing_class=tokenizer
    )
    assert isinstance(trainer.train_dataset, FeatureCacheDataset)
    assert isinstance(trainer.eval_dataset, FeatureCacheDataset)
    assert sorted(path.name for path in (tmp_path / "features").iterdir()) == ["eval", "train"]

    # The same batch gives the same objective from cached (bf16) and online (fp32) features.
    collator = CoralFeatureCollator(tokenizer)
    cached = collator([trainer.train_dataset[i] for i in range(4)])
    online = collator([train[i] for i in range(4)])
    assert "features" in cached and "features" not in online
    config = CoralLossConfig(unroll_steps=2)
    with torch.no_grad():
        cached_loss, _ = trainer.coral_loss(trainer.model, cached, config)
        online_loss, _ = trainer.coral_loss(trainer.model, online, config)
    assert cached_loss.item() == pytest.approx(online_loss.item(), rel=2e-2)

    counter = CountingFeatures()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("coral_hf.training.trainer.compute_target_features", counter)
        trainer.train()
    assert counter.examples == 0  # the target never ran during training or evaluation
    assert trainer.state.global_step == 3
    assert any("eval_tau_sim" in entry for entry in trainer.state.log_history)
    assert trainer.model.config.training_recipe["features"] == "cache (bfloat16)"
