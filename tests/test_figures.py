"""Paper figures as make targets: every embedded variant runs and draws the paper's panels; the
real variants stop at once on missing paths and resolve every run's config when paths are set."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from stbias.config import CONF_DIR
from stbias.errors import StbiasError
from stbias.figures import FIGURES
from stbias.figures.make import (
    GROUP,
    compose_experiment,
    listing,
    make,
    needed_paths,
    plan,
)

ROOT = Path(__file__).resolve().parents[1]
# every run of the embedded variants shrunk to a few batches (debug=fast: 8 clips per probe, test
# and explanation, 2 training and 2 validation batches of 16 clips, one epoch)
SHRINK = ["debug=fast"]
# and the explanation study's own sizes (debug=fast leaves task nodes alone)
SHRINK_MORE = {
    "manttari": [
        "task.eval_clips=16",
        "task.temporal_mask.num_clips=4",
        "task.temporal_mask.iterations=3",
        "task.gradcam.num_clips=4",
    ]
}
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment" / GROUP).glob("*.yaml"))
REAL = sorted({e for f in FIGURES.values() for e in f.experiments})
EMBEDDED = sorted({e for f in FIGURES.values() for e in f.embedded})


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """Makes the embedded variant of a figure once; later figures reuse finished multiruns."""
    out = tmp_path_factory.mktemp("figures")
    made = {}

    def get(name):
        if name not in made:
            extra = SHRINK_MORE.get(name.split("-")[0], [])
            made[name] = make(f"{name}-embedded", str(out), overrides=[*SHRINK, *extra])
        return made[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FIGURES))
def test_embedded_variant_draws_the_papers_panels_and_labels(name, embedded):
    record = embedded(name)
    png, pdf, *latex = record["files"]
    assert png.endswith(f"{name}-embedded.png") and pdf.endswith(".pdf")
    # every paper table is also a booktabs LaTeX table; figures are not
    assert latex == ([f"{png[:-4]}.tex"] if "table" in name else [])
    if latex:
        assert "\\toprule" in open(latex[0]).read()
    assert os.path.getsize(png) > 10_000 and os.path.getsize(pdf) > 5_000
    texts = record["texts"]
    missing = [want for want in FIGURES[name].checks if not any(want in t for t in texts)]
    assert not missing, f"{name} lacks {missing}; it shows {texts}"
    assert any(FIGURES[name].title in t and "embedded" in t for t in texts)
    assert list(record["experiments"]) == list(FIGURES[name].embedded)
    assert os.path.isfile(record["table"])


@pytest.mark.slow
def test_embedded_fig5_right_c2d_tiny_loses_nothing_to_shuffled_frames(embedded):
    """c2d_tiny cannot see frame order: from one initialisation, shuffled-frame training gives
    the same validation accuracy (up to one clip of float noise); i3d_tiny's may differ."""
    from stbias.results import load, shuffled_drops

    record = embedded("fig5-right")
    drops = shuffled_drops(load(record["runs"]), "trained_on")
    assert len(drops) == 6
    c2d = drops[drops["model"] == "c2d_tiny"]
    assert ((c2d["acc_std"] - c2d["acc_shuf"]).abs() <= 1 / 32 + 1e-9).all()


@pytest.mark.slow
def test_embedded_fig3_draws_each_model_and_pathway(embedded):
    record = embedded("fig3")
    texts = record["texts"]
    for label in ("c2d_tiny", "i3d_tiny", "SF-tiny-Slow", "SF-tiny-Fast"):
        assert label in texts
    assert "random weights" not in " ".join(texts)  # trained checkpoints, not random weights


def _results(folder):
    """Every results.json under a stage folder: run directory -> record."""
    out = {}
    for path in sorted(Path(folder).rglob("results.json")):
        out[str(path.parent)] = json.loads(path.read_text())
    return out


