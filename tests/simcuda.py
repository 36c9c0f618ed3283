"""A CUDA device simulated on the CPU, so that CPU-only tests can catch the two classes of GPU bug that CPU runs hide.

Inside `simulated_cuda()`, tensors can live on `cuda:0`: `torch.zeros(3, device="cuda")`, `x.to("cuda")`,
`model.cuda()` and `torch.Generator(device="cuda")` work on a machine without a GPU. Such a tensor is a CPU tensor of a
subclass whose `device` says `cuda:0`; a torch function mode sees every call first and checks it the way CUDA does:

- **Devices.** An operation that combines a simulated-CUDA tensor with a CPU tensor of one or more dimensions fails
  with CUDA's own message ("Expected all tensors to be on the same device ..."); indexing a CPU tensor with CUDA
  indices fails ("indices should be either on cpu or on the same device as the indexed tensor (cpu)"), as does a
  random draw whose generator is on the other device. CPU scalars (0-dimensional tensors) are accepted, as CUDA
  kernels accept them, and CPU indices into a CUDA tensor too.
- **Host synchronisation.** Every operation that makes the host wait for a real GPU is recorded: reading a value
  (`.item()`, `bool(t)`, `float(t)`, `.tolist()`), data-dependent shapes (`nonzero`, boolean-mask indexing,
  `masked_select`, `unique`, `bincount`), and blocking copies between host and device (`.cpu()`, `.to("cuda")`,
  `torch.tensor(python_list, device="cuda")`). `torch.cuda.set_sync_debug_mode("error")` makes them raise, as it
  does on a GPU; `synchronizations()` lists them.

- **CUDA graphs.** `ssl_ae.graphs.BACKEND` is replaced by `_SimGraphs`: a capture runs the step once with every host
  synchronisation an error, and a replay runs it again and writes into the recorded outputs. Triton kernels cannot
  launch here, so views take the batched path (`can_fuse` says no).

- **MPS.** `simulated_mps()` simulates a Mac's GPU the same way (`mps:0`, `torch.backends.mps.is_available()`, no
  CUDA), with the one rule that breaks code written on other devices: MPS has no float64, so making a float64 tensor on
  it, or casting one there, fails with MPS's message.

What it cannot show: anything about CUDA's kernels themselves (speed, numerics, cuDNN, memory), streams and
asynchronous errors, a real graph's recording, Triton, or torch.compile on a GPU. Those need a real GPU:
`tests/gpu_check.py`.
"""
from __future__ import annotations

import inspect
import traceback
import weakref
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

CUDA = torch.device("cuda", 0)
MPS = torch.device("mps", 0)
_ROOT = str(Path(__file__).resolve().parents[1] / "ssl_ae")
T = torch.Tensor

# what makes the host wait for a real GPU: a value read on the host, or a result whose shape depends on the values
_READS = {T.item, T.tolist, T.__bool__, T.__float__, T.__int__, T.__index__, T.numpy}
_DATA_SHAPED = {torch.nonzero, T.nonzero, torch.masked_select, T.masked_select, torch.unique, T.unique, torch.unique_consecutive,
                torch.bincount, T.bincount, torch.argwhere, torch.equal, T.equal,
                torch.allclose, T.allclose, torch.histc, T.histc}


class _State:
    mode = "default"  # as torch.cuda.set_sync_debug_mode: "default", "warn" or "error"
    syncs: list = []
    device = CUDA  # the simulated device: cuda:0, or mps:0 in `simulated_mps`


def _where() -> str:
    "The innermost line of ssl_ae (else of the caller) that led to this operation."
    frames = [f for f in traceback.extract_stack()[:-3] if "simcuda" not in f.filename and "/torch/" not in f.filename]
    ours = [f for f in frames if f.filename.startswith(_ROOT)]
    f = (ours or frames or traceback.extract_stack()[:-3])[-1]
    return f"{Path(f.filename).name}:{f.lineno} ({(f.line or '').strip()})"


def _sync(what: str):
    where = _where()
    _State.syncs.append(f"{what} at {where}")
    if _State.mode == "error": raise RuntimeError(f"called a synchronizing CUDA operation: {what} at {where}")
    if _State.mode == "warn":
        import warnings
        warnings.warn(f"called a synchronizing CUDA operation: {what} at {where}", stacklevel=3)


