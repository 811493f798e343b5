"""Which idle models to unload so a new one fits: a pure function of a snapshot.

Nothing here reads a clock, touches a model or keeps state between calls. The manager takes a
snapshot of what is resident (:class:`Resident`), asks :func:`choose_victims` for the keys to
unload, and does the unloading itself; tests call it with plain values.

Two policies:

``"lru"``
    Least recently used first: the baseline every cache is measured against.
``"gdsf"`` (the default)
    GreedyDual-Size-Frequency (Cherkasova 1998). A resident's priority is
    ``H = L + uses * load_seconds / bytes``: what keeping it saves (reloads avoided, each
    costing ``load_seconds``) per byte it holds. The lowest priority goes first. ``L`` is the
    *inflation* value: after each eviction it rises to the largest priority evicted, and a model
    gets the current ``L`` added when it is used, so models that were valuable long ago but
    are no longer used age out instead of squatting forever.

GDSF remembers two things between decisions, ``L`` and each resident's priority as of its
last use. Rather than hide them in a module or object, they live in :class:`PolicyState`,
passed in and handed back, as Ray Serve's autoscaling ``policy(ctx) -> (decision, state)``:

* :func:`record_use` returns the state after a model was loaded or served a request;
* :func:`plan_eviction` returns ``(victims, state)``;
* :func:`choose_victims` is the stateless face (``state=None`` is a fresh state). Without
  state, GDSF has no aging: priorities are ``uses * load_seconds / bytes`` alone, which is
  right for a stable popularity and slow to forget a model that fell out of use.

Ties (equal priorities, a zero ``load_seconds``) fall back to LRU order, then to the key, so a
decision is always deterministic. Busy residents (requests in flight, or pinned by a dependent
that is loading) are never chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "PolicyState",
    "Resident",
    "choose_victims",
    "forget",
    "plan_eviction",
    "record_use",
]

POLICIES: Final = ("lru", "gdsf")
#: chosen by ``bench/eviction_sim.py``: on a Zipf(1.0) trace over 100 models with a budget of
#: ten average models, GDSF loads fewer models, fewer bytes and spends less time loading.
DEFAULT_POLICY: Final = "gdsf"


@dataclass(frozen=True, slots=True)
class Resident:
    """One loaded model, as the eviction policy sees it.

    ``bytes`` is the measured footprint (what unloading frees); ``last_used`` a monotonic
    time; ``uses`` the requests it has served (the manager may count across loads, so a model
    keeps its history when it is evicted and reloaded); ``load_seconds`` what the last load of
    it took (the cost of bringing it back); ``busy`` marks a model that must not be unloaded
    now: requests in flight, or pinned by a dependent that is loading.
    """

    key: str
    bytes: int
    last_used: float
    uses: int
    load_seconds: float
    busy: bool = False


def _frozen(priorities: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(priorities))


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What GDSF carries between decisions; LRU ignores it and hands it back unchanged.

    ``inflation`` is GDSF's ``L``; ``priorities`` each resident's ``H`` as of its last use. A
    resident missing from ``priorities`` is valued as if it were used now (``L`` plus its
    value), so a manager that skips :func:`record_use` for one model never makes it the first
    victim by accident.
    """

    inflation: float = 0.0
    priorities: Mapping[str, float] = field(default_factory=lambda: _frozen({}))


def value(resident: Resident) -> float:
    """Reload seconds saved per byte held: GDSF's ``frequency * cost / size``."""
    return resident.uses * resident.load_seconds / max(resident.bytes, 1)


def record_use(state: PolicyState, resident: Resident) -> PolicyState:
    """The state after ``resident`` was loaded or served a request (its ``uses`` counted)."""
    priorities = dict(state.priorities)
    priorities[resident.key] = state.inflation + value(resident)
    return PolicyState(state.inflation, _frozen(priorities))


def forget(state: PolicyState, keys: Iterable[str]) -> PolicyState:
    """The state after ``keys`` were unloaded for a reason other than eviction."""
    gone = set(keys)
    remaining = {k: h for k, h in state.priorities.items() if k not in gone}
    return PolicyState(state.inflation, _frozen(remaining))


def _order(
    residents: Sequence[Resident], now: float, policy: str, state: PolicyState
) -> list[Resident]:
    """Idle residents, the first to evict first."""
    idle = [r for r in residents if not r.busy]
    if policy == "lru":
        # oldest first; `now - last_used` is the age, written out so the intent is plain
        return sorted(idle, key=lambda r: (-(now - r.last_used), r.key))
    if policy == "gdsf":
        return sorted(idle, key=lambda r: (_priority(r, state), r.last_used, r.key))
    raise ValueError(f"unknown eviction policy {policy!r}; choose one of {', '.join(POLICIES)}")


def _priority(resident: Resident, state: PolicyState) -> float:
    known = state.priorities.get(resident.key)
    return known if known is not None else state.inflation + value(resident)


def plan_eviction(
    residents: Sequence[Resident],
    bytes_needed: int,
    bytes_free: int,
    now: float,
    state: PolicyState,
    policy: str = DEFAULT_POLICY,
) -> tuple[list[str] | None, PolicyState]:
    """The keys to unload so that ``bytes_free + freed >= bytes_needed``, and the next state.

    Victims are taken in policy order until enough is free; then any victim whose bytes turn
    out not to be needed (a small model taken before a large one that alone suffices) is put
    back, the most valuable first, so no victim is redundant. Returns ``[]`` when it already
    fits and ``None`` (state unchanged) when it cannot fit even after evicting every idle
    resident: the caller then fails the request at once rather than waiting for memory that
    cannot come.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown eviction policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if bytes_free >= bytes_needed:
        return [], state
    order = _order(residents, now, policy, state)
    chosen: list[Resident] = []
    freed = 0
    for resident in order:
        if bytes_free + freed >= bytes_needed:
            break
        chosen.append(resident)
        freed += resident.bytes
    if bytes_free + freed < bytes_needed:
        return None, state
    for resident in reversed(chosen[:-1]):  # the last one taken is needed by construction
        if bytes_free + freed - resident.bytes >= bytes_needed:
            chosen.remove(resident)
            freed -= resident.bytes
    victims = [r.key for r in chosen]
    if policy != "gdsf":
        return victims, state
    inflation = max([state.inflation, *(_priority(r, state) for r in chosen)])
    return victims, forget(PolicyState(inflation, state.priorities), victims)


def choose_victims(
    residents: Sequence[Resident],
    bytes_needed: int,
    bytes_free: int,
    now: float,
    policy: str = DEFAULT_POLICY,
    state: PolicyState | None = None,
) -> list[str] | None:
    """The keys to unload so ``bytes_needed`` fits; ``[]`` if it already does, ``None`` if it never can.

    The stateless face of :func:`plan_eviction`; with ``state=None`` GDSF runs without aging.
    """
    victims, _ = plan_eviction(
        residents, bytes_needed, bytes_free, now, state or PolicyState(), policy
    )
    return victims
