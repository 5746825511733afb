// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdpfwd ingress program, compiled at run time by BCC. Its maps are pinned
 * under the pin dir, so later xdpfwd processes reach the same state without
 * compiling again.
 */
#include <uapi/linux/bpf.h>
#include "xdpfwd_common.h"
#include "xdpfwd_bcc.h"

/* Forwarding table: key = ingress ifindex, value = egress ifindex (+ egress prog). */
REDIRECT_MAP_PINNED(xdpfwd_fwd, struct bpf_devmap_val, XDPFWD_FWD_MAX_ENTRIES,
		    PIN(XDPFWD_PIN_FWD));

/* Ports running this program: key = ifindex, value = struct xdpfwd_port. */
BPF_TABLE_PINNED("hash", u32, struct xdpfwd_port, xdpfwd_ports,
		 XDPFWD_MAX_PORTS, PIN(XDPFWD_PIN_PORTS));

/*
 * Counters per ingress port and CPU, struct xdpfwd_port_stats. An array indexed
 * by ifindex for ifindexes below XDPFWD_STATS_SLOTS: the kernel inlines its
 * lookup, where a hash lookup costs several percent of the forwarding rate. A
 * hash keyed by ifindex for the rest.
 */
BPF_TABLE_PINNED("percpu_array", u32, struct xdpfwd_port_stats, xdpfwd_port_stats,
		 XDPFWD_STATS_SLOTS, PIN(XDPFWD_PIN_PORT_STATS));
BPF_TABLE_PINNED("percpu_hash", u32, struct xdpfwd_port_stats, xdpfwd_port_stats_hi,
		 XDPFWD_MAX_PORTS, PIN(XDPFWD_PIN_PORT_STATS_HI));

static __always_inline struct xdpfwd_port_stats *port_stats(u32 ifindex)
{
	struct xdpfwd_port_stats *stats;

	if (ifindex < XDPFWD_STATS_SLOTS) {
		stats = xdpfwd_port_stats.lookup(&ifindex);
		/*
		 * Keeps clang from merging the two lookups into one call on a map chosen
		 * at run time: the verifier inlines only a lookup of a known map.
		 */
		asm volatile("" ::: "memory");
		return stats;
	}
	return xdpfwd_port_stats_hi.lookup(&ifindex);
}

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
	struct xdpfwd_port_stats *stats = port_stats(ifindex);
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
