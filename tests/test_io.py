"""Result files: atomic writes, no NaN, readable back."""

import csv
import json

import numpy as np
import pytest
import torch

from stbias import io


def test_json_roundtrip_with_numpy_and_torch(tmp_path):
    obj = {"a": np.float64(0.5), "b": np.arange(3), "c": torch.tensor([1.5, 2.0]), "d": (1, "x")}
    io.write_json(tmp_path / "r.json", obj)
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "a": 0.5,
        "b": [0, 1, 2],
        "c": [1.5, 2.0],
        "d": [1, "x"],
    }


def test_json_refuses_nan_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    io.write_json(path, {"ok": 1})
    with pytest.raises(ValueError):
        io.write_json(path, {"bad": float("nan")})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_failed_write_leaves_no_partial_file(tmp_path):
    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io._atomic_write(tmp_path / "x.bin", boom)
    assert list(tmp_path.iterdir()) == []


def test_csv_columns_in_first_seen_order(tmp_path):
    io.write_csv(tmp_path / "r.csv", [{"model": "m", "layer": "l1"}, {"model": "m", "x": 2}])
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert list(rows[0]) == ["model", "layer", "x"]
    assert rows[1] == {"model": "m", "layer": "", "x": "2"}


def test_npz_and_environment(tmp_path):
    io.write_npz(tmp_path / "u.npz", {"res5/dynamic": np.ones(4), "t": torch.zeros(2)})
    with np.load(tmp_path / "u.npz") as data:
        assert data["res5/dynamic"].tolist() == [1.0] * 4 and data["t"].shape == (2,)
    env = io.environment()
    assert env["packages"]["numpy"] == np.__version__
    assert env["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert "revision" in env["git"]