@pytest.mark.slow
def test_embedded_manttari_tables_show_the_runs_numbers(embedded):
    """The three tables show what the experiment=manttari run wrote, model by model."""
    record = embedded("manttari-table1")
    ((run, study),) = [
        (d, r) for d, r in _results(record["runs"][0]).items() if r["task"] == "manttari"
    ]
    texts = record["texts"]
    assert list(study["runs"]) == ["I3D", "C-LSTM"]
    for label, entry in study["runs"].items():
        assert f"{label} (BrushMNIST)" in texts
        row = texts.index(f"{label} (BrushMNIST)")
        t1 = entry["table1"]
        assert texts[row + 1 : row + 6] == [
            f"{t1[k]:.3f}" for k in ("acc", "acc_reversed", "f1", "f1_reversed")
        ] + [str(t1["clips"])]
    table4 = embedded("manttari-table4")["texts"]
    length = study["tables"]["table4"]["summaries"]["I3D (brushmnist_small)"]["mask_length"]
    assert f"{length['mean']:.1f} ± {length['std']:.1f} (n = {length['n']})" in table4
    test = study["tables"]["table4"]["tests"]["mask_length"]
    assert f"p = {test['p']:.2g} (n = {test['n'][0]}/{test['n'][1]})" in table4
    table3 = embedded("manttari-table3")["texts"]
    first = study["tables"]["table3"][0]
    count = first["summaries"]["C-LSTM (brushmnist_small) block2"]["blob_count"]
    assert "C-LSTM (BrushMNIST) block2" in table3
    assert f"{count['mean']:.2f} ± {count['std']:.2f} (n = {count['n']})" in table3
    # maps large enough to hold blobs: some in every model's frames
    for summary in first["summaries"].values():
        assert summary["blob_count"]["mean"] > 0
    table2 = embedded("manttari-table2")["texts"]
    for label, entry in study["runs"].items():
        f1 = entry["table1"]["f1_per_class"]
        assert len(f1) == 10 and f"{label} F1" in table2
        assert f"{f1[3]:.2f}" in table2 and "3 (BrushMNIST)" in table2