class SimCudaTensor(torch.Tensor):
    "A CPU tensor that says it is on cuda:0 (the `device` and `is_cuda` Python properties); ops on it keep the type."
    __torch_function__ = torch._C._disabled_torch_function_impl  # the mode (`_Checks`) does the work, once per call

    @property
    def device(self): return _State.device

    @property
    def is_cuda(self): return _State.device.type == "cuda"

    @property
    def is_mps(self): return _State.device.type == "mps"

    def __reduce_ex__(self, proto):  # pickled (torch.save, deepcopy) as the CPU tensor it is
        return torch.Tensor.__reduce_ex__(self.as_subclass(torch.Tensor), proto)

    def __deepcopy__(self, memo):
        with torch._C.DisableTorchFunction(), torch.no_grad():
            out = self.as_subclass(torch.Tensor).clone().as_subclass(SimCudaTensor)
        out.requires_grad_(self.requires_grad)
        out.__dict__.update(self.__dict__)  # _is_param, for parameters
        memo[id(self)] = out
        return out


def _sim(t) -> bool: return isinstance(t, SimCudaTensor)


def _host(t) -> bool:
    "A tensor on the host (not a simulated-CUDA one)."
    return isinstance(t, torch.Tensor) and not _sim(t)


def _to_sim(t: torch.Tensor) -> torch.Tensor:
    with torch._C.DisableTorchFunction(): return t.as_subclass(SimCudaTensor)


def _to_host(t: torch.Tensor) -> torch.Tensor:
    with torch._C.DisableTorchFunction(): return t.as_subclass(torch.Tensor)


def _run(func, args, kwargs, on_cuda: bool):
    "Call `func` as torch would on the CPU; on the simulated GPU, its new tensors are simulated-CUDA ones."
    with torch._C.DisableTorchFunctionSubclass(): out = func(*args, **kwargs)
    if not on_cuda: return out
    return pytree.tree_map(lambda t: _to_sim(t) if _host(t) else t, out)


def _mixed(func):
    return RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, {_State.device} and cpu! "
                        f"(when calling {getattr(func, '__qualname__', func)})")


def _is_cuda(device) -> bool:
    "A device argument that names the simulated device (cuda, or mps in `simulated_mps`)."
    return device is not None and not isinstance(device, (int, torch.dtype)) and torch.device(device).type == _State.device.type


_RealGenerator = torch.Generator


class _AnyGenerator(type(torch.Generator)):
    "isinstance(g, torch.Generator) stays true of every generator while `torch.Generator` is patched."
    def __instancecheck__(cls, obj): return isinstance(obj, _RealGenerator)


class SimCudaGenerator(_RealGenerator, metaclass=_AnyGenerator):
    "`torch.Generator` in the simulation: on 'cuda', a CPU generator that says it is on cuda:0."
    def __new__(cls, device="cpu"):
        return _RealGenerator.__new__(cls) if _is_cuda(device) else _RealGenerator(device=device)

    @property
    def device(self): return _State.device


def _check_generator(gen, on_cuda: bool):
    if gen is None: return
    if (type(gen) is SimCudaGenerator) != on_cuda:
        want, got = (_State.device.type, "cpu") if on_cuda else ("cpu", _State.device.type)
        raise RuntimeError(f"Expected a '{want}' device type for generator but found '{got}'")


_ANY_DEVICES = {torch._has_compatible_shallow_copy_type, torch.is_tensor}


def _accessor(func) -> bool:
    "A property's getter or setter (shape, grad, data, ...): no arithmetic."
    return getattr(func, "__name__", "") in ("__get__", "__set__", "__delete__")


def _target(func, args, kwargs):
    "(device, dtype, non_blocking, memory_format) of a .to / .cuda / .cpu call (device None: it stays)."
    if func is T.cuda: return CUDA, None, kwargs.get("non_blocking", False), None  # (on a simulated MPS: no CUDA to go to)
    if func is T.cpu: return torch.device("cpu"), None, False, None
    if len(args) > 1 and isinstance(args[1], torch.Tensor): return args[1].device, args[1].dtype, False, None  # .to(other)
    return torch._C._nn._parse_to(*args[1:], **{k: v for k, v in kwargs.items() if k != "copy"})


