"""Documents for programs: JSON (one object per document or `stats --watch` line,
under the common keys) and the Prometheus text format."""

from __future__ import annotations

import json
import sys
import time

from xdpfwd.model import Iface, PortStats
from xdpfwd.model.counters import PairCounters, Rates, Snapshot, WatchFrame

# Every --json document (and every line of `stats --watch --json`) is one object:
# these keys first, then the command's. man/xdpfwd.8 (JSON OUTPUT) and
# docs/json-schema.json describe them; a unit test holds the output to the schema.
JSON_SCHEMA_VERSION = 1


_json_context = {"pin_dir": None, "netns": None}


def json_context(pin_dir: str, netns: str | None) -> None:
    """Where this command runs: the pin directory and the namespace (the CLI sets it)."""
    _json_context.update(pin_dir=pin_dir, netns=netns)


def json_document(payload: dict, taken: float | None = None) -> dict:
    """payload under the common keys; every port object also says its namespace."""
    head = {
        "schema_version": JSON_SCHEMA_VERSION,
        "time": taken if taken is not None else time.time(),
        **_json_context,
    }
    return {**head, **_with_netns(payload, _json_context["netns"])}


def _with_netns(data, netns: str | None):
    """A port is {ifname, ifindex} wherever it appears; it gains netns here, once."""
    if isinstance(data, dict):
        if set(data) == {"ifname", "ifindex"}:
            return {**data, "netns": netns}
        return {key: _with_netns(value, netns) for key, value in data.items()}
    if isinstance(data, list):
        return [_with_netns(item, netns) for item in data]
    return data


def print_json(payload: dict, taken: float | None = None) -> None:
    sys.stdout.write(json.dumps(json_document(payload, taken), indent=2) + "\n")


def _multicast_stats(snapshot: Snapshot, rates: Rates | None) -> list[dict]:
    rows = []
    for key, g in snapshot.multicast.items():
        rx = rates.mcast_in.get(key) if rates else None
        tx = rates.mcast_out.get(key) if rates else None
        rows.append(
            {
                **g.as_dict(),
                "in_pps": rx.pps if rx else None,
                "in_bps": rx.bps if rx else None,
                "copies_pps": tx.pps if tx else None,
                "copies_bps": tx.bps if tx else None,
            }
        )
    return rows


def stats_dict(
    snapshot: Snapshot,
    rates: Rates | None = None,
    losses: dict | None = None,
    watch_copies_lost: int | None = None,
) -> dict:
    """The stats as one JSON document's keys; the same every time (null when unknown).
    Counters count since they began; rates and watch_not_forwarded, over the watch."""

    def rate(table: dict, key, field: str):
        r = table.get(key) if rates else None
        return getattr(r, field) if r is not None else None

    ports = []
    for p in snapshot.ports.values():
        k = p.port.ifindex
        counters = p.counters.as_dict() if p.counters else dict.fromkeys(_PORT_COUNTER_KEYS)
        ports.append(
            {
                "port": p.port.as_dict(),
                **counters,
                "forwarded_packets": snapshot.forwarded(k),
                "multicast_packets": p.mcast_packets if p.counters else None,
                "not_forwarded": snapshot.port_losses(k),
                "flood_copies": p.flood_copies if p.counters and p.floods_counted else None,
                "flood_copies_lost": snapshot.copies_lost(k) if p.counters else None,
                "tx_packets": p.tx_packets,
                "tx_bytes": p.tx_bytes,
                "rx_pps": rate(rates.port_rx if rates else {}, k, "pps"),
                "rx_bps": rate(rates.port_rx if rates else {}, k, "bps"),
                "tx_pps": rate(rates.port_tx if rates else {}, k, "pps"),
                "tx_bps": rate(rates.port_tx if rates else {}, k, "bps"),
            }
        )
    pairs = []
    for p in snapshot.pairs.values():
        events = p.events
        pairs.append(
            {
                "ingress": p.ingress.as_dict(),
                "egress": p.egress.as_dict(),
                "group": p.group,
                "counted_by": p.counted_by,
                "tx_packets": p.tx_packets,
                "tx_bytes": p.tx_bytes,
                "egress_drop_packets": p.egress_drop_packets,
                "egress_invalid_packets": p.egress_invalid_packets,
                "xmit_drop_packets": events.xmit_drops if events else None,
                "redirect_error_packets": events.redirect_errors if events else None,
                "tx_pps": rate(rates.pair_tx if rates else {}, p.key, "pps"),
                "tx_bps": rate(rates.pair_tx if rates else {}, p.key, "bps"),
                "buckets": p.buckets,
            }
        )
    return {
        "tracing": snapshot.tracing,
        "interval_s": rates.seconds if rates else None,
        "ports": ports,
        "pairs": pairs,
        "multicast": _multicast_stats(snapshot, rates),
        "totals": snapshot.totals(),
        "not_forwarded": snapshot.losses(),
        "flood_copies_lost": snapshot.flood_copies_lost(),
        "watch_not_forwarded": losses,
        "watch_flood_copies_lost": watch_copies_lost,
    }


