"""The command line: ``python -m pipeline <command>``.

Commands: ``synth`` (the embedded synthetic ISLES 2018 dataset), ``prepare`` (layout -> datalist,
folds and fingerprint), ``train`` (a bundle's train config), ``predict`` (a bundle's inference config,
outputs on the native grid), ``evaluate`` (ISLES metrics, threshold baseline, clinical volumes),
``report`` (overlays, tables, training curves), ``demo`` (the main job end to end on the embedded
default data), ``benchmark`` (speed and memory against MONAI's defaults: benchmarks/results.md).
Exit status 0 on success; on bad input, 2 with one paragraph naming the case and the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from pipeline.allocator import keep_freed_memory
from pipeline.data.datalist import ALL_FOLDS
from pipeline.errors import EXIT_INTERRUPTED, CaseError, LayoutError, cli_message


def command_synth(args: argparse.Namespace) -> int:
    """``synth OUT --cases N [--test-cases M] [--seed S] [--overwrite]``."""
    from pipeline.data.synthetic import write_synthetic_dataset

    start = time.perf_counter()
    summary = write_synthetic_dataset(
        args.out, cases=args.cases, test_cases=args.test_cases, seed=args.seed, overwrite=args.overwrite
    )
    elapsed = time.perf_counter() - start
    cases = summary.cases
    training = [c for c in cases if c["split"] == "training"]
    testing = [c for c in cases if c["split"] == "testing"]
    dice = [c["threshold_dice"] for c in cases if c.get("threshold_dice") is not None]
    print(
        f"synth: wrote {len(training)} training and {len(testing)} test cases (ISLES 2018 layout) to {args.out} "
        f"in {elapsed:.1f} s (seed {args.seed})"
    )
    if dice:
        print(f"  clinical threshold rule (rCBF < 30% and Tmax > 6 s): mean Dice {sum(dice) / len(dice):.3f} over {len(dice)} cases")
    return 0


def command_prepare(args: argparse.Namespace) -> int:
    """``prepare --root DIR [--layout ...] --out datalist.json [--folds 5] [--seed S] [--skip-incomplete] ...``.

    Every per-case problem is found before anything is written and reported together, naming the case, the
    file and the reason: a case the layout reader cannot read (an empty or ambiguous modality folder, an
    unreadable folder), a missing channel or label, and a file whose content is unusable (unreadable, an
    unsupported data type such as bool or complex, off the reference grid, a label whose values are not
    0/1 after the profile's ``label_values``). Without ``--skip-incomplete`` any of them fails the command
    and nothing is written; with it, those cases are left out and listed in ``skipped_cases.csv`` beside the
    datalist. An empty or constant channel is a warning, listed in ``case_notes.csv`` and the fingerprint
    summary (``strict``, when the parser offers it, fails such a case instead).
    """
    import csv
    import io

    from pipeline.data.datalist import build_datalist, natural_key, select_channels, write_datalist
    from pipeline.data.fingerprint import compute_fingerprint, format_summary, summarize_fingerprint, write_fingerprint
    from pipeline.data.layouts import discover_cases
    from pipeline.data.profiles import load_profile
    from pipeline.io import atomic_write_text

    root = Path(args.root)
    out = Path(args.out)
    skip_incomplete = bool(args.skip_incomplete)
    strict = bool(getattr(args, "strict", False))
    profile = load_profile(args.profile) if args.profile else None
    problems: list[dict] = []  # per-case problems: {"case_id", "split", "file", "reason"}
    layout, profile, records = discover_cases(root, args.layout, profile, problems=problems)
    how = "detected" if args.layout == "auto" else "as asked"
    print(f"prepare: {root} read as layout {layout!r} ({how}), profile {profile.name!r}: "
          f"{len(records) + len(problems)} cases found")
    if args.channels:
        profile = profile.with_channels([c.strip() for c in args.channels.split(",") if c.strip()])
    print(f"  channels in order: {', '.join(profile.channels)}")
    inputs = {Path(p).resolve() for r in records for p in [*r.modalities.values(), r.label] if p}
    if out.resolve() in inputs | {root.resolve()}:
        raise CaseError(None, str(out), "--out names an input of the dataset; choose another datalist path")

    # Missing channels (or a training case's label): named by the file the layout expected, else the case folder.
    complete, incomplete = select_channels(records, profile, skip_incomplete=True)
    by_key = {(r.case_id, r.split): r for r in records}
    label_name = profile.label_modality or "label"
    for item in incomplete:
        record = by_key[(item["case_id"], item["split"])]
        expected = record.extra.get("missing_files", {}) if isinstance(record.extra, dict) else {}
        first = item["missing"][0]
        found = sorted(list(record.modalities) + ([label_name] if record.label else []))
        problems.append({
            "case_id": item["case_id"], "split": item["split"],
            "file": expected.get("label" if first == label_name else first) or record.folder,
            "reason": f"missing modality {', '.join(repr(m) for m in item['missing'])} "
                      f"(found: {', '.join(found) or 'none'}); add it or choose other channels with --channels",
        })

    # The files' content: data types, grids, label values, empty or constant channels.
    notes: list[dict] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, failures = compute_fingerprint(complete, profile, strict=strict, notes=notes)
    for note in sorted({str(w.message) for w in caught if "pixdim" in str(w.message)}):
        print(f"  warning: {note}")
    problems += [{"case_id": f["case_id"], "split": f["split"], "file": f.get("file"),
                  "reason": f.get("reason") or f["error"]} for f in failures]
    problems.sort(key=lambda p: (p["split"] != "training", natural_key(str(p["case_id"]))))

    def described(p: dict) -> str:
        where = f"case {p['case_id']!r} ({p['split']})" + (f", file {str(p['file'])!r}" if p.get("file") else "")
        return f"  {where}: {p['reason']}"

    if problems and not skip_incomplete:
        raise CaseError(
            problems[0]["case_id"],
            problems[0].get("file"),
            f"{len(problems)} case(s) cannot be used; nothing was written. Fix them or leave them out with "
            "--skip-incomplete:\n" + "\n".join(described(p) for p in problems),
        )
    left_out = {(p["case_id"], p["split"]) for p in problems}
    kept = [r for r in complete if (r.case_id, r.split) not in left_out]
    if not kept:
        raise LayoutError(
            f"{root}: no usable case left; nothing was written. Every case was left out:\n"
            + "\n".join(described(p) for p in problems)
        )
    for note in notes[:20]:
        print(f"  warning: {note['note']}")
    if len(notes) > 20:
        print(f"  warning: and {len(notes) - 20} more empty or constant channel(s), listed in case_notes.csv")

    datalist = build_datalist(kept, profile, layout, root, out, n_folds=args.folds, seed=args.seed)
    summary = summarize_fingerprint(table, profile)
    if summary.get("cases"):
        summary["channel_notes"] = [dict(n) for n in notes]
        summary["skipped_cases"] = [dict(p, file=None if p.get("file") is None else str(p["file"])) for p in problems]
    fingerprint_dir = Path(args.fingerprint_dir) if args.fingerprint_dir else out.parent
    _, fingerprint_json = write_fingerprint(table, summary, fingerprint_dir)
    plans = None
    if summary.get("training_cases"):
        from pipeline.data.plans import derive_plans, write_plans

        plans = derive_plans(fingerprint_json)
        write_plans(plans, fingerprint_dir / "plans.json")
    write_datalist(datalist, out)
    print(
        f"  wrote {out}: {datalist['numTraining']} training records in {datalist['folds']} folds (seed {args.seed}), "
        f"{datalist['numTest']} test records"
    )
    print(f"  wrote {fingerprint_dir / 'fingerprint.csv'} and {fingerprint_dir / 'fingerprint.json'}")
    if plans is not None:
        print(
            f"  wrote {fingerprint_dir / 'plans.json'}: {plans['configuration']}, patch {plans['patch_size']}, "
            f"strides {plans['strides']}, batch {plans['batch_size']}"
        )

    def write_csv(name: str, rows: list[dict], columns: list[str]) -> Path:
        """Write ``rows`` beside the datalist, or remove an older run's file of that name when there are none."""
        path = out.parent / name
        if not rows:
            path.unlink(missing_ok=True)
            return path
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: "" if r.get(c) is None else str(r[c]) for c in columns} for r in rows)
        return atomic_write_text(path, text.getvalue())

    skipped_csv = write_csv("skipped_cases.csv", problems, ["case_id", "split", "file", "reason"])
    notes_csv = write_csv("case_notes.csv", notes, ["case_id", "split", "channel", "file", "note"])
    if problems:
        print(f"  left out {len(problems)} case(s) (listed in {skipped_csv}):")
        for p in problems:
            print(described(p))
    if notes:
        print(f"  {len(notes)} empty or constant channel(s) in {len({(n['case_id'], n['split']) for n in notes})} "
              f"kept case(s) (listed in {notes_csv})")
    print(format_summary(summary))
    return 0


