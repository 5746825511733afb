// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The ports running xdpfwd's ingress program and their settings, concatenated
 * before the ingress and the tracepoint programs (see bpf/source.py).
 *
 * Every port's settings are in a hash (all that pin dirs made before the slots
 * have); those of ifindexes below XDPFWD_STATS_SLOTS are in an array slot as well,
 * which the programs read first: the verifier inlines that lookup, where a hash
 * lookup costs about 30 ns a frame. An unused slot (on_miss 0) sends the lookup on
 * to the hash.
 */
BPF_TABLE_PINNED("hash", u32, struct xdpfwd_port, xdpfwd_ports, XDPFWD_MAX_PORTS,
		 PIN(XDPFWD_PIN_PORTS));
BPF_TABLE_PINNED("array", u32, struct xdpfwd_port, xdpfwd_port_slots, XDPFWD_STATS_SLOTS,
		 PIN(XDPFWD_PIN_PORT_SLOTS));

/* The settings of port ifindex, or NULL for a port xdpfwd does not run on. */
static __always_inline struct xdpfwd_port *port_settings(u32 ifindex)
{
	struct xdpfwd_port *port;

	if (ifindex < XDPFWD_STATS_SLOTS) {
		port = xdpfwd_port_slots.lookup(&ifindex);
		asm volatile("" ::: "memory");	/* see port_stats() */
		if (port && port->on_miss)
			return port;
	}
	return xdpfwd_ports.lookup(&ifindex);
}