_PORT_COUNTER_KEYS = tuple(PortStats().as_dict())


_PROMETHEUS_PORT = (
    ("rx_packets", "Frames that entered the port, seen by xdpfwd's XDP program."),
    ("rx_bytes", "Bytes that entered the port."),
    ("redirect_packets", "Frames the port handed to bpf_redirect_map()."),
    ("redirect_bytes", "Bytes the port handed to bpf_redirect_map()."),
    ("miss_packets", "Frames that found no entry for the port."),
    ("miss_bytes", "Bytes of the frames that found no entry for the port."),
    ("pass_packets", "Frames passed to the host stack (on-miss pass)."),
    ("pass_bytes", "Bytes passed to the host stack (on-miss pass)."),
    ("drop_packets", "Frames dropped (on-miss drop)."),
    ("drop_bytes", "Bytes dropped (on-miss drop)."),
    ("too_big_packets", "Multi-buffer frames its broadcast group could not flood (dropped)."),
    ("too_big_bytes", "Bytes of the multi-buffer frames its group could not flood."),
    ("tx_packets", "Frames xdpfwd sent out of the port."),
    ("tx_bytes", "Bytes xdpfwd sent out of the port."),
)


_PROMETHEUS_PAIR = (
    ("tx_packets", "Frames forwarded from ingress to egress."),
    ("tx_bytes", "Bytes forwarded from ingress to egress."),
    ("egress_drop_packets", "Frames the egress program of the pair dropped."),
    (
        "egress_invalid_packets",
        "Frames a user egress program gave a verdict other than pass or drop (dropped).",
    ),
)