class _Checks(TorchFunctionMode):
    "Every torch call in the simulation: devices checked as CUDA checks them, host synchronisations recorded."
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        leaves = pytree.tree_leaves((args, kwargs))
        on_cuda = any(_sim(t) for t in leaves)
        if func in (T.to, T.cuda, T.cpu):
            x = args[0]
            device, dtype, non_blocking, fmt = _target(func, args, kwargs)
            to_cuda = _sim(x) if device is None else _is_cuda(device)
            if to_cuda != _sim(x) and not non_blocking:
                _sync(f"blocking copy {'to the device' if to_cuda else 'to the host'} ({func.__name__})")
            elif dtype in (None, x.dtype) and fmt is None and not kwargs.get("copy"): return x
            y = _to_host(x).to(dtype=dtype or x.dtype, memory_format=fmt or torch.preserve_format)
            if to_cuda != _sim(x) and y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr(): y = y.clone()  # a move is a copy
            return _to_sim(y) if to_cuda else _to_host(y)
        if func in (T.__getitem__, T.__setitem__):
            x, index = args[0], args[1]
            parts = index if isinstance(index, tuple) else (index,)
            if _host(x) and any(_sim(i) for i in pytree.tree_leaves(parts)):
                raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
            if func is T.__setitem__ and _host(x) and _sim(args[2]): raise _mixed(func)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool and i.dim() > 0 for i in pytree.tree_leaves(parts)):
                _sync("indexing with a boolean mask (its number of true values)")
            return _run(func, args, kwargs, on_cuda)
        if func is T.copy_:
            if _sim(args[0]) != _sim(args[1]) and not kwargs.get("non_blocking", args[2] if len(args) > 2 else False):
                _sync("blocking copy between host and device (copy_)")
            return _run(func, args, kwargs, on_cuda)
        gen = kwargs.get("generator")
        if _is_cuda(kwargs.get("device")):  # created on the GPU: a factory, or torch.tensor of host data
            _check_generator(gen, True)
            kwargs["device"] = "cpu"
            data = args[0] if args else kwargs.get("data")
            if func in (torch.tensor, torch.as_tensor) and _sim(data): return func(*args, **{k: v for k, v in kwargs.items() if k != "device"})
            if func in (torch.tensor, torch.as_tensor): _sync(f"a tensor made from host data on the device ({func.__name__})")
            return _run(func, args, kwargs, True)
        if func.__name__ == "__get__" and args and _sim(args[0]):  # .grad (autograd writes plain tensors), .data, .T, ...
            out = _run(func, args, kwargs, False)
            return _to_sim(out) if _host(out) else out
        if gen is not None: _check_generator(gen, on_cuda)
        if not on_cuda: return _run(func, args, kwargs, False)
        if func is T.new_tensor: _sync("a tensor made from host data on the device (new_tensor)")
        elif func in _READS: _sync(f"a value read on the host ({func.__name__})")
        elif func in _DATA_SHAPED: _sync(f"{func.__name__} (the host waits for a value or a shape)")
        elif func in (torch.repeat_interleave, T.repeat_interleave) and "output_size" not in kwargs and (
                len(args) == 1 or torch.is_tensor(args[1] if len(args) > 1 else kwargs.get("repeats"))):
            _sync("repeat_interleave with tensor repeats and no output_size (the host waits for the total)")
        elif func is torch.where and len(args) + len(kwargs) == 1: _sync("torch.where(condition) (a shape that depends on values)")
        if func is T.numpy: raise TypeError(f"can't convert {_State.device} device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first.")
        if func not in _ANY_DEVICES and not _accessor(func) and any(_host(t) and t.dim() > 0 for t in leaves): raise _mixed(func)
        return _run(func, args, kwargs, True)


_NO_FLOAT64 = ("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64. "
               "Please use float32 instead.")


class _MpsChecks(_Checks):
    "The simulated MPS: CUDA's device checks, and no float64 tensor on the device (made there, or moved or cast to it)."
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kw = dict(kwargs or {})
        if kw.get("dtype") == torch.float64 and _is_cuda(kw.get("device")): raise TypeError(_NO_FLOAT64)
        out = super().__torch_function__(func, types, args, kwargs)
        if any(_sim(t) and t.dtype == torch.float64 for t in pytree.tree_leaves(out)): raise TypeError(_NO_FLOAT64)
        return out


def _on_host(obj):
    "`obj` (nested dicts, lists, tuples) with simulated-CUDA tensors seen as the CPU tensors they are, for torch.save."
    return pytree.tree_map(lambda t: _to_host(t) if _sim(t) else t, obj)


_real_group = torch._C._group_tensors_by_device_and_dtype


def _group(tensorlistlist, with_indices=False):
    "torch's grouping of optimiser tensors by device, with simulated-CUDA groups keyed by cuda:0 (as on a GPU)."
    groups = _real_group(tensorlistlist, with_indices)
    on_cuda = lambda lists: any(_sim(t) for ts in lists for t in ts if t is not None)
    return {((CUDA if on_cuda(lists) else device), dtype): (lists, idx) for (device, dtype), (lists, idx) in groups.items()}


class _Stream:
    "The simulated GPU's one stream: nothing is captured, nothing to wait for."
    def is_capturing(self): return False
    def synchronize(self): pass
    def query(self): return True


