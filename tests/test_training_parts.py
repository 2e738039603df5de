"""Training parts the bundles reference: deep-supervision loss, the border-weighted loss, in-plane elastic
deformation, time budget, resume, the progress bar, the trainer's fast-path switches (AMP, channels-last, batch
preparation)."""

from __future__ import annotations

import time

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.losses import DiceCELoss

from pipeline.losses import BorderWeightedDiceCELoss, DeepSupervisedLoss
from pipeline.networks import UNetPlusPlus
from pipeline.planning.bundle_settings import plan_overrides
from pipeline.precision import amp_dtype
from pipeline.training.checkpoints import latest_checkpoint
from pipeline.training.handlers import attach_progress_bar, attach_time_budget, fit_schedule_to_epochs
from pipeline.networks import prepare_network
from pipeline.training.trainer import PrepareTrainingBatch, Trainer
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


def test_a_polynomial_schedule_fitted_to_fewer_epochs_stays_on_the_new_curve():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=40, power=0.9)
    for _ in range(5):
        optimizer.step()
        schedule.step()
    fit_schedule_to_epochs(schedule, 10)
    assert schedule.total_iters == 10 and optimizer.param_groups[0]["lr"] == pytest.approx(0.5**0.9)
    for epoch in range(6, 11):
        optimizer.step()
        schedule.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx((1 - epoch / 10) ** 0.9, abs=1e-9)
    assert schedule.state_dict()["total_iters"] == 10  # a resumed run goes on with it
    fit_schedule_to_epochs(schedule, 3)  # never before the epoch it is at
    assert schedule.total_iters == 11


def test_the_time_budget_fits_the_schedule_to_the_epochs_it_allows():
    model = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([model], lr=1.0)
    schedule = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=50, power=0.9)
    engine = Engine(lambda e, b: optimizer.step())
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: schedule.step())
    assert attach_time_budget(engine, 1e6, schedule)  # the budget allows every epoch: the schedule ends with the run
    engine.run(range(1), max_epochs=4)
    assert schedule.total_iters == 4 and optimizer.param_groups[0]["lr"] == 0.0
    with pytest.raises(TypeError, match="PolynomialLR"):
        attach_time_budget(Engine(lambda e, b: None), 10.0, torch.optim.lr_scheduler.StepLR(optimizer, 1))


def test_resume_takes_the_newest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    older = tmp_path / "checkpoint_epoch=3.pt"
    older.write_bytes(b"x")
    newer = tmp_path / "last.pt"
    newer.write_bytes(b"x")
    import os

    os.utime(older, (1, 1))
    assert latest_checkpoint(tmp_path) == newer


DICE_CE = {"to_onehot_y": True, "softmax": True, "squared_pred": True, "batch": True}


def logits_and_labels(seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 2, 8, 8, 2, generator=generator)
    labels = (torch.rand(2, 1, 8, 8, 2, generator=generator) > 0.7).float()
    return logits, labels


def test_border_weighted_loss_is_monai_dice_ce_without_weights_or_with_unit_weights():
    logits, labels = logits_and_labels()
    plain = DiceCELoss(**DICE_CE)(logits, labels)
    loss = BorderWeightedDiceCELoss(**DICE_CE)
    assert torch.equal(loss(logits, labels), plain)
    unit = torch.cat([labels, torch.ones_like(labels)], dim=1)
    assert torch.allclose(loss(logits, unit), plain, atol=1e-6)
    # the cross-entropy term alone: plain CE for unit weights
    ce_only = BorderWeightedDiceCELoss(lambda_dice=0.0, **DICE_CE)
    assert torch.allclose(ce_only(logits, unit), torch.nn.functional.cross_entropy(logits, labels[:, 0].long()))


