"""The Python API: Probe(...).run(clips) and WeightTemporality(...).run(), against the CLI."""

import json

import pandas as pd
import pytest
import torch

from stbias import Probe, WeightTemporality
from stbias.config import compose
from stbias.data import PlacesFacesMNIST
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec
from stbias.tasks.model_setup import build_model
from stbias.tasks.run_config import plain


def test_probe_api_gives_the_numbers_of_the_command_line(tmp_path, monkeypatch):
    from stbias.runner import run_task

    torch.manual_seed(0)
    cfg = compose(["model=i3d_tiny"])
    model = build_model(cfg.model)
    weights = tmp_path / "i3d_tiny.pt"
    torch.save(model.state_dict(), weights)
    monkeypatch.chdir(tmp_path)
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

    spec = InputSpec.from_dict(plain(cfg.model.input))
    data = PlacesFacesMNIST(
        num_frames=spec.frames, sampling_rate=spec.sampling_rate, size=spec.size, num_samples=2000
    )
    clips = torch.stack([data[i]["video"] for i in range(6)])
    # the layers the command line probes by default (the model's probe_layers)
    layers = {a: p for a, p in plain(cfg.model.layers).items() if a in cfg.model.probe_layers}
    probe = Probe(model, layers=layers, input_spec=spec, batch_size=3)
    res = probe.run(clips)
    assert list(res) == list(cli["layers"])
    for layer, entry in cli["layers"].items():
        for factor in ("dynamic", "static"):
            assert res[layer]["scores"][factor] == pytest.approx(
                entry["scores"][factor], rel=1e-9, abs=1e-12
            )
        assert res[layer]["units"] == entry["units"] and res[layer]["dims"] == entry["dims"]
    table = res.table()
    assert isinstance(table, pd.DataFrame) and list(table["layer"]) == list(cli["layers"])
    assert (
        table.set_index("layer").loc["res2", "units_static"]
        == cli["layers"]["res2"]["units"]["static"]
    )
    assert res.plot().axes
    strict = res.at(lam=0.9)
    assert sum(strict["res4"]["units"][c] for c in ("static", "joint")) <= sum(
        res["res4"]["units"][c] for c in ("static", "joint")
    )


def test_probe_api_refuses_what_it_cannot_read():
    model = torch.nn.Conv3d(3, 4, 1)
    with pytest.raises(StbiasError, match="uint8 clips"):
        Probe(model, {"x": ""}, InputSpec(frames=4, size=8)).run(torch.rand(2, 4, 8, 8, 3))
    with pytest.raises(StbiasError, match="unknown stylizer"):
        Probe(model, {"x": ""}, InputSpec(frames=4, size=8), stylizer="cubist")


def test_weight_temporality_twin_has_table_and_plot(tmp_path):
    torch.manual_seed(0)
    model = build_model(compose(["model=i3d_tiny"]).model)
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