# From the tracepoint programs: written only while loss accounting is attached.
# (metric name, TxEvents field, help)
_PROMETHEUS_PAIR_EVENTS = (
    (
        "redirect_error_packets",
        "redirect_errors",
        "Frames whose redirect from ingress to egress failed.",
    ),
    (
        "xmit_drop_packets",
        "xmit_drops",
        "Frames the egress driver or egress program did not send.",
    ),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(snapshot: Snapshot) -> str:
    """The counters in the Prometheus text exposition format, and when they were read.

    A port is labelled both port (xdpfwd's word) and device (node_exporter's), so
    its series join node_network_* without relabelling."""
    metric = "xdpfwd_scrape_timestamp_seconds"
    lines = [
        f"# HELP {metric} When xdpfwd read these counters (Unix time): how fresh they are.",
        f"# TYPE {metric} gauge",
        f"{metric} {snapshot.wall:.3f}",
    ]
    for name, help_text in _PROMETHEUS_PORT:
        metric = f"xdpfwd_port_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for p in snapshot.ports.values():
            if name.startswith("tx_"):
                value = getattr(p, name)
            elif p.counters is None:
                continue  # runs no xdpfwd program: nothing known of what it received
            else:
                value = getattr(p.counters, name)
            ifname = _label(p.port.ifname or "")
            labels = f'port="{ifname}",device="{ifname}",ifindex="{p.port.ifindex}"'
            lines.append(f"{metric}{{{labels}}} {value}")
    for name, help_text in _PROMETHEUS_PAIR:
        metric = f"xdpfwd_pair_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for p in snapshot.pairs.values():
            lines.append(f"{metric}{{{_pair_labels(p)}}} {getattr(p, name)}")
    balanced = [p for p in snapshot.pairs.values() if p.buckets is not None]
    metric = "xdpfwd_balance_buckets"
    if balanced:
        lines += [
            f"# HELP {metric} Buckets of a balanced entry that send to egress (of 256).",
            f"# TYPE {metric} gauge",
        ]
    for p in balanced:
        labels = f"{_port_labels('ingress', p.ingress)},{_port_labels('egress', p.egress)}"
        lines.append(f"{metric}{{{labels}}} {p.buckets}")
    for name, attr, help_text in _PROMETHEUS_PAIR_EVENTS if snapshot.tracing else ():
        metric = f"xdpfwd_pair_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for p in snapshot.pairs.values():
            value = getattr(p.events, attr) if p.events else 0
            lines.append(f"{metric}{{{_pair_labels(p)}}} {value}")
    metric = "xdpfwd_port_not_forwarded_packets_total"
    lines += [
        f"# HELP {metric} Frames that entered the port and were not forwarded, by reason.",
        f"# TYPE {metric} counter",
    ]
    for k, p in snapshot.ports.items():
        if p.counters is None:
            continue
        for reason, value in snapshot.port_losses(k).items():
            if value is not None:
                ifname = _label(p.port.ifname or "")
                labels = f'port="{ifname}",device="{ifname}",ifindex="{k}",reason="{reason}"'
                lines.append(f"{metric}{{{labels}}} {value}")
    metric = "xdpfwd_port_flood_copies_lost_total"
    lines += [
        f"# HELP {metric} Copies of the port's broadcast floods that no member's driver got.",
        f"# TYPE {metric} counter",
    ]
    for k, p in snapshot.ports.items():
        lost = snapshot.copies_lost(k) if p.counters else None
        if lost is not None:
            ifname = _label(p.port.ifname or "")
            lines.append(f'{metric}{{port="{ifname}",device="{ifname}",ifindex="{k}"}} {lost}')
    total = snapshot.flood_copies_lost()
    if total is not None:
        metric = "xdpfwd_flood_copies_lost_total"
        lines += [
            f"# HELP {metric} Copies of broadcast floods that no member's driver got.",
            f"# TYPE {metric} counter",
            f"{metric} {total}",
        ]
    lines += _prometheus_multicast(snapshot)
    metric = "xdpfwd_not_forwarded_packets_total"
    lines += [f"# HELP {metric} Frames not forwarded, by reason.", f"# TYPE {metric} counter"]
    for reason, value in snapshot.losses().items():
        if value is not None:
            lines.append(f'{metric}{{reason="{reason}"}} {value}')
    return "\n".join(lines) + "\n"


def _port_labels(role: str, port: Iface) -> str:
    """A pair's port by name and ifindex: the name alone is "" for every gone device,
    which would give two series the same labels (refused by Prometheus)."""
    return f'{role}="{_label(port.ifname or "")}",{role}_ifindex="{port.ifindex}"'


def _pair_labels(pair: PairCounters) -> str:
    ports = f"{_port_labels('ingress', pair.ingress)},{_port_labels('egress', pair.egress)}"
    return f'{ports},group="{_label(pair.group or "")}"'


_PROMETHEUS_MCAST = (
    ("in_packets", "Frames copied to a multicast group's receivers."),
    ("in_bytes", "Bytes of the frames copied to a multicast group's receivers."),
    ("copies_lost", "Copies of a multicast group's frames that reached no receiver."),
)


def _prometheus_multicast(snapshot: Snapshot) -> list[str]:
    lines = []
    groups = snapshot.multicast
    for name, help_text in _PROMETHEUS_MCAST:
        metric = f"xdpfwd_multicast_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for key, g in groups.items():
            value = getattr(g, name)
            if value is not None:
                lines.append(f'{metric}{{group="{_label(key)}"}} {value}')
    for name, field, help_text in (
        ("copies", "copies", "Copies of a multicast group's frames sent to a receiver."),
        ("copy_bytes", "copy_bytes", "Bytes of the copies sent to a receiver."),
    ):
        metric = f"xdpfwd_multicast_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for key, g in groups.items():
            for r in g.receivers:
                value = getattr(r, field)
                if value is not None:
                    labels = f'group="{_label(key)}",{_port_labels("egress", r.port)}'
                    lines.append(f"{metric}{{{labels}}} {value}")
    return lines


def stats_text(snapshot: Snapshot | None, fmt: str) -> str:
    """One-shot stats as JSON or in the Prometheus text format; with nothing set up,
    an empty document that still says when it was read."""
    snapshot = snapshot or Snapshot(time.monotonic(), time.time(), {}, {})
    if fmt == "json":
        return json.dumps(json_document(stats_dict(snapshot), snapshot.wall), indent=2) + "\n"
    return prometheus(snapshot)


def watch_json_line(frame: WatchFrame) -> None:
    data = stats_dict(frame.snapshot, frame.rates, frame.losses, frame.flood_copies_lost)
    data = json_document(data, frame.snapshot.wall)
    sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
    sys.stdout.flush()
