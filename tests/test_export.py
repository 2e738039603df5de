"""``python -m pipeline export``: a bundle and its trained weights as a standalone MONAI model-zoo bundle.

The main test trains a tiny network, exports it, and checks the export where a zoo user has it: in a fresh virtual
environment holding only the packages the exported ``metadata.json`` lists (not this project), the model zoo's own
``ci/verify_bundle.py`` passes in full mode, and ``python -m monai.bundle run`` predicts what
``python -m pipeline predict`` predicts.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.__main__ import main
from pipeline.export import metadata as meta
from pipeline.export.settings import bake
from pipeline.export.vendoring import (
    ProjectSource, plan_vendoring, rewrite_references, vendor_source, write_vendored,
)
from pipeline.networks import UNet

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"unet": ROOT / "bundles" / "isles_unet", "unetplusplus": ROOT / "bundles" / "isles_unetplusplus"}
ZOO_CI = ROOT / "tests" / "data" / "model_zoo_ci"
SCHEMA = ROOT / "tests" / "data" / "meta_schema_20240725.json"
TINY_FEATURES = [4, 4, 8, 8, 16]
TINY_STRIDES = [[2, 2, 1]] * 4
TINY_KERNELS = [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
# a child Python that cannot import this project: any import of ``pipeline`` fails
NO_PROJECT = textwrap.dedent("""
    import importlib.abc, sys
    class NoProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pipeline" or name.startswith("pipeline."):
                raise ImportError("this project is not importable here: " + name)
    sys.meta_path.insert(0, NoProject())
