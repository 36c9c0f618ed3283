"""The committed `cpu`-scale results of the tutorials: every file complete, every claim with a verdict, every figure
there. (That a smoke run writes the same structure is checked by each tutorial itself, in its last hidden cell,
whenever the test suite executes it.)"""
import json
import math
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="reads notebooks: needs nbformat (the dev extra)")

from ssl_ae.study import META_KEYS, Study, _fingerprint_parts, _get, arithmetic_differs, arithmetic_fingerprint

ROOT = Path(__file__).parent.parent
TUTORIALS = ROOT / "nbs" / "tutorials"
STUDIES = {"sidae": "01_sidae", "aasae": "02_aasae", "white": "03_dae_embedding", "gs": "04_graded_similarity", "bench": "05_one_bench"}
# every committed results file: the cpu scale's of each page, and the gpu scale's where a GPU has made them
RESULTS = [(n, sc) for n in STUDIES for sc in ("cpu", "gpu") if sc == "cpu" or (TUTORIALS / "results" / f"{n}_{sc}.json").exists()]
VERDICTS = {"holds", "reversed", "no difference detected", "differ"}  # `judge` (and "equivalent within ±margin")


@pytest.mark.parametrize("name, scale", RESULTS)
def test_committed_results_are_complete(name, scale):
    path = TUTORIALS / "results" / f"{name}_{scale}.json"
    assert path.exists(), f"{path} is missing: run SSL_AE_SCALE={scale} python tests/execute_notebooks.py nbs/tutorials/{STUDIES[name]}.ipynb"
    data = json.loads(path.read_text())
    meta = data["meta"]
    assert set(META_KEYS) <= set(meta), set(META_KEYS) - set(meta)
    assert meta["scale"] == scale and len(meta["seeds"]) >= 3 and meta["wall_time_s"] > 0
    assert meta["notebook"] == f"nbs/tutorials/{STUDIES[name]}.ipynb" and f"SSL_AE_SCALE={scale}" in meta["command"]
    fractions = set(meta["fractions"])
    for key, record in data["records"].items():
        assert record["seconds"] >= 0, key
        if "accuracy" in record:
            assert set(record["accuracy"]) == fractions, key
            assert all(0 <= a <= 1 for a in record["accuracy"].values()), key
        if "train_s" in record:  # a pretraining run: its settings and probe are recorded, and it ran on the digits
            assert record["config"]["dataset"] == "digits" and record["protocol"]["epochs"] > 0, key
            assert (record["config"]["backbone"] == "small") == (scale == "cpu"), key  # gpu: the papers' networks
    by_run = {}
    for key in data["records"]:
        if "_seed" in key and not key.startswith("finetune_"):  # fine-tuning is one run per method, and says so
            by_run.setdefault(key.rsplit("_seed", 1)[0], set()).add(key)
    assert all(len(v) >= 3 for v in by_run.values()), {k: len(v) for k, v in by_run.items() if len(v) < 3}
    assert data["claims"], "no verdicts"
    assert meta["design"].startswith("each run probed on the label subset and with the classifier seed of its own seed"), meta.get("design")
    for text, c in data["claims"].items():
        assert (c["verdict"] in VERDICTS or c["verdict"].startswith("equivalent within ±")) and min(c["n"]) >= 5, text
        assert math.isclose(c["difference"], c["a"][0] - c["b"][0], abs_tol=1e-3), text
    for fig in data["figures"]:
        png = TUTORIALS / "results" / f"{name}_{scale}_{fig}.png"
        assert png.exists() and png.stat().st_size < 150_000, png


