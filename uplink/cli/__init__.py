"""The ``uplink`` command: the composition root, above everything it wires."""
