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
#define XDPFWD_PIN_ENTRY_STATS	"entry_stats"
#define XDPFWD_PIN_PROG_INGRESS	"prog_ingress"
#define XDPFWD_PIN_PROG_EGRESS	"prog_egress"
#define XDPFWD_PIN_PROG_REWRITE	"prog_egress_rewrite"
#define XDPFWD_PIN_PROG_GROUP	"prog_egress_group"
#define XDPFWD_PIN_GROUPS	"groups"	/* port ifindex -> its group's devmap */
/* The same for ifindexes below XDPFWD_STATS_SLOTS, in array slots (xdpfwd_ports.c). */
#define XDPFWD_PIN_PORT_SLOTS	"port_slots"
#define XDPFWD_PIN_GROUP_SLOTS	"group_slots"
#define XDPFWD_PIN_FWD_SLOTS	"fwd_slots"
#define XDPFWD_PIN_GROUP_DIR	"group"		/* group/<name>: one devmap per group */
#define XDPFWD_PIN_PAIR_STATS	"pair_stats"
#define XDPFWD_PIN_TX_EVENTS	"tx_events"	/* from the tracepoint programs */
#define XDPFWD_PIN_REWRITE	"rewrite"
#define XDPFWD_PIN_ENTRY_INVALID	"entry_invalid"	/* user egress programs' bad verdicts */

/* A DEVMAP is an array indexed by ifindex, so it bounds the ifindexes it can hold. */
#define XDPFWD_FWD_MAX_ENTRIES	65536
#define XDPFWD_MAX_PORTS	4096
/*
 * Counters keyed by an ifindex sit in a per-CPU array slot for ifindexes below
 * this (a lookup the verifier inlines) and in a per-CPU hash for the rest, pinned
 * with the suffix below.
 */
#define XDPFWD_STATS_SLOTS	1024
#define XDPFWD_PIN_HI_SUFFIX	"_hi"
#define XDPFWD_MAX_PAIRS	16384
/*
 * Members of a broadcast group, at most. A broadcast walks every slot of a DEVMAP
 * (every bucket of a DEVMAP_HASH) for each frame, so a group's devmap is sized to
 * its members: xdpfwd swaps in another as they change.
 */
#define XDPFWD_GROUP_MAX_MEMBERS	64

struct xdpfwd_counter {
	__u64 packets;
	__u64 bytes;
};

/*
 * Per ingress port and per CPU. Frames seen = redirect + pass + drop + too_big.
 * Fields are only ever added at the end: pin dirs made before keep a shorter value.
 */
struct xdpfwd_port_stats {
	struct xdpfwd_counter redirect;	/* handed to bpf_redirect_map() */
	struct xdpfwd_counter miss;	/* no entry for the port */
	struct xdpfwd_counter pass;	/* on-miss verdict XDP_PASS */
	struct xdpfwd_counter drop;	/* on-miss verdict XDP_DROP */
	struct xdpfwd_counter too_big;	/* multi-buffer frames a group cannot flood: dropped */
	__u64 flood_copies;		/* copies its floods should have made (members reached) */
};

/* An (ingress, egress) pair of ports, as a devmap egress program sees it. */
struct xdpfwd_pair {
	__u32 ingress;
	__u32 egress;
};

/*
 * Per CPU, what an egress program did with the frames, after its verdict: per
 * forwarding entry (keyed by its ingress ifindex, which fixes its egress), or per
 * (ingress, egress) pair of a broadcast group.
 */
struct xdpfwd_egress_stats {
	struct xdpfwd_counter tx;	/* let through (XDP_PASS) */
	struct xdpfwd_counter drop;	/* dropped by the egress program */
};

/*
 * What the XDP tracepoints said about a pair (egress 0 for an exception, or for a
 * failed redirect whose target the tracepoint does not name).
 */
struct xdpfwd_tx_events {
	__u64 xmit_sent;		/* unused: counting every bulk costs too much */
	__u64 xmit_drops;		/* ... not sent: dropped by the driver or an egress program */
	__u64 redirect_errors;		/* xdp_redirect_err: the redirect itself failed */
	__u64 exceptions;		/* xdp_exception: XDP_ABORTED or an invalid verdict */
};

/* Ethernet rewrite of one entry (xdpfwd_egress_rewrite). */
#define XDPFWD_REWRITE_SRC	1
#define XDPFWD_REWRITE_DST	2
struct xdpfwd_rewrite {
	__u8 src[6];
	__u8 dst[6];
	__u32 flags;			/* XDPFWD_REWRITE_* */
};

/* Settings of a port that runs the ingress program. */
#define XDPFWD_PORT_BROADCAST		1	/* member of a group: flood */
#define XDPFWD_PORT_EXCLUDE_INGRESS	2	/* ... but not back out of this port */
/*
 * A member's flags above this shift: its group's members, so that the program counts
 * the copies each flood should make (one less with XDPFWD_PORT_EXCLUDE_INGRESS). The
 * kernel skips a member that is down, gone or of too small an MTU without a word:
 * the copies counted less those the transmit tracepoint saw are those. 0 for a port
 * in generic mode, whose copies no tracepoint sees: nothing is counted.
 */
#define XDPFWD_PORT_MEMBERS_SHIFT	8
struct xdpfwd_port {
	__u32 on_miss;			/* XDP_PASS or XDP_DROP */
	__u32 flags;			/* XDPFWD_PORT_*, and the group's members */
};

