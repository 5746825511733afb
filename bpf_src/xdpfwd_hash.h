/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow hashing of balanced entries: which of XDPFWD_BUCKETS buckets a frame falls
 * into. Plain functions only (see xdpfwd_bcc.h), used by the ingress program on
 * ports that have a balanced entry and no single one.
 *
 * What is hashed, by the entry's XDPFWD_HASH_* mode:
 *   SYMMETRIC  IPv4/IPv6 addresses, the protocol, and the ports of TCP, UDP and
 *              SCTP (not of fragments); the two endpoints are put in a fixed order
 *              first, so both directions of a flow fall into the same bucket
 *   L4         the same, in the order the frame has them
 *   L3         the addresses only
 *   L2         the MAC addresses only
 * Frames that are not IP (after up to two VLAN tags) hash their MAC addresses.
 */
#ifndef XDPFWD_HASH_H
#define XDPFWD_HASH_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

#define XDPFWD_HASH_SEED	0x9e3779b97f4a7c15ULL
#define XDPFWD_IP_FRAGMENT	0x3fff	/* IP_MF | IP_OFFSET, in host order */

struct xdpfwd_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/*
 * SplitMix64's finaliser: every bit of x reaches every bit of the result. In 64-bit
 * arithmetic, which BPF registers do without the masking 32-bit operations need.
 */
static __always_inline u64 xdpfwd_mix(u64 x)
{
	x += XDPFWD_HASH_SEED;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static __always_inline u64 xdpfwd_mac(const unsigned char *mac)
{
	u16 high;
	u32 low;

	__builtin_memcpy(&high, mac, sizeof(high));
	__builtin_memcpy(&low, mac + 2, sizeof(low));
	return (u64)high << 32 | low;
}

static __always_inline u64 xdpfwd_ipv6(const struct in6_addr *addr)
{
	u64 high, low;

	__builtin_memcpy(&high, &addr->in6_u.u6_addr32[0], sizeof(high));
	__builtin_memcpy(&low, &addr->in6_u.u6_addr32[2], sizeof(low));
	return xdpfwd_mix(high) ^ low;
}

static __always_inline int xdpfwd_has_ports(u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* The bucket of the frame in ctx under hash mode (XDPFWD_HASH_*). */
static __always_inline u32 xdpfwd_bucket(struct xdp_md *ctx, u32 mode)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	u64 src, dst, tmp, h;
	u32 ports = 0, proto = 0;
	void *l3, *l4 = NULL;
	__be16 type;
	int i;

	if ((void *)(eth + 1) > data_end)
		return 0;
	type = eth->h_proto;
	l3 = eth + 1;
	if (mode == XDPFWD_HASH_L2)
		goto macs;
#pragma unroll
	for (i = 0; i < 2; i++) {
		if (type == htons(ETH_P_8021Q) || type == htons(ETH_P_8021AD)) {
			struct xdpfwd_vlan_hdr *vlan = l3;

			if ((void *)(vlan + 1) > data_end)
				goto macs;
			type = vlan->proto;
			l3 = vlan + 1;
		}
	}
	if (type == htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end || ip->ihl < 5)
			goto macs;
		src = ip->saddr;
		dst = ip->daddr;
		proto = ip->protocol;
		if (!(ip->frag_off & htons(XDPFWD_IP_FRAGMENT)))
			l4 = (void *)ip + ip->ihl * 4;
	} else if (type == htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			goto macs;
		src = xdpfwd_ipv6(&ip6->saddr);
		dst = xdpfwd_ipv6(&ip6->daddr);
		/* A fragment header (or any other extension header) hides the ports. */
		proto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		goto macs;
	}
	if (mode == XDPFWD_HASH_L3) {
		proto = 0;
		goto hash;
	}
	if (l4 && xdpfwd_has_ports(proto) && l4 + 4 <= data_end) {
		u32 sport = ((__be16 *)l4)[0], dport = ((__be16 *)l4)[1];

		/* Symmetric: the endpoint with the smaller (address, port) comes first. */
		if (mode == XDPFWD_HASH_SYMMETRIC && (src > dst || (src == dst && sport > dport)))
			ports = dport << 16 | sport;
		else
			ports = sport << 16 | dport;
	}
	goto hash;
macs:
	src = xdpfwd_mac(eth->h_source);
	dst = xdpfwd_mac(eth->h_dest);
	proto = mode == XDPFWD_HASH_L2 ? 0 : type;
hash:
	if (mode == XDPFWD_HASH_SYMMETRIC && src > dst) {
		tmp = src;
		src = dst;
		dst = tmp;
	}
	h = xdpfwd_mix(src);
	h = xdpfwd_mix(h ^ dst);
	h = xdpfwd_mix(h ^ ((u64)ports << 32 | proto));
	return h >> (64 - XDPFWD_BUCKET_BITS);
}

#endif /* XDPFWD_HASH_H */
