"""Input read speed and memory: `batcher run --dry-run` against a Polars floor and plain Python.

Generates (once, under benchmarks/data/) a CSV of BENCH_INPUT_ROWS rows (default 10 million)
shaped like a portal export: several columns, 30% duplicate IDs in mixed case, 1% junk. Each
contender runs in its own subprocess; wall time and peak RSS come from os.wait4 on that child.
Linux counts a parent's peak RSS into a child's, so this process stays small: it never imports
Polars, and the data is generated in a child of its own.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import result_of

DATA = Path(__file__).resolve().parent / "data"
ID_COLUMN = "User ID"
JUNK = ["", "n/a", "unknown", "00000000-0000-0000-0000-000000000000", "1e250c70-dff6-4e52"]

# The floor: the fastest plain way Polars reads one column and de-duplicates it.
FLOOR = """
import sys, polars as pl
print(pl.scan_csv(sys.argv[1]).select(sys.argv[2]).unique().collect().height)
"""
# The same done eagerly, for reference: Series.unique() runs on one core.
FLOOR_EAGER = """
import sys, polars as pl
print(pl.read_csv(sys.argv[1], columns=[sys.argv[2]]).get_column(sys.argv[2]).unique().len())
"""

PLAIN = """
import csv, sys
seen = set()
with open(sys.argv[1], encoding="utf-8-sig", newline="") as fh:
    rows = csv.reader(fh)
    at = next(rows).index(sys.argv[2])
    for row in rows:
        seen.add(row[at].strip().lower())
print(len(seen))
"""


def make_csv(rows: int) -> Path:
    """A portal-shaped export: 70% unique IDs, 30% repeats (some upper-case), 1% junk."""
    import polars as pl

    path = DATA / f"ids_{rows}.csv"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    junk = rows // 100
    unique = int(rows * 0.7)
    repeats = rows - unique - junk
    hexes = os.urandom(16 * unique).hex()
    ids = pl.Series([hexes[i : i + 32] for i in range(0, len(hexes), 32)], dtype=pl.String)
    ids = ids.str.replace(
        r"^(.{8})(.{4})(.{4})(.{4})(.{12})$", "${1}-${2}-${3}-${4}-${5}"
    ).str.replace(r"^(.{14}).", "${1}4")
    again = ids.sample(repeats, with_replacement=True, seed=1)
    values = pl.concat([ids, again, pl.Series([JUNK[i % len(JUNK)] for i in range(junk)])])
    frame = (
        pl.DataFrame({ID_COLUMN: values})
        .sample(fraction=1.0, shuffle=True, seed=2)
        .with_row_index("n")
        .select(
            (pl.lit("user") + pl.col("n").cast(pl.String) + pl.lit("@contoso.example")).alias(
                "Username"
            ),
            (pl.lit("User ") + pl.col("n").cast(pl.String)).alias("User"),
            pl.when(pl.col("n") % 3 == 0)
            .then(pl.col(ID_COLUMN).str.to_uppercase())
            .otherwise(pl.col(ID_COLUMN))
            .alias(ID_COLUMN),
            pl.when(pl.col("n") % 4 == 0)
            .then(pl.lit("Confirmed compromised"))
            .otherwise(pl.lit("At risk"))
            .alias("Risk state"),
            pl.lit("High").alias("Risk level"),
            pl.lit("2025-03-14T09:12:44Z").alias("Risk last updated"),
        )
    )
    frame.write_csv(path)
    return path


def measure(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB and stdout of one child process."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} exited {proc.returncode}")
    return wall, usage.ru_maxrss / 1024, text


def main() -> None:
    rows = int(os.environ.get("BENCH_INPUT_ROWS", "10000000"))
    repeats = int(os.environ.get("BENCH_INPUT_REPEATS", "3"))
    python = sys.executable
    path = DATA / f"ids_{rows}.csv"
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        subprocess.run(
            [python, "-c", f"from benchmarks.inputs import make_csv; make_csv({rows})"],
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    batcher = str(Path(python).parent / "batcher")
    contenders = {
        "batcher run --dry-run": [
            batcher, "run", str(path), "--dry-run", "--json", "--config", "config.toml"
        ],
        "floor: Polars one column + unique()": [python, "-c", FLOOR, str(path), ID_COLUMN],
        "eager read_csv + Series.unique()": [python, "-c", FLOOR_EAGER, str(path), ID_COLUMN],
        "plain Python csv + set": [python, "-c", PLAIN, str(path), ID_COLUMN],
    }  # fmt: skip
    runs: dict[str, list[tuple[float, float, str]]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "config.toml").write_text(f'[ledger]\ndir = "{work / "runs"}"\n', encoding="utf-8")
        for _ in range(repeats):  # interleaved, so a busy moment hurts every contender alike
            for name, argv in contenders.items():
                runs[name].append(measure(argv, work))
    wall = {name: statistics.median(r[0] for r in results) for name, results in runs.items()}
    rss = {name: max(r[1] for r in results) for name, results in runs.items()}
    floor, plain = wall["floor: Polars one column + unique()"], wall["plain Python csv + set"]
    ours = wall["batcher run --dry-run"]
    summary = result_of(runs["batcher run --dry-run"][0][2])
    print(
        f"{rows:,} rows, {path.stat().st_size / 1e6:,.0f} MB CSV, {os.cpu_count()} cores, "
        f"median of {repeats} runs; batcher: {summary['rows']:,} rows = {summary['valid']:,} "
        f"valid + {summary['duplicates']:,} duplicates + {summary['invalid']:,} invalid\n"
    )
    print("| contender | wall s | peak RSS MB | x floor | plain Python / this |")
    print("|---|---|---|---|---|")
    for name in contenders:
        print(
            f"| {name} | {wall[name]:.2f} | {rss[name]:,.0f} | {wall[name] / floor:.2f} | "
            f"{plain / wall[name]:.1f} |"
        )
    print(
        f"\ngoals: <= 2x floor: {_met(ours <= 2 * floor)} ({ours / floor:.2f}x); "
        f">= 5x faster than plain Python: {_met(plain >= 5 * ours)} ({plain / ours:.1f}x); "
        f"peak RSS < 2 GB: {_met(rss['batcher run --dry-run'] < 2048)}"
    )


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"