def test_border_weights_make_the_weighted_voxels_count_more():
    logits, labels = logits_and_labels(1)
    ce = torch.nn.functional.cross_entropy(logits, labels[:, 0].long(), reduction="none")
    worst = ce == ce.max()
    weights = torch.where(worst, 10.0, 1.0)[:, None]
    loss = BorderWeightedDiceCELoss(lambda_dice=0.0, **DICE_CE)
    weighted = loss(logits, torch.cat([labels, weights], dim=1))
    assert weighted > loss(logits, labels)
    assert torch.allclose(weighted, (ce * weights[:, 0]).sum() / weights.sum())
    # through deep supervision: the two-channel target reaches every stacked head
    stacked = DeepSupervisedLoss(BorderWeightedDiceCELoss(**DICE_CE), weights=[0.75, 0.25])(
        torch.stack([logits, logits], 1), torch.cat([labels, weights], 1))
    assert torch.allclose(stacked, BorderWeightedDiceCELoss(**DICE_CE)(logits, torch.cat([labels, weights], 1)))
    with pytest.raises(ValueError):
        loss(logits, torch.cat([labels, weights, weights], dim=1))
    with pytest.raises(ValueError):
        BorderWeightedDiceCELoss(softmax=True)


def test_prepare_batch_appends_the_weight_map_to_the_label_and_can_go_channels_last():
    batch = {"image": torch.rand(2, 4, 8, 8, 2), "label": torch.ones(2, 1, 8, 8, 2), "weight": torch.full((2, 1, 8, 8, 2), 3.0)}
    image, label = PrepareTrainingBatch(channels_last=True)(batch, torch.device("cpu"))
    assert label.shape == (2, 2, 8, 8, 2) and float(label[:, 1].min()) == 3.0 and float(label[:, 0].min()) == 1.0
    assert image.is_contiguous(memory_format=torch.channels_last_3d) and torch.equal(image, batch["image"])
    image, label = PrepareTrainingBatch()({"image": batch["image"], "label": batch["label"]}, torch.device("cpu"))
    assert label.shape == (2, 1, 8, 8, 2) and image.is_contiguous()


def tiny_unetpp():
    return UNetPlusPlus(spatial_dims=3, in_channels=2, out_channels=2, strides=[[2, 2, 1]] * 2,
                        kernel_sizes=[[3, 3, 1]] * 3, features=[4, 4, 8], norm="instance", deep_supervision=True)


def test_prepare_network_stores_3d_weights_channels_last_and_keeps_the_values():
    net = tiny_unetpp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net = prepare_network(net, "cpu", channels_last=True)
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in convs)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_amp_on_cpu_trains_the_forward_pass_in_bfloat16(seeded_single_thread):
    assert amp_dtype("cpu") == torch.bfloat16
    data = [{"image": torch.rand(2, 16, 16, 2), "label": (torch.rand(1, 16, 16, 2) > 0.8).float(),
             "weight": torch.ones(1, 16, 16, 2)} for _ in range(2)]
    net = prepare_network(tiny_unetpp(), "cpu", channels_last=True)
    seen = []
    net.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    trainer = Trainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(Dataset(data), batch_size=2),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=DeepSupervisedLoss(BorderWeightedDiceCELoss(**DICE_CE)),
        prepare_batch=PrepareTrainingBatch(channels_last=True), amp=True, amp_kwargs={"dtype": amp_dtype("cpu")},
        cudnn_benchmark=True, decollate=False,
    )
    trainer.run()
    assert seen == [torch.bfloat16]  # the network ran under autocast
    assert trainer.state.output["pred"].dtype == torch.float32  # the loss saw float32
    assert torch.isfinite(trainer.state.output["loss"]) and trainer.state.output["label"].shape[1] == 2
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_plan_overrides_take_pixdim_from_the_plans_resample_pixdim(tmp_path):
    from pipeline.data.plans import derive_plans, write_plans
    from pipeline.planning.bundle_settings import ARCHITECTURE_KEYS

    cases = [{"case_id": f"c{i}", "shape_x": 256, "shape_y": 256, "shape_z": 2, "spacing_x": s, "spacing_y": s,
              "spacing_z": t} for i, (s, t) in enumerate(((0.8, 12.0), (0.9, 10.0), (1.04, 5.0)))]
    path = write_plans(derive_plans({"summary": {}, "cases": cases}), tmp_path / "plans.json")
    assert dict(plan_overrides(path))["pixdim"] == [0.9, 0.9, 0.0]
    assert dict(plan_overrides(path, ARCHITECTURE_KEYS))["pixdim"] == [0.9, 0.9, 0.0]  # what predict passes


