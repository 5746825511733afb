"""Which egress port each bucket of a balanced entry goes to. Pure: ports are named,
and every decision is a function of its arguments, so any process (a restarted
`follow`, another ingress port's entry) reaches the same one.

An entry's layout is its buckets' ports when all are up: every port gets its
weight's share (largest remainder, to one bucket). A fresh layout depends only on
the ports and weights, so two entries over the same ports agree bucket by bucket
and a flow's two directions, entering different ports, reach the same egress. A
changed entry moves as few buckets as possible from its old layout. While ports are
down, the buckets of those ports go to the live ones (by weight, again to one
bucket) and every other bucket stays; when they are back, their buckets return.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping

from xdpfwd.kernel.bpf.maps import BUCKETS

Layout = tuple[str | None, ...]  # a port name per bucket (None: no port)


def quotas(weights: Mapping[str, int], total: int = BUCKETS) -> dict[str, int]:
    """Buckets per port in proportion to its weight: largest remainder, ties to the
    port named first."""
    whole = sum(weights.values())
    shares = {port: total * w // whole for port, w in weights.items()}
    left = total - sum(shares.values())
    by_remainder = sorted(weights, key=lambda p: (-(total * weights[p] % whole), p))
    for port in by_remainder[:left]:
        shares[port] += 1
    return shares


def _rank(bucket: int, port: str) -> int:
    """How much port wants bucket (a fixed pseudo-random order, rendezvous style)."""
    digest = hashlib.blake2b(f"{bucket}/{port}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _fill(layout: list[str | None], limits: Mapping[str, int], free: Iterable[int]) -> None:
    """Give each free bucket to the port that ranks it highest among those below
    their limit."""
    count = Counter(port for port in layout if port in limits)
    for bucket in free:
        open_ = [port for port in limits if count[port] < limits[port]]
        port = max(open_, key=lambda p: (_rank(bucket, p), p))
        layout[bucket] = port
        count[port] += 1


def fresh(weights: Mapping[str, int]) -> Layout:
    """A layout of these ports that depends on nothing else."""
    layout: list[str | None] = [None] * BUCKETS
    _fill(layout, quotas(weights), range(BUCKETS))
    return tuple(layout)


def rehome(old: Layout | None, weights: Mapping[str, int]) -> Layout:
    """The layout for weights that moves the fewest buckets away from old: a port
    keeps its buckets up to its new share (giving up the ones it ranks lowest),
    buckets of ports that left go to ports below their share."""
    if old is None:
        return fresh(weights)
    shares = quotas(weights)
    layout = [port if port in shares else None for port in old]
    for port, share in shares.items():
        mine = [b for b, owner in enumerate(layout) if owner == port]
        excess = max(0, len(mine) - share)
        for bucket in sorted(mine, key=lambda b: (_rank(b, port), b))[:excess]:
            layout[bucket] = None
    _fill(layout, shares, [b for b, owner in enumerate(layout) if owner is None])
    return tuple(layout)


def choose(
    wanted: Mapping[str, Mapping[str, int]],
    recorded: Mapping[str, tuple[Mapping[str, int], Layout]],
) -> dict[str, Layout]:
    """Layouts for the balanced entries wanted (ingress -> weights of its ports),
    given the ones recorded (ingress -> (weights, layout)).

    An entry whose ports and weights did not change keeps its layout. Otherwise it
    takes the layout of another entry with the same ports and weights, so that the
    two keep agreeing; failing that, it moves as few buckets as possible from its
    own old layout.
    """
    chosen: dict[str, Layout] = {}
    for ingress, weights in wanted.items():
        old = recorded.get(ingress)
        if old is not None and dict(old[0]) == dict(weights):
            chosen[ingress] = old[1]
    for ingress, weights in wanted.items():
        if ingress in chosen:
            continue
        same = (layout for i, layout in chosen.items() if dict(wanted[i]) == dict(weights))
        old = recorded.get(ingress)
        chosen[ingress] = next(same, None) or rehome(old[1] if old else None, weights)
    return chosen


def live(layout: Layout, weights: Mapping[str, int], up: set[str]) -> Layout:
    """Where the buckets go while only the ports in up can send: each live port
    keeps its own buckets, the buckets of the others go to live ports below their
    share of the whole. No live port: no bucket has a port."""
    alive = {port: w for port, w in weights.items() if port in up}
    if not alive:
        return (None,) * len(layout)
    current = [port if port in alive else None for port in layout]
    free = [b for b, port in enumerate(current) if port is None]
    if free:
        count = Counter(current)
        shares = quotas(alive, len(layout))
        _fill(current, {p: max(shares[p], count[p]) for p in alive}, free)
    return tuple(current)


def counts(layout: Iterable[str | None]) -> Counter:
    return Counter(port for port in layout if port is not None)


def moves(before: Layout, after: Layout) -> Counter:
    """How many buckets go from one port to another: (from, to) -> buckets."""
    return Counter((old, new) for old, new in zip(before, after, strict=True) if old != new)


def describe_moves(before: Layout, after: Layout, why: Mapping[str, str]) -> str:
    """`85 buckets from p3 (down) to p2 (43), p4 (42)`: one clause per port that
    gives buckets up; why says what happened to a port (down, gone...)."""
    by_source: dict[str | None, Counter] = {}
    for (old, new), n in sorted(moves(before, after).items(), key=str):
        by_source.setdefault(old, Counter())[new] += n
    clauses = []
    for source, targets in by_source.items():
        total = sum(targets.values())
        name = source or "no port"
        if source in why:
            name += f" ({why[source]})"
        to = ", ".join(f"{t or 'no port'} ({n})" for t, n in sorted(targets.items(), key=str))
        clauses.append(f"{total} bucket{'s' if total != 1 else ''} from {name} to {to}")
    return "; ".join(clauses)


# Layouts are kept in the recorded configuration as one character per bucket: the
# index of its port in the entry's list of ports ("-": none).
_DIGITS = "0123456789abcdefghijklmnopqrstuv"
MAX_PORTS = len(_DIGITS)


def encode(layout: Layout, ports: tuple[str, ...]) -> str:
    index = {port: _DIGITS[i] for i, port in enumerate(ports)}
    return "".join(index.get(port, "-") if port else "-" for port in layout)


def decode(text: str, ports: tuple[str, ...]) -> Layout | None:
    """The layout text stands for, or None when it does not fit these ports."""
    if len(text) != BUCKETS:
        return None
    try:
        return tuple(None if c == "-" else ports[_DIGITS.index(c)] for c in text)
    except (ValueError, IndexError):
        return None


MAX_WEIGHT = 255


def problem(ingress: str, ports: tuple[str, ...], weights: tuple[int, ...]) -> str | None:
    """Why these ports and weights cannot make a balanced entry of ingress, if so."""
    if len(ports) < 2:
        return "a balanced entry needs two or more egress ports"
    if len(ports) > MAX_PORTS:
        return f"a balanced entry has at most {MAX_PORTS} egress ports"
    if len(set(ports)) != len(ports):
        return "an egress port is listed twice"
    if ingress in ports:
        return f"{ingress} is its own egress port"
    if len(weights) != len(ports):
        return f"{len(weights)} weights for {len(ports)} egress ports"
    if any(not 1 <= w <= MAX_WEIGHT for w in weights):
        return f"weights are whole numbers from 1 to {MAX_WEIGHT}"
    starved = [p for p, n in quotas(dict(zip(ports, weights, strict=True))).items() if n == 0]
    if starved:
        return f"{', '.join(starved)} would get no bucket of {BUCKETS}: weights too uneven"
    return None
