"""The committed `cpu`-scale results of the tutorials: every file complete, every claim with a verdict, every figure
there. (That a smoke run writes the same structure is checked by each tutorial itself, in its last hidden cell,
whenever the test suite executes it.)"""
import json
import math
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="reads notebooks: needs nbformat (the dev extra)")

from ssl_ae.study import META_KEYS, Study, _fingerprint_parts, _get, arithmetic_differs, arithmetic_fingerprint

ROOT = Path(__file__).parent.parent
TUTORIALS = ROOT / "nbs" / "tutorials"
STUDIES = {"sidae": "01_sidae", "aasae": "02_aasae", "white": "03_dae_embedding", "gs": "04_graded_similarity", "bench": "05_one_bench"}
# every committed results file: the cpu scale's of each page, and the gpu scale's where a GPU has made them
RESULTS = [(n, sc) for n in STUDIES for sc in ("cpu", "gpu") if sc == "cpu" or (TUTORIALS / "results" / f"{n}_{sc}.json").exists()]
VERDICTS = {"holds", "reversed", "no difference detected", "not shown equivalent"}  # `judge`'s words, and these two:
MARGIN_VERDICTS = ("equivalent within ±", "differ by more than ")  # followed by the claim's margin
PRIMARY = {"sidae": 4, "aasae": 3, "white": 3, "gs": 2}  # each paper's headline claims for the data its page runs on


@pytest.mark.parametrize("name, scale", RESULTS)
def test_committed_results_are_complete(name, scale):
    path = TUTORIALS / "results" / f"{name}_{scale}.json"
    assert path.exists(), f"{path} is missing: run SSL_AE_SCALE={scale} python tests/execute_notebooks.py nbs/tutorials/{STUDIES[name]}.ipynb"
    data = json.loads(path.read_text())
    meta = data["meta"]
    assert set(META_KEYS) <= set(meta), set(META_KEYS) - set(meta)
    assert meta["scale"] == scale and len(meta["seeds"]) >= 3 and meta["wall_time_s"] > 0
    assert meta["notebook"] == f"nbs/tutorials/{STUDIES[name]}.ipynb" and f"SSL_AE_SCALE={scale}" in meta["command"]
    for added in meta.get("added_records", []):  # records added to a file later came from a committed tree, and say which
        commit = added.split(" by commit ", 1)[1].split(" ", 1)[0]
        assert re.fullmatch(r"[0-9a-f]{7,}", commit) and "fingerprint equal to" in added, added[:200]
        assert all(k in data["records"] for k in added.rsplit("): ", 1)[1].split(", ")), added[:200]
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
        assert c["verdict"] in VERDICTS or c["verdict"] in {w + f"{c['margin']:g}" for w in MARGIN_VERDICTS}, text
        assert min(c["n"]) >= 5 and c["family"] in ("primary", "secondary", "equivalence", "stability"), text
        assert c["detectable"] > 0, text  # every claim states what its runs detect with 80 % power
        assert math.isclose(c["difference"], c["a"][0] - c["b"][0], abs_tol=1e-3), text
    for fig in data["figures"]:
        png = TUTORIALS / "results" / f"{name}_{scale}_{fig}.png"
        assert png.exists() and png.stat().st_size < 150_000, png


