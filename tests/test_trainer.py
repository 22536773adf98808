"""The training loop through the library API, on the real composed configs."""

from pathlib import Path

import pytest
import torch
from conftest import compose_train

from parsenet.engine.runtime.checkpoint import load_checkpoint
from parsenet.engine.training.loss import segmentation_loss
from parsenet.engine.training.trainer import Trainer
from parsenet.errors import ConfigError


def final_weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


@pytest.mark.parametrize("workers", [0, 1])
def test_same_seed_same_weights_whatever_the_evaluation_schedule(tmp_path: Path, workers: int):
    """Seeded runs repeat exactly, and evaluating in between does not change training."""
    runs = {}
    for name, eval_every in (("a", 0), ("b", 0), ("c", 1)):
        cfg = compose_train(
            tmp_path, f"data.num_workers={workers}", f"train.eval_every={eval_every}"
        )
        Trainer(cfg, tmp_path / name).run()
        runs[name] = final_weights(tmp_path / name)
    for key, value in runs["a"].items():
        assert torch.equal(value, runs["b"][key]), key
        assert torch.equal(value, runs["c"][key]), key
    cfg = compose_train(tmp_path, f"data.num_workers={workers}", "seed=1")
    Trainer(cfg, tmp_path / "d").run()
    assert any(not torch.equal(v, final_weights(tmp_path / "d")[k]) for k, v in runs["a"].items())


def test_gradient_accumulation_equals_a_larger_batch(tmp_path: Path):
    """batch 1 × iter_size 2 takes the same step as batch 2 (equal-sized, fully labelled images)."""
    deterministic = [
        "model.backbone.dropout=0",
        "model.head.context_dropout=0",
        "data.augment.flip=false",
        "train.max_iters=1",
        "train.eval_every=0",
        "optim=sgd",
        "optim.lr=0.01",
    ]
    Trainer(compose_train(tmp_path, *deterministic, "train.batch_size=2"), tmp_path / "big").run()
    Trainer(
        compose_train(tmp_path, *deterministic, "train.batch_size=1", "train.iter_size=2"),
        tmp_path / "accumulated",
    ).run()
    big, accumulated = final_weights(tmp_path / "big"), final_weights(tmp_path / "accumulated")
    initial = Trainer(compose_train(tmp_path, *deterministic), tmp_path / "init").model.state_dict()
    moved = [key for key in big if not torch.equal(big[key], initial[key])]
    assert moved
    for key in big:
        torch.testing.assert_close(big[key], accumulated[key], rtol=1e-4, atol=1e-6)


def test_loss_ignores_255_and_is_zero_without_labelled_pixels():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 255], [2, 255]]])
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(segmentation_loss(logits, labels, 255), expected)
    empty = segmentation_loss(logits, torch.full((1, 2, 2), 255), 255)
    assert empty.item() == 0.0
    empty.backward()
    assert torch.isfinite(logits.grad).all()


def test_logged_learning_rates_are_those_of_the_step(tmp_path: Path):
    cfg = compose_train(tmp_path, "optim=sgd", "optim.lr=0.01", "train.max_iters=2")
    trainer = Trainer(cfg, tmp_path / "run")
    batches = iter(trainer.train_loader())
    trainer.train_step(batches)
    assert trainer.step_lrs["base_weight"] == pytest.approx(0.01)
    assert trainer.step_lrs["new_weight"] == pytest.approx(0.1)
    trainer.train_step(batches)
    assert trainer.step_lrs["base_weight"] == pytest.approx(0.01 * 0.5**0.9)


def test_summed_loss_is_caffes_unnormalised_softmax_loss():
    """``sum``: cross-entropy summed over labelled pixels and divided by the batch size only."""
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, :2] = 255
    mean = segmentation_loss(logits, labels, 255, "mean")
    summed = segmentation_loss(logits, labels, 255, "sum")
    torch.testing.assert_close(summed, mean * (labels != 255).sum() / 2)


def test_unknown_loss_reduction_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="loss.reduction=.median."):
        Trainer(compose_train(tmp_path, "loss.reduction=median"), tmp_path / "run")