""")


def bundle_configs(bundle: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((bundle / "configs").glob("*.json"))
            if p.name != "metadata.json"}


# --- the import closure --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_the_closure_holds_what_the_configs_name_and_no_command_or_other_phase(name):
    plan = plan_vendoring(bundle_configs(BUNDLES[name]).values(), ROOT)
    modules = set(plan.modules)
    assert {"pipeline.transforms.loading", "pipeline.predict.engine", "pipeline.training.trainer"} <= modules
    left_out = ("pipeline.cli", "pipeline.benchmark", "pipeline.report", "pipeline.data.synthetic",
                "pipeline.evaluation", "pipeline.predict.command", "pipeline.training.command", "pipeline.bundles",
                "pipeline.data.prepare", "pipeline.data.layouts", "pipeline.planning", "pipeline.__main__")
    assert not [m for m in modules if m.startswith(left_out)]
    # packages whose __init__ imports a command are vendored as stubs; configs name the defining modules
    assert {"pipeline", "pipeline.predict", "pipeline.training", "pipeline.networks"} <= plan.stubs
    assert plan.references["pipeline.predict.ResilientEvaluator"] == "scripts.predict.engine.ResilientEvaluator"


def test_reexports_resolve_to_the_defining_module_and_imports_are_rewritten_in_place(tmp_path):
    package = tmp_path / "pipeline"
    (package / "a").mkdir(parents=True)
    (package / "__init__.py").write_text('"""Top."""\n')
    (package / "a" / "__init__.py").write_text(
        '"""Re-exports."""\nfrom pipeline.a.impl import helper\nfrom pipeline.heavy import everything\n'
        "REGISTRY = {}\n")
    (package / "a" / "impl.py").write_text("import numpy as np\n\n\ndef helper():\n    return np.zeros(1)\n")
    (package / "heavy.py").write_text("import pandas\n\neverything = 1\n")
    (package / "user.py").write_text(textwrap.dedent("""\
        \"\"\"Uses pipeline.a.helper.\"\"\"
        from pipeline.a import helper  # noqa: F401 - re-exported
        import os


        def late():
            from pipeline.a import REGISTRY, impl as implementation
            return REGISTRY, implementation, os.sep
        """))
    plan = plan_vendoring([{"x": {"_target_": "pipeline.user.late"}, "y": "$pipeline.a.helper()"}], tmp_path)
    assert plan.references == {"pipeline.user.late": "scripts.user.late", "pipeline.a.helper": "scripts.a.impl.helper"}
    # REGISTRY is defined in pipeline/a/__init__.py: that __init__ is needed in full, with what it imports
    assert set(plan.modules) == {"pipeline", "pipeline.a", "pipeline.a.impl", "pipeline.user", "pipeline.heavy"}
    assert plan.stubs == {"pipeline"}
    assert set(plan.third_party) == {"numpy", "pandas"}
    text = vendor_source(ProjectSource(tmp_path), "pipeline.user")
    assert 'from scripts.a.impl import helper  # noqa: F401 - re-exported\n' in text
    assert "    from scripts.a import REGISTRY, impl as implementation\n" in text
    assert text.startswith('"""Uses scripts.a.helper."""\nfrom')


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_the_rewritten_configs_and_code_name_no_project_module(name, tmp_path):
    configs = bundle_configs(BUNDLES[name])
    plan = plan_vendoring(configs.values(), ROOT)
    rewritten = {n: rewrite_references(c, plan.references) for n, c in configs.items()}
    assert "pipeline." not in json.dumps(rewritten)
    assert "scripts." in json.dumps(rewritten["inference.json"])
    for path in write_vendored(plan, ROOT, tmp_path):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("pipeline"), (path, node.module)
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("pipeline") for a in node.names), path


def test_the_vendored_code_imports_without_the_project(tmp_path):
    configs = bundle_configs(BUNDLES["unetplusplus"])
    plan = plan_vendoring(configs.values(), ROOT)
    write_vendored(plan, ROOT, tmp_path)
    names = ["scripts" + m[len("pipeline"):] for m in sorted(plan.modules)]
    code = NO_PROJECT + f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_requirements_are_the_imports_of_the_vendored_code_at_pins_this_environment_satisfies():
    configs = bundle_configs(BUNDLES["unet"])
    plan = plan_vendoring(configs.values(), ROOT)
    needed = meta.required_distributions(plan.third_party, list(configs.values()))
    assert set(needed) == {"monai", "torch", "numpy", "nibabel", "SimpleITK", "pytorch-ignite", "scipy", "pyyaml",
                           "tqdm", "fire", "tensorboard"}
    fields = meta.requirement_fields(needed)
    assert fields["numpy_version"] == "2.2.6"  # 2.3 and later need Python 3.11
    assert "pandas" not in fields["required_packages_version"]  # no vendored module imports it
    import monai

    assert meta.PINNED_VERSIONS["torch"] == torch.__version__.split("+")[0]
    assert meta.PINNED_VERSIONS["monai"] == monai.__version__


def test_the_profile_and_the_trained_settings_are_baked_where_a_config_uses_them():
    inference = json.loads((BUNDLES["unet"] / "configs" / "inference.json").read_text())
    overlay = json.loads((BUNDLES["unet"] / "configs" / "multi_gpu_inference.json").read_text())
    settings = [("channels", ["CBF", "CT"]), ("label_values", {"255": 1}), ("profile_name", "x"),
                ("features", TINY_FEATURES), ("network_def#norm", "batch"), ("bundle_root", "/somewhere")]
    baked, written = bake(inference, settings)
    assert baked["channels"] == ["CBF", "CT"] and baked["features"] == TINY_FEATURES
    assert baked["network_def"]["norm"] == "batch"
    assert "label_values" not in baked and "profile_name" not in baked  # inference.json neither holds nor uses them
    assert baked["bundle_root"] == "." and baked["ckpt_path"] == "$@bundle_root + '/models/model.pt'"
    assert "channels" in written and "label_values" not in written
    assert bake(overlay, settings)[0] == overlay  # an overlay gets only the ids it holds itself


def test_the_channels_come_from_the_option_the_datalist_the_trained_plans_or_the_profile(tmp_path):
    from pipeline.export.settings import export_settings

    checkpoint = tmp_path / "models" / "model.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    assert export_settings(checkpoint).channels == ["CBF", "CBV", "MTT", "Tmax"]  # the ISLES 2018 profile's
    (checkpoint.parent / "trained_plans.json").write_text(json.dumps(
        {"channels": ["CBF", "CBV", "MTT", "Tmax", "CT"], "features": TINY_FEATURES, "patch_size": [64, 64, 2],
         "strides": TINY_STRIDES, "kernel_sizes": TINY_KERNELS, "batch_size": 2, "target_spacing": [1.0, 1.0, 5.0],
         "configuration": "3d_anisotropic", "version": 1, "network_overrides": {"network_def#norm": "batch"}}))
    chosen = export_settings(checkpoint)
    assert chosen.channels[-1] == "CT" and "trained_plans.json" in chosen.channels_source
    assert ("features", TINY_FEATURES) in chosen.settings and ("network_def#norm", "batch") in chosen.settings
    (tmp_path / "datalist.json").write_text(json.dumps({"channels": ["Tmax", "CBF"], "testing": []}))
    assert export_settings(checkpoint, datalist=tmp_path / "datalist.json").channels == ["Tmax", "CBF"]
    chosen = export_settings(checkpoint, channels=["CBV"], datalist=tmp_path / "datalist.json",
                             overrides=["tta=true", "team_name=X"])
    assert chosen.channels == ["CBV"] and chosen.settings[-2:] == [("tta", True), ("team_name", "X")]


@pytest.mark.parametrize("version,bumped", [("0.1.0", "0.1.1"), ("1.9.9", "1.9.10"), ("2", "2.1")])
def test_the_version_is_bumped_by_one_patch(version, bumped):
    assert meta.bump_version(version) == bumped


@pytest.mark.parametrize("divisor,needs_context,shape", [
    ((16, 16, 1), True, ["32*n", "32*n", "*"]), ((16, 16, 1), False, ["16*n", "16*n", "*"]),
    ((8, 8, 2), True, ["16*n", "16*n", "4*n"]), (None, True, None)])
def test_spatial_shape_states_the_multiple_the_network_needs(divisor, needs_context, shape):
    assert meta.spatial_shape(divisor, needs_context) == shape


# --- refusals and atomicity ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """The weights of the U-Net bundle's network with tiny features (untrained; a bare state dict)."""
    net = UNet(spatial_dims=3, in_channels=4, out_channels=2, strides=TINY_STRIDES,
               kernel_sizes=TINY_KERNELS, features=TINY_FEATURES,
               norm="instance", deep_supervision=True)
    path = tmp_path / "run" / "models" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    return path


