"""`trainlab fetch-weights timm:<name>`: a timm network's pretrained weights as a .safetensors file.

`pretrain.from` names a file, since DVC can only depend on a file: this command is how a
timm name becomes one (timm creates the network from its cache, or downloads the weights).
Then set `pretrain.from` to the file it writes (default data/weights/<name>.safetensors)
and `model.arch` to resnet18 or resnet34. Needs the `[timm]` extra (`make setup-timm`); a
.safetensors file downloaded by other means works in `pretrain.from` without it.
"""

from pathlib import Path

import click


@click.command(help=__doc__)
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the .safetensors file to write (default data/weights/<name>.safetensors)")
def command(name: str, out: Path | None) -> None:
    from trainlab.hashing import sha256_file
    from trainlab.models.imported import export_timm_weights

    path, tensors = export_timm_weights(name, out)
    click.echo(f"wrote {path} ({tensors} tensors, sha256 {sha256_file(path)[:12]}); set pretrain.from: {path}, "
               f"model.arch: resnet18 or resnet34 (the network's) and data.file.normalize: imagenet")
