__version__ = "0.0.1"

MIN_TORCH = (2, 5)  # settings.ini's requirement: graph-safe generators in CUDA graphs, torch.amp.GradScaler(device), ...


def check_torch(version: str) -> None:
    "Refuse, in one line, a torch older than the package needs (an import would fail later, less clearly)."
    try: found = tuple(int(p) for p in version.split("+")[0].split(".")[:2])
    except ValueError: return  # a development build: let it try
    if found < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        raise ImportError(f"ssl_ae needs torch >= {need}, and this is torch {version}: pip install -U 'torch>={need}' "
                          "torchvision")


def _check():
    from importlib import metadata  # torch's version without importing torch (seconds), which `ssl_ae --help` never does
    try: check_torch(metadata.version("torch"))
    except metadata.PackageNotFoundError: pass  # no torch at all: the first import of it says so


_check()
