"""Make one paper figure: check its paths, run its multiruns, load their runs, draw.

``python -m stbias.figures fig3`` (``make fig3``) composes every experiment config of the figure,
fills the ``paths`` leaves left ``???`` from the local paths file (``figures.local.yaml``, the
``paths`` node's content, git-ignored) and ``--set key=value`` (``make fig3
PATHS="key=value ..."``), and stops before running anything with one line per path that is
unset or does not exist. Then each experiment runs as ``python -m stbias -m
experiment=figures/<name> hydra.sweep.dir=<out>/runs/<name>-<key>``, the key a hash of its
overrides: a finished multirun (its ``.complete`` marker) is reused by every figure that needs
it (run again when one of its runs cannot be read), and the embedded variant's later steps get
the earlier ones' folders as ``paths.runs.<experiment>``. Last, :func:`stbias.results.load`
reads the runs (one it cannot read is left out with a warning naming the file) and the figure's
plotting function draws ``<out>/<figure>[-embedded].png|pdf``, beside the table it drew
(``.csv``) and a record of what made it (``.json``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from stbias import io
from stbias.config import CONF_DIR, compose
from stbias.errors import StbiasError
from stbias.figures import FIGURES, Figure, get
from stbias.plotting import save_figure
from stbias.results import RESULTS, UnreadableRecord, damaged_arrays, find_runs, load, read_record

GROUP = "figures"  # experiment/figures/<name>.yaml
LOCAL_PATHS = "figures.local.yaml"
DONE = ".complete"
EMBEDDED = "-embedded"


@dataclass
class Stage:
    """One experiment's multirun within a figure."""

    experiment: str
    folder: str
    overrides: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    jobs: int = 1  # runs of the sweep, each of which must write a results.json

    @property
    def done(self) -> bool:
        """Whether the multirun finished before (its marker exists)."""
        return os.path.isfile(os.path.join(self.folder, DONE))

    def command(self) -> list[str]:
        """The ``python -m stbias -m ...`` command that runs it."""
        return [
            sys.executable,
            "-m",
            "stbias",
            "-m",
            f"experiment={GROUP}/{self.experiment}",
            f"hydra.sweep.dir={_quote(self.folder)}",
            *self.overrides,
        ]


def split_name(name: str) -> tuple[str, bool]:
    """``fig3-embedded`` -> (``fig3``, True)."""
    if name.endswith(EMBEDDED):
        return name[: -len(EMBEDDED)], True
    return name, False


def experiments_of(figure: Figure, embedded: bool) -> tuple[str, ...]:
    """The experiment configs of the real figure or of its embedded variant."""
    return figure.embedded if embedded else figure.experiments


def compose_experiment(experiment: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The composed config of ``experiment=figures/<experiment>`` (hydra node included)."""
    if not (CONF_DIR / "experiment" / GROUP / f"{experiment}.yaml").is_file():
        raise StbiasError(
            f"no experiment config {GROUP}/{experiment}.yaml under {CONF_DIR / 'experiment'}"
        )
    return compose([f"experiment={GROUP}/{experiment}", *overrides], return_hydra_config=True)


def missing_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the leaves of ``node`` that are ``???`` (never resolving anything)."""
    if not isinstance(node, DictConfig):
        return []
    keys = []
    for key in node.keys():
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            keys.append(path)
        else:
            keys += missing_keys(node._get_node(key), path + ".")
    return keys


def needed_paths(experiment: str) -> list[str]:
    """The ``paths`` keys ``experiment`` leaves to the user (``runs.*`` excluded)."""
    cfg = compose_experiment(experiment)
    keys = missing_keys(cfg.get("paths")) if "paths" in cfg else []
    return [k for k in keys if not k.startswith("runs.")]


def read_local_paths(path: str | None) -> tuple[dict[str, Any], str]:
    """The local paths file as a plain mapping, and its name (empty mapping when absent)."""
    name = path or os.environ.get("STBIAS_FIGURE_PATHS") or LOCAL_PATHS
    if not os.path.isfile(name):
        if path:
            raise StbiasError(f"paths file {path!r} does not exist")
        return {}, name
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(name), resolve=False)
    except Exception as err:  # noqa: BLE001 - any parse error is the file's fault
        raise StbiasError(f"paths file {name!r} is not valid YAML ({err})") from None
    if loaded is None:
        return {}, name
    if not isinstance(loaded, dict):
        raise StbiasError(
            f"paths file {name!r} must hold a mapping (key: path); see docs/figures.md"
        )
    return loaded, name


def _lookup(mapping: Mapping[str, Any], key: str) -> Any:
    node: Any = mapping
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def parse_sets(sets: Sequence[str]) -> dict[str, str]:
    """``["a.b=/x", ...]`` -> ``{"a.b": "/x"}``; an entry without ``=`` is an error."""
    out = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise StbiasError(f"path setting {item!r} is not key=value (e.g. datasets.ssv2=/data)")
        out[key.removeprefix("paths.")] = value
    return out


