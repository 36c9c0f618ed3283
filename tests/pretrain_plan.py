"""Train the pretraining runs a tutorial plans (the `PLAN` its settings cell builds), part PART of PARTS, so that
several processes share a table of runs before the notebook is executed at the same scale, which then finds them
trained and only probes them. Each part trains every PARTS-th run of the plan, in name order; a run already trained
is loaded, and an interrupted one resumes. Usage, for two processes on two cores:

    SSL_AE_SCALE=cpu OMP_NUM_THREADS=1 python tests/pretrain_plan.py nbs/tutorials/03_dae_embedding.ipynb 0 2 &
    SSL_AE_SCALE=cpu OMP_NUM_THREADS=1 python tests/pretrain_plan.py nbs/tutorials/03_dae_embedding.ipynb 1 2
    SSL_AE_SCALE=cpu python tests/execute_notebooks.py nbs/tutorials/03_dae_embedding.ipynb

PARTS = 0 lists the plan without training anything."""
import os
import sys
import time
from pathlib import Path

import nbformat


def plan(notebook: Path) -> dict:
    "The notebook's `PLAN`: its cells up to the one that builds it, run in the notebook's folder."
    cells = nbformat.read(notebook, as_version=4).cells
    ns = {}
    for cell in cells:
        if cell.cell_type != "code" or cell.source.lstrip().startswith("#| hide"): continue
        exec(compile(cell.source, str(notebook), "exec"), ns)
        if "PLAN" in ns: return ns["PLAN"]
    raise SystemExit(f"{notebook} builds no PLAN in its settings cell: nothing to train.")


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 epilog="PARTS = 0 lists the plan without training anything.")
    ap.add_argument("notebook", type=Path, help="the tutorial whose PLAN to train")
    ap.add_argument("part", type=int, help="which part this process trains (0 to PARTS - 1)")
    ap.add_argument("parts", type=int, help="how many processes share the plan")
    args = ap.parse_args()
    if not args.notebook.is_file(): ap.error(f"no such notebook: {args.notebook}")
    notebook, part, parts = args.notebook.resolve(), args.part, args.parts
    os.chdir(notebook.parent)
    runs = plan(notebook)
    names = sorted(runs)
    if parts == 0:
        print("\n".join(names)); print(f"{len(names)} runs"); raise SystemExit
    from ssl_ae.train import train_or_resume
    mine = names[part::parts]
    for i, name in enumerate(mine):
        start = time.time()
        t = train_or_resume(runs[name], progress=False)
        print(f"[{i + 1}/{len(mine)}] {name}: loss {t.history[-1]['loss']:.4f}, {time.time() - start:.0f} s", flush=True)
