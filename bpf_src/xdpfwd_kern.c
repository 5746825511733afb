// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdpfwd ingress program, compiled at run time by BCC after xdpfwd_stats.c (see
 * bpf/source.py). Its maps are pinned under the pin dir, so later xdpfwd
 * processes reach the same state without compiling again.
 */
#include <uapi/linux/bpf.h>
#include "xdpfwd_common.h"
#include "xdpfwd_bcc.h"
#include "xdpfwd_hash.h"

/*
 * Forwarding table: key = ingress ifindex, value = struct bpf_devmap_val (egress
 * ifindex and egress program, Linux 5.8+) or, with -DXDPFWD_FWD_VALUE_SIZE=4, the
 * plain egress ifindex older kernels take. Entries of ifindexes below
 * XDPFWD_STATS_SLOTS are read from their copy in an array devmap of that many
 * slots, xdpfwd_fwd_slots: the lookup of a bare redirect (a hash devmap's costs
 * several percent of the forwarding rate).
 */
#if XDPFWD_FWD_VALUE_SIZE == 4
#define FWD_VALUE u32
#else
#define FWD_VALUE struct bpf_devmap_val
#endif
REDIRECT_MAP_PINNED(xdpfwd_fwd, FWD_VALUE, XDPFWD_FWD_MAX_ENTRIES, PIN(XDPFWD_PIN_FWD));
REDIRECT_MAP_PINNED(xdpfwd_fwd_slots, FWD_VALUE, XDPFWD_STATS_SLOTS, PIN(XDPFWD_PIN_FWD_SLOTS));

/*
 * Broadcast groups: key = member port ifindex, value = the group's devmap. The map
 * is a HASH_OF_MAPS that xdpfwd creates with the devmap template; declared here as
 * a hash, its lookup yields the inner map, which bpf_redirect_map() takes. Members
 * below XDPFWD_STATS_SLOTS are read from their copy in the slots of an
 * ARRAY_OF_MAPS, as port settings are (xdpfwd_ports.c); an empty slot reads NULL.
 */
BPF_TABLE_PINNED("hash", u32, u32, xdpfwd_groups, XDPFWD_MAX_PORTS, PIN(XDPFWD_PIN_GROUPS));
BPF_TABLE_PINNED("array", u32, u32, xdpfwd_group_slots, XDPFWD_STATS_SLOTS,
		 PIN(XDPFWD_PIN_GROUP_SLOTS));

/*
 * Balanced entries: key = ingress ifindex, value = struct xdpfwd_balance (how its
 * frames are hashed; hash 0: not balanced). An array slot below XDPFWD_STATS_SLOTS
 * (a lookup the verifier inlines), a hash for larger ifindexes, as for counters.
 */
BPF_TABLE_PINNED("array", u32, struct xdpfwd_balance, xdpfwd_balance, XDPFWD_STATS_SLOTS,
		 PIN(XDPFWD_PIN_BALANCE));
BPF_TABLE_PINNED("hash", u32, struct xdpfwd_balance, xdpfwd_balance_hi, XDPFWD_MAX_PORTS,
		 PIN(XDPFWD_PIN_BALANCE XDPFWD_PIN_HI_SUFFIX));

/*
 * Buckets of balanced entries, a DEVMAP_HASH xdpfwd creates: key = ingress ifindex
 * << XDPFWD_BUCKET_BITS | bucket, value as in xdpfwd_fwd (the bucket's egress).
 */
REDIRECT_MAP_PINNED(xdpfwd_buckets, FWD_VALUE, XDPFWD_BUCKETS_MAX_ENTRIES, PIN(XDPFWD_PIN_BUCKETS));

/* The hash mode of ifindex's balanced entry, 0 for none. */
static __always_inline u32 balance_hash(u32 ifindex)
{
	struct xdpfwd_balance *balance;

	if (ifindex < XDPFWD_STATS_SLOTS) {
		balance = xdpfwd_balance.lookup(&ifindex);
		asm volatile("" ::: "memory");
	} else {
		balance = xdpfwd_balance_hi.lookup(&ifindex);
	}
	return balance ? balance->hash : 0;
}

/*
 * The port's forwarding entry: XDP_REDIRECT, or XDP_ABORTED for none (the low bits
 * of the flags are the verdict on a miss). Each map keeps its own call site (see
 * port_stats()): the verifier calls a map's redirect directly only when one call
 * site sees one map.
 */
static __always_inline long entry_redirect(u32 ifindex)
{
	long verdict;

	if (ifindex < XDPFWD_STATS_SLOTS) {
		verdict = xdpfwd_fwd_slots.redirect_map(ifindex, XDP_ABORTED);
		asm volatile("" ::: "memory");
		return verdict;
	}
	return xdpfwd_fwd.redirect_map(ifindex, XDP_ABORTED);
}

/*
 * Floods the frame to the port's broadcast group: XDP_REDIRECT, or XDP_ABORTED when
 * the port is in none. One call site per map of groups, as in entry_redirect().
 */