@pytest.mark.parametrize("name, scale", RESULTS)
def test_every_verdict_follows_from_the_runs_stored_beside_it(name, scale):
    """Each claim's test and verdict, recomputed from its stored per-run numbers under the study's rule: a t test (paired
    by seed, else Welch's), TOST for an equality, F for a stability claim; Holm inside each family; the tallies."""
    from ssl_ae.study import LEVEL, equivalent, f_test, holm, judge, paired_t, welch
    data = json.loads((TUTORIALS / "results" / f"{name}_{scale}.json").read_text())
    claims = data["claims"]
    def p(c, key="p"):
        a, b = c["runs"]["a"], c["runs"]["b"]
        if c["expect"] == "steadier": return f_test(a, b)["p"]
        if c["expect"] == "≈": return equivalent(a, b, c["margin"], LEVEL, c["paired"])[key]
        return (paired_t if c["paired"] else welch)(a, b)["p"]
    adjusted, differ = {}, {}
    for fam in ("primary", "secondary", "equivalence", "stability"):
        members = [t for t, c in claims.items() if c["family"] == fam]
        adjusted.update(zip(members, holm([p(claims[t], "p_equivalent") for t in members])))
        differ.update(zip(members, holm([p(claims[t], "p_differ") for t in members])) if fam == "equivalence" else {})
        assert all(claims[t]["family_size"] == len(members) for t in members), (name, fam)
    for t, c in claims.items():
        assert c["n"] == [len(c["runs"]["a"]), len(c["runs"]["b"])], t
        for side, field in (("a", c["field"]), ("b", c["b_field"] or c["field"])):  # the runs are the records named beside them
            stored = [_get(data["records"][k], field) for k in c["keys"][side]]
            assert any(all(math.isclose(r, scale * v, rel_tol=1e-5, abs_tol=1e-6) for r, v in zip(c["runs"][side], stored))
                       for scale in (1.0, 100.0)) and len(stored) == len(c["runs"][side]), (t, side)
        assert math.isclose(c["p_holm"], adjusted[t], rel_tol=1e-4, abs_tol=1e-9), t
        if c["expect"] == "steadier":
            assert math.isclose(c["ratio"], f_test(c["runs"]["a"], c["runs"]["b"])["ratio"], rel_tol=1e-4), t
            continue
        seeds = [[k.rsplit("seed", 1)[1] for k in c["keys"][side]] for side in "ab"]
        assert c["paired"] == (seeds[0] == seeds[1]), t  # paired exactly when seeds match
        j = judge(c["runs"]["a"], c["runs"]["b"], c["expect"], LEVEL, c["margin"], adjusted[t], c["paired"], differ.get(t))
        assert j["verdict"] == c["verdict"] and math.isclose(j["t"], c["t"], rel_tol=1e-4, abs_tol=1e-9), t
        if c.get("paper") is not None:  # "consistent with" exactly when our interval contains the paper's difference
            assert (c["relation"] == "consistent with the paper's effect") == (c["low"] <= c["paper"] <= c["high"]), t
    counted = {}
    for c in claims.values(): counted.setdefault(c["family"], {}).setdefault(c["verdict"], 0); counted[c["family"]][c["verdict"]] += 1
    assert data["tallies"] == counted, "the stored tallies are not the claims' verdicts counted per family"
    if name in PRIMARY: assert counted.get("primary") and sum(counted["primary"].values()) == PRIMARY[name], name
    tested = [r for r in data.get("paper_claims", []) if r["tested"]]  # (the bench has no paper)
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
    """A result goes stale when the code that shapes it computes other numbers — a network, a loss, a recipe's length, the
    label draw, the supervised grid, the probe, kNN, retrieval or inertia; it must then be regenerated, not kept."""
    meta = json.loads((TUTORIALS / "results" / f"{name}_{scale}.json").read_text())["meta"]
    differs = arithmetic_differs(meta["fingerprint"], fingerprint if scale == "cpu" else arithmetic_fingerprint(scale))
    assert not differs, (f"results/{name}_{scale}.json was computed by other arithmetic ({', '.join(differs)} differ): "
                         f"delete it and regenerate it with {meta['command']}")
    assert meta["commit"] and meta["date"] and meta["mlxtend"], meta


# The three files whose first records were computed before this rule, by trees with uncommitted changes in ssl_ae/:
# their fingerprints (every part, the later ones computed with the code of the commit that committed each file) equal
# today's, and every record added since names a clean commit. Regenerating one from a clean tree removes it from here;
# no file joins it.
MADE_FROM_CHANGES = {("sidae", "cpu"): "95f15da+changes", ("aasae", "cpu"): "25a6cc2+changes",
                     ("gs", "cpu"): "aa8efe3+changes"}


@pytest.mark.parametrize("name, scale", RESULTS)
def test_committed_results_were_computed_from_committed_code(name, scale):
    "A record vouches for code anyone can check out: a file made by a tree with uncommitted changes does not land."
    meta = json.loads((TUTORIALS / "results" / f"{name}_{scale}.json").read_text())["meta"]
    if (name, scale) in MADE_FROM_CHANGES:
        assert meta["commit"] == MADE_FROM_CHANGES[name, scale], "regenerated? then drop it from MADE_FROM_CHANGES"
        assert "equal to those of the code of" in meta["fingerprint_added"], meta.get("fingerprint_added")
    else:
        assert re.fullmatch(r"[0-9a-f]{7,}", meta["commit"]), (
            f"results/{name}_{scale}.json was computed by {meta['commit']}: commit the package's changes and "
            f"regenerate it from the clean tree ({meta['command']})")


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
    "A claim's verdicts and differences at both label fractions, with its runs a side, as the README states them."
    a, b = (c[f"{claim} at {label} labels"] for label in ("100 %", "1 %"))
    words = a["verdict"] if a["verdict"] == b["verdict"] else f"{a['verdict']} / {b['verdict']}"
    one = lambda x: f"{round(x, 1) + 0.0:+.1f}"  # (+ 0.0: no "-0.0")
    n = a["n"][0] if a["n"][0] == b["n"][0] else f"{a['n'][0]} / {b['n'][0]}"
    return f"{words} ({one(a['difference'])} / {one(b['difference'])} points at 100 % / 1 %, {n} runs a side)"


