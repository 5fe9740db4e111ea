"""The Python API: models by name, Probe / GradCAM / TemporalMask on the same clips, saved runs
read back as the command line's, and WeightTemporality."""

import json

import pandas as pd
import pytest
import torch

import stbias
from stbias import GradCAM, Probe, TemporalMask, WeightTemporality
from stbias.config import compose
from stbias.data import PlacesFacesMNIST
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec


def _pfm_clips(spec: InputSpec, count: int) -> torch.Tensor:
    """The first clips of dataset=pfm (``probe.sampling=first``) at the model's geometry."""
    data = PlacesFacesMNIST(
        num_frames=spec.frames, sampling_rate=spec.sampling_rate, size=spec.size, num_samples=2000
    )
    return torch.stack([data[i]["video"] for i in range(count)])


NUMBERS = ("scores_", "dims_", "percent_", "units_", "n_pairs_")


def test_probe_api_gives_the_rows_of_the_command_line(tmp_path, monkeypatch):
    from stbias.runner import run_task

    torch.manual_seed(0)
    weights = tmp_path / "i3d_tiny.pt"
    torch.save(stbias.models.create("i3d_tiny").state_dict(), weights)
    (tmp_path / "cli").mkdir()
    monkeypatch.chdir(tmp_path / "cli")  # the command line's run directory
    cli_cfg = compose(
        [
            "model=i3d_tiny",
            f"model.checkpoint={weights}",
            "probe.num_clips=6",
            "probe.sampling=first",
            "probe.batch_size=3",
            f"probe.cache_dir={tmp_path / 'cache'}",
            "logger=none",
            "trainer.enable_progress_bar=false",
        ]
    )
    cli, _ = run_task(cli_cfg)

    # plain Python: the same model by name, the same six clips
    model = stbias.models.create("i3d_tiny", checkpoint=weights)
    clips = _pfm_clips(model.stbias.spec, 6)
    res = Probe(model, batch_size=3).run(clips)
    assert list(res) == list(cli["layers"])  # the model's probe_layers, as on the command line
    folder = res.save(tmp_path / "api", dataset="pfm", sampling="first")
    api_rows = stbias.results.load(folder)
    cli_rows = stbias.results.load(tmp_path / "cli")
    columns = [c for c in cli_rows if c.startswith(NUMBERS)]
    columns += ["model", "weights", "weights_sha256", "lam", "layer", "num_clips", "channels"]
    columns += ["estimator", "metric", "stylization", "seed", "skipped_clips"]
    assert len(columns) > 20 and set(columns) <= set(api_rows)
    pd.testing.assert_frame_equal(api_rows[columns], cli_rows[columns])
    assert set(api_rows["dataset"]) == {"pfm"}  # what save() was told

    table = res.table()
    assert isinstance(table, pd.DataFrame) and list(table["layer"]) == list(cli["layers"])
    assert res.plot().axes
    strict = res.at(lam=0.9)
    assert sum(strict["res4"]["units"][c] for c in ("static", "joint")) <= sum(
        res["res4"]["units"][c] for c in ("static", "joint")
    )
    # task=compare reads the saved run as it reads a command-line run
    monkeypatch.chdir(tmp_path)
    compared, _ = run_task(
        compose(["task=compare", f"runs=[{folder},{tmp_path / 'cli'}]", "logger=none"])
    )
    assert compared


def test_gradcam_and_temporal_mask_take_the_probe_clips(tmp_path):
    torch.manual_seed(0)
    model = stbias.models.create("i3d_tiny", frames=8, size=32)
    clips = _pfm_clips(model.stbias.spec, 3)
    for given in (clips, clips.float() / 255):  # uint8, or float in [0, 1]: one layout
        res = GradCAM(model, layer="res3", batch_size=2).run(given)
        assert res.record["layer"] == "res3" and res.record["layer_path"] == "stages.1"
        assert len(res.table()) == 3 and res.plot().axes
    # a module object is a layer too; the alias is found from the model's declared layers
    assert GradCAM(model, layer=model.stages[1]).layer == "res3"
    with pytest.raises(StbiasError, match="not a module of the model"):
        GradCAM(model, layer=torch.nn.Conv3d(1, 1, 1))
    folder = res.save(tmp_path / "gradcam", dataset="pfm")
    assert stbias.results.load(folder)["task"].tolist() == ["gradcam"]
    masks = TemporalMask(model, iterations=2, batch_size=3).run(
        PlacesFacesMNIST(num_frames=8, size=32, num_samples=3, seed=0)
    )
    assert len(masks.table()) == 3 and masks.plot().axes
    assert stbias.results.load(masks.save(tmp_path / "masks"))["task"].tolist() == ["temporal_mask"]


