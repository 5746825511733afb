"""Hypothesis strategies shared by the unit and integration fuzz tests."""

from hypothesis import strategies as st

KEYS = [
    "version",
    "table",
    "value",
    "ports",
    "forward",
    "groups",
    "multicast",
    "group",
    "from",
    "to",
    "egress",
    "mode",
    "on_miss",
    "src_mac",
    "dst_mac",
    "program",
    "function",
    "name",
    "members",
    "exclude_ingress",
    "eth1",
    "eth2",
    "bogus",
]
SCALARS = st.one_of(
    st.sampled_from(
        [
            "1",
            1,
            2,
            "eth1",
            "eth2",
            "eth3",
            "devmap",
            "devmap-hash",
            "ifindex",
            "devmap-val",
            "native",
            "turbo",
            "drop",
            "built-in",
            "none",
            "egress",
            "02:00:00:00:00:01",
            "02:00",
            "239.1.1.1",
            "ff3e::1:1",
            "01:00:5e:00:00:fb",
            True,
            None,
            "",
            "g",
            "G!",
            "no.c",
        ]
    ),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=25,
)
# Mostly wrong configuration files: the top level's keys with any values below.
CONFIG_DOCS = st.dictionaries(st.sampled_from(KEYS), DOCS, max_size=6)
