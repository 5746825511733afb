// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Multicast groups, concatenated before the ingress program (see bpf/source.py).
 *
 * A frame whose destination is a group address and that enters one of the group's
 * source ports is replicated to the group's receivers: bpf_redirect_map() with
 * BPF_F_BROADCAST on the group's own devmap, which holds exactly its receivers
 * (the kernel walks every slot of a broadcast devmap for each frame). IP groups
 * match the destination IP address, so groups that share a MAC stay apart; MAC
 * groups match the destination MAC. VLAN-tagged frames match MAC groups only.
 */
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

/*
 * Sources: key = struct xdpfwd_mcast_key (source port, group address), value =
 * struct xdpfwd_mcast_source (the group's slot, its flags, copies per frame). One
 * lookup tells whether the frame belongs to a group of the port it entered. A hash
 * xdpfwd creates without preallocation: it costs memory only for what it holds.
 */
BPF_TABLE_PINNED("hash", struct xdpfwd_mcast_key, struct xdpfwd_mcast_source,
		 xdpfwd_mcast_sources, XDPFWD_MCAST_MAX_SOURCES, PIN(XDPFWD_PIN_MCAST_SOURCES));

/*
 * Groups: key = slot, value = the group's devmap. An ARRAY_OF_MAPS that xdpfwd
 * creates with a devmap template (inner devmaps may differ in size); declared here
 * as an array, its lookup yields the inner map, which bpf_redirect_map() takes.
 * Swapping a slot's devmap is one atomic update.
 */
BPF_TABLE_PINNED("array", u32, u32, xdpfwd_mcast_groups, XDPFWD_MCAST_MAX_GROUPS,
		 PIN(XDPFWD_PIN_MCAST_GROUPS));

/* Per group slot and per CPU: frames and bytes in, copies they should make. */
BPF_TABLE_PINNED("percpu_array", u32, struct xdpfwd_mcast_stats, xdpfwd_mcast_stats,
		 XDPFWD_MCAST_MAX_GROUPS, PIN(XDPFWD_PIN_MCAST_STATS));

/*
 * Per source port and per CPU: the frames it replicated, also counted in its port's
 * redirects. Subtracted from those, they leave what its forwarding entry sent, which
 * without an egress program nothing else counts.
 */
SLOTTED_STATS(xdpfwd_mcast_port, struct xdpfwd_counter, XDPFWD_PIN_MCAST_PORT_STATS);

#if XDPFWD_FWD_VALUE_SIZE == 8
/*
 * Copies per (group slot, receiver) and per CPU, counted by xdpfwd_egress_mcast.
 * xdpfwd creates the rows as receivers join (a hash without preallocation).
 */
BPF_TABLE_PINNED("percpu_hash", struct xdpfwd_mcast_copy, struct xdpfwd_counter,
		 xdpfwd_mcast_copies, XDPFWD_MCAST_MAX_COPIES, PIN(XDPFWD_PIN_MCAST_COPIES));

/*
 * The slot of the frame being replicated, per CPU. Egress programs learn their
 * frame's group from a 4-byte metadata tag; generic (skb) XDP does not hand
 * metadata to egress programs, but runs them within the ingress redirect, on
 * this CPU, so there this slot is still the frame's.
 */
BPF_PERCPU_ARRAY(xdpfwd_mcast_tag, u32, 1);
#endif

/* The source port's multicast counter (see port_stats() for the asm statement). */
static __always_inline struct xdpfwd_counter *mcast_port_stats(u32 ifindex)
{
	struct xdpfwd_counter *stats;

	if (ifindex < XDPFWD_STATS_SLOTS) {
		stats = xdpfwd_mcast_port.lookup(&ifindex);
		asm volatile("" ::: "memory");
		return stats;
	}
	return xdpfwd_mcast_port_hi.lookup(&ifindex);
}

/*
 * Ports below XDPFWD_STATS_SLOTS that are a source of some group hold 1 in their
 * slot: the others need not read the frame (its first read costs a broadcast some
 * 4 % of its rate, before the kernel copies it anyway).
 */
BPF_TABLE_PINNED("array", u32, u32, xdpfwd_mcast_ports, XDPFWD_STATS_SLOTS,
		 PIN(XDPFWD_PIN_MCAST_PORTS));

/* Whether the frame goes to a multicast (or broadcast) MAC address: one bit. */
static __always_inline int mcast_destination(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;

	return data + ETH_HLEN <= data_end && (*(u8 *)data & 1);
}

/* Whether a frame entering port ifindex may be for one of its groups. */
static __always_inline int mcast_candidate(struct xdp_md *ctx, u32 ifindex)
{
	u32 *source;

	if (ifindex < XDPFWD_STATS_SLOTS) {
		source = xdpfwd_mcast_ports.lookup(&ifindex);
		asm volatile("" ::: "memory");	/* see port_stats() */
		if (!source || !*source)
			return 0;
	}
	return mcast_destination(ctx);
}

