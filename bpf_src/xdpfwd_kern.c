// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdpfwd ingress program, compiled at run time by BCC with
 * -DXDPFWD_PIN_DIR="<pin dir>". Every map lives in bpffs under the pin dir, so
 * later xdpfwd processes reach the same state without compiling again.
 */
#include <uapi/linux/bpf.h>
#include "xdpfwd_common.h"

#define PIN(name) XDPFWD_PIN_DIR "/" name

/*
 * BCC's BPF_XDP_REDIRECT_MAP() in a pinned section: BCC adopts the map pinned
 * at _pin, or creates and pins a DEVMAP there. The section type only gives the C
 * side .redirect_map(), so the pinned map may also be the DEVMAP_HASH that
 * xdpfwd creates itself (BCC cannot create that type).
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

/* Forwarding table: key = ingress ifindex, value = egress ifindex (+ egress prog). */
REDIRECT_MAP_PINNED(xdpfwd_fwd, struct bpf_devmap_val, XDPFWD_FWD_MAX_ENTRIES,
		    PIN(XDPFWD_PIN_FWD));

/* Ports running this program: key = ifindex, value = struct xdpfwd_port. */
BPF_TABLE_PINNED("hash", u32, struct xdpfwd_port, xdpfwd_ports,
		 XDPFWD_MAX_PORTS, PIN(XDPFWD_PIN_PORTS));

/* Counters: key = ingress ifindex, value = struct xdpfwd_port_stats per CPU. */
BPF_TABLE_PINNED("percpu_hash", u32, struct xdpfwd_port_stats, xdpfwd_port_stats,
		 XDPFWD_MAX_PORTS, PIN(XDPFWD_PIN_PORT_STATS));

static __always_inline void count(struct xdpfwd_counter *c, u64 bytes)
{
	c->packets++;
	c->bytes += bytes;
}

/*
 * Verdicts: XDP_REDIRECT when the ingress port has an entry; otherwise the
 * port's on-miss verdict (XDP_PASS or XDP_DROP; XDP_PASS for an unknown port).
 */
int xdpfwd_ingress(struct xdp_md *ctx)
{
	u32 ifindex = ctx->ingress_ifindex;
	u64 bytes = ctx->data_end - ctx->data;
	struct xdpfwd_port_stats *stats = xdpfwd_port_stats.lookup(&ifindex);
	struct xdpfwd_port *port;
	long verdict;

	/* The low bits of the flags are the verdict on a miss: XDP_ABORTED flags it. */
	verdict = xdpfwd_fwd.redirect_map(ifindex, XDP_ABORTED);
	if (verdict == XDP_REDIRECT) {
		if (stats)
			count(&stats->redirect, bytes);
		return XDP_REDIRECT;
	}

	/* The settings are looked up only on a miss, off the forwarding fast path. */
	port = xdpfwd_ports.lookup(&ifindex);
	verdict = port && port->on_miss == XDP_DROP ? XDP_DROP : XDP_PASS;
	if (stats) {
		count(&stats->miss, bytes);
		count(verdict == XDP_DROP ? &stats->drop : &stats->pass, bytes);
	}
	return verdict;
}