def _one(c: dict) -> str:
    "One claim's verdict, difference and runs a side."
    return f"{c['verdict']} ({round(c['difference'], 1) + 0.0:+.1f} points, {c['n'][0]} runs a side)"


def _tally(data: dict) -> str:
    "The page's tallies per family — claims that hold (or are equivalent) of those tested — and the claims not tested."
    parts = [f"{fam} {sum(n for w, n in v.items() if w == 'holds' or w.startswith('equivalent'))} of {sum(v.values())}"
             for fam, v in data["tallies"].items()]
    untested = sum(not r["tested"] for r in data["paper_claims"])
    return f"holding (or equivalent) per family: {', '.join(parts)}; {untested} claims of the paper"


def sidae_evidence(data: dict) -> str:
    "The README's cpu-evidence cell for the SidAE tutorial, from its results file: what the README must say."
    c = data["claims"]
    return (f"primary claims against the paper's MNIST rows: SidAE > SimSiam {_both(c, 'SidAE (w = 0.5) beats SimSiam')}; "
            f"SidAE > DAE {_both(c, 'SidAE (w = 0.5) beats the DAE')}; {_tally(data)} need the paper scale")


def aasae_evidence(data: dict) -> str:
    "The README's cpu-evidence cell for the AASAE tutorial, from its results file."
    c = data["claims"]
    return ("primary claims, all labels (the paper has no digits rows; its CIFAR-10 gaps are 30–37 points): "
            + "; ".join(f"AASAE > {o} {_one(c[f'AASAE beats the {o} at 100 % labels'])}" for o in ("AE", "AAAE", "VAE"))
            + f"; {_tally(data)} need other data")


def white_evidence(data: dict) -> str:
    "The README's cpu-evidence cell for White's tutorial, from its results file."
    c = data["claims"]
    return ("primary claims, all labels (the thesis has no digits rows): "
            f"DAE > AE reconstructing its views {_one(c['denoising beats reconstructing the views (α = 0) at 100 % labels'])}; "
            f"DAE + NCS > DAE {_one(c['DAE + NCS (α = 10) beats the DAE at 100 % labels'])}; "
            f"SimCLR > DAE + NCS {_one(c['SimCLR beats DAE + NCS (α = 10) at 100 % labels'])}; "
            f"{_tally(data)} need the paper scale's runs or a measure the thesis does not state")


def gs_evidence(data: dict) -> str:
    "The README's cpu-evidence cell for the graded-similarity tutorial, from its results file."
    c = data["claims"]
    return ("primary claims, all labels (the paper has no digits rows): "
            + "; ".join(f"{m}-GS > {m} {_one(c[f'{m}-GS (λ = 0.5) beats {m} at 100 % labels'])}" for m in ("SimSiam", "SimCLR"))
            + f"; {_tally(data)} need other data, the paper scale or a measure the paper does not state")


def bench_evidence(data: dict) -> str:
    "The README's cpu-evidence cell for the one-bench page, from its results file."
    c = data["claims"]
    methods = [t.split(" beats random init")[0] for t in c if t.endswith("at 1 % labels")]
    held = {lab: sum(c[f"{m} beats random init at {lab} labels"]["verdict"] == "holds" for m in methods) for lab in ("100 %", "1 %")}
    few = sorted(((c[f"{m} beats random init at 1 % labels"]["a"][0], m) for m in methods), reverse=True)
    return (f"{len(data['meta']['seeds'])} runs a method, one budget and probe: beats random init (paired t, one family, Holm over {len(c)}) in "
            f"{held['100 %']} / {held['1 %']} of {len(methods)} methods at 100 % / 1 % labels; at 1 % labels highest {few[0][1]} "
            f"({few[0][0]:.1f} %), lowest {few[-1][1]} ({few[-1][0]:.1f} %), an order the page does not test")


EVIDENCE = {"SidAE": ("sidae", sidae_evidence), "AASAE": ("aasae", aasae_evidence), "DAE + embedding": ("white", white_evidence),
            "Graded similarity": ("gs", gs_evidence), "One bench": ("bench", bench_evidence)}


@pytest.mark.parametrize("tutorial", EVIDENCE)
def test_the_readme_states_the_evidence_as_the_results_file_has_it(tutorial):
    "The README's summary of a regenerated tutorial's results is generated from its results file, so it cannot drift."
    name, evidence = EVIDENCE[tutorial]
    data = json.loads((TUTORIALS / "results" / f"{name}_cpu.json").read_text())
    row = next(l for l in (ROOT / "README.md").read_text().splitlines() if l.startswith(f"| [{tutorial}]"))
    assert f"| {evidence(data)} |" in row, f"the README's {tutorial} row should say: {evidence(data)}"