SETS_ENV = "STBIAS_FIGURE_SETS"  # ``make <figure> PATHS="..."`` passes PATHS through it


def split_sets(text: str) -> list[str]:
    """``"a.b=/my data c=/x"`` -> ``["a.b=/my data", "c=/x"]``: a new entry starts at a word
    that reads ``key=``, so a path may hold spaces and quotes."""
    text = text.strip()
    return re.split(r"\s+(?=[A-Za-z_][\w.-]*=)", text) if text else []


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _sweep_params(cfg: DictConfig, resolve: bool) -> dict[str, Any]:
    """``hydra.sweeper.params`` as a plain mapping (empty for an experiment without a sweep)."""
    params = cfg.hydra.sweeper.get("params")
    return {} if params is None else dict(OmegaConf.to_container(params, resolve=resolve))


def sweep_size(cfg: DictConfig) -> int:
    """How many runs the experiment's sweep (``hydra.sweeper.params``, comma lists) makes."""
    size = 1
    for value in _sweep_params(cfg, resolve=True).values():
        size *= len(str(value).split(","))
    return size


def _settings(cfg: DictConfig) -> str:
    """What the experiment config says (the sweep and every setting), for the stage's key: an
    edited config runs anew."""
    hydra = cfg.hydra
    sweep = {
        "params": _sweep_params(cfg, resolve=False),
        "subdir": OmegaConf.to_container(hydra.sweep, resolve=False).get("subdir"),
    }
    body = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}
    return json.dumps([sweep, body], sort_keys=True, default=str)


def plan(
    name: str,
    out_dir: str,
    local: Mapping[str, Any] | None = None,
    local_name: str = LOCAL_PATHS,
    sets: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> list[Stage]:
    """The stages of figure ``name`` (``<figure>`` or ``<figure>-embedded``), paths filled in.

    Raises:
        StbiasError: one line per path that is unset or does not exist, naming the key, the
            experiment that needs it and how to set it.
    """
    base, embedded = split_name(name)
    figure = get(base)
    local, sets = dict(local or {}), dict(sets or {})
    stages: list[Stage] = []
    produced: dict[str, str] = {}
    problems: list[str] = []
    for experiment in experiments_of(figure, embedded):
        cfg = compose_experiment(experiment, overrides)
        values: dict[str, str] = {}
        for key in missing_keys(cfg.get("paths")) if "paths" in cfg else []:
            if key.startswith("runs."):
                source = key[len("runs.") :]
                if source not in produced:
                    raise StbiasError(
                        f"experiment {experiment} reads paths.{key}, but {source} is not an "
                        f"earlier step of {name} ({', '.join(experiments_of(figure, embedded))})"
                    )
                values[key] = produced[source]
                continue
            value = sets.get(key, _lookup(local, key))
            how = f'set {key} in {local_name} or run make {name} PATHS="{key}=/path"'
            if value in (None, ""):
                problems.append(f"{name} needs paths.{key} (experiment {experiment}): {how}")
            elif not os.path.exists(os.path.expanduser(str(value))):
                problems.append(f"{name}: paths.{key}={value} does not exist: {how}")
            else:
                values[key] = os.path.abspath(os.path.expanduser(str(value)))
        stage_overrides = [f"paths.{k}={_quote(v)}" for k, v in values.items()] + list(overrides)
        digest = hashlib.sha256(
            json.dumps([experiment, stage_overrides, _settings(cfg)]).encode()
        ).hexdigest()
        folder = os.path.join(os.path.abspath(out_dir), "runs", f"{experiment}-{digest[:10]}")
        produced[experiment] = folder
        options = OmegaConf.to_container(cfg.figure, resolve=True) if "figure" in cfg else {}
        stages.append(Stage(experiment, folder, stage_overrides, options, sweep_size(cfg)))
    if problems:
        raise StbiasError("\n".join(problems))
    return stages


def unreadable_run(folder: str) -> str | None:
    """The first run under ``folder`` whose ``results.json`` or ``.npz`` files cannot be read."""
    try:
        paths = find_runs(folder)
    except StbiasError as err:
        return str(err)
    for path in paths:
        try:
            read_record(path)
        except UnreadableRecord as err:
            return f"{path}: {err}"
        damaged = damaged_arrays(os.path.dirname(path))
        if damaged is not None:
            return damaged
    return None


def run_stage(stage: Stage, force: bool = False) -> None:
    """Run one stage's multirun unless it finished before (``force`` runs it again).

    A finished multirun with a run that cannot be read (a damaged ``results.json`` or
    ``.npz``) is run again, with one line naming the file.
    """
    if stage.done and not force:
        bad = unreadable_run(stage.folder)
        if bad is None:
            print(f"[{stage.experiment}] reusing the finished runs in {stage.folder}", flush=True)
            return
        print(f"[{stage.experiment}] running again: {bad}", flush=True)
    command = stage.command()
    print(f"[{stage.experiment}] {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise StbiasError(
            f"the multirun of experiment {stage.experiment} failed (exit {done.returncode}); "
            f"its runs are in {stage.folder}"
        )
    # a run stopped from outside (Lightning ends training quietly on SIGTERM) writes no results:
    # such a multirun is not finished, and is not reused
    written = sum(RESULTS in files for _, _, files in os.walk(stage.folder))
    if written < stage.jobs:
        raise StbiasError(
            f"the multirun of experiment {stage.experiment} wrote results for {written} of its "
            f"{stage.jobs} runs; run the target again (its runs are in {stage.folder})"
        )
    io.write_json(os.path.join(stage.folder, DONE), {"command": command, "runs": written})


def figure_texts(fig: Any) -> list[str]:
    """Every text a figure shows: titles, axis and tick labels, legends, annotations, table
    cells."""
    texts = [t.get_text() for t in fig.texts]
    if getattr(fig, "_suptitle", None) is not None:
        texts.append(fig._suptitle.get_text())
    for legend in fig.legends:
        texts += [t.get_text() for t in legend.get_texts()]
        if legend.get_title():
            texts.append(legend.get_title().get_text())
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        texts += [t.get_text() for t in ax.texts]
        for table in ax.tables:  # tables drawn as figures: every cell
            texts += [cell.get_text().get_text() for cell in table.get_celld().values()]
        legend = ax.get_legend()
        if legend is not None:
            texts += [t.get_text() for t in legend.get_texts()]
            texts.append(legend.get_title().get_text())
    return [t for t in texts if t]


def draw(name: str, stages: Sequence[Stage], out_dir: str) -> dict[str, Any]:
    """Load the stages' runs, draw the figure and write it with its table and record."""
    base, embedded = split_name(name)
    figure = get(base)
    # a run that cannot be read (results.json or an .npz) is left out with one warning line
    table = pd.concat(
        [
            load(stage.folder, check_arrays=True).assign(experiment=stage.experiment)
            for stage in stages
        ],
        ignore_index=True,
    )
    options: dict[str, Any] = {}
    for stage in stages:
        for key, value in stage.options.items():
            if isinstance(value, Mapping) and isinstance(options.get(key), Mapping):
                options[key] = {**options[key], **value}
            else:
                options[key] = value
    accepted = inspect.signature(figure.plot).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted}
    title = figure.title + (", embedded" if embedded else "")
    fig = figure.plot(table, title=title, **kwargs)
    texts = figure_texts(fig)
    stem = os.path.join(os.path.abspath(out_dir), name)
    files = save_figure(fig, stem)
    io.write_csv(stem + ".csv", table.to_dict("records"))
    record = {
        "figure": name,
        "title": title,
        "experiments": [s.experiment for s in stages],
        "runs": [s.folder for s in stages],
        "options": kwargs,
        "files": files,
        "table": stem + ".csv",
        "texts": texts,
    }
    io.write_json(stem + ".json", record)
    return record


