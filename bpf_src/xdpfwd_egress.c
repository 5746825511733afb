// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Built-in egress programs (attach type BPF_XDP_DEVMAP): the kernel runs the one
 * of an entry after the redirect, just before the frame is queued on the egress
 * device, with ctx->ingress_ifindex and ctx->egress_ifindex set.
 */
#include <uapi/linux/if_ether.h>

/*
 * Per (ingress, egress) pair and per CPU: the ports of balanced entries, counted by
 * xdpfwd_egress_group, and the copies of broadcasts (xdpfwd_trace.c).
 */
BPF_TABLE_PINNED("percpu_hash", struct xdpfwd_pair, struct xdpfwd_egress_stats, xdpfwd_pair_stats,
		 XDPFWD_MAX_PAIRS, PIN(XDPFWD_PIN_PAIR_STATS));

/* Rewrites of entries made with --src-mac/--dst-mac: key = struct xdpfwd_pair. */
BPF_TABLE_PINNED("hash", struct xdpfwd_pair, struct xdpfwd_rewrite, xdpfwd_rewrite,
		 XDPFWD_MAX_PAIRS, PIN(XDPFWD_PIN_REWRITE));

/* The default egress program: counts the entry's frames. Verdict: XDP_PASS. */
int xdpfwd_egress(struct xdp_md *ctx)
{
	count_egress(ctx, XDP_PASS);
	return XDP_PASS;
}

/*
 * Egress program of entries with an Ethernet rewrite: sets the addresses from
 * the pair's xdpfwd_rewrite, then counts. The header is in the first buffer of a
 * multi-buffer frame, the only one it touches. Verdict: XDP_PASS.
 */
int xdpfwd_egress_rewrite(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct xdpfwd_pair pair = { ctx->ingress_ifindex, ctx->egress_ifindex };
	struct ethhdr *eth = data;
	struct xdpfwd_rewrite *rw;

	rw = xdpfwd_rewrite.lookup(&pair);
	if (rw && (void *)(eth + 1) <= data_end) {
		if (rw->flags & XDPFWD_REWRITE_SRC)
			__builtin_memcpy(eth->h_source, rw->src, ETH_ALEN);
		if (rw->flags & XDPFWD_REWRITE_DST)
			__builtin_memcpy(eth->h_dest, rw->dst, ETH_ALEN);
	}
	count_egress(ctx, XDP_PASS);
	return XDP_PASS;
}

/*
 * Egress program of the buckets of balanced entries (and, in pin dirs made before
 * the tracepoint counted copies, of broadcast group members): counts each frame on
 * its (ingress, egress) pair. Verdict: XDP_PASS.
 */
int xdpfwd_egress_group(struct xdp_md *ctx)
{
	struct xdpfwd_pair pair = { ctx->ingress_ifindex, ctx->egress_ifindex };
	struct xdpfwd_egress_stats zero = {}, *stats;

	/* Pairs appear as groups change: the first frame of a pair creates its row. */
	stats = xdpfwd_pair_stats.lookup_or_try_init(&pair, &zero);
	if (stats)
		count(&stats->tx, XDPFWD_FRAME_LEN(ctx));
	return XDP_PASS;
}
