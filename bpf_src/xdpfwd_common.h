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
#define XDPFWD_PIN_PROG_INGRESS	"prog_ingress"

/* A DEVMAP is an array indexed by ifindex, so it bounds the ifindexes it can hold. */
#define XDPFWD_FWD_MAX_ENTRIES	65536
#define XDPFWD_MAX_PORTS	4096

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

#endif /* XDPFWD_COMMON_H */
