"""The lab: sites of hosts in network namespaces on one Linux machine (`oasis lab up|status|down`)."""
