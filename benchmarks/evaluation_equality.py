"""Bit-for-bit equality of evaluation results across two versions of the code.

``make``: trains small Moons, digits and shapes (segmentation) runs once (or reuses them)
and writes the JSON result of every evaluation attack on each (both norms where the
attack has them, sanity checks on) into a folder. ``compare``: compares two such folders
field by field, ignoring only the wall-clock time. Run ``make`` with the old code and
with the new code on the same run folders, then ``compare``:

    PYTHONPATH=/tmp/old/src python benchmarks/evaluation_equality.py make --runs R --out old
    python benchmarks/evaluation_equality.py make --runs R --out new
    python benchmarks/evaluation_equality.py compare old new
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

RUNS = {
    "moons": {"data": {"name": "moons", "n_train": 2000, "n_val": 200, "n_test": 200},
              "model": {"name": "moons_mlp"}, "train": {"epochs": 3}},
    "digits": {"data": {"name": "digits"}, "model": {"name": "digits_cnn"},
               "train": {"epochs": 4}},
    "shapes": {"data": {"name": "shapes", "n_train": 64, "n_val": 16, "n_test": 16,
                        "size": 32, "batch_size": 16},
               "model": {"name": "unet", "in_channels": 1, "num_classes": 2, "width": 8,
                         "depth": 2},
               "optim": {"lr": 0.003}, "train": {"epochs": 2}},
}

#: (attack, norms, evaluate keyword arguments) per case
CASES = [
    ("pgd", ("l2", "linf"), {"steps": 20}),
    ("spsa", ("l2", "linf"), {"steps": 5, "per_class": 3,
                              "options": {"n_samples": 32, "query_batch": 64}}),
    ("uniform-noise", ("l2", "linf"), {"options": {"draws": 3}}),
    ("gaussian-noise", ("l2",), {"options": {"draws": 3}}),
    ("ddn-min", ("l2",), {"steps": 20}),
    ("bpgd-min", ("l2", "linf"), {"steps": 10}),
]
EPS = {"moons": {"l2": [0.1, 0.2], "linf": [0.05, 0.1]},
       "digits": {"l2": [0.5, 1.0], "linf": [0.05, 0.1]},
       "shapes": {"l2": [1.0, 2.0], "linf": [0.05, 0.1]}}


def _train(runs: Path) -> None:
    from ima import train

    for name, config in RUNS.items():
        if not (runs / name / "checkpoint.pt").is_file():
            config = {"method": {"name": "ce"}, **config,
                      "train": {**config["train"], "threads": 1, "seed": 0}}
            train(config, runs / name, progress=False)


def make(runs: Path, out: Path, max_samples: int) -> None:
    from ima import evaluate, load_run

    torch.set_num_threads(1)
    runs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    _train(runs)
    for name in RUNS:
        run = load_run(runs / name)
        test = run.dataset("test")
        for attack, norms, kwargs in CASES:
            for norm in norms:
                kwargs = dict(kwargs)
                if "per_class" not in kwargs:
                    kwargs["max_samples"] = max_samples
                try:
                    result = evaluate(run.model, test, eps=EPS[name][norm], norm=norm,
                                      attack=attack, batch_size=24, seed=3,
                                      task=run.method.task, check_samples=12, **kwargs)
                    data = result.to_dict()
                    data.pop("time_s")
                except Exception as err:  # noqa: BLE001 (an error is a result to compare)
                    data = {"error": f"{type(err).__name__}: {err}"}
                path = out / f"{name}-{attack}-{norm}.json"
                path.write_text(json.dumps(data, indent=1, sort_keys=True))
                print(path.name, "error" if "error" in data else data["accuracy"])


def compare(a: Path, b: Path) -> int:
    names = sorted({p.name for p in a.glob("*.json")} | {p.name for p in b.glob("*.json")})
    differ = 0
    for name in names:
        pa, pb = a / name, b / name
        if not (pa.is_file() and pb.is_file()):
            print(f"{name}: only in {'new' if not pa.is_file() else 'old'}")
            differ += 1
            continue
        da, db = json.loads(pa.read_text()), json.loads(pb.read_text())
        added = _new_checks(da, db)
        keys = [k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]
        print(f"{name}: {'identical' if not keys else 'DIFFERS in ' + ', '.join(keys)}"
              + (f" (checks added: {', '.join(added)})" if added else ""))
        differ += bool(keys)
    print(f"{len(names) - differ} of {len(names)} results identical")
    return 1 if differ else 0


def _new_checks(old: dict, new: dict) -> list[str]:
    """Names of sanity checks only ``new`` has (a later version may add checks); they are
    taken out of ``new`` so that the checks both have are compared as they are."""
    if "checks" not in old or "checks" not in new:
        return []
    names = {c["name"] for c in old["checks"]}
    added = [c["name"] for c in new["checks"] if c["name"] not in names]
    new["checks"] = [c for c in new["checks"] if c["name"] in names]
    return added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("make")
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-samples", type=int, default=48)
    p = verbs.add_parser("compare")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.verb == "make":
        make(args.runs, args.out, args.max_samples)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
