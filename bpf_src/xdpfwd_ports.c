// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The ports running xdpfwd's ingress program and their settings, concatenated
 * before the ingress and the tracepoint programs (see bpf/source.py).
 *
 * Every port's settings are in a hash; those of ifindexes below XDPFWD_STATS_SLOTS
 * are read from their copy in an array slot instead: the verifier inlines that
 * lookup, where a hash lookup costs about 30 ns a frame. An unused slot holds
 * on_miss 0. (Pin dirs made before the slots keep the program they were made
 * with, which reads the hash.)
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
		return port && port->on_miss ? port : NULL;
	}
	return xdpfwd_ports.lookup(&ifindex);
}
