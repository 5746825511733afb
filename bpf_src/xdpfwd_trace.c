// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * What happens to frames after the forwarding program returned, which it cannot
 * see: transmit drops and redirect failures, from the kernel's XDP tracepoints.
 * Compiled on the first `xdpfwd stats --watch` and attached only while one runs.
 * Counts go per (ingress, egress) pair, for xdpfwd's own ports only.
 */

/* The ports running xdpfwd's ingress program (pinned by it): the filter. */
BPF_TABLE_PINNED("hash", u32, struct xdpfwd_port, xdpfwd_ports, XDPFWD_MAX_PORTS,
		 PIN(XDPFWD_PIN_PORTS));
/* Key = struct xdpfwd_pair, value = struct xdpfwd_tx_events per CPU. */
BPF_TABLE_PINNED("percpu_hash", struct xdpfwd_pair, struct xdpfwd_tx_events, xdpfwd_tx_events,
		 XDPFWD_MAX_PAIRS, PIN(XDPFWD_PIN_TX_EVENTS));

static __always_inline struct xdpfwd_tx_events *events(u32 ingress, u32 egress)
{
	struct xdpfwd_pair pair = { ingress, egress };
	struct xdpfwd_tx_events zero = {};

	if (!xdpfwd_ports.lookup(&ingress))
		return NULL;
	return xdpfwd_tx_events.lookup_or_try_init(&pair, &zero);
}

/* A bulk of frames redirected from from_ifindex went to the driver of to_ifindex. */
TRACEPOINT_PROBE(xdp, xdp_devmap_xmit)
{
	struct xdpfwd_tx_events *ev = events(args->from_ifindex, args->to_ifindex);

	if (ev) {
		ev->xmit_sent += args->sent;
		ev->xmit_drops += args->drops;
	}
	return 0;
}

/* xdp_do_redirect() failed: the frame never reached the egress device. */
TRACEPOINT_PROBE(xdp, xdp_redirect_err)
{
	struct xdpfwd_tx_events *ev = events(args->ifindex, args->to_ifindex);

	if (ev)
		ev->redirect_errors++;
	return 0;
}

TRACEPOINT_PROBE(xdp, xdp_exception)
{
	struct xdpfwd_tx_events *ev = events(args->ifindex, 0);

	if (ev)
		ev->exceptions++;
	return 0;
}
