"""Published ResNet layouts: torchvision's and timm's resnet18/34 against trainlab's (issue 26).

trainlab's `model.arch: resnet18 / resnet34` (trainlab.models.resnet) claims torchvision's and
timm's parameter layout, and `pretrain.from` (trainlab.models.imported.import_network) imports
such a state dict key for key. This script checks that claim against the real libraries,
with seeded random weights (no ImageNet download is possible here), for each arch and each
reference (torchvision.models.<arch>(weights=None), timm.create_model(arch, pretrained=False)):

1. the reference's batch-norm running statistics and affine parameters are randomised (else
   timm's zero-initialised last BN per block and the default statistics hide a mismatch), its
   state dict is written as a .safetensors file and imported with `import_network` into a
   3-channel trainlab network: strict keys and shapes, every tensor equal to the file's (the
   same for the state dict written by torch.save as a .pth, how torchvision publishes it);
2. both in eval mode on the same random input (2x3x64x64 and 2x3x224x224): the logits (the
   file's 1,000-class `fc` becomes trainlab's `head.linear`, so the head is the published one)
   and the global-pooled penultimate features (the input of `fc`) must agree within float32
   tolerance: max |diff| <= TOL * max(1, max |reference|). One training-mode forward (batch
   statistics) must give the same pooled features and move the running statistics alike; a
   control file (two same-shape batch-norm tensors swapped) must be seen by the comparison;
3. 1 channel (input shape [1, H, W] and [H, W]): the first conv equals the sum of the RGB
   filters (and timm's own `adapt_input_conv(1, w)`), and the output on a grey image equals the
   reference's on that image repeated over 3 channels; 2 and 4 channels: the first conv equals
   timm's `adapt_input_conv`;
4. `export_timm_weights("timm:resnet18.a1_in1k")` (what `trainlab fetch-weights` runs) offline:
   a Hugging Face cache is written by hand in a temporary HF_HOME
   (hub/models--timm--resnet18.a1_in1k/{refs/main, snapshots/<sha>/model.safetensors}, the
   file a random-init timm resnet18's state dict), HF_HUB_OFFLINE=1, then the real function
   (in a child process, since huggingface_hub reads its environment at import) and the real
   CLI (`trainlab fetch-weights timm:resnet18.a1_in1k --out ...`) write a file that must hold
   exactly the cached tensors and import into trainlab's resnet18 with the reference's logits.
   With an empty cache the function must fail with trainlab's one-line UserError.

It does not run in the project's .venv: that has the torch 2.13.0 CPU build, beside which
PyPI's torchvision does not import ('operator torchvision::nms does not exist'), and timm
needs torchvision. A separate venv with the torch/torchvision pair that this machine's pip
takes from local disk (x86_64; a CUDA build of ~5.5 GB that runs on the CPU), trainlab
installed without its dependencies (pyproject pins torch < 2.14) plus the few it needs here:

    python3 -m venv /tmp/timmvenv
    /tmp/timmvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm
    /tmp/timmvenv/bin/pip install --no-deps -e .
    /tmp/timmvenv/bin/pip install pydantic torch==2.14.1       # pyyaml, numpy, safetensors, click: come with timm
    /tmp/timmvenv/bin/python bench/timm_layout.py               # the run of bench/RESULTS.md
    /tmp/timmvenv/bin/python bench/timm_layout.py --quick       # 64x64 only, resnet18 only

The exit status is 1 if any check fails.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

try:
    import timm
    import torchvision
    from timm.models import adapt_input_conv
except ImportError as err:   # the project's .venv: see the docstring
    raise SystemExit(f"{err}: run this with a venv that has timm and a matching torchvision "
                     "(bench/timm_layout.py's docstring: /tmp/timmvenv)") from None

from safetensors.torch import load_file, save_file  # noqa: E402

from trainlab.config.schema import ModelConfig  # noqa: E402
from trainlab.errors import UserError  # noqa: E402
from trainlab.models.imported import export_timm_weights, import_network  # noqa: E402

ARCHS = ("resnet18", "resnet34")
SOURCES = ("torchvision", "timm")
SIZES = (64, 224)
TOL = 1e-4          # float32: max |diff| <= TOL * max(1, max |reference|)
TIMM_NAME = "resnet18.a1_in1k"
FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"   # the snapshot folder's name: any 40 hex digits


# ------------------------------------------------------------------------- references
def reference(source: str, arch: str, seed: int) -> nn.Module:
    """The library's network, seeded random weights, BN statistics and affine randomised, eval mode."""
    torch.manual_seed(seed)
    model = (getattr(torchvision.models, arch)(weights=None) if source == "torchvision"
             else timm.create_model(arch, pretrained=False))
    randomise_batchnorm(model, seed)
    return model.eval()