class _SimGraphs:
    """CUDA graphs on the simulated GPU (`ssl_ae.graphs.BACKEND`). The eager warm-up runs as it is. A capture records
    by running the step once with every host synchronisation an error, as a real capture refuses them (unlike a real
    capture, this runs the step: one extra step). A replay runs the step again on the static inputs and writes the
    results into the recorded outputs, so callers see what they would see on a GPU: the same output tensors, overwritten."""
    captures = 0
    def eager(self, fn, inputs): return fn(*inputs)
    def capture(self, fn, inputs, generators):
        mode, _State.mode = _State.mode, "error"
        try: out = fn(*inputs)
        finally: _State.mode = mode
        _SimGraphs.captures += 1
        step = weakref.WeakMethod(fn) if inspect.ismethod(fn) else (lambda: fn)  # a real graph keeps no Python function
        def replay():
            new = step()(*inputs)
            with torch.no_grad():
                for a, b in zip(pytree.tree_leaves(out), pytree.tree_leaves(new)):
                    if isinstance(a, torch.Tensor): a.copy_(b)
        return replay, out


def synchronizations() -> list:
    "The host synchronisations recorded so far in this simulation: 'what at file:line (code)'."
    return list(_State.syncs)


@contextmanager
def _simulated(device: torch.device, patches: list, checks):
    "Within the block, `device` is simulated on the CPU with `patches` and the function mode `checks`."
    import ssl_ae.augment, ssl_ae.graphs  # noqa: F401  (imported before torch's answers change: torch._dynamo reads them)
    real_save = torch.save
    patches = patches + [
        mock.patch("torch._C._group_tensors_by_device_and_dtype", _group),
        mock.patch("torch.Generator", SimCudaGenerator),
        mock.patch("torch.save", lambda obj, f, *a, **k: real_save(_on_host(obj), f, *a, **k)),
        mock.patch("ssl_ae.augment.can_fuse", lambda x, size: False),  # Triton cannot launch here: the batched path
    ]
    _State.mode, _State.syncs, _State.device = "default", [], device
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)  # module.to(device) makes new (simulated) parameters
    for p in patches: p.start()
    try:
        with checks(): yield
    finally:
        for p in reversed(patches): p.stop()
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
        _State.mode, _State.device = "default", CUDA


@contextmanager
def simulated_cuda(capability: tuple = (8, 0)):
    """Within the block, one CUDA GPU is simulated on the CPU; see the module's docstring. `capability` 8.0 and above
    (A100, H100, L4) autocasts to bf16; below (a T4 is 7.5) the trainer uses fp16 with a grad scaler."""
    rng = {}
    patches = [
        mock.patch("torch.cuda.is_available", lambda: True),
        mock.patch("torch.cuda.device_count", lambda: 1),
        mock.patch("torch.cuda.current_device", lambda: 0),
        mock.patch("torch.cuda.set_device", lambda d: None),
        mock.patch("torch.cuda.synchronize", lambda d=None: None),
        mock.patch("torch.cuda.is_current_stream_capturing", lambda: False),
        mock.patch("torch.cuda.get_device_capability", lambda d=None: capability),
        mock.patch("torch.cuda.get_device_name", lambda d=None: "simulated CUDA GPU (the CPU)"),
        mock.patch("torch.cuda.get_rng_state", lambda d=None: rng.get("state", torch.get_rng_state())),
        mock.patch("torch.cuda.set_rng_state", lambda s, d=None: rng.__setitem__("state", s)),
        mock.patch("torch.cuda.set_sync_debug_mode", lambda m: setattr(_State, "mode", {0: "default", 1: "warn", 2: "error"}.get(m, m))),
        mock.patch("torch.cuda.get_sync_debug_mode", lambda: {"default": 0, "warn": 1, "error": 2}[_State.mode]),
        mock.patch("torch.accelerator.current_stream", lambda *a, **k: _Stream()),
        mock.patch("torch.cuda.current_stream", lambda *a, **k: _Stream()),
        mock.patch("torch.cuda.is_bf16_supported", lambda *a, **k: capability[0] >= 8),
        mock.patch("ssl_ae.graphs.BACKEND", _SimGraphs()),
    ]
    with _simulated(CUDA, patches, _Checks): yield


def _answers(f, value):
    "A stand-in for `f` that returns `value` and, like `f`, has `__wrapped__` (torch._dynamo reads it on import)."
    def answer(*args, **kwargs): return value
    answer.__wrapped__ = getattr(f, "__wrapped__", f)
    return answer


@contextmanager
def simulated_mps():
    "Within the block, a Mac's GPU (MPS, no CUDA) is simulated on the CPU: no float64 on it; see the module's docstring."
    patches = [
        mock.patch("torch.cuda.is_available", lambda: False),
        mock.patch("torch.backends.mps.is_available", _answers(torch.backends.mps.is_available, True)),
        mock.patch("torch.backends.mps.is_built", lambda: True),
        mock.patch("torch.mps.synchronize", lambda: None),
    ]
    with _simulated(MPS, patches, _MpsChecks): yield
