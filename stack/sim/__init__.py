"""CLOUD=sim: a multi-host stack on one machine, each host a set of Linux namespaces.

Every host has its own network namespace (an address on a private test network), PID, mount,
UTS and IPC namespace, private data/config/log/home/tmp folders, and an sshd that accepts only
the stack's generated key. The hosts hang off a bridge that lives in a network namespace of its
own, so the test network has no route to the outside by construction. The controller (this
machine's root namespace) reaches the head only, through one veth into the bridge namespace
(the floating IP's analogue), and every other host through the head as SSH jump host.

Modules: `cluster` (names, addresses, the state record), `network` (namespaces, bridge,
veths, routes), `hosts` (the per-host PID/mount namespaces and private folders), `sshd` (keys,
sshd per host, known_hosts, ssh command lines), `inventory` (the Ansible inventory),
`teardown` (`make down`), `flow` (up/status/down as the CLI calls them)."""
