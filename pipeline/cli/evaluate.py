"""``python -m pipeline evaluate``: predicted masks against the ground truth (ISLES metrics, clinical volumes)."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from pipeline.cli.arguments import add_logs_argument
from pipeline.errors import CaseError, LayoutError


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``evaluate`` sub-command to ``sub``."""
    p = sub.add_parser("evaluate", parents=parents, help="score predicted masks against the ground truth (ISLES metrics, clinical volumes)")
    p.add_argument("--pred", required=True,
                   help="folder of predicted masks: <case_id>.nii.gz, SMIR.<name>.<ID>.nii, <sub>_ses-X_msk.nii.gz or "
                        "<case_id>/images/stroke-lesion-segmentation/output.mha")
    p.add_argument("--truth", required=True,
                   help="datalist JSON, dataset root, TESTING_GROUND_TRUTH folder, or a folder of <case_id> masks")
    p.add_argument("--out", required=True, help="per-case CSV; <stem>_summary.json and <stem>_clinical.csv go beside it")
    p.add_argument("--baseline", default=None, choices=["threshold"],
                   help="also score the clinical threshold rule (rCBF < 30%% and Tmax > 6 s) on the same cases")
    p.add_argument("--images", default=None, help="datalist JSON giving the CBF/Tmax maps when --truth does not")
    p.add_argument("--report", default=None, metavar="DIR", help="also write the report (report.md and PNGs) to DIR")
    add_logs_argument(p, "training logs for the report: TensorBoard event folder or CSV with an epoch column (repeatable)")
    p.add_argument("--split", default=None, choices=["training", "testing"],
                   help="with a datalist as --truth: pair with the records of this split only (default: the split "
                        "the prediction names and the manifest tell)")
    p.add_argument("--metrics", default="isles2022", choices=["isles2022", "isles2024"],
                   help="lesion-wise F1 and count convention: isles2022 (default; a lesion is found when touched) or "
                        "isles2024 (the challenge's one-to-one matching at IoU >= 0.2, computed by panoptica)")
    p.add_argument("--tolerance-mm", type=float, default=0.01,
                   help="allowed difference of spacing, directions and origin between a prediction and its truth")
    p.set_defaults(func=command_evaluate)


def _print_warnings(caught) -> None:
    """Print each distinct user warning once."""
    for note in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)):
        print(f"  warning: {note}")


def command_evaluate(args: argparse.Namespace) -> int:
    """``evaluate --pred DIR --truth DIR|datalist.json --out metrics.csv [--baseline threshold] [--images datalist.json] [--report DIR]``.

    Exit status 0 when every paired case was scored (predictions without truth are listed and warned about);
    2 when a case failed (a mask whose values are not {0, 1}, another grid, a case the manifest lists as
    failed or missing: each failure names the case and its files), when a prediction file was refused (not
    written by the run that the folder's manifest describes, or a name that fits records of two splits),
    when nothing could be paired and scored, or when the input is unusable. The other cases are scored and
    written whatever one case does.

    Raises:
        CaseError, LayoutError, FileNotFoundError, ValueError: the input is unusable.
    """
    from pipeline.evaluation import evaluate_predictions, format_summary

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = evaluate_predictions(
                args.pred, args.truth, args.out, baseline=args.baseline, images=args.images,
                tolerance_mm=args.tolerance_mm, split=getattr(args, "split", None),
                metrics=getattr(args, "metrics", "isles2022"),
            )
        except (CaseError, LayoutError, FileNotFoundError, ValueError):  # MissingExtraError is a ValueError
            _print_warnings(caught)  # e.g. that the folder has no manifest: it helps to read the error
            raise
    counts = result.summary["counts"]
    print(
        f"evaluate: {counts['predictions']} prediction(s) in {args.pred}, {counts['truth_cases']} truth case(s) from "
        f"{args.truth} ({result.summary['truth_kind']}): {counts['scored']} scored in {time.perf_counter() - start:.1f} s"
    )
    _print_warnings(caught)
    print(format_summary(result.summary))
    for name, path in result.files.items():
        print(f"  wrote {name}: {path}")
    if args.report:
        from pipeline.report import write_report

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            report = write_report(args.report, result, logs=args.logs or ())
        print(f"  wrote report: {report}")
    lines = []
    if result.failures:
        lines += [f"{len(result.failures)} case evaluation(s) failed; the other cases were scored and written:"]
        lines += [f"  {f['error']}" for f in result.failures]
    if result.refused_predictions:
        lines += [f"{len(result.refused_predictions)} prediction file(s) refused, not scored:"]
        lines += [f"  {r['prediction']}: {r['reason']}" for r in result.refused_predictions]
    if counts["scored"] == 0:
        lines += [f"no case was scored ({counts['paired']} paired with a truth case)"]
    if lines:
        print("error: " + "\n".join(lines), file=sys.stderr)
        return 2
    return 0
