"""The network in ONNX Runtime and OpenVINO: the same outputs as torch behind the same inferers, exported once and
cached by its weights, and a stated fall-back to torch whenever a runtime cannot be used."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pipeline.__main__ import main
from pipeline.inferers import MeanEnsemble, segmentation_inferer
from pipeline.networks import UNet, UNetPlusPlus
from pipeline.networks.slice_batching import slice_batched
from pipeline.runtimes import (CACHE_ENV, RUNTIME_ENV, RUNTIMES, SLICE_BATCHED, CompiledNetwork, RuntimeInferer,
                               default_runtime, export_onnx,
                               onnx_file_name, resolve_runtime, runtime_cache_dir, weights_digest)

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "isles_unetplusplus"
ONNX_RUNTIMES = [r for r in RUNTIMES if r != "torch"]


def tiny_unetpp(seed: int = 0, norm: str = "instance") -> UNetPlusPlus:
    torch.manual_seed(seed)
    return UNetPlusPlus(spatial_dims=3, in_channels=3, out_channels=2, strides=[[2, 2, 1]] * 3,
                        kernel_sizes=[[3, 3, 1]] * 4, features=[4, 8, 8, 16], norm=norm,
                        deep_supervision=True).eval()


def onnx_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.onnx"))


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_a_compiled_network_gives_the_torch_output_for_any_batch(runtime, tmp_path):
    net = tiny_unetpp()
    compiled = CompiledNetwork(net, runtime, tmp_path)
    for batch in (3, 1, 2):
        x = torch.randn(batch, 3, 32, 32, 2)
        with torch.no_grad():
            expected = net(x)
        got = compiled(x)
        assert got.shape == expected.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # one export for the window shape (the batch axis and, slice-batched, the depth are open), named by the
    # weights and the shape
    expected_name = onnx_file_name(weights_digest(net), (3, 32, 32, None), SLICE_BATCHED)
    assert [p.name for p in onnx_files(tmp_path)] == [expected_name]
    # what the inferers read off the network is the module's
    assert compiled.size_divisor == net.size_divisor and compiled.strides == net.strides


def test_a_second_run_loads_the_cached_file_and_new_weights_are_exported_again(tmp_path):
    net = tiny_unetpp()
    x = torch.randn(2, 3, 32, 32, 2)
    CompiledNetwork(net, "onnxruntime", tmp_path)(x)
    [first] = onnx_files(tmp_path)
    stamp = first.stat().st_mtime_ns
    CompiledNetwork(net, "onnxruntime", tmp_path)(x)  # another process, same weights: no export
    assert onnx_files(tmp_path) == [first] and first.stat().st_mtime_ns == stamp
    # weights loaded in place after the first call (as the evaluator loads the checkpoint): exported again
    compiled = CompiledNetwork(net, "onnxruntime", tmp_path)
    compiled(x)
    net.load_state_dict(tiny_unetpp(seed=1).state_dict())
    with torch.no_grad():
        expected = net(x)
    torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)
    assert len(onnx_files(tmp_path)) == 2


def test_the_export_is_valid_onnx_and_leaves_no_partial_file(tmp_path):
    path = export_onnx(tiny_unetpp(), torch.randn(1, 3, 32, 32, 2), tmp_path / "net.onnx")
    onnx.checker.check_model(onnx.load(str(path)))
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]


def test_a_damaged_cache_file_is_exported_again(tmp_path):
    net = tiny_unetpp()
    x = torch.randn(1, 3, 32, 32, 2)
    (tmp_path / onnx_file_name(weights_digest(net), (3, 32, 32, None), SLICE_BATCHED)).write_bytes(b"not an onnx file")
    with torch.no_grad():
        expected = net(x)
    torch.testing.assert_close(CompiledNetwork(net, "openvino", tmp_path)(x), expected, rtol=1e-4, atol=1e-4)
    onnx.checker.check_model(onnx.load(str(onnx_files(tmp_path)[0])))


def test_a_cached_file_of_another_network_is_caught_and_exported_again(tmp_path):
    net, other = tiny_unetpp(seed=0), tiny_unetpp(seed=1)
    x = torch.randn(1, 3, 32, 32, 2)
    path = export_onnx(slice_batched(other), x, tmp_path / onnx_file_name(weights_digest(net), (3, 32, 32, None),
                                                                             SLICE_BATCHED), dynamic_spatial_axes=(2,))
    foreign = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fall-back to torch
        got = CompiledNetwork(net, "onnxruntime", tmp_path)(x)
    with torch.no_grad():
        torch.testing.assert_close(got, net(x), rtol=1e-4, atol=1e-4)
    assert path.read_bytes() != foreign


def test_a_cached_file_that_passed_its_check_loads_without_torch_beside_it_until_it_changes(tmp_path):
    net, other = tiny_unetpp(seed=0), tiny_unetpp(seed=1)
    x = torch.randn(1, 3, 32, 32, 2)
    CompiledNetwork(net, "onnxruntime", tmp_path)(x)
    [path] = onnx_files(tmp_path)
    assert path.with_name(path.name + ".onnxruntime.checked").is_file()
    torch_calls = []
    net.register_forward_hook(lambda *_: torch_calls.append(1))
    with torch.no_grad():
        expected = net(x)
    torch_calls.clear()
    torch.testing.assert_close(CompiledNetwork(net, "onnxruntime", tmp_path)(x), expected, rtol=1e-4, atol=1e-4)
    assert torch_calls == []  # loaded as recorded: no check against torch
    # another network's export put at that name after the check: checked again, caught, exported again
    export_onnx(slice_batched(other), x, path, dynamic_spatial_axes=(2,))
    torch.testing.assert_close(CompiledNetwork(net, "onnxruntime", tmp_path)(x), expected, rtol=1e-4, atol=1e-4)
    assert torch_calls


def test_an_export_that_computes_something_else_is_caught_and_torch_runs_instead(tmp_path):
    class ShapeOfTheData(torch.nn.Module):  # the trace keeps the branch of the input it was exported with
        def forward(self, x):
            return x * 2 if float(x.sum()) > 1e6 else x * 3

    net = ShapeOfTheData()
    x = torch.full((1, 3, 8, 8, 2), 1e4)
    compiled = CompiledNetwork(net, "onnxruntime", tmp_path)
    with pytest.warns(UserWarning, match="differs from torch by up to .* on a test window.*runs in torch instead"):
        got = compiled(x)
    torch.testing.assert_close(got, net(x))
    y = torch.randn(1, 3, 8, 8, 2)
    torch.testing.assert_close(compiled(y), net(y))  # and stays in torch


def test_an_unwritable_cache_folder_exports_to_a_temporary_one(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("a file where the folder would be")
    net = tiny_unetpp()
    x = torch.randn(1, 3, 32, 32, 2)
    with torch.no_grad():
        expected = net(x)
    torch.testing.assert_close(CompiledNetwork(net, "openvino", blocker / "compiled")(x), expected,
                               rtol=1e-4, atol=1e-4)
    assert blocker.read_text() == "a file where the folder would be"


def test_a_network_the_exporter_cannot_express_falls_back_to_torch_with_a_warning(tmp_path):
    class Unexportable(torch.nn.Module):  # ONNX has no singular value decomposition
        def forward(self, x):
            return x * torch.linalg.svdvals(x.flatten(2))[..., :1, None, None]

    net = Unexportable()
    x = torch.randn(1, 3, 8, 8, 2)
    compiled = CompiledNetwork(net, "onnxruntime", tmp_path)
    with pytest.warns(UserWarning, match="could not be exported, loaded or checked.*runs in torch instead"):
        got = compiled(x)
    torch.testing.assert_close(got, net(x))
    assert not onnx_files(tmp_path) and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_the_bundles_inferer_gives_the_same_probabilities_in_every_runtime(runtime, tmp_path):
    net = tiny_unetpp()
    x = torch.randn(1, 3, 40, 48, 3)
    roi = [32, 32, -1]
    with torch.no_grad():
        expected = torch.softmax(segmentation_inferer(net, roi, "cpu")(x, net), 1)
        inferer = segmentation_inferer(net, roi, "cpu", runtime=runtime, runtime_cache_dir=str(tmp_path))
        assert isinstance(inferer.inferer, RuntimeInferer)  # inside the foreground crop
        torch.testing.assert_close(torch.softmax(inferer(x, net), 1), expected, rtol=1e-4, atol=1e-4)
        # mirrored TTA and a checkpoint ensemble go through the runtime too
        ensemble = MeanEnsemble([net, tiny_unetpp(seed=2)], activation="softmax", log_output=True)
        reference = segmentation_inferer(ensemble, roi, "cpu", tta=True)(x, ensemble)
        other = segmentation_inferer(ensemble, roi, "cpu", tta=True, runtime=runtime, runtime_cache_dir=str(tmp_path))
        torch.testing.assert_close(other(x, ensemble).exp(), reference.exp(), rtol=1e-4, atol=1e-4)
    assert len(onnx_files(tmp_path)) == 2  # one per member: they share the window shape


def test_a_tile_independent_network_keeps_its_grown_tiles_in_a_runtime(tmp_path):
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=3, out_channels=2, strides=[[2, 2, 1]] * 2, features=[4, 8, 16],
               norm="batch").eval()
    x = torch.randn(1, 3, 64, 64, 2)
    with torch.no_grad():
        expected = segmentation_inferer(net, [32, 32, -1], "cpu")(x, net)
        got = segmentation_inferer(net, [32, 32, -1], "cpu", runtime="openvino", runtime_cache_dir=str(tmp_path))(x, net)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # the whole 64x64 slab in one tile, as in torch: one export of the grown tile's shape
    assert len(onnx_files(tmp_path)) == 1


def test_runtime_names_the_default_and_the_fallback(monkeypatch):
    monkeypatch.delenv(RUNTIME_ENV, raising=False)  # the suite pins torch; here the measured choice
    assert default_runtime("cuda:0") == "torch"
    assert default_runtime("cpu") in RUNTIMES
    assert resolve_runtime("auto", "cpu") == default_runtime("cpu")
    assert resolve_runtime(None, "cpu") == default_runtime("cpu")
    assert resolve_runtime("onnxruntime", "cpu") == "onnxruntime"
    with pytest.warns(UserWarning, match="runs the network on the CPU"):
        assert resolve_runtime("openvino", "cuda:0") == "torch"
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        resolve_runtime("tensorrt", "cpu")
    # PIPELINE_RUNTIME pins what auto means; a GPU still gets torch, and a misspelt name is an error
    monkeypatch.setenv(RUNTIME_ENV, "openvino")
    assert resolve_runtime("auto", "cpu") == "openvino"
    with pytest.warns(UserWarning, match="runs the network on the CPU"):
        assert resolve_runtime("auto", "cuda:0") == "torch"
    monkeypatch.setenv(RUNTIME_ENV, "onnx")
    with pytest.raises(ValueError, match="PIPELINE_RUNTIME='onnx' is not a runtime"):
        resolve_runtime("auto", "cpu")


def test_the_cache_is_the_users_unless_the_environment_moves_it(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime_cache_dir() == str(tmp_path / "xdg" / "isles-pipeline" / "compiled")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "chosen"))
    assert runtime_cache_dir() == str(tmp_path / "chosen")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtimes")
    assert main(["synth", str(root / "data"), "--cases", "1", "--test-cases", "2", "--seed", "5"]) == 0
    assert main(["prepare", "--root", str(root / "data"), "--out", str(root / "datalist.json"), "--folds", "1"]) == 0
    net = UNetPlusPlus(spatial_dims=3, in_channels=5, out_channels=2, strides=[[2, 2, 1]] * 4,
                       kernel_sizes=[[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                       features=[4, 4, 8, 8, 16], norm="instance", deep_supervision=True)
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def test_predict_with_each_runtime_writes_the_same_probabilities(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # the bundle run inherits it
    probabilities = {}
    for runtime in RUNTIMES:
        out = tmp_path / runtime
        assert main(["predict", "--bundle", str(BUNDLE), "--checkpoint", str(dataset / "models" / "model.pt"),
                     "--set", "features=[4,4,8,8,16]", "--input", str(dataset / "datalist.json"),
                     "--output", str(out), "--probabilities", "--runtime", runtime]) == 0
        assert "--runtime " + runtime in capsys.readouterr().out
        probabilities[runtime] = {p.name: np.load(p)["probabilities"].astype(np.float32)
                                  for p in sorted(out.glob("*.npz"))}
        assert not list(out.rglob("*.onnx"))
    assert len(probabilities["torch"]) == 2
    for runtime in ONNX_RUNTIMES:
        for name, expected in probabilities["torch"].items():
            # float16 files: a few steps of 2**-11 apart at most, and the same almost everywhere
            np.testing.assert_allclose(probabilities[runtime][name], expected, atol=5e-3)
            assert np.abs(probabilities[runtime][name] - expected).mean() < 1e-4
    # the exports went to the cache, and nothing was written beside the checkpoint
    assert onnx_files(tmp_path / "cache")
    assert [p.name for p in (dataset / "models").iterdir()] == ["model.pt"]


def test_the_export_cache_key_tells_apart_the_same_weights_computing_another_network():
    net = tiny_unetpp()
    same = tiny_unetpp()
    assert weights_digest(net) == weights_digest(same)
    pruned = tiny_unetpp()
    pruned.inference_level = 2  # the same weights pruned to UNet++ L2: another graph, another export
    assert weights_digest(pruned) != weights_digest(net)
    other = tiny_unetpp(seed=1)
    assert weights_digest(other) != weights_digest(net)