@pytest.mark.slow
def test_embedded_static_dropout_shows_every_mode_of_the_study(embedded):
    import csv

    figure = embedded("static-dropout")
    table = embedded("static-dropout-table")["texts"]
    (study,) = {p.parent for p in Path(figure["runs"][0]).rglob("static_dropout.csv")}
    with open(study / "static_dropout.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    modes = ["none", "static", "all", "random"]
    assert [(r["mode"], r["seed"]) for r in rows] == [(m, s) for s in "012" for m in modes]
    for mode in modes:  # three seeds: the table shows the mean over them, then ±
        at = table.index(mode)
        mean = np.mean([float(r["acc"]) for r in rows if r["mode"] == mode])
        assert table[at + 1] == "3" and table[at + 2].startswith(f"{mean:.3f} ± ")
    for mode in modes[1:]:  # and every mode against no dropout, seed by seed
        assert f"{mode} − none" in table
    assert any(t.startswith("top-1 motion-only") for t in figure["texts"])


@pytest.mark.slow
def test_embedded_bias_over_training_draws_every_checkpoint_of_the_series(embedded):
    from stbias.results import load

    record = embedded("bias-over-training")
    table = load(record["runs"][1])
    (series,) = [r for r in _results(record["runs"][1]).values() if "series" in r]
    steps = [entry["step"] for entry in series["series"]]
    # every checkpoint of the training's series, probed once: the initial weights (step 0) and
    # one per epoch
    files = sorted(Path(record["runs"][0]).glob("i3d_tiny/checkpoints/series/*.ckpt"))
    assert len(files) >= 2 and len(steps) == len(files) and steps[0] == 0
    assert [f"step{s:07d}" for s in steps] == [f.name.split("-")[0] for f in files]
    assert sorted(table["step"].unique()) == steps
    for entry in series["series"]:
        for layer, values in entry["layers"].items():
            (row,) = table[(table["step"] == entry["step"]) & (table["layer"] == layer)].to_dict(
                "records"
            )
            assert row["percent_dynamic"] == values["percent"]["dynamic"]
            assert row["scores_static_lo"] == values["ci"]["scores"]["static"][0]


@pytest.mark.slow
def test_embedded_vos_targets_show_the_studys_numbers(embedded):
    record = embedded("vos-table1")
    ((_, study),) = [
        (d, r) for d, r in _results(record["runs"][0]).items() if r["task"] == "vos_study"
    ]
    assert study["cross"] == ["none", "motion_to_appearance"]
    assert study["datasets"] == ["camouflage", "salient"]
    texts = record["texts"]
    for run in study["runs"]:
        if run["cross"] == study["reference"]:
            percent = run["layers"]["fusion5"]["percent"]
            assert f"{percent['dynamic']:.1f}" in texts and f"{percent['static']:.1f}" in texts
    fig7 = embedded("vos-fig7")["texts"]
    for dataset, entry in study["center_bias"].items():
        assert f"{dataset}: center bias\ncenter mass {entry['center_mass']:.2f}" in fig7
    fig4 = embedded("vos-fig4")["texts"]
    assert any("trained on camouflage" in t for t in fig4)


@pytest.mark.slow
def test_embedded_center_bias_shows_each_datasets_center_mass(embedded):
    record = embedded("center-bias")
    ((_, result),) = _results(record["runs"][0]).items()
    assert list(result["datasets"]) == ["camouflage", "salient"]
    for name, entry in result["datasets"].items():
        assert f"{name}\ncenter mass {entry['center_mass']:.2f}" in record["texts"]


@pytest.mark.slow
def test_embedded_byvshev_table1_runs_the_four_evaluations_of_the_driver(embedded):
    """Each job of the test stage evaluates the model, clips and frame order that
    stbias.studies.byvshev.TABLE1_EVALUATIONS name."""
    from stbias.results import load_records
    from stbias.studies.byvshev import TABLE1_EVALUATIONS, table1_rows

    record = embedded("byvshev-table1")
    records, skipped = load_records(f"{record['runs'][1]}/*/")
    rows = table1_rows(records)
    assert skipped == 0 and len(rows) == 4
    got = {(r["trained_variant"], r["variant"], r["reverse"]) for r in rows}
    assert got == set(TABLE1_EVALUATIONS)
    for row in rows:
        # the test stage reads the one clip selection: debug=fast's probe.num_clips (8), not the
        # target's 64
        assert row["num_clips"] == 8
        total = row["acc"] + row["err_appearance_only"] + row["err_motion_only"] + row["err_both"]
        assert total == pytest.approx(1.0)


@pytest.mark.slow
def test_embedded_byvshev_table2_draws_the_grid_of_its_runs(embedded):
    import csv

    from stbias.results import load_records
    from stbias.studies.byvshev import table2_rows

    record = embedded("byvshev-table2")
    rows = table2_rows(load_records(f"{record['runs'][0]}/*/")[0])
    grid = [(p, m, s) for p in (2, 8) for m in (2, 8) for s in (0, 1, 2)]
    assert sorted((r["places"], r["motions"], r["seed"]) for r in rows) == grid
    # the sweep's own callback tabulated the same runs
    with open(Path(record["runs"][0]) / "table2.csv", newline="") as fh:
        written = {
            (int(r["places"]), int(r["motions"]), int(r["seed"])): float(r["acc"])
            for r in csv.DictReader(fh)
        }
    assert written == {(r["places"], r["motions"], r["seed"]): r["acc"] for r in rows}
    for p, m in {(r["places"], r["motions"]) for r in rows}:  # a cell: the mean over seeds
        mean = np.mean([r["acc"] for r in rows if (r["places"], r["motions"]) == (p, m)])
        assert any(t.startswith(f"{mean:.2f} ± ") for t in record["texts"])
    assert any("per doubling of place classes" in t for t in record["texts"])


@pytest.mark.slow
def test_embedded_byvshev_appendix_a_shows_the_studys_tables(embedded):
    record = embedded("byvshev-appendix-a")
    (run,) = [p.parent for p in Path(record["runs"][0]).rglob("scene_bias.json")]
    tables = json.loads((run / "scene_bias.json").read_text())
    common, rare = tables["table_a3"]
    assert common["group"] == "common" and rare["group"] == "rare"
    assert (
        common["videos"] + rare["videos"] == len((run / "videos.csv").read_text().splitlines()) - 1
    )
    # the known answer: the inflated c2d_tiny on static clips probes as c2d_tiny on the image
    flat, inflated, own, flat_tuned, own_tuned = tables["table_a4"]
    assert (flat["kind"], inflated["kind"], own["kind"]) == ("2D", "3D (inflated)", "3D")
    assert inflated["predictions"] == flat["predictions"] and inflated["top1"] == flat["top1"]
    assert all(row["probe_converged"] for row in (flat, inflated, own))
    # the paper's second regime: the same networks with every weight trained
    assert [r["fixed_weights"] for r in tables["table_a4"]] == [True, True, True, False, False]
    assert (flat_tuned["kind"], own_tuned["kind"]) == ("2D", "3D")
    assert flat_tuned["features"] == flat["features"] and own_tuned["features"] == own["features"]
    # each starts from the fixed regime's classifier of the same network
    assert flat_tuned["fixed_top1"] == flat["top1"] and own_tuned["fixed_top1"] == own["top1"]
    assert "fine-tuned" in " ".join(record["texts"])
    texts = " ".join(record["texts"])
    assert f"{100 * flat['top1']:.1f}" in texts and "c2d_tiny\ninflated\n(3D)" in texts
    shares = [p["share"] for p in tables["fig_a12"]]
    assert shares[0] == 1.0 and shares == sorted(shares, reverse=True)


def test_missing_paths_stop_the_target_with_one_line_each(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    needed = needed_paths("kowal_architectures")
    assert "datasets.activitynet" in needed and "checkpoints.kinetics.i3d" in needed
    (tmp_path / "i3d.pyth").write_bytes(b"")
    with pytest.raises(StbiasError) as err:
        make("fig3", str(tmp_path / "out"), sets=[f"checkpoints.kinetics.i3d={tmp_path}/i3d.pyth"])
    lines = str(err.value).splitlines()
    assert len(lines) == len(needed) - 1
    for key, line in zip([k for k in needed if k != "checkpoints.kinetics.i3d"], lines):
        assert f"paths.{key} " in line and f"set {key} in figures.local.yaml" in line
    assert not (tmp_path / "out").exists()  # nothing ran
    (tmp_path / "figures.local.yaml").write_text("checkpoints:\n  kinetics:\n    c2d: /nowhere\n")
    with pytest.raises(StbiasError, match="paths.checkpoints.kinetics.c2d=/nowhere does not exist"):
        make("fig3", str(tmp_path / "out"))


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("manttari-table4", ["datasets.ssv2", "datasets.kth"]),
        ("static-dropout", ["datasets.ssv2", "checkpoints.kinetics.slow"]),
        # both steps read SSv2: the training and the probe each name it
        ("bias-over-training", ["datasets.ssv2", "datasets.ssv2", "stylized.ssv2"]),
        (
            "vos-fig7",
            [
                "datasets.davis",
                "datasets.tao_vos",
                "datasets.imagenet_vid",
                "checkpoints.imagenet.resnet18",
            ],
        ),
        ("center-bias", ["datasets.davis", "datasets.tao_vos", "datasets.imagenet_vid"]),
        (
            "vos-moca",
            [
                "datasets.davis",
                "datasets.tao_vos",
                "datasets.imagenet_vid",
                "checkpoints.imagenet.resnet18",
                "datasets.davis",
                "datasets.tao_vos",
                "datasets.imagenet_vid",
                "datasets.moca",
                "checkpoints.imagenet.resnet18",
            ],
        ),
        ("byvshev-table2", ["datasets.places365"]),
        (
            "byvshev-fig11",
            [
                "checkpoints.byvshev_fig11.r2plus1d_34_ig65m",
                "checkpoints.byvshev_fig11.r2plus1d_34",
                "checkpoints.byvshev_fig11.ir_csn_152_ig65m",
                "checkpoints.byvshev_fig11.ir_csn_152_sports1m",
                "checkpoints.byvshev_fig11.s3d_howto100m",
            ],
        ),
        (
            "byvshev-appendix-a",
            [
                "datasets.kinetics",
                "datasets.places365",
                "checkpoints.kinetics.i3d_inception",
                "checkpoints.places365.resnet18",
                "checkpoints.imagenet.googlenet",
            ],
        ),
        (
            "vis-fig5",
            [
                "datasets.youtube_vis",
                "checkpoints.youtube_vis.vistr_r50",
                "checkpoints.youtube_vis.vistr_r101",
            ],
        ),
    ],
)
def test_the_study_targets_stop_listing_their_missing_paths(name, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StbiasError) as err:
        make(name, str(tmp_path / "out"))
    lines = str(err.value).splitlines()
    assert [line.split(" needs paths.", 1)[1].split(" ", 1)[0] for line in lines] == keys
    assert all(line.startswith(f"{name} needs paths.") for line in lines)
    assert not (tmp_path / "out").exists()  # nothing ran


