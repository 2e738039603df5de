"""Both bundles through MONAI's own bundle tooling: metadata, properties, shapes, export, train, resume, infer."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

from pipeline.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = [ROOT / "bundles" / "isles_unetplusplus", ROOT / "bundles" / "isles_unet"]
PROFILE = str(ROOT / "configs" / "datasets" / "isles2018.yaml")
SCHEMA = ROOT / "tests" / "data" / "meta_schema_20240725.json"
TINY = ["--plans", "none", "--set", "features=[4,8,8,16,16]", "--set", "patch_size=[64,64,2]", "--set", "val_interval=1",
        "--set", "batch_size=2", "--set", "cache_rate=0.0"]
IDS = ["unetplusplus", "unet"]


@pytest.fixture(scope="module")
def datalist(synthetic_datalist) -> Path:
    return synthetic_datalist("bundles", cases=4, test_cases=2)


# Where the two bundles may differ, by config file: the network, what describes it, and DDP's unused-parameter
# search (UNet++ leaves its deep-supervision heads unused when deep supervision is off).
INTENDED_DIFFERENCES = {
    "train.json": {"network_def#_target_"},
    "inference.json": {"network_def#_target_"},
    "multi_gpu_train.json": {"train#network#find_unused_parameters"},
    "metadata.json": {"name", "description", "changelog#0.1.0", "references#0", "references#1"},
}


def flat_config(value, prefix: str = "") -> dict:
    """A config as ``{id: leaf value}``, ids joined with ``#`` as MONAI's config parser names them."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat = {}
    for key, item in items:
        flat.update(flat_config(item, f"{prefix}#{key}" if prefix else str(key)))
    return flat if flat else {prefix: value}


def test_the_two_bundles_differ_only_where_intended():
    unetpp, unet = (sorted(p.name for p in (bundle / "configs").iterdir()) for bundle in BUNDLES)
    assert unetpp == unet
    for name in unet:
        a, b = (bundle / "configs" / name for bundle in BUNDLES)
        if not name.endswith(".json"):
            assert a.read_text() == b.read_text(), name
            continue
        first, second = flat_config(json.loads(a.read_text())), flat_config(json.loads(b.read_text()))
        differing = {key for key in first.keys() | second.keys()
                     if first.get(key, KeyError) != second.get(key, KeyError)}
        assert differing == INTENDED_DIFFERENCES.get(name, set()), name
    assert json.loads((BUNDLES[0] / "configs" / "train.json").read_text())["network_def"]["_target_"] == \
        "pipeline.networks.UNetPlusPlus"
    assert json.loads((BUNDLES[1] / "configs" / "train.json").read_text())["network_def"]["_target_"] == \
        "pipeline.networks.UNet"


TRAIN_CHAIN = ["LoadModalitiesd", "LoadLabeld", "Spacingd", "Orientationd", "NormalizeModalitiesd", "SpatialPadd",
               "EnsureTyped", "RandCropByPosNegLabeld", "RandInPlaneElasticd", "RandAffined", "RandFlipd", "RandFlipd",
               "RandScaleIntensityd", "RandShiftIntensityd"]
VAL_CHAIN = ["LoadModalitiesd", "LoadLabeld", "Spacingd", "Orientationd", "NormalizeModalitiesd", "EnsureTyped"]
MONAI_HANDLERS = ["LrScheduleHandler", "ValidationHandler", "StatsHandler", "TensorBoardStatsHandler"]


