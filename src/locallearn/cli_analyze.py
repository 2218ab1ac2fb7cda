"""`locallearn analyze | compare`: what a run learned per block, and runs side by side."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_analyze(sub: "argparse._SubParsersAction") -> None:
    """Register the ``analyze`` and ``compare`` subcommands."""
    p = sub.add_parser(
        "analyze", help="linear probes, CKA vs another run and Grad-CAM of a run's blocks",
        description="Probe every unit of a run with a linear classifier, compare its units "
                    "with another run's by linear CKA, and draw Grad-CAM of each block's head "
                    "and of the final classifier. Writes analysis.json, probes.png, cka.png and "
                    "gradcam.png into --out (default: the run directory, where they replace an "
                    "earlier analysis of that run; elsewhere an existing file needs --force).")
    p.add_argument("--run", required=True, help="the run directory to analyse")
    p.add_argument("--against", default=None, metavar="RUN",
                   help="another run of the same dataset and input shape (typically the E2E "
                        "run) to compare by CKA; without it the CKA map is the run with itself")
    p.add_argument("--out", default=None,
                   help="folder for the four files (default: the run directory)")
    p.add_argument("--samples", type=int, default=512,
                   help="examples per split for the probes and the CKA (default 512)")
    p.add_argument("--images", type=int, default=8, help="test images in the Grad-CAM grid")
    p.add_argument("--batch-size", type=int, default=64, help="feature batch size (>= 4)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--force", action="store_true",
                   help="replace existing files in an --out other than the run directory")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser(
        "compare", help="one figure and one table across runs (curves, probes, CKA, time)",
        description="Reads each run's metrics.csv and summary.json and, after `locallearn "
                    "analyze`, its analysis.json; writes compare.png and compare.md into "
                    "--out and prints the table. Runs must share task and input shape.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--out", default=".", help="folder for compare.png and compare.md (default .)")
    p.add_argument("--force", action="store_true", help="replace an existing compare.png / .md")


def cmd_analyze(a: argparse.Namespace) -> int:
    from .analysis import analyze_run

    r = analyze_run(Path(a.run), against=a.against, out=a.out, device=a.device,
                    samples=a.samples, images=a.images, batch_size=a.batch_size,
                    data_dir=a.data_dir, force=a.force, progress=not a.no_progress)
    raw = r["primary"] == "psnr"
    cka = {m["block"]: m["cka"] for m in (r["cka"]["matching"] or [])}
    print(f"{r['model']} {r['method']} K={r['blocks']} on {r['dataset']}: per block, the "
          f"linear probe's test accuracy, the block's own predictor ({r['head_metric']})"
          + (f" and CKA with {r['cka']['against']}" if cka else ""))
    print(f"{'block':>5}  {'units':>7}  {'probe':>7}  {'head':>8}  {'CKA':>5}")
    for b in r["block_rows"]:
        probe = "-" if b["probe_test_acc"] is None else f"{100 * b['probe_test_acc']:.1f}%"
        head = "-" if b["head"] is None else (f"{b['head']:.2f}dB" if raw else f"{100 * b['head']:.1f}%")
        c = cka.get(b["block"])
        print(f"{b['block']:>5}  {b['units'][0]}-{b['units'][1] - 1:<5}  {probe:>7}  {head:>8}  "
              f"{'-' if c is None else f'{c:.2f}':>5}")
    for note in filter(None, [r["probe_note"], r["gradcam"].get("skipped")]):
        print(f"note: {note}")
    for path in r["files"]:
        print(f"wrote {path}")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from .analysis import compare_runs
    from .analysis.compare import FILES, format_table

    rows = compare_runs(a.runs, Path(a.out), force=a.force)
    print(format_table(rows))
    for name in FILES:
        print(f"wrote {Path(a.out) / name}")
    return 0
