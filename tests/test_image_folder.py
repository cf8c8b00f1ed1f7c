"""A folder of images as the user has it (ROOT/<class>/<file>, or ROOT/train|test/<class>/<file>):
read, resized and refused in one line; through `trainlab prepare`, DVC and training.

Every folder is drawn here with Pillow: three classes of distinct colours, with one grayscale
image, one JPEG and one image of another size among them. Nothing is downloaded.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from trainlab import paths

from trainlab.config import validate
from trainlab.config.schema import FileConfig, ImageConfig
from trainlab.data.image_folder import read_image_folder
from trainlab.data.prepared import load_split, task_info
from trainlab.data.user_file import load_user_data
from trainlab.errors import DataError, ParamsError
from trainlab.models.store import load_model
from trainlab.serving import served_inputs
from trainlab.testing import BIN, copy_project, make_project, run, small_params, trainlab, write_params

from helpers.console import console, error_line, message

COLOURS = {"cat": (210, 40, 40), "dog": (40, 210, 40), "owl": (40, 40, 210)}
FOLDER = "data/own/pets"
HEIGHT, WIDTH = 10, 12


def draw_folder(root: Path, per_class: int = 12, extras: bool = True, seed: int = 0) -> Path:
    """`per_class` noisy PNGs of each class's colour; extras: a grayscale PNG, a JPEG and a
    larger image, so every class is told apart by its colour alone."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(noisy(rng, colour)).save(root / name / f"{i}.png")
    if extras:
        Image.fromarray(noisy(rng, COLOURS["cat"])).convert("L").save(root / "cat" / "gray.png")
        Image.fromarray(noisy(rng, COLOURS["dog"])).save(root / "dog" / "photo.JPG", quality=95)
        Image.fromarray(noisy(rng, COLOURS["owl"], (2 * HEIGHT, 3 * WIDTH))).save(root / "owl" / "big.png")
    return root


def noisy(rng: np.random.Generator, colour: tuple[int, int, int], size: tuple[int, int] = (HEIGHT, WIDTH)):
    return np.clip(np.array(colour) + rng.normal(0, 15, (*size, 3)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ reading
def test_class_folders_read_as_labelled_uint8_images(tmp_path: Path) -> None:
    root = draw_folder(tmp_path / "pets")
    (root / "cat" / ".hidden.png").write_bytes(b"not read")          # hidden: ignored
    (root / "cat" / "notes.txt").write_text("not an image")           # not an image suffix: ignored
    (root / "dog" / "more").mkdir()
    Image.fromarray(noisy(np.random.default_rng(1), COLOURS["dog"])).save(root / "dog" / "more" / "x.bmp")
    (root / "dog" / "linked").symlink_to(root / "owl")                 # a folder symlink: not followed
    (root / "emu").symlink_to(root / "owl")
    folder = read_image_folder(root, ImageConfig(), "data.file.path")
    assert folder.x.dtype == np.uint8 and folder.x.shape == (3 * 12 + 4, 3, HEIGHT, WIDTH)
    assert folder.split is None
    assert {name: int((folder.labels == name).sum()) for name in COLOURS} == {"cat": 13, "dog": 14, "owl": 13}
    for name, colour in COLOURS.items():   # each class keeps its colour in its own channel
        means = folder.x[folder.labels == name].mean(axis=(0, 2, 3))
        assert int(np.argmax(means)) == int(np.argmax(colour)), name
    assert folder.notes == ["images: 40 in 3 class folders; rgb (auto: 39 of 40 images in colour), 10x12 pixels "
                            "(the first image's size); 1 of another shape centre-cropped to it"]
    raw = load_user_data(FileConfig(path=str(root)))
    assert (raw.kind, raw.task, raw.input_shape, raw.target_classes) == ("image", "classification",
                                                                         (3, HEIGHT, WIDTH), list(COLOURS))
    assert len(raw.target_train.y) + len(raw.target_test.y) == 40
    assert raw.target_train.x.dtype == np.uint8   # pixels as decoded: normalised when read (load_split)
    assert raw.notes[0] == "data: pets: a folder of 40 labelled images, classification (3 classes)"
    assert raw.normalization["mode"] == "global" and np.asarray(raw.normalization["mean"]).shape == (3, 1, 1)


@pytest.mark.parametrize("resize", ["center_crop", "letterbox"])
def test_an_image_of_another_shape_is_centre_cropped_or_letterboxed(tmp_path: Path, resize: str) -> None:
    wide = np.full((10, 20), 128, dtype=np.uint8)
    wide[:, :4] = 255   # a white left edge: cropped away, or kept beside black bars
    (tmp_path / "a").mkdir()
    Image.fromarray(wide).save(tmp_path / "a" / "wide.png")
    x = read_image_folder(tmp_path, ImageConfig(size=10, resize=resize), "k").x
    assert x.shape == (1, 1, 10, 10)
    if resize == "center_crop":      # the short side fits already: the middle 10 columns, as they were
        assert (x == 128).all()
    else:                            # scaled to 5 x 10, centred, black above and below
        rows = x[0, 0].max(axis=1)
        assert (rows[:2] == 0).all() and (rows[-2:] == 0).all() and x[0, 0, 5, 0] > 200 and x[0, 0, 5, -1] == 128


def test_channels_auto_is_gray_when_every_image_is_and_16_bits_scale_to_8(tmp_path: Path) -> None:
    for name, value in (("dark", 20), ("light", 230)):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 8), value, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)).save(tmp_path / "light" / "deep.png")
    folder = read_image_folder(tmp_path, ImageConfig(), "k")
    assert folder.x.shape == (7, 1, 6, 8) and "gray (auto: every image is grayscale)" in folder.notes[0]
    assert folder.x[folder.labels == "light"].max() == 255 and folder.x[folder.labels == "dark"].max() == 20
    forced = read_image_folder(tmp_path, ImageConfig(channels="rgb", size=[4, 5]), "k")
    assert forced.x.shape == (7, 3, 4, 5) and "rgb (data.file.image.channels: rgb), 4x5 pixels" in forced.notes[0]


