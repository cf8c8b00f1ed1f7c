"""ResNet-18 on the digits folder: from scratch vs from a backbone another trainlab run pretrained (issue 26).

Two throwaway projects, made the tests' way (trainlab.testing.make_project, the shipped
params.yaml with the keys below set), each stage run as `trainlab STAGE` and timed:

- **A, the source.** scikit-image's three texture photos (brick.png, grass.png,
  gravel.png: 512x512 grey, shipped in the wheel's skimage/data/, each under the Creative
  Commons CC0 licence per skimage/data/_fetchers.py: brick and gravel from CC0Textures,
  grass from DeviantArt) cut into random 32x32 crops, three classes. The labelled
  pretraining set (`data.file.source_path`) is `--source-per-class` crops per class from
  the left 3/4 of each photo; A's own target folder (needed by `prepare`, never trained
  on here) holds crops from the right 1/4, top half for train, bottom half for test.
  `model.arch: resnet18`, `prepare` + `pretrain` -> A/models/pretrained.pt.
- **B, the target.** The digits28 images (bench/small_data.py: sklearn's 8x8 digits
  upsampled to 28x28 and shifted) written as a PNG folder ROOT/train|test/<digit>/*.png,
  resized by `data.file.image.size` to `--size` px (the textures too, so both networks see
  the same input size), `data.train_samples` labels, `model.arch: resnet18`,
  `pretrain.from: data/own/texture_resnet18.pt` (A's file, copied). `prepare`, `pretrain`
  (the import), `finetune` (fine-tuned + the from-scratch twin: `transfer/gain`).

`evaluate` needs the search and the ensemble, so the test accuracies are computed here:
models/finetuned.pt and models/baselines/scratch.pt (trainlab.models.store.load_model) on
B's prepared target test split; likewise A's pretrained.pt on A's target test split (the
right-1/4 bottom-half crops: a region of each photo the pretraining never saw).

    .venv/bin/python bench/resnet_transfer.py                     # the run of bench/RESULTS.md
    .venv/bin/python bench/resnet_transfer.py --size 32           # a smaller input
    .venv/bin/python bench/resnet_transfer.py --set finetune.backbone_lr_scale=1.0 --set 'finetune.freeze=[]'
    .venv/bin/python bench/resnet_transfer.py --quick             # shrunk budgets: does it run?
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TEXTURES = ("brick", "grass", "gravel")
CROP = 32
DIGITS_FOLDER = "data/own/digits"
BACKBONE = "data/own/texture_resnet18.pt"


# ------------------------------------------------------------------------- data
def skimage_data_dir() -> Path:
    """skimage/data/ of the installed wheel, found without importing skimage."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-image is not installed: .venv/bin/pip install 'scikit-image>=0.24' "
                         "(or pip install -e '.[bench]')")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def write_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)


def random_crops(image: np.ndarray, n: int, rows: slice, cols: slice, rng: np.random.Generator) -> np.ndarray:
    """`n` CROPxCROP crops lying wholly inside image[rows, cols]."""
    region = image[rows, cols]
    top = rng.integers(0, region.shape[0] - CROP + 1, n)
    left = rng.integers(0, region.shape[1] - CROP + 1, n)
    return np.stack([region[t:t + CROP, s:s + CROP] for t, s in zip(top, left)])


def texture_folders(source: Path, target: Path, per_class: int, target_per_class: int, seed: int = 0) -> None:
    """The texture classes: `source`/<class>/*.png (left 3/4 of each photo) and
    `target`/train|test/<class>/*.png (right 1/4: top half train, bottom half test)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    data = skimage_data_dir()
    for name in TEXTURES:
        image = np.asarray(Image.open(data / f"{name}.png").convert("L"))
        height, width = image.shape
        split = width * 3 // 4
        for i, crop in enumerate(random_crops(image, per_class, slice(0, height), slice(0, split), rng)):
            write_png(crop, source / name / f"{i}.png")
        for part, rows in (("train", slice(0, height // 2)), ("test", slice(height // 2, height))):
            for i, crop in enumerate(random_crops(image, target_per_class, rows, slice(split, width), rng)):
                write_png(crop, target / part / name / f"{i}.png")


def digits_folder(root: Path, n: int, seed: int = 0, test_fraction: float = 0.2) -> None:
    """bench/small_data.py's digits28 images as PNGs: root/train|test/<digit>/<i>.png."""
    import small_data

    npz = small_data.digits28(root.parent / "digits28.npz", n=n, seed=seed)
    with np.load(npz) as arrays:
        x, y = arrays["x"], arrays["y"]
    npz.unlink()
    side = small_data.IMAGE_SIDE
    pixels = np.clip(np.rint(x.reshape(len(x), side, side) * (255 / 16)), 0, 255).astype(np.uint8)
    n_test = int(round(len(x) * test_fraction))
    for i, (image, label) in enumerate(zip(pixels, y)):
        write_png(image, root / ("test" if i < n_test else "train") / str(int(label)) / f"{i}.png")