@pytest.mark.parametrize("settings,train_chain,val_chain,handlers", [
    ({}, TRAIN_CHAIN, VAL_CHAIN, MONAI_HANDLERS + ["ResumeHandler"]),
    ({"border_weight": True, "cache_device": "cpu", "resume": False, "time_budget_s": 60, "early_stop_patience": 3,
      "progress_bar": True},
     TRAIN_CHAIN[:7] + ["BorderWeightd", "ToDeviced"] + TRAIN_CHAIN[7:], VAL_CHAIN + ["ToDeviced"],
     MONAI_HANDLERS + ["TimeBudgetHandler", "EarlyStoppingHandler", "ProgressBarHandler"]),
], ids=["defaults", "all-switched"])
def test_config_values_switch_the_named_transforms_and_the_handlers(settings, train_chain, val_chain, handlers,
                                                                    datalist, tmp_path):
    """train.json composes its chains from named lists and switches the optional parts with ``_disabled_``:
    validation runs the training chain's deterministic part (the same transform objects) without the padding."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLES[0] / "configs" / "train.json"), PROFILE])
    parser.update({"datalist": str(datalist), "bundle_root": str(tmp_path), "cache_rate": 0.0, "progress_bar": False,
                   **settings})
    training = parser.get_parsed_content("train#preprocessing").transforms
    validation = parser.get_parsed_content("validate#preprocessing").transforms
    assert [type(t).__name__ for t in training] == train_chain
    assert [type(t).__name__ for t in validation] == val_chain
    assert all(any(v is t for t in training) for v in validation)
    assert [type(h).__name__ for h in parser.get_parsed_content("train#handlers")] == handlers


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_metadata_validates_against_the_bundle_schema(bundle):
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    jsonschema.validate(metadata, json.loads(SCHEMA.read_text()))
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))
    assert metadata["network_data_format"]["inputs"]["image"]["channel_def"] == {
        "0": "CBF", "1": "CBV", "2": "MTT", "3": "Tmax"}


# Releases without wheels for Python 3.10 (the model zoo's runner), checked by hand with pip's --python-version (no
# network here): numpy 2.3 and 2.4, scipy 1.16 and 1.17, pandas 3 need Python 3.11. (PyYAML "6.0", the release
# 6.0.0, has no wheels beyond Python 3.11: the pins are exact three-part releases.)
NOT_ON_PYTHON_3_10 = {"numpy": ("2.3.", "2.4."), "scipy": ("1.16.", "1.17."), "pandas": ("3.",)}


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_metadata_pins_versions_that_install_on_python_3_10_to_3_13(bundle):
    """Every version metadata.json pins is one of the versions checked to install on Python 3.10 through 3.13
    (pipeline.export.metadata.PINNED_VERSIONS), and the packages are those the bundle's code and configs import."""
    from pipeline.export.metadata import OWN_KEYS, PINNED_VERSIONS, required_distributions
    from pipeline.export.vendoring import plan_vendoring

    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    pins = {name: metadata[key] for name, key in OWN_KEYS.items()} | metadata["required_packages_version"]
    assert pins == {name: PINNED_VERSIONS[name] for name in pins}
    for name, version in pins.items():
        assert version.count(".") == 2, (name, version)  # an exact release, as the zoo installs NAME==VERSION
        assert not version.startswith(NOT_ON_PYTHON_3_10.get(name, ())), (name, version)
    configs = [json.loads(p.read_text()) for p in (bundle / "configs").glob("*.json") if p.name != "metadata.json"]
    assert sorted(pins, key=str.lower) == required_distributions(plan_vendoring(configs, ROOT).third_party, configs)


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
@pytest.mark.parametrize("workflow_type,config", [("train", "train.json"), ("infer", "inference.json")])
def test_config_workflow_finds_every_required_property(bundle, workflow_type, config, datalist, tmp_path):
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / config), PROFILE],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        datalist=str(datalist),
        bundle_root=str(tmp_path),
        cache_rate=0.0,
    )
    workflow.initialize()
    assert workflow.check_properties() == []


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
@pytest.mark.parametrize("norm,expected", [("instance", "SlidingWindowInferer"), ("batch", "OverlapTileInferer")])
def test_inference_picks_its_inferer_by_the_networks_normalisation(bundle, norm, expected, datalist):
    """Instance norm sees the tile: MONAI windows of the training patch. Batch norm does not: grown tiles.
    Reduced precision is on by default exactly where it pays off (CPUs with native bf16, GPUs)."""
    from monai.bundle import ConfigParser

    from pipeline.inferers import ForegroundCropInferer
    from pipeline.precision import AutocastInferer, low_precision_pays_off
    from pipeline.runtimes import RuntimeInferer, default_runtime

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json"), PROFILE])
    parser["datalist"] = str(datalist)
    parser["network_def#norm"] = norm
    parser["patch_size"] = [96, 96, 2]
    cropped = parser.get_parsed_content("inferer")
    assert isinstance(cropped, ForegroundCropInferer)  # on by default: the head's bounding box only
    inferer = cropped.inferer
    assert expected in [cls.__name__ for cls in type(inferer.inferer).__mro__]
    assert list(inferer.inferer.roi_size) == [96, 96, -1]  # the strides never pool the slice axis
    device = parser.get_parsed_content("device")
    # runtime "auto": the network in the runtime measured fastest for the device, around the same inferer
    if default_runtime(device) == "torch":
        assert isinstance(inferer, AutocastInferer)
        assert inferer.enabled is low_precision_pays_off(device) and inferer.device_type == device.type
    else:
        assert isinstance(inferer, RuntimeInferer) and inferer.runtime == default_runtime(device)
        assert inferer.reduced_precision is low_precision_pays_off(device)


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_a_bundle_run_stacks_the_channels_its_datalist_names(bundle, config, datalist, tmp_path):
    """prepare chose CBF, CBV, MTT, Tmax and the CT; merging the profile must not pin the bundle to four channels,
    and a datalist prepared with other channels is followed too."""
    four = tmp_path / "four.json"
    four.write_text(json.dumps({**json.loads(datalist.read_text()), "channels": ["CBF", "CBV", "MTT", "Tmax"]}))
    for path, expected in ((datalist, ["CBF", "CBV", "MTT", "Tmax", "CT"]), (four, ["CBF", "CBV", "MTT", "Tmax"])):
        for files in ([str(bundle / "configs" / config)], [str(bundle / "configs" / config), PROFILE]):
            parser = ConfigParser()
            parser.read_config(files)
            parser["datalist"] = str(path)
            assert parser.get_parsed_content("channels") == expected
            assert parser.get_parsed_content("network_def").state_dict()[
                next(iter(parser.get_parsed_content("network_def").state_dict()))].shape[1] == len(expected)
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / config), PROFILE])
    parser["datalist"] = str(tmp_path / "absent.json")  # the zoo's checks run without data: the default channels
    assert parser.get_parsed_content("channels") == ["CBF", "CBV", "MTT", "Tmax"]


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_verify_net_in_out(bundle):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=[str(bundle / "configs" / "inference.json"), PROFILE],
        n=4,
        any=2,
        **{"features": [4, 4, 8, 8, 16]},
    )


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_verify_net_in_out_with_its_default_arguments(bundle):
    """MONAI's tool as a zoo user runs it: n=1, any=1 and inference.json alone; spatial_shape must hold."""
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
    )


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
@pytest.mark.parametrize("config", ["inference.json", "train.json"])
def test_the_bundle_alone_normalizes_as_the_isles2018_profile_does(bundle, config, datalist):
    """The ISLES 2018 settings live in the bundle; without the profile a run gets the same network inputs."""
    from pipeline.data.datalist import load_datalist

    record = load_datalist(datalist, "training")[0]
    chain = "preprocessing" if config == "inference.json" else "validate#preprocessing"
    images = []
    for files in ([str(bundle / "configs" / config)], [str(bundle / "configs" / config), PROFILE]):
        parser = ConfigParser()
        parser.read_config(files)
        parser["datalist"] = str(datalist)
        images.append(torch.as_tensor(parser.get_parsed_content(chain)(dict(record))["image"]))
    without, with_profile = images
    assert float(without.abs().max()) < 10.0  # scaled by percentiles, not raw CBF values in the hundreds or more
    assert torch.equal(without, with_profile)


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_train_resume_export_and_predict(bundle, datalist, tmp_path, capfd):
    output = tmp_path / "run"
    common = ["train", "--postprocessing", "none", "--bundle", str(bundle), "--datalist", str(datalist), "--fold", "0", "--output", str(output)]
    assert main(common + ["--epochs", "1"] + TINY) == 0
    printed = capfd.readouterr().out
    assert "-m monai.bundle run --meta_file" in printed and "train.json" in printed
    models = output / "models"
    assert (models / "model.pt").is_file() and (models / "last.pt").is_file()
    first = torch.load(models / "last.pt", weights_only=True)
    epoch_length = first["trainer"]["epoch_length"]
    assert first["trainer"]["iteration"] == epoch_length  # one epoch done

    # a second run with more epochs continues from the saved epoch, with optimizer and scheduler
    assert main(common + ["--epochs", "2"] + TINY) == 0
    log = capfd.readouterr()
    assert "Restored all variables" in log.out + log.err
    resumed = torch.load(models / "last.pt", weights_only=True)
    assert resumed["trainer"]["iteration"] == 2 * epoch_length and resumed["trainer"]["max_epochs"] == 2
    assert resumed["optimizer"]["state"] and resumed["lr_scheduler"]["last_epoch"] == 2

    exported = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(exported),
        ckpt_file=str(models / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=[str(bundle / "configs" / "inference.json"), PROFILE],
        **{"features": [4, 8, 8, 16, 16], "datalist": str(datalist)},  # its channels: the four maps and the CT
    )
    scripted = torch.jit.load(str(exported))
    assert scripted(torch.zeros(1, 5, 32, 32, 2)).shape == (1, 2, 32, 32, 2)

    predictions = tmp_path / "pred"
    assert main(["predict", "--bundle", str(bundle), "--input", str(datalist), "--output", str(predictions),
                 "--checkpoint", str(models / "model.pt"), "--set", "features=[4,8,8,16,16]"]) == 0
    assert len(list(predictions.glob("*.nii.gz"))) == 2