def test_train_and_test_folders_keep_the_users_split(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    draw_folder(root / "train", per_class=10, extras=False)
    draw_folder(root / "Test", per_class=3, extras=False, seed=1)
    raw = load_user_data(FileConfig(path=str(root)))
    assert (len(raw.target_train.y), len(raw.target_test.y)) == (30, 9)
    assert np.bincount(raw.target_test.y).tolist() == [3, 3, 3]
    assert "(the folder's own train/test split)" in raw.notes[1]
    (root / "Test" / "emu").mkdir()                                     # a class only in test
    for i in range(2):
        Image.fromarray(noisy(np.random.default_rng(i), (128, 128, 128))).save(root / "Test" / "emu" / f"{i}.png")
    assert "test labels ['emu'] never appear in the train split" in message(load_user_data, FileConfig(path=str(root)))


def test_a_csv_inside_the_folder_lists_the_images_their_labels_and_split(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    (root / "all").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["file,species,part"]
    for i in range(24):
        name = list(COLOURS)[i % 3]
        Image.fromarray(noisy(rng, COLOURS[name])).save(root / "all" / f"{i}.png")
        rows.append(f"all/{i}.png,{name if i != 5 else ''},{'Test' if i >= 18 else 'train'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    image = {"list": "labels.csv", "path_column": "file"}
    raw = load_user_data(FileConfig(path=str(root), label="species", split_column="part", image=image))
    assert (len(raw.target_train.y), len(raw.target_test.y)) == (17, 6)        # row 5 has no label
    assert raw.target_classes == list(COLOURS) and raw.input_shape == (3, HEIGHT, WIDTH)
    assert raw.notes[1].startswith("images: 23 in 3 classes, listed in labels.csv (the folder's own train/test split)")
    assert "1 listed image(s) without a label left out" in raw.notes
    for name, colour in COLOURS.items():   # each row's image carries its row's label
        means = raw.target_train.x[raw.target_train.y == list(COLOURS).index(name)].mean(axis=(0, 2, 3))
        assert int(np.argmax(means)) == int(np.argmax(colour)), name
    (root / "labels.csv").write_text("file,species\n../elsewhere.png,cat\n")
    assert "row 2: ../elsewhere.png is outside" in message(load_user_data, FileConfig(path=str(root),
                                                                                     label="species", image=image))
    assert "missing column(s) ['kind']" in message(load_user_data, FileConfig(path=str(root), label="kind",
                                                                              image=image))


def test_a_source_folder_is_fitted_to_the_target_images(tmp_path: Path) -> None:
    target = draw_folder(tmp_path / "pets", per_class=4, extras=False)
    source = tmp_path / "shapes"
    for name, value in (("light", 230), ("dark", 20)):
        (source / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((20, 20), value, dtype=np.uint8)).save(source / name / f"{i}.png")
    raw = load_user_data(FileConfig(path=str(target), source_path=str(source)))
    assert raw.source.x.shape == (6, 3, HEIGHT, WIDTH) and raw.source_classes == ["dark", "light"]
    assert ("source: images: 6 in 2 class folders; rgb (as the target data), 10x12 pixels; "
            "6 of another shape centre-cropped to it") in raw.notes


@pytest.mark.parametrize(("layout", "settings", "says"), [
    ("mixed", {}, "holds split folders (test, train) and other folders (cat); use ROOT/<class>/"),
    ("flat", {}, "has no class subfolders; put each class's images in"),
    ("empty class", {}, "/dog: no image files (.bmp, .gif"),
    ("classes", {"kind": "table"}, "data.file.kind: table, but data.file.path names a folder"),
    ("classes", {"shape": [3, 10, 12]}, "data.file.shape: [3, 10, 12] does not apply to an image folder"),
])
def test_a_folder_it_cannot_read_is_one_line(tmp_path: Path, layout: str, settings: dict, says: str) -> None:
    root = tmp_path / "pets"
    if layout == "mixed":
        draw_folder(root / "train", per_class=2, extras=False)
        draw_folder(root / "test", per_class=2, extras=False)
        (root / "cat").mkdir()
    elif layout == "flat":
        root.mkdir()
        Image.fromarray(noisy(np.random.default_rng(0), COLOURS["cat"])).save(root / "0.png")
    else:
        draw_folder(root, per_class=2, extras=False)
        if layout == "empty class":
            for path in (root / "dog").iterdir():
                path.unlink()
    assert says in message(load_user_data, FileConfig(path=str(root), **settings))


def test_image_keys_are_validated_with_their_dotted_names() -> None:
    params = validate(small_params(data__file__image__size=[6, 8]))
    assert params.data.file.image.size == (6, 8) and ImageConfig(size=5).size == (5, 5)
    for value, says in ((True, "expected an integer"), ([0, 4], "must be > 0"), ("big", "")):
        with pytest.raises(ParamsError) as caught:
            validate(small_params(data__file__image__size=value))
        assert "data.file.image.size" in str(caught.value) and says in str(caught.value)
    with pytest.raises(ParamsError, match="data.file.image.resize"):
        validate(small_params(data__file__image__resize="stretch"))


# ------------------------------------------------------------------------------ the stage
def folder_params(**overrides):
    return small_params(data__name="file", data__file__path=FOLDER, data__train_samples=None, **overrides)


@pytest.fixture(scope="module")
def folder_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project whose data.file.path is an image folder, prepared once (treat as read-only)."""
    project = make_project(tmp_path_factory.mktemp("images") / "project", folder_params())
    draw_folder(project / FOLDER)
    out = trainlab(["prepare"], project).stdout
    assert "data: pets: a folder of 39 labelled images" in out and "images: 39 in 3 class folders" in out
    return project


def test_prepared_images_stay_uint8_pixels_normalised_when_read(folder_project: Path) -> None:
    from trainlab.data.normalize import NormalizedPixels, normalize

    root = folder_project / "data/prepared"
    manifest = json.loads((root / "manifest.json").read_text())
    spec = manifest["inputs"]["normalization"]
    for task, splits in (("target", ("train", "val", "test")), ("source", ("train", "val"))):
        for split in splits:
            stored = np.load(root / task / f"{split}_x.npy")
            assert stored.dtype == np.uint8 and stored.shape[1:] == (3, HEIGHT, WIDTH)
            assert manifest["tasks"][task]["splits"][split]["files"]["x"]["stored"] == "uint8 pixels, normalised when read"
            in_memory = load_split(root, task, split).x
            assert in_memory.dtype == np.float32
            np.testing.assert_array_equal(in_memory, normalize(stored, spec))
            mapped = load_split(root, task, split, mmap=True).x   # the DataLoader's path: lazy
            assert isinstance(mapped, NormalizedPixels) and isinstance(mapped.stored, np.memmap)
            assert (mapped.shape, mapped.dtype, len(mapped)) == (stored.shape, np.float32, len(stored))
            last = len(stored) - 1
            picked = np.array([last, 0, last // 2])           # a batch, out of order
            np.testing.assert_array_equal(mapped[picked], in_memory[picked])
            np.testing.assert_array_equal(mapped[last], in_memory[last])
            np.testing.assert_array_equal(mapped[:2], in_memory[:2])
            np.testing.assert_array_equal(np.asarray(mapped), in_memory)
    # The statistics are those of every image outside the test split (train and validation),
    # per channel, on the 0-255 scale of the pixels.
    train = np.concatenate([np.load(root / f"target/{split}_x.npy") for split in ("train", "val")]).astype(np.float64)
    np.testing.assert_allclose(np.asarray(spec["mean"]).ravel(), train.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(spec["std"]).ravel(), train.std(axis=(0, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize("mode", ["global", "per_feature"])
def test_pixel_statistics_are_summed_a_chunk_at_a_time_and_match_the_whole(monkeypatch: pytest.MonkeyPatch,
                                                                          mode: str) -> None:
    from trainlab.data import normalize as N

    pixels = np.random.default_rng(3).integers(0, 256, size=(23, 3, 5, 4), dtype=np.uint8)
    whole = N.fit_normalization(pixels.astype(np.float32), mode, "image")   # float input: no chunks
    monkeypatch.setattr(N, "PIXEL_CHUNK", 4)                                # 6 chunks, the last of 3
    chunked = N.fit_normalization(pixels, mode, "image")
    assert np.asarray(chunked["mean"]).shape == np.asarray(whole["mean"]).shape
    np.testing.assert_allclose(chunked["mean"], whole["mean"], rtol=1e-6)
    np.testing.assert_allclose(chunked["std"], whole["std"], rtol=1e-6)


def test_a_folder_trains_through_the_dataloader_from_the_mapped_pixels(folder_project: Path, tmp_path: Path) -> None:
    project = copy_project(folder_project, tmp_path / "project")
    write_params(project, folder_params(trainer__loader="dataloader", trainer__num_workers=1,
                                        finetune__compare_scratch=False, finetune__linear_probe=False,
                                        finetune__linear_baseline=False))
    trainlab(["pretrain"], project)
    trainlab(["finetune"], project)
    details = json.loads((project / "reports/finetune/details.json").read_text())
    assert np.isfinite(details["val/loss"])
    assert load_model(project / "models/finetuned.pt")[1]["input_shape"] == [3, HEIGHT, WIDTH]


def truncated_png(path: Path) -> None:
    Image.fromarray(noisy(np.random.default_rng(2), COLOURS["cat"], (40, 40))).save(path)
    path.write_bytes(path.read_bytes()[:300])   # the header whole, the pixels cut


@pytest.mark.parametrize("bad", ["random bytes", "truncated"])
def test_a_corrupt_image_stops_prepare_in_one_line_or_is_skipped_and_counted(
        folder_project: Path, tmp_path: Path, bad: str) -> None:
    project = copy_project(folder_project, tmp_path / "project")
    target = project / FOLDER / "cat" / "x.png"
    if bad == "random bytes":
        target.write_bytes(np.random.default_rng(0).bytes(500))
    else:
        truncated_png(target)
    line = error_line(console(["prepare"], project))
    assert line.startswith(f"error: {FOLDER}/cat/x.png: not a readable image (")
    assert line.endswith("remove it or set data.file.image.skip_unreadable: true")
    write_params(project, folder_params(data__file__image__skip_unreadable=True))
    out = trainlab(["prepare"], project).stdout
    assert f"skipped 1 unreadable image(s), e.g. {FOLDER}/cat/x.png" in out
    assert "images: 39 in 3 class folders" in out


@pytest.mark.slow
def test_changing_one_image_reruns_prepare_and_an_unchanged_folder_does_not(folder_project: Path,
                                                                             tmp_path: Path) -> None:
    project = copy_project(folder_project, tmp_path / "project")

    def dvc(*args: str) -> str:
        return run([str(BIN / "dvc"), *args], project).stdout

    assert "Running stage 'prepare'" in dvc("repro", "prepare")
    assert "prepare" not in json.loads(dvc("status", "--json"))
    assert "Running stage 'prepare'" not in dvc("repro", "prepare")          # nothing changed: skipped
    image = project / FOLDER / "dog" / "3.png"
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]                                       # one pixel
    Image.fromarray(pixels).save(image)
    changed = json.loads(dvc("status", "--json"))["prepare"][0]["changed deps"]
    assert changed[FOLDER] == "modified"
    assert "Running stage 'prepare'" in dvc("repro", "prepare")
    assert "prepare" not in json.loads(dvc("status", "--json"))
    (project / FOLDER / "owl" / "5.png").unlink()                             # one image less
    assert json.loads(dvc("status", "--json"))["prepare"][0]["changed deps"][FOLDER] == "modified"


def test_a_folder_trains_with_only_the_data_keys_set(folder_project: Path, tmp_path: Path) -> None:
    project = copy_project(folder_project, tmp_path / "project")
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    assert (manifest["kind"], manifest["input_shape"]) == ("image", [3, HEIGHT, WIDTH])
    assert manifest["tasks"]["target"]["class_names"] == list(COLOURS)
    trainlab(["pretrain"], project)
    trainlab(["finetune"], project)
    model, saved = load_model(project / "models/finetuned.pt")
    assert (saved["model"]["arch"], list(saved["input_shape"])) == ("resnet2d", [3, HEIGHT, WIDTH])
    test = load_split(project / "data/prepared", "target", "test")
    with torch.no_grad():
        assert model(torch.as_tensor(test.x)).shape == (len(test.y), len(COLOURS))
    # Three optimizer steps teach the CNN little; the linear baseline on the same prepared
    # images shows the colours reached the model with their labels.
    details = json.loads((project / "reports/finetune/details.json").read_text())
    assert details["linear/val_acc"] >= 0.9 and details["selection/heldout_samples"] == 30


def test_the_served_model_takes_image_files_and_prepares_them_as_prepare_did(
        folder_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = copy_project(folder_project, tmp_path / "project")
    trainlab(["pretrain"], project)
    trainlab(["finetune"], project)
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trainlab").experiment_id
    (logged,) = [m for m in client.search_logged_models(experiment_ids=[experiment]) if m.name == "finetuned"]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    assert [c.name for c in served.metadata.get_input_schema().inputs] == ["image"]
    assert served.metadata.get_input_schema().inputs[0].type.name == "string"
    files = [project / FOLDER / name / "1.png" for name in COLOURS]
    other_size = tmp_path / "big.png"
    Image.fromarray(noisy(np.random.default_rng(5), COLOURS["owl"], (40, 48))).save(other_size)
    rows = pd.DataFrame({"image": [base64.b64encode(p.read_bytes()).decode() for p in [*files, other_size]]})
    probabilities = served.predict(rows)
    assert list(probabilities.columns) == list(COLOURS) and len(probabilities) == 4
    assert np.allclose(probabilities.to_numpy().sum(axis=1), 1.0, atol=1e-5)
    # What the network gets from a served file is a row of the prepared data: same decoding,
    # resizing and normalisation.
    prepared = np.concatenate([load_split(project / "data/prepared", "target", split).x
                               for split in ("train", "val", "test")])
    monkeypatch.chdir(project)   # served_inputs reads the prepared data's manifest
    inputs = served_inputs(task_info(paths.PREPARED, "target"))
    batch = inputs(rows.iloc[:3])
    assert all(np.isclose(prepared, row, atol=1e-6).reshape(len(prepared), -1).all(axis=1).any() for row in batch)
    with pytest.raises(DataError, match=r"^input row 0: not base64 text of an image file$"):
        inputs(pd.DataFrame({"image": ["not an image!"]}))
    with pytest.raises(DataError, match=r"^input row 0: not a readable image \("):
        inputs(pd.DataFrame({"image": [base64.b64encode(b"GIF89a broken").decode()]}))
