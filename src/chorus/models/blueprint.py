"""What it takes to build a network again without unpickling it: each network records its
class and constructor arguments (a blueprint, plain JSON) when it is made; a registered model is
that blueprint plus its weights as safetensors (``chorus.models.persist``)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

import torch
from torch import nn

P = ParamSpec("P")
M = TypeVar("M", bound=nn.Module)
Blueprint = dict[str, Any]  # {"class": name, "args": {argument: JSON value or a nested blueprint}}


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, nn.Module):
        return blueprint_of(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: a {type(value).__name__} argument cannot be kept in a blueprint")


def recorded(init: Callable[Concatenate[M, P], None]) -> Callable[Concatenate[M, P], None]:
    """Decorates a network's ``__init__``: the constructed network's ``blueprint`` is its class
    name and its arguments (defaults filled in; modules as their own blueprints, tensors as lists)."""
    signature = inspect.signature(init)
    owner = init.__qualname__.split(".")[0]

    @functools.wraps(init)
    def wrapper(self: M, *args: P.args, **kwargs: P.kwargs) -> None:
        init(self, *args, **kwargs)
        if type(self).__name__ != owner:  # a subclass's own __init__ records the blueprint
            return
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = {k: _plain(v, f"{owner}.{k}") for k, v in list(bound.arguments.items())[1:]}
        object.__setattr__(self, "blueprint", {"class": owner, "args": arguments})

    return wrapper


NETWORKS: dict[str, type[nn.Module]] = {}  # the networks a stored blueprint may name (``register_network``)
N = TypeVar("N", bound=type[nn.Module])


def register_network(cls: N) -> N:
    """Class decorator: a stored model may name this network (``chorus.models.persist``). A
    family module registers the networks it builds; nothing else is ever built from a blueprint."""
    if NETWORKS.get(cls.__name__, cls) is not cls:
        raise ValueError(f"another network class named {cls.__name__!r} is already registered")
    NETWORKS[cls.__name__] = cls
    return cls


def blueprint_of(network: nn.Module) -> Blueprint:
    blueprint = getattr(network, "blueprint", None)
    if not isinstance(blueprint, dict):
        raise TypeError(f"{type(network).__name__} has no blueprint: decorate its __init__ with @recorded")
    return blueprint


def _is_blueprint(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"class", "args"}


def build(blueprint: Blueprint, networks: Mapping[str, type[nn.Module]]) -> nn.Module:
    """The untrained network a blueprint describes; only classes named in ``networks`` are built."""
    name = str(blueprint.get("class"))
    if name not in networks:
        raise ValueError(f"blueprint names {name!r}, not one of the networks chorus builds ({sorted(networks)})")
    args = {k: build(v, networks) if _is_blueprint(v) else v for k, v in blueprint["args"].items()}
    return networks[name](**args)