/*
 * Balanced entries: the frames entering a port are spread over several egress
 * ports. A hash of the frame's addresses picks one of XDPFWD_BUCKETS buckets, and
 * the bucket table maps (ingress port, bucket) to an egress port in one devmap
 * lookup. 256 buckets give every port a share to within 1/256 (0.4 %) of its
 * weight, also while the buckets of a port that is down are spread over the others;
 * the key packs the ingress ifindex (below 2^24) with the bucket.
 */
#define XDPFWD_PIN_BALANCE	"balance"	/* ingress ifindex -> struct xdpfwd_balance */
#define XDPFWD_PIN_BUCKETS	"buckets"	/* ifindex << BUCKET_BITS | bucket -> egress */
#define XDPFWD_BUCKET_BITS	8
#define XDPFWD_BUCKETS		(1 << XDPFWD_BUCKET_BITS)
#define XDPFWD_BUCKETS_MAX_ENTRIES	65536	/* 256 balanced entries */
/* What the hash covers (struct xdpfwd_balance.hash; 0: the port is not balanced). */
#define XDPFWD_HASH_SYMMETRIC	1	/* addresses and ports, the same both ways */
#define XDPFWD_HASH_L4		2	/* addresses and ports, as they come */
#define XDPFWD_HASH_L3		3	/* addresses only */
#define XDPFWD_HASH_L2		4	/* MAC addresses only */
struct xdpfwd_balance {
	__u32 hash;			/* XDPFWD_HASH_* */
	__u32 flags;			/* none yet */
};

/* The benchmark's programs (xdpfwd_bench.c) and maps, under their own pin dir. */
#define XDPFWD_PIN_BENCH_CFG	"bench_cfg"
#define XDPFWD_PIN_BENCH_SINK	"bench_sink"
#define XDPFWD_PIN_BENCH_FWD	"bench_fwd"
#define XDPFWD_PIN_BENCH_FLOOD	"bench_flood"
#define XDPFWD_PIN_BENCH_SPREAD	"bench_spread"
#define XDPFWD_BENCH_SPREAD_MAX	4	/* ports the spread baseline can hold */
#define XDPFWD_BENCH_UDP_PORT	9	/* discard: the sink counts frames sent here */
#define XDPFWD_BENCH_SRC_PORT	1024	/* first UDP source port of the flows */

struct xdpfwd_bench_cfg {
	__u32 target_ifindex;		/* where the generator transmits */
	__u32 flows;			/* distinct UDP source ports, >= 1 */
	__u32 spread;			/* ports the spread baseline redirects over */
};

/*
 * Multicast groups (xdpfwd_mcast.c): a frame to a group address entering one of the
 * group's source ports is replicated to the group's receivers with BPF_F_BROADCAST
 * on the group's own devmap, sized to its receivers (the kernel walks every slot of
 * a broadcast devmap per frame). Groups sit in slots of a map of maps; the lookup
 * key is (source port, group address).
 */
#define XDPFWD_PIN_MCAST_SOURCES	"mcast_sources"	/* (port, group) -> struct xdpfwd_mcast_source */
#define XDPFWD_PIN_MCAST_GROUPS		"mcast_groups"	/* slot -> the group's devmap */
#define XDPFWD_PIN_MCAST_STATS		"mcast_stats"	/* slot -> struct xdpfwd_mcast_stats */
#define XDPFWD_PIN_MCAST_COPIES		"mcast_copies"	/* (slot, receiver) -> copies sent */
#define XDPFWD_PIN_MCAST_PORT_STATS	"mcast_port_stats"	/* source port -> frames replicated */
#define XDPFWD_PIN_MCAST_PORTS		"mcast_ports"	/* port slot -> 1 if it is a source */
#define XDPFWD_PIN_PROG_MCAST		"prog_egress_mcast"
#define XDPFWD_MCAST_MAX_GROUPS		1024
#define XDPFWD_MCAST_MAX_MEMBERS	64	/* receivers, and sources, per group */
#define XDPFWD_MCAST_MAX_SOURCES	16384	/* (source port, group) pairs in all */
#define XDPFWD_MCAST_MAX_COPIES		16384	/* (group, receiver) pairs in all */
#define XDPFWD_MCAST_UNTAGGED		0xffffffff	/* a copy whose group is not known */

/* Kinds of group address. */
#define XDPFWD_MCAST_MAC	1	/* any frame to this destination MAC */
#define XDPFWD_MCAST_IPV4	4	/* IPv4 frames to this destination address */
#define XDPFWD_MCAST_IPV6	6	/* IPv6 frames to this destination address */

struct xdpfwd_mcast_key {
	__u32 ifindex;			/* the source port the frame entered */
	__u8 kind;			/* XDPFWD_MCAST_* */
	__u8 pad[3];
	__u8 addr[16];			/* IPv4 in 4 bytes, MAC in 6, IPv6 in 16; zeros after */
};

#define XDPFWD_MCAST_EXCLUDE_INGRESS	1
struct xdpfwd_mcast_source {
	__u32 slot;			/* the group's slot in mcast_groups and mcast_stats */
	__u32 flags;			/* XDPFWD_MCAST_EXCLUDE_INGRESS */
	__u32 copies;			/* copies one frame from this port should make */
	__u32 pad;
};

/* Per group and per CPU, counted by the ingress program. */
struct xdpfwd_mcast_stats {
	struct xdpfwd_counter in;	/* frames (and bytes) replicated */
	__u64 copies;			/* copies they should have made */
};

/* A (group, receiver) pair, as the multicast egress program counts copies. */
struct xdpfwd_mcast_copy {
	__u32 slot;
	__u32 egress;
};

#endif /* XDPFWD_COMMON_H */