def test_checkpoints_are_written_atomically_and_a_failed_save_keeps_the_last_one(tmp_path):
    import os
    import stat

    from ignite.engine import Engine

    from pipeline.training.checkpoints import AtomicCheckpointSaver

    class Flaky(torch.nn.Module):
        """Saves normally until told to fail; then its state cannot be pickled (torch.save fails mid-file)."""

        fail = False

        def state_dict(self, *args, **kwargs):
            return {"bad": lambda: None} if self.fail else {"epoch_marker": torch.ones(1)}

    flaky = Flaky()
    trainer = Engine(lambda engine, batch: None)
    AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": flaky}, save_final=True,
                          final_filename="last.pt", save_interval=1, n_saved=1).attach(trainer)
    trainer.run([0], max_epochs=2)
    last = tmp_path / "last.pt"
    assert torch.load(last, weights_only=True)["epoch_marker"].item() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "model_epoch=2.pt"]  # epoch 1 superseded
    assert os.stat(last).st_mode & stat.S_IRGRP  # readable by the group, like MONAI's own files
    good = last.read_bytes()
    flaky.fail = True
    with pytest.raises(Exception):
        trainer.run([0], max_epochs=3)
    assert last.read_bytes() == good  # the interrupted save left the previous checkpoint whole
    # no temporary left behind, and the epoch-2 checkpoint survives the failed epoch-3 save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "model_epoch=2.pt"]


def test_progress_bar_shows_the_running_loss_only_when_enabled(capsys):
    def run(enabled: bool) -> str:
        engine = Engine(lambda engine, batch: [{"loss": torch.tensor(0.25)}, {"loss": torch.tensor(0.25)}])
        assert attach_progress_bar(engine, enabled) is enabled
        engine.run(range(3), max_epochs=1)
        return capsys.readouterr().err

    assert "loss=0.25" in run(True)  # the loss of the decollated MONAI trainer output
    assert "loss=" not in run(False)


def test_the_handler_classes_attach_what_their_functions_attach(tmp_path):
    from monai.handlers import EarlyStopHandler

    from pipeline.training.handlers import EarlyStoppingHandler, ProgressBarHandler, ResumeHandler, TimeBudgetHandler

    # resume: the engine the handler is attached to is the checkpoint's trainer
    weights = torch.nn.Linear(2, 1)
    trainer = Engine(lambda engine, batch: None)
    trainer.run([0, 1], max_epochs=3)
    torch.save({"model": weights.state_dict(), "trainer": trainer.state_dict()}, tmp_path / "last.pt")
    resumed = Engine(lambda engine, batch: None)
    resume = ResumeHandler(tmp_path, {"model": weights})
    resume.attach(resumed)
    assert resume.checkpoint == tmp_path / "last.pt"
    resumed.run([0, 1], max_epochs=4)
    assert resumed.state.epoch == 4 and resumed.state.iteration == 8  # one more epoch after the third
    fresh = ResumeHandler(tmp_path / "nothing", {"model": weights})
    fresh.attach(Engine(lambda engine, batch: None))
    assert fresh.checkpoint is None

    # time budget and progress bar: attached when there is something to do
    for handler, expected in ((TimeBudgetHandler(None), False), (TimeBudgetHandler(5.0), True),
                              (ProgressBarHandler(False), False), (ProgressBarHandler(), True)):
        handler.attach(Engine(lambda engine, batch: None))
        assert handler.attached is expected

    # early stopping: MONAI's EarlyStopHandler on the evaluator, stopping the engine attached to
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.key_metric_name = "dice"
    stopping = EarlyStoppingHandler(evaluator, patience=2)
    stopping.attach(trainer)
    assert stopping.attached
    assert any(isinstance(h, EarlyStopHandler) for h, *_ in evaluator._event_handlers[Events.EPOCH_COMPLETED])
    with pytest.raises(ValueError):
        EarlyStoppingHandler(evaluator, patience=-1).attach(trainer)
