"""Prepare's peak memory on an image folder of 5,000 and 50,000 files (issue 26).

Issue 26: "a folder of 50,000 small images must not need 50,000 x the memory of one:
prepare streams". For each N this writes N synthetic 28x28 grayscale PNG files (10 class
folders, ROOT/<class>/<i>.png; seeded noise on a class's blob, a few hundred bytes a file
as real digit scans are), builds a throwaway project the way bench/own_data.py does
(`new_project`: params.yaml as shipped with only data.* keys: `data.name: file`,
`data.file.path` the folder, `data.train_samples: null`; src/ and stages/ from one copy
of the checkout made at start) and runs only the prepare stage, each run in a fresh
process whose `getrusage(RUSAGE_CHILDREN).ru_maxrss` is the peak RSS of the largest
process it waited for, grandchildren included (checked at start):

- `dvc repro prepare` (the stage as users run it: dvc hashing the folder, then
  `trainlab prepare` as its child): the peak of dvc or the stage, whichever is larger;
- `trainlab prepare` alone (dvc.yaml's command for the stage) in the same project: the
  stage's own peak RSS and wall time;
- the same `prepare()` in-process under tracemalloc (Python objects and numpy arrays,
  not Pillow's C buffers, after an untraced run that did prepare's imports): its traced
  peak, and for the largest N the peak of each step (load_raw, and inside it
  read_image_folder, _fit_inputs and the served example; build_splits and inside it
  _source_splits; write_prepared) in units of the decoded pixel array (N x 784 bytes).

A folder of 100 images is the baseline; each N's growth is its peak minus the baseline's,
per image against one decoded image (784 bytes) and one decoded PIL image held in memory
(the RSS growth over the second half of 10,000 held at once, per image). Also the bytes of
data/prepared's x .npy files (uint8: target train/val/test and the source task's train/val,
which repeat the target train pool's inputs). The tables print as Markdown, then the
ratios: growth 50k/5k against the data's 10x, and the growth per image in decoded images
(= copies of the pixel array at the peak) and in PIL images.

    .venv/bin/python bench/image_folder_memory.py            # 100, 5,000 and 50,000 images (minutes)
    .venv/bin/python bench/image_folder_memory.py --quick    # 100, 500 and 5,000: does it still run?
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SIZES, QUICK_SIZES, BASELINE = (5_000, 50_000), (500, 5_000), 100
SIDE, CLASSES, SEED = 28, 10, 0
PIXELS = SIDE * SIDE            # one decoded gray image: 784 bytes of uint8
PIL_IMAGES = 10_000             # decoded PIL images held at once to measure one's memory
MIB = 2 ** 20
SELF = str(Path(__file__).resolve())


# ------------------------------------------------------------------------- the images
def class_images(rng: np.random.Generator, label: int, n: int) -> np.ndarray:
    """n images of class `label`: a noisy bright blob whose place and shape the class sets."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    cy, cx = 7 + 14 * (label // 5), 4 + 5 * (label % 5)
    shift = rng.normal(0, 1.5, size=(n, 2, 1, 1)).astype(np.float32)
    blob = np.exp(-(((yy - cy - shift[:, 0]) / (3 + label % 3)) ** 2 + ((xx - cx - shift[:, 1]) / 3) ** 2))
    noise = rng.normal(0, 25, size=(n, SIDE, SIDE)).astype(np.float32)
    return np.clip(blob * (200 + noise), 0, 255).astype(np.uint8)


def write_folder(root: Path, n: int) -> Path:
    """`n` 28x28 grayscale PNG files in ROOT/<class>/<i>.png, as even over the classes as n allows."""
    from PIL import Image

    rng = np.random.default_rng(SEED + n)
    for label in range(CLASSES):
        count = n // CLASSES + (label < n % CLASSES)
        folder = root / str(label)
        folder.mkdir(parents=True)
        for i, pixels in enumerate(class_images(rng, label, count)):
            Image.fromarray(pixels).save(folder / f"{i}.png")   # 2-D uint8: mode L
    return root


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.png"))


# ---------------------------------------------------------------- children: measured
def child_measure(command: list[str]) -> None:
    """Run `command`; report its exit code, wall s and the peak RSS of the largest descendant."""
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss   # Linux: KiB
    if proc.returncode != 0:
        sys.stderr.write((proc.stdout + proc.stderr)[-3000:])
        sys.exit(proc.returncode)
    C.emit_result({"peak_mib": peak_kib / 1024, "wall_s": wall})


