#!/usr/bin/env python3
"""A teacher's last layer (HF indexing: layer L of an L-layer model), read from its configuration
without loading weights: what the recipes cache and distil from unless --teacher-layers is given.

    python local/teacher_layers.py --teacher WAVLM_LARGE                    # 24
    python local/teacher_layers.py --teacher exp/teacher                    # an HF directory: config.json
    python local/teacher_layers.py --mini-config conf/teacher_mini.yaml     # the mini teacher stage 1 will train
    python local/teacher_layers.py --pretrain-config conf/teacher_pretrain.yaml   # the pretrained one (6)
    python local/teacher_layers.py --teacher WAVLM_LARGE --split 3          # 8,16,24 (DistilHuBERT's thirds)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click
import yaml

from svmix.cli import user_errors
from svmix.errors import SvmixError


def last_layer(teacher: Optional[str] = None, mini_config: Optional[str] = None,
               pretrain_config: Optional[str] = None) -> int:
    """The number of Transformer layers of ``teacher`` (a ``--teacher`` spec), of the mini teacher
    that ``mini_config`` describes, or of the teacher that ``svmix-train-teacher --pretrain`` makes
    from ``pretrain_config`` (exactly one of the three). A configuration that states the number
    is read as text (quick: every recipe start asks); the rest goes through svmix.teachers."""
    if sum(x is not None for x in (teacher, mini_config, pretrain_config)) != 1:
        raise SvmixError("give exactly one of --teacher SPEC, --mini-config FILE and --pretrain-config FILE")
    config = mini_config if mini_config is not None else pretrain_config
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise SvmixError(f"{path}: teacher config not found")
        stated = _stated_layers(path, _model_section)
        if stated is not None:
            return stated
        if pretrain_config is not None:
            from svmix.teachers.pretrain import pretrain_config as resolve_pretrain_config
            from svmix.train.config import read_yaml

            resolved = resolve_pretrain_config(read_yaml(path, "teacher pretraining config"), str(path))
            return int(resolved["model"]["num_hidden_layers"])
        from svmix.teachers.mini import load_config

        return int(load_config(path)["model"]["num_hidden_layers"])
    hf_config = Path(teacher) / "config.json"
    if hf_config.is_file():
        stated = _stated_layers(hf_config, json.loads)
        if stated is not None:
            return stated
    from svmix.teachers.sources import HuggingFaceDirectory, TorchaudioBundle, teacher_source

    source = teacher_source(teacher)
    if source is TorchaudioBundle:
        import torchaudio.pipelines

        return int(getattr(torchaudio.pipelines, teacher)._params["encoder_num_layers"])
    if source is HuggingFaceDirectory:
        from svmix.teachers.hf_format import read_hf_config

        return int(read_hf_config(Path(teacher))["num_hidden_layers"])
    import torch

    try:
        ckpt = torch.load(teacher, map_location="cpu", weights_only=True)
        return int(ckpt["params"]["encoder_num_layers"])
    except Exception as e:
        raise SvmixError(f"{teacher}: cannot read the layer count of this teacher checkpoint "
                         f"({' '.join(str(e).split())[:200]}); set --teacher-layers") from None


def _model_section(text: str) -> Optional[dict]:
    raw = yaml.safe_load(text)
    return raw.get("model") if isinstance(raw, dict) else None


def _stated_layers(path: Path, parse: Callable[[str], dict]) -> Optional[int]:
    """``num_hidden_layers`` of the mapping ``parse`` reads from ``path``; None when not stated as
    a number (then the full loader decides, and reports any problem)."""
    try:
        mapping = parse(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise SvmixError(f"{path}: cannot parse ({' '.join(str(e).split())[:200]})") from None
    value = mapping.get("num_hidden_layers") if isinstance(mapping, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def evenly_spaced(num_layers: int, parts: int) -> List[int]:
    """``parts`` layers at equal depth steps ending at the last: 3 of 24 -> 8, 16, 24."""
    if not 1 <= parts <= num_layers:
        raise SvmixError(f"cannot pick {parts} layers out of a {num_layers}-layer teacher")
    return [round(num_layers * (i + 1) / parts) for i in range(parts)]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--teacher", help="Teacher spec: torchaudio bundle name, HF directory or svmix teacher checkpoint.")
@click.option("--mini-config", help="Mini-teacher YAML (the teacher a recipe's stage 1 trains).")
@click.option("--pretrain-config", help="Teacher-pretraining YAML (svmix-train-teacher --pretrain --config).")
@click.option("--split", default=1, show_default=True, type=click.IntRange(min=1),
              help="Print this many evenly spaced layers ending at the last, comma-separated.")
@user_errors
def main(teacher: Optional[str], mini_config: Optional[str], pretrain_config: Optional[str], split: int) -> None:
    """Print the teacher's last layer (or --split N evenly spaced layers)."""
    print(",".join(str(x) for x in evenly_spaced(last_layer(teacher, mini_config, pretrain_config), split)))


if __name__ == "__main__":
    main()
