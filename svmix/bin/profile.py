"""svmix-profile: parameters and GMACs of one encoder layer, or of a whole model by part."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import click

from svmix.cli import FiniteFloat, command, in_file, user_errors
from svmix.errors import SvmixError
from svmix.profiling import frames_for, profile_encoder_layer, profile_model
from svmix.registry import ENCODERS

Row = Tuple[str, int, float, float]  # name, params, gmacs, attention gmacs


def load_model_config(path: str) -> Dict[str, Any]:
    """A YAML file with a ``model:`` section, or a model config itself."""
    from svmix.train.config import read_yaml

    data = read_yaml(path, "model config")
    model = data.get("model", data)
    if not isinstance(model, dict):
        raise SvmixError(f"{path}: 'model:' must be a mapping")
    return model


def _row(name: str, entry: Dict[str, Any]) -> Row:
    return name, entry.get("params"), entry["gmacs"], entry.get("attention_gmacs", 0.0)


def format_table(title: str, rows: List[Row], total: Row) -> str:
    show_attention = any(row[3] for row in rows + [total])
    header = f"{'part':<28}{'params':>14}{'M':>9}{'GMACs':>10}" + (f"{'attn GMACs':>12}" if show_attention else "")
    rule = "-" * len(header)

    def line(row: Row) -> str:
        name, params, gmacs, attention = row
        text = f"{name:<28}{params:>14,}{params / 1e6:>9.2f}{gmacs:>10.4f}"
        return text + (f"{attention:>12.4f}" if show_attention else "")

    lines = [title, header, rule, *map(line, rows), rule, line(total)]
    if show_attention:
        lines.append("GMACs count linear layers and convolutions; 'attn GMACs' are the QKᵀ/AV products "
                     f"(total with them: {total[2] + total[3]:.4f}).")
    return "\n".join(lines)


def layer_table(result: Dict[str, Any]) -> str:
    options = ", ".join(f"{k}={result[k]}" for k in result if k not in ("encoder", "params", "gmacs", "attention_gmacs", "parts"))
    rows = [_row(name, entry) for name, entry in result["parts"].items()]
    return format_table(f"encoder layer '{result['encoder']}' ({options})", rows, _row("layer total", result))


def model_table(result: Dict[str, Any], path: str) -> str:
    parts = result["parts"]
    rows = [_row("frontend", parts["frontend"]), _row("encoder", parts["encoder"])]
    rows += [_row(f"  layer {i + 1}", layer) for i, layer in enumerate(parts["encoder"]["layers"])]
    rows.append(_row("backend", parts["backend"]))
    title = (f"model {path}: frontend '{result['frontend']}', encoder '{result['encoder']}', "
             f"backend '{result['backend']}', "
             f"{result['seconds']:g} s input ({result['frames']} frames)")
    return format_table(title, rows, _row("total", result))


@command("svmix-profile")
@click.option("--encoder", type=click.Choice(ENCODERS.names()), help="Profile one layer of this registered encoder.")
@click.option("--config", "config_path", type=in_file(),
              help="Profile the whole model of this YAML (a 'model:' section or a model config).")
@click.option("--hidden", type=click.IntRange(1, 8192), default=1024, show_default=True,
              help="Hidden size (with --encoder).")
@click.option("--seq-len", type=click.IntRange(1, 10_000), default=None,
              help="Frames (with --encoder) [default: frames of --seconds].")
@click.option("--group-dim", type=click.IntRange(1, 8192), default=128, show_default=True,
              help="Channels per group (with --encoder; ignored by encoders without groups).")
@click.option("--seconds", type=FiniteFloat(min=0, max=120, min_open=True), default=3.0, show_default=True,
              help="Input length in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def main(encoder: Optional[str], config_path: Optional[str], hidden: int, seq_len: Optional[int],
         group_dim: int, seconds: float, as_json: bool) -> None:
    """Print parameters and GMACs per encoder layer (--encoder) or per model part (--config)."""
    if (encoder is None) == (config_path is None):
        raise SvmixError("give exactly one of --encoder NAME or --config CONF.yaml")
    if encoder is not None:
        result = profile_encoder_layer(encoder, hidden, seq_len or frames_for(seconds), group_dim)
        text = layer_table(result)
    else:
        result = profile_model(load_model_config(config_path), seconds)
        text = model_table(result, config_path)
    click.echo(json.dumps(result, indent=2) if as_json else text)


if __name__ == "__main__":
    main()