def make(
    name: str,
    out_dir: str = "outputs/figures",
    paths_file: str | None = None,
    sets: Sequence[str] = (),
    overrides: Sequence[str] = (),
    dry_run: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Make figure ``name`` (``<figure>`` or ``<figure>-embedded``); returns its record."""
    local, local_name = read_local_paths(paths_file)
    stages = plan(name, out_dir, local, local_name, parse_sets(sets), overrides)
    if dry_run:
        for stage in stages:
            state = "finished" if stage.done else "to run"
            print(f"[{stage.experiment}] ({state}) {' '.join(stage.command()[1:])}")
        return {"figure": name, "stages": [s.command() for s in stages]}
    for stage in stages:
        run_stage(stage, force=force)
    record = draw(name, stages, out_dir)
    print(f"{name}: {record['files'][0]}")
    return record


def listing(paths_file: str | None = None) -> str:
    """Every figure target, what it shows and what its real variant needs (``make figures``)."""
    local, local_name = read_local_paths(paths_file)
    lines = [
        "Paper figures: make <name> (real data and weights; paths from "
        f'{local_name} or PATHS="key=/path ..."), make <name>-embedded (shipped data, tiny or '
        "reduced models, no download).",
        "",
    ]
    for name, figure in FIGURES.items():
        lines.append(f"{name:<20} {figure.title}: {figure.about}")
        needed: list[str] = []
        for experiment in figure.experiments:
            needed += [k for k in needed_paths(experiment) if k not in needed]
        set_count = sum(1 for k in needed if _lookup(local, k) not in (None, ""))
        lines.append(
            f"{'':<20} experiments: {', '.join(figure.experiments)}; embedded: "
            f"{', '.join(figure.embedded)}"
        )
        if needed:
            lines.append(f"{'':<20} needs ({set_count}/{len(needed)} set): {', '.join(needed)}")
        else:
            lines.append(f"{'':<20} needs no path (its data is generated)")
    return "\n".join(lines)