def test_the_command_line_prints_one_line_per_missing_path(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "stbias.figures", "byvshev-fig3", "--out", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "stbias: error: byvshev-fig3 needs paths.checkpoints.kinetics.i3d_inception (experiment "
        "byvshev_weights): set checkpoints.kinetics.i3d_inception in figures.local.yaml or run "
        'make byvshev-fig3 PATHS="checkpoints.kinetics.i3d_inception=/path"'
    ]


def _fake_paths(root, experiment):
    values = {}
    for key in needed_paths(experiment):
        path = root / key.replace(".", "_")
        path.mkdir(parents=True, exist_ok=True)
        values[key] = str(path)
    return values


def _sweep(cfg):
    if cfg.hydra.sweeper.get("params") is None:  # one run, no sweep
        yield []
        return
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    keys = list(params)
    values = [str(params[k]).split(",") for k in keys]
    for combo in itertools.product(*values):
        yield [f"{k}={v}" for k, v in zip(keys, combo)]


FIGURE_OF = {e: name for name, f in FIGURES.items() for e in f.experiments}


@pytest.mark.parametrize("experiment", REAL)
def test_every_run_of_a_real_experiment_resolves_to_its_paths(compose, experiment, tmp_path):
    """Each sweep point of the real experiment composes with the paths ``plan`` passes, and its
    model and data come from the paths of that point's model and dataset."""
    name = FIGURE_OF[experiment]
    values = {}
    for e in FIGURES[name].experiments:
        values.update(_fake_paths(tmp_path, e))
    stages = plan(name, str(tmp_path / "out"), sets=values)
    (stage,) = [s for s in stages if s.experiment == experiment]
    used = ""
    for point in _sweep(compose_experiment(experiment)):
        cfg = compose(
            f"experiment={GROUP}/{experiment}", *stage.overrides, *point, run_dir=tmp_path / "run"
        )
        resolved = OmegaConf.to_container(cfg, resolve=True)
        model = resolved["model"]["name"]
        checkpoint = resolved["model"]["checkpoint"]
        if "checkpoints" in resolved.get("paths", {}) and checkpoint:  # weights the user gives
            assert checkpoint in values.values() and checkpoint.endswith(f"_{model}"), point
        dataset = HydraConfig.get().runtime.choices["dataset"]
        trained = (resolved.get("training_dataset") or {}).get(dataset)
        if trained:  # a model trained on Kinetics-400 is probed on ActivityNet
            assert f"checkpoints_{trained}_{model}" in checkpoint, point
        root = resolved["dataset"].get("root")
        if f"datasets.{dataset}" in values:
            assert root == values[f"datasets.{dataset}"], point
        used += json.dumps({k: v for k, v in resolved.items() if k != "paths"})
    # every path the experiment asks for is used by one of its runs (outside the paths node)
    for key in needed_paths(experiment):
        assert values[key] in used, key