def test_evaluate_config_scores_the_validation_fold(datalist, tmp_path):
    bundle = BUNDLES[0]
    output = tmp_path / "run"
    assert main(["train", "--postprocessing", "none", "--bundle", str(bundle), "--datalist", str(datalist), "--output", str(output),
                 "--epochs", "1"] + TINY) == 0
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / "train.json"), str(bundle / "configs" / "evaluate.json"), PROFILE],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type="train",
        datalist=str(datalist),
        bundle_root=str(bundle),
        ckpt_dir=str(output / "models"),
        output_dir=str(tmp_path / "eval"),
        features=[4, 8, 8, 16, 16],
        cache_rate=0.0,
    )
    workflow.initialize()
    workflow.run()
    assert (tmp_path / "eval" / "val_mean_dice_raw.csv").is_file()
    assert "val_mean_dice" in (tmp_path / "eval" / "metrics.csv").read_text()


def test_plans_drive_training_and_travel_with_the_checkpoint(datalist, tmp_path, capfd):
    import nibabel as nib

    from pipeline.data.datalist import load_datalist
    from pipeline.data.plans import load_plans, write_plans

    plans = load_plans(datalist.parent / "plans.json")  # written by prepare
    three_d = plans["configurations"]["3d_anisotropic"]  # trained here through --configuration
    assert three_d["strides"][0] == [2, 2, 1]  # 2-slice slabs: the slice axis is not pooled
    depth = len(three_d["strides"])
    three_d.update(patch_size=[64, 64, 2], features=[4] * (depth + 1), batch_size=2)
    # resample in-plane to 1.8 mm, keep the slices (0): the network then sees about half the native grid
    plans.update(resample_pixdim=[1.8, 1.8, 0.0])
    tiny = write_plans(plans, tmp_path / "plans.json")
    bundle = BUNDLES[0]
    output = tmp_path / "run"
    assert main(["train", "--postprocessing", "none", "--bundle", str(bundle), "--datalist", str(datalist), "--output", str(output),
                 "--epochs", "1", "--plans", str(tiny), "--configuration", "3d_anisotropic", "--set", "cache_rate=0.0",
                 "--set", "val_interval=1", "--set", "network_def#norm=batch"]) == 0
    assert "--pixdim '[1.8,1.8,0.0]'" in capfd.readouterr().out
    trained = load_plans(output / "models" / "trained_plans.json")
    assert trained["configuration"] == "3d_anisotropic" and trained["kernel_sizes"] == three_d["kernel_sizes"]
    assert trained["features"] == [4] * (depth + 1) and trained["resample_pixdim"] == [1.8, 1.8, 0.0]
    assert trained["network_overrides"] == {"network_def#norm": "batch"}
    # predict rebuilds the planned network, at the planned spacing, from the plans beside the checkpoint,
    # and Invertd brings each prediction back onto the case's native grid with its reference header
    predictions = tmp_path / "pred"
    assert main(["predict", "--bundle", str(bundle), "--input", str(datalist), "--output", str(predictions),
                 "--checkpoint", str(output / "models" / "model.pt"), "--set", "channels_last=True"]) == 0
    printed = capfd.readouterr().out
    assert "--pixdim '[1.8,1.8,0.0]'" in printed
    assert "--patch_size '[64,64,2]'" in printed  # the inference window is the training patch
    # batch-norm weights load only into the batch-norm network
    assert shlex.join(["--network_def#norm", "batch"]) in printed
    for record in load_datalist(datalist, "testing"):
        written, reference = nib.load(predictions / f"{record['case_id']}.nii.gz"), nib.load(record["reference"])
        assert written.shape == reference.shape
        np.testing.assert_array_equal(written.affine, reference.affine)
        np.testing.assert_array_equal(written.header["pixdim"], reference.header["pixdim"])