/* The group of the frame's destination on port ifindex: IP group first, then MAC. */
static __always_inline struct xdpfwd_mcast_source *mcast_source(struct xdp_md *ctx, u32 ifindex)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct xdpfwd_mcast_source *src = NULL;
	struct ethhdr *eth = data;
	struct xdpfwd_mcast_key key;

	if ((void *)(eth + 1) > data_end)
		return NULL;
	__builtin_memset(&key, 0, sizeof(key));
	key.ifindex = ifindex;
	if (eth->h_proto == htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		/* 224.0.0.0/4 */
		if ((void *)(ip + 1) <= data_end && (*(u8 *)&ip->daddr & 0xf0) == 0xe0) {
			key.kind = XDPFWD_MCAST_IPV4;
			__builtin_memcpy(key.addr, &ip->daddr, 4);
			src = xdpfwd_mcast_sources.lookup(&key);
		}
	} else if (eth->h_proto == htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		/* ff00::/8 */
		if ((void *)(ip6 + 1) <= data_end && ip6->daddr.s6_addr[0] == 0xff) {
			key.kind = XDPFWD_MCAST_IPV6;
			__builtin_memcpy(key.addr, &ip6->daddr, 16);
			src = xdpfwd_mcast_sources.lookup(&key);
		}
	}
	if (src)
		return src;
	__builtin_memset(key.addr, 0, sizeof(key.addr));
	key.kind = XDPFWD_MCAST_MAC;
	__builtin_memcpy(key.addr, eth->h_dest, ETH_ALEN);
	return xdpfwd_mcast_sources.lookup(&key);
}

/*
 * In the ingress program, for a frame to a multicast MAC: XDP_REDIRECT when it
 * belongs to a group of port ifindex (replicated to the receivers, counted on the
 * group); XDP_DROP when it belongs to one but comes in several buffers, which the
 * kernel cannot clone for a broadcast (the caller counts it as too big, as for a
 * broadcast group); otherwise XDP_ABORTED: the frame then takes the port's usual path.
 */
static __always_inline long mcast_redirect(struct xdp_md *ctx, u32 ifindex, u64 bytes)
{
	struct xdpfwd_mcast_source *src = mcast_source(ctx, ifindex);
	struct xdpfwd_mcast_stats *stats;
	u64 flags = BPF_F_BROADCAST;
	void *devmap;
	u32 slot;

	if (!src)
		return XDP_ABORTED;
	slot = src->slot;
	devmap = xdpfwd_mcast_groups.lookup(&slot);
	if (!devmap)
		return XDP_ABORTED;
#if XDPFWD_FRAGS
	/* A multi-buffer frame: the redirect would fail after the program returned. */
	if (bytes > ctx->data_end - ctx->data)
		return XDP_DROP;
#endif
	stats = xdpfwd_mcast_stats.lookup(&slot);
	if (stats)
		count(&stats->in, bytes);
	if (src->flags & XDPFWD_MCAST_EXCLUDE_INGRESS)
		flags |= BPF_F_EXCLUDE_INGRESS;
#if XDPFWD_FWD_VALUE_SIZE == 8
	{
		u32 zero = 0, *tag = xdpfwd_mcast_tag.lookup(&zero);

		/* Every copy carries the slot in front of the frame, for its egress program. */
		if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(u32)) == 0) {
			void *meta = (void *)(long)ctx->data_meta;

			if (meta + sizeof(u32) <= (void *)(long)ctx->data)
				*(u32 *)meta = slot;
			if (tag)
				*tag = slot;
			/* Copies expected are those the egress programs can attribute. */
			if (stats)
				stats->copies += src->copies;
		} else if (tag) {
			/* A driver without metadata: its copies are counted on no group. */
			*tag = XDPFWD_MCAST_UNTAGGED;
		}
	}
#endif
	return bpf_redirect_map(devmap, 0, flags);
}

#if XDPFWD_FWD_VALUE_SIZE == 8
/*
 * Egress program of multicast receivers: counts the copy on its (group, receiver)
 * pair and removes the group tag. Verdict: XDP_PASS.
 */
int xdpfwd_egress_mcast(struct xdp_md *ctx)
{
	void *meta = (void *)(long)ctx->data_meta;
	struct xdpfwd_mcast_copy key = { .egress = ctx->egress_ifindex };
	struct xdpfwd_counter *copies;
	u32 zero = 0, *tag;

	if (meta + sizeof(u32) <= (void *)(long)ctx->data) {
		key.slot = *(u32 *)meta;
		bpf_xdp_adjust_meta(ctx, sizeof(u32));
	} else {
		tag = xdpfwd_mcast_tag.lookup(&zero);
		if (!tag)
			return XDP_PASS;
		key.slot = *tag;
	}
	copies = xdpfwd_mcast_copies.lookup(&key);
	if (copies)
		count(copies, XDPFWD_FRAME_LEN(ctx));
	return XDP_PASS;
}
#endif
