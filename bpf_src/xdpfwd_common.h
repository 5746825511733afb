/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Names and layouts shared by the XDP programs and user space.
 * xdpfwd/bpf/maps.py mirrors every item here; a unit test keeps them in sync.
 */
#ifndef XDPFWD_COMMON_H
#define XDPFWD_COMMON_H

/* Pin names under the pin directory (--pin-dir). */
#define XDPFWD_PIN_FWD		"fwd"
#define XDPFWD_PIN_PORTS	"ports"
#define XDPFWD_PIN_PORT_STATS	"port_stats"
#define XDPFWD_PIN_PORT_STATS_HI	"port_stats_hi"
#define XDPFWD_PIN_PROG_INGRESS	"prog_ingress"

/* A DEVMAP is an array indexed by ifindex, so it bounds the ifindexes it can hold. */
#define XDPFWD_FWD_MAX_ENTRIES	65536
#define XDPFWD_MAX_PORTS	4096
/* Ports with an ifindex below this count in an array slot (an inlined lookup). */
#define XDPFWD_STATS_SLOTS	1024

struct xdpfwd_counter {
	__u64 packets;
	__u64 bytes;
};

/* Per ingress port and per CPU. Frames seen = redirect + pass + drop. */
struct xdpfwd_port_stats {
	struct xdpfwd_counter redirect;	/* handed to bpf_redirect_map() */
	struct xdpfwd_counter miss;	/* no entry for the port */
	struct xdpfwd_counter pass;	/* on-miss verdict XDP_PASS */
	struct xdpfwd_counter drop;	/* on-miss verdict XDP_DROP */
};

/* Settings of a port that runs the ingress program. */
struct xdpfwd_port {
	__u32 on_miss;			/* XDP_PASS or XDP_DROP */
};

/* The benchmark's programs (xdpfwd_bench.c) and maps, under their own pin dir. */
#define XDPFWD_PIN_BENCH_CFG	"bench_cfg"
#define XDPFWD_PIN_BENCH_SINK	"bench_sink"
#define XDPFWD_PIN_BENCH_FWD	"bench_fwd"
#define XDPFWD_BENCH_UDP_PORT	9	/* discard: the sink counts frames sent here */
#define XDPFWD_BENCH_SRC_PORT	1024	/* first UDP source port of the flows */

struct xdpfwd_bench_cfg {
	__u32 target_ifindex;		/* where the generator transmits */
	__u32 flows;			/* distinct UDP source ports, >= 1 */
};

#endif /* XDPFWD_COMMON_H */
