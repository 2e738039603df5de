"""Training parts the bundles reference: deep-supervision loss, in-plane elastic deformation, time budget, resume."""

from __future__ import annotations

import time

import pytest
import torch
from ignite.engine import Engine
from monai.losses import DiceCELoss

from pipeline.engines import attach_time_budget, latest_checkpoint
from pipeline.losses import DeepSupervisedLoss
from pipeline.transforms import RandInPlaneElasticd


def test_deep_supervised_loss_weights_the_main_head_most():
    target = torch.zeros(1, 1, 8, 8, 2)
    target[..., 2:6, 2:6, :] = 1
    perfect = torch.cat([-10 * target + 5, 10 * target - 5], dim=1)  # logits matching the target
    wrong = -perfect
    loss = DeepSupervisedLoss(DiceCELoss(to_onehot_y=True, softmax=True))
    main_right = loss(torch.stack([perfect, wrong], dim=1), target)
    main_wrong = loss(torch.stack([wrong, perfect], dim=1), target)
    assert main_right < main_wrong
    # a single head is the plain loss
    assert torch.isclose(loss(perfect, target), DiceCELoss(to_onehot_y=True, softmax=True)(perfect, target))
    with pytest.raises(ValueError):
        loss(torch.zeros(1, 2, 8, 8), target)


def test_in_plane_elastic_uses_one_field_for_every_slice_and_keeps_labels_binary():
    elastic = RandInPlaneElasticd(["image", "label"], prob=1.0, spacing=(6, 6), magnitude_range=(2, 4),
                                  mode=("bilinear", "nearest")).set_random_state(0)
    slice_ = torch.rand(1, 24, 20, 1)
    image = slice_.repeat(3, 1, 1, 2)  # 3 channels, 2 identical slices
    label = (slice_ > 0.5).float().repeat(1, 1, 1, 2)
    out = elastic({"image": image, "label": label})
    assert out["image"].shape == image.shape and not torch.equal(out["image"], image)
    assert torch.equal(out["image"][..., 0], out["image"][..., 1])
    assert set(out["label"].unique().tolist()) <= {0.0, 1.0}


def test_time_budget_stops_after_the_last_epoch_that_fits():
    engine = Engine(lambda e, b: time.sleep(0.05))
    assert attach_time_budget(engine, 0.22)
    engine.run(range(1), max_epochs=50)
    assert 2 <= engine.state.epoch <= 5
    assert not attach_time_budget(Engine(lambda e, b: None), None)


def test_resume_takes_the_newest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    older = tmp_path / "checkpoint_epoch=3.pt"
    older.write_bytes(b"x")
    newer = tmp_path / "last.pt"
    newer.write_bytes(b"x")
    import os

    os.utime(older, (1, 1))
    assert latest_checkpoint(tmp_path) == newer