def randomise_batchnorm(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) * 0.8 + 0.6)
                module.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                module.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=gen)))


def fc_input(model: nn.Module, x: torch.Tensor, fc: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, the global-pooled features the linear head receives)."""
    seen: list[torch.Tensor] = []
    handle = fc.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    return logits, seen[0]


def worst(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, bool]:
    """(max |diff|, max |reference|, within TOL)."""
    diff = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    return diff, scale, diff <= TOL * max(1.0, scale)


# ------------------------------------------------------------------------- the checks
def check_layout(arch: str, source: str, sizes: tuple[int, ...], folder: Path, seed: int) -> list[dict]:
    seed += 1000 * ARCHS.index(arch) + 100 * SOURCES.index(source)   # each reference its own weights
    ref = reference(source, arch, seed)
    state = {k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}
    path = folder / f"{source}_{arch}.safetensors"
    save_file(state, str(path))
    rows = []

    # 3 channels: strict import, every tensor the file's, same logits and features
    net = import_network(path, ModelConfig(arch=arch), (3, 224, 224), "image", ["a", "b"])
    model = net.model.eval()
    own = model.state_dict()
    mapped = {("head.linear." + k[3:] if k.startswith("fc.") else "backbone." + k): k for k in state}
    equal = sum(torch.equal(own[ours], state[theirs]) for ours, theirs in mapped.items() if ours in own)
    keys = f"{equal}/{len(state)} (model {len(own)})"
    ok_keys = equal == len(state) == len(own) and net.layout == "torchvision" and len(net.class_names) == 1000
    for size in sizes:
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed + size))
        ref_logits, ref_feat = fc_input(ref, x, ref.fc)
        our_logits, our_feat = fc_input(model, x, model.head.linear)
        d_logit, s_logit, ok_logit = worst(our_logits, ref_logits)
        d_feat, s_feat, ok_feat = worst(our_feat, ref_feat)
        rows.append(dict(arch=arch, source=source, check=f"3ch {size}x{size}", keys=keys,
                         logits=f"{d_logit:.2e} (of {s_logit:.3g})", features=f"{d_feat:.2e} (of {s_feat:.3g})",
                         ok=ok_keys and ok_logit and ok_feat, worst=max(d_logit / max(1.0, s_logit),
                                                                        d_feat / max(1.0, s_feat))))

    # The same state dict as torch.save writes it (.pth, how torchvision publishes its weights)
    pth = folder / f"{source}_{arch}.pth"
    torch.save(ref.state_dict(), pth)
    own_pth = import_network(pth, ModelConfig(arch=arch), (3, 224, 224), "image", ["a", "b"]).model.state_dict()
    equal_pth = sum(torch.equal(own_pth[ours], state[theirs]) for ours, theirs in mapped.items() if ours in own_pth)
    rows.append(dict(arch=arch, source=source, check="3ch, the file a .pth (torch.save)",
                     keys=f"{equal_pth}/{len(state)} (model {len(own_pth)})", logits="-", features="-",
                     ok=equal_pth == len(state) == len(own_pth), worst=0.0))

    # Training mode (batch statistics), one forward on copies: same pooled features, and the running
    # statistics then moved alike (batch-norm eps and momentum are the reference's)
    ref_t, model_t = copy.deepcopy(ref).train(), copy.deepcopy(model).train()
    x = torch.randn(4, 3, sizes[0], sizes[0], generator=torch.Generator().manual_seed(seed + 5))
    ref_feat = fc_input(ref_t, x, ref_t.fc)[1]
    with torch.no_grad():
        our_feat = model_t.backbone(x)
    d_feat, s_feat, ok_feat = worst(our_feat, ref_feat)
    ref_stats, our_stats = ref_t.state_dict(), model_t.state_dict()
    stats = [(our_stats[ours] - ref_stats[theirs]).abs().max().item() for ours, theirs in mapped.items()
             if theirs.endswith(("running_mean", "running_var"))]
    counters = all(torch.equal(our_stats[ours], ref_stats[theirs]) for ours, theirs in mapped.items()
                   if theirs.endswith("num_batches_tracked"))
    rows.append(dict(arch=arch, source=source, check=f"3ch {sizes[0]}x{sizes[0]} train mode, 1 step",
                     keys=f"running stats {max(stats):.1e}, counters {'equal' if counters else 'DIFFER'}",
                     logits="-", features=f"{d_feat:.2e} (of {s_feat:.3g})",
                     ok=ok_feat and max(stats) <= 1e-5 and counters, worst=d_feat / max(1.0, s_feat)))

    # 1 channel, as [1, H, W] and as [H, W]: RGB filters summed; grey in == grey repeated x3 for the reference
    summed = state["conv1.weight"].sum(dim=1, keepdim=True)
    for shape in ((1, sizes[0], sizes[0]), (sizes[0], sizes[0])):
        net1 = import_network(path, ModelConfig(arch=arch), shape, "image", ["a", "b"])
        model1 = net1.model.eval()
        conv = model1.state_dict()["backbone.conv1.weight"]
        conv_ok = (torch.allclose(conv, summed, rtol=0, atol=1e-7)
                   and torch.allclose(conv, adapt_input_conv(1, state["conv1.weight"].clone()), rtol=0, atol=1e-7))
        grey = torch.randn(2, 1, sizes[0], sizes[0], generator=torch.Generator().manual_seed(seed + 7))
        ref_logits, ref_feat = fc_input(ref, grey.repeat(1, 3, 1, 1), ref.fc)
        our_logits, our_feat = fc_input(model1, grey if len(shape) == 3 else grey[:, 0], model1.head.linear)
        d_logit, s_logit, ok_logit = worst(our_logits, ref_logits)
        d_feat, s_feat, ok_feat = worst(our_feat, ref_feat)
        conv_diff = (conv - summed).abs().max().item()
        rows.append(dict(arch=arch, source=source, check=f"1ch {list(shape)} vs grey x3",
                         keys=f"conv1 sum: {conv_diff:.1e}; notes: {len(net1.notes)}",
                         logits=f"{d_logit:.2e} (of {s_logit:.3g})", features=f"{d_feat:.2e} (of {s_feat:.3g})",
                         ok=conv_ok and ok_logit and ok_feat and any("summed" in n for n in net1.notes),
                         worst=max(d_logit / max(1.0, s_logit), d_feat / max(1.0, s_feat))))

    # 2 and 4 channels: the first conv as timm's adapt_input_conv makes it
    for channels in (2, 4):
        net_c = import_network(path, ModelConfig(arch=arch), (channels, 32, 32), "image", ["a", "b"])
        conv = net_c.model.state_dict()["backbone.conv1.weight"]
        theirs = adapt_input_conv(channels, state["conv1.weight"].clone())
        diff = (conv - theirs).abs().max().item()
        rows.append(dict(arch=arch, source=source, check=f"{channels}ch conv1 vs timm adapt_input_conv",
                         keys=f"conv1 {list(conv.shape)}", logits="-", features=f"conv1 {diff:.1e}",
                         ok=conv.shape == theirs.shape and diff <= 1e-7, worst=0.0))

    # Control: the same comparison must see a small wrong mapping (two same-shape tensors swapped)
    if source == SOURCES[0]:
        wrong = dict(state)
        a, b = "layer1.0.bn1.running_var", "layer1.0.bn2.running_var"
        wrong[a], wrong[b] = state[b], state[a]
        bad = folder / f"control_{arch}.safetensors"
        save_file(wrong, str(bad))
        model_bad = import_network(bad, ModelConfig(arch=arch), (3, 224, 224), "image", ["a", "b"]).model.eval()
        x = torch.randn(2, 3, sizes[0], sizes[0], generator=torch.Generator().manual_seed(seed + sizes[0]))
        d_logit, s_logit, ok_logit = worst(fc_input(model_bad, x, model_bad.head.linear)[0], fc_input(ref, x, ref.fc)[0])
        rows.append(dict(arch=arch, source=source, check=f"control: {a} <-> bn2 swapped", keys="imports (shapes fit)",
                         logits=f"{d_logit:.2e} (of {s_logit:.3g})", features="-", ok=not ok_logit, worst=0.0,
                         result="detected" if not ok_logit else "NOT DETECTED"))
    return rows


def write_hf_cache(home: Path, seed: int) -> dict[str, torch.Tensor]:
    """HF_HOME/hub holding timm/resnet18.a1_in1k's model.safetensors: a random-init timm resnet18."""
    state = {k: v.detach().clone().contiguous() for k, v in reference("timm", "resnet18", seed).state_dict().items()}
    repo = home / "hub" / f"models--timm--{TIMM_NAME}"
    snapshot = repo / "snapshots" / FAKE_SHA
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_SHA)
    return state