# real experiments on data generated on the fly (BrushMNIST at the paper's size): no path to set
GENERATED = {"byvshev_table1_train", "byvshev_table1_test"}


def test_the_registry_and_the_experiment_configs_agree():
    used = set(REAL) | set(EMBEDDED)
    assert used <= set(EXPERIMENTS)
    assert set(EXPERIMENTS) - used == {"embedded_pfm"}  # the embedded variants' shared settings
    for experiment in EMBEDDED:  # shipped data only: no path for the user to set
        assert needed_paths(experiment) == [], experiment
    for experiment in REAL:
        assert bool(needed_paths(experiment)) != (experiment in GENERATED), experiment


def test_make_figures_lists_every_target_and_what_it_needs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "figures.local.yaml").write_text(
        json.dumps({"checkpoints": {"kinetics": {"i3d_inception": "/w.pt"}}})
    )
    text = listing()
    for name in FIGURES:
        assert f"\n{name} " in text
    assert "needs (1/1 set): checkpoints.kinetics.i3d_inception" in text
    assert "needs (0/10 set): datasets.activitynet, stylized.activitynet" in text
    assert "needs (0/2 set): datasets.ssv2, datasets.kth" in text  # manttari-table1
    assert "needs no path (its data is generated)" in text  # byvshev-table1: BrushMNIST


