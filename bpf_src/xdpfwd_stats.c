// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Counters, shared by the ingress program, the built-in egress programs and the
 * wrappers of user egress programs: concatenated before them (see bpf/source.py).
 */

/* Per ingress port: struct xdpfwd_port_stats, counted by the ingress program. */
SLOTTED_STATS(xdpfwd_port_stats, struct xdpfwd_port_stats, XDPFWD_PIN_PORT_STATS);
#if XDPFWD_FWD_VALUE_SIZE == 8
/* Per forwarding entry, keyed by its ingress ifindex: counted by its egress program. */
SLOTTED_STATS(xdpfwd_entry_stats, struct xdpfwd_egress_stats, XDPFWD_PIN_ENTRY_STATS);
#endif

/*
 * Each lookup keeps its own call site (the asm statement stops clang merging the
 * two into one call on a map chosen at run time): the verifier inlines only a
 * lookup of a known array map, and a hash lookup costs several percent of the
 * forwarding rate.
 */
static __always_inline struct xdpfwd_port_stats *port_stats(u32 ifindex)
{
	struct xdpfwd_port_stats *stats;

	if (ifindex < XDPFWD_STATS_SLOTS) {
		stats = xdpfwd_port_stats.lookup(&ifindex);
		asm volatile("" ::: "memory");
		return stats;
	}
	return xdpfwd_port_stats_hi.lookup(&ifindex);
}

#if XDPFWD_FWD_VALUE_SIZE == 8
static __always_inline struct xdpfwd_egress_stats *entry_stats(u32 ifindex)
{
	struct xdpfwd_egress_stats *stats;

	if (ifindex < XDPFWD_STATS_SLOTS) {
		stats = xdpfwd_entry_stats.lookup(&ifindex);
		asm volatile("" ::: "memory");
		return stats;
	}
	return xdpfwd_entry_stats_hi.lookup(&ifindex);
}

/* In an egress program: counts the frame on its entry after the verdict. */
static __always_inline void count_egress(struct xdp_md *ctx, int verdict)
{
	struct xdpfwd_egress_stats *stats = entry_stats(ctx->ingress_ifindex);

	if (stats)
		count(verdict == XDP_PASS ? &stats->tx : &stats->drop, XDPFWD_FRAME_LEN(ctx));
}
#endif
