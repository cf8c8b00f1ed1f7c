"""End-to-end check that `dvc plots` output renders offline with plots/offline.html.

Builds a throw-away git+DVC repo, runs the real `dvc plots show/diff`, asserts no
remote <script src>, and screenshots the page in headless Chromium to prove the
charts are actually drawn (with a blank-page control so the check can fail).
Needs `make setup` (scripts/setup_plots.sh + chromium); missing pieces FAIL.
Set TRAINLAB_TEST_ARTIFACTS=<dir> to keep the screenshots and HTML.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "plots" / "offline.html"
SETUP_HINT = "run `make setup` (scripts/setup_plots.sh; apt-get install -y chromium)"
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.I)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
WIDTH, HEIGHT = 1000, 800
# DVC lays the two plots side by side: linear on the left, confusion on the right.
LINEAR_BOX = (0, 40, 480, 415)  # left, top, right, bottom
CONFUSION_BOX = (480, 40, WIDTH, 415)

DVC_YAML = """\
plots:
  - reports/curve.json:
      template: linear
      x: epoch
      y: loss
  - reports/confusion.json:
      template: confusion
      x: predicted
      y: actual
"""


def _run(cmd, cwd, **kw):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_NOSYSTEM": "1"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120, **kw)  # fmt: skip
    assert res.returncode == 0, f"{cmd} -> {res.returncode}:\n{res.stdout}{res.stderr}"
    return res


def _dvc(cwd, *args):
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _chromium():
    for name in (os.environ.get("TRAINLAB_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):  # fmt: skip
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.fail(f"Chromium not found on PATH: {SETUP_HINT}")


def _screenshots(*pages: tuple[Path, Path]) -> None:
    """Screenshot each (html, png) pair with headless Chromium, in parallel."""
    chromium = _chromium()
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i, (html, png) in enumerate(pages):
            cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile{i}",
                   f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}",
                   "--virtual-time-budget=5000", html.resolve().as_uri()]  # fmt: skip
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))  # fmt: skip
        for proc, (html, png) in zip(procs, pages):
            log = proc.communicate(timeout=60)[0]
            assert proc.returncode == 0 and png.is_file(), f"chromium failed:\n{log[-3000:]}"
            artifacts = os.environ.get("TRAINLAB_TEST_ARTIFACTS")
            if artifacts:
                Path(artifacts).mkdir(parents=True, exist_ok=True)
                shutil.copy(png, Path(artifacts) / png.name)
                shutil.copy(html, Path(artifacts) / f"{png.stem}.html")


def _read_rgb(png: Path):
    """Return (width, height, rows of (r, g, b) tuples); Pillow or pure-python."""
    try:
        from PIL import Image
    except ImportError:
        return _decode_png(png.read_bytes())
    img = Image.open(png).convert("RGB")
    w, h = img.size
    px = list(img.getdata())
    return w, h, [px[y * w:(y + 1) * w] for y in range(h)]


def _decode_png(data: bytes):
    """Minimal decoder: 8-bit, non-interlaced RGB/RGBA (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        (length,), ctype = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and not interlace, "unsupported PNG"
            bpp = 3 if color == 2 else 4
        elif ctype == b"IDAT":
            idat += body
    raw, stride, prev, rows = zlib.decompress(idat), w * bpp, bytearray(w * bpp), []
    for y in range(h):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(w)])
        prev = line
    return w, h, rows


def _pixel_stats(image, box):
    """(non-white, coloured) pixel counts in box; coloured = clearly not grey."""
    _, _, rows = image
    left, top, right, bottom = box
    non_white = coloured = 0
    for row in rows[top:bottom]:
        for r, g, b in row[left:right]:
            if min(r, g, b) < 235:
                non_white += 1
            if max(r, g, b) - min(r, g, b) > 60:
                coloured += 1
    return non_white, coloured


def _assert_offline(html: Path):
    text = html.read_text(encoding="utf-8")
    assert not REMOTE_SCRIPT.search(text), f"remote <script src> in {html}"
    assert "cdn.jsdelivr.net" not in text
    assert "vega-embed@" in text, "offline template was not used"
    assert 'id = "reports_curve_json"' in text and 'id = "reports_confusion_json"' in text


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    if not TEMPLATE.is_file():
        pytest.fail(f"{TEMPLATE} missing: {SETUP_HINT}")
    root = tmp_path_factory.mktemp("plots_repo")
    _run(["git", "init", "-q"], root)
    _dvc(root, "init", "-q")
    (root / "reports").mkdir()
    curve = [{"epoch": i, "loss": round(1.0 / (1 + i), 3)} for i in range(10)]
    (root / "reports" / "curve.json").write_text(json.dumps(curve))
    pairs = [(a, p) for a in range(3) for p in range(3) for _ in range(5 if a == p else 1)]
    confusion = [{"actual": a, "predicted": p} for a, p in pairs]
    (root / "reports" / "confusion.json").write_text(json.dumps(confusion))
    (root / "dvc.yaml").write_text(DVC_YAML)
    # Same layout as the project: template at plots/offline.html.
    (root / "plots").mkdir()
    shutil.copy(TEMPLATE, root / "plots" / "offline.html")
    return root