def child_pil(folder: Path) -> None:
    """RSS growth per decoded PIL image held, over the second half of PIL_IMAGES held at once
    (the first images partly reuse memory the process had freed: fewer bytes each). The paths
    are built, not listed: a listing of the whole folder, dropped, would leave freed memory too."""
    from PIL import Image

    per_class = min(PIL_IMAGES // CLASSES, len(list((folder / "0").iterdir())))
    paths = [folder / str(label) / f"{i}.png" for label in range(CLASSES) for i in range(per_class)]
    half = len(paths) // 2
    held = []
    for i, path in enumerate(paths):
        if i == half:
            before = rss_bytes()
        image = Image.open(path)
        image.load()   # decodes, closes the file
        held.append(image)
    C.emit_result({"per_image_bytes": (rss_bytes() - before) / (len(held) - half)})


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PhasePeaks:
    """tracemalloc's peak inside each wrapped function (nested calls fold into their caller)."""

    def __init__(self) -> None:
        self.frames: list[list[int]] = []   # per open call: [call number, traced at entry, peak so far]
        self.rows: list[tuple[int, str, int, int, int, int]] = []   # call, name, depth, entry, peak, exit
        self.calls = 0

    def wrap(self, module, name: str) -> None:
        inner = getattr(module, name)

        def wrapped(*args, **kwargs):
            self.enter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.leave(name)

        setattr(module, name, wrapped)

    def enter(self) -> None:
        current, peak = tracemalloc.get_traced_memory()
        if self.frames:
            self.frames[-1][2] = max(self.frames[-1][2], peak)
        self.frames.append([self.calls, current, current])
        self.calls += 1
        tracemalloc.reset_peak()

    def leave(self, name: str) -> None:
        current, peak = tracemalloc.get_traced_memory()
        call, entry, so_far = self.frames.pop()
        peak = max(peak, so_far)
        if self.frames:
            self.frames[-1][2] = max(self.frames[-1][2], peak)
        self.rows.append((call, name, len(self.frames), entry, peak, current))


def child_trace(project: Path) -> None:
    """prepare() of `project`'s params in-process under tracemalloc, step by step. A first,
    untraced run imports what prepare imports lazily (pandas, Pillow, ...): the traced second
    run then counts only what prepare allocates."""
    import yaml

    from trainlab.config import params_hash, validate
    from trainlab.data import build, image_folder, user_file

    os.chdir(project)
    validated = validate(yaml.safe_load(Path("params.yaml").read_text()))
    build.prepare(validated.data, project / "traced" / "warm", params_hash(validated))
    phases = PhasePeaks()
    for module, name in ((image_folder, "read_image_folder"), (user_file, "_fit_inputs"),
                         (user_file.FittedInputs, "example"), (build, "load_raw"), (build, "build_splits"),
                         (build, "_source_splits"), (build, "write_prepared"), (build, "prepare")):
        phases.wrap(module, name)
    tracemalloc.start()
    build.prepare(validated.data, project / "traced" / "prepared", params_hash(validated))
    tracemalloc.stop()
    C.emit_result({"phases": [row[1:] for row in sorted(phases.rows)]})   # in call order: prepare first


# ------------------------------------------------------------------- the bench side
def measured(command: list[str], project: Path) -> dict:
    """`command` in `project` through a fresh measuring process (the project's own code, tracking inside)."""
    env = dict(PYTHONPATH=f"{project / 'src'}:{project}", PYTHONUNBUFFERED="1",
               MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    result, _ = C.run_child([SELF, "--child", "measure", *command], cwd=project, **env)
    return result


def check_grandchildren() -> float:
    """Peak RSS (MiB) the measuring child reports for a grandchild that holds 256 MiB: >= 256 if
    RUSAGE_CHILDREN covers grandchildren (`sh -c '...; true'`: sh waits, it does not exec)."""
    hold = f"{C.PYTHON} -c 'import numpy as np; a = np.ones(256 * 2 ** 20, np.uint8); print(a.sum())'"
    result, _ = C.run_child([SELF, "--child", "measure", "sh", "-c", f"{hold}; true"])
    return result["peak_mib"]


def prepared_bytes(project: Path) -> tuple[int, int]:
    """(bytes of the x .npy files, of every .npy file) in data/prepared."""
    files = list((project / "data" / "prepared").rglob("*.npy"))
    return (sum(f.stat().st_size for f in files if f.name.endswith("_x.npy")),
            sum(f.stat().st_size for f in files))


def measure_size(n: int, base: Path) -> dict:
    """One folder of n images: its files, dvc repro prepare, the stage alone, the traced run."""
    import own_data as O   # here: the measuring children need none of its imports

    started = time.perf_counter()
    folder = write_folder(base / "images" / f"images{n}", n)
    row = {"n": n, "generate_s": time.perf_counter() - started, "png_bytes": folder_bytes(folder)}
    project = O.new_project(O.Dataset(f"images{n}", folder.name, where=folder.parent), base / "projects", False)
    repro = measured([str(C.BIN / "dvc"), "repro", "prepare"], project)
    stage = measured([str(C.BIN / "trainlab"), "prepare"], project)
    traced, _ = C.run_child([SELF, "--child", "trace", str(project)], PYTHONPATH=str(project / "src"))
    row.update(dvc_peak=repro["peak_mib"], dvc_s=repro["wall_s"], stage_peak=stage["peak_mib"],
               stage_s=stage["wall_s"], phases=traced["phases"], traced=traced["phases"][0][3])
    row["x_bytes"], row["npy_bytes"] = prepared_bytes(project)
    print(f"{n} images: {row['png_bytes'] / MIB:.1f} MiB of PNG written in {row['generate_s']:.0f} s; stage peak "
          f"{row['stage_peak']:.0f} MiB in {row['stage_s']:.0f} s, dvc repro prepare peak {row['dvc_peak']:.0f} MiB "
          f"in {row['dvc_s']:.0f} s; load {C.load_average()}", flush=True)
    return row


def growth(row: dict, baseline: dict, key: str) -> float:
    return row[key] - baseline[key]


def size_rows(rows: list[dict]) -> list[list[str]]:
    baseline = rows[0]
    out = []
    for row in rows:
        grown = growth(row, baseline, "stage_peak") * MIB
        extra = row["n"] - baseline["n"]
        out.append([f"{row['n']:,}", f"{row['n'] * PIXELS / MIB:.1f}", f"{row['x_bytes'] / MIB:.1f}",
                    f"{row['stage_peak']:.0f}", "-" if not extra else f"{grown / MIB:+.0f}",
                    "-" if not extra else f"{grown / extra:.0f}", f"{row['traced'] / MIB:.1f}",
                    "-" if not extra else f"{growth(row, baseline, 'traced') / (extra * PIXELS):.2f}",
                    f"{row['dvc_peak']:.0f}", f"{row['stage_s']:.1f}", f"{row['dvc_s']:.1f}"])
    return out


SIZE_HEADER = ["images", "pixel array MiB (N x 784 B)", "prepared x .npy MiB", "stage peak RSS MiB",
               "- baseline MiB", "per image B", "traced peak MiB", "traced growth / pixel array",
               "dvc repro prepare peak MiB", "stage s", "dvc repro s"]


def phase_rows(row: dict) -> list[list[str]]:
    pixel_array = row["n"] * PIXELS
    return [[("  " * depth) + name, f"{entry / MIB:.1f}", f"{peak / MIB:.1f}", f"{peak / pixel_array:.2f}",
             f"{(peak - entry) / pixel_array:.2f}", f"{left / MIB:.1f}"]
            for name, depth, entry, peak, left in row["phases"]]


def print_report(rows: list[dict], pil_bytes: float) -> None:
    baseline, small, big = rows[0], rows[-2], rows[-1]
    print(C.table(size_rows(rows), SIZE_HEADER))
    print(f"\ntraced steps of prepare() on {big['n']:,} images (tracemalloc: Python objects and numpy arrays; "
          f"the pixel array = {big['n'] * PIXELS / MIB:.1f} MiB)")
    print(C.table(phase_rows(big), ["step (nested: inside the one above)", "traced at entry MiB", "peak MiB",
                                    "peak / pixel array", "(peak - entry) / pixel array", "held at exit MiB"]))
    data_growth = (big["n"] - baseline["n"]) / (small["n"] - baseline["n"])
    per_image = growth(big, baseline, "stage_peak") * MIB / (big["n"] - baseline["n"])
    print(f"\npeak growth {big['n']:,} vs {small['n']:,} images (stage, minus the {baseline['n']}-image baseline): "
          f"x{growth(big, baseline, 'stage_peak') / growth(small, baseline, 'stage_peak'):.2f} for x{data_growth:.2f} "
          f"the data; per image {per_image:.0f} B = {per_image / PIXELS:.2f} decoded images of {PIXELS} B; "
          f"one decoded PIL image held in memory: {pil_bytes:.0f} B (RSS)")
    C.print_ratio(f"peak_growth_{big['n']}/peak_growth_{small['n']}",
                  growth(big, baseline, "stage_peak") / growth(small, baseline, "stage_peak"))
    C.print_ratio("peak_growth_per_image/decoded_image_bytes", per_image / PIXELS)
    C.print_ratio("peak_growth_per_image/pil_image_bytes", per_image / pil_bytes)


def run(sizes: tuple[int, ...], base: Path) -> None:
    import own_data as O

    grandchild = check_grandchildren()
    print(f"RUSAGE_CHILDREN covers grandchildren: a grandchild holding 256 MiB reads {grandchild:.0f} MiB "
          f"({'yes' if grandchild >= 256 else 'NO: the peaks below miss dvc stages'})", flush=True)
    O.CODE_SNAPSHOT = O.snapshot_checkout(base / "code")
    rows = [measure_size(n, base) for n in (BASELINE, *sizes)]
    pil, _ = C.run_child([SELF, "--child", "pil", str(base / "images" / f"images{sizes[-1]}")])
    print_report(rows, pil["per_image_bytes"])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZES} images instead of {SIZES}")
    parser.add_argument("--keep", action="store_true", help="keep the images and projects (path printed)")
    parser.add_argument("--child", choices=("measure", "trace", "pil"), help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.child:
        children = {"measure": lambda: child_measure(args.rest), "trace": lambda: child_trace(Path(args.rest[0])),
                    "pil": lambda: child_pil(Path(args.rest[0]))}
        children[args.child]()
        return 0
    C.print_header("prepare's peak memory on an image folder (issue 26)",
                   ["bench/image_folder_memory.py", *sys.argv[1:]])
    with C.kept_workspace("image-folder-memory", args.keep) as base:
        run(QUICK_SIZES if args.quick else SIZES, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