def export(checkpoint: Path, out: Path, *extra: str, bundle: str = "unet") -> int:
    return main(["export", "--bundle", str(BUNDLES[bundle]), "--checkpoint", str(checkpoint), "--out", str(out),
                 *extra])


def test_a_non_empty_out_is_refused_without_overwrite(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "zoo" / "isles_unet"
    out.mkdir(parents=True)
    (out / "mine.txt").write_text("keep")
    assert export(tiny_checkpoint, out, "--set", f"features={TINY_FEATURES}") == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_an_out_that_is_or_holds_what_the_export_reads_is_refused(tiny_checkpoint, capsys):
    for out in (BUNDLES["unet"], tiny_checkpoint.parents[1]):  # the source bundle; the run holding the checkpoint
        assert export(tiny_checkpoint, out, "--overwrite") == 2
        assert "which the export reads" in capsys.readouterr().err
    assert tiny_checkpoint.is_file() and (BUNDLES["unet"] / "configs" / "inference.json").is_file()


def test_a_checkpoint_of_another_network_is_refused_before_anything_is_written(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "zoo" / "isles_unet"
    assert export(tiny_checkpoint, out) == 2  # the bundle's default features, not the tiny ones
    err = capsys.readouterr().err
    assert "not a checkpoint of this bundle's network as configured" in err and str(tiny_checkpoint) in err
    assert not (tmp_path / "zoo").exists()


def test_a_checkpoint_without_a_recorded_score_needs_eval_metrics(tiny_checkpoint, tmp_path, capsys):
    assert export(tiny_checkpoint, tmp_path / "out", "--set", f"features={TINY_FEATURES}") == 2
    assert "--eval-metrics" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_failed_export_leaves_no_folder_and_keeps_the_one_it_would_replace(tiny_checkpoint, tmp_path, capsys):
    zoo = tmp_path / "zoo"
    broken = ["--set", f"features={TINY_FEATURES}", "--eval-metrics", '{"mean_dice": 0.5}',
              "--set", "amp#_target_=pipeline.precision.no_such_function"]  # fails while the bundle is built
    assert export(tiny_checkpoint, zoo / "new", *broken) == 2
    assert "no_such_function" in capsys.readouterr().err
    assert not zoo.exists()
    (zoo / "old").mkdir(parents=True)
    (zoo / "old" / "bundle.txt").write_text("earlier export")
    assert export(tiny_checkpoint, zoo / "old", "--overwrite", *broken) == 2
    assert sorted(p.name for p in zoo.iterdir()) == ["old"]  # no staging folder left beside it
    assert (zoo / "old" / "bundle.txt").read_text() == "earlier export"


class ZooVerification:
    """The model zoo's CI on ``models/<bundle>`` with the Python command ``python``, started in the background:
    ``prepare_schema.py`` (the schema is put in ``models/`` first, so MONAI's ``download_url`` skips its download:
    no network), then ``verify_bundle.py`` in full mode."""

    def __init__(self, python: list[str], models: Path, bundle: str, env: dict | None = None):
        (models / SCHEMA.name).write_bytes(SCHEMA.read_bytes())
        (models / "model_info.json").write_text("{}")  # the zoo's list of published bundles: this one is new
        prepare = [*python, str(ZOO_CI / "prepare_schema.py"), "--l", bundle, "--p", str(models)]
        verify = [*python, str(ZOO_CI / "verify_bundle.py"), "-b", bundle, "-p", str(models), "-m", "full"]
        script = " ".join(shlex.quote(a) for a in prepare) + " && " + " ".join(shlex.quote(a) for a in verify)
        self.process = subprocess.Popen(["/bin/sh", "-c", script], cwd=models.parent, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def result(self, timeout: float = 600) -> subprocess.CompletedProcess:
        """Wait for it; its exit status and output."""
        out, err = self.process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out, err)


ZOO_PASSES = ["directory is verified correctly.", "version and changelog are verified correctly.",
              "metadata format is verified correctly.", "data shape is verified correctly.",
              "export weights into TorchScript module successfully.",
              "Provided TorchScript module is verified correctly."]


def test_an_exported_unetplusplus_passes_the_zoo_checks_where_the_project_cannot_be_imported(tmp_path):
    from pipeline.networks import UNetPlusPlus

    net = UNetPlusPlus(spatial_dims=3, in_channels=4, out_channels=2, strides=TINY_STRIDES,
                       kernel_sizes=TINY_KERNELS, features=TINY_FEATURES,
                       norm="instance", deep_supervision=True)
    torch.save({"model": net.state_dict()}, tmp_path / "last.pt")
    out = tmp_path / "models" / "isles_unetplusplus"
    assert export(tmp_path / "last.pt", out, "--set", f"features={TINY_FEATURES}", "--eval-metrics",
                  '{"mean_dice": 0.25}', bundle="unetplusplus") == 0
    metadata = json.loads((out / "configs" / "metadata.json").read_text())
    assert metadata["version"] == "0.1.1" and metadata["eval_metrics"] == {"mean_dice": 0.25}
    assert torch.load(out / "models" / "model.pt", weights_only=True).keys() == net.state_dict().keys()
    # this Python, with the project made unimportable, runs the zoo's scripts
    wrapper = tmp_path / "without_project.py"
    wrapper.write_text(NO_PROJECT + "import os, runpy\nsys.argv = sys.argv[1:]\n"
                       "sys.path[0] = os.path.dirname(sys.argv[0])\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")
    result = ZooVerification([sys.executable, str(wrapper)], tmp_path / "models", "isles_unetplusplus").result()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for line in ZOO_PASSES:
        assert line in result.stdout


# --- the main test: train, export, and run it where the project is not installed --------------------------------


def requirement_lines(fields: dict) -> list[str]:
    """``NAME==VERSION`` lines of metadata fields, as the zoo's ``get_bundle_requirements.py`` writes them."""
    lines = [f"monai=={fields['monai_version']}", f"torch=={fields['pytorch_version']}",
             f"numpy=={fields['numpy_version']}"]
    return lines + [f"{k}=={v}" for k, v in fields["required_packages_version"].items()]


def start_clean_environment(folder: Path, requirements: list[str]) -> tuple[subprocess.Popen, Path]:
    """Start making a virtual environment without this project that holds ``requirements`` (and their
    dependencies) and jsonschema, which the zoo's ``verify_metadata`` needs (the zoo's CI installs it with its
    ``requirements-dev.txt``). It runs in the background: it is the slow part. Where this machine's torch is a
    local build (``2.13.0+cpu``), that build is required, so that no CUDA wheels are pulled. ``pip`` is the
    project environment's, given the new environment's Python (``pip --python``); ``--no-compile`` leaves the
    byte-compiling to the imports that need it."""
    python = folder / "bin" / "python"
    local = torch.__version__.partition("+")[2]
    specs = [f"{r}+{local}" if local and r.startswith("torch==") else r for r in requirements] + ["jsonschema"]
    script = (f"{sys.executable} -m venv --without-pip {folder} && {sys.executable} -m pip --python {python} "
              f"install --quiet --no-compile " + " ".join(f"'{r}'" for r in specs))
    return subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True), python


def test_an_exported_bundle_runs_and_verifies_without_the_project(synthetic_datalist, tmp_path, capsys,
                                                                   monkeypatch):
    """Train a tiny U-Net, export it, and in a fresh environment holding only the packages its metadata.json lists:
    the zoo's verify_bundle.py passes in full mode and ``monai.bundle run`` predicts what ``pipeline predict`` does.
    The environment is made while the network trains, from the requirements the export will list (computed from
    the bundle's configs as the export computes them); the test then checks that the exported metadata lists
    exactly those."""
    started = time.monotonic()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny networks, processes side by side: one thread each
    configs = bundle_configs(BUNDLES["unet"])
    plan = plan_vendoring(configs.values(), ROOT)
    expected = requirement_lines(meta.requirement_fields(meta.required_distributions(plan.third_party,
                                                                                     list(configs.values()))))
    environment, python = start_clean_environment(tmp_path / "venv", expected)

    datalist = synthetic_datalist("export", cases=4, test_cases=1)
    plans = json.loads((datalist.parent / "plans.json").read_text())
    plans.update(patch_size=[64, 64, 2], features=TINY_FEATURES, batch_size=2, strides=TINY_STRIDES,
                 kernel_sizes=TINY_KERNELS)
    (tmp_path / "tiny_plans.json").write_text(json.dumps(plans))
    run = tmp_path / "run"
    assert main(["train", "--bundle", str(BUNDLES["unet"]), "--datalist", str(datalist), "--fold", "0",
                 "--epochs", "1", "--plans", str(tmp_path / "tiny_plans.json"), "--output", str(run),
                 "--set", "cache_rate=0.0", "--set", "val_interval=1"]) == 0
    best = torch.load(run / "models" / "last.pt", weights_only=True)["best_metric"]["best_metric"]

    models = tmp_path / "models"
    out = models / "isles_unet"
    assert main(["export", "--bundle", str(BUNDLES["unet"]), "--checkpoint", str(run), "--out", str(out)]) == 0
    assert f"export: {out} (version 0.1.1" in capsys.readouterr().out
    metadata = json.loads((out / "configs" / "metadata.json").read_text())
    assert metadata["eval_metrics"] == {"mean_dice": round(best, 4)}
    assert list(metadata["changelog"])[0] == "0.1.1" and metadata["changelog"]["0.1.1"]
    inference = json.loads((out / "configs" / "inference.json").read_text())
    assert inference["features"] == TINY_FEATURES and inference["patch_size"] == [64, 64, 2]
    assert inference["channels"] == ["CBF", "CBV", "MTT", "Tmax", "CT"] and inference["bundle_root"] == "."
    assert inference["modalities"]["CBF"]["normalization"]["method"] == "percentile"
    assert "pipeline." not in "".join(p.read_text() for p in (out / "configs").glob("*.json"))
    large = (out / "large_files.yml").read_text()
    assert 'path: "models/model.pt"' in large and 'path: "models/model.ts"' in large and 'hash_type: "md5"' in large
    assert (out / "docs" / "README.md").is_file() and (out / "LICENSE").is_file()
    # what the zoo's CI installs for it: exactly what the clean environment was made with
    listed = subprocess.run([sys.executable, str(ZOO_CI / "get_bundle_requirements.py"), "--b", out.name, "--p",
                             str(models)], cwd=tmp_path, capture_output=True, text=True, check=True)
    requirements = (tmp_path / listed.stdout.strip().splitlines()[-1]).read_text().split()
    assert sorted(requirements) == sorted(expected)

    assert environment.wait(timeout=900) == 0, environment.stdout.read()[-3000:]
    environment_s = time.monotonic() - started
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    assert subprocess.run([str(python), "-c", "import pipeline"], cwd=tmp_path, env=clean,
                          capture_output=True).returncode != 0
    versions = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], env=clean,
                              capture_output=True, text=True)
    assert versions.stdout.strip() == torch.__version__  # the local build (e.g. +cpu): no CUDA wheels were pulled

    # side by side: the zoo's CI in full mode on a copy of the bundle (it writes models/verify_model.ts and
    # eval/schema.json into it), monai.bundle run from the bundle folder, and python -m pipeline predict
    import shutil

    shutil.copytree(out, tmp_path / "ci" / "isles_unet")
    verifying = ZooVerification([str(python)], tmp_path / "ci", "isles_unet", env=clean)
    zoo_predictions = tmp_path / "zoo_predictions"
    running = subprocess.Popen([str(python), "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                                "--dataset_dir", str(datalist.parent), "--output_dir", str(zoo_predictions)],
                               cwd=out, env=clean, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    predictions = tmp_path / "predictions"
    # the clean environment has no ONNX runtime, so its bundle runs the network in torch: the same here, for
    # voxel-for-voxel equality (another runtime agrees to float32 rounding, which can flip a voxel at 0.5)
    assert main(["predict", "--bundle", str(BUNDLES["unet"]), "--input", str(datalist), "--checkpoint", str(run),
                 "--output", str(predictions), "--runtime", "torch"]) == 0
    ran = running.communicate(timeout=600)[0]
    assert running.returncode == 0, ran[-3000:]
    verified = verifying.result()
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
    for line in ZOO_PASSES:
        assert line in verified.stdout

    ours = sorted(predictions.glob("*.nii.gz"))
    assert ours and [p.name for p in ours] == [p.name for p in sorted(zoo_predictions.glob("*.nii.gz"))]
    for path in ours:
        theirs = nib.load(zoo_predictions / path.name)
        np.testing.assert_array_equal(np.asanyarray(theirs.dataobj), np.asanyarray(nib.load(path).dataobj))
        np.testing.assert_array_equal(theirs.affine, nib.load(path).affine)
    print(f"clean environment ready after {environment_s:.0f} s; whole test {time.monotonic() - started:.0f} s")