def test_the_2d_default_trains_on_single_slices_and_predicts_every_slice(datalist, tmp_path, capfd):
    import nibabel as nib

    from pipeline.data.datalist import load_datalist
    from pipeline.data.plans import load_plans, write_plans
    from pipeline.planning.bundle_settings import TRAINED_PLANS

    plans = load_plans(datalist.parent / "plans.json")  # written by prepare: 2d, and 3d_anisotropic beside it
    assert plans["configuration"] == "2d" and list(plans["configurations"]) == ["2d", "3d_anisotropic"]
    plans.update(patch_size=[64, 64, 1], features=[4] * (plans["depth"] + 1), batch_size=2)
    tiny = write_plans(plans, tmp_path / "plans.json")
    bundle, output = BUNDLES[0], tmp_path / "run"
    assert main(["train", "--postprocessing", "none", "--bundle", str(bundle), "--datalist", str(datalist),
                 "--output", str(output), "--epochs", "1", "--plans", str(tiny), "--set", "cache_rate=0.0"]) == 0
    printed = capfd.readouterr().out
    assert "configuration 2d" in printed and "--patch_size '[64,64,1]'" in printed
    trained = load_plans(output / "models" / TRAINED_PLANS)
    assert trained["configuration"] == "2d" and all(k[2] == 1 for k in trained["kernel_sizes"])
    predictions = tmp_path / "pred"
    assert main(["predict", "--bundle", str(bundle), "--input", str(datalist), "--output", str(predictions),
                 "--model", str(output)]) == 0
    assert "--patch_size '[64,64,1]'" in capfd.readouterr().out  # one slice per window
    for record in load_datalist(datalist, "testing"):
        assert nib.load(predictions / f"{record['case_id']}.nii.gz").shape == nib.load(record["reference"]).shape
    assert main(["train", "--postprocessing", "none", "--bundle", str(bundle), "--datalist", str(datalist),
                 "--output", str(tmp_path / "bad"), "--epochs", "1", "--plans", str(tiny), "--configuration",
                 "3d_fullres"]) == 2
    assert "no '3d_fullres' configuration" in capfd.readouterr().err


