"""Import shims that let Keras 0.2-2.3 and Theano 1.0.5 run on Python 3.11 (old-Keras oracles only).

These exist for the fixture environments made by scripts/old_keras/setup_envs.sh and nothing
else; seqserve never imports them. Each env's site-packages holds a .pth file that puts this
directory on sys.path and imports this module at interpreter start-up, so every Python run in
such an env (the fixture writers, an interactive shell) sees the same patched world:

- the collections ABC aliases removed in Python 3.10 (`collections.Iterable`, ...);
- `inspect.getargspec`, removed in Python 3.11;
- `theano.tensor.signal.downsample`, renamed `pool` in Theano 0.9 (Keras 0.2.0 imports it);
- the private SciPy helpers Theano's pure-Python convolutions import from `scipy.signal.signaltools`
  and `scipy.signal.sigtools` (moved to `_signaltools` / `_sigtools` in SciPy 1.8);
- `yaml.load` without a Loader (PyYAML 6 made it mandatory; old Keras' `model_from_yaml` omits it);
- h5py 2's way of storing `bytes` attributes: Keras 1 and 2 write names and configs as `bytes`,
  which h5py 2 stored as fixed-length strings (read back as bytes) and h5py 3 stores as
  variable-length ones (read back as str, on which Keras 1.2.2's own `load_model` fails). So the
  files written here have the attribute layout of files of that era;
- Theano on the CPU with its pure-Python implementations (`cxx=`: its C code does not build
  against Python 3.11's headers) and Keras on the Theano backend;
- HOME pointed inside the env, so old Keras reads and writes its own `~/.keras/keras.json` and
  Theano its compile dir there, never the user's (Keras 3 would choke on `"backend": "theano"`).
"""

import collections
import collections.abc
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import sys

THEANO_FLAGS = "device=cpu,floatX=float32,blas.ldflags=,cxx="

os.environ.setdefault("THEANO_FLAGS", THEANO_FLAGS)
os.environ.setdefault("KERAS_BACKEND", "theano")
_home = os.path.join(sys.prefix, "home")
os.makedirs(_home, exist_ok=True)
os.environ["HOME"] = _home

for _name in (
    "Callable",
    "Container",
    "Hashable",
    "ItemsView",
    "Iterable",
    "Iterator",
    "KeysView",
    "Mapping",
    "MappingView",
    "MutableMapping",
    "MutableSequence",
    "MutableSet",
    "Sequence",
    "Set",
    "Sized",
    "ValuesView",
):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

if not hasattr(inspect, "getargspec"):
    ArgSpec = collections.namedtuple("ArgSpec", "args varargs keywords defaults")

    def getargspec(func):
        spec = inspect.getfullargspec(func)
        return ArgSpec(spec.args, spec.varargs, spec.varkw, spec.defaults)

    inspect.ArgSpec = ArgSpec
    inspect.getargspec = getargspec


class _DownsampleLoader(importlib.abc.Loader):
    """Builds `theano.tensor.signal.downsample` on top of its successor, `pool`."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from theano.tensor.signal import pool

        def max_pool_2d(input, ds, ignore_border=None, st=None, padding=(0, 0), mode="max"):
            return pool.pool_2d(input, ws=ds, ignore_border=ignore_border, stride=st, pad=padding, mode=mode)

        module.max_pool_2d = max_pool_2d
        module.DownsampleFactorMax = pool.Pool


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then patches the fresh module."""

    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._patch(module)


def _patch_yaml(yaml):
    real_load = yaml.load

    def load(stream, Loader=None):
        # Old Keras dumps configs with python/tuple tags, which only the unsafe loader reads.
        return real_load(stream, Loader=Loader or yaml.UnsafeLoader)

    yaml.load = load


def _patch_h5py(h5py):
    import numpy as np
    from h5py._hl.attrs import AttributeManager

    real_setitem = AttributeManager.__setitem__

    def __setitem__(self, name, value):
        if isinstance(value, bytes):
            value = np.bytes_(value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(item, bytes) for item in value):
            value = np.array(value, dtype=bytes)  # fixed-length 'S<n>', as numpy made it
        real_setitem(self, name, value)

    AttributeManager.__setitem__ = __setitem__


def _patch_signaltools(module):
    from scipy.signal import _signaltools

    module._valfrommode = _signaltools._valfrommode
    module._bvalfromboundary = _signaltools._bvalfromboundary


class _SigtoolsLoader(importlib.abc.Loader):
    """Builds `scipy.signal.sigtools` (gone in SciPy 1.10) on top of `scipy.signal._sigtools`."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from scipy.signal import _sigtools

        module._convolve2d = _sigtools._convolve2d


class _Finder(importlib.abc.MetaPathFinder):
    _patches = {
        "yaml": _patch_yaml,
        "h5py": _patch_h5py,
        "scipy.signal.signaltools": _patch_signaltools,
    }

    def find_spec(self, fullname, path, target=None):
        if fullname == "theano.tensor.signal.downsample":
            return importlib.util.spec_from_loader(fullname, _DownsampleLoader())
        if fullname == "scipy.signal.sigtools":
            return importlib.util.spec_from_loader(fullname, _SigtoolsLoader())
        patch = self._patches.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


sys.meta_path.insert(0, _Finder())
