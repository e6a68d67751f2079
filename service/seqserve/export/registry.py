"""The one registry of layer converters, keyed by Keras class name."""

from __future__ import annotations

from collections.abc import Callable

from seqserve.export.context import Converter

CONVERTERS: dict[str, Converter] = {}


def register(*class_names: str) -> Callable[[Converter], Converter]:
    """Decorator: `@register("LSTM", "CuDNNLSTM")` makes a function the converter of those classes."""

    def deco(fn: Converter) -> Converter:
        for name in class_names:
            if name in CONVERTERS:
                raise RuntimeError(f"two converters registered for {name}")
            CONVERTERS[name] = fn
        return fn

    return deco


def load_all() -> None:
    """Import every converter module so that it registers itself."""
    import importlib
    import pkgutil

    from seqserve.export import layers

    for info in pkgutil.iter_modules(layers.__path__):
        importlib.import_module(f"{layers.__name__}.{info.name}")