# ------------------------------------------------------------------------- settings
def common(args: argparse.Namespace) -> dict:
    """What both projects set: the network, the input size, the budgets (see --quick)."""
    return {"model.arch": "resnet18", "data.name": "file", "data.file.image.size": [args.size, args.size],
            "trainer.threads": args.threads}


def source_params(args: argparse.Namespace) -> dict:
    return C.real_params(**common(args), **{
        "data.file.path": "data/own/textures", "data.file.source_path": "data/own/texture_source",
        "data.train_samples": None,
        "pretrain.batch_size": args.pretrain_batch, "pretrain.auto.max_steps": args.pretrain_steps,
        "pretrain.auto.min_steps": min(args.pretrain_steps, 1000)})


def target_params(args: argparse.Namespace) -> dict:
    return C.real_params(**{
        **common(args), "data.file.path": DIGITS_FOLDER, "data.train_samples": args.labels,
        "pretrain.from": BACKBONE, "finetune.auto.max_steps": args.finetune_steps,
        "finetune.auto.min_steps": min(args.finetune_steps, 500), "finetune.linear_probe": False,
        "finetune.linear_baseline": False, **dict(args.set)})


def dotted(text: str) -> tuple[str, object]:
    """--set KEY=VALUE: a dotted params key and its YAML value."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. finetune.backbone_lr_scale=1.0")
    return key, yaml.safe_load(value)


# ------------------------------------------------------------------------- running
def stage(project: Path, name: str, log: Path) -> float:
    """`trainlab NAME` in `project`, its output appended to `log`; wall seconds."""
    started = time.perf_counter()
    proc = subprocess.run([str(C.BIN / "trainlab"), name], cwd=project, env=C.env(), capture_output=True,
                          text=True, timeout=3600)
    wall = time.perf_counter() - started
    with log.open("a") as out:
        out.write(f"===== {project.name}: trainlab {name} ({wall:.1f} s, exit {proc.returncode})\n"
                  f"{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        raise RuntimeError(f"{project.name}: trainlab {name} exited {proc.returncode}\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    interesting = [line for line in proc.stdout.splitlines() if line.strip()]
    print(f"{project.name}: trainlab {name}: {wall:.1f} s, load {C.load_average()}"
          + "".join(f"\n    {line}" for line in interesting[-4:]), flush=True)
    return wall


def test_accuracy(project: Path, model_file: str, task: str = "target") -> tuple[float, int]:
    """(accuracy, samples) of a model file on the project's prepared test split of `task`."""
    import torch

    from trainlab.data.prepared import load_split, read_manifest
    from trainlab.models.store import load_model

    prepared = project / "data/prepared"
    model, saved = load_model(project / model_file)
    test = load_split(prepared, task, "test")
    classes = read_manifest(prepared)["tasks"][task].get("class_names")
    saved_classes = saved.get("class_names")
    if classes and saved_classes and list(classes) != list(saved_classes):
        raise RuntimeError(f"{model_file}: classes {saved_classes} vs the test split's {classes}")
    torch.set_num_threads(1)
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(test.x, dtype=np.float32))
        predicted = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)]).numpy()
    return float((predicted == np.asarray(test.y)).mean()), len(predicted)