def offline_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_ENDPOINT"):
        env.pop(key, None)
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    return env


def check_export(folder: Path, seed: int) -> list[dict]:
    rows = []
    home = folder / "hf_home"
    cached = write_hf_cache(home, seed)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    ref.load_state_dict(cached, strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed + 3))
    ref_logits, _ = fc_input(ref, x, ref.fc)
    trainlab_cli = Path(sys.executable).parent / "trainlab"
    ways = {"export_timm_weights (child process)": [sys.executable, str(Path(__file__).resolve()), "--export-child", "{out}"],
            "trainlab fetch-weights (CLI)": [str(trainlab_cli), "fetch-weights", f"timm:{TIMM_NAME}", "--out", "{out}"]}
    for way, template in ways.items():
        out = folder / f"{way.split()[0]}.safetensors"
        proc = subprocess.run([part.replace("{out}", str(out)) for part in template], env=offline_env(home),
                              cwd=folder, capture_output=True, text=True, timeout=600)
        said = (proc.stdout + proc.stderr).strip().splitlines()
        if proc.returncode != 0 or not out.is_file():
            rows.append(dict(arch="resnet18", source=f"timm:{TIMM_NAME}", check=way, keys="-", logits="-",
                             features=f"exit {proc.returncode}: {said[-1] if said else ''}"[:160], ok=False, worst=0.0))
            continue
        written = load_file(str(out))
        same = written.keys() == cached.keys() and all(torch.equal(written[k], cached[k]) for k in cached)
        net = import_network(out, ModelConfig(arch="resnet18"), (3, 64, 64), "image", ["a", "b"])
        model = net.model.eval()
        logits, _ = fc_input(model, x, model.head.linear)
        d_logit, s_logit, ok_logit = worst(logits, ref_logits)
        rows.append(dict(arch="resnet18", source=f"timm:{TIMM_NAME}", check=way,
                         keys=f"{len(written)} tensors, {'all equal to the cache' if same else 'DIFFER from the cache'}",
                         logits=f"{d_logit:.2e} (of {s_logit:.3g})", features="-", ok=same and ok_logit,
                         worst=d_logit / max(1.0, s_logit), said=said[-1] if said else ""))
    # The error path: the same call with an empty offline cache is one UserError line.
    empty = folder / "hf_empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--export-child", str(folder / "none.safetensors")],
                          env=offline_env(empty), cwd=folder, capture_output=True, text=True, timeout=600)
    said = (proc.stdout + proc.stderr).strip().splitlines()
    last = said[-1] if said else ""
    rows.append(dict(arch="resnet18", source=f"timm:{TIMM_NAME}", check="empty cache, offline",
                     keys="-", logits="-", features=f"exit {proc.returncode}", ok=proc.returncode == 3 and
                     last.startswith("UserError: timm:") and not (folder / "none.safetensors").exists(),
                     worst=0.0, said=last))
    return rows