@pytest.mark.parametrize("name, scale", RESULTS)
def test_every_verdict_follows_from_the_runs_stored_beside_it(name, scale):
    "Each claim's test and verdict, recomputed from its stored per-run numbers under the study's rule (Welch, Holm)."
    from ssl_ae.study import LEVEL, f_test, holm, judge, paired_t, welch
    data = json.loads((TUTORIALS / "results" / f"{name}_{scale}.json").read_text())
    claims = data["claims"]
    test = lambda c: f_test if c["expect"] == "steadier" else paired_t if c["paired"] else welch
    p = {t: test(c)(c["runs"]["a"], c["runs"]["b"])["p"] for t, c in claims.items()}
    family = [t for t, c in claims.items() if c["expect"] != "≈"]
    adjusted = dict(zip(family, holm([p[t] for t in family])))
    for t, c in claims.items():
        assert c["n"] == [len(c["runs"]["a"]), len(c["runs"]["b"])] and c["family"] == len(family), t
        for side, field in (("a", c["field"]), ("b", c["b_field"] or c["field"])):  # the runs are the records named beside them
            stored = [_get(data["records"][k], field) for k in c["keys"][side]]
            assert any(all(math.isclose(r, scale * v, rel_tol=1e-5, abs_tol=1e-6) for r, v in zip(c["runs"][side], stored))
                       for scale in (1.0, 100.0)) and len(stored) == len(c["runs"][side]), (t, side)
        if c["expect"] == "steadier":
            f = f_test(c["runs"]["a"], c["runs"]["b"])
            assert math.isclose(c["p_holm"], adjusted[t], rel_tol=1e-4) and math.isclose(c["ratio"], f["ratio"], rel_tol=1e-4), t
            continue
        seeds = [[k.rsplit("seed", 1)[1] for k in c["keys"][side]] for side in "ab"]
        assert c["paired"] == (c["expect"] != "steadier" and seeds[0] == seeds[1]), t  # paired exactly when seeds match
        j = judge(c["runs"]["a"], c["runs"]["b"], c["expect"], LEVEL, c["margin"], adjusted.get(t), c["paired"])
        assert j["verdict"] == c["verdict"] and math.isclose(j["t"], c["t"], rel_tol=1e-4, abs_tol=1e-9), t
    tested = [r for r in data.get("paper_claims", []) if not r["verdict"].startswith("not ")]  # (the bench has no paper)
    assert all(r["test"] in claims for r in tested), "a paper claim names a test the study does not have"


@pytest.mark.parametrize("name", STUDIES)
def test_each_tutorial_checks_its_smoke_structure_against_the_committed_results(name):
    nb = nbformat.read(TUTORIALS / f"{STUDIES[name]}.ipynb", as_version=4)
    checks = [c.source for c in nb.cells if c.cell_type == "code" and f'check_like(Study("{name}", "cpu"' in c.source]
    assert len(checks) == 1 and checks[0].startswith("#| hide"), name
    assert Study(name, "cpu", TUTORIALS / "results").records, name


@pytest.fixture(scope="module")
def fingerprint():
    return arithmetic_fingerprint()


