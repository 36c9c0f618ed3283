"""The arithmetic of every method, in a few lines of text: three CPU training steps of each method's quick config, the
losses as `float.hex` and a hash of the weights. A refactor that changes no arithmetic leaves the output unchanged:

    python tests/fingerprint.py > before.txt   # on the old commit
    python tests/fingerprint.py | diff before.txt -   # on the new one: no output

(Issue 20's module split was checked this way, bit for bit, against commit e064720.)"""
import hashlib
import warnings

import torch

from ssl_ae.methods import METHODS
from ssl_ae.train import Trainer

try: from ssl_ae.recipes import quick_config
except ImportError: from ssl_ae.train import quick_config  # before issue 20

if __name__ == "__main__":
    import argparse
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                            epilog="python tests/fingerprint.py > before.txt, then on the new commit: "
                                   "python tests/fingerprint.py | diff before.txt -").parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    for m in sorted(METHODS):
        t = Trainer(quick_config(m, limit=128, batch_size=32, epochs=1, out="/tmp/ssl_ae_fingerprint", device="cpu",
                                 compile="off"), progress=False)
        batches, losses = iter(t.loader), []
        for _ in range(3):
            xb, yb = next(batches)
            losses.append(float(t.step(xb, yb if t.method.uses_labels else None).loss))
        weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in t.method.parameters())).hexdigest()[:16]
        print(m, [x.hex() for x in losses], weights)