def run_tiny_training(datalist: Path, bundle_root: Path, **overrides) -> ConfigWorkflow:
    """Run the UNet++ bundle's train.json through MONAI's ConfigWorkflow with a tiny network, validating every
    epoch, plus ``overrides``; return the finished workflow."""
    bundle = BUNDLES[0]
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / "train.json"), PROFILE],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type="train",
        datalist=str(datalist),
        bundle_root=str(bundle_root),
        **{"val_interval": 1, "cache_rate": 0.0, "features": [4, 8, 8, 16, 16], "patch_size": [64, 64, 2], **overrides},
    )
    workflow.initialize()
    workflow.run()
    return workflow


def test_border_weights_and_the_gpu_fast_path_switches_train_one_epoch_on_cpu(datalist, tmp_path):
    """border_weight, amp (bf16 autocast on CPU), channels_last, cache_device and compile, all switched on;
    the GPU-only effects (cuDNN autotuning, device caching on a GPU) cannot be measured on a CPU."""
    from pipeline.precision import AutocastInferer

    workflow = run_tiny_training(
        datalist, tmp_path, epochs=1, border_weight=True, amp=True, channels_last=True, cache_device="cpu",
        compile=True, compile_kwargs={"backend": "eager"},  # dynamo without a C++ toolchain: the switch, not inductor
    )
    trainer = workflow.parser.get_parsed_content("train#trainer")
    sample = trainer.state.output[0]
    assert sample["label"].shape[0] == 2  # label + border weights reached the loss
    assert not torch.allclose(sample["label"][1], torch.ones_like(sample["label"][1]))  # w_c differs from 1
    assert torch.isfinite(torch.as_tensor(sample["loss"]))
    assert isinstance(trainer.inferer, AutocastInferer) and trainer.inferer.dtype == torch.bfloat16
    network = workflow.parser.get_parsed_content("network")
    convs = [m.weight for m in network.modules() if isinstance(m, torch.nn.Conv3d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in convs)
    assert (tmp_path / "models" / "last.pt").is_file() and (tmp_path / "models" / "model.pt").is_file()


def test_early_stopping_ends_training_when_validation_stops_improving(datalist, tmp_path):
    """min_delta 1.0 is more than Dice can ever gain: the first validation sets the best, the second stops."""
    workflow = run_tiny_training(datalist, tmp_path, epochs=4, early_stop_patience=1, early_stop_min_delta=1.0)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2 and trainer.state.max_epochs == 4
    saved = torch.load(tmp_path / "models" / "last.pt", weights_only=True)["trainer"]
    assert saved["iteration"] == 2 * saved["epoch_length"]  # the final checkpoint holds the stopped state


@pytest.mark.parametrize("config", sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("bundles/*/configs/*.json")))
def test_config_json_is_formatted_as_the_model_zoo_pre_commit_formats_it(config):
    """The zoo's pre-commit hook ``pretty-format-json --no-sort-keys --indent=4`` would leave the file unchanged."""
    text = (ROOT / config).read_text()
    assert text == json.dumps(json.loads(text), indent=4, ensure_ascii=True) + "\n"