def test_html_template_option_draws_charts_offline(repo, tmp_path):
    _dvc(repo, "plots", "show", "--html-template", str(TEMPLATE), "-o", "out_flag")
    html = repo / "out_flag" / "index.html"
    _assert_offline(html)
    # Control: the same plot divs without the vega scripts must look blank.
    blank = tmp_path / "blank.html"
    body = html.read_text(encoding="utf-8").rsplit("<body>", 1)[1]  # JS has "<body>" too
    blank.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>' + body)
    assert "vega-embed@" not in blank.read_text(encoding="utf-8")
    png, blank_png = tmp_path / "plots_offline.png", tmp_path / "plots_blank_control.png"
    _screenshots((html, png), (blank, blank_png))

    image = _read_rgb(png)
    assert image[:2] == (WIDTH, HEIGHT)
    lin_nw, lin_col = _pixel_stats(image, LINEAR_BOX)
    conf_nw, conf_col = _pixel_stats(image, CONFUSION_BOX)
    # Linear: axes/grid/labels (grey) plus the purple loss line; confusion: heatmap.
    assert lin_nw > 5000 and lin_col > 300, f"no line plot ({lin_nw}, {lin_col}): {png}"
    assert conf_nw > 20000 and conf_col > 20000, f"no heatmap ({conf_nw}, {conf_col}): {png}"

    blank_image = _read_rgb(blank_png)
    for box in (LINEAR_BOX, CONFUSION_BOX):
        nw, col = _pixel_stats(blank_image, box)
        assert nw < 500 and col == 0, f"control page not blank ({nw}, {col}): {blank_png}"


def test_config_key_is_default_for_show_and_diff(repo):
    # plots.html_template is resolved relative to .dvc/ (whatever the cwd); from the
    # repo root "../plots/offline.html" would not exist and DVC would then error out
    # with "HTML template has to contain '{plot_divs}'".
    _dvc(repo, "config", "plots.html_template", "../plots/offline.html")
    _dvc(repo, "plots", "show", "-o", "out_cfg")
    _assert_offline(repo / "out_cfg" / "index.html")

    git_id = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    _run(["git", "add", "dvc.yaml", "reports"], repo)
    _run(["git", *git_id, "commit", "-qm", "plots"], repo)
    _dvc(repo, "plots", "diff", "HEAD", "-o", "out_diff")
    _assert_offline(repo / "out_diff" / "index.html")


# The project's own dvc.yaml: six declared panels, laid out by DVC two per row.
PROJECT_WIDTH, PROJECT_HEIGHT = 1000, 1600
PANEL_ROWS = [(0, 385), (390, 775), (780, 1160), (1170, 1550)]
PANEL_COLS = [(0, 470), (470, 950)]


def test_project_plots_draw_exactly_the_declared_panels(tmp_path):
    """`dvc plots show` on the project's dvc.yaml: seven panels, five line charts, one heatmap and
    one scatter plot (a regression's predicted against actual)."""
    import yaml

    from helpers.plots import write_reports

    root = tmp_path / "project"
    root.mkdir()
    _run(["git", "init", "-q"], root)
    _dvc(root, "init", "-q")
    shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO_ROOT / "params.yaml", root / "params.yaml")   # dvc.yaml templates data.file.* from it
    write_reports(root)
    _dvc(root, "plots", "show", "--html-template", str(TEMPLATE), "-o", "out")
    html = root / "out" / "index.html"
    _assert_offline_template(html)
    declared = [next(iter(p)) for p in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["plots"]]
    ids = re.findall(r'<div id = "([^"]+)"', html.read_text(encoding="utf-8"))
    assert ids == [re.sub(r"[^A-Za-z0-9]", "_", name) for name in declared]

    png = tmp_path / "project_plots.png"
    chromium = _chromium()
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                               f"--window-size={PROJECT_WIDTH},{PROJECT_HEIGHT}", "--virtual-time-budget=5000",
                               html.resolve().as_uri()], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and png.is_file(), done.stdout[-2000:] + done.stderr[-2000:]
    if os.environ.get("TRAINLAB_TEST_ARTIFACTS"):
        shutil.copy(png, Path(os.environ["TRAINLAB_TEST_ARTIFACTS"]) / png.name)
    image = _read_rgb(png)
    boxes = [(left, top, right, bottom) for top, bottom in PANEL_ROWS for left, right in PANEL_COLS]
    stats = [_pixel_stats(image, box) for box in boxes]
    confusion = declared.index("test confusion (champion)")
    for i, (name, (non_white, coloured)) in enumerate(zip(declared, stats)):
        if i == confusion:
            assert coloured > 20000, f"{name}: no heatmap ({non_white}, {coloured}): {png}"
        elif "predicted vs actual" in name:   # axes and a few purple points: no line, no heatmap
            assert non_white > 5000 and 20 < coloured < 5000, f"{name}: not a scatter ({non_white}, {coloured}): {png}"
        else:   # axes, grid and two purple curves; a filled heatmap would colour far more
            assert non_white > 5000 and 300 < coloured < 15000, f"{name}: not a line chart ({non_white}, {coloured}): {png}"


def _assert_offline_template(html: Path) -> None:
    text = html.read_text(encoding="utf-8")
    assert not REMOTE_SCRIPT.search(text) and "vega-embed@" in text, f"offline template not used: {html}"
