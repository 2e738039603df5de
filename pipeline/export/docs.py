"""The text files of an exported bundle: ``large_files.yml`` (the model zoo's template for hosting the weights)
and ``docs/README.md``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# what large_files.yml says until the weights are hosted somewhere
URL_PLACEHOLDER = "https://REPLACE-WITH-THE-URL-WHERE-YOU-HOST/{name}"


def large_files_yaml(files: Sequence[tuple[str, str]]) -> str:
    """``large_files.yml`` in the model zoo's form for ``(path in the bundle, md5)`` pairs.

    The ``url`` of each is :data:`URL_PLACEHOLDER`: whoever hosts the files replaces it. MONAI's
    ``download_url`` (which the zoo's CI calls) skips a file already present with the right hash, so the bundle
    verifies as it is.

    Returns:
        The YAML text.
    """
    lines = ["# The bundle's large files, in the model zoo's form (see docs/README.md, \"Large files\").",
             "# Replace each url with where the file is hosted; hash_val is the MD5 of the file written by the export.",
             "large_files:"]
    for path, md5 in files:
        name = path.rsplit("/", 1)[-1]
        lines += [f'- path: "{path}"', f'  url: "{URL_PLACEHOLDER.format(name=name)}"',
                  f'  hash_val: "{md5}"', '  hash_type: "md5"']
    return "\n".join(lines) + "\n"


def _packages(metadata: Mapping[str, Any]) -> list[str]:
    pins = [f"monai=={metadata['monai_version']}", f"torch=={metadata['pytorch_version']}",
            f"numpy=={metadata['numpy_version']}"]
    return pins + [f"{k}=={v}" for k, v in (metadata.get("required_packages_version") or {}).items()]


def readme(metadata: Mapping[str, Any], name: str, source: Mapping[str, str], configs: Sequence[str],
           modules: int) -> str:
    """``docs/README.md`` of an exported bundle.

    Args:
        metadata: the exported metadata.
        name: the bundle folder's name.
        source: what the export was made from: ``bundle``, ``checkpoint`` (names) and ``score`` (where the score came
            from).
        configs: the config files of the bundle.
        modules: how many modules ``scripts/`` holds.

    Returns:
        The Markdown text.
    """
    image = metadata["network_data_format"]["inputs"]["image"]
    channels = [image["channel_def"][str(i)] for i in range(image["num_channels"])]
    shape = " x ".join(image.get("spatial_shape") or [])
    metrics = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in metadata.get("eval_metrics", {}).items())
    example = {c: f"case_1/{c}.nii.gz" for c in channels}
    entry = ('{"case_id": "case_1", "image": {'
             + ", ".join(f'"{k}": "{v}"' for k, v in example.items()) + '}, "reference": "case_1/CT.nii.gz"}')
    requirements = "\n".join(_packages(metadata))
    config_list = ", ".join(f"`{c}`" for c in configs)
    return f"""# {metadata.get('name', name)}

{metadata.get('description', '')}

Version {metadata['version']}: {metadata['changelog'][metadata['version']]}

This bundle was written by `python -m pipeline export` from `{source['bundle']}` and the checkpoint
`{source['checkpoint']}`. It runs with MONAI's own tooling alone: the code its configs name is vendored in
`scripts/` ({modules} modules, referenced as `scripts.*` as in the MONAI model zoo), and the dataset profile
and the trained network's settings are written into its configs ({config_list}), so no profile or override
is needed.

## Model

- Input: {len(channels)} channels, in this order: {', '.join(channels)} (`channels` in `configs/inference.json`).
  Each is normalized as `modalities` in the configs says. The files of a case must share one grid (within
  `geometry_tolerance_mm`), except the modalities `resample_to_reference` names, which are resampled onto it.
- Network input patches: {shape} voxels (`network_data_format` in `configs/metadata.json`); whole cases are
  inferred by the configured inferer (`inferer` in `configs/inference.json`).
- Output: one mask per case (uint8, 0 background, 1 lesion) on the grid and with the header of the case's
  reference image (`reference`, else the first channel).
- Score: {metrics or 'none recorded'} ({source['score']}).

## Data

The configs read a MONAI datalist (`datalist`, by default `<dataset_dir>/datalist.json`), as
`python -m pipeline prepare` writes it: paths relative to the datalist's folder, one entry per case in
`testing` (for inference) or `training` (with `label` and `fold`, for `train.json`), e.g.

```json
{{"testing": [{entry}]}}
```

## Running it

Install the packages `configs/metadata.json` lists (on a CPU-only machine install torch from the PyTorch CPU index
first, e.g. `pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`):

```bash
pip install {' '.join(_packages(metadata))}
```

From this folder (so that `scripts` is importable):

```bash
python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\
    --logging_file configs/logging.conf --dataset_dir /path/to/data     # reads /path/to/data/datalist.json
python -m monai.bundle run --config_file configs/inference.json --datalist /path/to/datalist.json \\
    --output_dir /path/to/predictions
```

Predictions go to `output_dir` (default `eval/`), with `manifest.csv` and, when a case fails, `failures.csv`.
Other settings on the command line as usual, e.g. `--output_format isles2018 --team_name TEAM`, `--tta True`.

Train or fine-tune (`train.json`, `--datalist` with `training` entries and folds; checkpoints in `models/`):

```bash
python -m monai.bundle run --config_file configs/train.json --meta_file configs/metadata.json \\
    --logging_file configs/logging.conf --datalist /path/to/datalist.json --fold 0
```

Check the bundle and export the network to TorchScript with MONAI's tools:

```bash
python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath eval/schema.json
python -m monai.bundle verify_net_in_out --net_id network_def --meta_file configs/metadata.json \\
    --config_file configs/inference.json
python -m monai.bundle ckpt_export --net_id network_def --filepath models/model.ts --ckpt_file models/model.pt \\
    --meta_file configs/metadata.json --config_file configs/inference.json
```

## Large files

`models/model.pt` (the weights, a state dict: `torch.load(path, weights_only=True)`) and `models/model.ts`
(TorchScript) are in this folder. To publish the bundle without them (as the model zoo does), host both files
and put their addresses in `large_files.yml` in place of the placeholder `url`s; the `hash_val`s are their MD5
sums. `python -m monai.bundle download` and the zoo's CI then fetch them, and skip a file already present with
the right hash.

## Requirements

```
{requirements}
```

These versions install on Python 3.10 through 3.13.

## License

The bundle, the vendored code in `scripts/` and the weights: see `LICENSE` (Apache License 2.0). The data the
network was trained on has its own terms (ISLES: see the challenge's rules).

## Intended use

{metadata.get('intended_use', 'Research only.')}
"""
