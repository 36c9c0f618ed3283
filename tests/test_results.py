"""The committed `cpu`-scale results of the tutorials: every file complete, every claim with a verdict, every figure
there. (That a smoke run writes the same structure is checked by each tutorial itself, in its last hidden cell,
whenever the test suite executes it.)"""
import json
import math
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="reads notebooks: needs nbformat (the dev extra)")

from ssl_ae.study import META_KEYS, Study, _fingerprint_parts, arithmetic_differs, arithmetic_fingerprint

ROOT = Path(__file__).parent.parent
TUTORIALS = ROOT / "nbs" / "tutorials"
STUDIES = {"sidae": "01_sidae", "aasae": "02_aasae", "white": "03_dae_embedding", "gs": "04_graded_similarity", "bench": "05_one_bench"}
VERDICTS = {"holds", "reversed", "within noise", "holds (within noise)", "does not hold"}


@pytest.mark.parametrize("name", STUDIES)
def test_committed_results_are_complete(name):
    path = TUTORIALS / "results" / f"{name}_cpu.json"
    assert path.exists(), f"{path} is missing: run SSL_AE_SCALE=cpu python tests/execute_notebooks.py nbs/tutorials/{STUDIES[name]}.ipynb"
    data = json.loads(path.read_text())
    meta = data["meta"]
    assert set(META_KEYS) <= set(meta), set(META_KEYS) - set(meta)
    assert meta["scale"] == "cpu" and len(meta["seeds"]) >= 3 and meta["wall_time_s"] > 0
    assert meta["notebook"] == f"nbs/tutorials/{STUDIES[name]}.ipynb" and "SSL_AE_SCALE=cpu" in meta["command"]
    fractions = set(meta["fractions"])
    for key, record in data["records"].items():
        assert record["seconds"] >= 0, key
        if "accuracy" in record:
            assert set(record["accuracy"]) == fractions, key
            assert all(0 <= a <= 1 for a in record["accuracy"].values()), key
        if "config" in record:  # a pretraining run: its settings and probe are recorded, and it ran at the cpu recipe
            assert record["config"]["dataset"] == "digits" and record["protocol"]["epochs"] > 0, key
    by_run = {}
    for key in data["records"]:
        if "_seed" in key and not key.startswith("finetune_"):  # fine-tuning is one run per method, and says so
            by_run.setdefault(key.rsplit("_seed", 1)[0], set()).add(key)
    assert all(len(v) >= 3 for v in by_run.values()), {k: len(v) for k, v in by_run.items() if len(v) < 3}
    assert data["claims"], "no verdicts"
    for text, c in data["claims"].items():
        assert c["verdict"] in VERDICTS and min(c["n"]) >= 3, text
        assert math.isclose(c["difference"], c["a"][0] - c["b"][0], abs_tol=1e-3), text
    for fig in data["figures"]:
        png = TUTORIALS / "results" / f"{name}_cpu_{fig}.png"
        assert png.exists() and png.stat().st_size < 150_000, png


@pytest.mark.parametrize("name", STUDIES)
def test_each_tutorial_checks_its_smoke_structure_against_the_committed_results(name):
    nb = nbformat.read(TUTORIALS / f"{STUDIES[name]}.ipynb", as_version=4)
    checks = [c.source for c in nb.cells if c.cell_type == "code" and f'check_like(Study("{name}", "cpu"' in c.source]
    assert len(checks) == 1 and checks[0].startswith("#| hide"), name
    assert Study(name, "cpu", TUTORIALS / "results").records, name


@pytest.fixture(scope="module")
def fingerprint():
    return arithmetic_fingerprint()


@pytest.mark.parametrize("name", STUDIES)
def test_committed_results_were_computed_by_todays_arithmetic(name, fingerprint):
    "A result goes stale when the code that shapes it computes other numbers; it must then be regenerated, not kept."
    meta = json.loads((TUTORIALS / "results" / f"{name}_cpu.json").read_text())["meta"]
    differs = arithmetic_differs(meta["fingerprint"], fingerprint)
    assert not differs, (f"results/{name}_cpu.json was computed by other arithmetic ({', '.join(differs)} differ): "
                         f"delete it and regenerate it with {meta['command']}")
    assert meta["commit"] and meta["date"] and meta["mlxtend"], meta


def test_the_fingerprint_sees_a_change_of_arithmetic(monkeypatch):
    "The DAE's loss scaled by 1.01 changes the DAE's part of the fingerprint and nothing else."
    from ssl_ae import losses
    before = _fingerprint_parts(methods=("dae",))
    dae_loss = losses.dae_loss
    monkeypatch.setattr(losses, "dae_loss", lambda *a, **k: dae_loss(*a, **k) * 1.01)
    assert arithmetic_differs(before, _fingerprint_parts(methods=("dae",))) == ["dae"]


def test_a_study_does_not_mix_records_of_two_arithmetics(tmp_path, fingerprint):
    "Records loaded from a file of another arithmetic may be read, but no new record joins them; ours may."
    other = {**fingerprint, "dae": [v * 1.05 for v in fingerprint["dae"]]}
    for stored, allowed in ((other, False), (fingerprint, True)):
        folder = tmp_path / str(allowed)
        folder.mkdir()
        (folder / "demo_cpu.json").write_text(json.dumps({"meta": {"fingerprint": stored}, "records": {"old": {"x": 1}},
                                                          "claims": {}, "figures": []}))
        s = Study("demo", "cpu", folder)
        assert s.record("old", lambda: {"x": 2}) == {"x": 1}  # loaded, whatever computed it
        if allowed: assert s.record("new", lambda: {"x": 3})["x"] == 3
        else:
            with pytest.raises(ValueError, match="other arithmetic .*dae"): s.record("new", lambda: {"x": 3})
