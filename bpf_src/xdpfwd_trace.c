// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * What happens to frames after the forwarding program returned, which it cannot
 * see: transmit drops and redirect failures, from the kernel's XDP tracepoints.
 * BTF-typed tracepoint programs (tp_btf), attached while the pin dir exists (their
 * bpf_links are pinned in it). Counts go per (ingress, egress) pair, for the ports
 * of this pin dir in its network namespace only: the tracepoints fire for every
 * XDP program.
 *
 * ctx holds the tracepoint's arguments as the kernel's TP_PROTO declares them. Its
 * struct net_device pointers are typed by the kernel's BTF, so their fields are
 * plain loads, which the verifier checks against the BTF (a faulting one reads 0),
 * where a raw tracepoint would need a bpf_probe_read_kernel() call for each:
 * xdp_devmap_xmit fires for every bulk of frames the host transmits. The fields are
 * read at the running kernel's offsets, which xdpfwd takes from its BTF: compile with
 * -DXDPFWD_NETDEV_IFINDEX_OFF, -DXDPFWD_NETDEV_NET_OFF, -DXDPFWD_NET_INUM_OFF,
 * -DXDPFWD_DTAB_NETDEV_DEV_OFF and -DXDPFWD_NETNS_INUM (the namespace's inode).
 */

/* The ports running xdpfwd's ingress program (xdpfwd_ports.c) are the filter. */
/* Key = struct xdpfwd_pair, value = struct xdpfwd_tx_events per CPU. */
BPF_TABLE_PINNED("percpu_hash", struct xdpfwd_pair, struct xdpfwd_tx_events, xdpfwd_tx_events,
		 XDPFWD_MAX_PAIRS, PIN(XDPFWD_PIN_TX_EVENTS));
/*
 * The copies of broadcasts the drivers sent, per (ingress, egress) pair and per
 * CPU: no egress program runs for them (one would cost a tenth of the rate).
 */
BPF_TABLE_PINNED("percpu_hash", struct xdpfwd_pair, struct xdpfwd_egress_stats, xdpfwd_pair_stats,
		 XDPFWD_MAX_PAIRS, PIN(XDPFWD_PIN_PAIR_STATS));

/* dev->ifindex, dev being a typed struct net_device pointer from ctx. */
static __always_inline u32 dev_ifindex(const void *dev)
{
	return *(const u32 *)(dev + XDPFWD_NETDEV_IFINDEX_OFF);
}

/* Whether typed dev is in this pin dir's namespace: ifindexes repeat across them. */
static __always_inline int in_our_netns(const void *dev)
{
	/* dev->nd_net.net->ns.inum */
	const void *net = *(const void *const *)(dev + XDPFWD_NETDEV_NET_OFF);

	return *(const u32 *)(net + XDPFWD_NET_INUM_OFF) == XDPFWD_NETNS_INUM;
}

/* dev's ifindex if it is one of this pin dir's ports, in its namespace; else 0. */
static __always_inline u32 our_port(const void *dev)
{
	u32 ifindex = dev_ifindex(dev);

	return ifindex && port_settings(ifindex) && in_our_netns(dev) ? ifindex : 0;
}

static __always_inline struct xdpfwd_tx_events *events(u32 ingress, u32 egress)
{
	struct xdpfwd_pair pair = { ingress, egress };
	struct xdpfwd_tx_events zero = {};

	return xdpfwd_tx_events.lookup_or_try_init(&pair, &zero);
}

/*
 * Counts a bulk of broadcast copies as sent on the pair. The tracepoint does not
 * say their bytes: the mean size of the frames the port redirected on this CPU
 * stands for them, exact when its frames are of one size.
 */
static __always_inline void count_sent(u32 ingress, u32 egress, int sent)
{
	struct xdpfwd_port_stats *redirected = port_stats(ingress);
	struct xdpfwd_pair pair = { ingress, egress };
	struct xdpfwd_egress_stats zero = {}, *stats;
	u64 mean = 0;

	if (redirected && redirected->redirect.packets)
		mean = redirected->redirect.bytes / redirected->redirect.packets;
	stats = xdpfwd_pair_stats.lookup_or_try_init(&pair, &zero);
	if (stats) {
		stats->tx.packets += sent;
		stats->tx.bytes += sent * mean;
	}
}

/*
 * xdp_devmap_xmit(from_dev, to_dev, int sent, int drops, int err): a bulk of
 * frames redirected from from_dev was handed to to_dev's driver; drops include
 * what the entry's egress program dropped. It fires for every bulk on the host:
 * a bulk without drops from a port that does not flood costs a read of the
 * sender's ifindex and one slot lookup.
 */
int xdpfwd_tp_xmit(u64 *ctx)
{
	const void *from = (const void *)ctx[0];
	int sent = ctx[2], drops = ctx[3];
	u32 ingress = dev_ifindex(from), egress;
	struct xdpfwd_tx_events *ev;
	struct xdpfwd_port *port;

	port = ingress ? port_settings(ingress) : NULL;
	if (!port || (drops <= 0 && !(port->flags & XDPFWD_PORT_BROADCAST)))
		return 0;
	if (!in_our_netns(from))
		return 0;
	egress = dev_ifindex((const void *)ctx[1]);
	if (port->flags & XDPFWD_PORT_BROADCAST && sent > 0)
		count_sent(ingress, egress, sent);
	if (drops > 0) {
		ev = events(ingress, egress);
		if (ev)
			ev->xmit_drops += drops;
	}
	return 0;
}

/*
 * The egress ifindex of a devmap entry (struct bpf_dtab_netdev), tgt->dev->ifindex.
 * tgt is a void pointer, which BTF does not type: read with helpers.
 */
static __always_inline u32 entry_ifindex(const void *tgt)
{
	void *dev = NULL;
	u32 ifindex = 0;

	bpf_probe_read_kernel(&dev, sizeof(dev), tgt + XDPFWD_DTAB_NETDEV_DEV_OFF);
	if (dev)
		bpf_probe_read_kernel(&ifindex, sizeof(ifindex), dev + XDPFWD_NETDEV_IFINDEX_OFF);
	return ifindex;
}

/*
 * xdp_redirect_err(dev, xdp_prog, tgt, int err, map_type, u32 map_id, u32 index):
 * the redirect itself failed, the frame never reached the egress device. For a
 * devmap, tgt is the entry (struct bpf_dtab_netdev, whose dev names the egress);
 * a broadcast names the entry at the key it passed, or none.
 */
int xdpfwd_tp_rerr(u64 *ctx)
{
	u32 ingress = our_port((const void *)ctx[0]), map_type = ctx[4], egress = 0;
	const void *tgt = (const void *)ctx[2];
	struct xdpfwd_tx_events *ev;

	if (!ingress)
		return 0;
	if ((map_type == BPF_MAP_TYPE_DEVMAP || map_type == BPF_MAP_TYPE_DEVMAP_HASH) && tgt)
		egress = entry_ifindex(tgt);
	ev = events(ingress, egress);
	if (ev)
		ev->redirect_errors++;
	return 0;
}

/* xdp_exception(dev, xdp_prog, u32 act): XDP_ABORTED or an invalid verdict. */
int xdpfwd_tp_exc(u64 *ctx)
{
	u32 ingress = our_port((const void *)ctx[0]);
	struct xdpfwd_tx_events *ev;

	if (!ingress)
		return 0;
	ev = events(ingress, 0);
	if (ev)
		ev->exceptions++;
	return 0;
}
