"""Offsets of kernel struct members, enumerator values and type ids, read from the
running kernel's BTF.

Tracepoint programs get the kernel's own pointers (a struct net_device *) and
must read fields at the running kernel's offsets; BCC compiles against whatever
headers are installed, which may be another version's, so the offsets come from
/sys/kernel/btf/vmlinux and reach the C as -D defines. Type ids name what a
tracing program attaches to and the kfuncs a program calls.
"""

from __future__ import annotations

import struct
from functools import lru_cache

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
_MAGIC = 0xEB9F
# enum btf_kind values xdpfwd follows, and the bytes each kind has after the
# 12-byte struct btf_type: (fixed, per vlen item).
KIND_STRUCT, KIND_UNION, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 4, 5, 8, 9, 10, 11
KIND_FUNC, KIND_TYPE_TAG = 12, 18
KIND_ENUM, KIND_ENUM64 = 6, 19
_EXTRA = {
    1: (4, 0),  # INT
    3: (12, 0),  # ARRAY
    4: (0, 12),  # STRUCT
    5: (0, 12),  # UNION
    6: (0, 8),  # ENUM
    13: (0, 8),  # FUNC_PROTO
    14: (4, 0),  # VAR
    15: (0, 12),  # DATASEC
    17: (4, 0),  # DECL_TAG
    19: (0, 12),  # ENUM64
}
_QUALIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}


class BtfError(Exception):
    """The BTF is missing or unreadable, or lacks what was asked for."""


class Btf:
    """The types of one BTF blob (type ids start at 1)."""

    def __init__(self, data: bytes):
        if len(data) < 24:
            raise BtfError("too short to be BTF")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != _MAGIC:
            raise BtfError("not little-endian BTF")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._types = data[hdr_len + type_off : hdr_len + type_off + type_len]
        self._strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self._at = [0]  # position of each type id in _types (id 0 is void)
        self._structs: dict[str, int] = {}
        self._typedefs: dict[str, int] = {}
        self._funcs: dict[str, int] = {}
        self._enums: list[int] = []
        pos = 0
        while pos < len(self._types):
            name_off, info, _ = struct.unpack_from("<III", self._types, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            if kind in (KIND_STRUCT, KIND_UNION) and name_off:
                self._structs.setdefault(self._name(name_off), len(self._at))
            elif kind == KIND_TYPEDEF:
                self._typedefs.setdefault(self._name(name_off), len(self._at))
            elif kind == KIND_FUNC:
                self._funcs.setdefault(self._name(name_off), len(self._at))
            elif kind in (KIND_ENUM, KIND_ENUM64):
                self._enums.append(len(self._at))
            self._at.append(pos)
            fixed, per = _EXTRA.get(kind, (0, 0))
            pos += 12 + fixed + per * vlen

    def _name(self, off: int) -> str:
        return self._strings[off : self._strings.index(b"\0", off)].decode()

    def _type(self, type_id: int) -> tuple[int, int, int, int]:
        """(kind, vlen, kflag, position of the type's first member)."""
        name_off, info, _ = struct.unpack_from("<III", self._types, self._at[type_id])
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, self._at[type_id] + 12

    def _resolved(self, type_id: int) -> int:
        """type_id with typedefs and qualifiers peeled off."""
        while self._type(type_id)[0] in _QUALIFIERS:
            (type_id,) = struct.unpack_from("<I", self._types, self._at[type_id] + 8)
        return type_id

    def _member(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(byte offset, type id) of member name, looking inside anonymous members."""
        kind, vlen, kflag, first = self._type(type_id)
        if kind not in (KIND_STRUCT, KIND_UNION):
            return None
        for i in range(vlen):
            m_name, m_type, m_off = struct.unpack_from("<III", self._types, first + 12 * i)
            bits = m_off & 0xFFFFFF if kflag else m_off
            if m_name and self._name(m_name) == name:
                if bits % 8:
                    raise BtfError(f"member {name} is a bitfield")
                return bits // 8, m_type
            if not m_name:
                inner = self._member(self._resolved(m_type), name)
                if inner is not None:
                    return bits // 8 + inner[0], inner[1]
        return None

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of struct_name's member path ("ns.inum": a member of a member).

        Raises BtfError when the struct or a member is missing.
        """
        type_id = self._structs.get(struct_name)
        if type_id is None:
            raise BtfError(f"no struct {struct_name}")
        total = 0
        for name in path.split("."):
            found = self._member(self._resolved(type_id), name)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            total += found[0]
            type_id = found[1]
        return total

    def typedef_id(self, name: str) -> int:
        """The type id of typedef name; raises BtfError when there is none."""
        try:
            return self._typedefs[name]
        except KeyError:
            raise BtfError(f"no typedef {name}") from None

    def func_id(self, name: str) -> int:
        """The type id of function name (a kfunc's, for a call); BtfError when there is none."""
        try:
            return self._funcs[name]
        except KeyError:
            raise BtfError(f"no function {name}") from None

    def enumerator(self, name: str) -> int:
        """The value of enumerator name; raises BtfError when no enum has it."""
        for type_id in self._enums:
            kind, vlen, _, first = self._type(type_id)
            size = 12 if kind == KIND_ENUM64 else 8
            for i in range(vlen):
                (e_name,) = struct.unpack_from("<I", self._types, first + size * i)
                if self._name(e_name) == name:
                    if kind == KIND_ENUM64:
                        low, high = struct.unpack_from("<II", self._types, first + size * i + 4)
                        return high << 32 | low
                    return struct.unpack_from("<i", self._types, first + size * i + 4)[0]
        raise BtfError(f"no enumerator {name}")


@lru_cache(maxsize=1)
def vmlinux() -> Btf:
    """The running kernel's BTF; raises BtfError when it has none (CONFIG_DEBUG_INFO_BTF)."""
    try:
        with open(VMLINUX_BTF, "rb") as f:
            return Btf(f.read())
    except OSError as e:
        raise BtfError(f"cannot read {VMLINUX_BTF}: {e.strerror}") from e