def command_train(args: argparse.Namespace) -> int:
    """``train --bundle DIR --datalist datalist.json [--fold K] [--epochs N] [--output DIR] [--plans plans.json]``."""
    from pipeline.training import run_train

    return run_train(args)


def command_predict(args: argparse.Namespace) -> int:
    """``predict --bundle DIR --input DIR|datalist --output DIR [--format ...] [--name TEAM]``."""
    from pipeline.predict import run_predict

    return run_predict(args)



DEMO_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "isles_unetplusplus"
# The demo's channels: every ISLES 2018 modality but the raw 4D perfusion series, as challenge entries used them.
# The non-contrast CT adds the early hypodensity of the core that the perfusion maps do not show.
DEMO_CHANNELS = "CBF,CBV,MTT,Tmax,CT"


def fold_argument(text: str) -> int | str:
    """``--fold``: a fold number, or ``all`` (train on every training case, nnU-Net's "fold all").

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    if text == ALL_FOLDS:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fold is a whole number or {ALL_FOLDS!r}; got {text!r}") from None


def command_demo(args: argparse.Namespace) -> int:
    """``demo [--workdir DIR] [--cases N] [--test-cases M] [--seed S] [--epochs E] [--train-budget SECONDS] [--channels C]``.

    The main job on the embedded default data: synth -> prepare (fingerprint, plans) -> train the
    UNet++ bundle within a CPU time budget -> predict the test split -> evaluate against the
    clinical threshold rule -> report. Every step is a command of this CLI, run as a user would.
    """
    import shutil

    from pipeline.data.plans import load_plans, write_plans

    workdir = Path(args.workdir).resolve()
    data_dir, datalist = workdir / "data", workdir / "datalist.json"
    run_dir, predictions = workdir / "unetplusplus", workdir / "predictions"
    steps: list[tuple[str, float]] = []

    def step(name: str, status: int, started: float) -> None:
        steps.append((name, time.perf_counter() - started))
        if status != 0:
            raise RuntimeError(f"demo: step {name!r} failed with exit status {status}")

    started = time.perf_counter()
    step("synth", command_synth(argparse.Namespace(
        out=str(data_dir), cases=args.cases, test_cases=args.test_cases, seed=args.seed, overwrite=True)), started)

    started = time.perf_counter()
    step("prepare (fingerprint, plans)", command_prepare(argparse.Namespace(
        root=str(data_dir), layout="auto", out=str(datalist), folds=5, seed=args.seed, profile=None,
        channels=args.channels, skip_incomplete=False, fingerprint_dir=None)), started)

    # The planned network sized for a 2-core CPU budget: the plan's strides and kernels, narrower
    # widths and a smaller in-plane patch.
    plans = load_plans(workdir / "plans.json")
    depth = len(plans["strides"])
    plans.update(
        features=[min(8 * 2**i, 128) for i in range(depth + 1)],
        patch_size=[128, 128, plans["patch_size"][2]],
        batch_size=4,
    )
    demo_plans = write_plans(plans, workdir / "demo_plans.json")
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo's own previous run: start afresh, do not resume
    started = time.perf_counter()
    step("train UNet++", command_train(argparse.Namespace(
        bundle=str(DEMO_BUNDLE), datalist=str(datalist), fold=0, epochs=args.epochs, output=str(run_dir),
        plans=str(demo_plans),
        set=["learning_rate=0.003", f"val_interval={args.epochs}", f"time_budget_s={args.train_budget}"])), started)

    started = time.perf_counter()
    step("predict test split", command_predict(argparse.Namespace(
        bundle=str(DEMO_BUNDLE), input=str(datalist), output=str(predictions), format="nifti", name="demo",
        split="testing", checkpoint=str(run_dir / "models" / "last.pt"), probabilities=False, overwrite=True,
        set=None, plans=None)), started)

    started = time.perf_counter()
    step("evaluate + report", command_evaluate(argparse.Namespace(
        pred=str(predictions), truth=str(data_dir / "TESTING_GROUND_TRUTH"), out=str(workdir / "eval" / "metrics.csv"),
        baseline="threshold", images=str(datalist), report=str(workdir / "report"),
        logs=[str(run_dir / "eval")], tolerance_mm=0.01)), started)

    summary = json.loads((workdir / "eval" / "metrics_summary.json").read_text())
    print("\ndemo: what ran")
    for name, seconds in steps:
        print(f"  {name:<30} {seconds:7.1f} s")
    print(f"  total                          {sum(s for _, s in steps):7.1f} s")
    model = summary["dice_difference"]["model_mean_dice"]
    rule = summary["dice_difference"]["threshold_mean_dice"]
    print(f"\ndemo: mean Dice on the {args.test_cases} held-out test cases: UNet++ {model:.3f}, "
          f"clinical threshold rule {rule:.3f} (difference {model - rule:+.3f})")
    print(f"  outputs under {workdir}/: data/, datalist.json, plans.json, unetplusplus/ (models, logs), "
          "predictions/, eval/, report/report.md")
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    """``evaluate --pred DIR --truth DIR|datalist.json --out metrics.csv [--baseline threshold] [--images datalist.json] [--report DIR]``.

    Exit status 0 when every paired case was scored (predictions without truth are listed and warned about);
    2 when a case failed (a mask whose values are not {0, 1}, another grid, a case the manifest lists as
    failed or missing: each failure names the case and its files), when a prediction file was refused (not
    written by the run that the folder's manifest describes, or a name that fits records of two splits),
    when nothing could be paired and scored, or when the input is unusable. The other cases are scored and
    written whatever one case does.
    """
    from pipeline.evaluation import evaluate_predictions, format_summary

    def print_warnings(caught) -> None:
        for note in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)):
            print(f"  warning: {note}")

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = evaluate_predictions(
                args.pred, args.truth, args.out, baseline=args.baseline, images=args.images,
                tolerance_mm=args.tolerance_mm, split=getattr(args, "split", None),
            )
        except (CaseError, LayoutError, FileNotFoundError, ValueError):
            print_warnings(caught)  # e.g. that the folder has no manifest: it helps to read the error
            raise
    counts = result.summary["counts"]
    print(
        f"evaluate: {counts['predictions']} prediction(s) in {args.pred}, {counts['truth_cases']} truth case(s) from "
        f"{args.truth} ({result.summary['truth_kind']}): {counts['scored']} scored in {time.perf_counter() - start:.1f} s"
    )
    print_warnings(caught)
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


def command_report(args: argparse.Namespace) -> int:
    """``report --out DIR [--metrics metrics.csv] [--logs PATH ...]``: the report of an earlier evaluation."""
    from pipeline.evaluation import load_result
    from pipeline.report import write_report

    if not args.metrics and not args.logs:
        raise ValueError("report: give --metrics (an evaluate --out CSV) and/or --logs (training logs)")
    result = load_result(args.metrics) if args.metrics else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = write_report(args.out, result, logs=args.logs or ())
    print(f"report: wrote {report}")
    return 0


def command_benchmark(args: argparse.Namespace) -> int:
    """``benchmark [--quick] [--repeats N] [--device D] [--checkpoint PATH] [--out results.md] ...``: the
    performance table (see :mod:`pipeline.benchmark`); returns 0."""
    from pipeline.benchmark import command_benchmark as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m pipeline``."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure instead of the message")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of a failure instead of the message")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", parents=[common], help="write the synthetic ISLES-2018-layout dataset (the embedded default)")
    p.add_argument("out", help="output folder")
    p.add_argument("--cases", type=int, default=24, help="training cases (default 24)")
    p.add_argument("--test-cases", type=int, default=None, help="test cases (default cases // 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in OUT")
    p.set_defaults(func=command_synth)

    p = sub.add_parser("prepare", parents=[common], help="read a dataset layout and write an MSD-style datalist with folds and a fingerprint")
    p.add_argument("--root", required=True, help="dataset root folder (or an MSD datalist JSON)")
    p.add_argument("--layout", default="auto", choices=["auto", "isles2018", "isles2022", "nnunet", "msd"])
    p.add_argument("--out", required=True, help="datalist JSON to write")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.add_argument("--profile", default=None, help="dataset profile name or YAML path (default: the layout's)")
    p.add_argument("--channels", default=None, help="comma-separated channel order overriding the profile's, e.g. CBF,CBV,MTT,Tmax,CT")
    p.add_argument("--skip-incomplete", action="store_true",
                   help="leave out (and list) cases with a missing modality or unusable files instead of failing")
    p.add_argument("--fingerprint-dir", default=None, help="where fingerprint.csv/json go (default: beside --out)")
    p.add_argument("--strict", action="store_true",
                   help="fail (or, with --skip-incomplete, leave out) a case with an empty or constant channel")
    p.set_defaults(func=command_prepare)

    p = sub.add_parser("train", parents=[common], help="train a bundle on one fold (wraps `python -m monai.bundle run`)")
    p.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/isles_unetplusplus")
    p.add_argument("--datalist", required=True, help="datalist written by prepare")
    p.add_argument("--fold", type=fold_argument, default=0,
                   help="validation fold; the others train (default 0); 'all' trains on every training case")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the bundle's)")
    p.add_argument("--output", default=None, help="folder for models/ and eval/ (default: the bundle's own)")
    p.add_argument("--plans", default=None, help="plans.json whose patch size, strides, kernels, widths, batch size are used")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="bundle config override, e.g. --set learning_rate=0.003 (repeatable)")
    p.set_defaults(func=command_train)

    p = sub.add_parser("predict", parents=[common], help="predict with a bundle's inference config; outputs on the native grid")
    p.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/isles_unetplusplus")
    p.add_argument("--input", required=True, help="a dataset folder (any known layout) or a datalist JSON")
    p.add_argument("--output", required=True, help="folder the predictions are written to")
    p.add_argument("--format", default="nifti", choices=["nifti", "isles2018", "isles2022"],
                   help="nifti: <case_id>.nii.gz; isles2018: SMIR.<name>.<CT_MTT id>.nii; isles2022: <DWI name>_msk")
    p.add_argument("--name", default="team", help="team name in ISLES 2018 submission file names")
    p.add_argument("--split", default="testing", choices=["testing", "training"],
                   help="which cases of the datalist or folder to predict (default testing)")
    p.add_argument("--checkpoint", default=None, help="weights (default: BUNDLE/models/model.pt)")
    p.add_argument("--probabilities", action="store_true", help="also write float16 probability maps (.npz)")
    p.add_argument("--plans", default=None,
                   help="plans.json the network was trained with (default: trained_plans.json beside the checkpoint, if any)")
    p.add_argument("--overwrite", action="store_true", help="replace predictions already in --output")
    p.add_argument("--strict", action="store_true",
                   help="fail a case with an empty or constant channel instead of warning about it")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes (one per GPU): shards the cases under torch.distributed.run with configs/multi_gpu_inference.json")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="bundle config override, e.g. --set inferer#sw_batch_size=4 (repeatable)")
    p.set_defaults(func=command_predict)

    p = sub.add_parser("evaluate", parents=[common], help="score predicted masks against the ground truth (ISLES metrics, clinical volumes)")
    p.add_argument("--pred", required=True, help="folder of predicted masks: <case_id>.nii.gz, SMIR.<name>.<ID>.nii or <sub>_ses-X_msk.nii.gz")
    p.add_argument("--truth", required=True,
                   help="datalist JSON, dataset root, TESTING_GROUND_TRUTH folder, or a folder of <case_id> masks")
    p.add_argument("--out", required=True, help="per-case CSV; <stem>_summary.json and <stem>_clinical.csv go beside it")
    p.add_argument("--baseline", default=None, choices=["threshold"],
                   help="also score the clinical threshold rule (rCBF < 30%% and Tmax > 6 s) on the same cases")
    p.add_argument("--images", default=None, help="datalist JSON giving the CBF/Tmax maps when --truth does not")
    p.add_argument("--report", default=None, metavar="DIR", help="also write the report (report.md and PNGs) to DIR")
    p.add_argument("--logs", action="append", metavar="PATH",
                   help="training logs for the report: TensorBoard event folder or CSV with an epoch column (repeatable)")
    p.add_argument("--split", default=None, choices=["training", "testing"],
                   help="with a datalist as --truth: pair with the records of this split only (default: the split "
                        "the prediction names and the manifest tell)")
    p.add_argument("--tolerance-mm", type=float, default=0.01,
                   help="allowed difference of spacing, directions and origin between a prediction and its truth")
    p.set_defaults(func=command_evaluate)

    p = sub.add_parser("report", parents=[common], help="write the report of an earlier evaluation and/or the training curves")
    p.add_argument("--out", required=True, help="report folder (report.md, cases/*.png, training_curves.png)")
    p.add_argument("--metrics", default=None, help="the per-case CSV written by evaluate --out (its summary JSON beside it)")
    p.add_argument("--logs", action="append", metavar="PATH",
                   help="TensorBoard event folder or CSV with an epoch column (repeatable)")
    p.set_defaults(func=command_report)

    p = sub.add_parser("benchmark", parents=[common], help="the performance table (benchmarks/results.md): inference, tiling, pruning, training, memory")
    p.add_argument("--out", default=None, help="Markdown file to write (default benchmarks/results.md of the project)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run, not figures")
    p.add_argument("--repeats", type=int, default=None, help="repeats of every timed row (default 3; 1 with --quick)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--checkpoint", default=None,
                   help="trained weights, e.g. demo_output/unetplusplus/models/last.pt (default: train a small UNet++ first)")
    p.add_argument("--plans", default=None, help="plans of the checkpoint (default: trained_plans.json beside it)")
    p.add_argument("--workdir", default=None, help="folder for the synthetic data and training run (default: a temporary one)")
    p.add_argument("--cases", type=int, default=None, help="synthetic training cases (default 24; 8 with --checkpoint)")
    p.add_argument("--test-cases", type=int, default=None, help="synthetic test cases for the Dice rows (default 8)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic data (default 1; the demo uses 0)")
    p.add_argument("--train-budget", type=float, default=None,
                   help="seconds of training (default 300; 60 with --checkpoint, where training is only timed)")
    p.add_argument("--bundle", default=None, help="the UNet++ bundle (default bundles/isles_unetplusplus)")
    p.set_defaults(func=command_benchmark)

    p = sub.add_parser("demo", parents=[common], help="the main job end to end on the embedded synthetic data")
    p.add_argument("--workdir", default="demo_output")
    p.add_argument("--cases", type=int, default=24, help="training cases (default 24)")
    p.add_argument("--test-cases", type=int, default=16, help="held-out test cases (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40, help="most epochs to train (default 40)")
    p.add_argument("--channels", default=DEMO_CHANNELS,
                   help=f"channel order (default {DEMO_CHANNELS}; CBF,CBV,MTT,Tmax is the profile's own)")
    p.add_argument("--train-budget", type=float, default=360.0,
                   help="seconds of training time at most (default 360: 6 minutes)")
    p.set_defaults(func=command_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status.

    Bad input ends a command with one paragraph on stderr naming the case and the file, and exit status 2
    (:func:`pipeline.errors.cli_message`); Ctrl-C with 130. ``--debug`` (before or after the command) shows the
    traceback instead.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        print(f"error: {args.command} interrupted; files already written are complete, partial ones were removed; "
              "run the same command again to resume or redo it", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - every failure becomes the contract's message unless --debug
        if getattr(args, "debug", False):
            raise
        status, message = cli_message(err)
        print(message, file=sys.stderr)
        return status


if __name__ == "__main__":
    # A process-wide setting, so it is made where the process starts, not by in-process calls of main(); the
    # benchmark measures glibc's defaults against it itself.
    if sys.argv[1:2] != ["benchmark"]:
        keep_freed_memory()
    sys.exit(main())