def export_child(out: str) -> None:
    """In a process whose HF_HOME / HF_HUB_OFFLINE were set before huggingface_hub was imported."""
    try:
        path, tensors = export_timm_weights(f"timm:{TIMM_NAME}", Path(out))
    except UserError as err:
        print(f"UserError: {err}", flush=True)
        raise SystemExit(3)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    print(f"wrote {path} ({tensors} tensors, sha256 {digest})", flush=True)


# ------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="resnet18 only, 64x64 only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-child", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child:
        return export_child(args.export_child)

    print("# Published ResNet layouts: torchvision and timm against trainlab's resnet18/34 (issue 26)")
    print(f"# command: {sys.executable} bench/timm_layout.py {' '.join(sys.argv[1:])}".rstrip())
    print(C.machine_header())
    print(f"# torchvision {torchvision.__version__}, timm {timm.__version__}; tolerance: max |diff| <= "
          f"{TOL:g} * max(1, max |reference|)", flush=True)
    archs = ARCHS[:1] if args.quick else ARCHS
    sizes = SIZES[:1] if args.quick else SIZES
    rows: list[dict] = []
    folder = Path(tempfile.mkdtemp(prefix="timm_layout_"))
    try:
        for arch in archs:
            for source in SOURCES:
                rows += check_layout(arch, source, sizes, folder, args.seed)
        rows += check_export(folder, args.seed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    header = ["arch", "source", "check", "keys / tensors", "logits max abs diff (of max abs ref)",
              "features max abs diff (of max abs ref)", "result"]
    print(C.table([[r["arch"], r["source"], r["check"], r["keys"], r["logits"], r["features"],
                    r.get("result", "pass") if r["ok"] else r.get("result", "FAIL")] for r in rows], header))
    for r in rows:
        if r.get("said"):
            print(f"# {r['check']}: {r['said']}")
    failed = [r for r in rows if not r["ok"]]
    print(f"# {len(rows) - len(failed)}/{len(rows)} checks pass")
    C.print_ratio("worst_relative_diff/tolerance", max(r["worst"] for r in rows) / TOL)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