def _condensed_output_of(script: str) -> list[str]:
    import subprocess
    import sys

    from pipeline.bundles import TracebackCondenser

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    condenser = TracebackCondenser()
    return [shown.rstrip("\n") for line in done.stderr.splitlines(keepends=True) if (shown := condenser.feed(line))]


def test_a_monai_config_wrapper_is_dropped_and_the_error_it_wraps_is_shown():
    # a real MONAI config expression that fails: MONAI re-raises it as "Failed to evaluate ConfigExpression"
    shown = _condensed_output_of(
        "from monai.bundle import ConfigParser\n"
        "ConfigParser({'run': ['$int(\"not a number\")']}).get_parsed_content('run')\n")
    assert any(line.startswith("ValueError: invalid literal for int()") for line in shown)
    assert not any("Failed to evaluate" in line or "not a number\")" in line for line in shown if "ValueError" not in line)
    assert not any(line.startswith(("Traceback", "  File")) for line in shown)


def test_a_chained_error_of_our_own_keeps_both_lines():
    shown = _condensed_output_of(
        "try:\n    raise OSError('disk full')\n"
        "except OSError as error:\n    raise RuntimeError('Failed to evaluate the case list') from error\n")
    assert [line for line in shown if line.strip()] == ["OSError: disk full", "RuntimeError: Failed to evaluate the case list"]
