"""CPU per instance of reading DICOM: ``imaging.parse.read_instance`` (Part 10 bytes) and
``imaging.jsonmodel.to_dicom_json`` (with an instance URL, as the SCP and STOW-RS do), in
one process, no I/O. The exchange's STOW-RS and the DICOM adapter's C-STORE SCP pay both
for every instance they receive. Then the metadata-only path: the DICOM JSON the adapter
sends of the same files (``to_dicom_json`` with an instance URL, through JSON text), read
by ``imaging.jsonparse.instance_from_json`` and written back by ``to_dicom_json`` as the
exchange's STOW-RS does for ``application/dicom+json`` (and the DICOMweb poller).

Corpora: synthetic instances of ``benchmarks/datagen/dicom.py`` (made once into
``benchmarks/out/imaging-parse/``), pydicom's CT_small.dcm and MR_small.dcm, and every
pydicom test file that is a complete storage instance.

``--baseline REV`` also times the ``imaging`` package of a git revision (``git show``,
nothing checked out), in separate processes alternating with the working tree's, round
by round, so that load from other work on the machine hits both alike.

    .venv/bin/python -m benchmarks.bench_imaging_parse [--baseline HEAD] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "imaging-parse"
URL = "https://pacs.hospital-a.example/dicomweb/studies/1/series/2/instances/3"


def corpora(instances: int, seed: int) -> dict[str, list[str]]:
    """Name → files: the synthetic instances (made once), CT_small and MR_small, test files."""
    from benchmarks.datagen.dicom import (
        TEST_FILES,
        VERSION,
        generate_instances,
        readable_test_files,
    )

    folder = OUT / f"v{VERSION}-seed{seed}-{instances}"
    if not folder.exists():
        generate_instances(folder, seed=seed, instances=instances)
    made = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    return {"synthetic": made[:instances],
            "CT_small": [str(TEST_FILES / "CT_small.dcm")] * 50,
            "MR_small": [str(TEST_FILES / "MR_small.dcm")] * 50,
            "test files": [str(p) for p in readable_test_files()]}


def measure(files: list[str], passes: int) -> dict[str, dict[str, float]]:
    """Mean ms per instance of the best and the median pass, reading bytes in memory
    ("part10"), and reading the DICOM JSON the adapter sends of the same files ("json")."""
    import orjson

    from imaging.jsonmodel import to_dicom_json
    from imaging.parse import read_instance
    try:
        from imaging.jsonparse import instance_from_json
    except ImportError:  # a --baseline revision from before imaging/jsonparse.py
        from imaging.parse import instance_from_json  # type: ignore[attr-defined,no-redef]

    blobs = [Path(f).read_bytes() for f in files]
    # what the exchange's STOW-RS receives from the adapter: JSON text, parsed by orjson
    docs = [orjson.loads(orjson.dumps(to_dicom_json(read_instance(b), instance_url=URL)))
            for b in blobs]
    return {"part10": _passes(blobs, passes, read_instance,
                              lambda i: to_dicom_json(i, instance_url=URL)),
            "json": _passes(docs, passes, instance_from_json, to_dicom_json)}


def _passes(inputs: list, passes: int, read: Any, write: Any) -> dict[str, float]:
    reads, jsons = [], []
    for _ in range(passes + 1):              # the first pass warms caches up, not counted
        read_time = to_json = 0.0
        for item in inputs:
            start = time.perf_counter()
            instance = read(item)
            middle = time.perf_counter()
            write(instance)
            read_time += middle - start
            to_json += time.perf_counter() - middle
        reads.append(read_time * 1000 / len(inputs))
        jsons.append(to_json * 1000 / len(inputs))
    reads, jsons = reads[1:], jsons[1:]
    totals = [r + j for r, j in zip(reads, jsons, strict=True)]
    best = totals.index(min(totals))
    return {"read": reads[best], "json": jsons[best], "total": totals[best],
            "median_total": statistics.median(totals)}


def worker(spec: str, passes: int) -> None:
    warnings.simplefilter("ignore")
    sets = json.loads(Path(spec).read_text())
    print(json.dumps({name: measure(files, passes) for name, files in sets.items()}))


def run_worker(tree: Path, spec: Path, passes: int) -> dict[str, dict[str, float]]:
    """One measuring process with ``tree``'s ``imaging`` package first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(tree), str(ROOT)]))}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_imaging_parse", "--worker",
                           str(spec), "--passes", str(passes)],
                          env=env, cwd=tree, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def baseline_tree(rev: str, into: Path) -> Path:
    """The ``imaging`` package as it is at git revision ``rev``, in ``into``."""
    listed = subprocess.run(["git", "ls-tree", "--name-only", rev, "imaging/"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.split()
    (into / "imaging").mkdir(parents=True)
    for name in listed:
        if name.endswith(".py"):
            text = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout
            (into / name).write_text(text)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--rounds", type=int, default=3, help="alternations with --baseline")
    parser.add_argument("--passes", type=int, default=5, help="timed passes per process")
    parser.add_argument("--baseline", help="git revision to compare with, e.g. HEAD")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.passes)
        return
    sets = corpora(args.instances, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "corpora.json"
        spec.write_text(json.dumps(sets))
        trees = {"working tree": ROOT}
        if args.baseline:
            trees[args.baseline] = baseline_tree(args.baseline, Path(tmp) / "baseline")
        results: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(args.rounds if args.baseline else 1):
            for name, tree in trees.items():
                results[name].append(run_worker(tree, spec, args.passes))
    rounds = f", {args.rounds} alternating rounds" if args.baseline else ""
    for path, what in (("part10", "read_instance (Part 10 bytes) + to_dicom_json(instance_url)"),
                       ("json", "instance_from_json (the adapter's DICOM JSON of the same "
                                "files) + to_dicom_json")):
        print(f"ms of CPU per instance: {what}, best of {args.passes} passes per "
              f"process{rounds}")
        print(f"{'corpus':<12} {'instances':>9}  " + "  ".join(f"{n:>28}" for n in trees))
        for corpus, files in sets.items():
            cells = []
            for name in trees:
                runs = [r[corpus][path] for r in results[name]]
                best = min(runs, key=lambda r: r["total"])
                cells.append(f"{best['read']:.3f} + {best['json']:.3f} = {best['total']:.3f}"
                             f" ({statistics.median(r['median_total'] for r in runs):.3f})")
            print(f"{corpus:<12} {len(files):>9}  " + "  ".join(f"{c:>28}" for c in cells))
        print()
    print("cells: read + json = total (median over passes and rounds), ms")


if __name__ == "__main__":
    main()