@pytest.mark.parametrize("name, scale", RESULTS)
def test_committed_results_were_computed_by_todays_arithmetic(name, scale, fingerprint):
    "A result goes stale when the code that shapes it computes other numbers; it must then be regenerated, not kept."
    meta = json.loads((TUTORIALS / "results" / f"{name}_{scale}.json").read_text())["meta"]
    differs = arithmetic_differs(meta["fingerprint"], fingerprint)
    assert not differs, (f"results/{name}_{scale}.json was computed by other arithmetic ({', '.join(differs)} differ): "
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


def _both(c: dict, claim: str) -> str:
    "A claim's verdicts and differences at both label fractions, as the README states them."
    a, b = (c[f"{claim} at {label} labels"] for label in ("100 %", "1 %"))
    words = a["verdict"] if a["verdict"] == b["verdict"] else f"{a['verdict']} / {b['verdict']}"
    one = lambda x: f"{round(x, 1) + 0.0:+.1f}"  # (+ 0.0: no "-0.0")
    return f"{words} ({one(a['difference'])} / {one(b['difference'])} points at 100 % / 1 %)"


def _tally(data: dict) -> str:
    "How many of the paper's claims were tested, how many hold (or are equivalent within their margin), how many not."
    tested = [r for r in data["paper_claims"] if not r["verdict"].startswith("not ")]
    held = sum(r["verdict"] == "holds" or r["verdict"].startswith("equivalent") for r in tested)
    return f"{held} of the {len(tested)} claims tested here hold, {len(data['paper_claims']) - len(tested)}"


def sidae_evidence(data: dict) -> str:
    "The README's cpu-evidence cell for the SidAE tutorial, from its results file: what the README must say."
    c = data["claims"]
    return (f"{len(data['meta']['seeds'])} seeds, against the paper's MNIST rows: SidAE > SimSiam "
            f"{_both(c, 'SidAE (w = 0.5) beats SimSiam')}; SidAE > DAE {_both(c, 'SidAE (w = 0.5) beats the DAE')}; "
            f"{_tally(data)} need the paper scale")


def aasae_evidence(data: dict) -> str:
    "The README's cpu-evidence cell for the AASAE tutorial, from its results file."
    c = data["claims"]
    return (f"{len(data['meta']['seeds'])} seeds (the paper has no digits rows: its claims for autoencoders in general): "
            + "; ".join(f"AASAE > {o} {_both(c, f'AASAE beats the {o}')}" for o in ("AE", "AAAE", "VAE"))
            + f"; {_tally(data)} need other data")


def white_evidence(data: dict) -> str:
    "The README's cpu-evidence cell for White's tutorial, from its results file."
    c = data["claims"]
    simclr = c["SimCLR beats DAE + NCS (α = 10) at 100 % labels"]
    return (f"{len(data['meta']['seeds'])} seeds (the thesis has no digits rows: its claims for the method in general): "
            f"DAE > AE reconstructing its views {_both(c, 'denoising beats reconstructing the views (α = 0)')}; "
            f"DAE + NCS > DAE {_both(c, 'DAE + NCS (α = 10) beats the DAE')}; "
            f"SimCLR > DAE + NCS {simclr['verdict']} ({round(simclr['difference'], 1) + 0.0:+.1f} points at 100 %); "
            f"{_tally(data)} need the paper scale's runs or a measure the thesis does not state")


def gs_evidence(data: dict) -> str:
    "The README's cpu-evidence cell for the graded-similarity tutorial, from its results file."
    c = data["claims"]
    knn = c["SimCLR-GS (λ = 0.5) beats SimCLR in kNN accuracy"]
    return (f"{len(data['meta']['seeds'])} seeds (the paper has no digits rows: its claims for CIFAR-10, STL-10 and ImageNet): "
            + "; ".join(f"{m}-GS > {m} {_both(c, f'{m}-GS (λ = 0.5) beats {m}')}" for m in ("SimSiam", "SimCLR"))
            + f"; SimCLR-GS > SimCLR in kNN {knn['verdict']} ({round(knn['difference'], 1) + 0.0:+.1f} points); "
            f"{_tally(data)} need other data, the paper scale or a measure the paper does not state")


def bench_evidence(data: dict) -> str:
    "The README's cpu-evidence cell for the one-bench page, from its results file."
    c = data["claims"]
    methods = [t.split(" beats random init")[0] for t in c if t.endswith("at 1 % labels")]
    held = {lab: sum(c[f"{m} beats random init at {lab} labels"]["verdict"] == "holds" for m in methods) for lab in ("100 %", "1 %")}
    few = sorted(((c[f"{m} beats random init at 1 % labels"]["a"][0], m) for m in methods), reverse=True)
    return (f"{len(data['meta']['seeds'])} seeds, one budget and probe: beats random init (paired t, Holm over {len(c)}) in "
            f"{held['100 %']} / {held['1 %']} of {len(methods)} methods at 100 % / 1 % labels; at 1 % labels best {few[0][1]} "
            f"({few[0][0]:.1f} %), last {few[-1][1]} ({few[-1][0]:.1f} %)")


EVIDENCE = {"SidAE": ("sidae", sidae_evidence), "AASAE": ("aasae", aasae_evidence), "DAE + embedding": ("white", white_evidence),
            "Graded similarity": ("gs", gs_evidence), "One bench": ("bench", bench_evidence)}


@pytest.mark.parametrize("tutorial", EVIDENCE)
def test_the_readme_states_the_evidence_as_the_results_file_has_it(tutorial):
    "The README's summary of a regenerated tutorial's results is generated from its results file, so it cannot drift."
    name, evidence = EVIDENCE[tutorial]
    data = json.loads((TUTORIALS / "results" / f"{name}_cpu.json").read_text())
    row = next(l for l in (ROOT / "README.md").read_text().splitlines() if l.startswith(f"| [{tutorial}]"))
    assert f"| {evidence(data)} |" in row, f"the README's {tutorial} row should say: {evidence(data)}"