def first_number(details: dict, *keys: str) -> float | None:
    for key in keys:
        if isinstance(details.get(key), (int, float)):
            return float(details[key])
    return None


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def run(args: argparse.Namespace, base: Path) -> int:
    log = base / "stages.log"
    print(f"# projects and the stages' output: {base} (log {log})", flush=True)
    times: dict[str, float] = {}

    # A: pretrain ResNet-18 on the three textures.
    a = C.make_project(base / "A", source_params(args))
    texture_folders(a / "data/own/texture_source", a / "data/own/textures", args.source_per_class,
                    args.target_per_class)
    for name in ("prepare", "pretrain"):
        times[f"A {name}"] = stage(a, name, log)
    a_details = json.loads((a / "reports/pretrain/details.json").read_text())
    print(f"A pretrain details: { {k: v for k, v in a_details.items() if not isinstance(v, (dict, list))} }",
          flush=True)
    a_val = first_number(a_details, "val/acc", "best/val/acc", "final/val/acc")
    a_heldout, a_n = None, 0
    try:   # the pretrained network's head has the texture classes: score it on A's target test crops
        a_heldout, a_n = test_accuracy(a, "models/pretrained.pt", "target")
    except Exception as err:   # noqa: BLE001 (a number the table can go without)
        print(f"A: no held-out texture accuracy ({err})", flush=True)

    # B: the digits folder, from A's backbone and from scratch.
    b = C.make_project(base / "B", target_params(args))
    digits_folder(b / DIGITS_FOLDER, args.images)
    shutil.copy(a / "models/pretrained.pt", b / BACKBONE)
    for name in ("prepare", "pretrain", "finetune"):
        times[f"B {name}"] = stage(b, name, log)
    details = json.loads((b / "reports/finetune/details.json").read_text())
    print(f"B finetune details: { {k: v for k, v in details.items() if not isinstance(v, (dict, list))} }",
          flush=True)
    gain_val = first_number(details, "transfer/gain")
    tuned, n_test = test_accuracy(b, "models/finetuned.pt")
    scratch, _ = test_accuracy(b, "models/baselines/scratch.pt")

    print()
    print(C.table([[f"scikit-image brick/grass/gravel, 3 x {args.source_per_class} crops (CC0)",
                    pct(a_val), f"{pct(a_heldout)} ({a_n})", f"{pct(tuned)} ({n_test})", pct(scratch),
                    "-" if gain_val is None else f"{gain_val:+.4f}", f"{100 * (tuned - scratch):+.1f} pt"]],
                  ["source set", "pretrain val acc (textures)", "held-out texture acc", "fine-tuned test acc",
                   "scratch test acc", "transfer/gain (val)", "test gain"]))
    print()
    print(C.table([[name, f"{wall:.0f}"] for name, wall in times.items()] + [["total", f"{sum(times.values()):.0f}"]],
                  ["stage", "wall s"]))
    C.print_ratio("finetuned/scratch test acc", tuned / scratch if scratch else float("nan"))
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input side in px of both projects (default 64)")
    parser.add_argument("--labels", type=int, default=400, help="B's data.train_samples")
    parser.add_argument("--images", type=int, default=2000, help="digits28 images in B's folder (20%% test)")
    parser.add_argument("--source-per-class", type=int, default=1000, help="texture crops per class, A's source")
    parser.add_argument("--target-per-class", type=int, default=100, help="A's own target crops per class and split")
    parser.add_argument("--pretrain-batch", type=int, default=32, help="A's pretrain.batch_size")
    parser.add_argument("--pretrain-steps", type=int, default=200, help="A's pretrain.auto.max_steps")
    parser.add_argument("--finetune-steps", type=int, default=150, help="B's finetune.auto.max_steps (each fit)")
    parser.add_argument("--set", type=dotted, action="append", default=[], metavar="KEY=VALUE",
                        help="another B params key, e.g. --set finetune.freeze=[] (repeatable)")
    parser.add_argument("--threads", type=int, default=2, help="trainer.threads")
    parser.add_argument("--quick", action="store_true", help="tiny budgets and data: does it run?")
    parser.add_argument("--keep", action="store_true", help="keep the projects and logs (path printed)")
    args = parser.parse_args()
    if args.quick:
        # 48 px, not 32: at 32 px layer4's maps are 1x1, and a training batch of one sample
        # (125 samples in batches of 31: engine/batches.py keeps it) stops batch norm
        args.size, args.images, args.labels = 48, 300, 100
        args.source_per_class, args.target_per_class = 60, 20
        args.pretrain_steps, args.finetune_steps = 4, 4
    return args


def main() -> int:
    args = parse_args()
    C.print_header("ResNet-18 transfer: texture backbone vs scratch on the digits folder (issue 26)",
                   ["bench/resnet_transfer.py", *sys.argv[1:]], threads=args.threads)
    print(f"# settings: {vars(args)}", flush=True)
    with C.kept_workspace("resnet-transfer", args.keep) as base:
        return run(args, base)


if __name__ == "__main__":
    sys.exit(main())
