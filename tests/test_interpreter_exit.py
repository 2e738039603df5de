"""The quicker exit: objects alive at exit are frozen out of the collector, exit handlers still run, and a process
that goes on running is not affected."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_exit_freezes_live_objects_and_earlier_exit_handlers_still_run(tmp_path):
    marker = tmp_path / "earlier-handler.txt"
    script = textwrap.dedent(f"""
        import atexit, gc
        from pipeline.interpreter_exit import skip_exit_collection

        def earlier():  # registered first, so it runs after the freeze
            open({str(marker)!r}, "w").write(str(gc.get_freeze_count()))

        atexit.register(earlier)
        skip_exit_collection()
        skip_exit_collection()
        assert gc.get_freeze_count() == 0, "frozen before the exit"
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(marker.read_text()) > 1000


@pytest.mark.parametrize("bundle", ["isles_unet", "isles_unetplusplus"])
@pytest.mark.parametrize("config", ["inference.json", "multi_gpu_inference.json"])
def test_the_inference_configs_ask_for_the_quicker_exit(bundle, config):
    initialize = json.loads((ROOT / "bundles" / bundle / "configs" / config).read_text())["initialize"]
    targets = [step.get("_target_") for step in initialize if isinstance(step, dict)]
    assert "pipeline.interpreter_exit.skip_exit_collection" in targets
