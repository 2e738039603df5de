"""``python -m pipeline predict``: a bundle's inference config on a folder or datalist (see :mod:`pipeline.predict`)."""

from __future__ import annotations

import argparse

from pipeline.cli.arguments import add_bundle_arguments


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``predict`` sub-command to ``sub``."""
    p = sub.add_parser("predict", parents=parents, help="predict with a bundle's inference config; outputs on the native grid")
    p.add_argument("--input", required=True, help="a dataset folder (any known layout) or a datalist JSON")
    p.add_argument("--output", required=True, help="folder the predictions are written to")
    p.add_argument("--format", default="nifti", choices=["nifti", "isles2018", "isles2022", "isles2024", "dicom-seg"],
                   help="nifti: <case_id>.nii.gz; isles2018: SMIR.<name>.<CT_MTT id>.nii; isles2022: <DWI name>_msk; "
                        "isles2024: the challenge container's images/stroke-lesion-segmentation/output.mha (one "
                        "folder per case, <case_id>/images/..., when several cases are predicted); dicom-seg (DICOM "
                        "input): <case_id>_seg.dcm, a DICOM Segmentation referencing the NCCT series, with "
                        "<case_id>_summary.json/.png (core, Tmax > 6 s and mismatch volumes), the PNG as a DICOM "
                        "Secondary Capture <case_id>_summary.dcm, and <case_id>.nii.gz")
    p.add_argument("--name", default="team", help="team name in ISLES 2018 submission file names")
    p.add_argument("--split", default="testing", choices=["testing", "training"],
                   help="which cases of the datalist or folder to predict (default testing)")
    p.add_argument("--checkpoint", default=None,
                   help="weights, a train --output folder or a folder of fold runs; several, comma-separated, are "
                        "ensembled (the mean of their probabilities) (default: BUNDLE/models/model.pt)")
    p.add_argument("--model", default=None, metavar="RUN",
                   help="a train --output folder (its best model, else its last checkpoint), or the --output of "
                        "train --fold cv, whose folds are ensembled")
    p.add_argument("--probabilities", action="store_true", help="also write float16 probability maps (.npz)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the probabilities over mirrored inputs (the axes the network "
                        "pools: in-plane for the bundles)")
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnxruntime", "openvino"],
                   help="what runs the network: auto (default) picks the fastest measured for the device (onnxruntime "
                        "on CPUs without native bfloat16 when installed, else torch); the ONNX runtimes run the "
                        "same network, exported once per window shape and cached, behind the same windows")
    p.add_argument("--postprocessing", default=None, metavar="none|FILE",
                   help="the post-processing (threshold, smallest lesion component): default the postprocessing.json "
                        "that train/postprocess fitted beside the model; 'none': threshold 0.5, nothing removed")
    p.add_argument("--overwrite", action="store_true", help="replace predictions already in --output")
    p.add_argument("--strict", action="store_true",
                   help="fail a case with an empty or constant channel instead of warning about it")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes (one per GPU): shards the cases under torch.distributed.run with configs/multi_gpu_inference.json")
    p.add_argument("--in-process", action="store_true",
                   help="run the bundle's monai.bundle run line in this Python process instead of a new one (for a "
                        "caller that has torch and MONAI loaded already, such as a notebook calling "
                        "pipeline.cli.main); not with --nproc")
    add_bundle_arguments(
        p, "plans.json the network was trained with (default: trained_plans.json beside the checkpoint, if any)",
        "inferer#sw_batch_size=4")
    p.set_defaults(func=command_predict)


def command_predict(args: argparse.Namespace) -> int:
    """``predict --bundle DIR --input DIR|datalist --output DIR [--format ...] [--name TEAM]``.

    Returns the exit status of :func:`pipeline.predict.run_predict`.
    """
    from pipeline.predict import run_predict

    return run_predict(args, in_process=bool(getattr(args, "in_process", False)))
