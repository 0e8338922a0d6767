"""Kill and race scenarios of issue 14, with real processes: run from the repository root.

1. Kills: trains a Moons IMA run keeping a checkpoint after every epoch, SIGKILLs it at
   random moments (during checkpoint writes too) and resumes it until it finishes; then
   checks that every kept checkpoint exists, no temporary file is left, and the final
   weights and margins equal those of an uninterrupted run.
2. Races: starts several ``ima evaluate`` processes with different settings on one run
   folder at once; checks that every one's result file exists and holds its settings.

    python scripts/trust_scenarios.py --kills 14 --racers 4 --out /tmp/trust
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

EPOCHS = 12


def _config(path: Path) -> Path:
    config = {
        "data": {"name": "moons", "n_train": 4000, "n_val": 256, "n_test": 256,
                 "batch_size": 128},
        "model": {"name": "moons_mlp"},
        "method": {"name": "ima", "eps_max": 0.3},
        "train": {"epochs": EPOCHS, "save_every": 1, "threads": 1, "seed": 0},
        "eval": {"eps": [0.0, 0.1, 0.2]},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _ima(*args) -> list[str]:
    return [sys.executable, "-m", "ima", *map(str, args)]


def kills(out: Path, n: int, seed: int) -> bool:
    config = _config(out / "config-kills.yaml")
    reference, killed = out / "uninterrupted", out / "killed"
    subprocess.run(_ima("train", "--config", config, "--out", reference, "--no-progress"),
                   check=True)
    rng = random.Random(seed)
    args = ("train", "--config", config, "--out", killed, "--no-progress")
    done_kills = 0
    while True:
        proc = subprocess.Popen(_ima(*args), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if done_kills < n:
            time.sleep(rng.uniform(1.5, 6.0))
            if proc.poll() is None:
                proc.kill()
                done_kills += 1
        proc.wait()
        if (killed / "checkpoint.pt").is_file() and torch.load(
                killed / "checkpoint.pt", weights_only=True)["epoch"] == EPOCHS:
            break
        args = ("train", "--resume", killed, "--no-progress")
    kept = sorted(p.name for p in (killed / "checkpoints").glob("epoch-*.pt"))
    tmp = sorted(str(p.relative_to(killed)) for p in killed.rglob("*.tmp"))
    a = torch.load(reference / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    same = all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    margins_a, margins_b = a["method"]["margins"], b["method"]["margins"]
    # pending margin updates are NaN between epochs: NaN equals NaN here
    same_margins = all(torch.equal(margins_a[k].nan_to_num(-1.0), margins_b[k].nan_to_num(-1.0))
                       if isinstance(margins_a[k], torch.Tensor) else margins_a[k] == margins_b[k]
                       for k in margins_a)
    ok = len(kept) == EPOCHS and not tmp and same and same_margins
    print(f"kills: {done_kills} SIGKILLs; kept checkpoints {len(kept)} of {EPOCHS}; "
          f"temporary files left {tmp or 'none'}; weights equal to the uninterrupted run: "
          f"{same}; margins equal: {same_margins} -> {'OK' if ok else 'FAILED'}")
    return ok


def races(out: Path, n: int) -> bool:
    run = out / "killed"
    eps_lists = [",".join(f"{0.05 * (k + 1) * j:g}" for j in range(3)) for k in range(n)]
    procs = [subprocess.Popen(_ima("evaluate", run, "--eps", eps, "--max-samples", "64",
                                   "--steps", "10", "--no-progress", "--no-checks",
                                   "--threads", "1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for eps in eps_lists]
    errors = [p.communicate()[1] for p in procs if p.wait() != 0]
    files = sorted((run / "eval").glob("pgd-l2-test*.json"))
    found = sorted(",".join(f"{e:g}" for e in yaml.safe_load(f.read_text())["eps"])
                   for f in files)
    ok = not errors and found == sorted(eps_lists)
    print(f"races: {n} concurrent evaluations with different eps -> {len(files)} result "
          f"files {[f.name for f in files]} -> {'OK' if ok else 'FAILED'}"
          + (f"; errors: {errors}" if errors else ""))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=14)
    parser.add_argument("--racers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} exists and is not empty; give a new folder")
    args.out.mkdir(parents=True, exist_ok=True)
    ok = kills(args.out, args.kills, args.seed)
    ok = races(args.out, args.racers) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
