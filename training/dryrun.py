"""`DRY_RUN=1`: the resolved plan of `train`, `tune` or `bench`, printed instead of run. It is
made by the same planning code as a real run, so bad settings fail here exactly as they would;
nothing is started, written or tracked."""

from __future__ import annotations

from training.config import TrainConfig
from training.progress import console


def _changed(cfg: TrainConfig) -> str:
    default = TrainConfig().to_dict()
    return " ".join(f"{k}={v}" for k, v in cfg.to_dict().items() if v != default[k] or k == "task")


def _data(splits) -> str:
    def part(name: str) -> str:
        info = splits.manifest[name]
        counts = info.get("label_counts")
        labels = f" ({', '.join(f'{k} {v}' for k, v in counts.items())})" if counts else ""
        return f"{info['rows']} {name} rows{labels}"

    return f"{splits.source}: {part('train')}; {part('validation')}"


def show(command: str, cfg: TrainConfig, target, splits, source, **more: str) -> None:
    """Print the plan: config, target, model, data, workers, storage, what is continued."""
    lines = {
        "target": target.describe(),
        "config": _changed(cfg),
        "model": source.describe(),
        "data": _data(splits),
        "workers": f"{cfg.workers} x {cfg.strategy}" + (", compiled" if cfg.compile else ""),
        "tracking": target.tracking_uri,
        "checkpoints": f"{target.runs_root.rstrip('/')}/{cfg.run_name}"
        if cfg.run_name
        else target.runs_root,
        **more,
    }
    console.print(f"dry run: `make {command}` would run this (nothing started, written or tracked)")
    for key, value in lines.items():
        console.print(f"  {key:12} {value}", soft_wrap=True)