static __always_inline long group_redirect(u32 ifindex, u64 flags)
{
	long verdict = XDP_ABORTED;
	void *group;

	if (ifindex < XDPFWD_STATS_SLOTS) {
		group = xdpfwd_group_slots.lookup(&ifindex);
		if (group)
			verdict = bpf_redirect_map(group, 0, flags);
		asm volatile("" ::: "memory");
		return verdict;
	}
	group = xdpfwd_groups.lookup(&ifindex);
	if (group)
		verdict = bpf_redirect_map(group, 0, flags);
	return verdict;
}

/*
 * Lookup order: multicast group, the port's settings and its broadcast group (a
 * member), single entry, balanced entry, on-miss verdict. A port has one role, so
 * the order only decides what each role pays for the lookups before its own:
 * single entries and broadcast members an inlined settings lookup, balanced
 * entries that and an array devmap miss.
 *
 * Verdicts: XDP_REDIRECT when the ingress port has an entry (or a balanced entry
 * with a bucket for the frame), or floods its broadcast group; XDP_DROP for a
 * multi-buffer frame its group (broadcast or multicast) cannot flood;
 * otherwise the port's on-miss verdict (XDP_PASS or XDP_DROP; XDP_PASS for an
 * unknown port).
 */
int xdpfwd_ingress(struct xdp_md *ctx)
{
	u32 ifindex = ctx->ingress_ifindex;
	u64 bytes = XDPFWD_FRAME_LEN(ctx);
	struct xdpfwd_port_stats *stats = port_stats(ifindex);
	struct xdpfwd_port *port;
	long verdict;
	u32 hash;

	/*
	 * Multicast groups come first (xdpfwd_mcast.c): XDP_REDIRECT for a frame to a
	 * group this port is a source of. Only frames to a multicast MAC entering a
	 * source port look for one. A frame of no group goes on as any other.
	 */
	if (mcast_candidate(ctx, ifindex)) {
		verdict = mcast_redirect(ctx, ifindex, bytes);
		if (verdict == XDP_REDIRECT) {
			struct xdpfwd_counter *mstats = mcast_port_stats(ifindex);

			if (stats)
				count(&stats->redirect, bytes);
			if (mstats)
				count(mstats, bytes);
			return XDP_REDIRECT;
		}
		if (verdict == XDP_DROP) {
			/* Multi-buffer: the group cannot replicate it (see mcast_redirect). */
			if (stats)
				count(&stats->too_big, bytes);
			return XDP_DROP;
		}
	}

	/*
	 * The settings before the entry: a broadcast member floods without looking up
	 * an entry, a helper call that would miss (about 3 % of a broadcast's rate on
	 * the bench), where the settings are an inlined array lookup.
	 */
	port = port_settings(ifindex);
	if (port && port->flags & XDPFWD_PORT_BROADCAST) {
		u64 flags = BPF_F_BROADCAST;

#if XDPFWD_FRAGS
		/*
		 * The kernel cannot clone a multi-buffer frame for a broadcast: the
		 * redirect would fail after this program (xdp_redirect_err, -EOPNOTSUPP),
		 * so drop it here and count why.
		 */
		if (bytes > ctx->data_end - ctx->data) {
			if (stats)
				count(&stats->too_big, bytes);
			return XDP_DROP;
		}
#endif
		if (port->flags & XDPFWD_PORT_EXCLUDE_INGRESS)
			flags |= BPF_F_EXCLUDE_INGRESS;
		if (group_redirect(ifindex, flags) == XDP_REDIRECT) {
			u32 members = port->flags >> XDPFWD_PORT_MEMBERS_SHIFT;

			if (stats) {
				count(&stats->redirect, bytes);
				if (members)
					stats->flood_copies +=
						members - !!(flags & BPF_F_EXCLUDE_INGRESS);
			}
			return XDP_REDIRECT;
		}
	}

	/*
	 * Also for a member not in its group yet: a port that becomes one keeps its
	 * entry until it floods (ops/groups.py), and forwards meanwhile.
	 */
	if (entry_redirect(ifindex) == XDP_REDIRECT) {
		if (stats)
			count(&stats->redirect, bytes);
		return XDP_REDIRECT;
	}

	/* Balanced entries are looked up only on a miss: single entries pay nothing. */
	hash = balance_hash(ifindex);
	if (hash) {
		u32 key = ifindex << XDPFWD_BUCKET_BITS | xdpfwd_bucket(ctx, hash);

		verdict = xdpfwd_buckets.redirect_map(key, XDP_ABORTED);
		if (verdict == XDP_REDIRECT) {
			if (stats)
				count(&stats->redirect, bytes);
			return XDP_REDIRECT;
		}
	}

	verdict = port && port->on_miss == XDP_DROP ? XDP_DROP : XDP_PASS;
	if (stats) {
		count(&stats->miss, bytes);
		count(verdict == XDP_DROP ? &stats->drop : &stats->pass, bytes);
	}
	return verdict;
}