def test_the_makefile_forwards_figure_targets(tmp_path):
    proc = subprocess.run(
        [
            "make",
            "-n",
            "-C",
            str(ROOT),
            "fig3-embedded",
            "PATHS=datasets.x=/a checkpoints.y=/b",
            "ARGS=debug=fast",
            f"FIGURES_OUT={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if "-m stbias.figures" in line]
    # the paths go through the environment (STBIAS_FIGURE_SETS, STBIAS_FIGURES_OUT), never
    # through the shell: tests/test_hostile.py runs a path with a space and quotes
    assert line.split("-m stbias.figures", 1)[1].split() == ["fig3-embedded", "debug=fast"]


@pytest.mark.slow
def test_a_multirun_whose_runs_write_no_results_is_not_finished(tmp_path, monkeypatch):
    """A run stopped from outside (Lightning ends training quietly on SIGTERM) exits 0 without
    results; its multirun must not be marked finished and reused."""
    from stbias.figures.make import DONE, run_stage

    monkeypatch.chdir(tmp_path)
    # task=layers prints the model's layers and writes no results.json
    (stage,) = plan("byvshev-fig3-embedded", str(tmp_path / "out"), overrides=["task=layers"])
    with pytest.raises(StbiasError, match="wrote results for 0 of its 1 runs"):
        run_stage(stage)
    assert not os.path.exists(os.path.join(stage.folder, DONE))


def _stylized_points():
    """(experiment, sweep point) of every real figure run that reads a stylized ActivityNet."""
    for experiment in REAL:
        cfg = compose_experiment(experiment)
        if not str(cfg.stylization.name).startswith("precomputed"):
            continue
        for point in _sweep(cfg):
            if "dataset=activitynet" in point or (
                not any(p.startswith("dataset=") for p in point)
                and cfg.hydra.runtime.choices.dataset == "activitynet"
            ):
                yield experiment, point


@pytest.mark.parametrize(("experiment", "point"), list(_stylized_points()))
def test_every_figure_reads_the_stylized_activitynet_by_time(compose, experiment, point, tmp_path):
    """The authors' 5 fps release (``style_k/v_<id>/%06d.jpg`` from 1): each view of a 30 fps
    video reads the copy's frame shown at the same time, as the contract line does."""
    import fixtures
    from hydra.utils import instantiate

    from stbias.lit.probe import stylizer_context
    from stbias.models.inputs import InputSpec
    from stbias.tasks.dataset_setup import build_dataset

    root, stylized = fixtures.activitynet(tmp_path / "anet", tmp_path / "sty")
    name = FIGURE_OF[experiment]
    values = {}
    for e in FIGURES[name].experiments:
        values.update(_fake_paths(tmp_path / "paths", e))
    values.update({"datasets.activitynet": str(root), "stylized.activitynet": str(stylized)})
    stages = plan(name, str(tmp_path / "out"), sets=values)
    (stage,) = [s for s in stages if s.experiment == experiment]
    cfg = compose(
        f"experiment={GROUP}/{experiment}", *stage.overrides, *point, run_dir=tmp_path / "run"
    )
    with open_dict(cfg):
        cfg.model.input.sampling_rate = 15  # 8 frames half a second apart fit the 4 s fixture
    assert cfg.stylization.stylizer.root == str(stylized)
    data = build_dataset(cfg.dataset, InputSpec.from_dict(OmegaConf.to_container(cfg.model.input)))
    stylizer = instantiate(cfg.stylization).stylizer
    sample = data[0]
    batch = {k: [v] if isinstance(v, str) else v for k, v in sample.items()}
    batch = {k: (v.unsqueeze(0) if hasattr(v, "unsqueeze") else v) for k, v in batch.items()}
    clip = batch["video"].permute(0, 4, 1, 2, 3).float() / 255
    for style in (0, 1):
        out = stylizer(clip, style, **stylizer_context(batch))
        # the copy's frame shown at time t: floor(5 t) + 1, of grey level 40 (style + 1) + file
        expected = [40 * (style + 1) + int(t * 5 + 1e-6) + 1 for t in sample["frame_times"]]
        got = [round(float(out[0, 0, j].mean()) * 255) for j in range(out.shape[2])]
        assert got == expected, (experiment, point)
