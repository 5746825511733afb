/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * BCC helpers shared by xdpfwd's programs. Compile with -DXDPFWD_PIN_DIR="<dir>":
 * every map lives in bpffs under that directory.
 */
#ifndef XDPFWD_BCC_H
#define XDPFWD_BCC_H

#define PIN(name) XDPFWD_PIN_DIR "/" name

/*
 * BCC's BPF_XDP_REDIRECT_MAP() in a pinned section: BCC adopts the map pinned
 * at _pin, or creates and pins a DEVMAP there. The section type only gives the C
 * side .redirect_map(), so the pinned map may also be a DEVMAP_HASH that
 * xdpfwd created itself (BCC cannot create that type).
 */
#define REDIRECT_MAP_PINNED(_name, _leaf_type, _max_entries, _pin)	\
	struct _name##_table_t {					\
		u32 key;						\
		_leaf_type leaf;					\
		u64 (*redirect_map)(int, int);				\
		u32 max_entries;					\
	};								\
	__attribute__((section("maps/devmap:" _pin)))			\
	struct _name##_table_t _name = { .max_entries = (_max_entries) }

#endif /* XDPFWD_BCC_H */
