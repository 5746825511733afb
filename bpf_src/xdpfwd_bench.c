// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark programs: a traffic generator run with BPF_PROG_TEST_RUN and live
 * frames, a sink that counts and drops what arrives, and the baselines, the
 * strictest programs that do the same job as xdpfwd: a redirect through a one-slot
 * array devmap, broadcasts over array devmaps holding just the ports involved, and
 * a spread of flows over such a devmap by UDP source port.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
#include "xdpfwd_common.h"
#include "xdpfwd_bcc.h"

BPF_TABLE_PINNED("array", u32, struct xdpfwd_bench_cfg, bench_cfg, 1,
		 PIN(XDPFWD_PIN_BENCH_CFG));
/* Frames and bytes that reached a sink, per CPU. */
BPF_TABLE_PINNED("percpu_array", u32, struct xdpfwd_counter, bench_sink, 1,
		 PIN(XDPFWD_PIN_BENCH_SINK));
/* Baseline forwarding: slot 0 holds the egress ifindex. */
REDIRECT_MAP_PINNED(bench_fwd, u32, 1, PIN(XDPFWD_PIN_BENCH_FWD));
/* Baseline broadcasts: the ingress port and 2 (or 4) more, one per slot. */
REDIRECT_MAP_PINNED(bench_flood2, u32, 3, PIN(XDPFWD_PIN_BENCH_FLOOD "2"));
REDIRECT_MAP_PINNED(bench_flood4, u32, 5, PIN(XDPFWD_PIN_BENCH_FLOOD "4"));
/* Baseline spread (balanced rows): the ports it spreads over, one per slot. */
REDIRECT_MAP_PINNED(bench_spread, u32, XDPFWD_BENCH_SPREAD_MAX, PIN(XDPFWD_PIN_BENCH_SPREAD));
/* Per-CPU sequence numbers that spread the generator's frames over flows. */
BPF_PERCPU_ARRAY(bench_seq, u32, 1);

static __always_inline struct udphdr *udp_of(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = data + sizeof(*eth) + sizeof(*ip);

	if ((void *)(udp + 1) > data_end)
		return NULL;
	if (eth->h_proto != htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return NULL;
	return udp;
}

/*
 * Generator: transmits its (live, recycled) frame out of the configured device,
 * giving each frame the source port of the next flow. Verdict: XDP_REDIRECT.
 */
int xdpfwd_bench_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct xdpfwd_bench_cfg *cfg;
	struct udphdr *udp;
	u32 zero = 0, *seq;

	cfg = bench_cfg.lookup(&zero);
	if (!cfg)
		return XDP_ABORTED;
	if (cfg->flows > 1) {
		seq = bench_seq.lookup(&zero);
		udp = udp_of(data, data_end);
		if (seq && udp) {
			/* UDP checksum 0 (none, legal in IPv4), so the port may change. */
			udp->source = htons(XDPFWD_BENCH_SRC_PORT + *seq % cfg->flows);
			*seq += 1;
		}
	}
	return bpf_redirect(cfg->target_ifindex, 0);
}

/* Sink: counts and drops frames for the benchmark port; XDP_PASS for the rest. */
int xdpfwd_bench_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct udphdr *udp = udp_of(data, data_end);
	struct xdpfwd_counter *sink;
	u32 zero = 0;

	if (!udp || udp->dest != htons(XDPFWD_BENCH_UDP_PORT))
		return XDP_PASS;
	sink = bench_sink.lookup(&zero);
	if (sink) {
		sink->packets++;
		sink->bytes += XDPFWD_FRAME_LEN(ctx);
	}
	return XDP_DROP;
}

/* Baseline forwarder: bpf_redirect_map() and nothing else. Verdict: XDP_REDIRECT. */
int xdpfwd_bench_fwd(struct xdp_md *ctx)
{
	return bench_fwd.redirect_map(0, 0);
}

/* Baseline broadcasts: every port of the map but the ingress. Verdict: XDP_REDIRECT. */
int xdpfwd_bench_flood2(struct xdp_md *ctx)
{
	return bench_flood2.redirect_map(0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
}

int xdpfwd_bench_flood4(struct xdp_md *ctx)
{
	return bench_flood4.redirect_map(0, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
}

/*
 * Baseline of balanced rows: bpf_redirect_map() over the first cfg->spread slots of
 * an array devmap, chosen by the UDP source port (no hash at all).
 * Verdicts: XDP_REDIRECT, XDP_DROP for frames it cannot place.
 */
int xdpfwd_bench_spread(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct udphdr *udp = udp_of(data, data_end);
	struct xdpfwd_bench_cfg *cfg;
	u32 zero = 0;

	cfg = bench_cfg.lookup(&zero);
	if (!cfg || !udp || !cfg->spread)
		return XDP_DROP;
	return bench_spread.redirect_map(ntohs(udp->source) % cfg->spread, 0);
}
