"""svmix-profile: parameters and GMACs of one encoder layer, of a whole model by part, or of a pair of
models side by side with their B/A ratios and an optional check that their encoders are cost-matched."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import click

from svmix.cli import FiniteFloat, command, in_file, user_errors
from svmix.errors import SvmixError
from svmix.profiling import (MODEL_PARTS, compare_profiles, encoder_mismatch, frames_for, profile_encoder_layer,
                             profile_model)
from svmix.registry import ENCODERS

Row = Tuple[str, int, float, float]  # name, params, gmacs, attention gmacs


def load_model_config(path: str) -> Dict[str, Any]:
    """A YAML file with a ``model:`` section, a model config itself, or a model YAML that includes a
    base (``model_config:``, svmix.yaml_config)."""
    from svmix.yaml_config import read_model_config

    return read_model_config(path)


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
    return "\n".join([format_table(title, rows, _row("total", result)), evaluation_line(result["evaluation"])])


def evaluation_line(cost: Dict[str, Any]) -> str:
    """How extraction embeds an utterance of the profiled length, and what it costs per second of audio."""
    how = "one pass over the whole utterance" if cost["one_pass"] else \
        f"{cost['passes']} pass(es) over {cost['pass_seconds']:g} s segments"
    attention = (f" (+ {cost['attention_gmacs']:.4f} attention, {cost['attention_gmacs_per_second']:.4f} per s)"
                 if cost["attention_gmacs"] else "")
    return (f"evaluation of a {cost['seconds']:g} s utterance: {how}, {cost['gmacs']:.4f} GMACs, "
            f"{cost['gmacs_per_second']:.4f} GMACs per second of audio{attention}")


def pair_table(results: List[Dict[str, Any]], ratios: Dict[str, Dict[str, Optional[float]]]) -> str:
    """Params and GMACs of models A and B per part, with the B/A ratios."""
    def ratio(value: Optional[float]) -> str:
        return f"{'-' if value is None else f'{value:.3f}':>8}"

    header = (f"{'part':<10}{'params A':>12}{'params B':>12}{'B/A':>8}{'GMACs A':>10}{'GMACs B':>10}{'B/A':>8}"
              f"{'+attn B/A':>11}")
    rule = "-" * len(header)
    lines = ["B/A ratios (GMACs without attention products; '+attn' adds them)", header, rule]
    for part in (*MODEL_PARTS, "total"):
        a, b = (r if part == "total" else r["parts"][part] for r in results)
        r = ratios[part]
        lines.append(f"{part:<10}{a['params']:>12,}{b['params']:>12,}{ratio(r['params'])}{a['gmacs']:>10.4f}"
                     f"{b['gmacs']:>10.4f}{ratio(r['gmacs'])}{ratio(r['gmacs_with_attention']):>11}")
    return "\n".join(lines)


@command("svmix-profile")
@click.option("--encoder", type=click.Choice(ENCODERS.names()), help="Profile one layer of this registered encoder.")
@click.option("--config", "--model-config", "config_paths", type=in_file(), multiple=True,
              help="Profile the whole model of this YAML (a 'model:' section or a model config), by part. "
                   "Give it twice (A, then B) to compare two models: B/A ratios per part.")
@click.option("--hidden", type=click.IntRange(1, 8192), default=1024, show_default=True,
              help="Hidden size (with --encoder).")
@click.option("--seq-len", type=click.IntRange(1, 10_000), default=None,
              help="Frames (with --encoder) [default: frames of --seconds].")
@click.option("--group-dim", type=click.IntRange(1, 8192), default=128, show_default=True,
              help="Channels per group (with --encoder; ignored by encoders without groups).")
@click.option("--seconds", type=FiniteFloat(min=0, max=120, min_open=True), default=3.0, show_default=True,
              help="Input length in seconds.")
@click.option("--max-encoder-param-diff", type=FiniteFloat(min=0, max=1), default=None,
              help="With two configs: exit 1 unless the encoders' params differ by at most this fraction "
                   "(|B/A - 1|), e.g. 0.05 for a cost-matched pair.")
@click.option("--max-encoder-ratio", type=FiniteFloat(min=0, max=100, min_open=True), default=None,
              help="With two configs: exit 1 unless B's encoder params and GMACs are at most this "
                   "multiple of A's, e.g. 0.6.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def main(encoder: Optional[str], config_paths: Tuple[str, ...], hidden: int, seq_len: Optional[int],
         group_dim: int, seconds: float, max_encoder_param_diff: Optional[float],
         max_encoder_ratio: Optional[float], as_json: bool) -> None:
    """Print parameters and GMACs per encoder layer (--encoder), per model part (--config), or for two
    models side by side with their B/A ratios (--config A --config B)."""
    if (encoder is None) == (not config_paths):
        raise SvmixError("give exactly one of --encoder NAME or --config CONF.yaml")
    if len(config_paths) > 2:
        raise SvmixError(f"--config was given {len(config_paths)} times: give one model, or two to compare")
    checks = max_encoder_param_diff is not None or max_encoder_ratio is not None
    if checks and len(config_paths) != 2:
        raise SvmixError("--max-encoder-param-diff and --max-encoder-ratio compare two models: "
                         "give --config A --config B")
    if encoder is not None:
        result = profile_encoder_layer(encoder, hidden, seq_len or frames_for(seconds), group_dim)
        click.echo(json.dumps(result, indent=2) if as_json else layer_table(result))
        return
    results = [profile_model(load_model_config(path), seconds) for path in config_paths]
    if len(results) == 1:
        click.echo(json.dumps(results[0], indent=2) if as_json else model_table(results[0], config_paths[0]))
        return
    ratios = compare_profiles(*results)
    if as_json:
        click.echo(json.dumps({"a": {"config": config_paths[0], **results[0]},
                               "b": {"config": config_paths[1], **results[1]}, "ratios": ratios}, indent=2))
    else:
        tables = [model_table(result, f"{label} {path}") for label, result, path in zip("AB", results, config_paths)]
        click.echo("\n\n".join([*tables, pair_table(results, ratios)]))
    mismatch = encoder_mismatch(ratios, max_encoder_param_diff, max_encoder_ratio)
    if mismatch:
        raise SvmixError(f"{config_paths[1]} vs {config_paths[0]}: {mismatch}")


if __name__ == "__main__":
    main()