def test_models_by_name():
    assert (
        "i3d_tiny" in stbias.models.list_models()
        and "quickstart" not in stbias.models.list_models()
    )
    assert stbias.models.list_models("i3d*") == ["i3d", "i3d_inception", "i3d_tiny"]
    model = stbias.models.create("i3d_tiny", num_classes=5, frames=8, size=16)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 8, 16, 16)).shape == (1, 5)
    assert model.stbias.spec.frames == 8 and model.stbias.layers["res3"] == "stages.1"
    cfg = compose(["model=i3d_tiny"])
    assert model.stbias.probe_layers == tuple(cfg.model.probe_layers)
    with pytest.raises(StbiasError, match="unknown setting 'depth' of model i3d_tiny; valid: "):
        stbias.models.create("i3d_tiny", depth=3)
    with pytest.raises(StbiasError, match="unknown model 'i3d_huge'; valid: .*i3d_tiny"):
        stbias.models.create("i3d_huge")
    with pytest.raises(StbiasError, match="no published weights"):
        stbias.models.create("i3d_tiny", pretrained=True)


def test_probe_layers_by_alias_path_or_module():
    torch.manual_seed(0)
    model = stbias.models.create("i3d_tiny", frames=4, size=16)
    by_alias = Probe(model, layers=["res3"]).layers
    assert Probe(model, layers="stages.1").layers == {"res3": "stages.1"}  # the path's alias
    assert by_alias == {"res3": "stages.1"}
    assert Probe(model, layers=[model.stages[1]]).layers == {"res3": "stages.1"}
    assert Probe(model, layers={"mine": model.stages[0]}).layers == {"mine": "stages.0"}
    with pytest.raises(StbiasError, match="not a module of the model"):
        Probe(model, layers=[torch.nn.Linear(2, 2)])
    with pytest.raises(StbiasError, match="unknown layer 'res9'"):
        Probe(model, layers="res9")


def test_weight_temporality_twin_has_table_and_plot(tmp_path):
    torch.manual_seed(0)
    model = stbias.models.create("i3d_tiny")
    res = WeightTemporality(model).run()
    table = res.table()
    assert list(table["layer"]) == list(res) and {"asdt", "temporal_fraction"} <= set(table)
    assert res.plot().axes and res.plot("temporal_channels").axes
    assert json.dumps(dict(res), default=str)


def test_the_readme_python_example_runs():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = text.split("## In Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope = {"clips": torch.randint(0, 256, (2, 16, 112, 112, 3), dtype=torch.uint8)}
    exec(compile(example, "README.md", "exec"), scope)  # noqa: S102 - the README's own text
    results = scope["results"]
    assert list(results) == ["layer3", "layer4"]
    assert list(scope["results"].table()["layer"]) == ["layer3", "layer4"]
    assert results["layer4"]["n_pairs"]["static"] == 2


@pytest.mark.slow
def test_the_docs_python_example_runs(tmp_path, monkeypatch):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "python.md").read_text()
    example = text.split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(example, "docs/python.md", "exec"), scope)  # noqa: S102 - the docs' own text
    assert list(scope["table"]["layer"]) == ["layer1", "layer2", "layer3", "layer4"]
    assert scope["results"]["layer4"]["n_pairs"] == {"dynamic": 8, "static": 8}
    assert "ci" in scope["results"]["layer4"]  # bootstrap intervals
    assert (tmp_path / "r3d_18_probe.png").stat().st_size > 5000
    pdf = (tmp_path / "r3d_18_probe.pdf").read_bytes().replace(b" ", b"")  # saved by the user
    assert b"/Subtype/Type3" not in pdf  # TrueType fonts (Type 42), whole or as CID fonts
    assert b"/Subtype/TrueType" in pdf or b"/Subtype/CIDFontType2" in pdf
    assert (tmp_path / "r3d_18_asdt.png").stat().st_size > 5000
    assert len(scope["weights"]) > 10  # every temporal convolution of r3d_18


def test_the_docs_shipped_model_and_new_method_example_runs(tmp_path, monkeypatch):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "python.md").read_text()
    example = text.split("```python", 2)[2].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "docs_example"}
    exec(compile(example, "docs/python.md", "exec"), scope)  # noqa: S102 - the docs' own text
    runs = scope["runs"]
    assert runs.groupby("task").size().to_dict() == {
        "explain": 1,
        "gradcam": 1,
        "probe": 4,
        "temporal_mask": 1,
    }
    assert list(scope["probe"]) == ["stem", "res2", "res3", "res4"]
    assert scope["cams"].record["layer"] == "res3"
    drops = scope["occlusion"].table()["drop"]
    assert len(drops) == 4 and scope["occlusion"].record["summary"]["drop"]["n"] == 4
